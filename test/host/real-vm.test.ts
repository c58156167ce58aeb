// One real boot behind ferryd: the daemon with the real VM factory (a worker running the
// Debian guest), driven by the CLI. Costs one boot (~10 s).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { Daemon } from '../../src/host/daemon.js';
import { realVmFactory } from '../../src/host/factory.js';
import { ensureGuestImage } from '../../src/guest/image.js';
import { FerryClient } from '../../src/host/client.js';
import { GUEST_PROMPT, GUEST_READY } from '../../src/machine/console/shell.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const ferry = join(root, 'bin/ferry.js');

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [ferry, ...args], { timeout: 600_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

test('ferryd boots a real VM; vm show reports it running; vm stop stops it', { timeout: 900_000 }, async () => {
  await ensureGuestImage({ log: () => undefined });
  const dir = mkdtempSync(join(tmpdir(), 'ferryd-real-'));
  const threadsBefore = readdirSync('/proc/self/task').length;
  const daemon = await Daemon.start({ stateDir: dir, listen: '127.0.0.1:0', factory: realVmFactory, log: () => undefined });
  try {
    const g = ['--host', daemon.url, '--state', dir];
    const created = await run([...g, 'vm', 'create', 'real', '--memory', '256']);
    assert.equal(created.code, 0, created.stderr);
    // Attached before the start: the console stream has no history.
    const client = new FerryClient(daemon.url, daemon.token);
    const abort = new AbortController();
    let out = '';
    const waiters: { text: string; resolve: () => void }[] = [];
    const reading = (async () => {
      for await (const m of client.stream('/v1/vms/real/console', abort.signal)) {
        out += Buffer.from(m.data, 'base64').toString('latin1');
        for (const w of waiters.filter((w) => out.includes(w.text))) { waiters.splice(waiters.indexOf(w), 1); w.resolve(); }
      }
    })();
    const waitFor = (text: string): Promise<void> => new Promise((resolve) => {
      if (out.includes(text)) resolve(); else waiters.push({ text, resolve });
    });
    await new Promise((r) => setTimeout(r, 100));
    const started = await run([...g, 'vm', 'start', 'real']);
    assert.equal(started.code, 0, started.stderr);
    await waitFor(GUEST_READY);
    await waitFor(GUEST_PROMPT);
    await client.request('POST', '/v1/vms/real/console', { text: 'echo hi-$((6*7))\n' });
    await waitFor('hi-42');
    abort.abort();
    await reading;
    const show = await run([...g, 'vm', 'show', 'real', '--json']);
    assert.equal(show.code, 0, show.stderr);
    assert.deepEqual((JSON.parse(show.stdout) as { state: unknown }).state, { kind: 'running' });
    const stopped = await run([...g, 'vm', 'stop', 'real']);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.match(stopped.stdout, /^real: stopped/);
    assert.equal((await run([...g, 'vm', 'delete', 'real'])).code, 0);
  } finally {
    await daemon.close();
    rmSync(dir, { recursive: true, force: true });
  }
  // The VM's worker is gone with it.
  assert.ok(readdirSync('/proc/self/task').length <= threadsBefore + 1);
});
