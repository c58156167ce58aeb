// The source's post-copy phase: the destination runs the VM; every page it still lacks is sent
// exactly once. Requested pages (a stalled vCPU or device) go first and unpaced; then the
// neighbours of recent faults (prepaging: a fault predicts its neighbours); then the pages the
// guest touched last on the source (its working set); then the rest in ascending order, paced
// at the migration's rate. Pushed pages are flow-controlled by the
// destination's PostcopyAcks: at most WINDOW_BYTES of them are unacknowledged, so a requested
// page waits behind that much at most rather than behind the socket's and the link's whole
// queue (megabytes: tens of milliseconds on a slow link). QEMU's postcopy-preempt channel
// solves the same problem with a second connection.

import type { MigrationChannel } from '../engine/channel.js';
import { MigrationError } from '../errors.js';
import type { PageCompression } from '../protocol/codec.js';
import { encodePages } from '../compression/index.js';
import { MAX_BATCH_PAGES, PAGE_SIZE, type ProtocolMessage } from '../protocol/messages.js';
import { Pacer, PACER_BURST_MS } from '../precopy/rate.js';

/** Neighbours queued after each requested page. */
const PREPAGE_AHEAD = 32;
/** Bound on the prepaging queue: older fault neighbourhoods give way to newer ones. */
const NEARBY_MAX = 8192;
/** Pushed frame bytes the destination has not acknowledged yet, at most (requested pages are
 * exempt). 128 KiB: 1 ms on a 1 Gbit/s link, 5 ms on 200 Mbit/s; a fault waits about that
 * long (with 512 KiB the fast writer's faults waited 17.6 ms at p50, with 128 KiB 5.6 ms, and
 * the push took no longer). */
export const WINDOW_BYTES = 128 * 1024;
/** Pages per pushed frame: a few frames fill the window, so acknowledgements keep it moving. */
export const PUSH_BATCH_PAGES = 64;

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

export interface PusherOptions {
  readonly ch: MigrationChannel;
  readonly ram: Uint8Array;
  /** Pages absent at the destination, ascending. */
  readonly pages: Uint32Array;
  /** Of those, the ones the guest touched last (its working set): pushed before the rest. */
  readonly hot?: Uint32Array;
  readonly round: number;
  readonly codec: PageCompression | null;
  /** Bytes/s for pushed pages. */
  readonly rate: number;
  /** How long the window may stay full without an acknowledgement before the link counts as dead. */
  readonly ackTimeoutMs: number;
  readonly onSent: (pages: number, wireBytes: number, rawBytes: number) => void;
  /** Other messages of the phase (Done arrives while pages already flow): true if handled. */
  readonly onMessage?: (m: ProtocolMessage) => boolean;
}

export class PostcopyPusher {
  /** 0: not absent at the destination; WAITING; SENT. */
  private readonly state: Uint8Array;
  private remaining: number;
  private readonly urgent: number[] = [];
  private nearby: number[] = [];
  private cursor = 0;
  private hotCursor = 0;
  private requested = 0;
  private requests = 0;
  private readonly pacer = new Pacer(256 * 1024, PACER_BURST_MS);
  /** Pages sent in post-copy frames, and the destination's count of those it has. */
  private pagesSent = 0;
  private pagesAcked = 0;
  /** Unacknowledged frames: the page count each ends at, and its bytes. */
  private readonly unacked: { endPages: number; bytes: number }[] = [];
  private bytesUnacked = 0;

  constructor(private readonly o: PusherOptions) {
    this.state = new Uint8Array(o.ram.length / PAGE_SIZE);
    for (const p of o.pages) this.state[p] = WAITING;
    this.remaining = o.pages.length;
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
    const { ch, pages } = this.o;
    let bytes = 0;
    const batch: number[] = [];
    while (this.remaining > 0) {
      for (const m of ch.drain()) this.handle(m);
      if (this.urgent.length === 0 && this.bytesUnacked >= WINDOW_BYTES) {
        this.handle(await ch.next(this.o.ackTimeoutMs, 'a post-copy acknowledgement'));
        continue;
      }
      batch.length = 0;
      while (this.urgent.length > 0 && batch.length < MAX_BATCH_PAGES) this.take(this.urgent.shift()!, batch);
      const urgent = batch.length > 0;
      while (!urgent && this.nearby.length > 0 && batch.length < PUSH_BATCH_PAGES) this.take(this.nearby.shift()!, batch);
      const hot = this.o.hot;
      const before = batch.length;
      while (!urgent && hot && this.hotCursor < hot.length && batch.length < PUSH_BATCH_PAGES) this.take(hot[this.hotCursor++]!, batch);
      // The working set's frames carry only its pages, so none of them waits for the rest.
      const tookHot = batch.length > before;
      while (!urgent && !tookHot && this.cursor < pages.length && batch.length < PUSH_BATCH_PAGES) this.take(pages[this.cursor++]!, batch);
      if (batch.length === 0) break;
      bytes += await this.send(batch, urgent);
      // Let PageRequests in between batches even when the socket takes everything at once.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    await ch.send({ type: 'PostcopyEnd', pagesPushed: pages.length });
    return { pagesPushed: pages.length, pagesRequested: this.requested, requests: this.requests, durationMs: Math.round(performance.now() - t0), bytes };
  }

  private handle(m: ProtocolMessage): void {
    if (m.type === 'PageRequest') this.request(m.pages);
    else if (m.type === 'PostcopyAck') this.acknowledge(m.pagesReceived);
    else if (!this.o.onMessage?.(m)) throw new MigrationError('MIGRATION_PROTOCOL', `unexpected ${m.type} during post-copy`);
  }

  private acknowledge(pagesReceived: number): void {
    if (pagesReceived < this.pagesAcked || pagesReceived > this.pagesSent) {
      throw new MigrationError('MIGRATION_PROTOCOL', `PostcopyAck of ${pagesReceived} pages: ${this.pagesAcked} were acknowledged and ${this.pagesSent} sent`);
    }
    this.pagesAcked = pagesReceived;
    while (this.unacked.length > 0 && this.unacked[0]!.endPages <= pagesReceived) this.bytesUnacked -= this.unacked.shift()!.bytes;
  }

  private take(p: number, batch: number[]): void {
    if (this.state[p] !== WAITING) return;
    this.state[p] = SENT;
    this.remaining--;
    batch.push(p);
  }

  private async send(batch: number[], urgent: boolean): Promise<number> {
    const { ch, ram } = this.o;
    batch.sort((a, b) => a - b);
    const raw = Buffer.allocUnsafe(batch.length * PAGE_SIZE);
    batch.forEach((p, i) => raw.set(ram.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE), i * PAGE_SIZE));
    const frame = encodePages(ch.encoder, this.o.round, batch, raw, this.o.codec);
    if (!urgent) {
      const wait = this.pacer.delay(frame.length, this.o.rate, performance.now());
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    this.pagesSent += batch.length;
    this.unacked.push({ endPages: this.pagesSent, bytes: frame.length });
    this.bytesUnacked += frame.length;
    await ch.write(frame);
    this.o.onSent(batch.length, frame.length, raw.length);
    return frame.length;
  }
}
