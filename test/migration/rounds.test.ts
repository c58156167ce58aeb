// Round planner: page selection, the skip rule, every stop rule, and a simulated guest.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrecopyPlanner, type StopRule, type PlannerOptions } from '../../src/migration/precopy/rounds.js';
import { Pacer, fixedRate, dynamicRate, parseRate, mbit } from '../../src/migration/precopy/rate.js';

const PAGE = 4096;

function log(pageCount: number, dirty: Iterable<number>): Uint8Array {
  const l = new Uint8Array(pageCount);
  for (const p of dirty) l[p] = 1;
  return l;
}
const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);

/** Runs one round in which every planned page is sent (none skipped). */
function round(p: PrecopyPlanner, durationMs: number, dirty: Iterable<number>) {
  return p.endRound({ durationMs, dirtyLog: log(p.pageCount, dirty) });
}

test('round 1 sends the non-zero pages; later rounds send the previous dirty set', () => {
  const p = new PrecopyPlanner({ pageCount: 1000, rate: fixedRate(mbit(100)) });
  const r1 = p.beginFirstRound((pg) => pg % 10 === 0);
  assert.equal(r1.round, 1);
  assert.equal(r1.final, false);
  assert.deepEqual([...r1.pages], range(0, 100).map((i) => i * 10));
  assert.equal(r1.rateLimit, mbit(100));
  assert.deepEqual(round(p, 1000, range(500, 700)), { stop: false });
  const r2 = p.beginRound(log(1000, range(500, 700)));
  assert.equal(r2.round, 2);
  assert.deepEqual([...r2.pages], range(500, 700));
  assert.throws(() => p.beginRound(log(1000, [])), /phase/);
  assert.throws(() => p.beginRound(new Uint8Array(10)), /phase|dirty log/);
});

test('skip rule: re-dirtied pages wait for a later round, but never in stop-and-copy', () => {
  const n = 200;
  const p = new PrecopyPlanner({ pageCount: n, minPages: 0, downtimeLimitMs: 0, noProgressRounds: 0, maxRounds: 2 });
  const plan = p.beginFirstRound(() => true);
  const live = new Uint8Array(n);
  const sent: number[] = [];
  for (const pg of plan.pages) {
    if (pg === 50) live[10] = live[60] = 1; // the guest writes an already-sent and a not-yet-sent page
    if (!p.shouldSkip(pg, live)) sent.push(pg);
  }
  assert.equal(sent.length, n - 1);
  assert.ok(!sent.includes(60) && sent.includes(10));
  // The engine forgets to harvest page 60: the planner still carries the skip forward.
  assert.deepEqual(p.endRound({ durationMs: 1000, dirtyLog: log(n, [10]) }), { stop: false });
  let r = p.report().rounds[0]!;
  assert.deepEqual([r.pagesPlanned, r.pagesSent, r.pagesSkipped, r.pagesDirtied], [n, n - 1, 1, 2]);

  const plan2 = p.beginRound(log(n, [10]));
  assert.deepEqual([...plan2.pages], [10, 60]);
  const live2 = log(n, [10, 60]);
  assert.equal(p.shouldSkip(10, live2), true);
  assert.equal(p.shouldSkip(60, live2), true);
  assert.deepEqual(p.endRound({ durationMs: 10, dirtyLog: live2 }), { stop: true, rule: 'max-rounds' });

  const last = p.beginRound(live2, log(n, [199]));
  assert.equal(last.final, true);
  assert.equal(last.rateLimit, Infinity);
  assert.deepEqual([...last.pages], [10, 60, 199]);
  for (const pg of last.pages) assert.equal(p.shouldSkip(pg, log(n, range(0, n))), false);
  assert.deepEqual(p.endRound({ durationMs: 1, dirtyLog: new Uint8Array(n) }), { stop: true, rule: 'max-rounds' });
  r = p.report().rounds[2]!;
  assert.equal(r.final, true);
  assert.equal(r.pagesSent, 3);
  assert.equal(r.rateLimit, null);
  assert.throws(() => p.beginRound(), /phase/);
});

function stopAfter(opts: PlannerOptions, rounds: Array<[number, Iterable<number>]>): { rule: StopRule | undefined; round: number } {
  const p = new PrecopyPlanner(opts);
  p.beginFirstRound(() => true);
  for (let i = 0; i < rounds.length; i++) {
    const [ms, dirty] = rounds[i]!;
    const d = round(p, ms, dirty);
    if (d.stop) return { rule: d.rule, round: i + 1 };
    p.beginRound(log(p.pageCount, dirty));
  }
  return { rule: undefined, round: rounds.length };
}

test('downtime rule uses the bandwidth measured in the last round', () => {
  // 10000 pages in 1 s => 40.96 MB/s measured; 300 ms then moves exactly 3000 pages.
  // Rounds that dirty more than half of what they sent, so only the limit decides. Round 2
  // sends round 1's 5000 pages in 500 ms: 10000 pages/s, and 300 ms moves exactly 3000.
  const base = { pageCount: 10000, minPages: 0, noProgressRounds: 0 };
  assert.deepEqual(stopAfter(base, [[1000, range(0, 5000)], [500, range(0, 3000)]]), { rule: 'downtime', round: 2 });
  assert.deepEqual(stopAfter(base, [[1000, range(0, 5000)], [500, range(0, 3001)]]).rule, undefined);
  // Same dirty set, but the round took twice as long => half the bandwidth => no stop.
  assert.deepEqual(stopAfter(base, [[1000, range(0, 5000)], [1000, range(0, 3000)]]).rule, undefined);
  // The limit is configurable.
  assert.deepEqual(stopAfter({ ...base, downtimeLimitMs: 600 }, [[1000, range(0, 5000)], [1000, range(0, 3000)]]).rule, 'downtime');
  // Round 2 sends 5000 pages in 250 ms (20000 pages/s): now 3001 pages fit in 300 ms.
  assert.deepEqual(stopAfter(base, [[1000, range(0, 5000)], [250, range(0, 3001)]]), { rule: 'downtime', round: 2 });
  const p = new PrecopyPlanner(base);
  p.beginFirstRound(() => true);
  round(p, 1000, range(0, 5000));
  assert.equal(p.measuredBandwidth, 10000 * PAGE);
  assert.equal(p.estimateDowntimeMs(5000), 500);
});

test('within the limit, pre-copy goes on while rounds halve, down to the floor', () => {
  // 10000 pages in 1 s (10000 pages/s); 3000 dirtied: 300 ms fits, but the round halved.
  const base = { pageCount: 10000, minPages: 0, noProgressRounds: 0 };
  assert.deepEqual(stopAfter(base, [[1000, range(0, 3000)]]).rule, undefined, 'a halving round earns another');
  // 3000 sent in 300 ms, 1000 dirtied: halving again; then 1000 in 100 ms and 600 dirtied: no
  // longer halving, so the pause takes those 600 (60 ms).
  assert.deepEqual(stopAfter(base, [[1000, range(0, 3000)], [300, range(0, 1000)], [100, range(0, 600)]]), { rule: 'downtime', round: 3 });
  // Below the floor (40 pages at 10000 pages/s: 4 ms) the switch comes at once, halving or not.
  assert.deepEqual(stopAfter(base, [[1000, range(0, 40)]]), { rule: 'downtime', round: 1 });
  // Under minPages as well.
  assert.deepEqual(stopAfter({ ...base, minPages: 200 }, [[1000, range(0, 150)]]), { rule: 'downtime', round: 1 });
});

test('min-pages fires below 50 remaining pages even when bandwidth says no', () => {
  // 100 pages over 100 s: 4096 B/s, so 49 pages would take 49 s.
  const opts = { pageCount: 100, noProgressRounds: 0 };
  assert.deepEqual(stopAfter(opts, [[100_000, range(0, 49)]]), { rule: 'min-pages', round: 1 });
  assert.equal(stopAfter(opts, [[100_000, range(0, 50)]]).rule, undefined);
  assert.equal(stopAfter({ ...opts, minPages: 51 }, [[100_000, range(0, 50)]]).rule, 'min-pages');
});

test('max-rounds fires after the configured number of pre-copy rounds', () => {
  const slow: Array<[number, number[]]> = Array.from({ length: 40 }, (_, i) => [60_000, range(0, 100 + (i % 2))]);
  const opts = { pageCount: 1000, noProgressRounds: 0, maxSentFactor: 100 };
  assert.deepEqual(stopAfter(opts, slow), { rule: 'max-rounds', round: 30 });
  assert.deepEqual(stopAfter({ ...opts, maxRounds: 4 }, slow), { rule: 'max-rounds', round: 4 });
});

test('sent-3x-memory fires once more than 3x RAM has gone out', () => {
  // Round 1 sends all 1000 pages; each later round sends the 900 re-dirtied ones.
  const busy: Array<[number, number[]]> = Array.from({ length: 10 }, () => [100_000, range(0, 900)]);
  const opts = { pageCount: 1000, noProgressRounds: 0 };
  // After round 3: 1000 + 900 + 900 = 2800 pages; after round 4: 3700 > 3000.
  assert.deepEqual(stopAfter(opts, busy), { rule: 'sent-3x-memory', round: 4 });
  assert.deepEqual(stopAfter({ ...opts, maxSentFactor: 2 }, busy), { rule: 'sent-3x-memory', round: 3 });
});

test('no-progress: N rounds without beating the earlier best by the shrink margin', () => {
  const opts = { pageCount: 10_000, maxSentFactor: 100 };
  const seq = (counts: number[]): Array<[number, number[]]> => counts.map((c) => [100_000, range(0, c)]);
  // Best after round 1 is 1000; rounds 2..6 never go below 950 => fires after round 6.
  assert.deepEqual(stopAfter(opts, seq([1000, 990, 1200, 960, 999, 951, 500])), { rule: 'no-progress', round: 6 });
  // Round 6 hits 950 = 5% below the best: that is progress, the window restarts.
  assert.equal(stopAfter(opts, seq([1000, 990, 1200, 960, 999, 950])).rule, undefined);
  // Steady shrinking never trips it.
  assert.equal(stopAfter(opts, seq([1000, 900, 800, 700, 600, 500, 400, 300])).rule, undefined);
  // Window and margin are configurable; 0 disables it.
  assert.deepEqual(stopAfter({ ...opts, noProgressRounds: 2 }, seq([1000, 1000, 1000])), { rule: 'no-progress', round: 3 });
  assert.equal(stopAfter({ ...opts, noProgressRounds: 0 }, seq(Array(20).fill(1000))).rule, undefined);
  assert.deepEqual(stopAfter({ ...opts, noProgressShrink: 0 }, seq([1000, 999, 999, 999, 999, 999, 999, 999])), { rule: 'no-progress', round: 7 });
});

test('report is JSON-friendly and adds up', () => {
  const p = new PrecopyPlanner({ pageCount: 100, noProgressRounds: 0, minPages: 0, downtimeLimitMs: 0, maxRounds: 1 });
  p.beginFirstRound((pg) => pg < 80);
  const d = p.endRound({ durationMs: 2000, dirtyLog: log(100, range(0, 10)), bytesSent: 123_456 });
  assert.deepEqual(d, { stop: true, rule: 'max-rounds' });
  p.beginRound(log(100, range(0, 10)));
  p.endRound({ durationMs: 5, dirtyLog: new Uint8Array(100) });
  const rep = JSON.parse(JSON.stringify(p.report()));
  assert.deepEqual(rep.stop, { rule: 'max-rounds', afterRound: 1 });
  assert.deepEqual(rep.rounds[0], {
    round: 1, final: false, pagesPlanned: 80, pagesSent: 80, pagesSkipped: 0, pagesDirtied: 10,
    bytesSent: 123_456, durationMs: 2000, rateLimit: mbit(100), measuredRate: 61_728, dirtyRate: 10 * PAGE / 2,
  });
  assert.equal(rep.rounds[1].rateLimit, null);
  assert.deepEqual(rep.totals, { pagesSent: 90, pagesSkipped: 0, bytesSent: 123_456 + 10 * PAGE, durationMs: 2005 });
  assert.equal(rep.ramBytes, 100 * PAGE);
});

// --- Simulation: a guest writer and a link on a virtual clock -------------------------

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface SimResult { rule: StopRule; rounds: number; finalPages: number; downtimeMs: number; bytesSent: number }

/**
 * A guest with `pageCount` pages writing `writesPerSec` random pages of its first
 * `workingSet` pages; a link of `linkBps` bytes/s. Sending a page costs the pacer's wait
 * plus its serialisation time; the guest writes in proportion to elapsed virtual time.
 */
function simulate(o: { seed: number; pageCount: number; workingSet: number; writesPerSec: number; linkBps: number; planner?: Partial<PlannerOptions> }): SimResult {
  const rnd = mulberry32(o.seed);
  const planner = new PrecopyPlanner({ pageCount: o.pageCount, ...o.planner });
  const pacer = new Pacer(64 * 1024);
  const dirty = new Uint8Array(o.pageCount);
  let now = 0;
  let owed = 0;
  const advance = (ms: number, running: boolean): void => {
    now += ms;
    if (!running) return;
    owed += (o.writesPerSec * ms) / 1000;
    for (; owed >= 1; owed--) dirty[Math.floor(rnd() * o.workingSet)] = 1;
  };
  const harvest = (): Uint8Array => { const h = dirty.slice(); dirty.fill(0); return h; };
  const sendPage = (rate: number, running: boolean): void => {
    advance(pacer.delay(PAGE, rate, now), running);
    advance((PAGE * 1000) / o.linkBps, running);
  };

  let plan = planner.beginFirstRound((pg) => pg < o.workingSet || pg % 4 === 0); // the rest is zero
  for (;;) {
    const start = now;
    for (const pg of plan.pages) if (!planner.shouldSkip(pg, dirty)) sendPage(plan.rateLimit, true);
    const h = harvest();
    const d = planner.endRound({ durationMs: now - start, dirtyLog: h });
    if (!d.stop) { plan = planner.beginRound(h); continue; }
    const last = planner.beginRound(h, harvest()); // the guest is paused from here on
    const t0 = now;
    for (const pg of last.pages) { assert.equal(planner.shouldSkip(pg, dirty), false); sendPage(last.rateLimit, false); }
    planner.endRound({ durationMs: now - t0, dirtyLog: harvest() });
    const rep = planner.report();
    return { rule: d.rule, rounds: rep.rounds.length - 1, finalPages: last.pages.length, downtimeMs: now - t0, bytesSent: rep.totals.bytesSent };
  }
}

const GUEST = { pageCount: 32768, workingSet: 4096 }; // 128 MiB guest, 16 MiB hot

test('simulation: converges on the downtime rule when the link outruns the dirty rate', () => {
  // 2000 writes/s over 16 MiB is at most ~65 Mbit/s of dirtying.
  for (const link of ['1G', '500M', '200M']) {
    for (const seed of [1, 2, 3]) {
      for (const rate of [dynamicRate(), fixedRate(parseRate(link))]) {
        const r = simulate({ seed, ...GUEST, writesPerSec: 2000, linkBps: parseRate(link), planner: { rate } });
        const what = `${link} ${rate.mode} seed ${seed}: ${JSON.stringify(r)}`;
        assert.ok(r.rule === 'downtime' || r.rule === 'min-pages', what);
        assert.ok(r.rounds < 30, what);
        // The estimate used the paced (slower) bandwidth, so the real pause stays in budget.
        assert.ok(r.downtimeMs <= 300, what);
        assert.ok(r.bytesSent < 3 * GUEST.pageCount * PAGE, what);
      }
    }
  }
});

test('simulation: a writer faster than the link ends on no-progress (or max-rounds if disabled)', () => {
  // 20000 writes/s over 16 MiB; the link moves at most ~3000 pages/s (100 Mbit/s).
  for (const link of ['100M', '50M']) {
    for (const seed of [7, 8]) {
      const base = { seed, ...GUEST, writesPerSec: 20_000, linkBps: parseRate(link) };
      const a = simulate({ ...base, planner: { rate: fixedRate(parseRate(link)) } });
      assert.equal(a.rule, 'no-progress', JSON.stringify(a));
      assert.ok(a.rounds >= 6 && a.rounds < 30, JSON.stringify(a));
      assert.ok(a.downtimeMs > 300, 'a non-converged copy pays with downtime');
      const b = simulate({ ...base, planner: { rate: dynamicRate(), noProgressRounds: 0 } });
      assert.equal(b.rule, 'max-rounds', JSON.stringify(b));
      assert.equal(b.rounds, 30);
    }
  }
});

test('simulation is deterministic', () => {
  const o = { seed: 42, ...GUEST, writesPerSec: 5000, linkBps: parseRate('300M') };
  assert.deepEqual(simulate(o), simulate(o));
});
