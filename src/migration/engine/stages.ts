// The two ends of a migration as explicit state machines (Clark et al.'s stages). States are
// discriminated unions; every allowed move is one entry in a transition table, so the engine
// cannot, say, activate before commitment or resume a source copy after it.

import { FerryError } from '../../errors.js';

/** Source side. The commit point is `commitment` -> `activation` (Committed received). */
export type SenderStage =
  /** Connecting, version negotiation, authentication, Config: can the destination host it? */
  | { readonly kind: 'pre-migration' }
  /** Waiting for the destination to create the VM paused and hold its resources. */
  | { readonly kind: 'reservation' }
  /** Rounds of dirty pages while the VM runs here. */
  | { readonly kind: 'precopy'; readonly round: number }
  /** VM paused: the last dirty pages, then CPU and device state. */
  | { readonly kind: 'stop-and-copy'; readonly round: number }
  /** CommitRequest sent; until Committed arrives the VM is still ours to resume. */
  | { readonly kind: 'commitment' }
  /** The destination holds the VM; we told it to run and wait for Done. */
  | { readonly kind: 'activation' }
  /** The VM runs at the destination; we push the pages it lacks and answer its requests. The
   * VM's memory is split between the hosts until this ends. */
  | { readonly kind: 'postcopy' }
  | { readonly kind: 'completed' }
  /** Ended before the commit point: the VM runs (or is paused, as before) here. */
  | { readonly kind: 'failed'; readonly error: string; readonly code: string }
  /** Lost the destination after the commit point: our copy stays paused, never resumed. */
  | { readonly kind: 'in-doubt'; readonly error: string; readonly code: string };

export type ReceiverStage =
  | { readonly kind: 'pre-migration' }
  | { readonly kind: 'reservation' }
  | { readonly kind: 'receiving'; readonly round: number }
  /** DeviceState and CommitRequest in: loading the state into the reserved VM. */
  | { readonly kind: 'commitment' }
  /** Committed sent: waiting for Activate. Never runs the VM on its own. */
  | { readonly kind: 'committed' }
  | { readonly kind: 'activation' }
  /** The VM runs here with absent pages that arrive from the source. */
  | { readonly kind: 'postcopy' }
  | { readonly kind: 'completed' }
  | { readonly kind: 'failed'; readonly error: string; readonly code: string }
  | { readonly kind: 'in-doubt'; readonly error: string; readonly code: string };

type Kind<S extends { kind: string }> = S['kind'];
type Table<S extends { kind: string }> = { readonly [K in Kind<S>]: readonly Kind<S>[] };

export const SENDER_TRANSITIONS: Table<SenderStage> = {
  'pre-migration': ['reservation', 'failed'],
  'reservation': ['precopy', 'stop-and-copy', 'failed'],
  'precopy': ['precopy', 'stop-and-copy', 'failed'],
  'stop-and-copy': ['commitment', 'failed'],
  'commitment': ['activation', 'failed'],
  'activation': ['completed', 'postcopy', 'in-doubt', 'failed'],
  'postcopy': ['completed', 'failed'],
  'completed': [],
  'failed': [],
  'in-doubt': ['completed', 'failed'],
};

export const RECEIVER_TRANSITIONS: Table<ReceiverStage> = {
  'pre-migration': ['reservation', 'failed'],
  'reservation': ['receiving', 'failed'],
  'receiving': ['receiving', 'commitment', 'failed'],
  'commitment': ['committed', 'failed'],
  'committed': ['activation', 'failed', 'in-doubt'],
  'activation': ['completed', 'postcopy', 'failed'],
  'postcopy': ['completed', 'failed'],
  'completed': [],
  'failed': [],
  'in-doubt': ['completed', 'failed'],
};

export class StageTransitionError extends FerryError {
  constructor(from: string, to: string) {
    super('MIGRATION_INVALID_STAGE', `a migration cannot go from ${from} to ${to}`);
  }
}

/** Holds one side's stage and how long each stage took. */
export class StageTracker<S extends { readonly kind: string }> {
  private current: S;
  private enteredAt: number;
  private readonly t0: number;
  private endedAt: number | undefined;
  readonly timeline: { stage: string; startMs: number; durationMs: number }[] = [];

  constructor(private readonly table: Table<S>, initial: S, private readonly onChange: (s: S) => void = () => {}) {
    this.current = initial;
    this.t0 = performance.now();
    this.enteredAt = this.t0;
  }

  get stage(): S { return this.current; }
  /** Time since the start; frozen once the stage is final. */
  get elapsedMs(): number { return (this.endedAt ?? performance.now()) - this.t0; }

  /** Whether the stage is one that never changes again. */
  get ended(): boolean { return (this.table[this.current.kind as Kind<S>] ?? []).length === 0; }

  move(next: S): void {
    const allowed = this.table[this.current.kind as Kind<S>] as readonly string[];
    if (!allowed.includes(next.kind)) throw new StageTransitionError(this.current.kind, next.kind);
    const now = performance.now();
    this.close(now);
    this.current = next;
    if (this.ended) this.endedAt = now;
    this.onChange(next);
  }

  private close(now: number): void {
    const last = this.timeline[this.timeline.length - 1];
    // Rounds are one stage in the timeline; the round table has their detail.
    if (last && last.stage === this.current.kind) last.durationMs = round1(now - this.t0 - last.startMs);
    else this.timeline.push({ stage: this.current.kind, startMs: round1(this.enteredAt - this.t0), durationMs: round1(now - this.enteredAt) });
    this.enteredAt = now;
  }
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
