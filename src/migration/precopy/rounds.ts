// The pre-copy round planner: what to send each round, which pages to skip, and when to
// stop iterating and switch to stop-and-copy. Pure bookkeeping; the engine owns the VM,
// the dirty log and the wire, and drives this class:
//
//   const plan1 = planner.beginFirstRound(page => !isZero(page));   // clear the dirty log first
//   for (const page of plan.pages) if (!planner.shouldSkip(page, mem.dirtyLog)) send(page);
//   const log = harvestAndClear(mem.dirtyLog);
//   const d = planner.endRound({ durationMs, dirtyLog: log });
//   if (!d.stop) plan = planner.beginRound(log);
//   else { pause(); plan = planner.beginRound(log, harvestAndClear(mem.dirtyLog)); ...send all...; planner.endRound(...) }

import { PAGE_SIZE } from '../../machine/memory/guest-memory.js';
import { countNonZero, nonZeroPages } from '../../machine/memory/page-maps.js';
import { RateController, type RateConfig, DEFAULT_DYNAMIC_RATE } from './rate.js';

/** `timeout`: the engine ended pre-copy on the migration's deadline (stopNow), not a rule. */
/** A pause's page transfer this short is not worth another pre-copy round (see worthAnotherRound). */
export const SWITCH_FLOOR_MS = 5;

export type StopRule = 'downtime' | 'max-rounds' | 'sent-3x-memory' | 'min-pages' | 'no-progress' | 'timeout';

export interface PlannerOptions {
  pageCount: number;
  pageSize?: number;
  rate?: RateConfig;
  /** Target pause for stop-and-copy, in ms (QEMU's downtime-limit; default 300). */
  downtimeLimitMs?: number;
  /** Pre-copy rounds before giving up (the stop-and-copy round is not counted; default 30). */
  maxRounds?: number;
  /** Give up once total bytes sent exceed this many times RAM (default 3). */
  maxSentFactor?: number;
  /** Stop when fewer than this many pages remain dirty (default 50). */
  minPages?: number;
  /** Window N of the no-progress rule (default 5; 0 disables it). */
  noProgressRounds?: number;
  /** Improvement a round must show over the earlier best to count as progress (default 0.05). */
  noProgressShrink?: number;
  /** While this says true, no-progress does not fire: something is still slowing the guest
   * (converge.ts), and rounds that have not gained yet are its work in progress. */
  holdNoProgress?: () => boolean;
  /** The transfer time (ms) the `downtime` rule accepts, asked at each round's end; default
   * the whole limit. A throttle that can still slow the guest asks for less, leaving the rest
   * of the pause to the switch's fixed costs (converge.ts). */
  transferTargetMs?: () => number;
}

export interface RoundPlan {
  /** 1-based. */
  round: number;
  /** True for stop-and-copy: the VM is paused, nothing is skipped. */
  final: boolean;
  /** Pages to send, ascending. */
  pages: Uint32Array;
  /** Rate limit for this round in bytes/s; Infinity = unpaced. */
  rateLimit: number;
}

export interface RoundStats {
  durationMs: number;
  /** The dirty log harvested (and cleared) at the end of this round: 1 byte per page. May be
   * left out for the stop-and-copy round, which the paused VM dirties nothing during. */
  dirtyLog?: Uint8Array;
  /** Bytes actually put on the wire, if the engine knows better than pages x page size. */
  bytesSent?: number;
  /** Pages actually sent, if the engine knows better than planned minus skipped (zero pages
   * and pages on a swap device are planned but not sent). */
  pagesSent?: number;
}

export type RoundDecision = { stop: false } | { stop: true; rule: StopRule };

export interface RoundReport {
  round: number;
  final: boolean;
  pagesPlanned: number;
  pagesSent: number;
  pagesSkipped: number;
  /** Distinct pages dirtied during the round (the next round's work). */
  pagesDirtied: number;
  bytesSent: number;
  durationMs: number;
  /** Rate limit in bytes/s; null = unpaced (JSON has no Infinity). */
  rateLimit: number | null;
  /** bytesSent / duration, bytes/s; null if the round took no time. */
  measuredRate: number | null;
  /** Dirtied bytes / duration, bytes/s; null if the round took no time. */
  dirtyRate: number | null;
}

export interface PlannerReport {
  pageCount: number;
  pageSize: number;
  ramBytes: number;
  rounds: RoundReport[];
  totals: { pagesSent: number; pagesSkipped: number; bytesSent: number; durationMs: number };
  stop: { rule: StopRule; afterRound: number } | null;
}

type Phase = 'idle' | 'in-round' | 'stopped' | 'in-final' | 'done';

export class PrecopyPlanner {
  readonly pageCount: number;
  readonly pageSize: number;
  readonly downtimeLimitMs: number;
  readonly maxRounds: number;
  readonly maxSentFactor: number;
  readonly minPages: number;
  readonly noProgressRounds: number;
  readonly noProgressShrink: number;
  readonly rate: RateController;

  private phase: Phase = 'idle';
  private round = 0;
  private plan: RoundPlan | undefined;
  private skippedThisRound = 0;
  // Pages skipped this round: the live log should carry them into the next harvest anyway,
  // but folding them in here keeps a page from being lost if the engine harvests oddly.
  private readonly skipped: Uint8Array;
  private readonly rows: RoundReport[] = [];
  private totalBytes = 0;
  private bandwidth: number | undefined;
  private stopRule: StopRule | undefined;
  private stopAfter = 0;
  private readonly holdNoProgress: (() => boolean) | undefined;
  private readonly transferTargetMs: (() => number) | undefined;

  constructor(opts: PlannerOptions) {
    const intOpt = (name: string, v: number, min: number): number => {
      if (!Number.isInteger(v) || v < min) throw new RangeError(`${name} must be an integer >= ${min}, got ${v}`);
      return v;
    };
    this.pageCount = intOpt('pageCount', opts.pageCount, 1);
    this.pageSize = intOpt('pageSize', opts.pageSize ?? PAGE_SIZE, 1);
    this.maxRounds = intOpt('maxRounds', opts.maxRounds ?? 30, 1);
    this.minPages = intOpt('minPages', opts.minPages ?? 50, 0);
    this.noProgressRounds = intOpt('noProgressRounds', opts.noProgressRounds ?? 5, 0);
    this.downtimeLimitMs = opts.downtimeLimitMs ?? 300;
    if (!(this.downtimeLimitMs >= 0)) throw new RangeError(`downtimeLimitMs must be >= 0, got ${this.downtimeLimitMs}`);
    this.maxSentFactor = opts.maxSentFactor ?? 3;
    if (!(this.maxSentFactor > 0)) throw new RangeError(`maxSentFactor must be > 0, got ${this.maxSentFactor}`);
    this.noProgressShrink = opts.noProgressShrink ?? 0.05;
    if (!(this.noProgressShrink >= 0 && this.noProgressShrink < 1)) throw new RangeError(`noProgressShrink must be in [0, 1), got ${this.noProgressShrink}`);
    this.rate = new RateController(opts.rate ?? DEFAULT_DYNAMIC_RATE);
    this.holdNoProgress = opts.holdNoProgress;
    this.transferTargetMs = opts.transferTargetMs;
    this.skipped = new Uint8Array(this.pageCount);
  }

  get ramBytes(): number {
    return this.pageCount * this.pageSize;
  }

  /** Bytes/s measured over the most recent round that sent anything; undefined before that. */
  get measuredBandwidth(): number | undefined {
    return this.bandwidth;
  }

  /** Round 1: every page the predicate calls non-zero (zero pages are implicit at the target). */
  beginFirstRound(isNonZero: (page: number) => boolean): RoundPlan {
    if (this.phase !== 'idle' || this.round !== 0) throw new Error('beginFirstRound: already started');
    const pages: number[] = [];
    for (let p = 0; p < this.pageCount; p++) if (isNonZero(p)) pages.push(p);
    return this.open(Uint32Array.from(pages), false);
  }

  /** Pure post-copy: the stop-and-copy round is the first and only one, of the pages non-zero in
   * any of the maps (a scan made while the VM ran, and the log taken at the pause). */
  beginOnlyRound(...maps: Uint8Array[]): RoundPlan {
    if (this.phase !== 'idle' || this.round !== 0) throw new Error('beginOnlyRound: already started');
    for (const m of maps) this.checkLog(m);
    return this.open(nonZeroPages(maps, this.pageCount), true);
  }

  /**
   * Later rounds: the union of the given dirty logs (and pages skipped last round). After
   * `endRound` has said stop, this opens the stop-and-copy round; pass both the last
   * harvest and the one taken after pausing the VM. Scanned a word at a time: at the pause
   * this is on the downtime's path, and it reads all of RAM's log.
   */
  beginRound(...dirtyLogs: Uint8Array[]): RoundPlan {
    if (this.round === 0) throw new Error('beginRound: call beginFirstRound first');
    if (this.phase !== 'idle' && this.phase !== 'stopped') throw new Error(`beginRound: not allowed in phase ${this.phase}`);
    for (const log of dirtyLogs) this.checkLog(log);
    return this.open(nonZeroPages([this.skipped, ...dirtyLogs], this.pageCount), this.phase === 'stopped');
  }

  /**
   * The paper's skip rule: a page written again since this round began will be in the next
   * round's set, so sending it now wastes bandwidth. Call with the LIVE dirty log just
   * before sending. Returns true (and counts the skip) if the page should not be sent now.
   * Never skips in stop-and-copy: the VM is paused and this is the last chance.
   */
  shouldSkip(page: number, liveDirty: Uint8Array): boolean {
    if (this.phase === 'in-final') return false;
    if (this.phase !== 'in-round') throw new Error('shouldSkip: no round in progress');
    if (liveDirty[page] === 0 || liveDirty[page] === undefined) return false;
    if (this.skipped[page] === 0) {
      this.skipped[page] = 1;
      this.skippedThisRound++;
    }
    return true;
  }

  /**
   * Closes the current round and decides whether to keep iterating. Rules, first match
   * wins, successes before give-ups:
   *  - downtime:       remaining dirty bytes / measured bandwidth <= downtimeLimitMs, unless
   *                    rounds still halve and the transfer is above SWITCH_FLOOR_MS
   *  - min-pages:      remaining dirty pages < minPages
   *  - no-progress:    see `noProgress()`
   *  - sent-3x-memory: total bytes sent > maxSentFactor x RAM
   *  - max-rounds:     this was pre-copy round maxRounds
   * For the stop-and-copy round this records metrics and repeats the earlier decision.
   */
  endRound(stats: RoundStats): RoundDecision {
    if (this.phase !== 'in-round' && this.phase !== 'in-final') throw new Error('endRound: no round in progress');
    if (!(stats.durationMs >= 0)) throw new RangeError(`durationMs must be >= 0, got ${stats.durationMs}`);
    const plan = this.plan!;
    const final = this.phase === 'in-final';
    if (!final && stats.dirtyLog === undefined) throw new Error('endRound: a pre-copy round needs its dirty log');
    if (stats.dirtyLog !== undefined) this.checkLog(stats.dirtyLog);

    // Stop-and-copy skips nothing, and a paused VM dirties nothing unless the log says so.
    const dirtied = stats.dirtyLog === undefined ? 0 : countNonZero([stats.dirtyLog, this.skipped], this.pageCount);
    const pagesSent = stats.pagesSent ?? plan.pages.length - this.skippedThisRound;
    const bytesSent = stats.bytesSent ?? pagesSent * this.pageSize;
    const dirtyBytes = dirtied * this.pageSize;
    const secs = stats.durationMs / 1000;
    const measured = secs > 0 ? bytesSent / secs : null;
    this.rows.push({
      round: plan.round,
      final,
      pagesPlanned: plan.pages.length,
      pagesSent,
      pagesSkipped: this.skippedThisRound,
      pagesDirtied: dirtied,
      bytesSent,
      durationMs: stats.durationMs,
      rateLimit: Number.isFinite(plan.rateLimit) ? plan.rateLimit : null,
      measuredRate: measured,
      dirtyRate: secs > 0 ? dirtyBytes / secs : null,
    });
    this.totalBytes += bytesSent;
    if (measured !== null && bytesSent > 0) this.bandwidth = measured;

    if (final) {
      this.phase = 'done';
      return { stop: true, rule: this.stopRule! };
    }
    this.rate.observe(dirtyBytes, stats.durationMs);

    const rule = this.decide(dirtied);
    if (rule === undefined) {
      this.phase = 'idle';
      return { stop: false };
    }
    this.stopRule = rule;
    this.stopAfter = plan.round;
    this.phase = 'stopped';
    return { stop: true, rule };
  }

  /** The last round closed, if any. */
  get lastRound(): RoundReport | undefined {
    return this.rows[this.rows.length - 1];
  }

  /**
   * Ends pre-copy between rounds on the engine's word (a deadline), with `rule` reported as the
   * stop rule; beginRound then opens the stop-and-copy round as after any other stop.
   */
  stopNow(rule: StopRule): void {
    if (this.phase !== 'idle' || this.round === 0) throw new Error(`stopNow: not between pre-copy rounds (phase ${this.phase})`);
    this.stopRule = rule;
    this.stopAfter = this.round;
    this.phase = 'stopped';
  }

  /** Estimated stop-and-copy time (ms) for `pages` at the measured bandwidth; Infinity if unknown. */
  estimateDowntimeMs(pages: number): number {
    if (pages === 0) return 0;
    if (this.bandwidth === undefined || !(this.bandwidth > 0)) return Infinity;
    return (pages * this.pageSize * 1000) / this.bandwidth;
  }

  report(): PlannerReport {
    let pagesSent = 0, pagesSkipped = 0, durationMs = 0;
    for (const r of this.rows) {
      pagesSent += r.pagesSent;
      pagesSkipped += r.pagesSkipped;
      durationMs += r.durationMs;
    }
    return {
      pageCount: this.pageCount,
      pageSize: this.pageSize,
      ramBytes: this.ramBytes,
      rounds: this.rows.map((r) => ({ ...r })),
      totals: { pagesSent, pagesSkipped, bytesSent: this.totalBytes, durationMs },
      stop: this.stopRule === undefined ? null : { rule: this.stopRule, afterRound: this.stopAfter },
    };
  }

  private decide(remaining: number): StopRule | undefined {
    // The measured bandwidth is the paced pre-copy rate, while stop-and-copy runs unpaced,
    // so this estimate errs on the long side: the real pause should come in under it.
    const target = Math.min(this.downtimeLimitMs, this.transferTargetMs?.() ?? this.downtimeLimitMs);
    const estimate = this.estimateDowntimeMs(remaining);
    if (estimate <= target) return this.worthAnotherRound(remaining, estimate) ? undefined : 'downtime';
    if (remaining < this.minPages) return 'min-pages';
    if (this.noProgress() && !this.holdNoProgress?.()) return 'no-progress';
    if (this.totalBytes > this.maxSentFactor * this.ramBytes) return 'sent-3x-memory';
    if (this.round >= this.maxRounds) return 'max-rounds';
    return undefined;
  }

  /**
   * Within the limit, one more round still pays while rounds halve: a round that dirtied at most
   * half of what it sent predicts a next one of half its time, and so a shorter pause (Clark et
   * al. iterate while the writable working set shrinks). Not for a set under `minPages`, or a
   * transfer under SWITCH_FLOOR_MS (a round's own fixed costs, its ack and a harvest, are of
   * that order), or past the round and byte caps.
   */
  private worthAnotherRound(remaining: number, estimateMs: number): boolean {
    const last = this.rows[this.rows.length - 1];
    if (!last || remaining < this.minPages || estimateMs <= SWITCH_FLOOR_MS) return false;
    if (this.round >= this.maxRounds || this.totalBytes > this.maxSentFactor * this.ramBytes) return false;
    return last.pagesDirtied * 2 <= last.pagesSent;
  }

  /**
   * Non-convergence. Let D[i] be the pages dirtied during pre-copy round i (what round i+1
   * must send) and N = noProgressRounds. After round k > N the rule fires when none of the
   * last N rounds beat the best of all earlier rounds, strictly and by at least the shrink
   * fraction. With recent = min(D[k-N+1..k]) and best = min(D[1..k-N]):
   *     recent >= best  or  recent > (1 - noProgressShrink) * best.
   * Comparing against the best so far (not the previous round) ignores noise around a
   * plateau, and the shrink margin stops a plateau from "progressing" by single pages.
   */
  private noProgress(): boolean {
    const n = this.noProgressRounds;
    if (n === 0) return false;
    const d = this.rows.filter((r) => !r.final).map((r) => r.pagesDirtied);
    if (d.length <= n) return false;
    const earlier = Math.min(...d.slice(0, d.length - n));
    const recent = Math.min(...d.slice(d.length - n));
    return recent >= earlier || recent > (1 - this.noProgressShrink) * earlier;
  }

  private open(pages: Uint32Array, final: boolean): RoundPlan {
    this.round++;
    this.skipped.fill(0);
    this.skippedThisRound = 0;
    this.phase = final ? 'in-final' : 'in-round';
    this.plan = { round: this.round, final, pages, rateLimit: final ? this.rate.final : this.rate.current };
    return this.plan;
  }

  private checkLog(log: Uint8Array): void {
    if (log.length < this.pageCount) throw new RangeError(`dirty log covers ${log.length} pages, RAM has ${this.pageCount}`);
  }
}
