// Builds the FPU on its own (through test/machine/fpu-entry.ts) and wraps it for tests.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root: this file runs from dist/test/machine/. */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

interface FpuExports {
  fpExecute(insn: number): number;
  setFflags(v: number): void;
  setFrm(v: number): void;
  getFflags(): number;
  getFrm(): number;
  xregsBase(): number;
  fregsBase(): number;
}

export const NV = 16;
export const DZ = 8;
export const OF = 4;
export const UF = 2;
export const NX = 1;

export const RNE = 0;
export const RTZ = 1;
export const RDN = 2;
export const RUP = 3;
export const RMM = 4;
export const DYN = 7;

export const FMT_S = 0;
export const FMT_D = 1;

export class Fpu {
  private readonly view: DataView;
  private readonly xBase: number;
  private readonly fBase: number;

  constructor(private readonly ex: FpuExports, memory: WebAssembly.Memory) {
    this.view = new DataView(memory.buffer);
    this.xBase = ex.xregsBase();
    this.fBase = ex.fregsBase();
  }

  getF(r: number): bigint {
    return this.view.getBigUint64(this.fBase + r * 8, true);
  }
  setF(r: number, v: bigint): void {
    this.view.setBigUint64(this.fBase + r * 8, BigInt.asUintN(64, v), true);
  }
  getX(r: number): bigint {
    return this.view.getBigUint64(this.xBase + r * 8, true);
  }
  setX(r: number, v: bigint): void {
    this.view.setBigUint64(this.xBase + r * 8, BigInt.asUintN(64, v), true);
  }
  get fflags(): number {
    return this.ex.getFflags();
  }
  set fflags(v: number) {
    this.ex.setFflags(v);
  }
  get frm(): number {
    return this.ex.getFrm();
  }
  set frm(v: number) {
    this.ex.setFrm(v);
  }
  exec(insn: number): boolean {
    return this.ex.fpExecute(insn >>> 0) !== 0;
  }
}

/** Compiles the FPU into a temporary directory and instantiates it. */
export async function buildFpu(): Promise<Fpu> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-fpu-'));
  try {
    const out = join(dir, 'fpu.wasm');
    execFileSync(join(repoRoot, 'node_modules', '.bin', 'asc'), [
      join(repoRoot, 'test', 'machine', 'fpu-entry.ts'),
      '--outFile', out,
      '-O3', '--runtime', 'stub',
      '--importMemory', '--sharedMemory', '--initialMemory', '512', '--maximumMemory', '65536',
      '--enable', 'threads', '--memoryBase', '65536',
    ], { cwd: repoRoot, stdio: ['ignore', 'inherit', 'inherit'] });
    const memory = new WebAssembly.Memory({ initial: 512, maximum: 65536, shared: true });
    const abort = (): never => {
      throw new Error('AssemblyScript abort in FPU');
    };
    const { instance } = await WebAssembly.instantiate(readFileSync(out), { env: { memory, abort } });
    return new Fpu(instance.exports as unknown as FpuExports, memory);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** OP-FP encoding (opcode 0x53). funct5 selects the operation, fmt the precision. */
export function opFp(funct5: number, fmt: number, rm: number, rd: number, rs1: number, rs2: number): number {
  return ((funct5 << 27) | (fmt << 25) | (rs2 << 20) | (rs1 << 15) | (rm << 12) | (rd << 7) | 0x53) >>> 0;
}

/** R4 encoding of the fused multiply-adds (opcode 0x43/0x47/0x4b/0x4f). */
export function r4(opcode: number, fmt: number, rm: number, rd: number, rs1: number, rs2: number, rs3: number): number {
  return ((rs3 << 27) | (fmt << 25) | (rs2 << 20) | (rs1 << 15) | (rm << 12) | (rd << 7) | opcode) >>> 0;
}

export const BOX = 0xffffffff00000000n;
