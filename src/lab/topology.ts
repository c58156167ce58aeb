// Names and addresses of the lab: which namespaces exist, what they are called, which IP and
// MAC each gets. Pure functions, so cleanup and status can recompute names without a Lab.

import { LabConfigError } from './errors.js';

/** The machines on the LAN. Each is a network namespace with one uplink to the LAN bridge. */
export const HOSTS = ['host-a', 'host-b', 'storage', 'client'] as const;
export type HostName = (typeof HOSTS)[number];

/** Hosts that run VMs: their uplink joins a bridge br0 that the VMs' TAP devices join too. */
export const VM_HOSTS: readonly HostName[] = ['host-a', 'host-b'];

/** Namespace holding the LAN switch (bridge br0, one port per host, named after the host). */
export const LAN = 'lan';
export const ALL_ROLES = [LAN, ...HOSTS] as const;

export const DEFAULT_PREFIX = 'ferry-';
export const DEFAULT_SUBNET = '10.77.0.0/24';

/** Interface names used inside the namespaces. */
export const UPLINK = 'eth0';
export const BRIDGE = 'br0';

const HOST_OFFSET: Record<HostName, number> = { 'host-a': 1, 'host-b': 2, storage: 3, client: 4 };
const VM_OFFSET = 100;

export function isHostName(s: string): s is HostName {
  return (HOSTS as readonly string[]).includes(s);
}

export function checkHost(s: string): HostName {
  if (!isHostName(s)) throw new LabConfigError(`unknown lab host '${s}' (hosts: ${HOSTS.join(', ')})`);
  return s;
}

// The prefix ends up in /run/netns file names and in argv of ip; keeping it to a plain charset
// means it can never be read as an option or a path.
export function checkPrefix(prefix: string): string {
  if (!/^[a-z0-9][a-z0-9_-]{0,31}$/i.test(prefix)) {
    throw new LabConfigError(`invalid lab prefix '${prefix}': use 1-32 letters, digits, '-' or '_', starting with a letter or digit`);
  }
  return prefix;
}

export function netnsName(prefix: string, role: HostName | typeof LAN): string {
  return `${prefix}${role}`;
}

export interface Subnet { cidr: string; base: number; bits: number }

function ipToInt(ip: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return ((parts[0]! << 24) >>> 0) + (parts[1]! << 16) + (parts[2]! << 8) + parts[3]!;
}

function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Parses "10.77.0.0/24". At most /24 so that .100+ VM addresses fit. */
export function parseSubnet(cidr: string): Subnet {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(cidr.trim());
  const base = m ? ipToInt(m[1]!) : undefined;
  const bits = m ? Number(m[2]) : NaN;
  if (!m || base === undefined || !(bits >= 8 && bits <= 24)) {
    throw new LabConfigError(`invalid lab subnet '${cidr}': expected an IPv4 network such as ${DEFAULT_SUBNET} (prefix length 8..24)`);
  }
  const hostMask = 2 ** (32 - bits) - 1;
  if ((base & hostMask) !== 0) {
    throw new LabConfigError(`invalid lab subnet '${cidr}': host bits are set (did you mean ${intToIp(base - (base & hostMask))}/${bits}?)`);
  }
  return { cidr: `${intToIp(base)}/${bits}`, base, bits };
}

export function hostAddress(subnet: Subnet, host: HostName): string {
  return intToIp(subnet.base + HOST_OFFSET[host]);
}

/** Address of VM number `index` (0, 1, ...): .100, .101, ... It stays the VM's wherever it runs. */
export function vmAddress(index: number, subnet: Subnet | string = DEFAULT_SUBNET): string {
  const s = typeof subnet === 'string' ? parseSubnet(subnet) : subnet;
  const offset = VM_OFFSET + index;
  if (!Number.isInteger(index) || index < 0 || offset >= 2 ** (32 - s.bits) - 1) {
    throw new LabConfigError(`VM index ${index} does not fit in subnet ${s.cidr}`);
  }
  return intToIp(s.base + offset);
}

/**
 * MAC derived from the IP: locally administered 02:00 followed by the four address bytes. Fixed
 * MACs keep ARP caches valid across lab restarts and make captures readable; a VM's MAC moves
 * with it, like its IP.
 */
export function macFor(ip: string): string {
  const n = ipToInt(ip);
  if (n === undefined) throw new LabConfigError(`not an IPv4 address: '${ip}'`);
  const bytes = [0x02, 0x00, n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

export function vmMac(index: number, subnet: Subnet | string = DEFAULT_SUBNET): string {
  return macFor(vmAddress(index, subnet));
}
