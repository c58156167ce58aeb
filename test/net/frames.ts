// Hand-built Ethernet/ARP/IPv4/ICMP frames for the TAP tests: what a guest NIC would put on the
// wire, so the host kernel's answers can be checked byte by byte.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, parseIpv4, parseMac } from '../../src/net/announce.js';

/** RFC 1071 Internet checksum. */
export function inetChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i + 1 < bytes.length; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (bytes.length % 2 === 1) sum += bytes[bytes.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export function ethHeader(dst: string, src: string, ethertype: number): Uint8Array {
  const h = new Uint8Array(14);
  h.set(parseMac(dst), 0);
  h.set(parseMac(src), 6);
  new DataView(h.buffer).setUint16(12, ethertype);
  return h;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

export function arpRequest(srcMac: string, srcIp: string, targetIp: string): Uint8Array {
  const arp = new Uint8Array(28);
  const v = new DataView(arp.buffer);
  v.setUint16(0, 1);
  v.setUint16(2, ETHERTYPE_IPV4);
  arp[4] = 6;
  arp[5] = 4;
  v.setUint16(6, 1);
  arp.set(parseMac(srcMac), 8);
  arp.set(parseIpv4(srcIp), 14);
  arp.set(parseIpv4(targetIp), 24);
  return concat(ethHeader('ff:ff:ff:ff:ff:ff', srcMac, ETHERTYPE_ARP), arp);
}

export function ipv4Packet(src: string, dst: string, proto: number, payload: Uint8Array, id = 0x1234): Uint8Array {
  const h = new Uint8Array(20);
  const v = new DataView(h.buffer);
  h[0] = 0x45;
  v.setUint16(2, 20 + payload.length);
  v.setUint16(4, id);
  v.setUint16(6, 0x4000); // DF
  h[8] = 64;
  h[9] = proto;
  h.set(parseIpv4(src), 12);
  h.set(parseIpv4(dst), 16);
  v.setUint16(10, inetChecksum(h));
  return concat(h, payload);
}

export function icmpEcho(type: 0 | 8, id: number, seq: number, data: Uint8Array): Uint8Array {
  const m = new Uint8Array(8 + data.length);
  const v = new DataView(m.buffer);
  m[0] = type;
  v.setUint16(4, id);
  v.setUint16(6, seq);
  m.set(data, 8);
  v.setUint16(2, inetChecksum(m));
  return m;
}

export function icmpEchoRequestFrame(o: { srcMac: string; dstMac: string; srcIp: string; dstIp: string; id: number; seq: number; data: Uint8Array }): Uint8Array {
  return concat(ethHeader(o.dstMac, o.srcMac, ETHERTYPE_IPV4), ipv4Packet(o.srcIp, o.dstIp, 1, icmpEcho(8, o.id, o.seq, o.data)));
}

export function udpFrame(o: { srcMac: string; dstMac: string; srcIp: string; dstIp: string; srcPort: number; dstPort: number; data: Uint8Array }): Uint8Array {
  const u = new Uint8Array(8 + o.data.length);
  const v = new DataView(u.buffer);
  v.setUint16(0, o.srcPort);
  v.setUint16(2, o.dstPort);
  v.setUint16(4, u.length);
  u.set(o.data, 8); // checksum 0: optional for UDP over IPv4
  return concat(ethHeader(o.dstMac, o.srcMac, ETHERTYPE_IPV4), ipv4Packet(o.srcIp, o.dstIp, 17, u));
}

export function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

// --- namespaces ---------------------------------------------------------------------------

let counter = 0;

export function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.error, undefined, `${cmd} could not run: ${String(r.error)}`);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/** Fails (never skips) when the test host cannot create namespaces and TAP devices. */
export function requireNetAdmin(): void {
  assert.equal(process.getuid?.(), 0, 'TAP tests need root (CAP_NET_ADMIN); run them as root');
  const r = spawnSync('ip', ['-V']);
  assert.equal(r.status, 0, 'TAP tests need the "ip" tool (iproute2)');
}

/** A fresh network namespace with a unique name, deleted afterwards even if `fn` throws. */
export async function withNetns<T>(fn: (ns: string) => Promise<T>): Promise<T> {
  const ns = `ferry-t${process.pid}-${++counter}`;
  sh('ip', ['netns', 'add', ns]);
  try {
    return await fn(ns);
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
}

export function linkInfo(ns: string | undefined, dev: string): { address: string; master?: string; operstate: string; flags: string[] } | undefined {
  const args = [...(ns ? ['-n', ns] : []), '-j', 'link', 'show', 'dev', dev];
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  const parsed = JSON.parse(r.stdout) as Array<{ address: string; master?: string; operstate: string; flags: string[] }>;
  return parsed[0];
}

/** Resolves with the first frame `pred` accepts; the kernel also emits IPv6 chatter on new links. */
export function nextFrame(subscribe: (l: (f: Uint8Array) => void) => void, pred: (f: Uint8Array) => boolean, timeoutMs = 5000): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no matching frame within ${timeoutMs} ms`)), timeoutMs);
    subscribe((f) => {
      if (pred(f)) {
        clearTimeout(timer);
        resolve(f.slice());
      }
    });
  });
}
