// What pre-copy expects, for the operator: the pause a switch would cost now and when the
// migration should end (progress events), and at the end whether the downtime limit was
// honoured and, if not, why (the report). Pure arithmetic over the planner's rounds.

import type { RoundReport, StopRule } from './rounds.js';
import type { ThrottleReport } from './converge.js';

export interface PrecopyEstimate {
  /** The pause a switch would take at the current dirty rate and bandwidth (ms); null before a
   * round has measured them. */
  readonly expectedDowntimeMs: number | null;
  /** Time to the end of the migration if rounds go on shrinking as the last did (ms). */
  readonly etaMs: number | null;
}

export interface EstimateInput {
  /** Bytes/s measured over the last round that sent anything. */
  readonly bandwidth: number | undefined;
  readonly lastRound: RoundReport | undefined;
  /** Pages the round in progress still has to go. */
  readonly pagesRemaining: number;
  readonly pageSize: number;
  readonly downtimeLimitMs: number;
  /** Pre-copy rounds the planner still allows. */
  readonly roundsLeft: number;
}

export function estimatePrecopy(e: EstimateInput): PrecopyEstimate {
  const bw = e.bandwidth;
  if (bw === undefined || !(bw > 0)) return { expectedDowntimeMs: null, etaMs: null };
  const secs = (pages: number): number => (pages * e.pageSize) / bw;
  const last = e.lastRound;
  // The set a switch would send: what the last round left dirty (the guest dirties at the same
  // rate while this one runs).
  const dirty = last?.pagesDirtied ?? e.pagesRemaining;
  const expectedDowntimeMs = Math.round(secs(dirty) * 1000);
  // Each round sends what the one before left and leaves q times as much, q the dirty rate over
  // the bandwidth; rounds stop at the downtime limit or when the planner's budget runs out.
  const q = last?.dirtyRate != null ? Math.min(1, last.dirtyRate / bw) : 0;
  let t = secs(e.pagesRemaining);
  let d = dirty;
  for (let i = 0; i < e.roundsLeft && secs(d) * 1000 > e.downtimeLimitMs; i++) {
    t += secs(d);
    d *= q;
  }
  return { expectedDowntimeMs, etaMs: Math.round((t + secs(d)) * 1000) };
}

/** Whether a pre-copy kept to its downtime limit, in the migration report. */
export interface DowntimeVerdict {
  readonly limitMs: number;
  /** The pause expected at the switch: the last set's pages at the last measured bandwidth
   * (ms); null when no round measured it. */
  readonly expectedMs: number | null;
  /** Pre-copy ended on a rule that keeps to the limit (downtime, min-pages). */
  readonly honoured: boolean;
  /** Why not, naming the rule; null when honoured. */
  readonly reason: string | null;
}

export interface VerdictInput {
  readonly limitMs: number;
  readonly stopRule: StopRule | null;
  readonly expectedMs: number | null;
  readonly lastRound: RoundReport | undefined;
  readonly bandwidth: number | undefined;
  readonly pageSize: number;
  /** How the guest was slowed (null: never), and whether slowing it was allowed at all. */
  readonly throttle: ThrottleReport | null;
  readonly throttleOff: boolean;
  /** The migration's deadline, when it fired: what it did. */
  readonly timeout: 'postcopy' | 'force' | null;
}

export function downtimeVerdict(v: VerdictInput): DowntimeVerdict {
  const base = { limitMs: v.limitMs, expectedMs: v.expectedMs };
  if (v.stopRule === 'downtime' || v.stopRule === 'min-pages') return { ...base, honoured: true, reason: null };
  if (v.timeout !== null) {
    const did = v.timeout === 'force' ? 'stopped pre-copy with whatever was dirty' : 'switched to post-copy';
    return { ...base, honoured: false, reason: `timeout: the migration's deadline passed and it ${did}` };
  }
  const rule = v.stopRule ?? 'none';
  const pages = (bytesPerS: number | null | undefined): string => (bytesPerS == null ? 'unknown' : `${Math.round(bytesPerS / v.pageSize)}`);
  const rates = `the guest dirtied ${pages(v.lastRound?.dirtyRate)} pages/s against a link of ${pages(v.bandwidth)} pages/s`;
  const t = v.throttle;
  const slowed = v.throttleOff
    ? 'the throttle was off'
    : t === null
      ? 'the throttle never engaged'
      : t.method === 'auto-converge'
        ? `even with the vCPU throttled to ${t.peakPercent}%`
        : `even with a dirty limit of ${t.minPagesPerSecond} pages/s`;
  return { ...base, honoured: false, reason: `${rule}: ${rates}, and ${slowed}` };
}
