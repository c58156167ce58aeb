// The destination's supplier of post-copy pages: a vCPU or device stalled on an absent page
// asks for it here; the request goes to the source over the migration connection (urgent: the
// source sends it ahead of its push), and resolves when the page arrives in a Pages frame,
// whether requested or pushed. Each page is installed once; a second copy counts as a
// duplicate (the source should never send one).

import { installPage, ABSENT_PEER, countMarked, type PagedMemory } from '../../vm/paging/marks.js';
import type { PageSupplier } from '../../vm/paging/page-server.js';
import { MAX_BATCH_PAGES, PAGE_SIZE, type PagesMessage } from '../protocol/messages.js';
import { GuestMemoryLostError } from '../../machine/memory/errors.js';

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
}

export class PeerPages implements PageSupplier {
  private readonly waiters = new Map<number, Waiter[]>();
  private readonly requested = new Set<number>();
  private failure: Error | undefined;
  received = 0;
  duplicates = 0;
  requests = 0;

  constructor(private readonly mem: PagedMemory, private readonly request: (pages: number[]) => Promise<void>) {}

  /** Pages still on the source only. */
  missing(): number {
    return countMarked(this.mem, ABSENT_PEER);
  }

  fetch(pages: readonly number[]): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const waits: Promise<void>[] = [];
    const ask: number[] = [];
    for (const p of pages) {
      if (this.mem.absent[p] !== ABSENT_PEER) continue;
      waits.push(new Promise<void>((resolve, reject) => {
        const list = this.waiters.get(p);
        if (list) list.push({ resolve, reject });
        else this.waiters.set(p, [{ resolve, reject }]);
      }));
      if (!this.requested.has(p)) {
        this.requested.add(p);
        ask.push(p);
      }
    }
    for (let i = 0; i < ask.length; i += MAX_BATCH_PAGES) {
      this.requests++;
      this.request(ask.slice(i, i + MAX_BATCH_PAGES)).catch((e: unknown) => this.fail(e instanceof Error ? e : new Error(String(e))));
    }
    return Promise.all(waits).then(() => undefined);
  }

  /** A Pages frame of the post-copy round. */
  deliver(m: PagesMessage): void {
    for (let i = 0; i < m.pages.length; i++) {
      const p = m.pages[i]!;
      if (this.mem.absent[p] === ABSENT_PEER) {
        installPage(this.mem, p, m.data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
        this.received++;
      } else {
        this.duplicates++;
      }
      const list = this.waiters.get(p);
      if (list) {
        this.waiters.delete(p);
        for (const w of list) w.resolve();
      }
    }
  }

  /** The source is gone: everything waiting, and everything that will ask, fails. */
  fail(cause: Error): void {
    if (this.failure) return;
    this.failure = new GuestMemoryLostError(`post-copy source lost (${cause.message}); ${this.missing()} guest pages existed only there`);
    for (const list of this.waiters.values()) for (const w of list) w.reject(this.failure);
    this.waiters.clear();
  }
}
