// Shared helpers for the guest image tests. Missing host tools fail the test with a message
// naming the fix instead of skipping: a skipped test would hide a broken setup.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function requireHostTool(tool: string): void {
  const r = spawnSync('sh', ['-c', 'command -v "$1"', 'sh', tool]);
  assert.equal(r.status, 0, `host tool "${tool}" is missing; run scripts/install-deps.sh as root`);
}

export function withTempDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-guest-test-'));
  let async = false;
  try {
    const out = fn(dir);
    if (out instanceof Promise) {
      async = true;
      return out.finally(() => rmSync(dir, { recursive: true, force: true })) as T;
    }
    return out;
  } finally {
    if (!async) rmSync(dir, { recursive: true, force: true });
  }
}
