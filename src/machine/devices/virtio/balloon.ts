// virtio-balloon (virtio 1.2 §5.5) with free page reporting. Two uses for migration: pages the
// guest put in the balloon, and free pages it reported, hold nothing the guest will read back,
// so the migration engine can send them as zero pages instead of their stale contents.
//
// Free page reporting contract (what the migration engine may rely on):
//  - When the guest reports a range, the device *discards* it: every whole 4 KiB page in it that
//    does not read as zeros is zero-filled through GuestMemory (so the dirty log marks it like
//    any device write), and the page joins the `free` set. A page that already reads as zeros
//    is left alone: not written, so neither marked dirty or accessed nor made resident on the
//    host (zero-filling never-touched RAM made the host fault in 124 MiB at the first report
//    after boot). The spec allows this: without VIRTIO_BALLOON_F_PAGE_POISON (never offered)
//    the driver must not assume a reported page keeps its contents, and Linux turns reporting
//    off when it would care (init_on_free, page poisoning).
//  - Reports are discarded between the vCPU's slices, a bounded number of pages per turn of the
//    event loop, and each buffer goes back to the driver when its ranges are done: the device
//    runs on the vCPU's thread, and the first report after boot names most of RAM (done inside
//    one slice it held the guest, and every frame to it, for 137-215 ms). `quiesce` returns the
//    buffers still pending at once, their remaining pages not discarded (the device may keep a
//    reported page's contents), so a freeze never waits for a report.
//  - `free` is a hint, not a promise: CPU stores bypass the device, so after a report the guest
//    may reallocate and write a page without the device knowing. `isReportedFree(page)` checks:
//    it is true only if the page is marked *and* reads as all zeros right now (and unmarks the
//    page otherwise). A page for which it returns true has the same contents as a fresh zeroed
//    page, so an engine may skip it whenever the destination's copy is known to be zero (the
//    first pass over a fresh destination). In later passes a page that was sent before and is
//    dirty again must be sent (as a zero page) even if it is reported free. Writes after the
//    check are caught by the engine's ordinary dirty tracking; nothing else is needed.
//  - The dirty log is never read or cleared here.
// Ballooned (inflated) pages get the same treatment: zeroed on inflate (unless already zero),
// `isBallooned(page)`.

import type { VirtioDevice, VirtioDeviceContext } from './device.js';
import { DEVICE_ID_BALLOON } from './constants.js';
import { readChain, type DescriptorChain } from './queue.js';
import { VirtioGuestError } from './errors.js';
import { GuestMemory, PAGE_SHIFT, PAGE_SIZE } from '../../memory/guest-memory.js';
import { ZeroPages } from '../../memory/zero-pages.js';
import { PageSet, type PageRuns } from '../../memory/page-set.js';
import { checkArray, checkBool, checkUint } from '../../state-check.js';
import { DeviceStateError } from '../errors.js';

export const BALLOON_F_REPORTING = 1n << 5n;

export const INFLATE_QUEUE = 0;
export const DEFLATE_QUEUE = 1;
/** Linux numbers queues by feature, skipping absent ones; without STATS_VQ and FREE_PAGE_HINT
 * the reporting queue is the third. */
export const REPORTING_QUEUE = 2;

/** Linux refuses reporting with a queue smaller than PAGE_REPORTING_CAPACITY (32). */
const QUEUE_SIZE = 128;
/** Balloon PFNs are in 4 KiB units whatever the guest's page size (VIRTIO_BALLOON_PFN_SHIFT). */
const PFN_SHIFT = 12;
/** Linux sends at most 256 PFNs per buffer; allow slack, refuse absurd chains. */
const MAX_PFN_BYTES = 64 * 1024;
/** Pages a report discards per turn of the event loop: at most ~1.4 ms of checks when none of
 * them was ever touched (a read of such a page faults in the host's zero page). */
const REPORT_PAGES_PER_TURN = 1024;

/** A report buffer taken from the queue and not yet returned: its whole pages as
 * [first, count] runs, and how far the discard has got. */
interface PendingReport {
  readonly head: number;
  readonly runs: readonly number[];
  run: number;
  done: number;
}

export type { PageRuns };

export interface VirtioBalloonState {
  numPages: number;
  actual: number;
  broken: boolean;
  ballooned: PageRuns;
  free: PageRuns;
}

export class VirtioBalloon implements VirtioDevice<VirtioBalloonState> {
  readonly name = 'balloon';
  readonly deviceId = DEVICE_ID_BALLOON;
  readonly features = BALLOON_F_REPORTING;
  readonly queueSizes = [QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE];
  /** Pages reported free and zeroed at report time (a hint; see above). */
  readonly free = new PageSet();
  /** Pages in the balloon (inflated, not yet deflated). */
  readonly ballooned = new PageSet();
  /** Number of reports (buffers on the reporting queue) processed since boot. */
  reports = 0;
  /** Target size in pages, set by the host (config num_pages). */
  private numPages = 0;
  /** Pages the driver says it holds (config actual). */
  private actual = 0;
  private ctx: VirtioDeviceContext | undefined;
  private broken = false;
  private pending: PendingReport[] = [];
  private drainScheduled: ReturnType<typeof setImmediate> | undefined;

  private readonly zeroPages: ZeroPages;

  constructor(private readonly memory: GuestMemory) {
    this.zeroPages = new ZeroPages(memory.bytes);
  }

  /** See the contract at the top of this file. Clears the mark of a page that was rewritten. */
  isReportedFree(page: number): boolean {
    if (!this.free.has(page)) return false;
    if (this.zeroPages.isZero(page)) return true;
    this.free.delete(page);
    return false;
  }

  /** Pages currently marked reported-free (marks are dropped lazily by isReportedFree). */
  reportedFreePages(): number { return this.free.size; }

  isBallooned(page: number): boolean { return this.ballooned.has(page); }
  balloonedPages(): number { return this.ballooned.size; }

  /** Host side: ask the guest to hold `pages` 4 KiB pages in the balloon. */
  setTarget(pages: number): void {
    this.numPages = checkUint('virtio-balloon', 'target', pages, 0xffff_ffff);
    this.ctx?.notifyConfigChange();
  }

  get target(): number { return this.numPages; }
  get actualPages(): number { return this.actual; }

  readConfig(offset: number, size: 1 | 2 | 4): number {
    // virtio_balloon_config: num_pages u32, actual u32 (the rest belongs to unoffered features).
    const cfg = new DataView(new ArrayBuffer(8));
    cfg.setUint32(0, this.numPages, true);
    cfg.setUint32(4, this.actual, true);
    if (offset < 0 || offset + size > 8) return 0;
    return size === 1 ? cfg.getUint8(offset) : size === 2 ? cfg.getUint16(offset, true) : cfg.getUint32(offset, true);
  }

  writeConfig(offset: number, size: 1 | 2 | 4, value: number): void {
    // Only `actual` is driver-writable; Linux writes it whole.
    if (offset === 4 && size === 4) this.actual = value >>> 0;
  }

  activate(ctx: VirtioDeviceContext): void {
    this.ctx = ctx;
    this.broken = false;
  }

  /** The balloon survives a driver reset in the page maps (the pages stay discarded; a new
   * driver starts with an empty balloon and will reuse them, which the zero check tolerates). */
  reset(): void {
    this.dropPending();
    this.ctx = undefined;
    this.broken = false;
    this.actual = 0;
    this.ballooned.clear();
  }

  notify(queue: number): void {
    const ctx = this.ctx;
    const q = ctx?.queues[queue];
    if (!ctx || !q || this.broken) return;
    let used = false;
    try {
      for (let chain = q.pop(); chain; chain = q.pop()) {
        if (queue === REPORTING_QUEUE) {
          this.pending.push({ head: chain.head, runs: reportRuns(chain, this.memory), run: 0, done: 0 });
          continue;
        }
        this.pfns(chain, queue === INFLATE_QUEUE);
        q.push(chain.head, 0);
        used = true;
      }
    } catch (e) {
      this.broken = true;
      throw e;
    } finally {
      if (used) ctx.notifyUsed(queue);
      if (this.pending.length > 0) this.scheduleDrain();
    }
  }

  /** Returns every pending report buffer now; pages not yet discarded keep their contents and
   * stay out of `free`. The vCPU is paused, so no new report arrives until `unquiesce`. */
  quiesce(): Promise<void> {
    this.completePending(0, false);
    return Promise.resolve();
  }

  /** Report buffers taken and not yet returned (a freeze returns them at once). */
  get pendingReports(): number { return this.pending.length; }

  private scheduleDrain(): void {
    this.drainScheduled ??= setImmediate(() => {
      this.drainScheduled = undefined;
      if (this.broken || !this.ctx) return;
      this.completePending(REPORT_PAGES_PER_TURN, true);
      if (this.pending.length > 0) this.scheduleDrain();
    });
  }

  /** Works through pending reports in order, discarding up to `budget` pages, and returns
   * each buffer whose ranges are finished; with `discard` false it returns every buffer now,
   * its remaining pages kept. */
  private completePending(budget: number, discard: boolean): void {
    const q = this.ctx?.queues[REPORTING_QUEUE];
    if (!q) {
      this.pending = [];
      return;
    }
    let used = false;
    while (this.pending.length > 0) {
      const r = this.pending[0]!;
      while (discard && budget > 0 && r.run < r.runs.length) {
        const first = r.runs[r.run]! + r.done;
        const left = r.runs[r.run + 1]! - r.done;
        const n = Math.min(left, budget);
        this.discard(first, n);
        budget -= n;
        r.done += n;
        if (r.done === r.runs[r.run + 1]) {
          r.run += 2;
          r.done = 0;
        }
      }
      if (discard && r.run < r.runs.length) break;
      this.pending.shift();
      q.push(r.head, 0);
      this.reports++;
      used = true;
    }
    if (used) this.ctx!.notifyUsed(REPORTING_QUEUE);
  }

  private discard(first: number, count: number): void {
    for (let p = first; p < first + count; p++) {
      if (!this.zeroPages.isZero(p)) this.memory.fill(this.memory.ramBase + BigInt(p * PAGE_SIZE), PAGE_SIZE);
    }
    this.free.add(first, count);
  }

  private dropPending(): void {
    this.pending = [];
    if (this.drainScheduled !== undefined) clearImmediate(this.drainScheduled);
    this.drainScheduled = undefined;
  }

  private pfns(chain: DescriptorChain, inflate: boolean): void {
    const len = chain.readable.reduce((n, s) => n + s.len, 0);
    if (chain.writable.length > 0 || len % 4 !== 0 || len > MAX_PFN_BYTES) {
      throw new VirtioGuestError('virtio-balloon', `PFN buffer of ${len} bytes with ${chain.writable.length} writable descriptors`);
    }
    const bytes = readChain(this.memory, chain.readable);
    const view = new DataView(bytes.buffer);
    const pages: number[] = [];
    for (let at = 0; at < len; at += 4) {
      const page = this.pageOf(BigInt(view.getUint32(at, true)) << BigInt(PFN_SHIFT));
      if (page === undefined) throw new VirtioGuestError('virtio-balloon', `PFN 0x${view.getUint32(at, true).toString(16)} is outside guest RAM`);
      pages.push(page);
    }
    for (const page of pages) {
      if (inflate) {
        this.ballooned.add(page);
        if (!this.zeroPages.isZero(page)) this.memory.fill(this.memory.ramBase + BigInt(page * PAGE_SIZE), PAGE_SIZE);
      } else {
        this.ballooned.delete(page);
      }
    }
  }

  private pageOf(gpa: bigint): number | undefined {
    return this.memory.contains(gpa, PAGE_SIZE) ? Number((gpa - this.memory.ramBase) >> BigInt(PAGE_SHIFT)) : undefined;
  }

  save(): VirtioBalloonState {
    return { numPages: this.numPages, actual: this.actual, broken: this.broken, ballooned: this.ballooned.runs(), free: this.free.runs() };
  }

  restore(s: VirtioBalloonState, ctx: VirtioDeviceContext | undefined): void {
    const n = 'virtio-balloon';
    const numPages = checkUint(n, 'numPages', s.numPages, 0xffff_ffff);
    const actual = checkUint(n, 'actual', s.actual, 0xffff_ffff);
    const broken = checkBool(n, 'broken', s.broken);
    const pages = this.memory.pageCount;
    const ballooned = checkRuns(n, 'ballooned', s.ballooned, pages);
    const free = checkRuns(n, 'free', s.free, pages);
    this.dropPending();
    Object.assign(this, { numPages, actual, broken, ctx });
    this.ballooned.assign(ballooned);
    this.free.assign(free);
  }
}

/** A report: device-writable descriptors naming free guest ranges, as [first, count] runs of
 * the whole pages in them. Their contents are not read (the guest leaves them undefined). */
function reportRuns(chain: DescriptorChain, memory: GuestMemory): number[] {
  if (chain.readable.length > 0) throw new VirtioGuestError('virtio-balloon', 'free page report with device-readable descriptors');
  const runs: number[] = [];
  for (const s of chain.writable) {
    // The queue already checked the range is inside RAM. Only whole pages are discarded.
    const start = Number(s.addr - memory.ramBase);
    const first = Math.ceil(start / PAGE_SIZE);
    const end = Math.floor((start + s.len) / PAGE_SIZE);
    if (end > first) runs.push(first, end - first);
  }
  return runs;
}

/** Checks [first, count] pairs: in range, ascending and disjoint (what PageSet.runs writes). */
function checkRuns(device: string, field: string, v: unknown, pages: number): readonly number[] {
  const runs = checkArray(device, field, v);
  if (runs.length % 2 !== 0) throw new DeviceStateError(device, `field ${field} must hold [first, count] pairs`);
  const out: number[] = [];
  let end = 0;
  for (let i = 0; i < runs.length; i += 2) {
    const first = checkUint(device, `${field}[${i}]`, runs[i], pages);
    const count = checkUint(device, `${field}[${i + 1}]`, runs[i + 1], pages - first);
    if (first < end) throw new DeviceStateError(device, `field ${field} runs must be ascending and disjoint (run ${i / 2} starts at ${first}, before ${end})`);
    end = first + count;
    out.push(first, count);
  }
  return out;
}
