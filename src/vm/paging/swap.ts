// The VM's swap device (Agile): a block device on shared storage, page N at offset N x 4096.
// Evicted pages are kept in `pending` until their write is durable, so a fault in between is
// served from there. The device does one operation at a time, and a fault's read goes ahead of
// every queued eviction write: a vCPU stalls on the read, while eviction is background work
// that can be seconds of writes on a slow link (a writer whose faults queued behind that
// backlog stopped dead). Jumping the queue cannot return a stale page: a write that has not
// started has its pages still in `pending`, and the read's result is installed before the next
// operation starts, with `pending` winning over the device's copy. Faults read around the page
// (a small cluster of neighbours still on the device), as Linux's swap readahead: one round
// trip brings a run of cold pages back.

import type { BlockBackend } from '../../storage/backend.js';
import type { GuestMemory } from '../../machine/memory/guest-memory.js';
import { GuestMemoryLostError } from '../../machine/memory/errors.js';
import { ABSENT_SWAP, MARK_INSTALLED, PAGE_SIZE, installPage, pageRuns } from './marks.js';
import type { PageSupplier } from './page-server.js';

/** Pages read per fault around the faulting page (32 KiB, Linux's default page-cluster of 3).
 * A fault stalls the vCPU for the whole read: with 64 pages a refault cost ~10 ms on a
 * 200 Mbit/s link, and a writer whose hot pages were evicted now and then slowed to a tenth
 * of its speed (each refault made it slower, which let more of its pages go cold). */
export const CLUSTER_PAGES = 8;
/** Largest single write of evicted pages. */
const MAX_WRITE_PAGES = 256;

export interface SwapStats {
  pagesWritten: number;
  pagesRead: number;
  reads: number;
}

export class SwapStore implements PageSupplier {
  private readonly pending = new Map<number, Uint8Array>();
  /** Operations waiting for the device: fault reads first, then writes and flushes in order. */
  private readonly reads: (() => void)[] = [];
  private readonly writes: (() => void)[] = [];
  private busy = false;
  /** A flush queued behind the I/O but not started yet: stores whose writes are done join it. */
  private nextFlush: Promise<void> | undefined;
  /** Stores not yet durable (their flush is queued only once their writes are done). */
  private readonly unsettled = new Set<Promise<void>>();
  readonly stats: SwapStats = { pagesWritten: 0, pagesRead: 0, reads: 0 };

  constructor(private readonly device: BlockBackend, private readonly mem: GuestMemory, readonly identity: string) {
    if (device.size < mem.ramSize) {
      throw new GuestMemoryLostError(`swap device ${identity} holds ${device.size} bytes, the VM has ${mem.ramSize} of RAM`);
    }
  }

  /** Pages evicted but not yet durable on the device: lost with this host. */
  get pendingPages(): number { return this.pending.size; }

  /** Takes evicted pages (ascending) and writes them; resolves once they are durable. */
  store(pages: readonly number[], data: Uint8Array): Promise<void> {
    const chunks = pages.map((p, i) => data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
    pages.forEach((p, i) => this.pending.set(p, chunks[i]!));
    // Runs one after another. A migration's swap-out does not wait for these writes (they
    // overlap its first round), and faster eviction passes shorten the policy's window in
    // wall time (see DESIGN.md).
    const written = this.enqueue(false, async () => {
      let at = 0;
      for (const run of pageRuns(pages, MAX_WRITE_PAGES)) {
        await this.device.write(run.first * PAGE_SIZE, data.subarray(at * PAGE_SIZE, (at + run.count) * PAGE_SIZE));
        at += run.count;
      }
    });
    const durable = written.then(() => this.flushAfterWrites()).then(() => {
      this.stats.pagesWritten += pages.length;
      // Only if not evicted again meanwhile with newer content.
      pages.forEach((p, i) => { if (this.pending.get(p) === chunks[i]) this.pending.delete(p); });
    });
    this.unsettled.add(durable);
    void durable.then(() => this.unsettled.delete(durable), () => this.unsettled.delete(durable));
    return durable;
  }

  /**
   * Group commit: one flush covers every write completed before it starts. Called once a
   * store's writes are done, so a flush still waiting in the queue runs after them and may be
   * shared; one already started may not have covered them, and a new one is queued.
   */
  private flushAfterWrites(): Promise<void> {
    if (this.nextFlush) return this.nextFlush;
    const flush = this.enqueue(false, async () => {
      this.nextFlush = undefined;
      await this.device.flush();
    });
    this.nextFlush = flush;
    return flush;
  }

  /**
   * Resolves once every page evicted so far is durable on the device, as a destination sent to
   * read them there needs: waits for the stores under way, then writes again the pages of any
   * that failed and are still out of RAM (those back in RAM need no copy here). Rejects if
   * that write fails too.
   */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.unsettled]);
    for (const p of this.pending.keys()) if (this.mem.absent[p] !== ABSENT_SWAP) this.pending.delete(p);
    const pages = [...this.pending.keys()].sort((a, b) => a - b);
    if (pages.length === 0) return;
    const data = new Uint8Array(pages.length * PAGE_SIZE);
    pages.forEach((p, i) => data.set(this.pending.get(p)!, i * PAGE_SIZE));
    await this.store(pages, data);
  }

  /** Waits for every store so far to be durable (or failed: its pages stay in `pending`). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.unsettled]);
    await this.enqueue(false, async () => undefined);
  }

  async fetch(pages: readonly number[]): Promise<void> {
    const mem = this.mem;
    const fromDevice: number[] = [];
    for (const p of pages) {
      const held = this.pending.get(p);
      if (held && mem.absent[p] === ABSENT_SWAP) installPage(mem, p, held);
      else if (mem.absent[p] === ABSENT_SWAP) fromDevice.push(p);
    }
    const clusters = new Set(fromDevice.map((p) => Math.floor(p / CLUSTER_PAGES)));
    // All served from `pending`: no need to wait behind the writes.
    if (clusters.size === 0) return;
    await Promise.all([...clusters].map((c) => this.enqueue(true, () => this.readCluster(c))));
  }

  private async readCluster(cluster: number): Promise<void> {
    const mem = this.mem;
    let first = cluster * CLUSTER_PAGES;
    let end = Math.min(first + CLUSTER_PAGES, mem.pageCount);
    while (first < end && mem.absent[first] !== ABSENT_SWAP) first++;
    while (end > first && mem.absent[end - 1] !== ABSENT_SWAP) end--;
    if (first === end) return;
    const data = await this.device.read(first * PAGE_SIZE, (end - first) * PAGE_SIZE);
    this.stats.reads++;
    for (let p = first; p < end; p++) {
      if (mem.absent[p] !== ABSENT_SWAP) continue;
      // Evicted again while the read was queued: the newer copy is the pending one.
      const held = this.pending.get(p);
      // Only the device's own copy makes a later eviction free: a held one may yet fail to land.
      if (held) installPage(mem, p, held);
      else installPage(mem, p, data.subarray((p - first) * PAGE_SIZE, (p - first + 1) * PAGE_SIZE), MARK_INSTALLED);
      this.stats.pagesRead++;
    }
  }

  /** Runs `op` when the device is free: queued fault reads before queued writes. */
  private enqueue<T>(read: boolean, op: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      (read ? this.reads : this.writes).push(() => {
        op().then(resolve, reject).finally(() => {
          this.busy = false;
          this.startNext();
        });
      });
      this.startNext();
    });
  }

  private startNext(): void {
    if (this.busy) return;
    const start = this.reads.shift() ?? this.writes.shift();
    if (!start) return;
    this.busy = true;
    start();
  }

  close(): Promise<void> {
    return this.device.close();
  }
}
