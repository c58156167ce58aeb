// The source's post-copy phase: the destination runs the VM; every page it still lacks is sent
// exactly once. Requested pages (a stalled vCPU or device) go first and unpaced; then the
// neighbours of recent faults (prepaging: a fault predicts its neighbours); then the rest in
// ascending order, paced at the migration's rate.

import type { MigrationChannel } from '../engine/channel.js';
import { MigrationError } from '../errors.js';
import type { PageCompression } from '../protocol/codec.js';
import { encodePages } from '../compression/index.js';
import { MAX_BATCH_PAGES, PAGE_SIZE, type ProtocolMessage } from '../protocol/messages.js';
import { Pacer } from '../precopy/rate.js';

/** Neighbours queued after each requested page. */
const PREPAGE_AHEAD = 32;
/** Bound on the prepaging queue: older fault neighbourhoods give way to newer ones. */
const NEARBY_MAX = 8192;

export interface PushReport {
  readonly pagesPushed: number;
  readonly pagesRequested: number;
  readonly requests: number;
  readonly durationMs: number;
  /** Frame bytes of the phase. */
  readonly bytes: number;
}

const WAITING = 1;
const SENT = 2;

export class PostcopyPusher {
  /** 0: not absent at the destination; WAITING; SENT. */
  private readonly state: Uint8Array;
  private remaining: number;
  private readonly urgent: number[] = [];
  private nearby: number[] = [];
  private cursor = 0;
  private requested = 0;
  private requests = 0;
  private readonly pacer = new Pacer(256 * 1024);

  constructor(
    private readonly ch: MigrationChannel,
    private readonly ram: Uint8Array,
    private readonly pages: Uint32Array,
    private readonly round: number,
    private readonly codec: PageCompression | null,
    private readonly rate: number,
    private readonly onSent: (pages: number, wireBytes: number, rawBytes: number) => void,
    /** Other messages of the phase (Done arrives while pages already flow): true if handled. */
    private readonly onMessage: (m: ProtocolMessage) => boolean = () => false,
  ) {
    this.state = new Uint8Array(ram.length / PAGE_SIZE);
    for (const p of pages) this.state[p] = WAITING;
    this.remaining = pages.length;
  }

  get pagesRemaining(): number { return this.remaining; }

  /** A PageRequest: the pages jump the queue, their neighbours follow. */
  request(pages: readonly number[]): void {
    this.requests++;
    const near: number[] = [];
    for (const p of pages) {
      const s = this.state[p];
      if (s === undefined || s === 0) throw new MigrationError('MIGRATION_PROTOCOL', `PageRequest for page ${p}, which the destination was never told is absent`);
      if (s !== WAITING) continue;
      this.urgent.push(p);
      this.requested++;
      for (let q = p + 1; q <= p + PREPAGE_AHEAD && q < this.state.length; q++) if (this.state[q] === WAITING) near.push(q);
    }
    if (near.length > 0) this.nearby = near.concat(this.nearby).slice(0, NEARBY_MAX);
  }

  async run(): Promise<PushReport> {
    const t0 = performance.now();
    let bytes = 0;
    const batch: number[] = [];
    while (this.remaining > 0) {
      for (const m of this.ch.drain()) {
        if (m.type === 'PageRequest') this.request(m.pages);
        else if (!this.onMessage(m)) throw new MigrationError('MIGRATION_PROTOCOL', `unexpected ${m.type} during post-copy`);
      }
      batch.length = 0;
      while (this.urgent.length > 0 && batch.length < MAX_BATCH_PAGES) this.take(this.urgent.shift()!, batch);
      const urgent = batch.length > 0;
      while (!urgent && this.nearby.length > 0 && batch.length < MAX_BATCH_PAGES) this.take(this.nearby.shift()!, batch);
      while (!urgent && this.cursor < this.pages.length && batch.length < MAX_BATCH_PAGES) this.take(this.pages[this.cursor++]!, batch);
      if (batch.length === 0) break;
      bytes += await this.send(batch, urgent);
      // Let PageRequests in between batches even when the socket takes everything at once.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    await this.ch.send({ type: 'PostcopyEnd', pagesPushed: this.pages.length });
    return { pagesPushed: this.pages.length, pagesRequested: this.requested, requests: this.requests, durationMs: Math.round(performance.now() - t0), bytes };
  }

  private take(p: number, batch: number[]): void {
    if (this.state[p] !== WAITING) return;
    this.state[p] = SENT;
    this.remaining--;
    batch.push(p);
  }

  private async send(batch: number[], urgent: boolean): Promise<number> {
    batch.sort((a, b) => a - b);
    const raw = Buffer.allocUnsafe(batch.length * PAGE_SIZE);
    batch.forEach((p, i) => raw.set(this.ram.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE), i * PAGE_SIZE));
    const frame = encodePages(this.ch.encoder, this.round, batch, raw, this.codec);
    if (!urgent) {
      const wait = this.pacer.delay(frame.length, this.rate, performance.now());
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    await this.ch.write(frame);
    this.onSent(batch.length, frame.length, raw.length);
    return frame.length;
  }
}
