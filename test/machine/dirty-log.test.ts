// The dirty log: "a guest program that writes N known pages makes exactly those pages appear
// in the dirty log after a clear". test/guest-bare/dirty-log.c serves store/load commands
// from a mailbox page without touching any other RAM, so the expected sets are exact. The
// machine is driven slice by slice through its vCPU (not Machine.run), and the host writes
// the mailbox between slices.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { Machine } from '../../src/machine/boot/machine.js';
import { buildBare } from '../support/bare.js';
import { MARK_INSTALLED, installPage } from '../../src/vm/paging/marks.js';

const RAM_BASE = 0x8000_0000n;
const MBOX = 0x8070_0000n;
const BUF = 0x8080_0000n;
const ALIAS = 0x4000_0000n;
const PAGE = 4096n;
const OP_STORE = 0n, OP_STORE_ALIAS = 1n, OP_LOAD = 2n;

/** Guest-physical page index (relative to RAM_BASE) of an address. */
const pageOf = (pa: bigint): number => Number((pa - RAM_BASE) / PAGE);

class Guest {
  readonly m: Machine;
  private out = '';
  private seq = 0n;
  constructor(elf: Uint8Array) {
    this.m = new Machine({
      ramBytes: 64 << 20,
      console: { write: (b: Uint8Array) => { this.out += Buffer.from(b).toString('latin1'); }, onInput() {} },
      boot: { kind: 'bare', elf },
    });
  }
  /** Runs slices until the console output satisfies `done`. */
  runUntil(done: (out: string) => boolean, what: string): void {
    for (let i = 0; i < 2000 && !done(this.out); i++) this.m.vcpu.run(10_000);
    assert.ok(done(this.out), `guest never reached: ${what}; output so far: ${JSON.stringify(this.out)}`);
  }
  /** Writes a command to the mailbox (the sequence word last). */
  post(op: bigint, base: bigint, count: number, stride: bigint): void {
    const mem = this.m.memory;
    mem.writeU64(MBOX + 8n, op);
    mem.writeU64(MBOX + 16n, base);
    mem.writeU64(MBOX + 24n, BigInt(count));
    mem.writeU64(MBOX + 32n, stride);
    mem.writeU64(MBOX, ++this.seq);
  }
  /** Runs a posted command to completion (the guest prints '!' when done). */
  complete(): void {
    const want = (this.out.match(/!/g) ?? []).length + 1;
    this.runUntil((o) => (o.match(/!/g) ?? []).length >= want, `command ${this.seq}`);
  }
  clearDirty(): void { this.m.harvestDirtyLog(); }
  clearAccess(): void { this.m.harvestAccessLog(); }
  dirtyPages(): number[] { return marked(this.m.memory.dirtyLog); }
  accessedPages(): number[] { return marked(this.m.memory.accessLog); }
}

function marked(log: Uint8Array): number[] {
  const out: number[] = [];
  log.forEach((v, i) => { if (v !== 0) out.push(i); });
  return out;
}

let elf: Uint8Array;
before(() => { elf = new Uint8Array(readFileSync(buildBare(['dirty-log.c'], 'dirty-log'))); });

function readyGuest(): Guest {
  const g = new Guest(elf);
  g.runUntil((o) => o.includes('ready\n'), 'ready');
  return g;
}

test('stores to N pages mark exactly those pages, and a clear re-arms tracking', () => {
  const g = readyGuest();
  const pages = [0, 1, 2, 5, 8, 13, 15].map((i) => BUF + BigInt(i) * PAGE);
  for (let round = 0; round < 3; round++) {
    g.clearDirty();
    assert.deepEqual(g.dirtyPages(), [], 'log empty after clear');
    // One command per page. Posting writes the mailbox through GuestMemory, which marks
    // the mailbox page: it is the one page expected besides the guest's stores.
    for (const [k, pa] of pages.entries()) {
      g.post(OP_STORE, pa + 8n * BigInt(round), 1, PAGE);
      g.complete();
      assert.equal(g.m.memory.readU64(pa + 8n * BigInt(round)), BigInt(round * pages.length + k + 1));
    }
    const want = [...pages.map(pageOf), pageOf(MBOX)].sort((a, b) => a - b);
    assert.deepEqual(g.dirtyPages(), want, `round ${round}`);
  }
});

test('one command storing to 16 consecutive pages marks exactly 16 pages, twice', () => {
  const g = readyGuest();
  for (let round = 0; round < 2; round++) {
    g.post(OP_STORE, BUF + 16n * BigInt(round), 16, PAGE);
    g.clearDirty();
    g.complete();
    assert.deepEqual(g.dirtyPages(), Array.from({ length: 16 }, (_, i) => pageOf(BUF) + i), `round ${round}`);
  }
  // Stride of two pages: every other page.
  g.post(OP_STORE, BUF + PAGE, 7, 2n * PAGE);
  g.clearDirty();
  g.complete();
  assert.deepEqual(g.dirtyPages(), [1, 3, 5, 7, 9, 11, 13].map((i) => pageOf(BUF) + i));
});

test('stores through a virtual alias mark the guest-physical pages', () => {
  const g = readyGuest();
  // VA page i maps to PA page (5 i) mod 16 of BUF.
  for (let round = 0; round < 2; round++) {
    g.post(OP_STORE_ALIAS, ALIAS + 24n, 4, PAGE); // VA pages 0..3 -> PA pages 0, 5, 10, 15
    g.clearDirty();
    g.complete();
    assert.deepEqual(g.dirtyPages(), [0, 5, 10, 15].map((i) => pageOf(BUF) + i), `round ${round}`);
    assert.equal(g.m.memory.readU64(BUF + 10n * PAGE + 24n), BigInt(round + 1));
  }
  g.post(OP_STORE_ALIAS, ALIAS + 4n * PAGE, 3, PAGE); // VA pages 4..6 -> PA pages 4, 9, 14
  g.clearDirty();
  g.complete();
  assert.deepEqual(g.dirtyPages(), [4, 9, 14].map((i) => pageOf(BUF) + i));
});

test('loads mark the access log but not the dirty log', () => {
  const g = readyGuest();
  g.post(OP_LOAD, BUF + 3n * PAGE, 4, 3n * PAGE); // pages 3, 6, 9, 12
  g.clearDirty();
  g.clearAccess();
  g.complete();
  assert.deepEqual(g.dirtyPages(), []);
  const inBuf = g.accessedPages().filter((p) => p >= pageOf(BUF) && p < pageOf(BUF) + 16);
  assert.deepEqual(inBuf, [3, 6, 9, 12].map((i) => pageOf(BUF) + i));
  // Beyond the buffer only the mailbox page and the loop's code were touched.
  const others = g.accessedPages().filter((p) => p < pageOf(BUF) || p >= pageOf(BUF) + 16);
  assert.ok(others.includes(pageOf(MBOX)), 'mailbox page accessed');
  assert.ok(others.every((p) => p === pageOf(MBOX) || p < 16), `unexpected accessed pages ${others.join(',')}`);
  // Stores mark the access log too.
  g.post(OP_STORE, BUF + 2n * PAGE, 1, PAGE);
  g.clearAccess();
  g.complete();
  assert.ok(g.accessedPages().includes(pageOf(BUF) + 2));
});

test('host-side writes through GuestMemory mark both logs', () => {
  const g = readyGuest();
  g.clearDirty();
  g.clearAccess();
  g.m.memory.write(BUF + 5n * PAGE - 2n, new Uint8Array(4)); // straddles pages 4 and 5
  g.m.memory.writeU32(BUF + 11n * PAGE, 7);
  g.m.memory.fill(BUF + 14n * PAGE, 8192, 0xaa);               // pages 14 and 15
  const want = [4, 5, 11, 14, 15].map((i) => pageOf(BUF) + i);
  assert.deepEqual(g.dirtyPages(), want);
  assert.deepEqual(g.accessedPages(), want);
  // And a guest store to a page the host already marked keeps it marked exactly once.
  g.post(OP_STORE, BUF + 11n * PAGE, 1, PAGE);
  g.clearDirty();
  g.complete();
  assert.deepEqual(g.dirtyPages(), [pageOf(BUF) + 11]);
});

test('an installed page leaves RAM without data until a store, a DMA write or a later harvest says it changed', () => {
  const g = readyGuest();
  const m = g.m;
  const page = pageOf(BUF) + 3;
  const SWAP = 2;
  const evictAndInstall = (): { pages: readonly number[]; unchanged: readonly number[] } => {
    const r = m.evictPages([page], SWAP);
    assert.equal(m.memory.absent[page], SWAP);
    installPage(m.memory, page, r.pages.length > 0 ? r.data : content, MARK_INSTALLED);
    return { pages: r.pages, unchanged: r.unchanged };
  };
  g.clearDirty();
  g.post(OP_STORE, BUF + 3n * PAGE, 1, PAGE);
  g.complete();
  const content = m.memory.bytes.slice(page * 4096, (page + 1) * 4096);
  assert.deepEqual(evictAndInstall(), { pages: [page], unchanged: [] }, 'written by the guest: the data goes out');
  assert.deepEqual(evictAndInstall(), { pages: [], unchanged: [page] }, 'installed, not harvested yet');
  assert.equal(m.harvestDirtyLog()[page], 1, 'a harvest reports an installed page as changed');
  assert.deepEqual(evictAndInstall(), { pages: [], unchanged: [page] }, 'installed, harvested');
  g.post(OP_STORE, BUF + 3n * PAGE, 1, PAGE);
  g.complete();
  assert.deepEqual(evictAndInstall(), { pages: [page], unchanged: [] }, 'a guest store since the install');
  g.post(OP_STORE, BUF + 3n * PAGE, 1, PAGE);
  g.complete();
  m.harvestDirtyLog();
  assert.equal(m.memory.dirtyLog[page], 0);
  assert.equal(evictAndInstall().pages.length, 1, 'a store a harvest has already taken');
  m.harvestDirtyLog();
  m.memory.writeU32(BUF + 3n * PAGE + 16n, 7);
  assert.equal(evictAndInstall().pages.length, 1, 'a DMA write since the install');
  assert.equal(m.memory.readU32(BUF + 3n * PAGE + 16n), 7);
});

test('marks another thread makes while the log is harvested all land in some harvest', async () => {
  // The VM's main thread installs pages faulted in (swap device, post-copy source) and marks
  // them dirty while the worker harvests. A copy-then-clear lost the marks that fell between.
  const m = new Machine({ ramBytes: 64 << 20, console: { write() {}, onInput() {} }, boot: { kind: 'incoming' } });
  const log = m.memory.dirtyLog;
  assert.ok(log.buffer instanceof SharedArrayBuffer, 'the log is shared memory');
  const control = new Int32Array(new SharedArrayBuffer(4));
  const marker = new Worker(`
    const { workerData: { buffer, offset, pages, control } } = require('node:worker_threads');
    const log = new Uint8Array(buffer, offset, pages);
    const ctl = new Int32Array(control);
    for (let p = 0; p < pages; p++) {
      Atomics.store(log, p, 1);
      for (const until = performance.now() + 0.005; performance.now() < until;);
    }
    Atomics.store(ctl, 0, 1);
  `, { eval: true, workerData: { buffer: log.buffer, offset: log.byteOffset, pages: log.length, control: control.buffer } });
  const exited = new Promise<number>((resolve) => marker.once('exit', resolve));
  await new Promise<void>((resolve) => marker.once('online', () => resolve()));
  const seen = new Uint8Array(log.length);
  let harvests = 0;
  const deadline = performance.now() + 60_000;
  while (Atomics.load(control, 0) === 0 && performance.now() < deadline) {
    m.harvestDirtyLog().forEach((v, p) => { if (v !== 0) seen[p] = 1; });
    harvests++;
  }
  assert.equal(await exited, 0, 'the marking thread ran to its end');
  m.harvestDirtyLog().forEach((v, p) => { if (v !== 0) seen[p] = 1; });
  assert.ok(harvests > 10, `harvests overlapped the marking (${harvests})`);
  assert.deepEqual(marked(seen).length, log.length, `every page marked once is in some harvest (${log.length - marked(seen).length} lost over ${harvests} harvests)`);
});
