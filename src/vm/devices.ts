// A VM's devices as configured (what `ferry run` flags and, later, the daemon's VM config
// describe), and opening their host backends. The machine only sees the resulting virtio
// device models; host resources stay here, where they are disposed.

import { FerryError } from '../errors.js';
import type { GuestMemory } from '../machine/memory/guest-memory.js';
import type { VirtioDevice } from '../machine/devices/virtio/device.js';
import { VirtioBlock } from '../machine/devices/virtio/block.js';
import { VirtioRng } from '../machine/devices/virtio/rng.js';
import type { BlockBackend } from '../storage/backend.js';
import { RawFileBackend } from '../storage/file.js';
import { NbdBackend } from '../storage/nbd/client.js';

export type DiskSpec =
  | { readonly kind: 'file'; readonly path: string; readonly readOnly: boolean }
  | { readonly kind: 'nbd'; readonly host: string; readonly port: number; readonly exportName: string };

export interface DeviceSpec {
  readonly disks: readonly DiskSpec[];
  readonly rng: boolean;
}

export class DeviceSpecError extends FerryError {
  constructor(message: string) { super('DEVICE_SPEC_INVALID', message); }
}

/** Parses `nbd://HOST:PORT[/EXPORT]`, `file:PATH[,ro]` or a plain `PATH[,ro]`. */
export function parseDiskSpec(text: string): DiskSpec {
  const nbd = /^nbd:\/\/([^/:]+|\[[^\]]+\]):(\d{1,5})(?:\/(.*))?$/.exec(text);
  if (nbd) {
    const port = Number(nbd[2]);
    if (port < 1 || port > 65535) throw new DeviceSpecError(`invalid NBD port in '${text}'`);
    return { kind: 'nbd', host: nbd[1]!.replace(/^\[|\]$/g, ''), port, exportName: nbd[3] ?? '' };
  }
  if (text.startsWith('nbd:')) throw new DeviceSpecError(`invalid NBD disk '${text}' (expected nbd://HOST:PORT[/EXPORT])`);
  let path = text.startsWith('file:') ? text.slice(5) : text;
  let readOnly = false;
  if (path.endsWith(',ro')) { readOnly = true; path = path.slice(0, -3); }
  if (path === '') throw new DeviceSpecError(`invalid disk '${text}'`);
  return { kind: 'file', path, readOnly };
}

/** The opened backends of a VM, and the device models built on them. */
export class VmDevices implements AsyncDisposable {
  private constructor(private readonly spec: DeviceSpec, private readonly disks: BlockBackend[]) {}

  static async open(spec: DeviceSpec): Promise<VmDevices> {
    const disks: BlockBackend[] = [];
    try {
      for (const d of spec.disks) {
        disks.push(d.kind === 'file'
          ? await RawFileBackend.open(d.path, { readOnly: d.readOnly })
          : await NbdBackend.connect({ host: d.host, port: d.port, exportName: d.exportName }));
      }
    } catch (err) {
      await Promise.allSettled(disks.map((b) => b.close()));
      throw err;
    }
    return new VmDevices(spec, disks);
  }

  /** For MachineOptions.virtio: disks (vda, vdb, ...) then the entropy source. */
  models(memory: GuestMemory): VirtioDevice[] {
    const out: VirtioDevice[] = this.disks.map((b, i) => new VirtioBlock(memory, b, { serial: `ferry-disk${i}` }));
    if (this.spec.rng) out.push(new VirtioRng(memory));
    return out;
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.disks.map((b) => b.close()));
  }

  async [Symbol.asyncDispose](): Promise<void> { await this.close(); }
}
