// The run loop's throttle (src/machine/boot/throttle.ts). Its arithmetic with made-up times,
// then a bare-metal guest on the real run loop: the cpu throttle takes about its share of the
// guest's instructions, whatever the guest does; the dirty limit holds a writer near its page
// budget and leaves a guest that does not write alone. Speeds are never asserted: throttled and
// free windows alternate on one machine, and only their ratio (in a wide band) or page counts
// against the budget are checked.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Machine } from '../../src/machine/boot/machine.js';
import { MAX_STALL_MS, RunThrottle, type VcpuThrottle } from '../../src/machine/boot/throttle.js';
import { buildBareProgram } from '../../src/guest/bare/build.js';
import { bareDir } from '../support/bare.js';

test('cpu: the vCPU sleeps percent of each 10 ms it runs', () => {
  const t = new RunThrottle();
  t.set({ kind: 'cpu', percent: 75 }, 0);
  assert.equal(t.afterSlice(4, 4, 0), 0);
  assert.equal(t.afterSlice(8, 4, 0), 0);
  assert.equal(t.afterSlice(12, 4, 0), 36, '12 ms run, then 12 x 75 / 25');
  assert.equal(t.afterSlice(60, 4, 0), 0, 'the interval starts again after a sleep');
  t.set({ kind: 'cpu', percent: 99 }, 100);
  assert.equal(t.afterSlice(120, 20, 0), MAX_STALL_MS, 'no single stall is longer than the cap');
  t.stalled(500);
  assert.deepEqual(t.stats(200), { engagedMs: 200, stalledMs: 500 });
  t.set(undefined, 300);
  assert.equal(t.afterSlice(400, 50, 1000), 0, 'off: never a stall');
  assert.deepEqual(t.stats(1000), { engagedMs: 300, stalledMs: 500 });
});

test('dirty-limit: a token bucket of newly dirtied pages, 20 ms deep', () => {
  const t = new RunThrottle();
  t.set({ kind: 'dirty-limit', pagesPerSecond: 1000 }, 0);
  assert.equal(t.afterSlice(1, 1, 20), 0, 'a burst of 20 ms worth goes on');
  assert.equal(t.afterSlice(2, 1, 51), 50, 'then the debt is paid in stall time: 50 pages at 1000/s');
  assert.equal(t.afterSlice(52, 1, 0), 0, 'paid');
  assert.equal(t.afterSlice(3000, 1, 0), 0, 'idle time refills only up to the burst');
  assert.ok(t.afterSlice(3001, 1, 21) > 0);
  // A debt over the cap is paid in several stalls, asked for with nothing run in between.
  t.set({ kind: 'dirty-limit', pagesPerSecond: 100 }, 10_000);
  assert.equal(t.afterSlice(10_000, 1, 232), MAX_STALL_MS, '230 pages over: 2.3 s');
  assert.equal(t.afterSlice(11_000, 0, 0), MAX_STALL_MS);
  assert.equal(t.afterSlice(12_000, 0, 0), 300);
  assert.equal(t.afterSlice(12_300, 0, 0), 0);
});

test('bad settings are refused', () => {
  const t = new RunThrottle();
  for (const bad of [{ kind: 'cpu', percent: 0 }, { kind: 'cpu', percent: 100 }, { kind: 'cpu', percent: 12.5 }, { kind: 'dirty-limit', pagesPerSecond: 0 }, { kind: 'dirty-limit', pagesPerSecond: Infinity }] as VcpuThrottle[]) {
    assert.throws(() => t.set(bad, 0), RangeError, JSON.stringify(bad));
  }
});

// --- on the real run loop ------------------------------------------------------------------

const WINDOW_MS = 200;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Guest { machine: Machine; running: Promise<unknown> }

/** What the guest does (throttle-loop.S's a0). */
type Work = 'compute' | 'write' | 'write-and-sleep';

function boot(work: Work): Guest {
  const elf = new Uint8Array(readFileSync(buildBareProgram('throttle-loop', [join(bareDir, 'throttle-loop.S')])));
  const machine = new Machine({ ramBytes: 64 << 20, console: { write() {}, onInput() {} }, boot: { kind: 'bare', elf } });
  machine.vcpu.setX(10, work === 'compute' ? 0n : work === 'write' ? 1n : 2n);
  return { machine, running: machine.run() };
}

/** Guest progress over a window: instructions retired, and pages newly dirtied (the log is
 * harvested every 20 ms, as pre-copy rounds re-arm it, so a page counts again once taken). */
interface Progress { instructions: number; pages: number; ms: number; stalledMs: number }

async function window(g: Guest, setting: VcpuThrottle | undefined): Promise<Progress> {
  const s0 = g.machine.setThrottle(setting).stalledMs;
  g.machine.harvestDirtyLog();
  const i0 = g.machine.vcpu.instret;
  const t0 = performance.now();
  let pages = 0;
  while (performance.now() - t0 < WINDOW_MS) {
    await sleep(20);
    for (const b of g.machine.harvestDirtyLog()) pages += b;
  }
  const stalledMs = g.machine.setThrottle(setting).stalledMs - s0;
  return { instructions: Number(g.machine.vcpu.instret - i0), pages, ms: performance.now() - t0, stalledMs };
}

/** Alternates free and throttled windows (twice each) so a busy host slows both alike. */
async function compare(work: Work, setting: VcpuThrottle): Promise<{ free: Progress; slow: Progress }> {
  const g = boot(work);
  const free = { instructions: 0, pages: 0, ms: 0, stalledMs: 0 };
  const slow = { instructions: 0, pages: 0, ms: 0, stalledMs: 0 };
  try {
    for (let i = 0; i < 2; i++) {
      for (const [acc, s] of [[free, undefined], [slow, setting]] as const) {
        const w = await window(g, s);
        acc.instructions += w.instructions;
        acc.pages += w.pages;
        acc.ms += w.ms;
        acc.stalledMs += w.stalledMs;
      }
    }
    return { free, slow };
  } finally {
    g.machine.stop();
    await g.running;
  }
}

test('the cpu throttle at 50% takes about half of a guest\'s instructions', async () => {
  const { free, slow } = await compare('compute', { kind: 'cpu', percent: 50 });
  const ratio = slow.instructions / free.instructions;
  assert.ok(free.instructions > 0);
  assert.equal(free.stalledMs, 0);
  assert.ok(slow.stalledMs > 0);
  assert.ok(ratio > 0.2 && ratio < 0.8, `throttled/free instructions ${ratio.toFixed(2)} (${slow.instructions} / ${free.instructions})`);
});

test('the dirty limit holds a writer near its budget', async () => {
  const budget = 2000;
  const { free, slow } = await compare('write', { kind: 'dirty-limit', pagesPerSecond: budget });
  // A slice dirties at most the writer's 512-page window before the loop looks; the bucket then
  // owes it and the stalls pay it back, so two windows overshoot by at most a slice each.
  const allowed = (budget * slow.ms) / 1000 + 2 * 512;
  assert.ok(slow.pages <= allowed, `${slow.pages} pages dirtied throttled, budget ${Math.round(allowed)}`);
  assert.ok(free.pages > 2 * allowed, `the free writer dirtied ${free.pages} pages: the limit did bite`);
});

test('the dirty limit also holds a writer that sleeps between batches (its slices end in WFI)', async () => {
  const budget = 1000;
  const { free, slow } = await compare('write-and-sleep', { kind: 'dirty-limit', pagesPerSecond: budget });
  const allowed = (budget * slow.ms) / 1000 + 2 * 64;
  assert.ok(slow.pages <= allowed, `${slow.pages} pages dirtied throttled, budget ${Math.round(allowed)}`);
  assert.ok(free.pages > 2 * allowed, `the free writer dirtied ${free.pages} pages: the limit did bite`);
});

test('the dirty limit leaves a guest that does not write at full speed', async () => {
  const { free, slow } = await compare('compute', { kind: 'dirty-limit', pagesPerSecond: 16 });
  assert.equal(slow.stalledMs, 0, 'never stalled');
  const ratio = slow.instructions / free.instructions;
  assert.ok(ratio > 0.6, `throttled/free instructions ${ratio.toFixed(2)}`);
});
