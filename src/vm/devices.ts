// A VM's devices as configured (what `ferry run` flags and, later, the daemon's VM config
// describe), and opening their host backends. The machine only sees the resulting virtio
// device models; host resources stay here, where they are disposed.

import type { Worker } from 'node:worker_threads';
import { FerryError } from '../errors.js';
import type { GuestMemory } from '../machine/memory/guest-memory.js';
import type { VirtioDevice } from '../machine/devices/virtio/device.js';
import { VirtioBlock } from '../machine/devices/virtio/block.js';
import { VirtioRng } from '../machine/devices/virtio/rng.js';
import type { BlockBackend } from '../storage/backend.js';
import { RawFileBackend } from '../storage/file.js';
import { NbdBackend } from '../storage/nbd/client.js';
import { VirtioNet } from '../machine/devices/virtio/net.js';
import { VirtioBalloon } from '../machine/devices/virtio/balloon.js';
import type { NetBackend } from '../net/backend.js';
import { TapBackend } from '../net/tap.js';
import { randomBytes } from 'node:crypto';

export type DiskSpec =
  | { readonly kind: 'file'; readonly path: string; readonly readOnly: boolean }
  | { readonly kind: 'nbd'; readonly host: string; readonly port: number; readonly exportName: string };

/** A NIC on a TAP in the VMM's network namespace, joined to `bridge` when given. */
export interface NetSpec {
  readonly kind: 'tap';
  readonly bridge?: string;
  readonly mac: Uint8Array;
}

export interface DeviceSpec {
  readonly nets: readonly NetSpec[];
  readonly disks: readonly DiskSpec[];
  readonly rng: boolean;
  readonly balloon: boolean;
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

/** Parses `tap` or `tap:BRIDGE`. */
export function parseNetSpec(text: string, mac: Uint8Array): NetSpec {
  const m = /^tap(?::([A-Za-z0-9_.-]{1,15}))?$/.exec(text);
  if (!m) throw new DeviceSpecError(`invalid network '${text}' (expected tap or tap:BRIDGE)`);
  return m[1] ? { kind: 'tap', bridge: m[1], mac } : { kind: 'tap', mac };
}

/** Parses `aa:bb:cc:dd:ee:ff`; multicast addresses cannot be a NIC's. */
export function parseMac(text: string): Uint8Array {
  const parts = text.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) throw new DeviceSpecError(`invalid MAC address '${text}'`);
  const mac = Uint8Array.from(parts.map((p) => parseInt(p, 16)));
  if (mac[0]! & 1) throw new DeviceSpecError(`MAC address '${text}' is multicast`);
  return mac;
}

/** A random locally administered unicast MAC. */
export function randomMac(): Uint8Array {
  const mac = randomBytes(6);
  mac[0] = (mac[0]! & 0xfc) | 0x02;
  return mac;
}

/** The one MAC formatter, shared with the announce frames. */
export { formatMac } from '../net/announce.js';

/** The opened backends of a VM, and the device models built on them. */
export class VmDevices implements AsyncDisposable {
  private constructor(private readonly spec: DeviceSpec, private readonly nets: NetBackend[], private readonly disks: BlockBackend[]) {}

  /** Opens every backend at once (they are independent, and an incoming migration's
   * reservation waits for all of them). `tapThread`, a TAP thread started ahead of need, goes to
   * the first NIC; it is ended if there is none. */
  static async open(spec: DeviceSpec, opts: { readonly tapThread?: Worker } = {}): Promise<VmDevices> {
    let spare = opts.tapThread;
    const nets = spec.nets.map((n) => {
      const thread = spare;
      spare = undefined;
      return TapBackend.open({ ...(n.bridge ? { bridge: n.bridge } : {}), ...(thread ? { thread } : {}) });
    });
    const disks = spec.disks.map((d) => d.kind === 'file'
      ? RawFileBackend.open(d.path, { readOnly: d.readOnly })
      : NbdBackend.connect({ host: d.host, port: d.port, exportName: d.exportName }));
    const unused = spare?.terminate();
    const [netsOpened, disksOpened] = await Promise.all([Promise.allSettled<NetBackend>(nets), Promise.allSettled<BlockBackend>(disks)]);
    await unused;
    const failed = [...netsOpened, ...disksOpened].find((r) => r.status === 'rejected');
    if (failed) {
      await Promise.allSettled([...netsOpened, ...disksOpened].map((r) => (r.status === 'fulfilled' ? r.value.close() : undefined)));
      throw failed.reason;
    }
    const value = <T>(r: PromiseSettledResult<T>): T => (r as PromiseFulfilledResult<T>).value;
    return new VmDevices(spec, netsOpened.map(value), disksOpened.map(value));
  }

  /** For MachineOptions.virtio: NICs (eth0, ...), disks (vda, ...), entropy, balloon. */
  models(memory: GuestMemory): VirtioDevice[] {
    const out: VirtioDevice[] = this.nets.map((backend, i) => new VirtioNet(memory, { backend, mac: this.spec.nets[i]!.mac }));
    out.push(...this.disks.map((b, i) => new VirtioBlock(memory, b, { serial: `ferry-disk${i}` })));
    if (this.spec.rng) out.push(new VirtioRng(memory));
    if (this.spec.balloon) out.push(new VirtioBalloon(memory));
    return out;
  }

  /** Makes every write the disks acknowledged durable on their backends (before a migration
   * hands the disks to another host). */
  async flushDisks(): Promise<void> {
    await Promise.all(this.disks.filter((d) => !d.readOnly).map((d) => d.flush()));
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.nets, ...this.disks].map((b) => b.close()));
  }

  async [Symbol.asyncDispose](): Promise<void> { await this.close(); }
}
