// How the run loop slows a vCPU on request (a migration whose rounds do not converge). Two
// policies, chosen by the migration engine:
//  - cpu: QEMU's auto-converge. The vCPU sleeps `percent` of each interval it runs, whatever it
//    does: a guest that computes pays as much as one that writes.
//  - dirty-limit: QEMU's dirty-limit. A token bucket of newly dirtied pages (the hart counts
//    dirty-log bytes it turns from clear to set); the vCPU stalls only when it has dirtied more
//    than its budget, so a guest that does not write runs at full speed.
// Pure arithmetic on times the run loop passes in; the loop does the sleeping.

export type VcpuThrottle =
  | { readonly kind: 'cpu'; readonly percent: number }
  | { readonly kind: 'dirty-limit'; readonly pagesPerSecond: number };

export interface ThrottleStats {
  /** Time a throttle was set, summed over every setting (ms). */
  readonly engagedMs: number;
  /** Time the vCPU spent stalled by the throttle (ms). */
  readonly stalledMs: number;
}

/** cpu: the vCPU's run time between two sleeps (QEMU's 10 ms timeslice). */
const CPU_INTERVAL_MS = 10;
/** dirty-limit: the bucket holds this much of the budget, so a short burst of writes goes on
 * without a stall and the stalls that come are a few ms each, not one long pause. */
const DIRTY_BURST_MS = 20;
/** No single stall is longer: the loop comes back to see whether it was asked to stop. */
export const MAX_STALL_MS = 1000;

type State =
  | { readonly kind: 'off' }
  | { readonly kind: 'cpu'; readonly percent: number; readonly since: number; ranMs: number }
  | { readonly kind: 'dirty-limit'; readonly pagesPerSecond: number; readonly since: number; tokens: number; last: number };

export class RunThrottle {
  private state: State = { kind: 'off' };
  private engagedMs = 0;
  private stalledMs = 0;

  /** Replaces the setting (undefined: run freely). Throws RangeError on a value out of range. */
  set(t: VcpuThrottle | undefined, now: number): void {
    this.closeEngagement(now);
    if (t === undefined) {
      this.state = { kind: 'off' };
      return;
    }
    if (t.kind === 'cpu') {
      if (!Number.isInteger(t.percent) || t.percent < 1 || t.percent > 99) throw new RangeError(`throttle percent must be an integer in 1..99, got ${t.percent}`);
      this.state = { kind: 'cpu', percent: t.percent, since: now, ranMs: 0 };
      return;
    }
    if (!(t.pagesPerSecond > 0) || !Number.isFinite(t.pagesPerSecond)) throw new RangeError(`dirty limit must be a positive number of pages/s, got ${t.pagesPerSecond}`);
    this.state = { kind: 'dirty-limit', pagesPerSecond: t.pagesPerSecond, since: now, tokens: burst(t.pagesPerSecond), last: now };
  }

  get active(): boolean { return this.state.kind !== 'off'; }

  stats(now: number): ThrottleStats {
    const s = this.state;
    return { engagedMs: this.engagedMs + (s.kind === 'off' ? 0 : now - s.since), stalledMs: this.stalledMs };
  }

  /**
   * After a slice that ran `ranMs` and newly dirtied `dirtied` pages, ending at `now`: how long
   * the vCPU should stall before its next slice (0: go on).
   */
  afterSlice(now: number, ranMs: number, dirtied: number): number {
    const s = this.state;
    if (s.kind === 'off') return 0;
    if (s.kind === 'cpu') {
      s.ranMs += ranMs;
      if (s.ranMs < CPU_INTERVAL_MS) return 0;
      // Running r ms then sleeping r * p / (100 - p) leaves the guest (100 - p) % of the time.
      const stall = (s.ranMs * s.percent) / (100 - s.percent);
      s.ranMs = 0;
      return Math.min(MAX_STALL_MS, stall);
    }
    s.tokens = Math.min(burst(s.pagesPerSecond), s.tokens + ((now - s.last) * s.pagesPerSecond) / 1000) - dirtied;
    s.last = now;
    return s.tokens >= 0 ? 0 : Math.min(MAX_STALL_MS, (-s.tokens * 1000) / s.pagesPerSecond);
  }

  /** The loop stalled for `ms` (it may have been woken early). */
  stalled(ms: number): void {
    this.stalledMs += ms;
  }

  private closeEngagement(now: number): void {
    const s = this.state;
    if (s.kind !== 'off') this.engagedMs += now - s.since;
  }
}

function burst(pagesPerSecond: number): number {
  return Math.max(1, (pagesPerSecond * DIRTY_BURST_MS) / 1000);
}
