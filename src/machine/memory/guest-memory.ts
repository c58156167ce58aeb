// The one consumer-side view of guest RAM (as rust-vmm's vm-memory). CPU stores mark the
// dirty log inside the interpreter's TLB slow path; every other writer (device DMA, SBI,
// loaders, migration restore) goes through this class, which marks the same per-page log.
// So there is exactly one dirty log and one place, per side, that feeds it.
//
// Pages may be absent (a post-copy destination before they arrive, pages on the VM's swap
// device). The interpreter exits on them; every access through this class first asks the
// fault handler to bring them in, synchronously (a device touching guest memory cannot wait
// asynchronously in the middle of a descriptor chain).

import { GuestMemoryError, GuestMemoryLostError } from './errors.js';

export const PAGE_SIZE = 4096;
export const PAGE_SHIFT = 12;

/** Dirty-log value of a written page: every writer (a CPU store, DMA) stores it. */
export const MARK_WRITTEN = 1;
/** Dirty-log value of a page put in RAM from a copy its backing store keeps (read back from the
 * swap device) and not written since: evicting it again needs no write (Linux's swap cache).
 * A later write overwrites it with MARK_WRITTEN. */
export const MARK_INSTALLED = 2;

/**
 * Takes a per-page log (the dirty or access log) and leaves it clear. Another thread may mark
 * pages meanwhile (the main thread installs pages faulted in from the swap device or the
 * migration source and marks them dirty), so every word is taken with an atomic exchange: a
 * mark lands in this log or stays for the next, never between a copy and a clear.
 */
export function takeMarks(log: Uint8Array): Uint8Array {
  const out = new Uint8Array(log.length);
  const whole = log.byteOffset % 4 === 0 ? log.length >>> 2 : 0;
  const words = new Int32Array(log.buffer, log.byteOffset, whole);
  const taken = new Int32Array(out.buffer, 0, whole);
  // The plain read only skips clear words (most of them): a mark it misses stays for the next.
  for (let i = 0; i < whole; i++) if (words[i] !== 0) taken[i] = Atomics.exchange(words, i, 0);
  for (let i = whole * 4; i < log.length; i++) if (log[i] !== 0) out[i] = Atomics.exchange(log, i, 0);
  return out;
}

export interface MemoryLayout {
  /** Byte offset of guest-physical `ramBase` inside the shared buffer. */
  readonly ramHostOffset: number;
  readonly ramBase: bigint;
  readonly ramSize: number;
  readonly dirtyLogOffset: number;
  readonly accessLogOffset: number;
  readonly absentMapOffset: number;
  /** Per page two u32: a generation, bumped when a line translated code was read from is
   * written (which retires those translations), and the mask of such 128-byte lines. */
  readonly codeMapOffset: number;
}

/** Brings absent pages first..last into RAM before the access goes on, or throws
 * GuestMemoryLostError. */
export type AbsentPageHandler = (firstPage: number, lastPage: number) => void;

export class GuestMemory {
  readonly ramBase: bigint;
  readonly ramSize: number;
  readonly pageCount: number;
  /** Guest RAM as bytes, index 0 = guest-physical ramBase. */
  readonly bytes: Uint8Array;
  /** One byte per guest page, shared with the vCPU: non-zero = changed since last clear
   * (MARK_WRITTEN, or MARK_INSTALLED for an unchanged copy of a backing store's page). */
  readonly dirtyLog: Uint8Array;
  /** One byte per guest page: 1 = read, written or executed since last clear. */
  readonly accessLog: Uint8Array;
  /** One byte per guest page: 0 = in RAM, else absent (the value names where it is, see
   * src/vm/paging). Written by the thread that owns paging, read by the vCPU on TLB refill. */
  readonly absent: Uint8Array;
  private readonly codeMap: Uint32Array;
  private readonly view: DataView;
  private absentHandler: AbsentPageHandler | undefined;

  constructor(readonly buffer: ArrayBufferLike, layout: MemoryLayout) {
    this.ramBase = layout.ramBase;
    this.ramSize = layout.ramSize;
    this.pageCount = Math.ceil(layout.ramSize / PAGE_SIZE);
    this.bytes = new Uint8Array(buffer, layout.ramHostOffset, layout.ramSize);
    this.view = new DataView(buffer, layout.ramHostOffset, layout.ramSize);
    this.dirtyLog = new Uint8Array(buffer, layout.dirtyLogOffset, this.pageCount);
    this.accessLog = new Uint8Array(buffer, layout.accessLogOffset, this.pageCount);
    this.absent = new Uint8Array(buffer, layout.absentMapOffset, this.pageCount);
    this.codeMap = new Uint32Array(buffer, layout.codeMapOffset, 2 * this.pageCount);
  }

  /** Who brings absent pages in for accesses through this view (the VM's worker). */
  onAbsent(handler: AbsentPageHandler | undefined): void {
    this.absentHandler = handler;
  }

  /** Offset into `bytes` of a guest-physical range, or throws if it leaves RAM. */
  offsetOf(gpa: bigint | number, length: number): number {
    const off = Number(BigInt(gpa) - this.ramBase);
    if (!Number.isInteger(off) || off < 0 || length < 0 || off + length > this.ramSize) {
      throw new GuestMemoryError(`guest range 0x${BigInt(gpa).toString(16)}+${length} is outside RAM`);
    }
    if (length > 0) this.ensurePresent(off >>> PAGE_SHIFT, (off + length - 1) >>> PAGE_SHIFT);
    return off;
  }

  /** Whether every page of first..last is in RAM. */
  present(firstPage: number, lastPage: number): boolean {
    for (let p = firstPage; p <= lastPage; p++) if (this.absent[p] !== 0) return false;
    return true;
  }

  /** Brings pages first..last into RAM through the fault handler (a no-op if all are). */
  ensurePresent(first: number, last: number): void {
    if (this.present(first, last)) return;
    if (!this.absentHandler) throw new GuestMemoryLostError(`guest pages ${first}..${last} are not in RAM and nothing can fetch them`);
    this.absentHandler(first, last);
    if (!this.present(first, last)) throw new GuestMemoryLostError(`guest pages ${first}..${last} are still absent after a fetch`);
  }

  contains(gpa: bigint | number, length: number): boolean {
    const off = Number(BigInt(gpa) - this.ramBase);
    return off >= 0 && length >= 0 && off + length <= this.ramSize;
  }

  /** A view (no copy) of guest memory for reading. Do not write through it: use write(). */
  slice(gpa: bigint | number, length: number): Uint8Array {
    const off = this.offsetOf(gpa, length);
    return this.bytes.subarray(off, off + length);
  }

  read(gpa: bigint | number, length: number): Uint8Array {
    return this.slice(gpa, length).slice();
  }

  write(gpa: bigint | number, data: Uint8Array): void {
    const off = this.offsetOf(gpa, data.length);
    this.bytes.set(data, off);
    this.markRange(off, data.length);
  }

  fill(gpa: bigint | number, length: number, value = 0): void {
    const off = this.offsetOf(gpa, length);
    this.bytes.fill(value, off, off + length);
    this.markRange(off, length);
  }

  readU8(gpa: bigint | number): number { return this.view.getUint8(this.offsetOf(gpa, 1)); }
  readU16(gpa: bigint | number): number { return this.view.getUint16(this.offsetOf(gpa, 2), true); }
  readU32(gpa: bigint | number): number { return this.view.getUint32(this.offsetOf(gpa, 4), true); }
  readU64(gpa: bigint | number): bigint { return this.view.getBigUint64(this.offsetOf(gpa, 8), true); }

  writeU8(gpa: bigint | number, v: number): void { const o = this.offsetOf(gpa, 1); this.view.setUint8(o, v); this.markRange(o, 1); }
  writeU16(gpa: bigint | number, v: number): void { const o = this.offsetOf(gpa, 2); this.view.setUint16(o, v, true); this.markRange(o, 2); }
  writeU32(gpa: bigint | number, v: number): void { const o = this.offsetOf(gpa, 4); this.view.setUint32(o, v, true); this.markRange(o, 4); }
  writeU64(gpa: bigint | number, v: bigint): void { const o = this.offsetOf(gpa, 8); this.view.setBigUint64(o, v, true); this.markRange(o, 8); }

  /** Retires any translated code read from `page` (its contents are about to be replaced
   * without a write through this class, as when it leaves RAM). */
  retireCode(page: number): void {
    if (this.codeMap[2 * page + 1] === 0) return;
    this.codeMap[2 * page + 1] = 0;
    Atomics.add(this.codeMap, 2 * page, 1);
  }

  private markRange(off: number, length: number): void {
    if (length === 0) return;
    const first = off >>> PAGE_SHIFT;
    const last = (off + length - 1) >>> PAGE_SHIFT;
    this.dirtyLog.fill(1, first, last + 1);
    this.accessLog.fill(1, first, last + 1);
    // What the interpreter's markDirty does for CPU stores: a write to a page the JIT read
    // code from retires those translations (the vCPU may be on another thread, hence atomics).
    for (let p = first; p <= last; p++) {
      const mask = this.codeMap[2 * p + 1]!;
      if (mask === 0) continue;
      const lo = p === first ? (off & 0xfff) >>> 7 : 0;
      const hi = p === last ? ((off + length - 1) & 0xfff) >>> 7 : 31;
      if ((mask & ((((2 << hi) - 1) >>> lo) << lo)) !== 0) {
        this.codeMap[2 * p + 1] = 0;
        Atomics.add(this.codeMap, 2 * p, 1);
      }
    }
  }
}
