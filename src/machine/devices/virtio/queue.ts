// A split virtqueue as the device sees it: descriptor table, driver ("avail") ring and device
// ("used") ring in guest memory. Every guest-controlled value is validated; a malformed chain
// raises VirtioGuestError instead of touching memory out of bounds or looping.

import { GuestMemory } from '../../memory/guest-memory.js';
import { VirtioGuestError } from './errors.js';
import { AVAIL_F_NO_INTERRUPT, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE } from './constants.js';
import { checkBool, checkU64, checkUint } from '../../state-check.js';

/** One guest buffer: guest-physical address and length. */
export interface Segment {
  readonly addr: bigint;
  readonly len: number;
}

/** A descriptor chain: device-readable segments first, then device-writable ones. */
export interface DescriptorChain {
  readonly head: number;
  readonly readable: readonly Segment[];
  readonly writable: readonly Segment[];
}

/** What a snapshot keeps of a queue: its configuration and where the device is in the ring. */
export interface QueueState {
  size: number;
  ready: boolean;
  descAddr: string;
  driverAddr: string;
  deviceAddr: string;
  lastAvailIdx: number;
}

const DESC_SIZE = 16;

export class Virtqueue {
  size = 0;
  ready = false;
  descAddr = 0n;
  driverAddr = 0n;
  deviceAddr = 0n;
  /** Next driver-ring entry the device will consume. */
  lastAvailIdx = 0;

  constructor(readonly maxSize: number, private readonly memory: GuestMemory, private readonly owner: string,
    private readonly indirect: () => boolean) {}

  reset(): void {
    this.size = 0;
    this.ready = false;
    this.descAddr = 0n;
    this.driverAddr = 0n;
    this.deviceAddr = 0n;
    this.lastAvailIdx = 0;
  }

  /** Checks the rings fit in RAM when the driver marks the queue ready. */
  validate(): void {
    const n = this.size;
    if (n === 0 || (n & (n - 1)) !== 0 || n > this.maxSize) this.fail(`queue size ${n} is not a power of two <= ${this.maxSize}`);
    this.check(this.descAddr, DESC_SIZE * n, 'descriptor table');
    this.check(this.driverAddr, 6 + 2 * n, 'driver ring');
    this.check(this.deviceAddr, 6 + 8 * n, 'device ring');
  }

  /** Takes the next available chain, or undefined when the driver has posted nothing new. */
  pop(): DescriptorChain | undefined {
    if (!this.ready) return undefined;
    const m = this.memory;
    const availIdx = m.readU16(this.driverAddr + 2n);
    const pending = (availIdx - this.lastAvailIdx) & 0xffff;
    if (pending === 0) return undefined;
    if (pending > this.size) this.fail(`driver ring index jumped by ${pending} (queue size ${this.size})`);
    const head = m.readU16(this.driverAddr + 4n + BigInt(2 * (this.lastAvailIdx % this.size)));
    this.lastAvailIdx = (this.lastAvailIdx + 1) & 0xffff;
    return this.walk(head);
  }

  /** Re-reads the chain starting at descriptor `head` (to replay an in-flight request after a
   * restore: the descriptors stay the driver's until the device returns them). */
  chainAt(head: number): DescriptorChain {
    return this.walk(head);
  }

  /** Returns a chain to the driver with `written` bytes placed in its writable segments. */
  push(head: number, written: number): void {
    const m = this.memory;
    const usedIdx = m.readU16(this.deviceAddr + 2n);
    const elem = this.deviceAddr + 4n + BigInt(8 * (usedIdx % this.size));
    m.writeU32(elem, head);
    m.writeU32(elem + 4n, written);
    m.writeU16(this.deviceAddr + 2n, (usedIdx + 1) & 0xffff);
  }

  /** Whether the driver asked not to be interrupted for used buffers. */
  interruptSuppressed(): boolean {
    return (this.memory.readU16(this.driverAddr) & AVAIL_F_NO_INTERRUPT) !== 0;
  }

  private walk(head: number): DescriptorChain {
    if (head >= this.size) this.fail(`chain head ${head} is outside the queue of ${this.size}`);
    const readable: Segment[] = [];
    const writable: Segment[] = [];
    let table = this.descAddr;
    let tableSize = this.size;
    let i = head;
    let seen = 0;
    let indirectUsed = false;
    for (;;) {
      if (++seen > tableSize) this.fail('descriptor chain loops');
      const d = table + BigInt(DESC_SIZE * i);
      const addr = this.memory.readU64(d);
      const len = this.memory.readU32(d + 8n);
      const flags = this.memory.readU16(d + 12n);
      const next = this.memory.readU16(d + 14n);
      if (flags & DESC_F_INDIRECT) {
        if (!this.indirect()) this.fail('indirect descriptor without VIRTIO_F_INDIRECT_DESC');
        if (indirectUsed || (flags & DESC_F_NEXT)) this.fail('nested or chained indirect descriptor');
        if (len === 0 || len % DESC_SIZE !== 0) this.fail(`indirect table length ${len} is not a multiple of 16`);
        this.check(addr, len, 'indirect table');
        indirectUsed = true;
        table = addr;
        tableSize = len / DESC_SIZE;
        i = 0;
        seen = 0;
        continue;
      }
      this.check(addr, len, 'buffer');
      if (flags & DESC_F_WRITE) writable.push({ addr, len });
      else if (writable.length > 0) this.fail('device-readable descriptor after a writable one');
      else readable.push({ addr, len });
      if (!(flags & DESC_F_NEXT)) break;
      if (next >= tableSize) this.fail(`next descriptor ${next} is outside the table of ${tableSize}`);
      i = next;
    }
    return { head, readable, writable };
  }

  private check(addr: bigint, len: number, what: string): void {
    if (!this.memory.contains(addr, len)) this.fail(`${what} 0x${addr.toString(16)}+${len} is outside guest RAM`);
  }

  private fail(message: string): never {
    throw new VirtioGuestError(this.owner, message);
  }

  save(): QueueState {
    return {
      size: this.size, ready: this.ready, descAddr: this.descAddr.toString(), driverAddr: this.driverAddr.toString(),
      deviceAddr: this.deviceAddr.toString(), lastAvailIdx: this.lastAvailIdx,
    };
  }

  restore(s: QueueState): void {
    const size = checkUint(this.owner, 'queue.size', s.size, this.maxSize);
    const ready = checkBool(this.owner, 'queue.ready', s.ready);
    const descAddr = checkU64(this.owner, 'queue.descAddr', s.descAddr);
    const driverAddr = checkU64(this.owner, 'queue.driverAddr', s.driverAddr);
    const deviceAddr = checkU64(this.owner, 'queue.deviceAddr', s.deviceAddr);
    const lastAvailIdx = checkUint(this.owner, 'queue.lastAvailIdx', s.lastAvailIdx, 0xffff);
    Object.assign(this, { size, ready, descAddr, driverAddr, deviceAddr, lastAvailIdx });
  }
}

/** Gathers a chain's device-readable bytes into one buffer (at most `max` bytes). */
export function readChain(memory: GuestMemory, segments: readonly Segment[], max = Infinity): Uint8Array {
  const total = Math.min(max, segments.reduce((n, s) => n + s.len, 0));
  const out = new Uint8Array(total);
  let at = 0;
  for (const s of segments) {
    if (at >= total) break;
    const n = Math.min(s.len, total - at);
    out.set(memory.slice(s.addr, n), at);
    at += n;
  }
  return out;
}

/** Scatters `data` over writable segments; returns the number of bytes written. */
export function writeChain(memory: GuestMemory, segments: readonly Segment[], data: Uint8Array, skip = 0): number {
  let at = 0;
  let offset = skip;
  for (const s of segments) {
    if (at >= data.length) break;
    if (offset >= s.len) { offset -= s.len; continue; }
    const n = Math.min(s.len - offset, data.length - at);
    memory.write(s.addr + BigInt(offset), data.subarray(at, at + n));
    at += n;
    offset = 0;
  }
  return at;
}
