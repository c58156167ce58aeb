// The source end of a pre-copy live migration (Clark et al., NSDI 2005): authenticate, have the
// destination reserve the VM, send RAM in rounds over the dirty log while the guest runs, then
// pause, send the rest with the CPU and device state, and hand over only once the destination
// has committed. Until Committed arrives every failure ends with the VM running here, as
// before; after it the source copy is never resumed.

import { connect, type Socket } from 'node:net';
import type { VmConfig, FrozenVm, SwapOut, CarriedFrames } from '../../vm/types.js';
import { wallClockMs } from '../../machine/clock.js';
import { SwitchTimeline } from './switch-timeline.js';
import { ABSENT_SWAP, markedRuns, pageRuns, type PagedMemory } from '../../vm/paging/marks.js';
import { countNonZero, WARM_UP_CALLS } from '../../machine/memory/page-maps.js';
import { PostcopyPusher, type PushReport } from '../postcopy/pusher.js';
import { modeNeeds, type MigrationMode } from './modes.js';
import { MigrationChannel } from './channel.js';
import { StageTracker, SENDER_TRANSITIONS, type SenderStage } from './stages.js';
import { configMessage } from './wire-config.js';
import { ZeroPages } from '../../machine/memory/zero-pages.js';
import { reportEnd, type MigrationProgress, type MigrationReport, type PostcopyReport } from './report.js';
import { MigrationError, abortCodeFor, failureCode } from '../errors.js';
import { PrecopyPlanner, type RoundPlan } from '../precopy/rounds.js';
import { DEFAULT_DYNAMIC_RATE, Pacer, PACER_BURST_MS, type RateConfig } from '../precopy/rate.js';
import { DEFAULT_CONVERGE, type ConvergeMethod } from '../precopy/converge.js';
import { downtimeVerdict, estimatePrecopy } from '../precopy/estimate.js';
import { PrecopyControl, type MigrationTimeout } from './precopy-control.js';
import type { ThrottleStats, VcpuThrottle } from '../../machine/boot/throttle.js';
import { newNonce, sourceProof, verifyDestination, type MigrationToken } from '../protocol/auth.js';
import type { PageCompression } from '../protocol/codec.js';
import { DEFAULT_PAGE_COMPRESSION, encodePages } from '../compression/index.js';
import {
  AbortCode, Compression, MAX_ABSENT_RUNS, MAX_BATCH_PAGES, MAX_CARRIED_FRAMES, PAGE_SIZE, POSTCOPY_VERSION, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, SWITCH_VERSION,
  negotiateVersion, type AbsentOrigin, type ProtocolMessage,
} from '../protocol/messages.js';

/** What the sender needs from the VM (src/vm/vm.ts Vm provides it). */
export interface MigrationSource {
  readonly name: string;
  readonly config: VmConfig;
  /** Guest RAM, its dirty log and absent map (pages on the swap device are absent). */
  memory(): Promise<PagedMemory>;
  beginMigrationOut(to: string): Promise<void>;
  /** Agile: evicts everything outside the working set to the swap device (durable later). */
  swapOutCold?(): Promise<SwapOut>;
  /** Resolves once every page on the VM's swap device is durable there (none: at once). */
  swapDurable?(): Promise<void>;
  harvestDirtyLog(): Promise<Uint8Array>;
  /** Starts a new access log; the freeze's marks what the guest touched since (post-copy pushes
   * those pages first). Without it the push goes in page order. */
  harvestAccessLog?(): Promise<Uint8Array>;
  /** Slows the vCPU while pre-copy does not converge (null: full speed); without it the guest
   * is never slowed. */
  throttle?(setting: VcpuThrottle | null): Promise<ThrottleStats>;
  freeze(): Promise<FrozenVm>;
  /** After the commit point: NIC frames that reached the frozen VM since freeze (none: a VM
   * without NICs). */
  takeCarriedFrames?(): Promise<CarriedFrames>;
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
  /** From the pause to Committed: the whole stop-and-copy and the destination's load. A switch
   * that takes longer is abandoned and the VM resumes here. Default: ten times the downtime
   * limit, at least 2 s (switchTimeoutMs). */
  readonly commitMs: number;
  /** Done after Activate. */
  readonly activateMs: number;
}

export const DEFAULT_SENDER_TIMEOUTS: Omit<SenderTimeouts, 'commitMs'> = {
  connectMs: 10_000, handshakeMs: 10_000, reserveMs: 120_000, stallMs: 15_000, activateMs: 30_000,
};

/** The planner's default downtime limit (rounds.ts), which the switch's bound scales with. */
const DEFAULT_DOWNTIME_LIMIT_MS = 300;

/** How long a switch may keep the VM paused before it is abandoned: long enough for a loaded
 * host to finish one that overran its limit, short enough that a hung one costs seconds. */
export function switchTimeoutMs(downtimeLimitMs: number): number {
  return Math.min(60_000, Math.max(2_000, 10 * downtimeLimitMs));
}

/** After Done: how long the destination's timeline may take to arrive; its absence only leaves
 * the report's timeline one-sided. */
const SWITCH_TIMES_MS = 2_000;
/** After Done the source carries frames until they stop (see carryFrames). */
const CARRY_MIN_MS = 100;
const CARRY_QUIET_MS = 50;
const CARRY_MAX_MS = 1_000;
const CARRY_POLL_MS = 10;

export interface SenderOptions {
  readonly source: MigrationSource;
  readonly host: string;
  readonly port: number;
  readonly token: MigrationToken;
  /** precopy (default), postcopy, hybrid or agile (src/migration/engine/modes.ts). */
  readonly mode?: MigrationMode;
  readonly rate?: RateConfig;
  readonly downtimeLimitMs?: number;
  readonly maxRounds?: number;
  readonly minPages?: number;
  readonly maxSentFactor?: number;
  /** How pre-copy slows a guest that outruns the link (precopy mode only; default
   * DEFAULT_CONVERGE, 'off' never slows it). */
  readonly converge?: ConvergeMethod;
  /** The migration's deadline, from its start, and what happens when it passes. */
  readonly timeout?: MigrationTimeout;
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
  private readonly pacer = new Pacer(256 * 1024, PACER_BURST_MS);
  private channel: MigrationChannel | undefined;
  private planner: PrecopyPlanner | undefined;
  private cancelReason: string | undefined;
  private migratingOut = false;
  private frozen = false;
  private committed = false;
  private pausedAt: number | undefined;
  /** When the vCPU really stopped (the worker's wall clock, this host's): the downtime starts
   * here, not at the freeze request, which the guest runs through. */
  private pausedAtWall: number | undefined;
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
  private readonly mode: MigrationMode;
  private version = 0;
  private pusher: PostcopyPusher | undefined;
  private push: PushReport | undefined;
  private postcopyStats: { faults: number; stallUsTotal: number; stallUsMax: number; duplicates: number; stallUs: PostcopyReport['stallUs'] } | undefined;
  /** The destination's PostcopyStats (v3), which comes just before PostcopyComplete. */
  private stallPercentiles: Extract<ProtocolMessage, { type: 'PostcopyStats' }> | undefined;
  /** Pages that exist only here while post-copy runs (not on the destination or the swap device). */
  private pagesAtRisk = 0;
  private swapOut: SwapOut | undefined;
  private swappedAtSwitch = 0;
  /** Page requests that arrived before the push began (the VM faults as soon as it runs). */
  private readonly earlyRequests: number[][] = [];
  /** Set at the pause: the switch's instants and the frames carried across it. */
  private timeline: SwitchTimeline | undefined;
  /** Set when SwitchEnd goes; resolved by the destination's SwitchTimes (protocol v3). */
  private switchTimes: ((m: Extract<ProtocolMessage, { type: 'SwitchTimes' }>) => void) | undefined;
  private switchTimesArrived: Promise<Extract<ProtocolMessage, { type: 'SwitchTimes' }>> | undefined;
  private readonly control: PrecopyControl;
  /** Pages of a round cut short by the deadline that were not sent: the next set gets them. */
  private readonly unsent: number[] = [];
  /** The pause pre-copy expected when its rounds ended (ms; null: unknown). */
  private expectedAtSwitch: number | null = null;

  constructor(private readonly opts: SenderOptions) {
    this.codec = opts.compression === undefined ? DEFAULT_PAGE_COMPRESSION : opts.compression;
    this.mode = opts.mode ?? 'precopy';
    this.timeouts = { ...DEFAULT_SENDER_TIMEOUTS, commitMs: switchTimeoutMs(opts.downtimeLimitMs ?? DEFAULT_DOWNTIME_LIMIT_MS), ...opts.timeouts };
    const throttle = opts.source.throttle?.bind(opts.source);
    this.control = new PrecopyControl({
      // Hybrid and Agile answer a guest that outruns the link with post-copy, not a throttle.
      converge: this.mode === 'precopy' ? opts.converge ?? DEFAULT_CONVERGE : 'off',
      downtimeLimitMs: opts.downtimeLimitMs ?? DEFAULT_DOWNTIME_LIMIT_MS,
      pageSize: PAGE_SIZE,
      timeout: opts.timeout,
      throttle,
      stage: () => this.tracker.stage.kind,
      cancel: (reason) => this.cancel(reason),
    });
    this.tracker = new StageTracker(SENDER_TRANSITIONS, { kind: 'pre-migration' }, (s) => {
      opts.onStage?.(s);
      this.emitProgress(true);
    });
  }

  get stage(): SenderStage { return this.tracker.stage; }
  get peer(): string { return `${this.opts.host}:${this.opts.port}`; }
  get vm(): string { return this.opts.source.name; }

  progress(): MigrationProgress {
    const planner = this.planner;
    const estimate = planner && this.tracker.stage.kind === 'precopy'
      ? estimatePrecopy({
        bandwidth: planner.measuredBandwidth, lastRound: planner.lastRound, pagesRemaining: this.pagesRemaining,
        pageSize: planner.pageSize, downtimeLimitMs: planner.downtimeLimitMs, roundsLeft: planner.maxRounds - this.round,
      })
      : { expectedDowntimeMs: null, etaMs: null };
    return {
      ...estimate,
      stage: this.tracker.stage.kind,
      round: this.round,
      bytes: this.channel ? this.channel.bytesOut + this.channel.bytesIn : 0,
      pagesSent: this.counts.sent,
      pagesRemaining: this.pusher ? this.pusher.pagesRemaining : this.pagesRemaining,
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
    this.control.arm();
    try {
      await this.migrate();
    } catch (e) {
      await this.handleFailure(e);
    } finally {
      this.control.disarm();
      this.channel?.close();
    }
    return this.report();
  }

  private async migrate(): Promise<void> {
    const { source } = this.opts;
    const needs = modeNeeds(this.mode);
    const ch = await this.connect();
    await this.authenticate(ch);
    this.checkCancelled();

    await source.beginMigrationOut(this.peer);
    this.migratingOut = true;
    const mem = await source.memory();
    const swapOutCold = source.swapOutCold?.bind(source);
    if (needs.swap && !swapOutCold) throw new MigrationError('MIGRATION_UNSUPPORTED', 'this VM cannot swap out: Agile migration needs a swap device');
    const swapped = () => mem.absent.some((a) => a === ABSENT_SWAP);
    if ((needs.postcopy !== 'never' || needs.swap || swapped()) && this.version < POSTCOPY_VERSION) {
      throw new MigrationError('MIGRATION_UNSUPPORTED', `${needs.postcopy !== 'never' ? `${this.mode} migration` : 'a VM with pages on its swap device'} needs protocol version ${POSTCOPY_VERSION}; the destination speaks ${this.version}`);
    }
    if (this.opts.timeout?.strategy === 'postcopy' && this.version < POSTCOPY_VERSION) {
      throw new MigrationError('MIGRATION_UNSUPPORTED', `--on-timeout postcopy needs protocol version ${POSTCOPY_VERSION}; the destination speaks ${this.version}`);
    }
    this.tracker.move({ kind: 'reservation' });
    await ch.send(configMessage(source.config));
    await rehearseScans(mem);
    // Agile's swap-out runs while the destination reserves: neither waits for the other.
    if (needs.swap) {
      try {
        this.swapOut = await swapOutCold!();
      } catch (e) {
        throw new MigrationError('MIGRATION_UNSUPPORTED', e instanceof Error ? e.message : String(e), { cause: e });
      }
    }

    // Until Reserved arrives, everything that needs no destination: the dirty log's start and
    // the first round's plan, which would otherwise follow the reservation.
    const planner = new PrecopyPlanner({
      pageCount: mem.pageCount,
      ...(this.opts.rate ? { rate: this.opts.rate } : {}),
      ...(this.opts.downtimeLimitMs !== undefined ? { downtimeLimitMs: this.opts.downtimeLimitMs } : {}),
      ...(this.opts.maxRounds !== undefined ? { maxRounds: this.opts.maxRounds } : needs.roundBudget !== undefined ? { maxRounds: needs.roundBudget } : {}),
      ...(this.opts.minPages !== undefined ? { minPages: this.opts.minPages } : {}),
      ...(this.opts.maxSentFactor !== undefined ? { maxSentFactor: this.opts.maxSentFactor } : {}),
      holdNoProgress: () => this.control.converger.canTighten,
      transferTargetMs: () => this.control.converger.transferTargetMs,
    });
    this.planner = planner;
    this.destNonZero = new Uint8Array(mem.pageCount);
    const zeroPages = new ZeroPages(mem.bytes);
    const inRamNonZero = (p: number): boolean => mem.absent[p] === 0 && !zeroPages.isZero(p);

    // Everything written from here on shows up in the log, so round 1 may read RAM live; what
    // the guest touches from here on is its working set at the switch.
    await source.harvestDirtyLog();
    await source.harvestAccessLog?.();
    let lastLog: Uint8Array | undefined;
    let converged = false;
    // Pure post-copy: find the non-zero pages while the VM still runs, so the pause only adds
    // what was written since (the dirty log); scanning all of RAM for zeros takes longer than
    // the rest of the switch.
    const prescan = needs.precopyRounds ? undefined : await this.scanNonZero(mem.pageCount, inRamNonZero);
    // Round 1 plans every resident page: sending tests each for zeros anyway, where the test
    // overlaps the link's time instead of delaying the round's start.
    const firstPlan = needs.precopyRounds ? planner.beginFirstRound((p) => mem.absent[p] === 0) : undefined;
    await ch.expect(['Reserved'], this.timeouts.reserveMs, 'reservation');

    if (firstPlan) {
      let plan = firstPlan;
      for (;;) {
        this.tracker.move({ kind: 'precopy', round: plan.round });
        const t0 = performance.now();
        const bytes = await this.sendRound(ch, plan, mem, zeroPages);
        await this.endRound(ch, plan.round);
        lastLog = await source.harvestDirtyLog();
        for (const p of this.unsent.splice(0)) lastLog[p] = 1;
        const decision = planner.endRound({ durationMs: performance.now() - t0, dirtyLog: lastLog, bytesSent: bytes, pagesSent: this.roundCounts.sent });
        if (decision.stop) {
          converged = decision.rule === 'downtime' || decision.rule === 'min-pages';
          break;
        }
        this.checkCancelled();
        if (this.control.cut) {
          planner.stopNow('timeout');
          break;
        }
        plan = planner.beginRound(lastLog);
        await this.control.afterRound(planner, plan.pages.length);
      }
      const last = planner.lastRound;
      this.expectedAtSwitch = last ? nullIfInfinite(planner.estimateDowntimeMs(last.pagesDirtied)) : null;
      await this.control.endRounds();
    }
    // Post-copy when asked, for hybrid and Agile when the rounds did not converge, or when the
    // deadline said so.
    const postcopy = needs.postcopy === 'always' || (needs.postcopy === 'unless-converged' && !converged && this.control.cut !== 'force') || this.control.cut === 'postcopy';

    // Evictions' writes (the swap-out's, the policy's last) ran alongside the rounds. The switch
    // tells the destination which pages to read from the device, so they must be there first.
    try {
      await source.swapDurable?.();
    } catch (e) {
      throw new MigrationError('MIGRATION_SOURCE_FAILED', `the swap device did not take the evicted pages: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    // Stop-and-copy: the VM pauses here.
    this.checkCancelled();
    const freezeRequestedAt = wallClockMs();
    this.pausedAt = performance.now();
    const frozen = await source.freeze();
    this.frozen = true;
    const timeline = new SwitchTimeline();
    this.timeline = timeline;
    timeline.mark('freeze-requested', freezeRequestedAt);
    timeline.mark('paused', frozen.pausedAtMs);
    this.pausedAtWall = frozen.pausedAtMs;
    timeline.mark('frozen');
    // A switch that stalls (a dead link, a hung destination) is abandoned within a bound tied
    // to the downtime limit, and the VM resumes here.
    const switchBound = setTimeout(() => ch.fail(new MigrationError('MIGRATION_TIMEOUT', `the switch did not commit within ${this.timeouts.commitMs} ms of the pause`)), this.timeouts.commitMs);
    let peerPages: Uint32Array | undefined;
    let plan: RoundPlan;
    try {
      // v3: the state first, so the destination loads it while the last pages arrive; after
      // them when pages stay absent, which the destination marks before it loads the state.
      const swapped = markedRuns(mem.absent, ABSENT_SWAP);
      const stateFirst = this.version >= SWITCH_VERSION && !postcopy && swapped.length === 0;
      if (stateFirst) await this.sendDeviceState(ch, frozen, timeline);
      plan = lastLog ? planner.beginRound(lastLog, frozen.dirtyLog) : planner.beginOnlyRound(prescan!, frozen.dirtyLog);
      this.tracker.move({ kind: 'stop-and-copy', round: plan.round });
      const t0 = performance.now();
      let bytes: number;
      if (postcopy) {
        const r = await this.sendAbsentRound(ch, plan.round, plan.pages, mem, zeroPages);
        bytes = r.bytes;
        peerPages = r.peerPages;
      } else {
        bytes = await this.sendRound(ch, plan, mem, zeroPages);
      }
      bytes += await this.sendAbsent(ch, 'swap', swapped);
      this.swappedAtSwitch = swapped.reduce((n, r) => n + r.count, 0);
      await ch.send({ type: 'RoundEnd', round: plan.round, pagesSent: this.roundCounts.sent, pagesZeroed: this.roundCounts.zeroed });
      timeline.mark('last-page-sent');
      if (!stateFirst) await this.sendDeviceState(ch, frozen, timeline);
      await ch.send({ type: 'CommitRequest', finalRound: plan.round });
      planner.endRound({ durationMs: performance.now() - t0, bytesSent: bytes, pagesSent: this.roundCounts.sent });
      this.tracker.move({ kind: 'commitment' });
      await this.awaitMessage(ch, 'Committed', this.timeouts.commitMs, 'commitment');
    } finally {
      clearTimeout(switchBound);
    }
    timeline.mark('committed');

    // The commit point: from here on the destination's copy is the VM.
    this.committed = true;
    this.tracker.move({ kind: 'activation' });
    await ch.send({ type: 'Activate' });
    timeline.mark('activate');
    // Frames that reached us since the freeze go after Activate, not before: the destination
    // delivers them once its guest runs, and the guest's resume does not wait for them.
    await this.carryFrames(ch, false);
    if (!peerPages || peerPages.length === 0) {
      await this.awaitMessage(ch, 'Done', this.timeouts.activateMs, 'activation');
      this.downtimeMs = this.downtimeSoFar();
      timeline.mark('done');
      await this.carryFrames(ch, true);
      await this.awaitSwitchTimes();
    } else {
      await this.postcopy(ch, mem, peerPages, plan.round + 1, source.harvestAccessLog ? frozen.accessLog : undefined);
    }
    this.migratingOut = false;
    // The VM runs at the destination and our copy may be discarded: the migration's total time
    // (Clark et al.) ends here; stopping the copy is tidying up, and a failure of it does not
    // undo the move.
    this.tracker.move({ kind: 'completed' });
    await source.endMigrationOut({ committed: true }).catch(() => undefined);
  }

  /**
   * The post-copy phase. Pages flow from Activate on, not from Done: resuming the VM may itself
   * touch absent pages (a NIC's announcement writes guest buffers), and the destination
   * answers Activate only once it runs. Done, when it comes, ends the downtime.
   */
  /** Ms since the vCPU stopped; since the freeze was asked for when it never answered. */
  private downtimeSoFar(): number {
    return round1(this.pausedAtWall !== undefined ? wallClockMs() - this.pausedAtWall : performance.now() - this.pausedAt!);
  }

  private async postcopy(ch: MigrationChannel, mem: PagedMemory, peerPages: Uint32Array, round: number, touched: Uint8Array | undefined): Promise<void> {
    // Pushed pages keep to the migration's rate cap; the ack window (pusher.ts) keeps requested ones from queueing.
    const r = this.opts.rate ?? DEFAULT_DYNAMIC_RATE;
    const rate = r.mode === 'fixed' ? r.rate : r.cap;
    let done = false;
    let tail: Promise<void> | undefined;
    const onDone = (): void => {
      done = true;
      this.downtimeMs = this.downtimeSoFar();
      this.timeline?.mark('done');
      this.tracker.move({ kind: 'postcopy' });
      // Beside the push: the last frames, then SwitchEnd, which the destination answers.
      tail = this.carryFrames(ch, true);
    };
    const pusher = new PostcopyPusher({
      ch, ram: mem.bytes, pages: peerPages, round, codec: this.codec, rate, ackTimeoutMs: this.timeouts.stallMs,
      // The guest's working set at the switch goes first: what it touched during the migration.
      ...(touched ? { hot: peerPages.filter((p) => touched[p] !== 0) } : {}),
      onSent: (pages, wire, raw) => {
        this.counts.sent += pages;
        this.counts.wire += wire;
        this.counts.raw += raw;
        this.emitProgress(false);
      },
      onMessage: (m) => {
        if (m.type === 'SwitchTimes') return this.onSwitchTimes(m);
        if (m.type !== 'Done' || done) return false;
        onDone();
        return true;
      },
    });
    this.pusher = pusher;
    for (const pages of this.earlyRequests.splice(0)) pusher.request(pages);
    this.push = await pusher.run();
    if (!done) {
      await this.awaitMessage(ch, 'Done', this.timeouts.activateMs, 'activation');
      onDone();
    }
    await tail;
    const complete = await this.awaitMessage(ch, 'PostcopyComplete', this.timeouts.stallMs, 'the end of post-copy');
    const pct = this.stallPercentiles;
    await this.awaitSwitchTimes();
    this.postcopyStats = {
      faults: complete.faults, stallUsTotal: complete.stallUsTotal, stallUsMax: complete.stallUsMax, duplicates: complete.duplicates,
      stallUs: pct ? { p50: pct.p50Us, p99: pct.p99Us, max: pct.maxUs } : null,
    };
  }

  /**
   * The switch of a post-copy: pages of the final set that are zero go as ZeroRuns (when the
   * destination may hold them non-zero); the rest are announced absent, to be pushed or
   * requested once the VM runs there.
   */
  private async sendAbsentRound(ch: MigrationChannel, round: number, pages: Uint32Array, mem: PagedMemory, zeroPages: ZeroPages): Promise<{ bytes: number; peerPages: Uint32Array }> {
    const destNonZero = this.destNonZero!;
    this.round = round;
    this.roundCounts.sent = 0;
    this.roundCounts.zeroed = 0;
    const peer: number[] = [];
    const zeros: number[] = [];
    for (const p of pages) {
      if (mem.absent[p] !== 0) continue;
      if (!zeroPages.isZero(p)) {
        peer.push(p);
        continue;
      }
      this.counts.zero++;
      if (destNonZero[p] === 0) continue;
      destNonZero[p] = 0;
      zeros.push(p);
    }
    let bytes = 0;
    for (const z of pageRuns(zeros)) {
      bytes += await this.put(ch, ch.encoder.encode({ type: 'ZeroRun', round, firstPage: z.first, count: z.count }), Number.POSITIVE_INFINITY);
      this.roundCounts.zeroed += z.count;
    }
    const peerPages = Uint32Array.from(peer);
    bytes += await this.sendAbsent(ch, 'peer', pageRuns(peerPages));
    this.pagesAtRisk = peerPages.length;
    return { bytes, peerPages };
  }

  /**
   * Sends the NIC frames that reached the frozen VM since its state was taken (protocol v3).
   * With `last` (after Done) it goes on until the LAN has learned the VM's new port, which shows
   * as the frames stopping: at least CARRY_MIN_MS after Done and CARRY_QUIET_MS without a frame
   * (frames still on their way through this host's TAP and threads arrive meanwhile), at most
   * CARRY_MAX_MS; then SwitchEnd, which the destination answers with its half of the timeline.
   * Best effort after the commit point: a failure here loses frames, not the VM.
   */
  private async carryFrames(ch: MigrationChannel, last: boolean): Promise<void> {
    if (this.version < SWITCH_VERSION) return;
    try {
      const start = performance.now();
      let lastFrame = start;
      for (;;) {
        const sent = await this.carryOnce(ch);
        const now = performance.now();
        if (sent > 0) lastFrame = now;
        if (!last) break;
        if ((now - start >= CARRY_MIN_MS && now - lastFrame >= CARRY_QUIET_MS) || now - start >= CARRY_MAX_MS) break;
        await sleep(CARRY_POLL_MS);
      }
      if (last) {
        this.switchTimesArrived = new Promise((resolve) => { this.switchTimes = resolve; });
        await ch.send({ type: 'SwitchEnd' });
      }
    } catch {
      // The VM runs at the destination either way; the report then shows fewer frames carried.
    }
  }

  /** One hand-over of the frames the frozen VM holds; returns how many went. */
  private async carryOnce(ch: MigrationChannel): Promise<number> {
    const taken = await this.opts.source.takeCarriedFrames?.();
    let sent = 0;
    for (const n of taken?.nics ?? []) {
      for (let i = 0; i < n.frames.length; i += MAX_CARRIED_FRAMES) {
        const frames = n.frames.slice(i, i + MAX_CARRIED_FRAMES);
        await ch.send({ type: 'Frames', nic: n.nic, frames });
        sent += frames.length;
      }
    }
    this.timeline?.carriedFrames(sent, taken?.dropped ?? 0);
    return sent;
  }

  /** The destination's SwitchTimes: already handed over (by the post-copy push or while
   * waiting for another message), or read here, where nothing else reads the return path any
   * more; gives up quietly after SWITCH_TIMES_MS. */
  private async awaitSwitchTimes(): Promise<void> {
    const arrived = this.switchTimesArrived;
    if (!arrived) return;
    const ch = this.channel!;
    const timeout = new Promise<void>((resolve) => setTimeout(resolve, SWITCH_TIMES_MS).unref());
    const reader = (async () => {
      while (this.switchTimes) {
        const m = await ch.next(SWITCH_TIMES_MS, 'the switch timeline');
        if (m.type === 'SwitchTimes') this.onSwitchTimes(m);
      }
    })().catch(() => undefined);
    await Promise.race([arrived, timeout, reader]);
  }

  private onSwitchTimes(m: Extract<ProtocolMessage, { type: 'SwitchTimes' }>): boolean {
    this.timeline?.destinationSaw(m);
    const resolve = this.switchTimes;
    this.switchTimes = undefined;
    resolve?.(m);
    return true;
  }

  private async scanNonZero(pageCount: number, nonZero: (p: number) => boolean): Promise<Uint8Array> {
    const marks = new Uint8Array(pageCount);
    for (let p = 0; p < pageCount; p++) {
      if (nonZero(p)) marks[p] = 1;
      if (p % YIELD_EVERY_PAGES === YIELD_EVERY_PAGES - 1) { await yieldNow(); this.checkCancelled(); }
    }
    return marks;
  }

  private async sendAbsent(ch: MigrationChannel, origin: AbsentOrigin, runs: { first: number; count: number }[]): Promise<number> {
    let bytes = 0;
    for (let i = 0; i < runs.length; i += MAX_ABSENT_RUNS) {
      bytes += await this.put(ch, ch.encoder.encode({ type: 'Absent', origin, runs: runs.slice(i, i + MAX_ABSENT_RUNS) }), Number.POSITIVE_INFINITY);
    }
    return bytes;
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
    this.version = version;
    if (version !== challenge.version) {
      throw new MigrationError('MIGRATION_PROTOCOL', `the destination chose version ${challenge.version}, the common one is ${version}`);
    }
    const transcript = { version, tokenId: token.id, sourceNonce, destinationNonce: challenge.destinationNonce };
    await ch.send({ type: 'Auth', proof: sourceProof(token.secret, transcript) });
    const ok = await ch.expect(['AuthOk'], this.timeouts.handshakeMs, 'authentication');
    verifyDestination(token.secret, transcript, ok.proof);
  }

  /** Sends one round's pages; returns the bytes it put on the wire. */
  private async sendRound(ch: MigrationChannel, plan: RoundPlan, mem: PagedMemory, zeroPages: ZeroPages): Promise<number> {
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
      const frame = encodePages(ch.encoder, plan.round, pages, raw, this.codec);
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
      // On the swap device: the destination reads it from there (Absent, origin swap).
      if (mem.absent[page] !== 0) continue;
      if (!plan.final && this.control.cut) {
        // The deadline passed: this round ends here, and the rest goes at the switch.
        for (let j = i; j < plan.pages.length; j++) this.unsent.push(plan.pages[j]!);
        break;
      }
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

  private async sendDeviceState(ch: MigrationChannel, frozen: FrozenVm, timeline: SwitchTimeline): Promise<void> {
    await ch.send({ type: 'DeviceState', state: frozen.state as unknown as Record<string, unknown> });
    timeline.mark('device-state-sent');
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

  /** Waits for `type`, passing over RoundAcks still on their way and keeping page requests of
   * a destination that already runs the VM for the push. */
  private async awaitMessage<K extends 'Committed' | 'Done' | 'PostcopyComplete'>(ch: MigrationChannel, type: K, timeoutMs: number, what: string): Promise<Extract<ProtocolMessage, { type: K }>> {
    for (;;) {
      // PostcopyAcks of the last pushed frames arrive after the push ends: nothing to do.
      const m: ProtocolMessage = await ch.expect([type, 'RoundAck', 'PageRequest', 'PostcopyAck', 'SwitchTimes', 'PostcopyStats'], timeoutMs, what);
      if (m.type === 'PageRequest') this.earlyRequests.push([...m.pages]);
      else if (m.type === 'SwitchTimes') this.onSwitchTimes(m);
      else if (m.type === 'PostcopyStats') this.stallPercentiles = m;
      else if (m.type === type) return m as Extract<ProtocolMessage, { type: K }>;
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
    if (this.tracker.stage.kind === 'postcopy') {
      // The guest ran at the destination: our copy is stale and must never run. Its memory was
      // split between the hosts, so the VM is lost unless the destination got every page.
      const message = `post-copy ended early: ${error.message}; the destination had ${this.pusher?.pagesRemaining ?? 0} pages still to receive; the source copy is stale and is discarded`;
      this.migratingOut = false;
      await this.opts.source.endMigrationOut({ committed: true }).catch(() => undefined);
      this.tracker.move({ kind: 'failed', error: message, code: 'MIGRATION_POSTCOPY_DESTINATION_LOST' });
      return;
    }
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
    if (this.pausedAt !== undefined) this.downtimeMs = this.downtimeSoFar();
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
      mode: this.mode,
      ...(this.mode === 'precopy' ? {
        throttle: this.control.throttleReport(),
        downtimeLimit: downtimeVerdict({
          limitMs: this.planner?.downtimeLimitMs ?? this.opts.downtimeLimitMs ?? 300,
          stopRule: planned?.stop?.rule ?? null,
          expectedMs: this.expectedAtSwitch === null ? null : Math.round(this.expectedAtSwitch),
          lastRound: planned?.rounds.filter((r) => !r.final).at(-1),
          bandwidth: this.planner?.measuredBandwidth,
          pageSize: PAGE_SIZE,
          throttle: this.control.throttleReport(),
          throttleOff: this.control.throttleOff,
          timeout: this.control.cut,
        }),
      } : {}),
      ...(this.control.timeoutReport() ? { timeout: this.control.timeoutReport()! } : {}),
      ...(this.push || this.pagesAtRisk > 0 ? {
        postcopy: {
          pagesPushed: this.push?.pagesPushed ?? 0,
          pagesRequested: this.push?.pagesRequested ?? 0,
          requests: this.push?.requests ?? 0,
          durationMs: this.push?.durationMs ?? 0,
          faults: this.postcopyStats?.faults ?? 0,
          stallUsTotal: this.postcopyStats?.stallUsTotal ?? 0,
          stallUsMax: this.postcopyStats?.stallUsMax ?? 0,
          duplicates: this.postcopyStats?.duplicates ?? 0,
          stallUs: this.postcopyStats?.stallUs ?? null,
        },
      } : {}),
      ...(this.swapOut || this.swappedAtSwitch > 0 ? {
        agile: {
          swappedPages: this.swappedAtSwitch,
          evictedPages: this.swapOut?.evictedPages ?? 0,
          workingSetPages: this.swapOut?.workingSetPages ?? null,
          swapDevice: this.swapOut?.swapDevice ?? null,
          pagesAtRisk: this.pagesAtRisk,
        },
      } : {}),
      ...(this.timeline ? { switch: this.timeline.report() } : {}),
    };
  }
}

/** The switch's scans of RAM's page maps (the planner's union, the swap runs), run ahead of it
 * while the destination reserves: each costs ms at 2 GiB until V8 has optimized it. */
async function rehearseScans(mem: PagedMemory): Promise<void> {
  for (let i = 0; i < WARM_UP_CALLS; i++) {
    countNonZero([mem.dirtyLog, mem.absent], mem.pageCount);
    markedRuns(mem.absent, ABSENT_SWAP);
    await yieldNow();
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

function nullIfInfinite(x: number): number | null {
  return Number.isFinite(x) ? x : null;
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
