// The translator's host side: the interpreter calls compile() when a block start turns hot;
// it decodes the block from guest RAM, emits a module, instantiates it over the same shared
// memory and puts its function into the function table at the block cache entry's slot.
// Nothing here is machine state: a restored or migrated machine starts with an empty cache.

import { FerryError } from '../../../errors.js';
import { decodeBlock, endsBlock, Insn, MAX_BLOCK } from './decode.js';
import { batchModule, ChainTarget, translateBlock, TranslatorLayout } from './translate.js';

/** How the JIT runs, per machine. */
export interface JitOptions {
  /** Executions of a block start before it is translated (1 = at once). */
  readonly threshold: number;
  /** How long a hot block may wait to be compiled with others, in milliseconds (default 20).
   * 0 compiles each block synchronously as it turns hot, before it runs again (tests that
   * never yield to the event loop); otherwise batches compile in V8's background threads
   * and land between slices, while the interpreter runs the blocks they hold. */
  readonly batchWaitMs?: number;
}

export const DEFAULT_JIT_THRESHOLD = 1024;

/** The FERRY_JIT environment variable: "on" = on at the default threshold, unset, "0" or
 * "off" = interpret only, a positive integer = on at that threshold. Off by default: under the
 * demo's network load translated code ran the guest slower than the interpreter (cpu/DESIGN.md). */
export function jitFromEnv(env: NodeJS.ProcessEnv = process.env): JitOptions | undefined {
  const v = env.FERRY_JIT;
  if (v === 'on') return { threshold: DEFAULT_JIT_THRESHOLD };
  if (v === undefined || v === '' || v === '0' || v === 'off') return undefined;
  const n = Number(v);
  if (Number.isInteger(n) && n >= 1) return { threshold: n };
  throw new FerryError('BAD_FERRY_JIT', `FERRY_JIT must be on, off, 0 or a positive threshold, not ${JSON.stringify(v)}`);
}

/** What the interpreter exports for translated code to call. */
export interface JitHelpers {
  jitLoad(va: bigint, pc: bigint, size: number): bigint;
  jitStore(va: bigint, value: bigint, pc: bigint, size: number): void;
  jitMulh(a: bigint, b: bigint): bigint;
  jitMulhsu(a: bigint, b: bigint): bigint;
  jitMulhu(a: bigint, b: bigint): bigint;
}

export interface JitStats {
  /** Blocks translated (each once; a block reinstalled from the host's cache is not). */
  readonly blocks: number;
  /** Blocks put back into the block cache from compiled code kept here. */
  readonly reused: number;
  /** Modules instantiated (a batch of blocks each). */
  readonly modules: number;
  /** Wall time the vCPU's thread spent decoding, emitting, compiling (synchronous batches
   * only) and instantiating, in milliseconds. */
  readonly compileMs: number;
  /** Wall time from handing batches to V8's background compiler until they were installed,
   * summed, in milliseconds: how long hot blocks stayed interpreted meanwhile, not CPU time. */
  readonly backgroundMs: number;
}

/** Where the interpreter keeps what compile() must read or fill in (as/layout.ts). */
export interface JitLayout extends TranslatorLayout {
  readonly rvcTable: number;
  readonly cache: number;
  readonly lens: number;
  readonly codeMap: number;
  readonly ramHost: number;
  readonly slotBase: number;
  readonly entries: number;
}

/** compile()'s answer for a block left pending until the batch is compiled. */
const PENDING = 1 << 30;
/** Blocks per module: the per-module cost of V8 (hundreds of microseconds) dwarfs a block's,
 * and a bounded module bounds the background compile work that lands at once. */
const BATCH = 128;
/** How long a hot block waits for its batch, in milliseconds (checked when another block
 * turns hot, and between slices). */
const BATCH_WAIT_MS = 20;
/** Blocks queued after a hot one that ran into the length limit (straight-line code). */
const SUCCESSORS = 16;
/** Compiled blocks kept for reinstalling; past this the host cache starts over. */
const KEEP = 1 << 18;

interface Pending {
  readonly slot: number;
  readonly pc: bigint;
  readonly host: number;
  readonly gen: number;
  readonly r: number;
  readonly block: Insn[];
}
interface Compiled {
  readonly pc: bigint;
  readonly gen: number;
  readonly r: number;
  readonly fn: () => number;
}

export class Jit {
  private readonly view: DataView;
  private readonly rvc: Uint32Array;
  private readonly entryPc: BigUint64Array;
  private readonly entryWords: Uint32Array;
  private readonly lens: Int32Array;
  private readonly codeMap: Uint32Array;
  private imports: WebAssembly.Imports | undefined;
  private pending: Pending[] = [];
  private oldest = 0;
  private readonly kept = new Map<number, Compiled>();
  private blocks = 0;
  private reused = 0;
  private modules = 0;
  private compileMs = 0;
  private backgroundMs = 0;
  private batchWaitMs = BATCH_WAIT_MS;
  /** The batch V8 compiles in the background; one at a time, so what competes with the guest
   * and the host's other threads for cores is one module's work. */
  private inFlight: Promise<void> | undefined;
  /** Bumped by reset(): a batch compiled for a forgotten cache is dropped when it lands. */
  private epoch = 0;
  /** A background batch that did not compile: raised on the vCPU's thread at the next call. */
  private failure: FerryError | undefined;

  constructor(memory: WebAssembly.Memory, readonly table: WebAssembly.Table, private readonly layout: JitLayout) {
    const buf = memory.buffer;
    this.view = new DataView(buf);
    this.rvc = new Uint32Array(buf, layout.rvcTable, 0x10000);
    this.entryPc = new BigUint64Array(buf, layout.cache, layout.entries * 2);
    this.entryWords = new Uint32Array(buf, layout.cache, layout.entries * 4);
    this.lens = new Int32Array(buf, layout.lens, layout.entries);
    this.codeMap = new Uint32Array(buf, 0, buf.byteLength >>> 2);
    this.imports = { env: { memory } };
  }

  configure(opts: JitOptions): void { this.batchWaitMs = opts.batchWaitMs ?? BATCH_WAIT_MS; }

  /** The interpreter's helpers, once its instance exists (it imports compile() itself). */
  bind(h: JitHelpers): void {
    this.imports = {
      ...this.imports,
      j: { load: h.jitLoad, store: h.jitStore, mulh: h.jitMulh, mulhsu: h.jitMulhsu, mulhu: h.jitMulhu },
    };
  }

  private generation(host: number): number {
    return this.codeMap[(this.layout.codeMap >>> 2) + 2 * ((host - this.layout.ramHost) >>> 12)]!;
  }

  /**
   * The block at `pc` (first byte at `host`) for table slot `slot`. Returns the most
   * instructions it counts | its length in bytes << 8, with PENDING when it is queued for a
   * later batch (the interpreter runs it meanwhile), or 0 if its first instruction is not one
   * the JIT takes.
   */
  compile(pc: bigint, host: number, slot: number): number {
    this.raiseFailure();
    const t0 = performance.now();
    const at = BigInt.asUintN(64, pc);
    const gen = this.generation(host);
    const k = this.kept.get(host);
    if (k && k.pc === at && k.gen === gen) {
      this.table.set(slot, k.fn);
      this.reused++;
      this.compileMs += performance.now() - t0;
      return k.r;
    }
    const block = decodeBlock(this.view, this.rvc, at, host);
    if (block.length === 0) return 0;
    const r = extent(block, at);
    if (this.pending.length === 0) this.oldest = t0;
    this.queueSuccessors(at, host, gen, block);
    this.pending.push({ slot, pc: at, host, gen, r, block });
    this.blocks++;
    this.compileMs += performance.now() - t0;
    if (this.batchWaitMs === 0) {
      // Synchronous mode: this block included, whose cache entry the interpreter fills in on
      // return.
      this.flush(slot);
      return r;
    }
    this.startBatch(t0);
    return r | PENDING;
  }

  /**
   * Straight-line code after a block that stopped at the length limit runs as often as the
   * block does, but the interpreter marks block starts only at jumps and branches, so each
   * 64-instruction piece of a long function would count to the threshold on its own, one after
   * the other. They are queued with the block instead: their cache entries written as waiting
   * and their lines masked now, read from the same page (the next page's host address is the
   * fetch TLB's to give) in the same generation. An entry holding other translated code stays.
   */
  private queueSuccessors(pc: bigint, host: number, gen: number, block: Insn[]): void {
    const lay = this.layout;
    let b = block, at = pc, h = host;
    for (let n = 0; n < SUCCESSORS && b.length === MAX_BLOCK && !endsBlock(b[b.length - 1]!.insn); n++) {
      const len = extent(b, at) >>> 8;
      at = BigInt.asUintN(64, at + BigInt(len));
      h += len;
      if ((at & 0xfffn) === 0n) return;
      b = decodeBlock(this.view, this.rvc, at, h);
      if (b.length === 0) return;
      const e = Number(((at >> 1n) ^ (at >> 17n)) & BigInt(lay.entries - 1));
      const here = this.entryPc[2 * e] === at && this.entryWords[4 * e + 2] === h && this.entryWords[4 * e + 3] === gen;
      if (here && this.lens[e]! >= 0) continue;
      if (!here && this.lens[e]! > 0) return;
      const r = extent(b, at);
      this.entryPc[2 * e] = at;
      this.entryWords[4 * e + 2] = h;
      this.entryWords[4 * e + 3] = gen;
      const off = h & 0xfff, first = off >>> 7, last = (off + (r >>> 8) - 1) >>> 7;
      const m = (lay.codeMap >>> 2) + 2 * ((h - lay.ramHost) >>> 12) + 1;
      this.codeMap[m] = (this.codeMap[m]! | ((((2 << last) - 1) >>> first) << first)) >>> 0;
      const k = this.kept.get(h);
      if (k && k.pc === at && k.gen === gen) {
        this.table.set(lay.slotBase + e, k.fn);
        this.lens[e] = r & 0xff;
        this.reused++;
        continue;
      }
      this.lens[e] = 0;
      this.pending.push({ slot: lay.slotBase + e, pc: at, host: h, gen, r, block: b });
      this.blocks++;
    }
  }

  /** Between slices: hands the pending blocks to the background compiler once they have
   * waited long enough to batch. */
  idle(): void {
    this.raiseFailure();
    if (this.pending.length > 0) this.startBatch(performance.now());
  }

  /** Resolves once every block pending now has been compiled and installed (or dropped). */
  async settle(): Promise<void> {
    for (;;) {
      if (this.inFlight) await this.inFlight;
      else if (this.pending.length > 0) this.startBatch(Infinity);
      else break;
    }
    this.raiseFailure();
  }

  /** Compiles the pending blocks now, on this thread, as one module. */
  flush(current = -1): void {
    if (this.pending.length === 0) return;
    const t0 = performance.now();
    const batch = this.pending;
    this.pending = [];
    const bytes = this.emit(batch);
    let exports: WebAssembly.Exports;
    try {
      exports = new WebAssembly.Instance(new WebAssembly.Module(bytes), this.imports!).exports;
    } catch (e) {
      throw compileError(batch, e);
    }
    this.install(batch, exports, current);
    this.compileMs += performance.now() - t0;
  }

  private startBatch(now: number): void {
    if (this.inFlight || (this.pending.length < BATCH && now - this.oldest < this.batchWaitMs)) return;
    const t0 = performance.now();
    const batch = this.pending.splice(0, BATCH);
    if (this.pending.length > 0) this.oldest = t0;
    const bytes = this.emit(batch);
    this.compileMs += performance.now() - t0;
    const epoch = this.epoch;
    this.inFlight = WebAssembly.compile(bytes).then((module) => {
      this.inFlight = undefined;
      if (epoch !== this.epoch) return;
      const t1 = performance.now();
      let exports: WebAssembly.Exports;
      try {
        exports = new WebAssembly.Instance(module, this.imports!).exports;
      } catch (e) {
        this.failure = compileError(batch, e);
        return;
      }
      this.install(batch, exports, -1);
      const t2 = performance.now();
      this.compileMs += t2 - t1;
      this.backgroundMs += t2 - t0;
      // What queued up meanwhile goes next, if it has waited long enough.
      if (this.pending.length > 0) this.startBatch(t2);
    }, (e: unknown) => {
      this.inFlight = undefined;
      if (epoch === this.epoch) this.failure = compileError(batch, e);
    });
  }

  get compiling(): boolean { return this.inFlight !== undefined; }

  private raiseFailure(): void {
    const f = this.failure;
    if (f) { this.failure = undefined; throw f; }
  }

  private emit(batch: Pending[]): Uint8Array<ArrayBuffer> {
    // Blocks of one page and one code generation continue into each other directly.
    const byPc = new Map<bigint, ChainTarget & { host: number; gen: number }>();
    batch.forEach((p, index) => byPc.set(p.pc, { index, len: p.r & 0xff, host: p.host, gen: p.gen }));
    const bodies = batch.map((p) => translateBlock(p.block, this.layout, (target) => {
      const t = byPc.get(target);
      const samePage = (target >> 12n) === (p.pc >> 12n) && t !== undefined && t.host === p.host + Number(target - p.pc);
      return samePage && t.gen === p.gen ? t : undefined;
    }));
    return batchModule(bodies, this.layout);
  }

  /** Installs each block whose cache entry still waits for it, from code of the same
   * generation: a page written since the block was read has retired it, and the entry may
   * hold another block by now. */
  private install(batch: Pending[], exports: WebAssembly.Exports, current: number): void {
    this.modules++;
    if (this.kept.size + batch.length > KEEP) this.kept.clear();
    batch.forEach((p, i) => {
      const fn = exports[String(i)] as () => number;
      this.kept.set(p.host, { pc: p.pc, gen: p.gen, r: p.r, fn });
      // The block being asked for (pushed last) has no cache entry yet: the interpreter writes
      // it on return.
      if (p.slot === current && i === batch.length - 1) { this.table.set(p.slot, fn); return; }
      const e = p.slot - this.layout.slotBase;
      const waiting = this.entryPc[2 * e] === p.pc && this.entryWords[4 * e + 2] === p.host
        && this.entryWords[4 * e + 3] === p.gen && this.lens[e] === 0 && this.generation(p.host) === p.gen;
      if (!waiting) return;
      this.table.set(p.slot, fn);
      this.lens[e] = p.r & 0xff;
    });
  }

  /** Forgets every compiled block (a restored hart's memory is another machine's). */
  reset(): void {
    this.pending = [];
    this.kept.clear();
    this.epoch++;
  }

  stats(): JitStats {
    return { blocks: this.blocks, reused: this.reused, modules: this.modules, compileMs: this.compileMs, backgroundMs: this.backgroundMs };
  }
}

/** A block's most instructions | its length in bytes << 8. */
function extent(block: Insn[], pc: bigint): number {
  const last = block[block.length - 1]!;
  return block.length | (Number(last.pc - pc + BigInt(last.len)) << 8);
}

function compileError(batch: Pending[], cause: unknown): FerryError {
  return new FerryError('JIT_COMPILE', `a batch of ${batch.length} translated blocks did not compile (from pc 0x${batch[0]!.pc.toString(16)})`, { cause });
}
