// Agile memory management (Deshpande et al.): track the VM's working set from the access log
// and keep cold pages on its swap device instead of in host memory. The VM keeps running; a
// touch faults a page back in. A migration then moves only what is resident, and the
// destination faults cold pages from the same device.

import type { GuestMemory } from '../../machine/memory/guest-memory.js';
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
  evict(pages: readonly number[], mark: number): Promise<{ readonly pages: readonly number[]; readonly data: Uint8Array }>;
}

const EVICT_BATCH = 256;

export class AgileMemory {
  readonly tracker: WorkingSetTracker;
  private readonly zero: ZeroPages;
  private timer: NodeJS.Timeout | undefined;
  private tick: Promise<void> = Promise.resolve();
  private suspended = 0;
  private stopped = false;
  private lastError: string | undefined;

  constructor(private readonly mem: GuestMemory, private readonly swap: SwapStore, private readonly port: AgileWorkerPort,
    readonly options: AgileOptions = DEFAULT_AGILE_OPTIONS) {
    this.tracker = new WorkingSetTracker(mem.pageCount, options.coldEpochs);
    this.zero = new ZeroPages(mem.bytes);
  }

  /** Why the last epoch failed (e.g. the swap device is unreachable); cleared by the next good one. */
  get error(): string | undefined { return this.lastError; }

  start(): void {
    if (this.timer || this.stopped) return;
    const loop = (): void => {
      this.tick = this.epoch().catch((e: unknown) => { this.lastError = e instanceof Error ? e.message : String(e); });
      void this.tick.then(() => { if (!this.stopped) this.timer = setTimeout(loop, this.options.epochMs); });
    };
    this.timer = setTimeout(loop, this.options.epochMs);
  }

  stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    return this.tick;
  }

  /** No eviction until resume() (a migration reads RAM); waits for an eviction under way. */
  async suspend(): Promise<void> {
    this.suspended++;
    await this.tick;
  }

  resume(): void {
    this.suspended = Math.max(0, this.suspended - 1);
  }

  /** Evicts up to `limit` cold, non-zero, resident pages; returns how many went. */
  async evictCold(limit: number): Promise<number> {
    const mem = this.mem;
    let batch: number[] = [];
    let evicted = 0;
    const flush = async (): Promise<void> => {
      if (batch.length === 0) return;
      const r = await this.port.evict(batch, ABSENT_SWAP);
      batch = [];
      if (r.pages.length === 0) return;
      evicted += r.pages.length;
      await this.swap.store(r.pages, r.data);
    };
    for (let p = 0; p < mem.pageCount && evicted + batch.length < limit; p++) {
      if (mem.absent[p] !== 0 || !this.tracker.isCold(p) || this.zero.isZero(p)) continue;
      batch.push(p);
      if (batch.length === EVICT_BATCH) await flush();
    }
    await flush();
    return evicted;
  }

  private async epoch(): Promise<void> {
    // While suspended the VM may be frozen for a migration's switch: a worker request would queue
    // behind the freeze. The access log keeps accumulating, so the next epoch loses nothing but
    // resolution (pages touched meanwhile count as touched in that one epoch).
    if (this.suspended > 0 || this.stopped) return;
    this.tracker.observe(await this.port.harvestAccess());
    if (this.suspended === 0 && !this.stopped) await this.evictCold(this.options.maxEvictPerEpoch);
    this.lastError = undefined;
  }
}
