// Agile memory management (Deshpande et al.): track the VM's working set from the access log
// and keep cold pages on its swap device instead of in host memory. The VM keeps running; a
// touch faults a page back in. A migration then moves only what is resident, and the
// destination faults cold pages from the same device.

import type { GuestMemory } from '../../machine/memory/guest-memory.js';
import type { Eviction } from '../../machine/boot/machine.js';
import { ZeroPages } from '../../machine/memory/zero-pages.js';
import { WorkingSetTracker } from './working-set.js';
import { ABSENT_SWAP } from './marks.js';
import type { SwapStore } from './swap.js';

export interface AgileOptions {
  /** How often the access log is harvested. */
  readonly epochMs: number;
  /** Epochs untouched before a page counts as cold. */
  readonly coldEpochs: number;
  /** Pages evicted per epoch at most, so eviction never floods the storage link. */
  readonly maxEvictPerEpoch: number;
}

export const DEFAULT_AGILE_OPTIONS: AgileOptions = { epochMs: 1000, coldEpochs: 5, maxEvictPerEpoch: 32768 };

/** What the policy needs from the VM's worker. */
export interface AgileWorkerPort {
  harvestAccess(): Promise<Uint8Array>;
  /** Out of RAM (Machine.evictPages): what to store, and the pages the device already holds as
   * they are (read back from it and not written since). */
  evict(pages: readonly number[], mark: number): Promise<Eviction>;
}

/** One harvest's view of the pages the policy evicted. */
interface RefaultCounts {
  /** Pages the guest touched, evicted or not. */
  readonly touched: number;
  /** Evicted pages it touched within the horizon. */
  readonly all: number;
  /** Those whose second or later refault this is, evicted under the current window. */
  readonly repeated: number;
}

/** How one eviction pass goes at the device. */
interface EvictPacing {
  /** Pages per worker request (and per store). */
  readonly batchPages: number;
  /** Stores not yet durable before the pass waits for the oldest. */
  readonly aheadBatches: number;
  /** Ends the pass at its next batch once a migration suspends the policy. */
  readonly stopWhenSuspended: boolean;
}
/** An epoch's: small batches at most two ahead of the device, so a migration's suspend waits
 * for little. */
const EPOCH_PACING: EvictPacing = { batchPages: 256, aheadBatches: 2, stopWhenSuspended: true };
/** A migration's swap-out, which the migration waits for at the switch: few worker round trips,
 * and one flush shared by many stores (still bounded, as every store's pages are held until
 * durable). */
const URGENT_PACING: EvictPacing = { batchPages: 1024, aheadBatches: 16, stopWhenSuspended: false };
/** A page touched within this many windows of its eviction was evicted wrongly: a refault. */
const REFAULT_HORIZON_WINDOWS = 4;
/** Repeated refaults in one epoch that widen the window: at least this many, and thrashing. */
const REFAULT_MIN = 16;
/** Thrashing: the repeated refaults are at least a quarter of the pages evicted per epoch over
 * the horizon (the guest takes back about as much as the policy evicts), or all refaults are at
 * least a quarter of the pages the guest touched (much of what it uses comes from the device).
 * The second holds when a guest slowed by its faults touches fewer pages than a bulk eviction
 * earlier in the horizon (a fill gone cold) made the first ask for. */
const REFAULT_SHARE_INV = 4;
/** The widest the window grows (epochs). */
const MAX_WINDOW_EPOCHS = 128;

export class AgileMemory {
  readonly tracker: WorkingSetTracker;
  private readonly zero: ZeroPages;
  private timer: NodeJS.Timeout | undefined;
  /** The epoch under way, to its writes' durability. */
  private tick: Promise<void> = Promise.resolve();
  /** The part of the epoch under way that sends the worker requests (its writes go on after). */
  private talking: Promise<void> = Promise.resolve();
  private suspended = 0;
  private stopped = false;
  private lastError: string | undefined;
  /** Per page: 1 + the epoch this policy evicted it in; 0 when not being watched for a refault. */
  private readonly evictedAt: Uint32Array;
  /** Per page: 1 once it has refaulted. Only a page's second and later refaults say the window
   * is too narrow: a first one is as often a one-off (the guest reusing freed memory, a scan). */
  private readonly refaultedOnce: Uint8Array;
  /** Pages evicted per epoch, newest last, over the refault horizon. */
  private readonly evictedPerEpoch: number[] = [];
  private quietEpochs = 0;
  private refaultCount = 0;
  /** Stamp (as in evictedAt) of the last widening: only pages evicted under the current window
   * say whether it is still too narrow. */
  private widenedStamp = 0;

  constructor(private readonly mem: GuestMemory, private readonly swap: SwapStore, private readonly port: AgileWorkerPort,
    readonly options: AgileOptions = DEFAULT_AGILE_OPTIONS) {
    this.tracker = new WorkingSetTracker(mem.pageCount, options.coldEpochs);
    this.zero = new ZeroPages(mem.bytes);
    this.evictedAt = new Uint32Array(mem.pageCount);
    this.refaultedOnce = new Uint8Array(mem.pageCount);
  }

  /** Evicted pages the guest touched again within the refault horizon, since start. */
  get refaults(): number { return this.refaultCount; }

  /** Why the last epoch failed (e.g. the swap device is unreachable); cleared by the next good one. */
  get error(): string | undefined { return this.lastError; }

  start(): void {
    if (this.timer || this.stopped) return;
    const loop = (): void => {
      let quiet!: () => void;
      this.talking = new Promise((resolve) => { quiet = resolve; });
      this.tick = this.epoch(quiet)
        .catch((e: unknown) => { this.lastError = e instanceof Error ? e.message : String(e); })
        .finally(quiet);
      void this.tick.then(() => { if (!this.stopped) this.timer = setTimeout(loop, this.options.epochMs); });
    };
    this.timer = setTimeout(loop, this.options.epochMs);
  }

  stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    return this.tick;
  }

  /** No eviction until resume() (a migration reads RAM and may freeze the worker); waits for
   * an epoch's requests to the worker, not for its writes (SwapStore.settle covers those). */
  async suspend(): Promise<void> {
    this.suspended++;
    await this.talking;
  }

  resume(): void {
    this.suspended = Math.max(0, this.suspended - 1);
  }

  /** A migration's swap-out: up to `limit` (default all) cold, non-zero, resident pages leave RAM
   * now; returns how many went. Their writes go on and overlap the migration's first round (a
   * fault meanwhile is served from the pages still held here); SwapStore.settle says when the
   * device holds them. (The policy's own epochs are paced by EPOCH_PACING and stop early when a
   * migration suspends them: on a slow link a full epoch of writes takes seconds.) */
  async evictCold(limit = Number.MAX_SAFE_INTEGER): Promise<number> {
    const pass = await this.evictPass(limit, URGENT_PACING);
    return pass.evicted;
  }

  private async evictPass(limit: number, pacing: EvictPacing): Promise<{ readonly evicted: number; readonly durable: Promise<void> }> {
    const mem = this.mem;
    let batch: number[] = [];
    let evicted = 0;
    // Writes of one batch overlap the worker's eviction of the next; the flushes are shared.
    const stores: Promise<void>[] = [];
    const flush = async (): Promise<void> => {
      if (batch.length === 0) return;
      const r = await this.port.evict(batch, ABSENT_SWAP);
      batch = [];
      evicted += r.pages.length + r.unchanged.length;
      const stamp = this.tracker.observed + 1;
      for (const p of r.pages) this.evictedAt[p] = stamp;
      for (const p of r.unchanged) this.evictedAt[p] = stamp;
      if (r.pages.length === 0) return;
      const stored = this.swap.store(r.pages, r.data);
      stored.catch(() => undefined); // part of the pass's `durable`
      stores.push(stored);
      if (stores.length >= pacing.aheadBatches) await stores[stores.length - pacing.aheadBatches];
    };
    for (let p = 0; p < mem.pageCount && evicted + batch.length < limit; p++) {
      if (pacing.stopWhenSuspended && this.suspended > 0) break;
      if (mem.absent[p] !== 0 || !this.tracker.isCold(p) || this.zero.isZero(p)) continue;
      batch.push(p);
      if (batch.length === pacing.batchPages) await flush();
    }
    await flush();
    const durable = Promise.all(stores).then(() => undefined);
    durable.catch(() => undefined); // the caller's to await
    return { evicted, durable };
  }

  /** One epoch; calls `quiet` once it sends the worker no more requests. */
  private async epoch(quiet: () => void = () => undefined): Promise<void> {
    // While suspended the VM may be frozen for a migration's switch: a worker request would queue
    // behind the freeze. The access log keeps accumulating, so the next epoch loses nothing but
    // resolution (pages touched meanwhile count as touched in that one epoch).
    if (this.suspended > 0 || this.stopped) return;
    const log = await this.port.harvestAccess();
    const lateReuses = this.tracker.observe(log);
    const widened = this.adaptWindow(this.countRefaults(log), lateReuses);
    let evicted = 0;
    if (!widened && this.suspended === 0 && !this.stopped) {
      const pass = await this.evictPass(this.options.maxEvictPerEpoch, EPOCH_PACING);
      quiet();
      // The next epoch starts only once these writes are durable, so a slow device never
      // builds a backlog.
      await pass.durable;
      evicted = pass.evicted;
    }
    this.evictedPerEpoch.push(evicted);
    while (this.evictedPerEpoch.length > this.horizon()) this.evictedPerEpoch.shift();
    this.lastError = undefined;
  }

  private horizon(): number { return this.tracker.windowEpochs * REFAULT_HORIZON_WINDOWS; }

  /** What the guest touched this epoch: every page, and the watched (evicted) ones, each counted
   * once; forgets the watched pages past the horizon. */
  private countRefaults(log: Uint8Array): RefaultCounts {
    const now = this.tracker.observed;
    const horizon = this.horizon();
    const at = this.evictedAt;
    let touched = 0;
    let all = 0;
    let repeated = 0;
    for (let p = 0; p < at.length; p++) {
      const stamp = at[p]!;
      if (log[p] === 0) {
        if (stamp !== 0 && now - stamp >= horizon) at[p] = 0;
        continue;
      }
      touched++;
      if (stamp === 0) continue;
      all++;
      if (stamp > this.widenedStamp && this.refaultedOnce[p] !== 0) repeated++;
      this.refaultedOnce[p] = 1;
      at[p] = 0;
    }
    this.refaultCount += all;
    return { touched, all, repeated };
  }

  /**
   * Linux's refault idea at page granularity: an evicted page touched again soon means the window
   * was shorter than the guest's reuse distance, and evicting more would thrash (a writer that
   * visits its hot set more slowly than the window loses it to the swap device and then runs
   * at the device's speed). Doubles the window on a burst of repeated refaults (a page's second
   * or later) of pages evicted under it while thrashing (REFAULT_SHARE_INV). Halves it back
   * towards the configured one only after two windows with neither repeated refaults nor late
   * reuses (which a narrower window would turn into refaults: no oscillation). Returns whether
   * it widened.
   */
  private adaptWindow(refaults: RefaultCounts, lateReuses: number): boolean {
    const tracker = this.tracker;
    const perEpoch = this.evictedPerEpoch.reduce((a, b) => a + b, 0) / Math.max(1, this.evictedPerEpoch.length);
    const thrashing = refaults.repeated * REFAULT_SHARE_INV >= perEpoch || refaults.all * REFAULT_SHARE_INV >= refaults.touched;
    if (refaults.repeated >= REFAULT_MIN && thrashing) {
      this.quietEpochs = 0;
      this.widenedStamp = tracker.observed + 1;
      if (tracker.windowEpochs >= MAX_WINDOW_EPOCHS) return true;
      tracker.windowEpochs = Math.min(MAX_WINDOW_EPOCHS, tracker.windowEpochs * 2);
      return true;
    }
    if (refaults.repeated > 0 || lateReuses > 0) {
      this.quietEpochs = 0;
      return false;
    }
    this.quietEpochs++;
    if (tracker.windowEpochs > this.options.coldEpochs && this.quietEpochs >= 2 * tracker.windowEpochs) {
      tracker.windowEpochs = Math.max(this.options.coldEpochs, tracker.windowEpochs >> 1);
      this.quietEpochs = 0;
    }
    return false;
  }
}
