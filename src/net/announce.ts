// Frames a VMM broadcasts after a migration so that switches (and bridges) move the VM's MAC to
// its new port and neighbours refresh their ARP caches. Without them, traffic for the VM keeps
// flowing to the old host until the forwarding entry ages out (300 s on a Linux bridge).
import { FerryError } from '../errors.js';

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_RARP = 0x8035;
export const BROADCAST_MAC: Uint8Array = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
/** Ethernet's minimum frame without FCS; the NIC would pad anyway, but TAP does not. */
export const MIN_FRAME = 60;

export type MacAddress = Uint8Array | string;
export type Ipv4Address = Uint8Array | string;

export function parseMac(mac: MacAddress): Uint8Array {
  if (typeof mac !== 'string') {
    if (mac.length !== 6) throw new FerryError('NET_BAD_ADDRESS', `a MAC address has 6 bytes, got ${mac.length}`);
    return mac;
  }
  const parts = mac.split(/[:-]/);
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{1,2}$/.test(p))) {
    throw new FerryError('NET_BAD_ADDRESS', `invalid MAC address ${JSON.stringify(mac)}`);
  }
  return Uint8Array.from(parts, (p) => parseInt(p, 16));
}

export function formatMac(mac: Uint8Array): string {
  return [...mac].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

export function parseIpv4(ip: Ipv4Address): Uint8Array {
  if (typeof ip !== 'string') {
    if (ip.length !== 4) throw new FerryError('NET_BAD_ADDRESS', `an IPv4 address has 4 bytes, got ${ip.length}`);
    return ip;
  }
  const parts = ip.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
    throw new FerryError('NET_BAD_ADDRESS', `invalid IPv4 address ${JSON.stringify(ip)}`);
  }
  return Uint8Array.from(parts, Number);
}

/** An ARP-format payload (RFC 826) for Ethernet/IPv4 inside a broadcast frame padded to 60 bytes. */
function arpFrame(ethertype: number, op: number, sha: Uint8Array, spa: Uint8Array, tha: Uint8Array, tpa: Uint8Array): Uint8Array {
  const f = new Uint8Array(MIN_FRAME);
  const v = new DataView(f.buffer);
  f.set(BROADCAST_MAC, 0);
  f.set(sha, 6);
  v.setUint16(12, ethertype);
  v.setUint16(14, 1); // hardware type: Ethernet
  v.setUint16(16, ETHERTYPE_IPV4);
  f[18] = 6;
  f[19] = 4;
  v.setUint16(20, op);
  f.set(sha, 22);
  f.set(spa, 28);
  f.set(tha, 32);
  f.set(tpa, 38);
  return f;
}

/**
 * The RARP "request reverse" QEMU sends on announce-self: it needs no IP address, so it works
 * for any guest, and every switch on the path learns the source MAC from it.
 */
export function buildRarpAnnounce(mac: MacAddress): Uint8Array {
  const m = parseMac(mac);
  const zero = new Uint8Array(4);
  return arpFrame(ETHERTYPE_RARP, 3, m, zero, m, zero);
}

export interface GratuitousArpOptions {
  /** 'request' (RFC 5227 announcement, the default: also accepted by hosts that ignore
   * unsolicited replies) or 'reply'. */
  op?: 'request' | 'reply';
}

/**
 * Gratuitous ARP: sender and target protocol address are both the VM's IP, so neighbours that
 * have the IP cached update its MAC, and switches learn the port as with RARP.
 */
export function buildGratuitousArp(mac: MacAddress, ip: Ipv4Address, opts: GratuitousArpOptions = {}): Uint8Array {
  const m = parseMac(mac);
  const a = parseIpv4(ip);
  const reply = opts.op === 'reply';
  return arpFrame(ETHERTYPE_ARP, reply ? 2 : 1, m, a, reply ? m : new Uint8Array(6), a);
}

export interface AnnounceOptions {
  mac: MacAddress;
  /** IPv4 addresses the VM is known to use; each gets a gratuitous ARP. */
  ipv4?: readonly Ipv4Address[];
}

/** One round of announcement frames (QEMU repeats rounds with growing delays; so should callers). */
export function buildAnnouncement(opts: AnnounceOptions): Uint8Array[] {
  return [buildRarpAnnounce(opts.mac), ...(opts.ipv4 ?? []).map((ip) => buildGratuitousArp(opts.mac, ip))];
}
