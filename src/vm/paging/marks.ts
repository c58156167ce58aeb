// What a non-zero byte in the absent map says about where the page is. The vCPU only tests
// for non-zero; the main thread's page server picks the supplier by value.

import { MARK_INSTALLED, MARK_WRITTEN, PAGE_SIZE } from '../../machine/memory/guest-memory.js';
import { forEachRun } from '../../machine/memory/page-maps.js';

export { MARK_INSTALLED, MARK_WRITTEN, PAGE_SIZE };

/** In RAM. */
export const PRESENT = 0;
/** On the migration source: a post-copy destination requests or is pushed it. */
export const ABSENT_PEER = 1;
/** On the VM's swap device on shared storage (Agile). */
export const ABSENT_SWAP = 2;

/** The parts of guest memory paging touches (GuestMemory has them; so do test fakes). */
export interface PagedMemory {
  readonly bytes: Uint8Array;
  readonly dirtyLog: Uint8Array;
  readonly absent: Uint8Array;
  readonly pageCount: number;
}

/** Puts one page's content into RAM and only then marks it present, so a vCPU that sees it
 * present reads the new bytes. Marked dirty: a pre-copy in progress must send it again (the
 * page was absent when its rounds were planned, and is not absent at the switch). The mark is
 * MARK_INSTALLED when the page's source keeps this very copy (the swap device), so evicting it
 * unchanged costs no write; it is atomic because the worker may be taking the log at this
 * moment (takeMarks). */
export function installPage(mem: PagedMemory, page: number, data: Uint8Array, mark: typeof MARK_WRITTEN | typeof MARK_INSTALLED = MARK_WRITTEN): void {
  mem.bytes.set(data, page * PAGE_SIZE);
  Atomics.store(mem.dirtyLog, page, mark);
  Atomics.store(mem.absent, page, PRESENT);
}

export function countMarked(mem: PagedMemory, mark: number): number {
  let n = 0;
  forEachRun(mem.absent.subarray(0, mem.pageCount), mark, (_, count) => { n += count; });
  return n;
}

export interface PageRun {
  readonly first: number;
  count: number;
}

/** Runs of consecutive pages in an ascending list, each at most `max` long. */
export function pageRuns(pages: Iterable<number>, max = Number.POSITIVE_INFINITY): PageRun[] {
  const runs: PageRun[] = [];
  for (const p of pages) {
    const last = runs[runs.length - 1];
    if (last && last.first + last.count === p && last.count < max) last.count++;
    else runs.push({ first: p, count: 1 });
  }
  return runs;
}

/** Ascending runs of pages carrying `mark`. */
export function markedRuns(absent: Uint8Array, mark: number): PageRun[] {
  const runs: PageRun[] = [];
  forEachRun(absent, mark, (first, count) => runs.push({ first, count }));
  return runs;
}
