// The blackout probe's arithmetic on made-up sequences: a 1 ms probe with a silence in it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ArrivalGaps, Durations, EchoTracker } from '../../../src/lab/probes/gaps.js';

/** Sends every ms from t=1000 for `n` ms; the guest answers after 0.3 ms except while `dark`. */
function run(n: number, dark: (sentAt: number) => boolean): EchoTracker {
  const t = new EchoTracker();
  for (let i = 0; i < n; i++) {
    const at = 1000 + i;
    const seq = t.send(at);
    if (!dark(at)) t.reply(seq, at + 0.3);
  }
  return t;
}

test('a run of unanswered probes is the blackout, from the last reply before it to the first after', () => {
  const s = run(1000, (at) => at >= 1400 && at < 1437).summary(2100);
  assert.equal(s.sent, 1000);
  assert.equal(s.lost, 37);
  assert.equal(s.received, 963);
  assert.ok(s.maxGap);
  // Last reply: probe 1399 answered at 1399.3; first after: probe 1437 at 1437.3.
  assert.equal(s.maxGap.startMs, 1399.3);
  assert.equal(s.maxGap.endMs, 1437.3);
  assert.equal(Math.round(s.maxGap.ms), 38);
  assert.equal(s.maxGap.open, false);
  assert.equal(s.sendGapMaxMs, 1);
});

test('without a silence the longest gap is the send interval; with two, the longer wins', () => {
  assert.equal(run(100, () => false).summary(1200).maxGap?.ms, 1);
  const s = run(1000, (at) => (at >= 1100 && at < 1110) || (at >= 1500 && at < 1530)).summary(2100);
  assert.equal(s.lost, 40);
  assert.equal(s.maxGap?.startMs, 1499.3);
  assert.equal(Math.round(s.maxGap!.ms), 31);
});

test('a silence that never ended is open and lasts until the summary', () => {
  const s = run(500, (at) => at >= 1300).summary(1600);
  assert.equal(s.lost, 200);
  assert.deepEqual(s.maxGap, { ms: 1600 - 1299.3, startMs: 1299.3, endMs: 1600, open: true });
});

test('late, repeated and unknown replies: arrival order counts, repeats are not replies', () => {
  const t = new EchoTracker();
  for (let i = 0; i < 5; i++) t.send(i);
  t.reply(0, 0.5);
  t.reply(2, 2.5);
  t.reply(1, 30); // reordered: arrives long after 2
  t.reply(1, 31);
  t.reply(99, 32);
  t.reply(3, 33);
  t.reply(4, 34);
  const s = t.summary(40);
  assert.equal(s.received, 5);
  assert.equal(s.duplicates, 1);
  assert.equal(s.lost, 0);
  assert.equal(s.maxGap?.ms, 27.5);
  assert.equal(s.rttMaxMs, 30); // probes 3 and 4, each answered 30 ms after it was sent
});

test('arrival gaps and durations: longest silence, slowest attempt and its start, median', () => {
  const g = new ArrivalGaps();
  for (const at of [0, 2, 4, 250, 252]) g.arrive(at);
  assert.deepEqual(g.longestUntil(253, true), { ms: 246, startMs: 4, endMs: 250, open: false });
  assert.deepEqual(g.longestUntil(600, true), { ms: 348, startMs: 252, endMs: 600, open: true });
  assert.equal(new ArrivalGaps().longestUntil(10, true), null);
  const d = new Durations();
  for (const [start, ms] of [[0, 1], [15, 2], [30, 1003], [45, 1]] as const) d.add(start, ms);
  assert.equal(d.max, 1003);
  assert.equal(d.slowestStartMs, 30);
  assert.equal(d.median(), 1);
  assert.equal(d.count, 4);
});
