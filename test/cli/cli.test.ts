// The `ferry` command as a user runs it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const ferry = join(root, 'bin/ferry.js');

function run(args: string[], timeoutMs = 300_000) {
  const r = spawnSync(process.execPath, [ferry, ...args], { encoding: 'utf8', timeout: timeoutMs });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('ferry run --exec prints the command output and exits 0', { timeout: 400_000 }, () => {
  const r = run(['run', '--exec', 'uname -m']);
  assert.equal(r.stderr, '');
  assert.equal(r.stdout, 'riscv64\n');
  assert.equal(r.code, 0);
});

test('ferry run --exec exits with the command status', { timeout: 400_000 }, () => {
  const r = run(['run', '--memory', '128', '--exec', 'echo out; sh -c "exit 3"']);
  assert.equal(r.stdout, 'out\n');
  assert.equal(r.code, 3);
});

test('a bad flag is a usage error naming it', () => {
  const r = run(['run', '--bogus']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--bogus/);
});

test('a bad memory size is a usage error', () => {
  const r = run(['run', '--memory', '12x']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /invalid memory size '12x'/);
});

test('an unknown command is a usage error', () => {
  const r = run(['frobnicate']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unknown command 'frobnicate'/);
});
