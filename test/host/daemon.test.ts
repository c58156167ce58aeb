// ferryd's HTTP API against fake VMs: auth, CRUD, lifecycle, errors, events, console,
// persistence across restarts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Daemon, parseListen } from '../../src/host/daemon.js';
import { FerryClient, ApiError } from '../../src/host/client.js';
import type { VmView } from '../../src/host/daemon.js';
import type { VmEvent } from '../../src/vm/types.js';
import { FakeFactory } from './fakes.js';

interface Setup {
  dir: string;
  factory: FakeFactory;
  daemon: Daemon;
  client: FerryClient;
  logs: string[];
  [Symbol.asyncDispose](): Promise<void>;
}

async function setup(dir = mkdtempSync(join(tmpdir(), 'ferryd-')), factory = new FakeFactory(), keepDir = false): Promise<Setup> {
  const logs: string[] = [];
  const daemon = await Daemon.start({ stateDir: dir, listen: '127.0.0.1:0', factory, log: (m) => logs.push(m) });
  return {
    dir, factory, daemon, logs,
    client: new FerryClient(daemon.url, daemon.token),
    async [Symbol.asyncDispose]() {
      await daemon.close();
      if (!keepDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function raw(s: Setup, method: string, path: string, body?: unknown, token: string | null = s.daemon.token) {
  const headers: Record<string, string> = {};
  if (token !== null) headers['Authorization'] = `Bearer ${token}`;
  const res = await fetch(`${s.daemon.url}${path}`, { method, headers, ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}) });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) as { error?: { code: string; message: string } } & Record<string, unknown> : undefined };
}

const cfg = (name: string, extra: Record<string, unknown> = {}) => ({ name, memoryMiB: 128, nets: [], disks: [], ...extra });

test('requests without the token, or with a wrong one, get 401', async () => {
  await using s = await setup();
  for (const token of [null, 'nope', `${s.daemon.token}x`]) {
    const r = await raw(s, 'GET', '/v1/vms', undefined, token);
    assert.equal(r.status, 401);
    assert.equal(r.json?.error?.code, 'UNAUTHORIZED');
  }
  // Unknown routes too: without the token nothing about the API is revealed.
  assert.equal((await raw(s, 'GET', '/nowhere', undefined, null)).status, 401);
  assert.equal((await raw(s, 'GET', '/v1/vms')).status, 200);
});

test('the token file is created with mode 0600 and reused by the next daemon', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferryd-'));
  try {
    let first: string;
    {
      await using s = await setup(dir, new FakeFactory(), true);
      first = s.daemon.token;
      const file = join(dir, 'token');
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.equal(readFileSync(file, 'utf8').trim(), first);
      assert.ok(first.length >= 32);
    }
    await using s2 = await setup(dir, new FakeFactory(), true);
    assert.equal(s2.daemon.token, first);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('create, list, show, delete', async () => {
  await using s = await setup();
  const created = await raw(s, 'POST', '/v1/vms', cfg('web', { nets: [{ mac: '02:00:00:00:00:01', bridge: 'br0' }], ip: '10.0.0.2/24,10.0.0.1', disks: ['/tmp/x.img,ro', 'nbd://127.0.0.1:10809/e'] }));
  assert.equal(created.status, 201);
  assert.deepEqual((created.json as unknown as VmView).state, { kind: 'created' });
  await s.client.request('POST', '/v1/vms', cfg('db'));
  const { vms } = await s.client.list();
  assert.deepEqual(vms.map((v) => v.name), ['db', 'web']);
  const web = await s.client.show('web');
  assert.equal(web.config.memoryMiB, 128);
  assert.deepEqual(web.config.nets, [{ mac: '02:00:00:00:00:01', bridge: 'br0' }]);
  assert.deepEqual(web.allowedCommands, ['start', 'migrate-in', 'fail']);
  assert.ok(existsSync(join(s.dir, 'vms/web/config.json')));

  const dup = await raw(s, 'POST', '/v1/vms', cfg('web'));
  assert.equal(dup.status, 409);
  assert.equal(dup.json?.error?.code, 'VM_EXISTS');

  assert.equal((await raw(s, 'DELETE', '/v1/vms/web')).status, 204);
  assert.ok(s.factory.latest('web').disposed);
  assert.ok(!existsSync(join(s.dir, 'vms/web')));
  const gone = await raw(s, 'GET', '/v1/vms/web');
  assert.equal(gone.status, 404);
  assert.equal(gone.json?.error?.code, 'VM_NOT_FOUND');
  assert.equal((await raw(s, 'POST', '/v1/vms/web/start')).status, 404);
});

test('invalid configs are 400 naming the problem', async () => {
  await using s = await setup();
  const cases: [unknown, RegExp][] = [
    [cfg('Bad_Name'), /invalid VM name/],
    [cfg('-x'), /invalid VM name/],
    [cfg('a'.repeat(64)), /invalid VM name/],
    [cfg('m', { memoryMiB: 16 }), /memoryMiB/],
    [cfg('m', { memoryMiB: 100000 }), /memoryMiB/],
    [cfg('m', { memoryMiB: '256' }), /memoryMiB/],
    [cfg('n', { nets: [{ mac: 'zz:00:00:00:00:01' }] }), /invalid MAC/],
    [cfg('n', { nets: [{ mac: '01:00:00:00:00:01' }] }), /multicast/],
    [cfg('n', { nets: [{ mac: '02:00:00:00:00:01', bridge: 'this-name-is-too-long' }] }), /bridge/],
    [cfg('d', { disks: ['nbd://host'] }), /NBD/],
    [cfg('d', { disks: [42] }), /disks\[0\]/],
    [cfg('i', { ip: '10.0.0.2/24' }), /needs a NIC/],
    [cfg('i', { ip: '999.0.0.2/24', nets: [{ mac: '02:00:00:00:00:01' }] }), /invalid ip/],
    [cfg('u', { colour: 'blue' }), /unknown config field 'colour'/],
    [[1, 2], /JSON object/],
  ];
  for (const [body, message] of cases) {
    const r = await raw(s, 'POST', '/v1/vms', body);
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.match(r.json?.error?.message ?? '', message);
  }
  const bad = await raw(s, 'POST', '/v1/vms', '{not json');
  assert.equal(bad.status, 400);
  assert.equal(bad.json?.error?.code, 'BAD_REQUEST');
  assert.equal((await s.client.list()).vms.length, 0);
});

test('lifecycle commands reach the handle; invalid ones are 409 naming the state', async () => {
  await using s = await setup();
  await s.client.request('POST', '/v1/vms', cfg('vm1'));
  const vm = s.factory.latest('vm1');

  const pauseCreated = await raw(s, 'POST', '/v1/vms/vm1/pause');
  assert.equal(pauseCreated.status, 409);
  assert.deepEqual(pauseCreated.json?.error, { code: 'VM_INVALID_STATE', message: 'cannot pause a VM that is created' });

  for (const [action, kind] of [['start', 'running'], ['pause', 'paused'], ['resume', 'running'], ['stop', 'stopped']] as const) {
    const r = await raw(s, 'POST', `/v1/vms/vm1/${action}`);
    assert.equal(r.status, 200, action);
    assert.equal((r.json as unknown as VmView).state.kind, kind);
  }
  assert.deepEqual(vm.calls, ['start', 'pause', 'resume', 'stop']);

  const pauseStopped = await raw(s, 'POST', '/v1/vms/vm1/pause');
  assert.equal(pauseStopped.status, 409);
  assert.equal(pauseStopped.json?.error?.message, 'cannot pause a VM that is stopped');

  await s.client.request('POST', '/v1/vms/vm1/start');
  const del = await raw(s, 'DELETE', '/v1/vms/vm1');
  assert.equal(del.status, 409);
  assert.match(del.json?.error?.message ?? '', /running/);

  assert.equal((await raw(s, 'POST', '/v1/vms/vm1/reboot')).status, 404);
  assert.equal((await raw(s, 'PUT', '/v1/vms/vm1')).status, 405);
});

test('snapshot and restore', async () => {
  await using s = await setup();
  await s.client.request('POST', '/v1/vms', cfg('src'));
  assert.equal((await raw(s, 'POST', '/v1/vms/src/snapshot', { file: '/tmp/s.snap' })).status, 409);
  await s.client.request('POST', '/v1/vms/src/start');
  assert.equal((await raw(s, 'POST', '/v1/vms/src/snapshot', { file: 'relative.snap' })).status, 400);
  const snap = await raw(s, 'POST', '/v1/vms/src/snapshot', { file: '/tmp/s.snap' });
  assert.equal(snap.status, 200);
  assert.deepEqual(snap.json, { file: '/tmp/s.snap', bytes: 4096, ms: 1 });

  // A new name needs a config.
  const noConfig = await raw(s, 'POST', '/v1/vms/restore', { name: 'copy', file: '/tmp/s.snap' });
  assert.equal(noConfig.status, 400);
  const copy = await raw(s, 'POST', '/v1/vms/restore', { name: 'copy', file: '/tmp/s.snap', config: cfg('ignored') });
  assert.equal(copy.status, 201);
  assert.equal((copy.json as unknown as VmView).state.kind, 'running');
  assert.equal(s.factory.latest('copy').restoredFrom, '/tmp/s.snap');

  const paused = await raw(s, 'POST', '/v1/vms/restore', { name: 'copy2', file: '/tmp/s.snap', config: cfg('copy2'), paused: true });
  assert.equal((paused.json as unknown as VmView).state.kind, 'paused');

  // Over a running VM: refused; over a stopped one: in place, keeping its config.
  const busy = await raw(s, 'POST', '/v1/vms/restore', { name: 'src', file: '/tmp/s.snap' });
  assert.equal(busy.status, 409);
  await s.client.request('POST', '/v1/vms/src/stop');
  const old = s.factory.latest('src');
  const again = await raw(s, 'POST', '/v1/vms/restore', { name: 'src', file: '/tmp/s.snap' });
  assert.equal(again.status, 200);
  assert.ok(old.disposed);
  assert.notEqual(s.factory.latest('src'), old);
  assert.equal((await s.client.show('src')).state.kind, 'running');
});

test('the event stream delivers state and progress events', async () => {
  await using s = await setup();
  await s.client.request('POST', '/v1/vms', cfg('ev'));
  const abort = new AbortController();
  const seen: VmEvent[] = [];
  const reading = (async () => {
    for await (const e of s.client.events(abort.signal)) {
      seen.push(e);
      if (e.type === 'progress' && e.done === e.total) break;
    }
  })();
  // The stream is open once its first comment has arrived; give the request a moment.
  await new Promise((r) => setTimeout(r, 100));
  await s.client.request('POST', '/v1/vms/ev/start');
  await s.client.request('POST', '/v1/vms/ev/snapshot', { file: '/tmp/ev.snap' });
  await reading;
  abort.abort();
  assert.deepEqual(seen[0], { type: 'state', vm: 'ev', state: { kind: 'running' } });
  assert.deepEqual(seen.filter((e) => e.type === 'progress').map((e) => e.type === 'progress' && e.done), [1, 2]);
});

test('console: input reaches the VM and its output comes back on the stream', async () => {
  await using s = await setup();
  await s.client.request('POST', '/v1/vms', cfg('con'));
  const early = await raw(s, 'POST', '/v1/vms/con/console', { text: 'x' });
  assert.equal(early.status, 409);
  await s.client.request('POST', '/v1/vms/con/start');
  const abort = new AbortController();
  let out = '';
  const reading = (async () => {
    for await (const m of s.client.stream('/v1/vms/con/console', abort.signal)) {
      out += Buffer.from(m.data, 'base64').toString();
      if (out.includes('ls\n')) break;
    }
  })();
  await new Promise((r) => setTimeout(r, 100));
  assert.equal((await raw(s, 'POST', '/v1/vms/con/console', { data: Buffer.from('l').toString('base64') })).status, 204);
  assert.equal((await raw(s, 'POST', '/v1/vms/con/console', { text: 's\n' })).status, 204);
  assert.equal((await raw(s, 'POST', '/v1/vms/con/console', { nothing: 1 })).status, 400);
  await reading;
  abort.abort();
  assert.equal(out, 'ls\n');
  assert.deepEqual(s.factory.latest('con').typed.map((b) => Buffer.from(b).toString()), ['l', 's\n']);
});

test('a restarted daemon finds its VMs; running ones are booted again', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferryd-'));
  try {
    {
      await using s = await setup(dir, new FakeFactory(), true);
      for (const n of ['idle', 'up', 'down']) await s.client.request('POST', '/v1/vms', cfg(n));
      await s.client.request('POST', '/v1/vms/up/start');
      await s.client.request('POST', '/v1/vms/down/start');
      await s.client.request('POST', '/v1/vms/down/stop');
    }
    const factory = new FakeFactory();
    await using s2 = await setup(dir, factory, true);
    const { vms } = await s2.client.list();
    assert.deepEqual(vms.map((v) => [v.name, v.state.kind]), [['down', 'created'], ['idle', 'created'], ['up', 'running']]);
    assert.deepEqual(factory.latest('up').calls, ['start']);
    assert.equal(vms.find((v) => v.name === 'up')?.config.memoryMiB, 128);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('shutdown disposes every VM, ends streams, and closes the server', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferryd-'));
  const factory = new FakeFactory();
  try {
    const s = await setup(dir, factory, true);
    await s.client.request('POST', '/v1/vms', cfg('a'));
    await s.client.request('POST', '/v1/vms/a/start');
    const abort = new AbortController();
    const reading = (async () => { for await (const _ of s.client.events(abort.signal)) { /* drain */ } })();
    await new Promise((r) => setTimeout(r, 100));
    await s.daemon.close();
    await reading; // ends because the daemon ended the stream
    assert.ok(factory.latest('a').disposed);
    await assert.rejects(s.client.list(), (err: unknown) => err instanceof Error && !(err instanceof ApiError));
    // The dispose-time stop is the daemon leaving, not the VM's desired state.
    const record = JSON.parse(readFileSync(join(dir, 'vms/a/config.json'), 'utf8')) as { lastState: string };
    assert.equal(record.lastState, 'running');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('listen addresses', () => {
  assert.deepEqual(parseListen('127.0.0.1:7480'), { host: '127.0.0.1', port: 7480 });
  assert.deepEqual(parseListen('[::1]:80'), { host: '::1', port: 80 });
  assert.deepEqual(parseListen(':9'), { host: '127.0.0.1', port: 9 });
  assert.throws(() => parseListen('nope'), /invalid listen address/);
  assert.throws(() => parseListen('h:70000'), /invalid listen address/);
});
