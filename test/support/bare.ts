// Builds and runs the bare-metal test programs in test/guest-bare: on ferry's Machine in
// bare mode and, for differential tests, on qemu-system-riscv64 -M virt -bios none.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Machine, type MachineExit, type MachineOptions } from '../../src/machine/boot/machine.js';
import { ExitReason } from '../../src/machine/cpu/exports.js';
import { buildBareProgram } from '../../src/guest/bare/build.js';
import { DEFAULT_JIT_THRESHOLD, type JitOptions } from '../../src/machine/cpu/jit/jit.js';

/** The ways the hart can run: every ISA test runs under each (the JIT's differential runs). */
export const CPU_MODES: ReadonlyArray<{ readonly name: string; readonly jit: JitOptions | false }> = [
  { name: 'interpreter', jit: false },
  { name: 'jit', jit: { threshold: DEFAULT_JIT_THRESHOLD } },
  { name: 'jit threshold 1', jit: { threshold: 1, batchWaitMs: 0 } },
];

/** <repo>: this file is compiled to <repo>/dist/test/support/bare.js. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const bareDir = join(repoRoot, 'test/guest-bare');
const QEMU = 'qemu-system-riscv64';

function requireTool(cmd: string, hint: string): void {
  const r = spawnSync(cmd, ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(`${cmd} is required for the bare-metal tests but was not found (${hint})`);
  }
}

/** Compiles crt.S + bare.c + `sources` (paths relative to test/guest-bare, or absolute) with
 * the project's bare-metal toolchain settings; returns the ELF's path (cached by content). */
export function buildBare(sources: string[], name: string): string {
  const all = ['crt.S', 'bare.c', ...sources].map((s) => resolve(bareDir, s));
  return buildBareProgram(name, all, ['-Wall', '-I', bareDir], [join(bareDir, 'bare.h')]);
}

export interface FerryRun {
  output: string;
  exit: MachineExit;
  machine: Machine;
}

export interface FerryRunOptions {
  ramBytes?: number;
  /** Wall-clock limit; the machine is stopped after it. */
  timeoutMs?: number;
  /** Translate hot code (default: FERRY_JIT). */
  jit?: JitOptions | false;
}

/** Runs a bare-metal ELF on ferry until it powers off, fails or times out. */
export async function runOnFerry(elfPath: string, opts: FerryRunOptions = {}): Promise<FerryRun> {
  const elf = new Uint8Array(readFileSync(elfPath));
  const chunks: Uint8Array[] = [];
  const machine = new Machine({
    ramBytes: opts.ramBytes ?? 64 << 20,
    console: { write: (b: Uint8Array) => { chunks.push(b.slice()); }, onInput() {} },
    boot: { kind: 'bare', elf },
    ...(opts.jit !== undefined ? { jit: opts.jit } : {}),
  });
  const timer = setTimeout(() => machine.stop(), opts.timeoutMs ?? 20_000);
  try {
    const exit = await machine.run();
    return { output: Buffer.concat(chunks).toString('latin1'), exit, machine };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs a bare-metal ELF on QEMU's virt board (no firmware) and returns its console output. */
export function runOnQemu(elfPath: string, timeoutSec = 20): string {
  requireTool(QEMU, 'install qemu-system-misc');
  const r = spawnSync('timeout', [String(timeoutSec), QEMU, '-M', 'virt', '-bios', 'none', '-nographic',
    '-monitor', 'none', '-serial', 'stdio', '-kernel', elfPath], { encoding: 'latin1', maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  if (r.status === 124) throw new Error(`QEMU timed out after ${timeoutSec}s running ${elfPath}; output:\n${r.stdout}`);
  return r.stdout;
}

/** A bare-mode Machine running `elf`, its console output collected into `out`. */
export function bareMachine(elf: Uint8Array, out: Uint8Array[], extra: Partial<MachineOptions> = {}): Machine {
  return new Machine({
    ramBytes: 64 << 20, console: { write: (b) => { out.push(b.slice()); }, onInput() {} },
    boot: { kind: 'bare', elf }, ...extra,
  });
}

/** Runs a bare-metal program in slices until it powers off (or fails). */
export function runToEnd(m: Machine): void {
  for (let i = 0; i < 10_000; i++) {
    const r = m.vcpu.run(100_000);
    if (r === ExitReason.Request || r === ExitReason.Fatal) return;
  }
  throw new Error('program did not finish');
}
