// Rate policy: the paper's dynamic schedule, fixed mode, rate strings and the pacer.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MBIT, mbit, parseRate, formatRate, RateParseError, RateController, Pacer,
  dynamicRate, fixedRate, DEFAULT_DYNAMIC_RATE,
} from '../../src/migration/precopy/rate.js';

const near = (a: number, b: number, msg?: string): void => assert.ok(Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(b)), msg ?? `${a} != ${b}`);

test('defaults are the paper\'s: 100 Mbit/s start, +50 margin, 500 cap, unpaced final', () => {
  assert.equal(DEFAULT_DYNAMIC_RATE.start, 12_500_000);
  assert.equal(DEFAULT_DYNAMIC_RATE.margin, 6_250_000);
  assert.equal(DEFAULT_DYNAMIC_RATE.cap, 62_500_000);
  assert.equal(DEFAULT_DYNAMIC_RATE.final, Infinity);
});

test('dynamic schedule: next round = dirty rate of previous round + margin, floored at start, capped', () => {
  const rc = new RateController();
  assert.equal(rc.current, mbit(100));
  // Round 1 lasted 2 s and dirtied 40 Mbit worth => 20 Mbit/s dirty; 20 + 50 < 100 floor.
  assert.equal(rc.observe(mbit(40), 2000), mbit(100));
  // 1 s, 120 Mbit dirtied => 120 + 50 = 170.
  near(rc.observe(mbit(120), 1000), mbit(170));
  near(rc.observedDirtyRate, mbit(120));
  assert.equal(rc.saturated, false);
  // 0.5 s, 150 Mbit => 300 Mbit/s dirty => 350.
  near(rc.observe(mbit(150), 500), mbit(350));
  // 480 Mbit/s dirty => 530 wanted, capped at 500 and flagged.
  near(rc.observe(mbit(480), 1000), mbit(500));
  assert.equal(rc.saturated, true);
  // The rate comes back down when the guest calms down.
  near(rc.observe(mbit(100), 1000), mbit(150));
  assert.equal(rc.saturated, false);
  assert.equal(rc.final, Infinity);
});

test('dynamic schedule: every parameter is configurable', () => {
  const rc = new RateController(dynamicRate({ start: mbit(10), margin: mbit(5), cap: mbit(40), final: mbit(1000) }));
  assert.equal(rc.current, mbit(10));
  near(rc.observe(mbit(20), 1000), mbit(25));
  near(rc.observe(mbit(100), 1000), mbit(40));
  assert.equal(rc.final, mbit(1000));
  // A zero-length round carries no information: keep the previous estimate.
  near(rc.observe(0, 0), mbit(40));
});

test('dynamic config is validated', () => {
  assert.throws(() => new RateController(dynamicRate({ start: mbit(200), cap: mbit(100) })), /cap/);
  assert.throws(() => new RateController(dynamicRate({ start: 0 })), /start/);
  assert.throws(() => new RateController(dynamicRate({ margin: -1 })), /margin/);
  assert.throws(() => new RateController(fixedRate(0)), /rate/);
});

test('fixed mode: one rate for every round, stop-and-copy included', () => {
  const rc = new RateController(fixedRate(parseRate('1G')));
  assert.equal(rc.current, 125e6);
  assert.equal(rc.observe(1e9, 100), 125e6);
  assert.equal(rc.current, 125e6);
  assert.equal(rc.final, 125e6);
  assert.equal(rc.saturated, false);
});

test('parseRate: bits by default, bytes with B, decimal and binary prefixes', () => {
  assert.equal(parseRate('1G'), 125e6);
  assert.equal(parseRate('125MB/s'), 125e6);
  assert.equal(parseRate('500Mbit'), 500 * MBIT);
  assert.equal(parseRate('100M'), 100 * MBIT);
  assert.equal(parseRate('1Gbit/s'), 125e6);
  assert.equal(parseRate('8'), 1);
  assert.equal(parseRate('1 B/s'), 1);
  assert.equal(parseRate('2.5 Gbits/s'), 312.5e6);
  assert.equal(parseRate('10KiB/s'), 10240);
  assert.equal(parseRate('1Mibit'), 2 ** 20 / 8);
  assert.equal(parseRate('  64kB  '), 64_000);
  assert.equal(parseRate('64KB'), 64_000);
  assert.equal(parseRate('1Tbit'), 125e9);
  assert.equal(parseRate('.5G'), 62.5e6);
});

test('parseRate: rejects junk with a clear message', () => {
  const bad: Array<[string, RegExp]> = [
    ['', /expected a number/],
    ['fast', /expected a number/],
    ['-5M', /expected a number/],
    ['0', /positive/],
    ['0MB/s', /positive/],
    ['100Mbps', /ambiguous.*100Mbit.*100MB\/s/],
    ['100MBps', /ambiguous/],
    ['100mbit', /uppercase M/],
    ['1gb', /uppercase G/],
    ['100 furlongs', /unknown unit/],
    ['1e9', /unknown unit/],
    ['1.2.3M', /unknown unit/],
  ];
  for (const [s, re] of bad) {
    assert.throws(() => parseRate(s), (e: unknown) => e instanceof RateParseError && re.test(e.message), `parseRate(${JSON.stringify(s)})`);
  }
});

test('formatRate renders in bits like the paper', () => {
  assert.equal(formatRate(mbit(100)), '100 Mbit/s');
  assert.equal(formatRate(125e6), '1 Gbit/s');
  assert.equal(formatRate(Infinity), 'unlimited');
  assert.equal(formatRate(1000), '8 kbit/s');
});

test('pacer: full bucket sends at once, then waits bytes/rate', () => {
  const p = new Pacer(8192);
  const rate = 4096 * 1000; // one 4 KiB page per ms
  assert.equal(p.delay(4096, rate, 0), 0);
  assert.equal(p.delay(4096, rate, 0), 0); // bucket now empty
  assert.equal(p.delay(4096, rate, 0), 1); // one page of debt => 1 ms
  // Caller waited 1 ms and sent; the debt is paid, the next page is again 1 ms away.
  assert.equal(p.delay(4096, rate, 1), 1);
  // Idling refills only up to the burst size.
  assert.equal(p.delay(0, rate, 1000), 0);
  assert.equal(p.delay(8192, rate, 1000), 0);
  assert.equal(p.delay(4096, rate, 1000), 1);
});

test('pacer: a bucket of burstMs of the rate keeps the rate when every sleep ends late', () => {
  const rate = 125e6; // 1 Gbit/s
  const frame = 256 * 1024;
  const throughput = (p: Pacer, lateMs: number): number => {
    let now = 0;
    for (let i = 0; i < 1000; i++) {
      const wait = p.delay(frame, rate, now);
      if (wait > 0) now += wait + lateMs;
    }
    return (1000 * frame) / (now / 1000);
  };
  // A one-frame bucket loses whatever a late timer overshoots past one frame's time (2.1 ms).
  assert.ok(throughput(new Pacer(frame), 5) < 0.7 * rate);
  const floor = new Pacer(frame, 20);
  assert.equal(floor.burstMs, 20);
  assert.ok(throughput(floor, 5) > 0.99 * rate);
  // Never faster than the rate: the floor only stops the bucket from throwing time away.
  assert.ok(throughput(new Pacer(frame, 20), 0) <= rate * 1.01);
  assert.throws(() => new Pacer(0, -1), /burst time/);
});

test('pacer: long-run throughput equals the rate; strict bucket; rate change; unpaced', () => {
  const p = new Pacer(0);
  const rate = 12.5e6; // 100 Mbit/s
  let now = 0;
  for (let i = 0; i < 1000; i++) now += p.delay(4096, rate, now);
  // 1000 pages, the first one also paid for (no burst): 4096000 B / 12.5e6 B/s = 327.68 ms.
  near(now, 327.68);
  // Debt is in bytes: halving the rate doubles the wait for the same bytes.
  const q = new Pacer(0);
  near(q.delay(4096, 4096_000, 0), 1);
  near(q.delay(4096, 2048_000, 0), 4); // 8192 bytes owed at 2048 B/ms
  assert.equal(new Pacer(0).delay(1 << 30, Infinity, 0), 0);
  // A clock stepping backwards does not mint tokens.
  const r = new Pacer(0);
  near(r.delay(1000, 1e6, 100), 1);
  near(r.delay(1000, 1e6, 50), 2);
  assert.throws(() => r.delay(1, 0, 0), /positive/);
});
