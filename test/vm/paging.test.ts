// Demand paging on the host side: the working-set estimate, the swap store (clustered reads,
// writes that are served from memory until durable, no stale page after a re-eviction), the
// page server that routes faults by absent mark, and the Agile policy that ties them together.
// Guest memory is a plain object with the fields paging touches; no machine.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { GuestMemory } from '../../src/machine/memory/guest-memory.js';
import { GuestMemoryLostError } from '../../src/machine/memory/errors.js';
import { MemoryBlockBackend } from '../../src/storage/memory.js';
import { WorkingSetTracker } from '../../src/vm/paging/working-set.js';
import { CLUSTER_PAGES as C, SwapStore } from '../../src/vm/paging/swap.js';
import { PageServer, type PageSupplier } from '../../src/vm/paging/page-server.js';
import { ABSENT_PEER, ABSENT_SWAP, MARK_INSTALLED, PAGE_SIZE, PRESENT, installPage, markedRuns, countMarked } from '../../src/vm/paging/marks.js';
import { AgileMemory, type AgileOptions, type AgileWorkerPort } from '../../src/vm/paging/agile.js';


interface FakeMemory {
  readonly bytes: Uint8Array;
  readonly dirtyLog: Uint8Array;
  readonly absent: Uint8Array;
  readonly accessLog: Uint8Array;
  readonly pageCount: number;
  readonly ramSize: number;
}

function fakeMemory(pageCount: number): FakeMemory {
  return {
    bytes: new Uint8Array(pageCount * PAGE_SIZE),
    dirtyLog: new Uint8Array(pageCount),
    absent: new Uint8Array(pageCount),
    accessLog: new Uint8Array(pageCount),
    pageCount,
    ramSize: pageCount * PAGE_SIZE,
  };
}

const asGuest = (m: FakeMemory): GuestMemory => m as unknown as GuestMemory;

/** Page content that tells page and version apart. */
function pattern(page: number, version: number): Uint8Array {
  const out = new Uint8Array(PAGE_SIZE);
  let x = ((page + 1) * 2654435761 + version * 40503) >>> 0 || 1;
  for (let i = 0; i < PAGE_SIZE; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

const pageOf = (m: FakeMemory, p: number): Uint8Array => m.bytes.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0;
const range = (first: number, end: number): number[] => Array.from({ length: end - first }, (_, i) => first + i);

/** Fills pages with version-0 patterns; returns the expected image. */
function fillAll(m: FakeMemory): Uint8Array {
  for (let p = 0; p < m.pageCount; p++) m.bytes.set(pattern(p, 0), p * PAGE_SIZE);
  return m.bytes.slice();
}

/** What the worker's evict does: copy, mark absent, zero. */
function evict(m: FakeMemory, pages: readonly number[], mark = ABSENT_SWAP): Uint8Array {
  const data = new Uint8Array(pages.length * PAGE_SIZE);
  pages.forEach((p, i) => {
    data.set(pageOf(m, p), i * PAGE_SIZE);
    m.absent[p] = mark;
    m.bytes.fill(0, p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
  });
  return data;
}

/** The worker's eviction as the Agile policy sees it: pages read back from the device and not
 * written since (MARK_INSTALLED; the fake has no harvests) come without data. */
async function workerEvict(m: FakeMemory, pages: readonly number[], mark: number) {
  const unchanged = pages.filter((p) => m.absent[p] === PRESENT && m.dirtyLog[p] === MARK_INSTALLED);
  const taken = pages.filter((p) => m.absent[p] === PRESENT && m.dirtyLog[p] !== MARK_INSTALLED);
  evict(m, unchanged, mark);
  return { pages: taken, data: evict(m, taken, mark), unchanged };
}

/** A memory block device whose reads and writes can be held at a gate. */
class GatedBackend extends MemoryBlockBackend {
  private readGate: Promise<void> | undefined;
  private writeGate: Promise<void> | undefined;
  private openRead: (() => void) | undefined;
  private openWrite: (() => void) | undefined;
  readonly log: string[] = [];
  /** Writes to fail (each takes one) before any reaches the device. */
  failWrites = 0;

  holdReads(): void { this.readGate = new Promise((r) => { this.openRead = r; }); }
  releaseReads(): void { this.openRead?.(); this.readGate = undefined; }
  holdWrites(): void { this.writeGate = new Promise((r) => { this.openWrite = r; }); }
  releaseWrites(): void { this.openWrite?.(); this.writeGate = undefined; }

  override async read(offset: number, length: number): Promise<Uint8Array> {
    this.log.push(`read ${offset / PAGE_SIZE}+${length / PAGE_SIZE}`);
    // The device's content at the time the read was issued.
    const data = await super.read(offset, length);
    if (this.readGate) await this.readGate;
    return data;
  }

  override async write(offset: number, data: Uint8Array): Promise<void> {
    this.log.push(`write ${offset / PAGE_SIZE}+${data.length / PAGE_SIZE}`);
    if (this.writeGate) await this.writeGate;
    if (this.failWrites > 0) {
      this.failWrites--;
      throw new Error('EIO on the swap device');
    }
    return super.write(offset, data);
  }
}

function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** An Agile policy over filled fake memory with an in-memory swap device; `harvestAccess` plays
 * the worker's access log, eviction is the worker's. `epoch` runs one epoch by hand. */
/** Guest RAM of `pageCount` non-zero pages and a swap store on a device whose writes a test
 * can hold back. `image`: the RAM as filled. */
function gatedSwap(pageCount: number) {
  const m = fakeMemory(pageCount);
  const image = fillAll(m);
  const device = new GatedBackend(m.ramSize);
  const swap = new SwapStore(device, asGuest(m), 'mem://swap');
  return { m, image, device, swap };
}

function agileRig(pageCount: number, harvestAccess: () => Promise<Uint8Array>, options: AgileOptions) {
  const m = fakeMemory(pageCount);
  fillAll(m);
  const swap = new SwapStore(new MemoryBlockBackend(m.ramSize), asGuest(m), 'mem://swap');
  const port: AgileWorkerPort = { harvestAccess, evict: (pages, mark) => workerEvict(m, pages, mark) };
  const agile = new AgileMemory(asGuest(m), swap, port, options);
  const epoch = (): Promise<void> => (agile as unknown as { epoch(): Promise<void> }).epoch();
  return { m, swap, agile, epoch };
}

// --- WorkingSetTracker ---------------------------------------------------------------------

test('working set: nothing is cold before the window has passed, then exactly the idle pages', () => {
  const w = new WorkingSetTracker(8, 3);
  const log = (...pages: number[]) => { const l = new Uint8Array(8); for (const p of pages) l[p] = 1; return l; };
  assert.equal(w.observed, 0);
  assert.equal(w.workingSetPages(), 8, 'before any epoch every page counts');
  w.observe(log(0, 1));
  w.observe(log(1));
  assert.equal(w.observed, 2);
  for (let p = 0; p < 8; p++) assert.equal(w.isCold(p), false, `page ${p} not cold within the first window`);
  assert.equal(w.workingSetPages(), 8);
  w.observe(log(2));
  // Idle ages now: 0:2, 1:1, 2:0, others 3.
  assert.deepEqual(range(0, 8).filter((p) => w.isCold(p)), [3, 4, 5, 6, 7]);
  assert.equal(w.workingSetPages(), 3);
  w.observe(log());
  assert.deepEqual(range(0, 8).filter((p) => w.isCold(p)), [0, 3, 4, 5, 6, 7], 'page 0 idle for the whole window');
  assert.equal(w.workingSetPages(), 2);
  // A touch brings a cold page back at once.
  w.observe(log(5));
  assert.equal(w.isCold(5), false);
  assert.equal(w.workingSetPages(), 2, 'pages 2 and 5 (page 1 is now idle 3 epochs)');
  assert.equal(w.isCold(1), true);
});

test('working set: idle ages saturate instead of wrapping, and the window is validated', () => {
  const w = new WorkingSetTracker(2, 0xfffe);
  const none = new Uint8Array(2);
  for (let i = 0; i < 0x10005; i++) w.observe(none);
  assert.equal(w.isCold(0), true, 'still cold after more epochs than a u16 holds');
  assert.equal(w.workingSetPages(), 0);
  w.observe(Uint8Array.of(1, 0));
  assert.equal(w.isCold(0), false);
  assert.equal(w.isCold(1), true);
  for (const bad of [0, -1, 1.5, 0xffff, Number.NaN]) assert.throws(() => new WorkingSetTracker(4, bad), RangeError, `window ${bad}`);
});

// --- SwapStore -----------------------------------------------------------------------------

test('swap: a fault reads back the whole absent neighbourhood of its cluster, byte for byte', async () => {
  const { m, image, device, swap } = gatedSwap(8 * C);
  // Evict the end of cluster 0, all of cluster 1 but one page that stays resident (and differs
  // from what the device holds at its offset: a read must never overwrite a resident page), and
  // the start of cluster 2.
  const resident = C + 3;
  const evicted = range(C - 4, 2 * C + 5).filter((p) => p !== resident);
  await swap.store(evicted, evict(m, evicted));
  assert.equal(swap.pendingPages, 0, 'durable: nothing pending');
  assert.ok(device.flushes >= 1, 'the store flushed the device');
  assert.equal(swap.stats.pagesWritten, evicted.length);
  for (const p of evicted) assert.ok(same(device.data.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE), pattern(p, 0)), `page ${p} on the device at offset ${p} x 4096`);
  device.data.fill(0xee, resident * PAGE_SIZE, (resident + 1) * PAGE_SIZE);
  const residentData = pattern(resident, 7);
  m.bytes.set(residentData, resident * PAGE_SIZE);
  m.dirtyLog.fill(0);

  await swap.fetch([C + 5]);
  const cluster1 = range(C, 2 * C).filter((p) => p !== resident);
  for (const p of cluster1) {
    assert.equal(m.absent[p], PRESENT, `page ${p} present`);
    assert.ok(same(pageOf(m, p), image.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE)), `page ${p} exact`);
    assert.equal(m.dirtyLog[p], MARK_INSTALLED, `page ${p} marked dirty, as the device's copy`);
  }
  assert.ok(same(pageOf(m, resident), residentData), 'the resident page was left alone');
  assert.equal(m.dirtyLog[resident], 0);
  // The neighbouring clusters stay on the device.
  for (const p of [...range(C - 4, C), ...range(2 * C, 2 * C + 5)]) {
    assert.equal(m.absent[p], ABSENT_SWAP, `page ${p} still absent`);
    assert.ok(pageOf(m, p).every((b) => b === 0));
  }
  assert.deepEqual(swap.stats, { pagesWritten: evicted.length, pagesRead: cluster1.length, reads: 1 });
  assert.deepEqual(device.log.filter((l) => l.startsWith('read')), [`read ${C}+${C}`], 'one read of the cluster');

  // Two faults in two clusters: two reads, trimmed to the absent pages.
  await swap.fetch([C - 3, 2 * C + 4]);
  assert.deepEqual(device.log.filter((l) => l.startsWith('read')).slice(1), [`read ${C - 4}+4`, `read ${2 * C}+5`]);
  assert.deepEqual(markedRuns(m.absent, ABSENT_SWAP), []);
  const expected = image.slice();
  expected.set(residentData, resident * PAGE_SIZE);
  assert.ok(same(m.bytes, expected), 'RAM is the image again');
  assert.equal(swap.stats.pagesRead, evicted.length);
  // A fetch of present pages reads nothing.
  await swap.fetch([C - 3, C + 5, resident]);
  assert.equal(swap.stats.reads, 3);
});

test('swap: a fault while the eviction write is pending is served from memory', async () => {
  const { m, image, device, swap } = gatedSwap(128);
  device.holdWrites();
  const pages = range(10, 20);
  let durable = false;
  const stored = swap.store(pages, evict(m, pages)).then(() => { durable = true; });
  assert.equal(swap.pendingPages, pages.length);
  const fetched = swap.fetch([12, 13]);
  // Installed at once, from the evicted copy (the device does not have it yet).
  for (const p of [12, 13]) {
    assert.equal(m.absent[p], PRESENT);
    assert.ok(same(pageOf(m, p), image.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE)), `page ${p} exact`);
    assert.equal(m.dirtyLog[p], 1);
  }
  assert.equal(m.absent[11], ABSENT_SWAP, 'only the pages asked for come from memory');
  assert.ok(device.data.subarray(10 * PAGE_SIZE, 20 * PAGE_SIZE).every((b) => b === 0), 'nothing reached the device yet');
  await tick();
  assert.equal(durable, false);
  device.releaseWrites();
  await Promise.all([stored, fetched]);
  assert.equal(swap.pendingPages, 0);
  assert.equal(swap.stats.reads, 0, 'no device read was needed');
  // The rest comes from the device now.
  await swap.fetch([10, 19]);
  assert.deepEqual(markedRuns(m.absent, ABSENT_SWAP), []);
  assert.ok(same(m.bytes, image));
});

test('swap: a page evicted again while an older read is queued never comes back stale', async () => {
  const { m, image, device, swap } = gatedSwap(128);
  // Pages 9 and 11 go out; page 10 (same cluster) stays resident, version 0 also on the device.
  await swap.store([9, 10, 11], m.bytes.slice(9 * PAGE_SIZE, 12 * PAGE_SIZE));
  evict(m, [9, 11]);
  device.holdReads();
  const read = swap.fetch([11]); // queued read of 9..11, which will return version 0 of page 10
  await tick();
  assert.deepEqual(device.log.filter((l) => l.startsWith('read')), ['read 9+3']);
  // Meanwhile the guest rewrites page 10 and it is evicted with the new content.
  const v1 = pattern(10, 1);
  m.bytes.set(v1, 10 * PAGE_SIZE);
  const restored = swap.store([10], evict(m, [10]));
  assert.equal(m.absent[10], ABSENT_SWAP);
  device.releaseReads();
  await read;
  assert.equal(m.absent[10], PRESENT, 'the read brought page 10 in with its cluster');
  assert.ok(same(pageOf(m, 10), v1), 'with the newer (pending) content, not the device\'s old copy');
  for (const p of [9, 11]) assert.ok(same(pageOf(m, p), image.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE)), `page ${p} exact`);
  await restored;
  assert.equal(swap.pendingPages, 0);
  assert.ok(same(device.data.subarray(10 * PAGE_SIZE, 11 * PAGE_SIZE), v1), 'the device has the newer copy too');
  // Evicted once more and faulted from the device: still the newer copy.
  await swap.store([10], evict(m, [10]));
  await swap.fetch([10]);
  assert.ok(same(pageOf(m, 10), v1));
});

test('swap: one device operation at a time; a read waits for the write under way', async () => {
  const { m, device, swap } = gatedSwap(64);
  await swap.store([1], evict(m, [1]));
  device.log.length = 0;
  device.holdWrites();
  const a = swap.store([5], evict(m, [5]));
  const b = swap.fetch([1]);
  await tick();
  assert.deepEqual(device.log, ['write 5+1'], 'the fault read waits behind the write before it');
  device.releaseWrites();
  await Promise.all([a, b]);
  assert.deepEqual(device.log, ['write 5+1', 'read 1+5']);
  assert.equal(m.absent[1], PRESENT);
  assert.equal(m.absent[5], PRESENT, 'page 5 was in the cluster read (its write was durable by then)');
});

test('swap: a device smaller than RAM is refused', () => {
  const m = fakeMemory(16);
  assert.throws(() => new SwapStore(new MemoryBlockBackend(15 * PAGE_SIZE), asGuest(m), 'mem://small'),
    (e: unknown) => e instanceof GuestMemoryLostError && e.code === 'GUEST_MEMORY_LOST' && /mem:\/\/small/.test(e.message));
});

// --- PageServer ----------------------------------------------------------------------------

/** A supplier that installs a known pattern for what it is asked, and records the asks. */
class RecordingSupplier implements PageSupplier {
  readonly asked: number[][] = [];
  constructor(private readonly m: FakeMemory, private readonly version: number, private readonly delayMs = 0) {}
  async fetch(pages: readonly number[]): Promise<void> {
    this.asked.push([...pages]);
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    for (const p of pages) installPage(this.m, p, pattern(p, this.version));
  }
}

test('page server: routes each absent page to the supplier of its mark and counts the fault', async () => {
  const m = fakeMemory(32);
  const server = new PageServer(asGuest(m));
  const peer = new RecordingSupplier(m, 1, 3);
  const swap = new RecordingSupplier(m, 2);
  server.attach(ABSENT_PEER, peer);
  server.attach(ABSENT_SWAP, swap);
  m.absent.fill(ABSENT_PEER, 4, 7);
  m.absent[8] = ABSENT_SWAP;
  m.absent[9] = ABSENT_SWAP;
  m.absent[12] = ABSENT_PEER;

  await server.resolve(3, 8); // pages 3..10
  assert.deepEqual(peer.asked, [[4, 5, 6]]);
  assert.deepEqual(swap.asked, [[8, 9]]);
  for (const p of [4, 5, 6]) assert.ok(same(pageOf(m, p), pattern(p, 1)));
  for (const p of [8, 9]) assert.ok(same(pageOf(m, p), pattern(p, 2)));
  assert.equal(m.absent[12], ABSENT_PEER, 'outside the range: untouched');
  assert.equal(server.stats.faults, 1);
  assert.ok(server.stats.stallUsMax >= 1000, `the stall includes the slow supplier: ${server.stats.stallUsMax} us`);
  assert.equal(server.stats.stallUsTotal, server.stats.stallUsMax);

  // Everything present: no supplier asked, no fault counted.
  await server.resolve(0, 11);
  assert.equal(peer.asked.length + swap.asked.length, 2);
  assert.equal(server.stats.faults, 1);

  // A range running past the end of RAM is clipped.
  m.absent[31] = ABSENT_SWAP;
  await server.resolve(30, 100);
  assert.deepEqual(swap.asked.at(-1), [31]);
  assert.equal(server.stats.faults, 2);
  assert.ok(server.stats.stallUsTotal >= server.stats.stallUsMax);

  server.resetStats();
  assert.deepEqual(server.stats, { faults: 0, stallUsTotal: 0, stallUsMax: 0 });
  assert.equal(server.percentiles(), null, 'no fault, no distribution');
});

test('page server: the stalls\' p50 and p99 come from the faults, the longest is exact', async () => {
  const m = fakeMemory(128);
  const server = new PageServer(asGuest(m));
  // 100 faults: 99 fast ones and one that waits 60 ms.
  let slow = false;
  server.attach(ABSENT_PEER, { fetch: async (pages) => {
    if (slow) await new Promise((r) => setTimeout(r, 60));
    for (const p of pages) installPage(m, p, pattern(p, 1));
  } });
  for (let p = 0; p < 100; p++) {
    m.absent[p] = ABSENT_PEER;
    slow = p === 50;
    await server.resolve(p, 1);
  }
  const pct = server.percentiles();
  assert.ok(pct);
  assert.equal(server.stats.faults, 100);
  assert.equal(pct.maxUs, server.stats.stallUsMax);
  assert.ok(pct.maxUs >= 60_000, `the slow fault is the longest (${pct.maxUs} us)`);
  assert.ok(pct.p50Us < pct.maxUs / 10, `the median is a fast fault (${pct.p50Us} us)`);
  assert.ok(pct.p50Us <= pct.p99Us && pct.p99Us <= pct.maxUs);
});

test('page server: an absent page nobody holds fails with GUEST_MEMORY_LOST', async () => {
  const m = fakeMemory(16);
  const server = new PageServer(asGuest(m));
  const swap = new RecordingSupplier(m, 2);
  server.attach(ABSENT_SWAP, swap);
  m.absent[3] = ABSENT_PEER;
  await assert.rejects(server.resolve(3, 1), (e: unknown) => e instanceof GuestMemoryLostError && e.code === 'GUEST_MEMORY_LOST' && /mark 1/.test(e.message));
  assert.equal(server.stats.faults, 0, 'a failed fault is not counted as served');
  assert.equal(m.absent[3], ABSENT_PEER);
  // Detaching a supplier makes its pages unreachable too.
  m.absent[5] = ABSENT_SWAP;
  server.attach(ABSENT_SWAP, undefined);
  await assert.rejects(server.resolve(5, 1), (e: unknown) => e instanceof GuestMemoryLostError);
  assert.equal(swap.asked.length, 0);
  // A supplier's own failure comes through as it is.
  server.attach(ABSENT_SWAP, { fetch: () => Promise.reject(new GuestMemoryLostError('device gone')) });
  await assert.rejects(server.resolve(5, 1), /device gone/);
});

// --- marks and AgileMemory -------------------------------------------------------------------

test('marks: installPage writes the page, marks it dirty and present; counts and runs', () => {
  const m = fakeMemory(16);
  m.absent.fill(ABSENT_PEER, 2, 6);
  m.absent[9] = ABSENT_SWAP;
  assert.equal(countMarked(m, ABSENT_PEER), 4);
  assert.deepEqual(markedRuns(m.absent, ABSENT_PEER), [{ first: 2, count: 4 }]);
  installPage(m, 3, pattern(3, 4));
  assert.ok(same(pageOf(m, 3), pattern(3, 4)));
  assert.equal(m.absent[3], PRESENT);
  assert.equal(m.dirtyLog[3], 1);
  assert.deepEqual(markedRuns(m.absent, ABSENT_PEER), [{ first: 2, count: 1 }, { first: 4, count: 2 }]);
  assert.deepEqual(markedRuns(m.absent, ABSENT_SWAP), [{ first: 9, count: 1 }]);
});

test('agile: cold, non-zero, resident pages go to the swap device and fault back exact', async () => {
  const m = fakeMemory(128);
  fillAll(m);
  m.bytes.fill(0, 40 * PAGE_SIZE, 48 * PAGE_SIZE); // zero pages are never evicted
  const image = m.bytes.slice();
  const device = new MemoryBlockBackend(m.ramSize);
  const swap = new SwapStore(device, asGuest(m), 'mem://swap');
  const hot = new Set(range(0, 16));
  const evictCalls: number[][] = [];
  const port: AgileWorkerPort = {
    harvestAccess: async () => { const l = new Uint8Array(m.pageCount); for (const p of hot) l[p] = 1; return l; },
    evict: (pages, mark) => { evictCalls.push([...pages]); return workerEvict(m, pages, mark); },
  };
  const agile = new AgileMemory(asGuest(m), swap, port, { epochMs: 1000, coldEpochs: 2, maxEvictPerEpoch: 1000 });
  assert.equal(await agile.evictCold(1000), 0, 'nothing is cold before the window has passed');
  for (let i = 0; i < 2; i++) agile.tracker.observe(await port.harvestAccess());
  m.absent[100] = ABSENT_PEER; // already absent: left alone
  const n = await agile.evictCold(1000);
  const want = range(16, 128).filter((p) => (p < 40 || p >= 48) && p !== 100);
  assert.equal(n, want.length);
  assert.deepEqual(evictCalls.flat(), want);
  assert.deepEqual(range(0, 128).filter((p) => m.absent[p] === ABSENT_SWAP), want);
  assert.equal(agile.tracker.workingSetPages(), 16);
  // Limit respected.
  m.absent.fill(PRESENT);
  m.bytes.set(image);
  evictCalls.length = 0;
  assert.equal(await agile.evictCold(10), 10);
  assert.equal(countMarked(m, ABSENT_SWAP), 10);
  // Everything evicted comes back byte for byte.
  m.absent.fill(PRESENT);
  m.bytes.set(image);
  await agile.evictCold(1000);
  await swap.settle();
  const out = range(0, 128).filter((p) => m.absent[p] === ABSENT_SWAP);
  assert.deepEqual(out, [...want, 100].sort((a, b) => a - b));
  assert.ok(m.bytes.subarray(16 * PAGE_SIZE).every((b) => b === 0), 'evicted pages are zeroed in RAM');
  for (const p of out) await swap.fetch([p]);
  assert.equal(countMarked(m, ABSENT_SWAP), 0);
  assert.ok(same(m.bytes, image));
});

test('agile: a page read back from the device and not written since leaves RAM again without a write', async () => {
  const { m, image, device, swap } = gatedSwap(4 * C);
  const port: AgileWorkerPort = { harvestAccess: async () => new Uint8Array(m.pageCount), evict: (pages, mark) => workerEvict(m, pages, mark) };
  const agile = new AgileMemory(asGuest(m), swap, port, { epochMs: 1000, coldEpochs: 1, maxEvictPerEpoch: 1000 });
  agile.tracker.observe(await port.harvestAccess());
  assert.equal(await agile.evictCold(), 4 * C);
  await swap.settle();
  const before = device.log.length;
  await swap.fetch([3]); // cluster 0 comes back from the device
  m.bytes[5 * PAGE_SIZE] ^= 0xff; // and the guest writes page 5
  m.dirtyLog[5] = 1;
  const want = m.bytes.slice(0, C * PAGE_SIZE);
  assert.equal(await agile.evictCold(), C);
  await swap.settle();
  assert.deepEqual(device.log.slice(before), [`read 0+${C}`, 'write 5+1']);
  for (let c = 0; c < 4; c++) await swap.fetch([c * C]);
  assert.ok(same(m.bytes.subarray(0, C * PAGE_SIZE), want));
  assert.ok(same(m.bytes.subarray(C * PAGE_SIZE), image.subarray(C * PAGE_SIZE)));
});

test('swap: a page read from the device is marked installed; one served from a held copy, written', async () => {
  const { m, device, swap } = gatedSwap(128);
  await swap.store([1, 2], evict(m, [1, 2]));
  device.holdWrites();
  const held = swap.store([70], evict(m, [70]));
  await swap.fetch([70]);
  assert.equal(m.dirtyLog[70], 1, 'the held copy may yet fail to reach the device');
  device.releaseWrites();
  await held;
  await swap.fetch([1]);
  assert.equal(m.dirtyLog[1], MARK_INSTALLED);
  assert.equal(m.dirtyLog[2], MARK_INSTALLED, 'read with the cluster');
});

test('agile epochs: none reach the worker while suspended; a failing epoch is reported and cleared by the next', async () => {
  let harvests = 0;
  let failNext = false;
  const { m, swap, agile } = agileRig(64, async () => {
    harvests++;
    if (failNext) { failNext = false; throw new Error('worker gone'); }
    return new Uint8Array(64);
  }, { epochMs: 5, coldEpochs: 2, maxEvictPerEpoch: 1000 });
  const until = async (cond: () => boolean, what: string): Promise<void> => {
    const deadline = Date.now() + 2000;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 2));
    }
  };
  await agile.suspend();
  agile.start();
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(harvests, 0, 'a suspended policy sends the (possibly frozen) worker nothing');
  failNext = true;
  agile.resume();
  await until(() => agile.error !== undefined, 'the failing epoch');
  assert.equal(agile.error, 'worker gone');
  await until(() => agile.error === undefined && countMarked(m, ABSENT_SWAP) === 64, 'recovery and eviction');
  await agile.stop();
  await swap.drain();
});

test('agile: evicted pages touched again soon widen the window (no thrashing), quiet epochs narrow it back', async () => {
  // The guest visits pages 0..511 in turn, 64 per epoch: a reuse distance of 8 epochs, longer
  // than the 2-epoch window, so the window first calls most of its set cold.
  let epochs = 0;
  let visiting = true;
  const { m, swap, agile, epoch } = agileRig(1024, async () => {
    const log = new Uint8Array(1024);
    if (visiting) for (let p = (epochs % 8) * 64; p < (epochs % 8 + 1) * 64; p++) log[p] = 1;
    epochs++;
    return log;
  }, { epochMs: 1, coldEpochs: 2, maxEvictPerEpoch: 100_000 });
  const run = async (n: number): Promise<void> => {
    for (let i = 0; i < n; i++) {
      await epoch();
      // A touched absent page faults back in (what the page server does for the vCPU).
      const touched = range((epochs - 1) % 8 * 64, ((epochs - 1) % 8 + 1) * 64).filter((p) => visiting && m.absent[p] === ABSENT_SWAP);
      if (touched.length > 0) await swap.fetch(touched);
    }
  };
  await run(40);
  assert.ok(agile.refaults > 0, 'the short window evicted pages the guest came back to');
  assert.ok(agile.tracker.windowEpochs >= 8, `window widened past the reuse distance, got ${agile.tracker.windowEpochs}`);
  // Once wide enough, the visited set stays resident while the rest (512..1023) is on the device.
  const refaultsThen = agile.refaults;
  await run(24);
  assert.equal(agile.refaults, refaultsThen, 'no more refaults once the window covers the reuse distance');
  assert.deepEqual(range(512, 1024).filter((p) => m.absent[p] !== ABSENT_SWAP), [], 'the unvisited half is on the swap device');
  // The guest goes quiet: no refaults, and the window narrows back to the configured one.
  visiting = false;
  await run(200);
  assert.equal(agile.tracker.windowEpochs, 2);
  await swap.drain();
});

test('agile: a slowed guest thrashing a small set widens the window though a bulk eviction dwarfs its refaults', async () => {
  // Pages 64.. are never touched (a fill gone cold: one bulk eviction); the guest visits pages
  // 0..63 in turn, 16 per epoch, a reuse distance of 4 epochs against a 2-epoch window. Its
  // refaults are few next to the bulk's evictions per epoch, but they are everything it touches.
  let harvests = 0;
  const { m, swap, agile, epoch } = agileRig(4096, async () => {
    const log = new Uint8Array(4096);
    log.fill(1, (harvests % 4) * 16, (harvests % 4 + 1) * 16);
    harvests++;
    return log;
  }, { epochMs: 1, coldEpochs: 2, maxEvictPerEpoch: 100_000 });
  for (let i = 0; i < 9; i++) {
    await epoch();
    const group = range(((harvests - 1) % 4) * 16, ((harvests - 1) % 4 + 1) * 16);
    await swap.fetch(group.filter((p) => m.absent[p] === ABSENT_SWAP));
  }
  assert.ok(countMarked(m, ABSENT_SWAP) >= 4032, 'the bulk is on the device');
  assert.equal(agile.tracker.windowEpochs, 4, 'widened at the first repeated refaults, within the bulk eviction\'s horizon');
  await swap.drain();
});

test('working set: late reuses are touches after idling half the window or more', () => {
  const t = new WorkingSetTracker(4, 4);
  const log = (...pages: number[]): Uint8Array => { const l = new Uint8Array(4); for (const p of pages) l[p] = 1; return l; };
  assert.equal(t.observe(log(0, 1, 2, 3)), 0);
  assert.equal(t.observe(log(0)), 0); // idle 0
  assert.equal(t.observe(log(0, 1)), 0); // page 1 idle 1 < 2
  assert.equal(t.observe(log(0, 2)), 1); // page 2 idle 2: late
  assert.equal(t.observe(log()), 0);
  assert.equal(t.observe(log()), 0);
  assert.equal(t.observe(log(3)), 0); // page 3 idle 5 >= window: already cold, not a late reuse
  t.windowEpochs = 8;
  assert.equal(t.windowEpochs, 8);
  assert.throws(() => { t.windowEpochs = 0; }, RangeError);
});

test('agile: a one-off touch of every evicted page (freed memory reused, a scan) does not widen the window', async () => {
  let scan = false;
  const { m, swap, agile, epoch } = agileRig(512, async () => new Uint8Array(512).fill(scan ? 1 : 0), { epochMs: 1, coldEpochs: 2, maxEvictPerEpoch: 100_000 });
  for (let i = 0; i < 4; i++) await epoch();
  assert.equal(countMarked(m, ABSENT_SWAP), 512, 'all idle pages evicted');
  scan = true;
  await swap.fetch(range(0, 512));
  await epoch();
  scan = false;
  assert.equal(agile.refaults, 512, 'every page refaulted once');
  assert.equal(agile.tracker.windowEpochs, 2, 'a first refault does not widen the window');
  await swap.drain();
});

test('swap: stores whose writes finish before a queued flush starts share that one flush', async () => {
  const { m, image, device, swap } = gatedSwap(256);
  device.holdWrites();
  const stores = [range(0, 64), range(64, 128), range(128, 192)].map((pages) => swap.store(pages, evict(m, pages)));
  await tick();
  device.releaseWrites();
  await Promise.all(stores);
  assert.equal(device.flushes, 1, 'one flush made all three durable');
  assert.equal(swap.pendingPages, 0);
  // A store after that flush gets its own.
  await swap.store([200], evict(m, [200]));
  assert.equal(device.flushes, 2);
  await swap.fetch(range(0, 256));
  assert.ok(same(m.bytes, image));
});

test('swap: drain waits for the flush of every store before it', async () => {
  const { m, device, swap } = gatedSwap(64);
  device.holdWrites();
  void swap.store([3, 4], evict(m, [3, 4]));
  const drained = swap.drain();
  await tick();
  device.releaseWrites();
  await drained;
  assert.equal(device.flushes, 1, 'the store was flushed before drain resolved');
  assert.equal(swap.pendingPages, 0);
});

test('swap: a fault read goes ahead of queued eviction writes, and still never returns a stale page', async () => {
  const { m, image, device, swap } = gatedSwap(256);
  // Version 0 of pages 0..63 is on the device; pages 0..3 are absent.
  await swap.store(range(0, 64), m.bytes.slice(0, 64 * PAGE_SIZE));
  evict(m, range(0, 4));
  device.log.length = 0;
  device.holdWrites();
  const a = swap.store(range(128, 192), evict(m, range(128, 192))); // under way (held)
  await tick();
  // Page 5 is rewritten and evicted: its write queues behind `a`, the device keeps version 0.
  m.bytes.set(pattern(5, 1), 5 * PAGE_SIZE);
  const b = swap.store([5], evict(m, [5]));
  const fault = swap.fetch([2]);
  await tick();
  device.releaseWrites();
  await Promise.all([a, b, fault]);
  assert.deepEqual(device.log, ['write 128+64', 'read 0+6', 'write 5+1'], 'the read passed the queued write');
  for (const p of [0, 1, 2, 3]) assert.ok(same(pageOf(m, p), image.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE)), `page ${p} exact`);
  assert.ok(same(pageOf(m, 5), pattern(5, 1)), 'page 5 came from pending, not the device\'s older copy');
});

test('swap: settle waits for every store, writes again the pages of a failed one, and they read back exact', async () => {
  const { m, image, device, swap } = gatedSwap(128);
  device.failWrites = 1;
  const failed = swap.store(range(0, 16), evict(m, range(0, 16)));
  await assert.rejects(failed, /EIO/);
  device.holdWrites();
  const ok = swap.store(range(32, 48), evict(m, range(32, 48)));
  // Page 5 came back into RAM meanwhile: it needs no second write.
  await swap.fetch([5]);
  assert.equal(m.absent[5], PRESENT);
  let settled = false;
  const settling = swap.settle().then(() => { settled = true; });
  await tick();
  assert.equal(settled, false, 'a store under way is waited for');
  device.releaseWrites();
  await Promise.all([ok, settling]);
  assert.equal(swap.pendingPages, 0, 'every evicted page is durable on the device');
  assert.ok(device.log.includes('write 0+5') && device.log.includes('write 6+10'), `the failed store's pages still out of RAM were written again: ${device.log.join(', ')}`);
  // Read from the device, not from memory: a new store over the same device holds nothing pending.
  const fresh = new SwapStore(device, asGuest(m), 'mem://swap');
  await fresh.fetch(range(0, 128));
  assert.ok(same(m.bytes, image));
});

test('swap: settle rejects when the second write fails too, and the pages stay held', async () => {
  const { m, device, swap } = gatedSwap(64);
  device.failWrites = 2;
  await assert.rejects(swap.store([1, 2], evict(m, [1, 2])), /EIO/);
  await assert.rejects(swap.settle(), /EIO/);
  assert.equal(swap.pendingPages, 2, 'still served from memory');
  await swap.settle();
  assert.equal(swap.pendingPages, 0);
});

test("agile: suspend waits for an epoch's requests to the worker, not for its writes", async () => {
  const device = new GatedBackend(64 * PAGE_SIZE);
  const m = fakeMemory(64);
  fillAll(m);
  const swap = new SwapStore(device, asGuest(m), 'mem://swap');
  let evictions = 0;
  const port: AgileWorkerPort = {
    harvestAccess: async () => new Uint8Array(64),
    evict: (pages, mark) => { evictions++; return workerEvict(m, pages, mark); },
  };
  const agile = new AgileMemory(asGuest(m), swap, port, { epochMs: 1, coldEpochs: 1, maxEvictPerEpoch: 1000 });
  device.holdWrites();
  agile.start();
  const deadline = Date.now() + 2000;
  while (evictions === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 1));
  assert.equal(evictions, 1, 'an epoch evicted');
  await agile.suspend();
  assert.equal(swap.pendingPages, 64, "suspended while the epoch's writes are still held");
  let settled = false;
  const settling = swap.settle().then(() => { settled = true; });
  await tick();
  assert.equal(settled, false);
  device.releaseWrites();
  await settling;
  assert.equal(swap.pendingPages, 0);
  await agile.stop();
});
