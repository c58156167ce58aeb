// virtio-net: unit tests through the TS driver, then the real Debian guest pinging a TS peer.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { MemoryNetBackend } from '../../src/net/memory-backend.js';
import {
  VirtioNet, NET_F_MRG_RXBUF, NET_F_MAC, NET_F_STATUS, NET_F_CTRL_VQ, NET_F_GUEST_ANNOUNCE, NET_HDR_SIZE,
  NET_S_LINK_UP, NET_S_ANNOUNCE, RX_QUEUE, TX_QUEUE, CTRL_QUEUE,
} from '../../src/machine/devices/virtio/net.js';
import { Reg, F_VERSION_1, STATUS_NEEDS_RESET, INT_CONFIG_CHANGE } from '../../src/machine/devices/virtio/constants.js';
import { makeMemory, TestDriver } from './virtio-driver.js';
import { ensureGuestImage } from '../../src/guest/image.js';
import { Machine } from '../../src/machine/boot/machine.js';
import { ConsoleDriver, GUEST_PROMPT, GUEST_READY } from '../../src/machine/console/shell.js';
import { guestBoot } from '../../src/guest/boot.js';
import { GUEST_CMDLINE } from '../../src/guest/cmdline.js';

const MAC = Uint8Array.of(0x52, 0x54, 0x00, 0x12, 0x34, 0x56);
const HOST_MAC = Uint8Array.of(0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc);

function frame(len: number, fill = 0xab): Uint8Array {
  const f = new Uint8Array(len).fill(fill);
  f.set(MAC, 0);
  f.set(HOST_MAC, 6);
  return f;
}

function setup(opts: { merge?: boolean; features?: bigint } = {}): { d: TestDriver; net: VirtioNet; host: MemoryNetBackend; received: Uint8Array[] } {
  const memory = makeMemory(4 << 20);
  const [guestEnd, host] = MemoryNetBackend.pair();
  const net = new VirtioNet(memory, { backend: guestEnd, mac: MAC, mergeRxBuffers: opts.merge ?? true });
  const d = new TestDriver(net, memory);
  const received: Uint8Array[] = [];
  host.onReceive((f) => received.push(f));
  d.bringUp(3, 16, opts.features);
  return { d, net, host, received };
}

function header(d: TestDriver, addr: bigint): number[] {
  return [...d.memory.read(addr, NET_HDR_SIZE)];
}

test('features and configuration space', () => {
  const memory = makeMemory();
  const net = new VirtioNet(memory, { backend: MemoryNetBackend.pair()[0], mac: MAC });
  const d = new TestDriver(net, memory);
  assert.equal(d.deviceFeatures(), NET_F_MAC | NET_F_STATUS | NET_F_CTRL_VQ | NET_F_GUEST_ANNOUNCE | NET_F_MRG_RXBUF | F_VERSION_1);
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((i) => d.transport.read(Reg.Config + i, 1)), [...MAC]);
  assert.equal(d.transport.read(Reg.Config + 6, 2), NET_S_LINK_UP);
  assert.equal(d.transport.read(Reg.Config + 8, 2), 1);
  assert.equal(d.transport.read(Reg.Config + 4, 4), 0x0001_5634);
});

test('tx strips the header; a chain without a header or with writable parts → NEEDS_RESET', async () => {
  const { d, net, received } = setup();
  const payload = frame(60, 0x11);
  const hdr = new Uint8Array(NET_HDR_SIZE);
  // Header and frame in separate descriptors and in one: both are legal layouts.
  d.post(TX_QUEUE, [d.buf(hdr), d.buf(payload.subarray(0, 20)), d.buf(payload.subarray(20))]);
  const one = new Uint8Array(NET_HDR_SIZE + 60);
  one.set(payload, NET_HDR_SIZE);
  d.post(TX_QUEUE, [d.buf(one)]);
  d.kick(TX_QUEUE);
  assert.deepEqual(d.used(TX_QUEUE).map((u) => u.len), [0, 0]);
  await tick();
  assert.equal(received.length, 2);
  assert.deepEqual(received[0], payload);
  assert.deepEqual(received[1], payload);
  assert.equal(net.stats.txFrames, 2);

  d.post(TX_QUEUE, [d.buf(new Uint8Array(8))]);
  d.kick(TX_QUEUE);
  assert.equal(d.status & STATUS_NEEDS_RESET, STATUS_NEEDS_RESET);
  assert.match(d.logs[0]!, /no virtio-net header/);

  const s2 = setup();
  s2.d.post(TX_QUEUE, [s2.d.buf(one), s2.d.buf(16, true)]);
  s2.d.kick(TX_QUEUE);
  assert.equal(s2.d.status & STATUS_NEEDS_RESET, STATUS_NEEDS_RESET);
  assert.match(s2.d.logs[0]!, /device-writable/);
});

test('rx prepends a zeroed header with num_buffers = 1', async () => {
  for (const merge of [true, false]) {
    const { d, host, net } = setup({ merge });
    const b = d.buf(1526, true);
    const head = d.post(RX_QUEUE, [b]);
    d.kick(RX_QUEUE);
    const f = frame(100);
    host.send(f);
    await tick();
    assert.deepEqual(d.used(RX_QUEUE), [{ id: head, len: NET_HDR_SIZE + 100 }]);
    assert.deepEqual(header(d, b.addr), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    assert.deepEqual(d.memory.read(b.addr + BigInt(NET_HDR_SIZE), 100), f);
    assert.equal(d.irq.level, true);
    assert.equal(net.stats.rxFrames, 1);
  }
});

test('rx backlog: frames wait for buffers, in order, up to a bound; then dropped', async () => {
  const { d, host, net } = setup();
  for (let i = 0; i < 3; i++) host.send(frame(60, i));
  await tick();
  assert.equal(net.pendingFrames, 3);
  const bufs = [d.buf(1526, true), d.buf(1526, true)];
  for (const b of bufs) d.post(RX_QUEUE, [b]);
  d.kick(RX_QUEUE);
  assert.equal(d.used(RX_QUEUE).length, 2);
  assert.equal(d.memory.readU8(bufs[0]!.addr + BigInt(NET_HDR_SIZE + 20)), 0);
  assert.equal(d.memory.readU8(bufs[1]!.addr + BigInt(NET_HDR_SIZE + 20)), 1);
  assert.equal(net.pendingFrames, 1);

  for (let i = 0; i < 300; i++) host.send(frame(60, 7));
  await tick();
  assert.equal(net.pendingFrames, 256);
  assert.equal(net.stats.rxDropped, 45);

  // A snapshot keeps the backlog (base64), and a restored device delivers it.
  const state = JSON.parse(JSON.stringify(d.transport.save())) as ReturnType<typeof d.transport.save>;
  const memory2 = makeMemory(4 << 20);
  memory2.bytes.set(d.memory.bytes);
  const net2 = new VirtioNet(memory2, { backend: MemoryNetBackend.pair()[0], mac: Uint8Array.of(2, 0, 0, 0, 0, 1) });
  const d2 = d.cloneOnto(net2, memory2);
  d2.transport.restore(state);
  assert.equal(net2.pendingFrames, 256);
  assert.equal(d2.transport.read(Reg.Config + 5, 1), 0x56, 'the MAC travels with the guest');
  const b = d2.buf(1526, true);
  d2.post(RX_QUEUE, [b]);
  d2.kick(RX_QUEUE);
  assert.equal(d2.used(RX_QUEUE).length, 1);
  assert.equal(d2.memory.readU8(b.addr + BigInt(NET_HDR_SIZE + 20)), 2, 'the third frame comes next');
  assert.equal(net2.pendingFrames, 255);
});

test('mergeable rx buffers: a frame spans several buffers; a partial set waits', async () => {
  const { d, host } = setup();
  const small = [d.buf(100, true), d.buf(100, true)];
  for (const b of small) d.post(RX_QUEUE, [b]);
  d.kick(RX_QUEUE);
  const f = frame(250);
  for (let i = 0; i < 250; i++) f[i + 12] = i & 0xff;
  host.send(f);
  await tick();
  assert.deepEqual(d.used(RX_QUEUE), [], 'two 100-byte buffers cannot hold 262 bytes');
  const third = d.buf(100, true);
  d.post(RX_QUEUE, [third]);
  d.kick(RX_QUEUE);
  assert.deepEqual(d.used(RX_QUEUE).map((u) => u.len), [100, 100, 62]);
  assert.equal(d.memory.readU16(small[0]!.addr + 10n), 3);
  const got = new Uint8Array([...d.memory.read(small[0]!.addr, 100), ...d.memory.read(small[1]!.addr, 100), ...d.memory.read(third.addr, 62)]);
  assert.deepEqual(got.subarray(NET_HDR_SIZE), f);

  // Without MRG_RXBUF a buffer too small for the frame is returned empty and the frame dropped.
  const s = setup({ features: NET_F_MAC | NET_F_STATUS | NET_F_CTRL_VQ | F_VERSION_1 });
  s.d.post(RX_QUEUE, [s.d.buf(100, true)]);
  s.d.kick(RX_QUEUE);
  s.host.send(f);
  await tick();
  assert.deepEqual(s.d.used(RX_QUEUE).map((u) => u.len), [0]);
  assert.equal(s.net.stats.rxDropped, 1);
  assert.equal(s.net.pendingFrames, 0);
});

test('control queue: announce and its ack, RX mode OK, unknown class ERR; malformed → NEEDS_RESET', () => {
  const { d, net } = setup();
  assert.equal(net.announce(), true);
  assert.equal(d.transport.read(Reg.Config + 6, 2), NET_S_LINK_UP | NET_S_ANNOUNCE);
  assert.equal(d.ack() & INT_CONFIG_CHANGE, INT_CONFIG_CHANGE);
  const cmd = (cls: number, c: number, data: number[] = []): number => {
    const ack = d.buf(1, true);
    d.memory.writeU8(ack.addr, 0xff);
    d.post(CTRL_QUEUE, [d.buf(Uint8Array.of(cls, c, ...data)), ack]);
    d.kick(CTRL_QUEUE);
    assert.deepEqual(d.used(CTRL_QUEUE).map((u) => u.len), [1]);
    return d.memory.readU8(ack.addr);
  };
  assert.equal(cmd(0, 0, [1]), 0, 'promiscuous on');
  assert.equal(cmd(1, 1, [...MAC]), 0, 'MAC address set');
  assert.equal(cmd(9, 0), 1, 'unknown class');
  assert.equal(cmd(3, 1), 1, 'unknown announce command');
  assert.equal(net.announcing, true);
  assert.equal(cmd(3, 0), 0, 'announce ack');
  assert.equal(net.announcing, false);
  assert.equal(d.transport.read(Reg.Config + 6, 2), NET_S_LINK_UP);

  d.post(CTRL_QUEUE, [d.buf(Uint8Array.of(3, 0))]);
  d.kick(CTRL_QUEUE);
  assert.equal(d.status & STATUS_NEEDS_RESET, STATUS_NEEDS_RESET);
});

test('a broken device drops backend frames instead of touching the rings', async () => {
  const { d, host, net } = setup();
  // A receive buffer with a readable descriptor is not a receive buffer.
  d.post(RX_QUEUE, [d.buf(Uint8Array.of(1)), d.buf(1526, true)]);
  d.kick(RX_QUEUE);
  host.send(frame(60));
  await tick();
  assert.equal(d.status & STATUS_NEEDS_RESET, STATUS_NEEDS_RESET);
  assert.match(d.logs[0]!, /device-readable/);
  host.send(frame(60));
  await tick();
  assert.equal(d.logs.length, 1);
  assert.equal(net.stats.rxDropped, 1);
  // Reset and bring-up recover.
  d.bringUp(3);
  const b = d.buf(1526, true);
  d.post(RX_QUEUE, [b]);
  d.kick(RX_QUEUE);
  host.send(frame(60));
  await tick();
  assert.equal(d.used(RX_QUEUE).length, 1);
});

// ---- The real guest ---------------------------------------------------------------------

const GUEST_IP = Uint8Array.of(10, 0, 2, 15);
const HOST_IP = Uint8Array.of(10, 0, 2, 2);

function checksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i + 1 < bytes.length; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (bytes.length & 1) sum += bytes[bytes.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

const eq = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** The host side of the cable: answers ARP for HOST_IP and ICMP echo to it, records what it saw. */
class Responder {
  readonly sourceMacs = new Set<string>();
  echoes = 0;
  badChecksums = 0;
  gratuitousArps = 0;
  constructor(private readonly port: MemoryNetBackend) {
    port.onReceive((f) => this.onFrame(f));
  }

  private onFrame(f: Uint8Array): void {
    if (f.length < 14) return;
    this.sourceMacs.add([...f.subarray(6, 12)].map((b) => b.toString(16).padStart(2, '0')).join(':'));
    const type = (f[12]! << 8) | f[13]!;
    if (type === 0x0806 && f.length >= 42) this.arp(f);
    else if (type === 0x0800 && f.length >= 34) this.ipv4(f);
  }

  private arp(f: Uint8Array): void {
    const a = f.subarray(14);
    const op = (a[6]! << 8) | a[7]!;
    const spa = a.subarray(14, 18);
    const tpa = a.subarray(24, 28);
    if (eq(spa, tpa)) { if (eq(spa, GUEST_IP)) this.gratuitousArps++; return; }
    if (op !== 1 || !eq(tpa, HOST_IP)) return;
    const r = new Uint8Array(60);
    r.set(a.subarray(8, 14), 0);
    r.set(HOST_MAC, 6);
    r.set([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2], 12);
    r.set(HOST_MAC, 22);
    r.set(HOST_IP, 28);
    r.set(a.subarray(8, 14), 32);
    r.set(spa, 38);
    this.port.send(r);
  }

  private ipv4(f: Uint8Array): void {
    const ip = f.subarray(14);
    const ihl = (ip[0]! & 0xf) * 4;
    const total = (ip[2]! << 8) | ip[3]!;
    if (ip[9] !== 1 || !eq(ip.subarray(16, 20), HOST_IP) || total > ip.length) return;
    const icmp = ip.subarray(ihl, total);
    if (checksum(ip.subarray(0, ihl)) !== 0 || checksum(icmp) !== 0) { this.badChecksums++; return; }
    if (icmp[0] !== 8) return;
    const r = new Uint8Array(14 + total);
    r.set(f.subarray(6, 12), 0);
    r.set(HOST_MAC, 6);
    r.set([0x08, 0x00], 12);
    const rip = r.subarray(14);
    rip.set(ip.subarray(0, total));
    rip.set(ip.subarray(16, 20), 12);
    rip.set(ip.subarray(12, 16), 16);
    rip[8] = 64;
    rip[10] = 0; rip[11] = 0;
    const c = checksum(rip.subarray(0, ihl));
    rip[10] = c >> 8; rip[11] = c & 0xff;
    const ricmp = rip.subarray(ihl, total);
    ricmp[0] = 0;
    ricmp[2] = 0; ricmp[3] = 0;
    const ic = checksum(ricmp);
    ricmp[2] = ic >> 8; ricmp[3] = ic & 0xff;
    this.echoes++;
    this.port.send(r);
  }
}

test('the Debian guest pings a TS peer through virtio-net and announces itself on request', { timeout: 600_000 }, async () => {
  const image = await ensureGuestImage();
  const console = new ConsoleDriver();
  const [guestEnd, hostEnd] = MemoryNetBackend.pair();
  const responder = new Responder(hostEnd);
  let net: VirtioNet | undefined;
  const machine = new Machine({
    ramBytes: 256 << 20,
    console,
    boot: guestBoot(image, `${GUEST_CMDLINE} ferry.ip=10.0.2.15/24`),
    virtio: (mem) => [(net = new VirtioNet(mem, { backend: guestEnd, mac: MAC }))],
  });
  const running = machine.run();
  try {
    const ready = await console.waitFor(GUEST_READY, 300_000);
    await console.waitFor(GUEST_PROMPT, 60_000, ready.index);

    // Linux reports the carrier through linkwatch, up to a second after the interface came up:
    // a guest that reaches its prompt sooner than that (translated) reads operstate once it has.
    const link = await console.exec('for i in $(seq 100); do [ "$(cat /sys/class/net/eth0/operstate)" = up ] && break; sleep 0.1; done; '
      + 'cat /sys/class/net/eth0/address /sys/class/net/eth0/operstate', 30_000);
    assert.equal(link.status, 0, link.output);
    assert.deepEqual(link.output.trim().split('\n'), ['52:54:00:12:34:56', 'up']);

    const ping = await console.exec('ping -c 3 -W 5 10.0.2.2', 120_000);
    assert.equal(ping.status, 0, ping.output);
    assert.match(ping.output, /3 packets transmitted, 3 packets received, 0% packet loss/);
    assert.ok(responder.echoes >= 3);
    assert.equal(responder.badChecksums, 0);
    assert.deepEqual([...responder.sourceMacs], ['52:54:00:12:34:56']);

    // After a migration the VMM asks the guest to announce itself; Linux answers with
    // gratuitous ARPs and acknowledges over the control queue.
    assert.equal(net!.announce(), true);
    const deadline = Date.now() + 60_000;
    while ((responder.gratuitousArps === 0 || net!.announcing) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(responder.gratuitousArps > 0, 'gratuitous ARP seen');
    assert.equal(net!.announcing, false, 'announce acknowledged');
    assert.equal(machine.virtio[0]!.needsReset, false);

    console.send('poweroff\n');
    assert.deepEqual(await running, { kind: 'poweroff' });
  } finally {
    machine.stop();
    await running;
  }
});
