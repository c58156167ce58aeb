// A minimal virtio-mmio driver written in TS for device tests: it programs a VirtioMmio through
// its register interface and keeps split rings in a GuestMemory over a plain ArrayBuffer.

import { GuestMemory } from '../../src/machine/memory/guest-memory.js';
import { VirtioMmio } from '../../src/machine/devices/virtio/mmio.js';
import type { VirtioDevice } from '../../src/machine/devices/virtio/device.js';
import {
  Reg, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK, F_VERSION_1, DESC_F_NEXT, DESC_F_WRITE,
} from '../../src/machine/devices/virtio/constants.js';
import { FakeIrq } from './fakes.js';

export const RAM_BASE = 0x8000_0000n;

export function makeMemory(ramSize = 1 << 20): GuestMemory {
  const pages = ramSize / 4096;
  const buffer = new ArrayBuffer(ramSize + 16 * pages);
  return new GuestMemory(buffer, {
    ramHostOffset: 0, ramBase: RAM_BASE, ramSize, dirtyLogOffset: ramSize, accessLogOffset: ramSize + pages,
    absentMapOffset: ramSize + 2 * pages, codeMapOffset: ramSize + 4 * pages,
  });
}

export interface Buf {
  addr: bigint;
  len: number;
  write?: boolean;
}

interface DriverQueue {
  size: number;
  desc: bigint;
  avail: bigint;
  used: bigint;
  nextDesc: number;
  availIdx: number;
  lastUsed: number;
}

export class TestDriver {
  readonly irq = new FakeIrq();
  readonly logs: string[] = [];
  readonly transport: VirtioMmio;
  private readonly queues = new Map<number, DriverQueue>();
  /** Bump allocator for rings and buffers, from the top half of RAM. */
  private heap: bigint;

  constructor(readonly device: VirtioDevice, readonly memory: GuestMemory) {
    this.transport = new VirtioMmio(device, memory, this.irq, (m) => this.logs.push(m));
    this.heap = memory.ramBase + BigInt(memory.ramSize / 2);
  }

  /** The same driver's bookkeeping against another device/memory (after a restore there). */
  cloneOnto(device: VirtioDevice, memory: GuestMemory): TestDriver {
    const d = new TestDriver(device, memory);
    for (const [i, q] of this.queues) d.queues.set(i, { ...q });
    d.heap = this.heap;
    return d;
  }

  read(reg: number): number { return this.transport.read(reg, 4); }
  write(reg: number, v: number): void { this.transport.write(reg, 4, v); }
  get status(): number { return this.read(Reg.Status); }

  alloc(len: number, align = 16): bigint {
    const a = BigInt(align);
    this.heap = (this.heap + a - 1n) / a * a;
    const at = this.heap;
    this.heap += BigInt(len);
    if (this.heap > this.memory.ramBase + BigInt(this.memory.ramSize)) throw new Error('test heap exhausted');
    return at;
  }

  deviceFeatures(): bigint {
    this.write(Reg.DeviceFeaturesSel, 0);
    const lo = BigInt(this.read(Reg.DeviceFeatures));
    this.write(Reg.DeviceFeaturesSel, 1);
    return lo | (BigInt(this.read(Reg.DeviceFeatures)) << 32n);
  }

  /** Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK; returns whether FEATURES_OK stuck. */
  negotiate(features: bigint = this.deviceFeatures() | F_VERSION_1): boolean {
    this.write(Reg.Status, 0);
    this.write(Reg.Status, STATUS_ACKNOWLEDGE);
    this.write(Reg.Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    this.write(Reg.DriverFeaturesSel, 0);
    this.write(Reg.DriverFeatures, Number(features & 0xffff_ffffn));
    this.write(Reg.DriverFeaturesSel, 1);
    this.write(Reg.DriverFeatures, Number(features >> 32n));
    this.write(Reg.Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    return (this.status & STATUS_FEATURES_OK) !== 0;
  }

  setupQueue(index: number, size: number): void {
    const desc = this.alloc(16 * size, 16);
    const avail = this.alloc(6 + 2 * size, 2);
    const used = this.alloc(6 + 8 * size, 4);
    this.write(Reg.QueueSel, index);
    this.write(Reg.QueueNum, size);
    const set = (lo: number, v: bigint): void => { this.write(lo, Number(v & 0xffff_ffffn)); this.write(lo + 4, Number(v >> 32n)); };
    set(Reg.QueueDescLow, desc);
    set(Reg.QueueDriverLow, avail);
    set(Reg.QueueDeviceLow, used);
    this.write(Reg.QueueReady, 1);
    this.queues.set(index, { size, desc, avail, used, nextDesc: 0, availIdx: 0, lastUsed: 0 });
  }

  driverOk(): void {
    this.write(Reg.Status, this.status | STATUS_DRIVER_OK);
  }

  /** Full bring-up: negotiate everything offered, set up `queues` of `size`, DRIVER_OK. */
  bringUp(queueCount: number, size = 16, features?: bigint): void {
    if (!this.negotiate(features)) throw new Error('FEATURES_OK refused');
    for (let i = 0; i < queueCount; i++) this.setupQueue(i, size);
    this.driverOk();
  }

  q(index: number): DriverQueue {
    const q = this.queues.get(index);
    if (!q) throw new Error(`queue ${index} not set up`);
    return q;
  }

  /** Writes a raw descriptor. */
  writeDesc(queue: number, i: number, addr: bigint, len: number, flags: number, next: number): void {
    const d = this.q(queue).desc + BigInt(16 * i);
    this.memory.writeU64(d, addr);
    this.memory.writeU32(d + 8n, len);
    this.memory.writeU16(d + 12n, flags);
    this.memory.writeU16(d + 14n, next);
  }

  /** Publishes `head` in the driver ring (without kicking). */
  publish(queue: number, head: number): void {
    const q = this.q(queue);
    this.memory.writeU16(q.avail + 4n + BigInt(2 * (q.availIdx % q.size)), head);
    q.availIdx = (q.availIdx + 1) & 0xffff;
    this.memory.writeU16(q.avail + 2n, q.availIdx);
  }

  /** Builds a chain from `bufs` using the next free descriptors (wrapping), publishes it. */
  post(queue: number, bufs: readonly Buf[]): number {
    const q = this.q(queue);
    const ids = bufs.map((_, i) => (q.nextDesc + i) % q.size);
    q.nextDesc = (q.nextDesc + bufs.length) % q.size;
    bufs.forEach((b, i) => {
      const last = i === bufs.length - 1;
      this.writeDesc(queue, ids[i]!, b.addr, b.len, (b.write ? DESC_F_WRITE : 0) | (last ? 0 : DESC_F_NEXT), last ? 0 : ids[i + 1]!);
    });
    this.publish(queue, ids[0]!);
    return ids[0]!;
  }

  /** Allocates a buffer holding `data` (readable) or `len` zero bytes (writable). */
  buf(data: Uint8Array): Buf;
  buf(len: number, write: true): Buf;
  buf(x: Uint8Array | number, write?: boolean): Buf {
    if (typeof x === 'number') return { addr: this.alloc(x), len: x, write: write ?? false };
    const addr = this.alloc(x.length);
    this.memory.write(addr, x);
    return { addr, len: x.length };
  }

  kick(queue: number): void { this.write(Reg.QueueNotify, queue); }

  /** New device-ring entries since the last call. */
  used(queue: number): Array<{ id: number; len: number }> {
    const q = this.q(queue);
    const idx = this.memory.readU16(q.used + 2n);
    const out: Array<{ id: number; len: number }> = [];
    while (q.lastUsed !== idx) {
      const e = q.used + 4n + BigInt(8 * (q.lastUsed % q.size));
      out.push({ id: this.memory.readU32(e), len: this.memory.readU32(e + 4n) });
      q.lastUsed = (q.lastUsed + 1) & 0xffff;
    }
    return out;
  }

  ack(): number {
    const s = this.read(Reg.InterruptStatus);
    this.write(Reg.InterruptAck, s);
    return s;
  }
}
