// Decompiles a DTB with the system's dtc, so FDT tests check against an independent parser.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const DTC_MISSING =
  'dtc not found: the FDT tests need the Debian package device-tree-compiler (apt-get install device-tree-compiler)';

export function dtcAvailable(): boolean {
  const r = spawnSync('dtc', ['--version'], { encoding: 'utf8' });
  return r.status === 0;
}

export function decompile(dtb: Uint8Array): { dts: string; warnings: string } {
  if (!dtcAvailable()) throw new Error(DTC_MISSING);
  const r = spawnSync('dtc', ['-I', 'dtb', '-O', 'dts', '-'], { input: dtb, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`dtc rejected the blob (status ${r.status}): ${r.stderr}`);
  return { dts: r.stdout, warnings: r.stderr };
}

/** Regex source for a string-list property value as dtc prints it: dtc 1.6 writes
 * "a\0b", dtc 1.7 writes "a", "b". */
export function strList(...values: string[]): string {
  const esc = values.map((v) => v.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&'));
  return `(?:"${esc.join('\\\\0')}"|"${esc.join('", "')}")`;
}

/** A typed property read through fdtget (same package as dtc), for values dtc's type
 * guessing would print as strings. */
export function fdtget(dtb: Uint8Array, node: string, prop: string, type: 'u' | 'x' | 's'): string {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-fdt-'));
  try {
    const file = join(dir, 't.dtb');
    writeFileSync(file, dtb);
    const r = spawnSync('fdtget', ['-t', type, file, node, prop], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`fdtget ${node} ${prop} failed: ${r.stderr}`);
    return r.stdout.trim();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
