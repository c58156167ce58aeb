// `ferry vm ...` and `ferry daemon` as a user runs them, against a daemon on 127.0.0.1.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { Daemon } from '../../src/host/daemon.js';
import { FakeFactory } from './fakes.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const ferry = join(root, 'bin/ferry.js');

/** Runs ferry without blocking the event loop: the daemon under test lives in this process. */
function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const cleanEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
    if (!('FERRY_TOKEN' in env)) delete cleanEnv['FERRY_TOKEN'];
    delete cleanEnv['FERRY_HOST'];
    execFile(process.execPath, [ferry, ...args], { env: cleanEnv, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function withDaemon(fn: (d: Daemon, dir: string, factory: FakeFactory) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ferryd-cli-'));
  const factory = new FakeFactory();
  const daemon = await Daemon.start({ stateDir: dir, listen: '127.0.0.1:0', factory, log: () => undefined });
  try {
    await fn(daemon, dir, factory);
  } finally {
    await daemon.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('vm create, list (table and --json), show, lifecycle, delete', async () => {
  await withDaemon(async (d, dir, factory) => {
    const g = ['--host', d.url, '--state', dir];
    const created = await run([...g, 'vm', 'create', 'web', '--memory', '128', '--net', 'tap:br0', '--mac', '02:00:00:00:00:07', '--ip', '10.0.0.7/24', '--disk', 'disk.img,ro', '--json']);
    assert.equal(created.code, 0, created.stderr);
    const view = JSON.parse(created.stdout) as { config: { disks: string[]; nets: unknown[] } };
    assert.deepEqual(view.config.nets, [{ mac: '02:00:00:00:00:07', bridge: 'br0' }]);
    // Relative disk paths are made absolute for the daemon.
    assert.match(view.config.disks[0]!, /^\/.*\/disk\.img,ro$/);

    assert.equal((await run([...g, 'vm', 'create', 'db', '--start'])).code, 0);
    assert.equal(factory.latest('db').state.kind, 'running');

    const json = await run([...g, 'vm', 'list', '--json']);
    assert.equal(json.code, 0, json.stderr);
    const vms = JSON.parse(json.stdout) as { name: string; state: { kind: string } }[];
    assert.deepEqual(vms.map((v) => [v.name, v.state.kind]), [['db', 'running'], ['web', 'created']]);

    const table = await run([...g, 'vm', 'list']);
    assert.equal(table.code, 0);
    const lines = table.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^NAME\s+STATE\s+MEMORY\s+NICS\s+DISKS$/);
    assert.match(lines[1]!, /^db\s+running\s+256 MiB\s+0\s+0$/);
    assert.match(lines[2]!, /^web\s+created\s+128 MiB\s+1\s+1$/);

    const show = await run([...g, 'vm', 'show', 'web']);
    assert.match(show.stdout, /^state:\s+created$/m);
    assert.match(show.stdout, /^net0:\s+02:00:00:00:00:07 on br0$/m);

    const pause = await run([...g, 'vm', 'pause', 'web']);
    assert.equal(pause.code, 1);
    assert.match(pause.stderr, /cannot pause a VM that is created \[VM_INVALID_STATE\]/);

    assert.equal((await run([...g, 'vm', 'stop', 'db'])).stdout, 'db: stopped\n');
    assert.equal((await run([...g, 'vm', 'delete', 'db'])).code, 0);
    const missing = await run([...g, 'vm', 'show', 'db']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no VM named 'db' \[VM_NOT_FOUND\]/);
  });
});

test('the token comes from --token, $FERRY_TOKEN or the state dir; a wrong one is refused', async () => {
  await withDaemon(async (d) => {
    assert.equal((await run(['--host', d.url, '--token', d.token, 'vm', 'list'])).code, 0);
    assert.equal((await run(['--host', d.url, 'vm', 'list'], { FERRY_TOKEN: d.token })).code, 0);
    assert.equal((await run(['vm', 'list', '--host', d.url, '--token', d.token])).code, 0);
    const wrong = await run(['--host', d.url, '--token', 'wrong', 'vm', 'list']);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /UNAUTHORIZED/);
  });
});

test('snapshot and restore through the CLI', async () => {
  await withDaemon(async (d, dir, factory) => {
    const g = ['--host', d.url, '--state', dir];
    await run([...g, 'vm', 'create', 'src', '--start']);
    const snap = await run([...g, 'vm', 'snapshot', 'src', 'out.snap', '--json']);
    assert.equal(snap.code, 0, snap.stderr);
    assert.match((JSON.parse(snap.stdout) as { file: string }).file, /^\/.*\/out\.snap$/);
    const restored = await run([...g, 'vm', 'restore', '/tmp/copy.snap', '--from', 'src', '--paused']);
    assert.equal(restored.code, 0, restored.stderr);
    assert.equal(restored.stdout, 'copy: paused\n');
    assert.equal(factory.latest('copy').restoredFrom, '/tmp/copy.snap');
  });
});

test('bad flags and arguments are usage errors (exit 2)', async () => {
  await withDaemon(async (d, dir) => {
    const g = ['--host', d.url, '--state', dir];
    const bogus = await run([...g, 'vm', 'list', '--bogus']);
    assert.equal(bogus.code, 2);
    assert.match(bogus.stderr, /--bogus/);
    assert.equal((await run([...g, 'vm', 'create'])).code, 2);
    assert.equal((await run([...g, 'vm', 'create', 'x', '--memory', '12x'])).code, 2);
    assert.equal((await run([...g, 'vm', 'create', 'x', '--mac', '02:00:00:00:00:01'])).code, 2);
    assert.equal((await run([...g, 'vm', 'frobnicate'])).code, 2);
    assert.equal((await run(['--host'])).code, 2);
    assert.equal((await run(['daemon', '--listen', 'nonsense'])).code, 2);
    // Invalid on the daemon side: exit 1 with its code.
    const badName = await run([...g, 'vm', 'create', 'Bad_Name']);
    assert.equal(badName.code, 1);
    assert.match(badName.stderr, /CONFIG_INVALID/);
  });
});

test('an unreachable daemon is a clear error', async () => {
  const r = await run(['--host', 'http://127.0.0.1:1', '--token', 't', 'vm', 'list']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /cannot reach ferryd/);
});

test('ferry daemon serves, writes its token 0600, and exits cleanly on SIGTERM', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferryd-proc-'));
  try {
    const child = spawn(process.execPath, [ferry, 'daemon', '--state', dir, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const url = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout }).on('line', (line) => {
        const m = /^ferryd listening on (\S+)$/.exec(line);
        if (m) resolve(m[1]!);
      });
      void exited.then(() => reject(new Error(`daemon exited: ${stderr}`)));
    });
    assert.equal(statSync(join(dir, 'token')).mode & 0o777, 0o600);
    const r = await run(['--host', url, '--state', dir, 'vm', 'list', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), '[]');
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
    assert.match(stderr, /SIGTERM: shutting down/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
