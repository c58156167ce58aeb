// The source end of a pre-copy live migration (Clark et al., NSDI 2005): authenticate, have the
// destination reserve the VM, send RAM in rounds over the dirty log while the guest runs, then
// pause, send the rest with the CPU and device state, and hand over only once the destination
// has committed. Until Committed arrives every failure ends with the VM running here, as
// before; after it the source copy is never resumed.

import { connect, type Socket } from 'node:net';
import type { VmConfig, FrozenVm } from '../../vm/types.js';
import { MigrationChannel } from './channel.js';
import { StageTracker, SENDER_TRANSITIONS, type SenderStage } from './stages.js';
import { configMessage } from './wire-config.js';
import { ZeroPages } from '../../machine/memory/zero-pages.js';
import { reportEnd, type MigrationProgress, type MigrationReport } from './report.js';
import { MigrationError, abortCodeFor, failureCode } from '../errors.js';
import { PrecopyPlanner, type RoundPlan } from '../precopy/rounds.js';
import { Pacer, type RateConfig } from '../precopy/rate.js';
import { newNonce, sourceProof, verifyDestination, type MigrationToken } from '../protocol/auth.js';
import type { PageCompression } from '../protocol/codec.js';
import { DEFAULT_PAGE_COMPRESSION, packBatch } from '../compression/index.js';
import {
  AbortCode, Compression, MAX_BATCH_PAGES, PAGE_SIZE, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, negotiateVersion, type PagesMessage,
} from '../protocol/messages.js';

/** What the sender needs from the VM (src/vm/vm.ts Vm provides it). */
export interface MigrationSource {
  readonly name: string;
  readonly config: VmConfig;
  memory(): Promise<{ readonly bytes: Uint8Array; readonly dirtyLog: Uint8Array; readonly pageCount: number }>;
  beginMigrationOut(to: string): Promise<void>;
  harvestDirtyLog(): Promise<Uint8Array>;
  freeze(): Promise<FrozenVm>;
  endMigrationOut(outcome: { committed: true } | { committed: false; error: string; frozen: boolean }): Promise<void>;
}

export interface SenderTimeouts {
  readonly connectMs: number;
  /** Each handshake answer. */
  readonly handshakeMs: number;
  /** Reserved: the destination builds the VM (opens TAPs and disks). */
  readonly reserveMs: number;
  /** RoundAck after RoundEnd, and any write the socket does not take. */
  readonly stallMs: number;
  /** Committed after CommitRequest (the destination loads the state). */
  readonly commitMs: number;
  /** Done after Activate. */
  readonly activateMs: number;
}

export const DEFAULT_SENDER_TIMEOUTS: SenderTimeouts = {
  connectMs: 10_000, handshakeMs: 10_000, reserveMs: 120_000, stallMs: 15_000, commitMs: 60_000, activateMs: 30_000,
};

export interface SenderOptions {
  readonly source: MigrationSource;
  readonly host: string;
  readonly port: number;
  readonly token: MigrationToken;
  readonly rate?: RateConfig;
  readonly downtimeLimitMs?: number;
  readonly maxRounds?: number;
  readonly minPages?: number;
  readonly maxSentFactor?: number;
  /** Page batches go through this codec where it makes them smaller; null sends them raw.
   * Default: DEFAULT_PAGE_COMPRESSION (zstd). */
  readonly compression?: PageCompression | null;
  readonly timeouts?: Partial<SenderTimeouts>;
  readonly onStage?: (stage: SenderStage) => void;
  /** At most every PROGRESS_MS while pages move, and on every stage change. */
  readonly onProgress?: (progress: MigrationProgress) => void;
}

const PROGRESS_MS = 250;
/** Pages looked at between two yields to the event loop when nothing is sent (zero pages). */
const YIELD_EVERY_PAGES = 8192;

export class PrecopySender {
  private readonly tracker: StageTracker<SenderStage>;
  private readonly timeouts: SenderTimeouts;
  private readonly pacer = new Pacer(256 * 1024);
  private channel: MigrationChannel | undefined;
  private planner: PrecopyPlanner | undefined;
  private cancelReason: string | undefined;
  private migratingOut = false;
  private frozen = false;
  private committed = false;
  private pausedAt: number | undefined;
  private downtimeMs: number | null = null;
  private lastProgress = 0;
  private round = 0;
  private pagesRemaining = 0;
  private readonly counts = { sent: 0, zero: 0, raw: 0, wire: 0 };
  /** This round's pages sent and pages zeroed by ZeroRun, for RoundEnd. */
  private readonly roundCounts = { sent: 0, zeroed: 0 };
  /** Pages whose copy on the destination may be non-zero: a page found zero later needs a ZeroRun
   * only then (the destination's RAM starts zeroed). */
  private destNonZero: Uint8Array | undefined;
  private readonly codec: PageCompression | null;

  constructor(private readonly opts: SenderOptions) {
    this.codec = opts.compression === undefined ? DEFAULT_PAGE_COMPRESSION : opts.compression;
    this.timeouts = { ...DEFAULT_SENDER_TIMEOUTS, ...opts.timeouts };
    this.tracker = new StageTracker(SENDER_TRANSITIONS, { kind: 'pre-migration' }, (s) => {
      opts.onStage?.(s);
      this.emitProgress(true);
    });
  }

  get stage(): SenderStage { return this.tracker.stage; }
  get peer(): string { return `${this.opts.host}:${this.opts.port}`; }
  get vm(): string { return this.opts.source.name; }

  progress(): MigrationProgress {
    return {
      stage: this.tracker.stage.kind,
      round: this.round,
      bytes: this.channel ? this.channel.bytesOut + this.channel.bytesIn : 0,
      pagesSent: this.counts.sent,
      pagesRemaining: this.pagesRemaining,
      elapsedMs: Math.round(this.tracker.elapsedMs),
    };
  }

  /**
   * Asks the migration to stop. Honoured until the commit point (returns true); after it the
   * destination owns the VM and a cancel is refused (returns false).
   */
  cancel(reason = 'cancelled by the operator'): boolean {
    if (this.committed || this.tracker.ended) return false;
    this.cancelReason ??= reason;
    this.channel?.fail(new MigrationError('MIGRATION_CANCELLED', reason));
    return true;
  }

  /** Runs the migration to its end; never throws: the report says how it ended. */
  async run(): Promise<MigrationReport> {
    try {
      await this.migrate();
      this.tracker.move({ kind: 'completed' });
    } catch (e) {
      await this.handleFailure(e);
    } finally {
      this.channel?.close();
    }
    return this.report();
  }

  private async migrate(): Promise<void> {
    const { source } = this.opts;
    const ch = await this.connect();
    await this.authenticate(ch);
    this.checkCancelled();

    await source.beginMigrationOut(this.peer);
    this.migratingOut = true;
    const mem = await source.memory();
    this.tracker.move({ kind: 'reservation' });
    await ch.send(configMessage(source.config));
    await ch.expect(['Reserved'], this.timeouts.reserveMs, 'reservation');

    const planner = new PrecopyPlanner({
      pageCount: mem.pageCount,
      ...(this.opts.rate ? { rate: this.opts.rate } : {}),
      ...(this.opts.downtimeLimitMs !== undefined ? { downtimeLimitMs: this.opts.downtimeLimitMs } : {}),
      ...(this.opts.maxRounds !== undefined ? { maxRounds: this.opts.maxRounds } : {}),
      ...(this.opts.minPages !== undefined ? { minPages: this.opts.minPages } : {}),
      ...(this.opts.maxSentFactor !== undefined ? { maxSentFactor: this.opts.maxSentFactor } : {}),
    });
    this.planner = planner;
    this.destNonZero = new Uint8Array(mem.pageCount);
    const zeroPages = new ZeroPages(mem.bytes);

    // Everything written from here on shows up in the log, so round 1 may read RAM live.
    await source.harvestDirtyLog();
    let plan = planner.beginFirstRound((p) => !zeroPages.isZero(p));
    let lastLog: Uint8Array;
    for (;;) {
      this.tracker.move({ kind: 'precopy', round: plan.round });
      const t0 = performance.now();
      const bytes = await this.sendRound(ch, plan, mem, zeroPages);
      await this.endRound(ch, plan.round);
      lastLog = await source.harvestDirtyLog();
      const decision = planner.endRound({ durationMs: performance.now() - t0, dirtyLog: lastLog, bytesSent: bytes });
      if (decision.stop) break;
      this.checkCancelled();
      plan = planner.beginRound(lastLog);
    }

    // Stop-and-copy.
    this.checkCancelled();
    this.pausedAt = performance.now();
    const frozen = await source.freeze();
    this.frozen = true;
    plan = planner.beginRound(lastLog, frozen.dirtyLog);
    this.tracker.move({ kind: 'stop-and-copy', round: plan.round });
    const t0 = performance.now();
    const bytes = await this.sendRound(ch, plan, mem, zeroPages);
    await ch.send({ type: 'RoundEnd', round: plan.round, pagesSent: this.roundCounts.sent, pagesZeroed: this.roundCounts.zeroed });
    await ch.send({ type: 'DeviceState', state: frozen.state as unknown as Record<string, unknown> });
    await ch.send({ type: 'CommitRequest', finalRound: plan.round });
    planner.endRound({ durationMs: performance.now() - t0, dirtyLog: new Uint8Array(mem.pageCount), bytesSent: bytes });
    this.tracker.move({ kind: 'commitment' });
    await this.awaitMessage(ch, 'Committed', this.timeouts.commitMs, 'commitment');

    // The commit point: from here on the destination's copy is the VM.
    this.committed = true;
    this.tracker.move({ kind: 'activation' });
    await ch.send({ type: 'Activate' });
    await this.awaitMessage(ch, 'Done', this.timeouts.activateMs, 'activation');
    this.downtimeMs = round1(performance.now() - this.pausedAt);
    this.migratingOut = false;
    // The destination runs the VM: a failure to tidy up our copy does not undo that.
    await source.endMigrationOut({ committed: true }).catch(() => undefined);
  }

  private async connect(): Promise<MigrationChannel> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ host: this.opts.host, port: this.opts.port });
      const timer = setTimeout(() => { s.destroy(); reject(new MigrationError('MIGRATION_TIMEOUT', `cannot connect to ${this.peer} within ${this.timeouts.connectMs} ms`)); }, this.timeouts.connectMs);
      s.once('connect', () => { clearTimeout(timer); resolve(s); });
      s.once('error', (e) => { clearTimeout(timer); reject(new MigrationError('MIGRATION_CONNECTION_LOST', `cannot connect to ${this.peer}: ${e.message}`, { cause: e })); });
    });
    const codec = this.codec ? { compressions: [this.codec] } : {};
    this.channel = new MigrationChannel(socket, { codec, stallTimeoutMs: this.timeouts.stallMs });
    if (this.cancelReason !== undefined) this.channel.fail(new MigrationError('MIGRATION_CANCELLED', this.cancelReason));
    return this.channel;
  }

  private async authenticate(ch: MigrationChannel): Promise<void> {
    const { token } = this.opts;
    const sourceNonce = newNonce();
    const ours = { min: PROTOCOL_VERSION_MIN, max: PROTOCOL_VERSION_MAX };
    await ch.send({ type: 'Hello', versions: ours, tokenId: token.id, sourceNonce });
    const challenge = await ch.expect(['Challenge'], this.timeouts.handshakeMs, 'handshake');
    const version = negotiateVersion(ours, challenge.versions);
    if (version !== challenge.version) {
      throw new MigrationError('MIGRATION_PROTOCOL', `the destination chose version ${challenge.version}, the common one is ${version}`);
    }
    const transcript = { version, tokenId: token.id, sourceNonce, destinationNonce: challenge.destinationNonce };
    await ch.send({ type: 'Auth', proof: sourceProof(token.secret, transcript) });
    const ok = await ch.expect(['AuthOk'], this.timeouts.handshakeMs, 'authentication');
    verifyDestination(token.secret, transcript, ok.proof);
  }

  /** Sends one round's pages; returns the bytes it put on the wire. */
  private async sendRound(ch: MigrationChannel, plan: RoundPlan, mem: { bytes: Uint8Array; dirtyLog: Uint8Array }, zeroPages: ZeroPages): Promise<number> {
    const planner = this.planner!;
    const destNonZero = this.destNonZero!;
    const batch = Buffer.allocUnsafe(MAX_BATCH_PAGES * PAGE_SIZE);
    const pages: number[] = [];
    let bytes = 0;
    let zeroFirst = -1;
    let zeroCount = 0;
    this.round = plan.round;
    this.roundCounts.sent = 0;
    this.roundCounts.zeroed = 0;
    this.pacer.reset();

    const flushZeros = async (): Promise<void> => {
      if (zeroCount === 0) return;
      bytes += await this.put(ch, ch.encoder.encode({ type: 'ZeroRun', round: plan.round, firstPage: zeroFirst, count: zeroCount }), plan.rateLimit);
      this.roundCounts.zeroed += zeroCount;
      zeroCount = 0;
    };
    const flushPages = async (): Promise<void> => {
      if (pages.length === 0) return;
      const raw = batch.subarray(0, pages.length * PAGE_SIZE);
      const { compression, packed } = packBatch(raw, this.codec);
      const msg: PagesMessage = { type: 'Pages', round: plan.round, compression, pages, data: raw, packed };
      const frame = ch.encoder.encode(msg);
      this.counts.sent += pages.length;
      this.roundCounts.sent += pages.length;
      this.counts.raw += raw.length;
      this.counts.wire += frame.length;
      pages.length = 0;
      bytes += await this.put(ch, frame, plan.rateLimit);
    };

    for (let i = 0; i < plan.pages.length; i++) {
      const page = plan.pages[i]!;
      this.pagesRemaining = plan.pages.length - i;
      if (!plan.final && planner.shouldSkip(page, mem.dirtyLog)) continue;
      if (zeroPages.isZero(page)) {
        this.counts.zero++;
        if (destNonZero[page] !== 0) {
          destNonZero[page] = 0;
          if (zeroCount > 0 && zeroFirst + zeroCount !== page) await flushZeros();
          if (zeroCount === 0) zeroFirst = page;
          zeroCount++;
        }
        if (i % YIELD_EVERY_PAGES === YIELD_EVERY_PAGES - 1) { await yieldNow(); this.checkCancelled(); }
        continue;
      }
      await flushZeros();
      const off = page * PAGE_SIZE;
      batch.set(mem.bytes.subarray(off, off + PAGE_SIZE), pages.length * PAGE_SIZE);
      pages.push(page);
      destNonZero[page] = 1;
      if (pages.length === MAX_BATCH_PAGES) await flushPages();
    }
    await flushPages();
    await flushZeros();
    this.pagesRemaining = 0;
    return bytes;
  }

  /** Paces one frame at `rate` bytes/s, writes it, returns its size. */
  private async put(ch: MigrationChannel, frame: Buffer, rate: number): Promise<number> {
    this.checkCancelled();
    const wait = this.pacer.delay(frame.length, rate, performance.now());
    if (wait > 0) await sleep(wait);
    await ch.write(frame);
    this.emitProgress(false);
    return frame.length;
  }

  private async endRound(ch: MigrationChannel, round: number): Promise<void> {
    await ch.send({ type: 'RoundEnd', round, pagesSent: this.roundCounts.sent, pagesZeroed: this.roundCounts.zeroed });
    // Waiting for the ack makes the round's time include delivery, so the measured bandwidth
    // is the link's and not the socket buffer's; it also bounds how long a dead link goes unseen.
    for (;;) {
      const ack = await ch.expect(['RoundAck'], this.timeouts.stallMs, `acknowledgement of round ${round}`);
      if (ack.round === round) return;
    }
  }

  /** Waits for `type`, passing over RoundAcks still on their way. */
  private async awaitMessage(ch: MigrationChannel, type: 'Committed' | 'Done', timeoutMs: number, what: string): Promise<void> {
    for (;;) {
      const m = await ch.expect([type, 'RoundAck'], timeoutMs, what);
      if (m.type === type) return;
    }
  }

  private checkCancelled(): void {
    if (this.cancelReason !== undefined) throw new MigrationError('MIGRATION_CANCELLED', this.cancelReason);
    const failed = this.channel?.failed;
    if (failed) throw failed;
  }

  private async handleFailure(e: unknown): Promise<void> {
    const error = e instanceof Error ? e : new Error(String(e));
    const codeText = failureCode(error);
    const ch = this.channel;
    // After the commit point only the destination's word that the guest never ran there
    // lets this copy run again; anything else leaves it paused until someone knows.
    if (this.committed && !(error instanceof MigrationError && error.peerCode === AbortCode.ActivationFailed)) {
      this.tracker.move({ kind: 'in-doubt', error: error.message, code: codeText });
      return;
    }
    if (ch && codeText !== 'MIGRATION_PEER_ABORTED') await ch.abort(abortCodeFor(error), error.message);
    let message = error.message;
    if (this.migratingOut) {
      try {
        await this.opts.source.endMigrationOut({ committed: false, error: error.message, frozen: this.frozen });
      } catch (thawError) {
        message += `; and the VM could not be resumed: ${thawError instanceof Error ? thawError.message : String(thawError)}`;
      }
      this.migratingOut = false;
    }
    // The pause was not a switch-over: report it as the downtime the guest saw anyway.
    if (this.pausedAt !== undefined) this.downtimeMs = round1(performance.now() - this.pausedAt);
    this.tracker.move({ kind: 'failed', error: message, code: codeText });
  }

  private emitProgress(force: boolean): void {
    const now = performance.now();
    if (!force && now - this.lastProgress < PROGRESS_MS) return;
    this.lastProgress = now;
    this.opts.onProgress?.(this.progress());
  }

  report(): MigrationReport {
    const s = this.tracker.stage;
    const planned = this.planner?.report();
    const ch = this.channel;
    return {
      vm: this.vm,
      direction: 'out',
      peer: this.peer,
      ...reportEnd(s),
      totalMs: Math.round(this.tracker.elapsedMs),
      downtimeMs: this.downtimeMs,
      bytes: ch ? ch.bytesOut + ch.bytesIn : 0,
      ramBytes: planned?.ramBytes ?? 0,
      rounds: planned?.rounds ?? [],
      stopRule: planned?.stop?.rule ?? null,
      stages: this.tracker.timeline.map((t) => ({ ...t })),
      compression: this.codec ? codecName(this.codec.id) : 'none',
      pages: { sent: this.counts.sent, zero: this.counts.zero, skipped: planned?.totals.pagesSkipped ?? 0 },
      pageBytes: { raw: this.counts.raw, wire: this.counts.wire },
    };
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Lets the event loop run (API requests, incoming acks, a cancel) during long CPU-bound loops. */
function yieldNow(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function codecName(id: number): string {
  return Object.entries(Compression).find(([, v]) => v === id)?.[0].toLowerCase() ?? `id ${id}`;
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
