// Core-Local Interruptor: per-hart msip and mtimecmp plus the shared mtime. The CLINT owns
// the register values (so they are snapshotted here); the hart owns the comparison of time
// against mtimecmp, because only the CPU loop knows when time advances.
//
// Under ferry Linux runs in S-mode and reaches timers through SBI, so this device serves
// M-mode bare-metal test programs and keeps the memory map identical to QEMU virt.

import type { AccessSize, MmioDevice } from './types.js';
import { DeviceConfigError } from './errors.js';
import { checkArray, checkBool, checkU64 } from '../state-check.js';

export const CLINT_SIZE = 0x10000;
const MSIP_BASE = 0x0;
const MTIMECMP_BASE = 0x4000;
const MTIME = 0xbff8;
const MASK64 = (1n << 64n) - 1n;

/** What the CLINT drives on a hart; the CPU core implements it. */
export interface ClintHart {
  /** Current mtime (shared by all harts; hart 0's answer is used for the mtime register). */
  readTime(): bigint;
  /** Optional: M-mode software may set mtime. Without it, mtime writes are ignored. */
  writeTime?(value: bigint): void;
  /** New compare value; MTIP is level time >= mtimecmp, evaluated by the hart. */
  setMtimecmp(value: bigint): void;
  setMsip(level: boolean): void;
}

export interface ClintHartState {
  msip: boolean;
  /** Decimal u64. */
  mtimecmp: string;
}

export interface ClintState {
  harts: ClintHartState[];
}

export class Clint implements MmioDevice {
  readonly name = 'clint';
  private readonly msip: boolean[];
  private readonly mtimecmp: bigint[];

  constructor(private readonly harts: readonly ClintHart[]) {
    if (harts.length === 0 || harts.length > 4095) {
      throw new DeviceConfigError('DEVICE_INVALID_CONFIG', `CLINT cannot serve ${harts.length} harts`);
    }
    this.msip = harts.map(() => false);
    // Reset value all-ones so no timer interrupt fires before software programs one.
    this.mtimecmp = harts.map(() => MASK64);
    harts.forEach((h) => h.setMtimecmp(MASK64));
  }

  read(offset: number, size: AccessSize): number {
    const word = offset & ~3;
    const v = this.readWord(word);
    const shift = (offset & 3) * 8;
    return size === 4 ? v : (v >>> shift) & (size === 1 ? 0xff : 0xffff);
  }

  write(offset: number, size: AccessSize, value: number): void {
    const word = offset & ~3;
    let v = value >>> 0;
    if (size !== 4) {
      // Sub-word stores merge into the 32-bit register they hit.
      const shift = (offset & 3) * 8;
      const mask = (size === 1 ? 0xff : 0xffff) << shift;
      v = ((this.readWord(word) & ~mask) | ((value << shift) & mask)) >>> 0;
    }
    this.writeWord(word, v);
  }

  save(): ClintState {
    return { harts: this.msip.map((m, i) => ({ msip: m, mtimecmp: this.mtimecmp[i]!.toString() })) };
  }

  restore(s: ClintState): void {
    const harts = checkArray(this.name, 'harts', s.harts, this.harts.length) as ClintHartState[];
    const parsed = harts.map((h, i) => ({
      msip: checkBool(this.name, `harts[${i}].msip`, h.msip),
      mtimecmp: checkU64(this.name, `harts[${i}].mtimecmp`, h.mtimecmp),
    }));
    parsed.forEach((h, i) => {
      this.msip[i] = h.msip;
      this.mtimecmp[i] = h.mtimecmp;
      this.harts[i]!.setMsip(h.msip);
      this.harts[i]!.setMtimecmp(h.mtimecmp);
    });
  }

  private readWord(off: number): number {
    if (off < MTIMECMP_BASE) {
      const h = (off - MSIP_BASE) >>> 2;
      return h < this.harts.length && this.msip[h] ? 1 : 0;
    }
    if (off === MTIME || off === MTIME + 4) {
      return half(this.harts[0]!.readTime(), off === MTIME + 4);
    }
    if (off < MTIME) {
      const h = (off - MTIMECMP_BASE) >>> 3;
      if (h < this.harts.length) return half(this.mtimecmp[h]!, (off & 4) !== 0);
    }
    return 0;
  }

  private writeWord(off: number, v: number): void {
    if (off < MTIMECMP_BASE) {
      const h = (off - MSIP_BASE) >>> 2;
      if (h < this.harts.length) {
        this.msip[h] = (v & 1) === 1;
        this.harts[h]!.setMsip(this.msip[h]!);
      }
      return;
    }
    if (off === MTIME || off === MTIME + 4) {
      const hart = this.harts[0]!;
      hart.writeTime?.(merge(hart.readTime(), v, off === MTIME + 4));
      return;
    }
    if (off < MTIME) {
      const h = (off - MTIMECMP_BASE) >>> 3;
      if (h >= this.harts.length) return;
      // Each half takes effect immediately, as on hardware: software that cares writes
      // all-ones to one half first to avoid a spurious early deadline.
      this.mtimecmp[h] = merge(this.mtimecmp[h]!, v, (off & 4) !== 0);
      this.harts[h]!.setMtimecmp(this.mtimecmp[h]!);
    }
  }
}

function half(v: bigint, high: boolean): number {
  return Number((high ? v >> 32n : v) & 0xffffffffn);
}

function merge(old: bigint, v: number, high: boolean): bigint {
  const w = BigInt(v >>> 0);
  return high ? (old & 0xffffffffn) | (w << 32n) : (old & ~0xffffffffn & MASK64) | w;
}
