// Builds bare-metal RISC-V programs (M-mode at 0x80000000, the virt board's devices) with the
// Debian cross compiler. Used by benchmarks and tests; cached by source content.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { FerryError } from '../../errors.js';
import { repoRoot } from '../paths.js';

export const BARE_CFLAGS = [
  '-march=rv64gc', '-mabi=lp64d', '-mcmodel=medany', '-O2', '-nostdlib', '-nostartfiles', '-ffreestanding',
  '-fno-pie', '-no-pie', '-Wl,--build-id=none', '-Wl,--no-warn-rwx-segments',
];

/** Compiles `sources` (paths) into one ELF; returns its path. Rebuilt only when a source, one of
 * the extra `dependencies` (headers) or a flag changes. */
export function buildBareProgram(name: string, sources: readonly string[], extraFlags: readonly string[] = [],
  dependencies: readonly string[] = []): string {
  const hash = createHash('sha256');
  for (const s of [...sources, ...dependencies]) hash.update(s).update(readFileSync(s));
  hash.update(JSON.stringify([BARE_CFLAGS, extraFlags]));
  hash.update(readFileSync(join(repoRoot(), 'src', 'guest', 'bare', 'link.ld')));
  const dir = join(repoRoot(), 'build', 'bare');
  const out = join(dir, `${name}-${hash.digest('hex').slice(0, 12)}.elf`);
  if (existsSync(out)) return out;
  mkdirSync(dir, { recursive: true });
  try {
    const script = join(repoRoot(), 'src', 'guest', 'bare', 'link.ld');
    // Build to a private name, then rename: concurrent test processes may build the same program.
    const tmp = `${out}.tmp-${process.pid}`;
    execFileSync('riscv64-linux-gnu-gcc', [...BARE_CFLAGS, '-T', script, ...extraFlags, ...sources, '-o', tmp], { stdio: ['ignore', 'ignore', 'pipe'] });
    renameSync(tmp, out);
  } catch (err) {
    const e = err as { code?: string; stderr?: Buffer };
    if (e.code === 'ENOENT') throw new FerryError('TOOL_MISSING', 'riscv64-linux-gnu-gcc not found: run scripts/install-deps.sh');
    throw new FerryError('BARE_BUILD_FAILED', `building ${name} failed:\n${e.stderr?.toString() ?? String(err)}`);
  }
  return out;
}
