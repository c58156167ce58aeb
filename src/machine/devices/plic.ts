// Platform-Level Interrupt Controller, register layout per the RISC-V PLIC spec. Every source
// is level-triggered through a gateway: a high line makes the source pending unless it is
// already claimed (in flight); completion re-opens the gateway and re-samples the line.
// Context 2h is hart h's M-mode target, 2h+1 its S-mode target (as on QEMU virt).

import type { AccessSize, HartInterruptSink, IrqLine, MmioDevice } from './types.js';
import { DeviceConfigError, DeviceStateError } from './errors.js';
import { checkArray, checkBool, checkUint } from '../state-check.js';

export const PLIC_SIZE = 0x600000;
const PRIORITY_BASE = 0x0;
const PENDING_BASE = 0x1000;
const ENABLE_BASE = 0x2000;
const ENABLE_STRIDE = 0x80;
const CONTEXT_BASE = 0x200000;
const CONTEXT_STRIDE = 0x1000;
/** Priorities and thresholds are WARL; 3 bits (levels 0..7) as on QEMU virt. */
const PRIORITY_MASK = 7;

export interface PlicSourceState {
  priority: number;
  /** Input line level as last driven by the device. */
  level: boolean;
  pending: boolean;
  /** Claimed by some context and not yet completed. */
  inFlight: boolean;
}

export interface PlicContextState {
  /** Enable bits as 32-bit words, word w covers sources 32w..32w+31. */
  enableWords: number[];
  threshold: number;
}

export interface PlicState {
  sourceCount: number;
  /** Index = source id; entry 0 is the reserved "no interrupt" id. */
  sources: PlicSourceState[];
  /** Index = context id (2*hart + (S-mode ? 1 : 0)). */
  contexts: PlicContextState[];
}

interface Context {
  readonly sink: HartInterruptSink;
  readonly mode: 'M' | 'S';
  readonly enable: Uint32Array;
  threshold: number;
  output: boolean;
}

export class Plic implements MmioDevice {
  readonly name = 'plic';
  /** Highest valid source id (riscv,ndev). */
  readonly sourceCount: number;
  private readonly words: number;
  private readonly priority: Uint8Array;
  private readonly level: Uint8Array;
  private readonly pending: Uint8Array;
  private readonly inFlight: Uint8Array;
  private readonly contexts: Context[];

  constructor(harts: readonly HartInterruptSink[], sourceCount = 95) {
    if (!Number.isInteger(sourceCount) || sourceCount < 1 || sourceCount > 1023) {
      throw new DeviceConfigError('DEVICE_INVALID_CONFIG', `PLIC source count ${sourceCount} not in 1..1023`);
    }
    if (harts.length === 0 || harts.length * 2 > (PLIC_SIZE - CONTEXT_BASE) / CONTEXT_STRIDE) {
      throw new DeviceConfigError('DEVICE_INVALID_CONFIG', `PLIC cannot serve ${harts.length} harts`);
    }
    this.sourceCount = sourceCount;
    this.words = Math.ceil((sourceCount + 1) / 32);
    this.priority = new Uint8Array(sourceCount + 1);
    this.level = new Uint8Array(sourceCount + 1);
    this.pending = new Uint8Array(sourceCount + 1);
    this.inFlight = new Uint8Array(sourceCount + 1);
    this.contexts = [];
    for (const sink of harts) {
      for (const mode of ['M', 'S'] as const) {
        this.contexts.push({ sink, mode, enable: new Uint32Array(this.words), threshold: 0, output: false });
      }
    }
  }

  /** The wire a device drives for source `n` (1..sourceCount). */
  irqLine(n: number): IrqLine {
    if (!Number.isInteger(n) || n < 1 || n > this.sourceCount) {
      throw new DeviceConfigError('DEVICE_INVALID_CONFIG', `PLIC source ${n} not in 1..${this.sourceCount}`);
    }
    return { set: (level: boolean) => this.setLevel(n, level) };
  }

  read(offset: number, size: AccessSize): number {
    // The spec defines 32-bit registers only; narrower accesses read as zero.
    if (size !== 4 || (offset & 3) !== 0) return 0;
    if (offset < PENDING_BASE) {
      const n = (offset - PRIORITY_BASE) >>> 2;
      return n <= this.sourceCount ? this.priority[n]! : 0;
    }
    if (offset < ENABLE_BASE) {
      const w = (offset - PENDING_BASE) >>> 2;
      return w < this.words ? this.packWord(this.pending, w) : 0;
    }
    if (offset < CONTEXT_BASE) {
      const ctx = this.contexts[Math.floor((offset - ENABLE_BASE) / ENABLE_STRIDE)];
      const w = ((offset - ENABLE_BASE) % ENABLE_STRIDE) >>> 2;
      return ctx && w < this.words ? ctx.enable[w]! : 0;
    }
    const c = Math.floor((offset - CONTEXT_BASE) / CONTEXT_STRIDE);
    const ctx = this.contexts[c];
    if (!ctx) return 0;
    const reg = (offset - CONTEXT_BASE) % CONTEXT_STRIDE;
    if (reg === 0) return ctx.threshold;
    if (reg === 4) return this.claim(c);
    return 0;
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (size !== 4 || (offset & 3) !== 0) return;
    const v = value >>> 0;
    if (offset < PENDING_BASE) {
      const n = (offset - PRIORITY_BASE) >>> 2;
      if (n >= 1 && n <= this.sourceCount) this.priority[n] = v & PRIORITY_MASK;
    } else if (offset < ENABLE_BASE) {
      return; // pending bits are read-only
    } else if (offset < CONTEXT_BASE) {
      const ctx = this.contexts[Math.floor((offset - ENABLE_BASE) / ENABLE_STRIDE)];
      const w = ((offset - ENABLE_BASE) % ENABLE_STRIDE) >>> 2;
      if (ctx && w < this.words) ctx.enable[w] = v & this.validMask(w);
    } else {
      const c = Math.floor((offset - CONTEXT_BASE) / CONTEXT_STRIDE);
      const ctx = this.contexts[c];
      if (!ctx) return;
      const reg = (offset - CONTEXT_BASE) % CONTEXT_STRIDE;
      if (reg === 0) ctx.threshold = v & PRIORITY_MASK;
      else if (reg === 4) this.complete(c, v);
    }
    this.update();
  }

  save(): PlicState {
    const sources: PlicSourceState[] = [];
    for (let n = 0; n <= this.sourceCount; n++) {
      sources.push({
        priority: this.priority[n]!, level: this.level[n] === 1,
        pending: this.pending[n] === 1, inFlight: this.inFlight[n] === 1,
      });
    }
    return {
      sourceCount: this.sourceCount,
      sources,
      contexts: this.contexts.map((c) => ({ enableWords: Array.from(c.enable), threshold: c.threshold })),
    };
  }

  restore(s: PlicState): void {
    const n = this.name;
    if (s.sourceCount !== this.sourceCount) throw new DeviceStateError(n, `source count ${s.sourceCount} != ${this.sourceCount}`);
    const sources = checkArray(n, 'sources', s.sources, this.sourceCount + 1) as PlicSourceState[];
    const contexts = checkArray(n, 'contexts', s.contexts, this.contexts.length) as PlicContextState[];
    // Validate everything before mutating so a bad snapshot leaves the device untouched.
    const src = sources.map((e, i) => ({
      priority: checkUint(n, `sources[${i}].priority`, e.priority, PRIORITY_MASK),
      level: checkBool(n, `sources[${i}].level`, e.level),
      pending: checkBool(n, `sources[${i}].pending`, e.pending),
      inFlight: checkBool(n, `sources[${i}].inFlight`, e.inFlight),
    }));
    const ctx = contexts.map((c, i) => ({
      enable: checkArray(n, `contexts[${i}].enableWords`, c.enableWords, this.words)
        .map((w, j) => checkUint(n, `contexts[${i}].enableWords[${j}]`, w, 0xffffffff)),
      threshold: checkUint(n, `contexts[${i}].threshold`, c.threshold, PRIORITY_MASK),
    }));
    src.forEach((e, i) => {
      this.priority[i] = i === 0 ? 0 : e.priority;
      this.level[i] = e.level ? 1 : 0;
      this.pending[i] = e.pending && i !== 0 ? 1 : 0;
      this.inFlight[i] = e.inFlight && i !== 0 ? 1 : 0;
    });
    ctx.forEach((c, i) => {
      const target = this.contexts[i]!;
      c.enable.forEach((w, j) => { target.enable[j] = w & this.validMask(j); });
      target.threshold = c.threshold;
    });
    this.update(true);
  }

  private setLevel(n: number, level: boolean): void {
    this.level[n] = level ? 1 : 0;
    if (!this.inFlight[n]) this.pending[n] = level ? 1 : 0;
    this.update();
  }

  /** Highest-priority pending source enabled for context c above its threshold; ties go to the
   * lowest id. 0 when none. */
  private best(c: number): number {
    const ctx = this.contexts[c]!;
    let bestId = 0;
    let bestPrio = ctx.threshold;
    for (let n = 1; n <= this.sourceCount; n++) {
      if (!this.pending[n] || this.priority[n]! <= bestPrio) continue;
      if ((ctx.enable[n >>> 5]! >>> (n & 31)) & 1) {
        bestId = n;
        bestPrio = this.priority[n]!;
      }
    }
    return bestId;
  }

  private claim(c: number): number {
    const n = this.best(c);
    if (n !== 0) {
      this.pending[n] = 0;
      this.inFlight[n] = 1;
    }
    this.update();
    return n;
  }

  private complete(c: number, n: number): void {
    // The spec says completions for sources not enabled on this target are ignored.
    if (n < 1 || n > this.sourceCount) return;
    if (!((this.contexts[c]!.enable[n >>> 5]! >>> (n & 31)) & 1)) return;
    this.inFlight[n] = 0;
    if (this.level[n]) this.pending[n] = 1;
  }

  private update(force = false): void {
    for (let c = 0; c < this.contexts.length; c++) {
      const ctx = this.contexts[c]!;
      const out = this.best(c) !== 0;
      if (force || out !== ctx.output) {
        ctx.output = out;
        ctx.sink.setExternalInterrupt(ctx.mode, out);
      }
    }
  }

  private packWord(bits: Uint8Array, w: number): number {
    let v = 0;
    for (let i = 0; i < 32; i++) {
      const n = w * 32 + i;
      if (n <= this.sourceCount && bits[n]) v |= 1 << i;
    }
    return v >>> 0;
  }

  /** Bits of enable word w that name real sources (source 0 is hardwired to zero). */
  private validMask(w: number): number {
    let m = 0;
    for (let i = 0; i < 32; i++) {
      const n = w * 32 + i;
      if (n >= 1 && n <= this.sourceCount) m |= 1 << i;
    }
    return m >>> 0;
  }
}
