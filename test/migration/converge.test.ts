// Pre-copy against a guest that dirties faster than the link, end to end over loopback TCP with
// the fake VMs (whose writer runs the run loop's own throttle policy, throttle.ts): without a
// throttle the rounds stop on no-progress; with either method they converge inside the downtime
// limit and the report says how hard the guest was slowed. And the migration's deadline: each
// --on-timeout strategy does what it says.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fixedRate } from '../../src/migration/precopy/rate.js';
import type { SenderOptions } from '../../src/migration/engine/sender.js';
import type { MigrationProgress } from '../../src/migration/engine/report.js';
import { estimatePrecopy } from '../../src/migration/precopy/estimate.js';
import { PrecopySender } from '../../src/migration/engine/sender.js';
import { FakeSourceVm, FakeTargetHost, listenAsVersion1 } from './fake-vm.js';
import { MiB, assertSameRam, assertSourceKeptVm, assertTargetDiscarded, describe, frozenImage, live, migrate } from './harness.js';

const T = { timeout: 20_000 };

// 1 MiB/s uncompressed is 256 pages/s; the writer dirties up to 100 pages per 5 ms tick over 128
// hot pages, so every round finds the whole hot set dirty again. A 40 ms limit allows 10 pages.
const FAST_GUEST = { initialNonZero: 0.02, hot: { first: 512, count: 128 }, pagesPerTick: 100, tickMs: 5 } as const;
const SLOW_LINK: Partial<SenderOptions> = { rate: fixedRate(1 * MiB), downtimeLimitMs: 40, compression: null };
const LINK_PAGES_PER_S = 256;

test('without a throttle a writer faster than the link never converges (no-progress)', T, async () => {
  const { report } = await migrate({ guest: FAST_GUEST, sender: { ...SLOW_LINK, converge: 'off' } });
  assert.equal(report.outcome, 'completed', describe(report));
  assert.equal(report.stopRule, 'no-progress');
  assert.equal(report.throttle, null);
  assert.equal(report.downtimeLimit?.honoured, false);
  assert.match(report.downtimeLimit?.reason ?? '', /^no-progress: .*the throttle was off/);
  assert.ok((report.downtimeLimit?.expectedMs ?? 0) > 40, `expected ${report.downtimeLimit?.expectedMs} ms`);
});

for (const method of ['dirty-limit', 'auto-converge'] as const) {
  test(`${method} brings the same writer to converge inside the downtime limit`, T, async () => {
    const { vm, report, target } = await migrate({ guest: FAST_GUEST, sender: { ...SLOW_LINK, converge: method, maxRounds: 20 } });
    assert.equal(report.outcome, 'completed', describe(report));
    assert.ok(report.stopRule === 'downtime' || report.stopRule === 'min-pages', `stop rule ${report.stopRule}`);
    assert.deepEqual(report.downtimeLimit && { honoured: report.downtimeLimit.honoured, reason: report.downtimeLimit.reason }, { honoured: true, reason: null });
    const t = report.throttle;
    assert.ok(t, 'the throttle engaged');
    assert.equal(t.method, method);
    assert.ok(t.engagedAfterRound >= 2, 'after two rounds that dirtied over half of what they sent');
    if (method === 'auto-converge') {
      assert.ok(t.peakPercent !== null && t.peakPercent >= 20 && t.peakPercent <= 99);
      assert.equal(t.minPagesPerSecond, null);
    } else {
      assert.ok(t.minPagesPerSecond !== null && t.minPagesPerSecond < LINK_PAGES_PER_S, `budget ${t.minPagesPerSecond} pages/s, below the link`);
      assert.equal(t.peakPercent, null);
    }
    assert.ok(t.stalledMs > 0 && t.stalledMs <= t.engagedMs, `stalled ${t.stalledMs} of ${t.engagedMs} ms`);
    assert.ok(vm.ticksStalled > 0, 'the writer really skipped ticks');
    assert.ok(target);
    assertSameRam(target.ram, frozenImage(vm));
    // The throttle was set through the VM and never left a guest stopped for good.
    const settings = vm.callsOf('throttle').map((c) => c.arg as { kind: string } | null);
    assert.ok(settings.length >= 1 && settings.every((s) => s !== null && s.kind === (method === 'auto-converge' ? 'cpu' : 'dirty-limit')));
  });
}

test('a writer slower than the link is never throttled', T, async () => {
  const { vm, report } = await migrate({ guest: { hot: { first: 512, count: 256 }, pagesPerTick: 1 }, sender: { rate: fixedRate(32 * MiB) } });
  assert.equal(report.outcome, 'completed', describe(report));
  assert.equal(report.throttle, null);
  assert.deepEqual(vm.callsOf('throttle'), []);
});

// --- the deadline --------------------------------------------------------------------------

const DEADLINE_SENDER: Partial<SenderOptions> = { ...SLOW_LINK, converge: 'off', maxRounds: 1000 };

test('--on-timeout cancel: rolls back, the VM keeps running on the source', T, async () => {
  const { vm, host, report } = await migrate({ guest: FAST_GUEST, sender: { ...DEADLINE_SENDER, timeout: { afterMs: 150, strategy: 'cancel' } } });
  assert.equal(report.outcome, 'failed', describe(report));
  assert.equal(report.error?.code, 'MIGRATION_CANCELLED');
  assert.match(report.error?.message ?? '', /timeout of 0.15 s/);
  assert.deepEqual(report.timeout, { afterMs: 150, strategy: 'cancel', fired: true, firedInStage: 'precopy', acted: true });
  await assertSourceKeptVm(vm, false);
  assertTargetDiscarded(host);
});

test('--on-timeout force: stops and copies now, and the report says the limit was not kept', T, async () => {
  const { vm, report, target } = await migrate({ guest: FAST_GUEST, sender: { ...DEADLINE_SENDER, timeout: { afterMs: 150, strategy: 'force' } } });
  assert.equal(report.outcome, 'completed', describe(report));
  assert.equal(report.stopRule, 'timeout');
  assert.deepEqual(report.timeout, { afterMs: 150, strategy: 'force', fired: true, firedInStage: 'precopy', acted: true });
  assert.equal(report.downtimeLimit?.honoured, false);
  assert.match(report.downtimeLimit?.reason ?? '', /^timeout: .*stopped pre-copy/);
  assert.equal(report.postcopy, undefined);
  assert.ok(target);
  // The round the deadline cut short left pages unsent: the switch carried them.
  assertSameRam(target.ram, frozenImage(vm));
});

test('--on-timeout force in hybrid mode stops and copies: no post-copy', T, async () => {
  const { vm, report, target } = await migrate({ guest: FAST_GUEST, sender: { ...DEADLINE_SENDER, mode: 'hybrid', timeout: { afterMs: 150, strategy: 'force' } } });
  assert.equal(report.outcome, 'completed', describe(report));
  assert.equal(report.stopRule, 'timeout');
  assert.equal(report.postcopy, undefined);
  assert.ok(target);
  assertSameRam(target.ram, frozenImage(vm));
});

test('--on-timeout postcopy: switches to post-copy now', T, async () => {
  const { vm, report, target } = await migrate({ guest: FAST_GUEST, sender: { ...DEADLINE_SENDER, timeout: { afterMs: 150, strategy: 'postcopy' } } });
  assert.equal(report.outcome, 'completed', describe(report));
  assert.equal(report.stopRule, 'timeout');
  assert.equal(report.timeout?.acted, true);
  assert.ok(report.postcopy, 'the rest went by post-copy');
  assert.match(report.downtimeLimit?.reason ?? '', /switched to post-copy/);
  assert.ok(target);
  assertSameRam(target.ram, frozenImage(vm));
});

test('a deadline that passes after the migration ended changes nothing', T, async () => {
  const { report } = await migrate({ guest: { pagesPerTick: 1 }, sender: { rate: fixedRate(64 * MiB), timeout: { afterMs: 60_000, strategy: 'force' } } });
  assert.equal(report.outcome, 'completed', describe(report));
  assert.deepEqual(report.timeout, { afterMs: 60_000, strategy: 'force', fired: false, firedInStage: null, acted: false });
});

// --- what the operator sees while it runs --------------------------------------------------

test('progress events carry the expected downtime and an ETA once a round has measured them', T, async () => {
  const seen: MigrationProgress[] = [];
  const { report } = await migrate({ guest: FAST_GUEST, sender: { ...SLOW_LINK, converge: 'off', onProgress: (p) => seen.push(p) } });
  assert.equal(report.outcome, 'completed', describe(report));
  const first = seen.find((p) => p.stage === 'precopy');
  assert.ok(first && first.expectedDowntimeMs === null && first.etaMs === null, 'nothing measured yet as round 1 starts');
  const later = seen.filter((p) => p.stage === 'precopy' && p.round >= 2);
  assert.ok(later.length > 0);
  for (const p of later) {
    assert.ok(typeof p.expectedDowntimeMs === 'number' && p.expectedDowntimeMs > 40, `expected ${p.expectedDowntimeMs} ms: over the limit, as it stays`);
    assert.ok(typeof p.etaMs === 'number' && p.etaMs >= p.expectedDowntimeMs);
  }
});

test('estimatePrecopy: rounds shrink by the dirty rate over the bandwidth until the limit', () => {
  const round = { round: 2, final: false, pagesPlanned: 1000, pagesSent: 1000, pagesSkipped: 0, pagesDirtied: 500, bytesSent: 4096_000, durationMs: 1000, rateLimit: null, measuredRate: 4096_000, dirtyRate: 2048_000 };
  // 1000 pages/s; the switch now would send 500 pages: 500 ms. Remaining 200 pages (0.2 s), then
  // 500 -> 250 -> 125 pages, 125 ms being under the 200 ms limit: 0.2 + 0.5 + 0.25 + 0.125 s.
  const e = estimatePrecopy({ bandwidth: 4096_000, lastRound: round, pagesRemaining: 200, pageSize: 4096, downtimeLimitMs: 200, roundsLeft: 10 });
  assert.deepEqual(e, { expectedDowntimeMs: 500, etaMs: 1075 });
  assert.deepEqual(estimatePrecopy({ bandwidth: undefined, lastRound: undefined, pagesRemaining: 9, pageSize: 4096, downtimeLimitMs: 200, roundsLeft: 10 }), { expectedDowntimeMs: null, etaMs: null });
  // A guest as fast as the link: the planner's round budget bounds the estimate.
  const flat = estimatePrecopy({ bandwidth: 4096_000, lastRound: { ...round, dirtyRate: 8192_000 }, pagesRemaining: 0, pageSize: 4096, downtimeLimitMs: 200, roundsLeft: 3 });
  assert.equal(flat.etaMs, 2000);
});

test('--on-timeout postcopy to a version-1 destination is refused before anything is reserved', T, async () => {
  const vm = new FakeSourceVm({ pagesPerTick: 2 });
  live.add(vm);
  const host = new FakeTargetHost();
  const token = host.issuer.issue();
  const v1 = await listenAsVersion1(host);
  const { port, seen } = v1;
  try {
    const report = await new PrecopySender({ source: vm, host: '127.0.0.1', port, token, timeout: { afterMs: 60_000, strategy: 'postcopy' } }).run();
    assert.equal(report.outcome, 'failed', describe(report));
    assert.equal(report.error?.code, 'MIGRATION_UNSUPPORTED');
    assert.match(report.error?.message ?? '', /--on-timeout postcopy needs protocol version 2/);
    assert.ok(!seen.some((m) => m.type === 'Config'), 'no Config was sent');
    assert.equal(vm.state, 'running');
  } finally {
    await v1.close();
  }
});
