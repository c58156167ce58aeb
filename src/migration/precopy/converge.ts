// Making pre-copy converge for a guest that dirties memory faster than the link sends it: when
// rounds stop gaining on the guest, slow the guest. Pure policy, like rounds.ts; the engine
// applies the settings it returns (MigrationSource.throttle) and the run loop enforces them
// (src/machine/boot/throttle.ts).
//
//  - auto-converge (QEMU): the vCPU sleeps 20 % of its time, then 10 points more after every
//    round that still dirtied over half of what it sent, up to 99 %.
//  - dirty-limit (QEMU's dirty-limit): the vCPU stalls once it has dirtied more than a budget
//    of pages/s. The budget is the dirtying the next round can absorb and still leave a set
//    that sends in a third of the downtime limit; a round that misses it halves the budget.
// While either can still tighten, pre-copy waits for that third (transferTargetMs).
//
// When to engage is QEMU's rule: two rounds in a row in which the guest dirtied more than half
// of what the round sent.

import type { ThrottleStats, VcpuThrottle } from '../../machine/boot/throttle.js';
import type { RoundReport } from './rounds.js';

export const CONVERGE_METHODS = ['dirty-limit', 'auto-converge', 'off'] as const;
export type ConvergeMethod = (typeof CONVERGE_METHODS)[number];
/** Chosen by measurement (src/migration/DESIGN.md, "Converging"). */
export const DEFAULT_CONVERGE: ConvergeMethod = 'dirty-limit';

export function isConvergeMethod(v: unknown): v is ConvergeMethod {
  return typeof v === 'string' && (CONVERGE_METHODS as readonly string[]).includes(v);
}

const TRIGGER_SHARE = 0.5;
const TRIGGER_ROUNDS = 2;
const CPU_INITIAL = 20;
const CPU_STEP = 10;
const CPU_MAX = 99;
/** While a throttle is on and can still tighten, pre-copy ends only once the last set's
 * transfer fits this share of the downtime limit, and the dirty-limit aims its budget there:
 * the `downtime` rule counts only the transfer, while the pause also holds the freeze, the
 * commit and the activation (60-400 ms on the shared lab machine). With the whole limit for the
 * transfer, the fast writer paused 326-615 ms against 300. */
const TRANSFER_SHARE = 1 / 3;
/** Halvings of the dirty-limit budget before it counts as exhausted (1/64 of its first value). */
const DIRTY_MAX_TIGHTEN = 6;
/** Below this the guest is as good as stopped: the budget does not go lower. */
const DIRTY_FLOOR_PAGES_PER_S = 16;

export interface ConvergeOptions {
  readonly method: ConvergeMethod;
  readonly downtimeLimitMs: number;
  readonly pageSize: number;
}

/** How hard the guest was slowed, in the migration report (null: never engaged). */
export interface ThrottleReport {
  readonly method: 'auto-converge' | 'dirty-limit';
  /** The pre-copy round after which the throttle was first set. */
  readonly engagedAfterRound: number;
  /** Rounds that ran throttled. */
  readonly roundsThrottled: number;
  /** auto-converge: the highest share of time the vCPU slept (%); null for dirty-limit. */
  readonly peakPercent: number | null;
  /** dirty-limit: the tightest budget (newly dirtied pages/s); null for auto-converge. */
  readonly minPagesPerSecond: number | null;
  /** From the first setting to the pause (ms). */
  readonly engagedMs: number;
  /** Time the vCPU spent stalled by the throttle (ms). */
  readonly stalledMs: number;
  /** stalledMs / engagedMs: the share of its time the guest lost while throttled. */
  readonly timeLost: number;
}

type State =
  | { readonly kind: 'watching'; highRounds: number }
  | { readonly kind: 'engaged'; readonly afterRound: number; setting: VcpuThrottle; rounds: number; tightened: number; peakPercent: number; minBudget: number };

export class Converger {
  private state: State = { kind: 'watching', highRounds: 0 };
  private stats: ThrottleStats = { engagedMs: 0, stalledMs: 0 };

  constructor(private readonly opts: ConvergeOptions) {}

  get method(): ConvergeMethod { return this.opts.method; }

  /** The setting in force (undefined: the guest runs freely). */
  get setting(): VcpuThrottle | undefined {
    return this.state.kind === 'engaged' ? this.state.setting : undefined;
  }

  /** The transfer time the planner's `downtime` rule should accept now (rounds.ts). */
  get transferTargetMs(): number {
    const L = this.opts.downtimeLimitMs;
    return this.state.kind === 'engaged' && this.canTighten ? L * TRANSFER_SHARE : L;
  }

  /** Whether slowing the guest further is still possible: until then a plateau of rounds is
   * the throttle's work in progress, not a reason to give up (rounds.ts holds no-progress). */
  get canTighten(): boolean {
    if (this.opts.method === 'off') return false;
    const s = this.state;
    // Watching: hold only while a round has already looked like a writer outrunning the link.
    if (s.kind === 'watching') return s.highRounds > 0;
    return s.setting.kind === 'cpu' ? s.setting.percent < CPU_MAX : s.tightened < DIRTY_MAX_TIGHTEN && s.setting.pagesPerSecond > DIRTY_FLOOR_PAGES_PER_S;
  }

  /**
   * After pre-copy round `row` (which did not end pre-copy): `bandwidth` is the last measured
   * rate (bytes/s) and `nextPages` the size of the round about to start. Returns a new setting
   * to apply, or undefined to leave things as they are.
   */
  afterRound(row: RoundReport, bandwidth: number | undefined, nextPages: number): VcpuThrottle | undefined {
    if (this.opts.method === 'off') return undefined;
    const high = row.pagesDirtied > TRIGGER_SHARE * Math.max(1, row.pagesSent);
    const s = this.state;
    if (s.kind === 'watching') {
      s.highRounds = high ? s.highRounds + 1 : 0;
      if (s.highRounds < TRIGGER_ROUNDS) return undefined;
      const setting = this.opts.method === 'auto-converge'
        ? { kind: 'cpu' as const, percent: CPU_INITIAL }
        : { kind: 'dirty-limit' as const, pagesPerSecond: this.budget(bandwidth, nextPages, 0) };
      this.state = {
        kind: 'engaged', afterRound: row.round, setting, rounds: 1, tightened: 0,
        peakPercent: setting.kind === 'cpu' ? setting.percent : 0,
        minBudget: setting.kind === 'dirty-limit' ? setting.pagesPerSecond : Infinity,
      };
      return setting;
    }
    s.rounds++;
    if (s.setting.kind === 'cpu') {
      if (!high || s.setting.percent >= CPU_MAX) return undefined;
      s.setting = { kind: 'cpu', percent: Math.min(CPU_MAX, s.setting.percent + CPU_STEP) };
      s.peakPercent = Math.max(s.peakPercent, s.setting.percent);
      return s.setting;
    }
    // A throttled round that still left more than the target: the budget was too loose.
    const targetPages = bandwidth !== undefined ? (bandwidth * this.opts.downtimeLimitMs * TRANSFER_SHARE) / 1000 / this.opts.pageSize : 0;
    if (row.pagesDirtied > targetPages && s.tightened < DIRTY_MAX_TIGHTEN) s.tightened++;
    s.setting = { kind: 'dirty-limit', pagesPerSecond: this.budget(bandwidth, nextPages, s.tightened) };
    s.minBudget = Math.min(s.minBudget, s.setting.pagesPerSecond);
    return s.setting;
  }

  /** The VM's figures as of the last setting (or the last query). */
  record(stats: ThrottleStats): void {
    this.stats = stats;
  }

  report(): ThrottleReport | null {
    const s = this.state;
    if (s.kind !== 'engaged') return null;
    const { engagedMs, stalledMs } = this.stats;
    return {
      method: s.setting.kind === 'cpu' ? 'auto-converge' : 'dirty-limit',
      engagedAfterRound: s.afterRound,
      roundsThrottled: s.rounds,
      peakPercent: s.setting.kind === 'cpu' ? s.peakPercent : null,
      minPagesPerSecond: s.setting.kind === 'dirty-limit' ? Math.round(s.minBudget) : null,
      engagedMs: Math.round(engagedMs),
      stalledMs: Math.round(stalledMs),
      timeLost: engagedMs > 0 ? Math.round((stalledMs / engagedMs) * 100) / 100 : 0,
    };
  }

  /**
   * The dirty rate (pages/s) at which the next round, sending `nextPages` at `bandwidth`, leaves
   * TRANSFER_SHARE of the downtime limit's worth of pages: with T the round's time and L the
   * target, budget x T = bandwidth x L, so budget = bandwidth x L / T, halved `tightened` times.
   */
  private budget(bandwidth: number | undefined, nextPages: number, tightened: number): number {
    const bw = bandwidth !== undefined && bandwidth > 0 ? bandwidth / this.opts.pageSize : 0;
    if (bw === 0) return DIRTY_FLOOR_PAGES_PER_S;
    const targetS = (this.opts.downtimeLimitMs / 1000) * TRANSFER_SHARE;
    const roundS = Math.max(targetS, nextPages / bw);
    const budget = (bw * targetS) / roundS / 2 ** tightened;
    return Math.max(DIRTY_FLOOR_PAGES_PER_S, Math.round(budget));
  }
}
