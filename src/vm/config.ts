// From a VmConfig (or `ferry run` flags) to what the machine is built from: the device spec,
// the kernel command line and the RAM size. Shared by `ferry run` and the VM worker so both
// read a configuration the same way.

import { GUEST_CMDLINE } from '../guest/cmdline.js';
import { DeviceSpecError, parseDiskSpec, parseMac, parseNetSpec, type DeviceSpec } from './devices.js';
import type { VmConfig } from './types.js';

export interface IpSpec {
  /** `ADDR/PREFIX` */
  readonly address: string;
  readonly gateway?: string;
}

/** Parses `ADDR/PREFIX[,GATEWAY]` (IPv4), the guest eth0 address. */
export function parseIpSpec(text: string): IpSpec {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}\/\d{1,2})(?:,(\d{1,3}(?:\.\d{1,3}){3}))?$/.exec(text);
  if (!m) throw new DeviceSpecError(`invalid IP address '${text}' (expected ADDR/PREFIX[,GATEWAY])`);
  return m[2] ? { address: m[1]!, gateway: m[2] } : { address: m[1]! };
}

/** The guest init's kernel parameters for an address (src/guest/init.sh reads them). */
export function ipKernelParams(ip: IpSpec): string {
  return `ferry.ip=${ip.address}${ip.gateway ? ` ferry.gw=${ip.gateway}` : ''}`;
}

/** The kernel command line with the address parameters appended, if any. */
export function kernelCmdline(base: string, ip: string | undefined): string {
  return ip !== undefined ? `${base} ${ipKernelParams(parseIpSpec(ip))}` : base;
}

export interface VmBuild {
  readonly ramBytes: number;
  readonly cmdline: string;
  readonly devices: DeviceSpec;
}

const MAX_MEMORY_MIB = 16 * 1024;

/** Validates a VmConfig and derives what the machine is built from. Throws DeviceSpecError,
 * so a bad config is refused when the VM is created, not when its worker starts. */
export function resolveVmConfig(config: VmConfig): VmBuild {
  if (typeof config.name !== 'string' || config.name === '') throw new DeviceSpecError('a VM needs a name');
  if (!Number.isInteger(config.memoryMiB) || config.memoryMiB < 16 || config.memoryMiB > MAX_MEMORY_MIB) {
    throw new DeviceSpecError(`invalid memory size ${String(config.memoryMiB)} MiB (16 to ${MAX_MEMORY_MIB})`);
  }
  if ((config.kernel === undefined) && config.initramfs !== undefined) throw new DeviceSpecError('an initramfs needs a kernel');
  if (config.swap !== undefined && parseDiskSpec(config.swap).kind !== 'nbd') {
    throw new DeviceSpecError(`swap device '${config.swap}' must be nbd://HOST:PORT[/EXPORT]: both hosts of a migration must reach it`);
  }
  return {
    ramBytes: config.memoryMiB * 1024 * 1024,
    cmdline: kernelCmdline(config.cmdline ?? GUEST_CMDLINE, config.ip),
    devices: {
      nets: config.nets.map((n) => parseNetSpec(n.bridge !== undefined ? `tap:${n.bridge}` : 'tap', parseMac(n.mac))),
      disks: config.disks.map(parseDiskSpec),
      rng: true,
      balloon: true,
    },
  };
}
