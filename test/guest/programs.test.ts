// The guest programs, cross-compiled exactly as the image builder does and run under
// qemu-riscv64 (user-mode emulation), so their output contract is checked without booting.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { GUEST_CC, compileGuestProgram } from '../../src/guest/compile.js';
import { requireHostTool } from './helpers.js';

let dir = '';
const bin = (name: string): string => join(dir, name);

before(async () => {
  requireHostTool(GUEST_CC);
  requireHostTool('qemu-riscv64');
  dir = mkdtempSync(join(tmpdir(), 'ferry-programs-'));
  await compileGuestProgram('heartbeat', bin('heartbeat'));
  await compileGuestProgram('memwriter', bin('memwriter'));
});
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function runGuest(name: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('qemu-riscv64', [bin(name), ...args], { timeout: 60_000 });
  return { status: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

test('binaries are static RISC-V ELF', () => {
  const file = spawnSync('file', ['-b', bin('heartbeat')]);
  if (file.status === 0) assert.match(file.stdout.toString(), /ELF 64-bit LSB executable, UCB RISC-V.*statically linked/);
});

test('heartbeat -i 10 -n 3 prints three increasing beats', () => {
  const r = runGuest('heartbeat', ['-i', '10', '-n', '3']);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 3, r.stdout);
  const parsed = lines.map((l) => {
    const m = /^heartbeat (\d+) (\d+\.\d{6}) (\d+\.\d{6})$/.exec(l);
    assert.ok(m, `bad line: ${l}`);
    return { n: Number(m[1]), mono: Number(m[2]), real: Number(m[3]) };
  });
  assert.deepEqual(parsed.map((p) => p.n), [1, 2, 3]);
  for (let i = 1; i < 3; i++) {
    assert.ok(parsed[i]!.mono > parsed[i - 1]!.mono, 'monotonic clock increases');
    // Absolute deadlines (heartbeat.c): a late beat is followed by a shorter gap, but no beat
    // comes before its own deadline, i interval after the first.
    assert.ok(parsed[i]!.mono - parsed[0]!.mono >= 0.009 * i, 'interval respected: no beat before its deadline');
    assert.ok(parsed[i]!.real >= parsed[i - 1]!.real, 'realtime clock does not go back');
  }
  assert.ok(Math.abs(parsed[0]!.real - Date.now() / 1000) < 60, 'realtime is wall-clock time');
});

test('heartbeat rejects bad arguments', () => {
  assert.equal(runGuest('heartbeat', ['-i', '0']).status, 2);
  assert.equal(runGuest('heartbeat', ['-n', 'x']).status, 2);
});

test('memwriter --wss-mib 4 --once verifies ok', () => {
  const r = runGuest('memwriter', ['--wss-mib', '4', '--once']);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.match(lines[0]!, /^memwriter: ready pid=\d+ wss_pages=1024$/);
  assert.match(lines[1]!, /^memwriter: verify ok pages=1024 writes=1024 checksum=[0-9a-f]{16}$/);
  assert.equal(lines.length, 2);
});

test('memwriter --once is deterministic', () => {
  const a = runGuest('memwriter', ['--wss-mib', '1', '--once']).stdout.split('\n')[1];
  const b = runGuest('memwriter', ['--wss-mib', '1', '--once']).stdout.split('\n')[1];
  assert.equal(a, b);
});

test('memwriter detects a corrupted page', () => {
  const r = runGuest('memwriter', ['--wss-mib', '1', '--once', '--inject-fault']);
  assert.equal(r.status, 1);
  assert.match(r.stdout, /^memwriter: verify FAILED page=255 word=256 expected=[0-9a-f]{16} got=[0-9a-f]{16} bad_pages=1 writes=256$/m);
});

test('memwriter rate mode reports, verifies periodically and at exit', () => {
  const r = runGuest('memwriter', ['--wss-mib', '2', '--rate', '2000', '--duration', '1.2', '--report-ms', '250', '--verify-every', '0.5']);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const reports = [...r.stdout.matchAll(/^memwriter: writes=(\d+) rate=(\d+)$/gm)];
  assert.ok(reports.length >= 3, r.stdout);
  const last = reports.at(-1)!;
  assert.ok(Number(last[2]) > 1000 && Number(last[2]) < 3000, `rate near 2000: ${last[0]}`);
  const verifies = [...r.stdout.matchAll(/^memwriter: verify ok pages=512 writes=(\d+) checksum=[0-9a-f]{16}$/gm)];
  assert.ok(verifies.length >= 3, `two periodic + final verify:\n${r.stdout}`);
  const total = Number(verifies.at(-1)![1]);
  assert.ok(total > 1500 && total < 3500, `about 2400 writes in 1.2 s, got ${total}`);
  assert.doesNotMatch(r.stdout, /FAILED/);
});

test('memwriter verifies on SIGUSR1 and exits cleanly on SIGTERM', async () => {
  const child = spawn('qemu-riscv64', [bin('memwriter'), '--wss-mib', '2', '--rate', '0', '--report-ms', '0']);
  let out = '';
  child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
  const waitFor = async (re: RegExp): Promise<void> => {
    for (const deadline = Date.now() + 20_000; !re.test(out);) {
      if (Date.now() > deadline) throw new Error(`timeout waiting for ${re}; got:\n${out}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  // 'close', not 'exit': the final verify line must have been read before we look at it.
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  await waitFor(/memwriter: ready pid=\d+ wss_pages=512\n/);
  child.kill('SIGUSR1');
  await waitFor(/memwriter: verify ok pages=512 writes=\d+/);
  child.kill('SIGTERM');
  assert.equal(await exited, 0, out);
  const verifies = [...out.matchAll(/verify ok pages=512 writes=(\d+)/g)].map((m) => Number(m[1]));
  assert.equal(verifies.length, 2, out);
  assert.ok(verifies[1]! > verifies[0]!, 'it kept writing between the two verifications');
});

test('memwriter rejects unknown options', () => {
  const r = runGuest('memwriter', ['--bogus']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /usage: memwriter/);
});
