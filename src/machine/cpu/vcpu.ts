// A hart: the WebAssembly interpreter instance plus typed access to its registers.
// Guest RAM lives in the same shared WebAssembly.Memory, so devices and the migration
// engine read it without copies.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { CpuExports, CpuHostImports, ExitReason } from './exports.js';
import { MemoryLayout } from '../memory/guest-memory.js';
import { FerryError } from '../../errors.js';
import { CSR_NUMBERS, CsrState, VcpuState } from './cpu-state.js';
import { checkArray, checkU64, checkUint } from '../state-check.js';
import { Jit, JitOptions, JitStats, jitFromEnv } from './jit/jit.js';

/** Block cache geometry of cpu.wasm (as/jit.ts, as/layout.ts), checked at instantiation:
 * the function table is created before the instance that could report it. */
const JIT_SLOT_BASE = 64;
const JIT_ENTRIES = 1 << 16;

const u64 = (v: bigint): string => BigInt.asUintN(64, v).toString();

const WASM_PAGE = 65536;
let cachedModule: WebAssembly.Module | undefined;

function cpuModule(): WebAssembly.Module {
  if (!cachedModule) {
    // dist/src/machine/cpu/vcpu.js -> <repo>/build/cpu.wasm
    const root = join(dirname(fileURLToPath(import.meta.url)), '../../../..');
    cachedModule = new WebAssembly.Module(readFileSync(join(root, 'build/cpu.wasm')));
  }
  return cachedModule;
}

export interface VcpuOptions {
  ramBytes: number;
  hartId?: number;
  /** The machine implements SBI: S-mode ecalls exit to the host. */
  sbiInMachine: boolean;
  host: CpuHostImports;
  /** Translate hot guest code to wasm (src/machine/cpu/DESIGN.md). Default: FERRY_JIT (off
   * unless it says on or gives a threshold). */
  jit?: JitOptions | false;
}

export class Vcpu {
  readonly memory: WebAssembly.Memory;
  readonly exports: CpuExports;
  readonly layout: MemoryLayout;
  private readonly x: BigUint64Array;
  private readonly f: BigUint64Array;
  private readonly jit: Jit;

  constructor(opts: VcpuOptions) {
    if (opts.ramBytes % 4096 !== 0 || opts.ramBytes <= 0) {
      throw new FerryError('BAD_RAM_SIZE', `RAM size ${opts.ramBytes} must be a positive multiple of 4 KiB`);
    }
    // Probe the layout with a throwaway instance-free read: the RAM offset is a constant
    // of the module, fixed at 16 MiB (layout.ts).
    const ramHost = 0x100_0000;
    const pages = Math.ceil((ramHost + opts.ramBytes + WASM_PAGE) / WASM_PAGE);
    if (pages > 65536) throw new FerryError('BAD_RAM_SIZE', `RAM size ${opts.ramBytes} exceeds the 4 GiB address space`);
    this.memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
    const table = new WebAssembly.Table({ initial: JIT_SLOT_BASE + JIT_ENTRIES, element: 'anyfunc' });
    let jit: Jit | undefined;
    const instance = new WebAssembly.Instance(cpuModule(), {
      env: {
        memory: this.memory,
        table,
        jitCompile: (pc: bigint, host: number, slot: number) => jit!.compile(pc, host, slot),
        hostTime: () => opts.host.hostTime(),
        mmioRead: (pa: number, size: number) => opts.host.mmioRead(pa, size),
        mmioWrite: (pa: number, size: number, value: number) => opts.host.mmioWrite(pa, size, value),
      },
    });
    this.exports = instance.exports as unknown as CpuExports;
    const e = this.exports;
    if (e.layoutRamHost() !== ramHost) throw new FerryError('CPU_LAYOUT', 'cpu.wasm RAM offset does not match the host');
    if (e.jitSlotBase() !== JIT_SLOT_BASE || e.jitEntries() !== JIT_ENTRIES) throw new FerryError('CPU_LAYOUT', 'cpu.wasm block cache does not match the host');
    this.layout = {
      ramHostOffset: ramHost,
      ramBase: e.layoutRamBase(),
      ramSize: opts.ramBytes,
      dirtyLogOffset: e.layoutDirtyLog(),
      accessLogOffset: e.layoutAccessLog(),
      absentMapOffset: e.layoutAbsentMap(),
      codeMapOffset: e.layoutCodeMap(),
    };
    this.x = new BigUint64Array(this.memory.buffer, e.layoutXRegs(), 32);
    this.f = new BigUint64Array(this.memory.buffer, e.layoutFRegs(), 32);
    e.init(BigInt(opts.ramBytes), BigInt(opts.hartId ?? 0), opts.sbiInMachine ? 1 : 0);
    const jitOpts = opts.jit === undefined ? jitFromEnv() : opts.jit || undefined;
    jit = new Jit(this.memory, table, {
      xregs: e.layoutXRegs(), cellPc: e.layoutJitCells(), cellStatus: e.layoutJitCells() + 8,
      tlbMask: e.layoutTlbMask(), tlbWrite: e.layoutTlbBytes(), memoryMaxPages: pages,
      rvcTable: e.layoutRvcTable(), cache: e.layoutJitCache(), lens: e.layoutJitLens(), codeMap: e.layoutCodeMap(),
      ramHost, slotBase: JIT_SLOT_BASE, entries: JIT_ENTRIES,
    });
    jit.bind(e);
    this.jit = jit;
    if (jitOpts) {
      jit.configure(jitOpts);
      e.jitSetThreshold(jitOpts.threshold);
    }
  }

  /** Compiles the blocks waiting for their batch now, on this thread (tests that never yield). */
  jitCompilePending(): void { this.jit.flush(); }
  /** Resolves once the blocks waiting for their batch are compiled in the background and
   * installed. */
  jitSettle(): Promise<void> { return this.jit.settle(); }

  /** Whether a batch is compiling in the background (it lands when the event loop turns). */
  get jitCompiling(): boolean { return this.jit.compiling; }
  /** Whether guest code is translated, and how much has been. */
  get jitEnabled(): boolean { return this.exports.jitThreshold() !== 0; }
  jitStats(): JitStats & { instructions: bigint } {
    return { ...this.jit.stats(), instructions: BigInt.asUintN(64, this.exports.jitGetRetired()) };
  }

  run(budget: number): ExitReason {
    const r = this.exports.run(budget) as ExitReason;
    // Blocks that turned hot are compiled together, between slices.
    this.jit.idle();
    return r;
  }

  getX(i: number): bigint { return this.x[i]!; }
  setX(i: number, v: bigint): void { if (i !== 0) this.x[i] = BigInt.asUintN(64, v); }
  getF(i: number): bigint { return this.f[i]!; }
  setF(i: number, v: bigint): void { this.f[i] = BigInt.asUintN(64, v); }
  get pc(): bigint { return BigInt.asUintN(64, this.exports.getPc()); }
  set pc(v: bigint) { this.exports.setPc(BigInt.asUintN(64, v)); }
  get priv(): number { return this.exports.getPriv(); }
  get instret(): bigint { return BigInt.asUintN(64, this.exports.getInstret()); }

  save(): VcpuState {
    const e = this.exports;
    const csr = {} as Record<keyof CsrState, string>;
    for (const [name, num] of Object.entries(CSR_NUMBERS) as [keyof CsrState, number][]) csr[name] = u64(e.getCsr(num));
    return {
      pc: u64(e.getPc()),
      priv: e.getPriv(),
      x: Array.from(this.x, (v) => v.toString()),
      f: Array.from(this.f, (v) => v.toString()),
      csr,
      mipSoftware: u64(e.getMipSw()),
      mipLines: u64(e.getMipHw()),
      mtimecmp: u64(e.getMtimecmp()),
      sbiTimecmp: u64(e.getSbiTimecmp()),
      reservation: u64(e.getReservation()),
    };
  }

  /** Restores a saved hart. The whole state is validated before anything changes. */
  restore(s: VcpuState): void {
    const { priv, x, f, csrs, pc, mipSw, mipHw, mtimecmp, sbiTimecmp, reservation } = parseVcpuState(s);
    const e = this.exports;
    for (const [num, v] of csrs) e.setCsr(num, v);
    x.forEach((v, i) => { this.x[i] = v; });
    f.forEach((v, i) => { this.f[i] = v; });
    e.setMipSw(mipSw);
    e.setMipHw(mipHw);
    e.setMtimecmp(mtimecmp);
    e.setSbiTimecmp(sbiTimecmp);
    e.setReservation(reservation);
    e.setPriv(priv);
    e.setPc(pc);
    e.tlbFlush();
    // Translations are never state: whatever ran before this restore is forgotten.
    e.jitDropCache();
    this.jit.reset();
  }
}

/** A saved hart's values, checked: what restore() writes. Also Machine.checkState's trial of a
 * CPU section, which needs no hart (the hart's setters take any value). */
export function parseVcpuState(s: VcpuState) {
  const who = 'cpu';
  const priv = checkUint(who, 'priv', s.priv, 3);
  if (priv === 2) throw new FerryError('DEVICE_STATE_INVALID', 'cpu: field priv must be 0, 1 or 3');
  const x = checkArray(who, 'x', s.x, 32).map((v, i) => checkU64(who, `x[${i}]`, v));
  const f = checkArray(who, 'f', s.f, 32).map((v, i) => checkU64(who, `f[${i}]`, v));
  if (typeof s.csr !== 'object' || s.csr === null) throw new FerryError('DEVICE_STATE_INVALID', 'cpu: field csr must be an object');
  const csrs = (Object.keys(CSR_NUMBERS) as (keyof CsrState)[]).map((name) => [CSR_NUMBERS[name], checkU64(who, `csr.${name}`, s.csr[name])] as const);
  return {
    priv, x, f, csrs,
    pc: checkU64(who, 'pc', s.pc),
    mipSw: checkU64(who, 'mipSoftware', s.mipSoftware),
    mipHw: checkU64(who, 'mipLines', s.mipLines),
    mtimecmp: checkU64(who, 'mtimecmp', s.mtimecmp),
    sbiTimecmp: checkU64(who, 'sbiTimecmp', s.sbiTimecmp),
    reservation: checkU64(who, 'reservation', s.reservation),
  } as const;
}
