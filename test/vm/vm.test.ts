// A VM in its own worker thread behind the VmHandle contract, with the real Debian guest: the
// console both ways, pause freezing guest time, refused transitions, the main thread staying
// responsive while the guest is busy, a snapshot taken while running and restored into a new
// VM that carries on, a worker that dies making the VM `failed`, and nothing left behind
// (threads, TAP devices) once VMs are disposed or a daemon's standby worker pool closes. Two boots' worth of time in all (one boot, one
// restore).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Vm } from '../../src/vm/vm.js';
import { StandbyWorkers } from '../../src/vm/worker-pool.js';
import type { VmConfig, VmEvent } from '../../src/vm/types.js';
import { InvalidTransitionError, type VmStateKind } from '../../src/vm/lifecycle.js';
import { DeviceSpecError } from '../../src/vm/devices.js';
import { ensureGuestImage } from '../../src/guest/image.js';
import { GUEST_PROMPT, GUEST_READY } from '../../src/machine/console/shell.js';
import { attach } from '../support/console.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-vm-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const snapshotFile = join(dir, 'a.snap');

// One NIC, so a TAP device is part of what must not leak.
const config = (name: string): VmConfig => ({ name, memoryMiB: 256, nets: [{ mac: '52:54:00:fe:00:01' }], disks: [] });

/** Read through a call: assert.equal would otherwise narrow `vm.state.kind` for good. */
const kindOf = (vm: Vm): VmStateKind => vm.state.kind;
const threads = () => readdirSync('/proc/self/task').length;
const taps = () => readdirSync('/sys/class/net').filter((n) => n.startsWith('tap')).sort();


interface Beat { n: number; mono: number }
function beats(output: string): Beat[] {
  return [...output.matchAll(/heartbeat (\d+) (\d+\.\d+) /g)].map((m) => ({ n: Number(m[1]), mono: Number(m[2]) }));
}

function refusedIn(state: string) {
  return (e: unknown) => e instanceof InvalidTransitionError && e.code === 'VM_INVALID_STATE' && e.message.includes(state);
}

let baseline = { threads: 0, taps: [] as string[] };
/** What the guest had printed when the snapshot paused it (the snapshot's content). */
let printedBeforeSnapshot = '';

test('Vm.create refuses an invalid config', () => {
  assert.throws(() => Vm.create({ ...config('bad'), nets: [{ mac: 'ff:ff:ff:ff:ff:ff' }] }), DeviceSpecError);
  assert.throws(() => Vm.create({ ...config('bad'), ip: '10.0.0.1' }), DeviceSpecError);
  assert.throws(() => Vm.create({ ...config('bad'), memoryMiB: 0 }), DeviceSpecError);
});

test('a VM in a worker: console, pause, refused transitions, a responsive main thread, snapshot, stop', { timeout: 900_000 }, async (t) => {
  await ensureGuestImage();
  // libuv's thread pool starts on first use and stays; start it before taking the baseline.
  await readFile(snapshotFile).catch(() => undefined);
  baseline = { threads: threads(), taps: taps() };

  const vm = Vm.create(config('vm-a'));
  const events: VmEvent[] = [];
  vm.onEvent((e) => events.push(e));
  assert.equal(kindOf(vm), 'created');
  await assert.rejects(vm.pause(), refusedIn('created'));
  assert.equal(vm.workerThreadId, undefined, 'a refused command starts no worker');

  const d = attach(vm);
  await vm.start();
  try {
    assert.equal(kindOf(vm), 'running');
    assert.equal(taps().length, baseline.taps.length + 1, 'the NIC has its TAP');
    const ready = await d.waitFor(GUEST_READY, 300_000);
    await d.waitFor(GUEST_PROMPT, 60_000, ready.index);
    const hello = await d.exec('echo hello-from-$((6*7))', 60_000);
    assert.match(hello.output, /hello-from-42/);

    await assert.rejects(vm.start(), refusedIn('running'));
    await assert.rejects(vm.resume(), refusedIn('running'));

    // Pause for 2 s between two readings of the guest's uptime: the guest sees the wall time
    // between them minus (nearly all of) the pause.
    const uptime = async () => Number(/^(\d+\.\d+) /m.exec((await d.exec('cat /proc/uptime', 60_000)).output)![1]);
    const u1 = await uptime();
    const w1 = performance.now();
    await vm.pause();
    assert.equal(kindOf(vm), 'paused');
    await assert.rejects(vm.pause(), refusedIn('paused'));
    const printed = d.length;
    await sleep(2000);
    assert.equal(d.length, printed, 'a paused guest prints nothing');
    await vm.resume();
    assert.equal(kindOf(vm), 'running');
    const u2 = await uptime();
    const wall = (performance.now() - w1) / 1000;
    const guest = u2 - u1;
    t.diagnostic(`across a 2 s pause: wall ${wall.toFixed(2)} s, guest ${guest.toFixed(2)} s`);
    assert.ok(guest > 0, 'guest time moves on after resume');
    assert.ok(guest < wall - 1.5, `guest time stood still while paused (wall ${wall.toFixed(2)} s, guest ${guest.toFixed(2)} s)`);

    // The heartbeat runs from here on (its count must survive the snapshot), plus a busy loop:
    // timers on this thread must still fire on time, since the vCPU is not on it.
    d.send('heartbeat -i 200 &\n');
    await d.waitFor(/heartbeat 3 /, 60_000);
    d.send('while :; do :; done & BUSY=$!\n');
    await sleep(300);
    const beatsBefore = beats(d.output).length;
    let worst = 0;
    for (let i = 0; i < 30; i++) {
      const t0 = performance.now();
      await sleep(20);
      worst = Math.max(worst, performance.now() - t0 - 20);
    }
    t.diagnostic(`worst timer lateness on the main thread with the guest busy: ${worst.toFixed(1)} ms`);
    assert.ok(worst < 50, `a 20 ms timer was ${worst.toFixed(1)} ms late`);
    assert.ok(beats(d.output).length > beatsBefore, 'the guest ran meanwhile');
    assert.notEqual(vm.workerThreadId, undefined);
    const killed = await d.exec('kill $BUSY && echo busy-stopped', 60_000);
    assert.match(killed.output, /busy-stopped/);
    await d.waitFor(/heartbeat \d+ [\d.]+ [\d.]+\r?\n(.|\n)*heartbeat \d+ [\d.]+ [\d.]+\r?\n/, 60_000, d.length);

    // The snapshot pauses the guest; the `paused` event marks what the file holds, since the
    // worker delivers all output printed before the pause ahead of confirming it.
    let atPause = -1;
    const off = vm.onEvent((e) => { if (e.type === 'state' && e.state.kind === 'paused') atPause = d.length; });
    const snap = await vm.snapshot(snapshotFile);
    off();
    assert.ok(atPause > 0, 'the VM was paused for the snapshot');
    printedBeforeSnapshot = d.output.slice(0, atPause);
    assert.equal(kindOf(vm), 'running', 'back to running after the snapshot');
    assert.equal(snap.bytes, statSync(snapshotFile).size);
    t.diagnostic(`snapshot: ${snap.bytes} bytes in ${snap.ms} ms`);
    assert.ok(events.some((e) => e.type === 'progress' && e.operation === 'snapshot' && e.done === e.total));
    assert.ok(beats(printedBeforeSnapshot).length >= 3);

    await vm.stop();
    assert.deepEqual(vm.state, { kind: 'stopped', reason: 'stopped' });
    assert.equal(vm.workerThreadId, undefined);
    assert.deepEqual(taps(), baseline.taps, 'stopping released the TAP');
    await assert.rejects(vm.pause(), refusedIn('stopped'));
    assert.equal(vm.workerThreadId, undefined, 'the refused pause started no worker');
    // A stopped VM starts again in a new worker with a fresh machine (no need to wait for it).
    await vm.start();
    assert.equal(kindOf(vm), 'running');
    assert.equal(taps().length, baseline.taps.length + 1);
    await vm.stop();
    assert.deepEqual(events.filter((e) => e.type === 'state').map((e) => e.state.kind), ['running', 'paused', 'running', 'paused', 'running', 'stopped', 'running', 'stopped']);
  } finally {
    await vm.dispose();
  }
  assert.ok(threads() <= baseline.threads, `threads: ${threads()} after dispose, ${baseline.threads} before`);
});

test('Vm.restore: a new VM from the snapshot resumes where the old one was; a dying worker fails the VM', { timeout: 600_000 }, async (t) => {
  assert.ok(printedBeforeSnapshot !== '', 'the previous test wrote the snapshot');
  const vm = await Vm.restore(config('vm-b'), snapshotFile);
  try {
    assert.deepEqual(vm.state, { kind: 'paused' });
    const d = attach(vm);
    await vm.resume();
    assert.equal(kindOf(vm), 'running');

    await d.waitFor(/heartbeat \d+ [\d.]+ [\d.]+\r?\n(.|\n)*heartbeat \d+ [\d.]+ [\d.]+\r?\n(.|\n)*heartbeat \d+ /, 60_000);
    const before = beats(printedBeforeSnapshot);
    const after = beats(d.output);
    const last = before[before.length - 1]!.n;
    t.diagnostic(`heartbeat ${last} before the snapshot, ${after.map((b) => b.n).join(' ')} after the restore`);
    // A line cut by the pause is finished by the restored guest but not matched whole.
    assert.ok(after[0]!.n > last && after[0]!.n <= last + 2, `the count carries on: ${last} then ${after[0]!.n}`);
    for (let i = 1; i < after.length; i++) assert.equal(after[i]!.n, after[i - 1]!.n + 1);
    d.send('\n');
    const echo = await d.exec('echo restored-$((1+1))', 60_000);
    assert.match(echo.output, /restored-2/);

    // The guest ending on its own stops the VM and ends the worker.
    const exited = new Promise<VmEvent>((resolve) => vm.onEvent((e) => { if (e.type === 'guest-exit') resolve(e); }));
    const stopped = new Promise<void>((resolve) => vm.onEvent((e) => { if (e.type === 'state' && e.state.kind === 'stopped') resolve(); }));
    d.send('poweroff -f\n');
    assert.deepEqual(await exited, { type: 'guest-exit', vm: 'vm-b', reason: 'guest powered off' });
    await stopped;
    assert.deepEqual(vm.state, { kind: 'stopped', reason: 'guest powered off' });
    assert.deepEqual(taps(), baseline.taps, 'the worker released the TAP before reporting the exit');
  } finally {
    await vm.dispose();
  }
  assert.equal(kindOf(vm), 'stopped');
  assert.equal(vm.workerThreadId, undefined);
  assert.deepEqual(taps(), baseline.taps, 'no TAP left behind');
  assert.ok(threads() <= baseline.threads, `threads: ${threads()} after dispose, ${baseline.threads} before`);
});

test('a VM on a standby worker (its TAP thread started ahead) runs; closing the pool ends every thread', { timeout: 300_000 }, async () => {
  const workers = new StandbyWorkers();
  // Let the standby finish starting, so the take below gets a warm one.
  await sleep(1000);
  const vm = await Vm.restore(config('vm-d'), snapshotFile, { workers });
  try {
    const d = attach(vm);
    await vm.resume();
    d.send('\n');
    const echo = await d.exec('echo standby-$((2+3))', 60_000);
    assert.match(echo.output, /standby-5/);
    assert.equal(taps().length, baseline.taps.length + 1, 'the NIC has its TAP');
  } finally {
    await vm.dispose();
  }
  // The pool starts its next standby two seconds after a take.
  await sleep(2500);
  assert.ok(threads() > baseline.threads, 'a new standby is up');
  await workers.close();
  assert.deepEqual(taps(), baseline.taps, 'no TAP left behind');
  assert.ok(threads() <= baseline.threads, `threads: ${threads()} after close, ${baseline.threads} before`);
});

test('a worker that dies fails its VM, with an event naming why', { timeout: 300_000 }, async () => {
  // No NIC: a worker killed from outside cannot close what it opened (see vm.ts).
  const vm = Vm.create({ ...config('vm-c'), nets: [] });
  try {
    await vm.start();
    const failed = new Promise<VmEvent>((resolve) => vm.onEvent((e) => { if (e.type === 'state' && e.state.kind === 'failed') resolve(e); }));
    await vm['link']!.worker.terminate();
    const event = await failed;
    assert.equal(kindOf(vm), 'failed');
    assert.match(event.type === 'state' && event.state.kind === 'failed' ? event.state.error : '', /worker exited unexpectedly/);
    assert.equal(vm.workerThreadId, undefined);
    await assert.rejects(vm.resume(), refusedIn('failed'));
    await assert.rejects(vm.start(), refusedIn('failed'));
  } finally {
    await vm.dispose();
  }
  assert.equal(kindOf(vm), 'failed', 'dispose keeps the failure');
  assert.ok(threads() <= baseline.threads, `threads: ${threads()} after dispose, ${baseline.threads} before`);
});
