// The main thread's side of demand paging: the VM's worker reports absent pages something
// waits for (page-fault messages); this picks who holds each page by its absent mark and
// resolves once they are in RAM. Suppliers: the migration source during post-copy
// (ABSENT_PEER) and the VM's swap device (ABSENT_SWAP).

import type { GuestMemory } from '../../machine/memory/guest-memory.js';
import { GuestMemoryLostError } from '../../machine/memory/errors.js';
import { PRESENT } from './marks.js';

export interface PageSupplier {
  /** Brings these pages (absent with this supplier's mark when asked) into RAM with
   * installPage, or rejects when it cannot. */
  fetch(pages: readonly number[]): Promise<void>;
}

/** Faults that had to wait, and how long they waited (from the worker's report to the page
 * being in RAM; microseconds). */
export interface FaultStats {
  faults: number;
  stallUsTotal: number;
  stallUsMax: number;
}

/** Stall times kept for percentiles: a uniform sample of every fault (reservoir), bounded. */
const STALL_SAMPLES = 4096;

/** The fault stalls' distribution, in microseconds; null without a fault. */
export interface StallPercentiles {
  readonly p50Us: number;
  readonly p99Us: number;
  readonly maxUs: number;
}

export class PageServer {
  private readonly suppliers = new Map<number, PageSupplier>();
  readonly stats: FaultStats = { faults: 0, stallUsTotal: 0, stallUsMax: 0 };
  private samples: number[] = [];

  constructor(private readonly mem: GuestMemory) {}

  /** p50, p99 and the longest of the stalls since the last reset (p50/p99 from a sample). */
  percentiles(): StallPercentiles | null {
    if (this.stats.faults === 0) return null;
    const sorted = [...this.samples].sort((a, b) => a - b);
    const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
    return { p50Us: at(0.5), p99Us: at(0.99), maxUs: this.stats.stallUsMax };
  }

  attach(mark: number, supplier: PageSupplier | undefined): void {
    if (supplier) this.suppliers.set(mark, supplier);
    else this.suppliers.delete(mark);
  }

  resetStats(): void {
    Object.assign(this.stats, { faults: 0, stallUsTotal: 0, stallUsMax: 0 });
    this.samples = [];
  }

  /** Resolves once pages first..first+count-1 are all in RAM. */
  async resolve(first: number, count: number): Promise<void> {
    const t0 = performance.now();
    const byMark = new Map<number, number[]>();
    const end = Math.min(first + count, this.mem.pageCount);
    for (let p = Math.max(0, first); p < end; p++) {
      const mark = this.mem.absent[p]!;
      if (mark === PRESENT) continue;
      const list = byMark.get(mark);
      if (list) list.push(p);
      else byMark.set(mark, [p]);
    }
    if (byMark.size === 0) return;
    await Promise.all([...byMark].map(([mark, pages]) => {
      const supplier = this.suppliers.get(mark);
      if (!supplier) return Promise.reject(new GuestMemoryLostError(`${pages.length} guest page(s) from ${pages[0]} are absent (mark ${mark}) and nothing holds them`));
      return supplier.fetch(pages);
    }));
    const us = Math.round((performance.now() - t0) * 1000);
    this.stats.faults++;
    this.stats.stallUsTotal += us;
    this.stats.stallUsMax = Math.max(this.stats.stallUsMax, us);
    if (this.samples.length < STALL_SAMPLES) this.samples.push(us);
    else {
      const i = Math.floor(Math.random() * this.stats.faults);
      if (i < STALL_SAMPLES) this.samples[i] = us;
    }
  }
}
