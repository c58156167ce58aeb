// virtio-balloon: inflate/deflate and free page reporting, through the TS driver and with the
// real Debian guest's driver.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VirtioBalloon, BALLOON_F_REPORTING, INFLATE_QUEUE, DEFLATE_QUEUE, REPORTING_QUEUE } from '../../src/machine/devices/virtio/balloon.js';
import { Reg, F_VERSION_1, STATUS_NEEDS_RESET, INT_CONFIG_CHANGE } from '../../src/machine/devices/virtio/constants.js';
import { PAGE_SIZE } from '../../src/machine/memory/guest-memory.js';
import { makeMemory, TestDriver, RAM_BASE } from './virtio-driver.js';
import { ensureGuestImage } from '../../src/guest/image.js';
import { Machine } from '../../src/machine/boot/machine.js';
import { ConsoleDriver, GUEST_PROMPT, GUEST_READY } from '../../src/machine/console/shell.js';
import { guestBoot } from '../../src/guest/boot.js';

function setup(ramBytes = 4 << 20): { d: TestDriver; b: VirtioBalloon } {
  const memory = makeMemory(ramBytes);
  const b = new VirtioBalloon(memory);
  const d = new TestDriver(b, memory);
  d.bringUp(3, 32);
  return { d, b };
}

/** Lets the device finish the reports it took (it discards them between turns of the loop). */
async function reportsDone(b: VirtioBalloon): Promise<void> {
  for (let i = 0; i < 1000 && b.pendingReports > 0; i++) await new Promise((resolve) => setImmediate(resolve));
  assert.equal(b.pendingReports, 0, 'the reports finished');
}

function pfnBuffer(d: TestDriver, pages: number[]): ReturnType<TestDriver['buf']> {
  const bytes = new Uint8Array(4 * pages.length);
  const v = new DataView(bytes.buffer);
  pages.forEach((p, i) => v.setUint32(4 * i, Number((RAM_BASE >> 12n) + BigInt(p)), true));
  return d.buf(bytes);
}

test('features and configuration: num_pages from the host, actual from the driver', () => {
  const { d, b } = setup();
  assert.equal(d.deviceFeatures(), BALLOON_F_REPORTING | F_VERSION_1);
  d.ack();
  b.setTarget(300);
  assert.equal(d.ack() & INT_CONFIG_CHANGE, INT_CONFIG_CHANGE);
  assert.equal(d.transport.read(Reg.Config, 4), 300);
  assert.equal(d.transport.read(Reg.Config + 1, 1), 1);
  d.transport.write(Reg.Config + 4, 4, 120);
  assert.equal(b.actualPages, 120);
  assert.equal(d.transport.read(Reg.Config + 4, 4), 120);
  d.transport.write(Reg.Config, 4, 5);
  assert.equal(b.target, 300, 'num_pages is not driver-writable');
});

test('inflate and deflate track ballooned page numbers and discard inflated pages', () => {
  const { d, b } = setup();
  d.memory.fill(RAM_BASE + BigInt(10 * PAGE_SIZE), PAGE_SIZE, 0x5a);
  d.post(INFLATE_QUEUE, [pfnBuffer(d, [10, 11, 12, 11])]);
  d.kick(INFLATE_QUEUE);
  assert.deepEqual(d.used(INFLATE_QUEUE).map((u) => u.len), [0]);
  assert.equal(b.balloonedPages(), 3);
  assert.ok(b.isBallooned(10) && b.isBallooned(12) && !b.isBallooned(13));
  assert.equal(d.memory.readU8(RAM_BASE + BigInt(10 * PAGE_SIZE) + 7n), 0, 'contents discarded');
  d.post(DEFLATE_QUEUE, [pfnBuffer(d, [11])]);
  d.kick(DEFLATE_QUEUE);
  assert.equal(d.used(DEFLATE_QUEUE).length, 1);
  assert.equal(b.balloonedPages(), 2);
  assert.equal(b.isBallooned(11), false);
  const state = JSON.parse(JSON.stringify(d.transport.save())) as ReturnType<typeof d.transport.save>;
  assert.deepEqual((state.device as { ballooned: number[] }).ballooned, [10, 1, 12, 1]);

  const memory2 = makeMemory(4 << 20);
  const b2 = new VirtioBalloon(memory2);
  const d2 = d.cloneOnto(b2, memory2);
  d2.transport.restore(state);
  assert.equal(b2.balloonedPages(), 2);
  assert.ok(b2.isBallooned(12));
});

test('free page reporting marks and zeroes whole pages; a rewritten page stops counting', async () => {
  const { d, b } = setup();
  const base = RAM_BASE + BigInt(64 * PAGE_SIZE);
  d.memory.fill(base, 8 * PAGE_SIZE, 0xee);
  d.memory.dirtyLog.fill(0);
  // Linux reports with device-writable descriptors naming the free blocks (inbufs).
  d.post(REPORTING_QUEUE, [{ addr: base, len: 4 * PAGE_SIZE, write: true }, { addr: base + BigInt(6 * PAGE_SIZE) + 100n, len: PAGE_SIZE + 200, write: true }]);
  d.kick(REPORTING_QUEUE);
  await reportsDone(b);
  assert.deepEqual(d.used(REPORTING_QUEUE).map((u) => u.len), [0]);
  assert.equal(b.reports, 1);
  // Pages 64..67 whole; 70 only partly (its head and 71's tail are outside the range).
  assert.equal(b.reportedFreePages(), 4);
  assert.deepEqual([63, 64, 67, 68, 70, 71].map((p) => b.isReportedFree(p)), [false, true, true, false, false, false]);
  assert.equal(d.memory.readU8(base + 5n), 0);
  assert.equal(d.memory.readU8(base + BigInt(6 * PAGE_SIZE) + 5n), 0xee, 'partial pages untouched');
  assert.equal(d.memory.dirtyLog[64], 1, 'zeroing is a device write like any other');

  // The guest reuses page 65 (the device cannot see the store; the content check does).
  d.memory.writeU8(base + BigInt(PAGE_SIZE) + 9n, 1);
  assert.equal(b.isReportedFree(65), false);
  assert.equal(b.reportedFreePages(), 3);
  assert.equal(b.isReportedFree(64), true);

  const state = JSON.parse(JSON.stringify(d.transport.save())) as ReturnType<typeof d.transport.save>;
  assert.deepEqual((state.device as { free: number[] }).free, [64, 1, 66, 2]);

  // Runs that overlap or go backwards are refused, and nothing changes.
  const bad = { ...state, device: { ...(state.device as object), free: [66, 2, 64, 3] } };
  assert.throws(() => d.transport.restore(bad), /ascending and disjoint/);
  assert.equal(b.reportedFreePages(), 3);
});

test('a reported page that already reads as zeros is neither written nor marked', async () => {
  const { d, b } = setup();
  const base = RAM_BASE + BigInt(100 * PAGE_SIZE);
  d.memory.fill(base + BigInt(2 * PAGE_SIZE), PAGE_SIZE, 0x11);
  d.memory.dirtyLog.fill(0);
  d.memory.accessLog.fill(0);
  d.post(REPORTING_QUEUE, [{ addr: base, len: 4 * PAGE_SIZE, write: true }]);
  d.kick(REPORTING_QUEUE);
  await reportsDone(b);
  assert.equal(b.reportedFreePages(), 4);
  assert.deepEqual([100, 101, 102, 103].map((p) => d.memory.dirtyLog[p]), [0, 0, 1, 0], 'only the page with data was written');
  assert.deepEqual([100, 101, 103].map((p) => d.memory.accessLog[p]), [0, 0, 0]);
  assert.equal(d.memory.readU8(base + BigInt(2 * PAGE_SIZE)), 0);
});

test('a report is discarded between turns of the event loop, and its buffer returned when done', async () => {
  // 12 MiB, below the test driver's rings: more pages than one turn discards.
  const { d, b } = setup(32 << 20);
  const base = RAM_BASE + BigInt(256 * PAGE_SIZE);
  const pages = 3072;
  d.memory.fill(base, pages * PAGE_SIZE, 0x77);
  d.post(REPORTING_QUEUE, [{ addr: base, len: pages * PAGE_SIZE, write: true }]);
  d.kick(REPORTING_QUEUE);
  assert.equal(d.used(REPORTING_QUEUE).length, 0, 'not returned inside the kick');
  assert.equal(b.pendingReports, 1);
  assert.equal(d.memory.readU8(base + BigInt((pages - 1) * PAGE_SIZE)), 0x77, 'the kick itself discards nothing');
  let turns = 0;
  while (b.pendingReports > 0) {
    await new Promise((resolve) => setImmediate(resolve));
    turns++;
  }
  assert.ok(turns >= 3, `a 3,072-page report took ${turns} turn(s)`);
  assert.deepEqual(d.used(REPORTING_QUEUE).map((u) => u.len), [0]);
  assert.equal(b.reportedFreePages(), pages);
  assert.equal(d.memory.readU8(base + BigInt((pages - 1) * PAGE_SIZE)), 0);
});

test('quiesce returns pending report buffers at once and keeps the pages it did not discard', async () => {
  const { d, b } = setup(32 << 20);
  const base = RAM_BASE + BigInt(256 * PAGE_SIZE);
  d.memory.fill(base, 3072 * PAGE_SIZE, 0x77);
  d.post(REPORTING_QUEUE, [{ addr: base, len: 3072 * PAGE_SIZE, write: true }]);
  d.kick(REPORTING_QUEUE);
  await new Promise((resolve) => setImmediate(resolve));
  const discarded = b.reportedFreePages();
  assert.ok(discarded > 0 && discarded < 3072, `${discarded} pages discarded after one turn`);
  await b.quiesce();
  assert.equal(b.pendingReports, 0);
  assert.deepEqual(d.used(REPORTING_QUEUE).map((u) => u.len), [0]);
  for (let i = 0; i < 4; i++) await new Promise((resolve) => setImmediate(resolve));
  assert.equal(b.reportedFreePages(), discarded, 'nothing more is discarded once returned');
  assert.equal(d.memory.readU8(base + BigInt(3071 * PAGE_SIZE)), 0x77, 'a page not discarded keeps its contents');
  assert.equal(b.isReportedFree(3071 + 256), false);
});

test('malformed balloon buffers → NEEDS_RESET', () => {
  const cases: Array<(d: TestDriver) => number> = [
    (d) => { d.post(INFLATE_QUEUE, [pfnBuffer(d, [1]), d.buf(4, true)]); return INFLATE_QUEUE; },
    (d) => { d.post(INFLATE_QUEUE, [d.buf(Uint8Array.of(1, 2, 3))]); return INFLATE_QUEUE; },
    (d) => { const x = new Uint8Array(4); new DataView(x.buffer).setUint32(0, 5, true); d.post(DEFLATE_QUEUE, [d.buf(x)]); return DEFLATE_QUEUE; },
    (d) => { d.post(REPORTING_QUEUE, [d.buf(Uint8Array.of(1)), d.buf(4096, true)]); return REPORTING_QUEUE; },
  ];
  for (const c of cases) {
    const { d } = setup();
    const q = c(d);
    assert.doesNotThrow(() => d.kick(q));
    assert.equal(d.status & STATUS_NEEDS_RESET, STATUS_NEEDS_RESET, String(c));
    assert.equal(d.logs.length, 1);
  }
});

test('the Debian guest binds virtio_balloon, reports free pages, and follows the balloon target', { timeout: 600_000 }, async () => {
  const image = await ensureGuestImage();
  const console = new ConsoleDriver();
  let balloon: VirtioBalloon | undefined;
  const machine = new Machine({
    ramBytes: 256 << 20,
    console,
    boot: guestBoot(image),
    virtio: (mem) => [(balloon = new VirtioBalloon(mem))],
  });
  const b = balloon!;
  const running = machine.run();
  const waitUntil = async (what: string, ms: number, cond: () => boolean): Promise<void> => {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  try {
    const ready = await console.waitFor(GUEST_READY, 300_000);
    await console.waitFor(GUEST_PROMPT, 60_000, ready.index);
    const bound = await console.exec('ls /sys/bus/virtio/drivers/virtio_balloon/', 30_000);
    assert.match(bound.output, /virtio\d+/, bound.output);

    // page_reporting runs PAGE_REPORTING_DELAY (2 s of guest jiffies) after the driver registers
    // and reports blocks of pageblock order (2 MiB) while the zone is above its low watermark
    // plus 32 such blocks; a 256 MiB guest at a shell is far above that. Host time is a loose
    // proxy for guest time here, hence the generous bound.
    await waitUntil('a free page report', 60_000, () => b.reportedFreePages() > 0);
    assert.equal(b.reportedFreePages() % 512, 0, 'whole 2 MiB blocks');
    const first = b.free.runs()[0]!;
    assert.ok(b.isReportedFree(first), 'a reported page reads as zero');

    // The guest keeps working on memory that was handed back and zeroed.
    const mw = await console.exec('memwriter --wss-mib 32 --once', 120_000);
    assert.equal(mw.status, 0, mw.output);
    assert.match(mw.output, /verify ok/);

    b.setTarget(2048);
    await waitUntil('inflation to 8 MiB', 60_000, () => b.actualPages === 2048);
    assert.equal(b.balloonedPages(), 2048);
    b.setTarget(0);
    await waitUntil('deflation', 60_000, () => b.actualPages === 0);
    assert.equal(b.balloonedPages(), 0);
    assert.equal(machine.virtio[0]!.needsReset, false);

    console.send('poweroff\n');
    assert.deepEqual(await running, { kind: 'poweroff' });
  } finally {
    machine.stop();
    await running;
  }
});
