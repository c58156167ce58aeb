// Post-copy, hybrid and their failures, end to end over loopback TCP with the fake VMs of
// fake-vm.ts: the switch leaves the destination with absent pages, which arrive pushed or on
// request while the (fake) guest runs there; the result is byte for byte the source's RAM at
// the freeze, every page arrives once, and a lost link in the post-copy phase never lets the
// stale source copy run again.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrecopySender } from '../../src/migration/engine/sender.js';
import { PUSH_BATCH_PAGES } from '../../src/migration/postcopy/pusher.js';
import { fixedRate } from '../../src/migration/precopy/rate.js';
import { MessageType } from '../../src/migration/protocol/messages.js';
import { ABSENT_PEER, PRESENT } from '../../src/vm/paging/marks.js';
import { GuestMemoryLostError } from '../../src/machine/memory/errors.js';
import { FakeSourceVm, FakeTargetHost, PAGE_SIZE, delay, listenAsVersion1, until, type FakeTarget } from './fake-vm.js';
import { MiB, assertSameRam, describe, endCalls, frozenImage, live, migrate, withTimeout, type Run } from './harness.js';

const T = { timeout: 20_000 };

function nonZeroPages(ram: Uint8Array): number {
  let n = 0;
  for (let p = 0; p < ram.length / PAGE_SIZE; p++) if (ram.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE).some((b) => b !== 0)) n++;
  return n;
}

function absentPages(target: FakeTarget, mark?: number): number[] {
  const out: number[] = [];
  target.absent.forEach((a, p) => { if (mark === undefined ? a !== PRESENT : a === mark) out.push(p); });
  return out;
}

/** A completed post-copy: the destination runs an exact copy, the source copy is released. */
function assertPostcopyCompleted(run: Run): void {
  const { vm, host, report, received, target } = run;
  assert.equal(report.outcome, 'completed', describe(report));
  assert.equal(received.outcome, 'completed', describe(received));
  assert.ok(target);
  assertSameRam(target.ram, frozenImage(vm));
  assert.deepEqual(absentPages(target), [], 'no page left absent');
  assert.deepEqual(target.loadedState, vm.frozenState, 'the machine state arrived');
  assert.ok(report.postcopy, 'the report has a post-copy section');
  assert.ok(report.postcopy.pagesPushed > 0, 'pages were pushed after the switch');
  assert.equal(report.postcopy.duplicates, 0, 'every page arrived exactly once');
  assert.ok(report.downtimeMs !== null && report.downtimeMs >= 0, 'downtime measured');
  assert.deepEqual(host.adopted, [target]);
  assert.equal(target.activated, true);
  assert.deepEqual(host.lostCalls, []);
  assert.equal(host.discarded.length + host.inDoubtCalls.length, 0);
  assert.deepEqual(endCalls(vm), [{ committed: true }]);
  assert.equal(vm.state, 'stopped');
  assert.equal(vm.guestRunning, false);
  assert.equal(vm.resumedAfterFreeze, false);
  assert.deepEqual(vm.contractViolations, []);
  // The supplier was attached for the post-copy phase and detached after it.
  assert.deepEqual(target.calls.filter((c) => c.endsWith('PeerPages')), ['attachPeerPages', 'detachPeerPages']);
}

// --- (a) pure post-copy ----------------------------------------------------------------------

for (const kind of ['idle', 'writing'] as const) {
  test(`post-copy of an ${kind} guest: every page arrives once, byte for byte`, T, async () => {
    const run = await migrate({
      guest: kind === 'idle' ? { pagesPerTick: 0, running: false } : { pagesPerTick: 16, hot: { first: 512, count: 1024 } },
      sender: { mode: 'postcopy' },
      proxy: () => 'pass',
    });
    assertPostcopyCompleted(run);
    const { vm, report, received, proxy } = run;
    assert.equal(report.mode, 'postcopy');
    // No pre-copy round: the only round is the switch, and it names every non-zero page.
    const nonZero = nonZeroPages(frozenImage(vm));
    assert.ok(nonZero > 0);
    assert.equal(report.rounds.length, 1);
    // A writing guest may zero pages between the scan and the freeze: planned, then skipped.
    if (kind === 'idle') assert.equal(report.rounds[0]!.pagesPlanned, nonZero);
    else assert.ok(report.rounds[0]!.pagesPlanned >= nonZero);
    assert.ok(report.rounds[0]!.bytesSent < 64 * 1024, `the switch carried no page data: ${report.rounds[0]!.bytesSent} bytes`);
    assert.equal(report.postcopy!.pagesPushed, nonZero, 'every non-zero page at the freeze was left for post-copy');
    assert.equal(report.pages.sent, nonZero, 'each sent once');
    assert.equal(received.pages.sent, nonZero, 'each received once');
    assert.ok(proxy);
    assert.ok(proxy.count('forward', MessageType.Absent) >= 1, 'Absent announced the pages');
    assert.equal(proxy.count('forward', MessageType.PostcopyEnd), 1);
    assert.equal(proxy.count('return', MessageType.PostcopyComplete), 1);
    assert.equal(proxy.count('forward', MessageType.RoundEnd), 1, 'only the switch round has a RoundEnd');
    // Nobody faulted: the push alone sent them, in full batches in ascending order.
    assert.equal(proxy.count('forward', MessageType.Pages), Math.ceil(nonZero / PUSH_BATCH_PAGES));
    assert.equal(proxy.count('return', MessageType.PageRequest), 0);
    // Each pushed frame was acknowledged (the push window), the last ones after PostcopyEnd.
    assert.equal(proxy.count('return', MessageType.PostcopyAck), Math.ceil(nonZero / PUSH_BATCH_PAGES));
    assert.equal(report.postcopy!.pagesRequested, 0);
    assert.equal(report.postcopy!.faults, 0);
    assert.ok(report.stages.some((s) => s.stage === 'postcopy'), 'the source went through the post-copy stage');
    assert.ok(received.stages.some((s) => s.stage === 'postcopy'), 'so did the destination');
    if (kind === 'writing') assert.ok(vm.writes > 0, 'the guest wrote before the freeze');
  });
}

// --- (b) the destination guest faults during post-copy ---------------------------------------

test('post-copy: pages the destination guest touches are requested and arrive, exactly once', T, async () => {
  const touched: number[] = [];
  const touching: Promise<void>[] = [];
  let absentAtStart = 0;
  let destination: FakeTargetHost | undefined;
  const run = await migrate({
    guest: { pagesPerTick: 8, initialNonZero: 0.5, zeroPercent: 0 },
    // Slow enough that the push is still under way when the guest touches pages.
    sender: { mode: 'postcopy', rate: fixedRate(4 * MiB) },
    proxy: () => 'pass',
    prepare: (_vm, host) => {
      destination = host;
      // Faults as soon as the state is loaded (before Committed even): the source must keep
      // these requests for the push.
      host.afterLoad = (t) => {
        const early = absentPages(t, ABSENT_PEER).slice(-3);
        absentAtStart = absentPages(t, ABSENT_PEER).length;
        for (const p of early) { touched.push(p); touching.push(t.touch(p)); }
      };
    },
    listen: {
      onStage: (s) => {
        if (s.kind !== 'postcopy') return;
        // The VM runs: it touches absent pages from the top of RAM down (the push goes up).
        touching.push((async () => {
          const t = destination!.targets[0]!;
          const pages = absentPages(t, ABSENT_PEER).reverse().slice(0, 40);
          for (let i = 0; i < pages.length; i += 4) {
            const group = pages.slice(i, i + 4);
            touched.push(...group);
            await Promise.all(group.map((p) => t.touch(p)));
          }
        })());
      },
    },
  });
  assertPostcopyCompleted(run);
  await Promise.all(touching);
  const { vm, report, target, proxy } = run;
  assert.ok(target);
  assert.ok(absentAtStart > 0);
  assert.ok(touched.length > 3, 'the guest touched pages in the post-copy phase');
  for (const p of touched) {
    assert.equal(target.absent[p], PRESENT, `touched page ${p} present`);
    const off = p * PAGE_SIZE;
    assert.equal(Buffer.compare(target.ram.subarray(off, off + PAGE_SIZE), frozenImage(vm).subarray(off, off + PAGE_SIZE)), 0, `page ${p} exact`);
  }
  const pc = report.postcopy!;
  assert.ok(pc.pagesRequested > 0, `pages were requested: ${JSON.stringify(pc)}`);
  assert.ok(pc.requests > 0);
  assert.ok(pc.pagesRequested <= touched.length, 'only touched pages are requested');
  assert.ok(pc.faults > 0, 'the destination reported its faults');
  assert.ok(pc.faults <= touched.length);
  assert.ok(pc.stallUsMax > 0 && pc.stallUsTotal >= pc.stallUsMax, 'stalls measured');
  assert.equal(pc.duplicates, 0);
  assert.equal(pc.pagesPushed, absentAtStart, 'PostcopyEnd counts every absent page, requested or pushed');
  assert.ok(target.faults.faults >= pc.faults, 'the report counts the faults seen before PostcopyEnd');
  assert.ok(proxy);
  assert.ok(proxy.count('return', MessageType.PageRequest) > 0, 'PageRequest frames went to the source');
  assert.equal(report.pages.sent, absentAtStart, 'requested pages were not sent a second time');
});

// --- (c) hybrid --------------------------------------------------------------------------------

test('hybrid on an idle guest converges by pre-copy: no post-copy phase', T, async () => {
  const { vm, report, received, target, proxy } = await migrate({
    guest: { pagesPerTick: 0, running: false },
    sender: { mode: 'hybrid' },
    proxy: () => 'pass',
  });
  assert.equal(report.outcome, 'completed', describe(report));
  assert.equal(received.outcome, 'completed', describe(received));
  assert.equal(report.mode, 'hybrid');
  assert.equal(report.postcopy, undefined, 'no post-copy section');
  assert.ok(report.stopRule === 'downtime' || report.stopRule === 'min-pages', `converged: ${report.stopRule}`);
  assert.ok(!report.stages.some((s) => s.stage === 'postcopy'));
  assert.ok(target);
  assertSameRam(target.ram, frozenImage(vm));
  assert.deepEqual(absentPages(target), []);
  assert.ok(proxy);
  assert.equal(proxy.count('forward', MessageType.Absent), 0, 'nothing announced absent');
  assert.equal(proxy.count('forward', MessageType.PostcopyEnd), 0);
  assert.deepEqual(target.calls.filter((c) => c.endsWith('PeerPages')), [], 'no supplier attached');
  assert.deepEqual(endCalls(vm), [{ committed: true }]);
});

test('hybrid on a guest that writes faster than the link: pre-copy gives up, post-copy finishes', T, async () => {
  const run = await migrate({
    guest: { pagesPerTick: 24, initialNonZero: 0.05, zeroPercent: 0, hot: { first: 2048, count: 768 } },
    sender: { mode: 'hybrid', rate: fixedRate(2 * MiB), downtimeLimitMs: 1, maxRounds: 3, compression: null },
    proxy: () => 'pass',
  });
  assertPostcopyCompleted(run);
  const { report, proxy } = run;
  assert.equal(report.mode, 'hybrid');
  const precopy = report.rounds.filter((r) => !r.final);
  assert.ok(precopy.length >= 1 && precopy.length <= 3, `pre-copy rounds ran: ${precopy.length}`);
  assert.ok(report.stopRule !== 'downtime' && report.stopRule !== 'min-pages', `did not converge: ${report.stopRule}`);
  assert.ok(report.postcopy!.pagesPushed > 50, `the dirty set was left for post-copy: ${report.postcopy!.pagesPushed}`);
  assert.ok(proxy);
  assert.ok(proxy.count('forward', MessageType.Absent) >= 1);
  assert.equal(proxy.count('forward', MessageType.PostcopyEnd), 1);
});

// --- (d) a destination that speaks only protocol version 1 ----------------------------------

test('post-copy to a version-1 destination is refused before anything is reserved; the VM runs on', T, async () => {
  const vm = new FakeSourceVm({ pagesPerTick: 2 });
  live.add(vm);
  const host = new FakeTargetHost();
  const token = host.issuer.issue();
  const v1 = await listenAsVersion1(host);
  const { port, seen } = v1;
  try {
    const report = await new PrecopySender({ source: vm, host: '127.0.0.1', port, token, mode: 'postcopy' }).run();
    assert.equal(report.outcome, 'failed', describe(report));
    assert.equal(report.error?.code, 'MIGRATION_UNSUPPORTED');
    assert.match(report.error?.message ?? '', /version 2/);
    assert.ok(!seen.some((m) => m.type === 'Config'), 'no Config was sent');
    assert.equal(report.downtimeMs, null, 'never paused');
    assert.equal(vm.callsOf('freeze').length, 0);
    assert.deepEqual(endCalls(vm).map((e) => e.committed), [false]);
    assert.equal(vm.state, 'running');
    assert.ok(vm.guestRunning);
    assert.ok(vm.ramIntact());
    assert.deepEqual(vm.contractViolations, []);
  } finally {
    await v1.close();
  }
});

// --- (e) the link is lost during post-copy ----------------------------------------------------

test('the link is cut after a few post-copy Pages frames: the destination VM is lost, the source copy never resumes', T, async () => {
  const CUT_AFTER = 2;
  let pagesFrames = 0;
  let lostTouch: unknown;
  const run = await migrate({
    guest: { pagesPerTick: 4, initialNonZero: 0.6 },
    sender: { mode: 'postcopy', rate: fixedRate(8 * MiB), compression: null },
    proxy: (dir, type) => {
      if (dir !== 'forward' || type !== MessageType.Pages) return 'pass';
      return ++pagesFrames > CUT_AFTER ? 'cut' : 'pass';
    },
  });
  const { vm, host, report, received, target } = run;
  assert.ok(target);
  // The source: the destination may have run the guest, so its copy is stale for good.
  assert.equal(report.outcome, 'failed', describe(report));
  assert.equal(report.error?.code, 'MIGRATION_POSTCOPY_DESTINATION_LOST');
  assert.match(report.error?.message ?? '', /post-copy ended early/);
  assert.deepEqual(endCalls(vm), [{ committed: true }], 'the source copy is released, not resumed');
  assert.equal(vm.state, 'stopped');
  assert.equal(vm.guestRunning, false);
  assert.equal(vm.resumedAfterFreeze, false);
  assert.ok(report.postcopy, 'the report says what was at risk');
  assert.equal(report.postcopy.pagesPushed, 0, 'the push never completed');
  // The destination: it ran the VM, but pages that existed only at the source are gone.
  assert.equal(received.outcome, 'failed', describe(received));
  assert.equal(received.error?.code, 'MIGRATION_POSTCOPY_SOURCE_LOST');
  assert.equal(target.activated, true);
  assert.deepEqual(host.adopted, [target]);
  assert.equal(host.lostCalls.length, 1);
  assert.equal(host.lostCalls[0]!.target, target);
  assert.equal(target.status, 'lost');
  const missing = absentPages(target, ABSENT_PEER).length;
  assert.ok(missing > 0, 'pages are still missing');
  assert.match(host.lostCalls[0]!.reason, new RegExp(`; ${missing} guest pages existed only on the source`));
  assert.match(received.error?.message ?? '', new RegExp(`${missing} guest pages`));
  assert.equal(host.discarded.length + host.inDoubtCalls.length, 0);
  // At most CUT_AFTER whole batches made it (the cut may also drop frames the proxy had queued):
  // those pages are present and exact, the rest never will be.
  const present = nonZeroPages(frozenImage(vm)) - missing;
  assert.ok(present <= CUT_AFTER * PUSH_BATCH_PAGES && present % PUSH_BATCH_PAGES === 0, `whole batches installed: ${present} pages`);
  for (let p = 0; p < target.pageCount; p++) {
    if (target.absent[p] !== PRESENT) continue;
    const off = p * PAGE_SIZE;
    if (Buffer.compare(target.ram.subarray(off, off + PAGE_SIZE), frozenImage(vm).subarray(off, off + PAGE_SIZE)) !== 0) assert.fail(`present page ${p} differs`);
  }
  // A fault on a lost page fails at once, as GUEST_MEMORY_LOST.
  try {
    await withTimeout(target.touch(absentPages(target, ABSENT_PEER)[0]!), 2000, 'a fault on a lost page');
  } catch (e) {
    lostTouch = e;
  }
  assert.ok(lostTouch instanceof GuestMemoryLostError, `the fault failed with GuestMemoryLostError: ${String(lostTouch)}`);
  assert.equal((lostTouch as GuestMemoryLostError).code, 'GUEST_MEMORY_LOST');
  await delay(100);
  assert.equal(vm.guestRunning, false, 'and it stays so');
});

test('the link is cut before Done reaches the source (post-copy): source in doubt and paused, destination lost', T, async () => {
  const { vm, host, report, received, target } = await migrate({
    guest: { pagesPerTick: 4 },
    sender: { mode: 'postcopy' },
    proxy: (dir, type) => (dir === 'return' && type === MessageType.Done ? 'cut' : 'pass'),
  });
  assert.ok(target);
  // The source got Committed but never heard Done: it cannot tell whether the guest ran there.
  assert.equal(report.outcome, 'in-doubt', describe(report));
  assert.equal(report.error?.code, 'MIGRATION_CONNECTION_LOST');
  assert.deepEqual(endCalls(vm), [], 'neither resumed nor released');
  assert.equal(vm.state, 'frozen');
  assert.equal(vm.guestRunning, false);
  assert.equal(vm.resumedAfterFreeze, false);
  // The destination ran it and then lost its source.
  assert.equal(received.outcome, 'failed', describe(received));
  assert.equal(received.error?.code, 'MIGRATION_POSTCOPY_SOURCE_LOST');
  assert.equal(target.activated, true);
  assert.equal(host.lostCalls.length, 1);
  assert.equal(host.lostCalls[0]!.target, target);
  // Pages flow from Activate, so some may have arrived before the cut; not all did.
  const missing = absentPages(target, ABSENT_PEER).length;
  assert.ok(missing > 0 && missing <= nonZeroPages(frozenImage(vm)), `${missing} pages missing`);
  assert.match(host.lostCalls[0]!.reason, new RegExp(`; ${missing} guest pages existed only on the source`));
});

// --- (f) cancel before the switch -------------------------------------------------------------

for (const at of ['reservation', 'stop-and-copy'] as const) {
  test(`post-copy cancelled at ${at} (before the switch) rolls back: the source runs, the target is discarded`, T, async () => {
    let cancelled: boolean | undefined;
    let sender: () => PrecopySender = () => { throw new Error('no sender yet'); };
    const { vm, host, report, received } = await migrate({
      guest: { pagesPerTick: 4 },
      sender: {
        mode: 'postcopy',
        onStage: (s) => { if (s.kind === at && cancelled === undefined) cancelled = sender().cancel('operator said stop'); },
      },
      prepare: (_vm, _host, get) => { sender = get; },
    });
    assert.equal(cancelled, true, 'cancel is honoured before the commit point');
    assert.equal(report.outcome, 'failed', describe(report));
    assert.equal(report.error?.code, 'MIGRATION_CANCELLED');
    assert.match(report.error?.message ?? '', /operator said stop/);
    assert.equal(report.postcopy, undefined, 'no page was left behind');
    assert.equal(received.outcome, 'failed', describe(received));
    const frozen = at === 'stop-and-copy';
    const ends = endCalls(vm);
    assert.equal(ends.length, 1);
    const end = ends[0]!;
    assert.equal(end.committed, false);
    if (!end.committed) {
      assert.match(end.error, /operator said stop/);
      assert.equal(end.frozen, frozen, 'endMigrationOut tells whether the VM was frozen');
    }
    assert.equal(vm.callsOf('freeze').length, frozen ? 1 : 0);
    assert.equal(vm.resumedAfterFreeze, frozen);
    assert.equal(frozen ? report.downtimeMs !== null : report.downtimeMs === null, true, 'a pause is reported as downtime');
    assert.equal(vm.state, 'running');
    assert.ok(vm.guestRunning, 'the guest runs again');
    assert.ok(vm.ramIntact());
    const writes = vm.writes;
    await until(() => vm.writes > writes + 4, 2000, 'the guest to write again');
    assert.deepEqual(vm.contractViolations, []);
    assert.equal(host.adopted.length, 0);
    assert.deepEqual(host.lostCalls, []);
    assert.equal(host.inDoubtCalls.length, 0);
    for (const t of host.targets) {
      assert.equal(t.status, 'discarded');
      assert.equal(t.activated, false);
      assert.equal(t.peerPages, undefined, 'no supplier was ever attached');
    }
    if (frozen) assert.equal(host.targets.length, 1, 'the reservation existed and was freed');
  });
}
