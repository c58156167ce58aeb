// Compiles the AssemblyScript interpreter core to build/cpu.wasm.
// Rebuilds only when a source is newer than the output, so `npm test` stays fast.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, statSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const srcDir = join(root, 'src/machine/cpu/as');
const out = join(root, 'build/cpu.wasm');
const newest = Math.max(...readdirSync(srcDir).map((f) => statSync(join(srcDir, f)).mtimeMs), statSync(fileURLToPath(import.meta.url)).mtimeMs);
if (existsSync(out) && statSync(out).mtimeMs >= newest && !process.argv.includes('--force')) process.exit(0);
mkdirSync(join(root, 'build'), { recursive: true });
const asc = join(root, 'node_modules/.bin/asc');
execFileSync(asc, [
  join(srcDir, 'index.ts'),
  '--outFile', out,
  '--textFile', join(root, 'build/cpu.wat'),
  '-O3', '--noAssert',
  '--runtime', 'stub',
  '--importMemory', '--sharedMemory', '--initialMemory', '512', '--maximumMemory', '65536',
  '--enable', 'threads',
  '--memoryBase', '65536',
  // Translated blocks live in the function table, which the host creates and fills.
  '--importTable',
  '--use', 'abort=src/machine/cpu/as/index/abortHandler',
], { stdio: 'inherit', cwd: root });
