// Builds and runs the bare-metal test programs in test/guest-bare: on ferry's Machine in
// bare mode and, for differential tests, on qemu-system-riscv64 -M virt -bios none.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Machine, type MachineExit } from '../../src/machine/boot/machine.js';

/** <repo>: this file is compiled to <repo>/dist/test/support/bare.js. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const bareDir = join(repoRoot, 'test/guest-bare');
const GCC = 'riscv64-linux-gnu-gcc';
const QEMU = 'qemu-system-riscv64';
const CFLAGS = ['-march=rv64gc', '-mabi=lp64d', '-mcmodel=medany', '-O2', '-nostdlib', '-nostartfiles',
  '-ffreestanding', '-fno-pie', '-no-pie', '-Wall', '-Wl,--build-id=none', '-Wl,--no-warn-rwx-segments'];

function requireTool(cmd: string, hint: string): void {
  const r = spawnSync(cmd, ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(`${cmd} is required for the bare-metal tests but was not found (${hint})`);
  }
}

/**
 * Compiles crt.S + bare.c + `sources` (paths relative to test/guest-bare, or absolute) into
 * build/test-bare/<name>.elf, rebuilding only when a source, header or flag changed.
 * Returns the ELF's path.
 */
export function buildBare(sources: string[], name: string): string {
  const all = ['crt.S', 'bare.c', ...sources].map((s) => resolve(bareDir, s));
  const inputs = [...all, join(bareDir, 'bare.h'), join(bareDir, 'link.ld')];
  const hash = createHash('sha256');
  hash.update(CFLAGS.join(' '));
  for (const f of inputs) hash.update(f).update(readFileSync(f));
  const digest = hash.digest('hex');
  const outDir = join(repoRoot, 'build/test-bare');
  const elf = join(outDir, `${name}.elf`);
  const stamp = join(outDir, `${name}.sha256`);
  if (existsSync(elf) && existsSync(stamp) && readFileSync(stamp, 'utf8') === digest) return elf;
  requireTool(GCC, 'install gcc-riscv64-linux-gnu');
  mkdirSync(outDir, { recursive: true });
  const tmp = `${elf}.tmp-${process.pid}`;
  const r = spawnSync(GCC, [...CFLAGS, '-I', bareDir, '-T', join(bareDir, 'link.ld'), ...all, '-o', tmp],
    { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`building ${name} failed:\n${r.stderr}${r.stdout}`);
  renameSync(tmp, elf);
  writeFileSync(stamp, digest);
  return elf;
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
}

/** Runs a bare-metal ELF on ferry until it powers off, fails or times out. */
export async function runOnFerry(elfPath: string, opts: FerryRunOptions = {}): Promise<FerryRun> {
  const elf = new Uint8Array(readFileSync(elfPath));
  const chunks: Uint8Array[] = [];
  const machine = new Machine({
    ramBytes: opts.ramBytes ?? 64 << 20,
    console: { write: (b: Uint8Array) => { chunks.push(b.slice()); }, onInput() {} },
    boot: { kind: 'bare', elf },
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
