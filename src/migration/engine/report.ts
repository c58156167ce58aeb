// What a migration tells its operator: live progress while it runs and a report when it ends.
// JSON-safe (no Infinity, no bigint): the API returns these as they are.

import type { RoundReport, StopRule } from '../precopy/rounds.js';
import type { ThrottleReport } from '../precopy/converge.js';
import type { DowntimeVerdict } from '../precopy/estimate.js';

export type { ThrottleReport, DowntimeVerdict };

export type MigrationDirection = 'out' | 'in';
export type MigrationOutcome = 'running' | 'completed' | 'failed' | 'in-doubt';

export interface MigrationProgress {
  /** Current stage (SenderStage/ReceiverStage kind). */
  readonly stage: string;
  readonly round: number;
  /** Bytes on the wire so far, framing included. */
  readonly bytes: number;
  readonly pagesSent: number;
  /** Pages the current round still has to go (source) — 0 when unknown. */
  readonly pagesRemaining: number;
  readonly elapsedMs: number;
  /** Source, during pre-copy: the pause a switch would take at the current dirty rate and
   * bandwidth (ms); null until a round has measured them. */
  readonly expectedDowntimeMs?: number | null;
  /** Source: expected time to the end of the migration (ms); null while unknown. */
  readonly etaMs?: number | null;
}

export const TIMEOUT_STRATEGIES = ['cancel', 'postcopy', 'force'] as const;
/** What a migration does at its deadline: roll back (the VM stays on the source), switch to
 * post-copy, or stop and copy whatever the downtime. */
export type TimeoutStrategy = (typeof TIMEOUT_STRATEGIES)[number];

export interface TimeoutReport {
  readonly afterMs: number;
  readonly strategy: TimeoutStrategy;
  readonly fired: boolean;
  /** The stage it fired in (null: it did not). */
  readonly firedInStage: string | null;
  /** Whether the strategy ran: a deadline that passes after pre-copy ended changes nothing. */
  readonly acted: boolean;
}

export interface MigrationReport {
  readonly vm: string;
  readonly direction: MigrationDirection;
  /** The other daemon's migration address. */
  readonly peer: string;
  readonly outcome: MigrationOutcome;
  readonly error?: { readonly code: string; readonly message: string };
  readonly totalMs: number;
  /** Pause on the source to Done from the destination (which it sends once the VM runs);
   * null when the VM was never paused for a switch-over. */
  readonly downtimeMs: number | null;
  /** Bytes on the wire in both directions, framing included. */
  readonly bytes: number;
  readonly ramBytes: number;
  readonly rounds: readonly RoundReport[];
  /** Which rule ended pre-copy (null if it never ended). */
  readonly stopRule: StopRule | null;
  readonly stages: readonly { readonly stage: string; readonly startMs: number; readonly durationMs: number }[];
  readonly compression: string;
  /** Page counts over the whole migration. */
  readonly pages: { readonly sent: number; readonly zero: number; readonly skipped: number };
  /** Page data bytes before and after compression. */
  readonly pageBytes: { readonly raw: number; readonly wire: number };
  /** precopy | postcopy | hybrid | agile (source side). */
  readonly mode?: string;
  /** When the switch left pages behind: the push and what the destination measured. */
  readonly postcopy?: PostcopyReport;
  /** When the VM had pages on its swap device. */
  readonly agile?: AgileReport;
  /** Source, pre-copy mode: how the guest was slowed to converge; null when it never was. */
  readonly throttle?: ThrottleReport | null;
  /** Source, pre-copy mode: whether the downtime limit was kept, and if not why. */
  readonly downtimeLimit?: DowntimeVerdict;
  /** Source, when the migration had a deadline (--timeout). */
  readonly timeout?: TimeoutReport;
  /** The switch as both ends saw it (source reports; absent before the pause). */
  readonly switch?: SwitchReport;
}

/** The instants of a switch, in the order they happen. `paused`: the vCPU stopped; `frozen`:
 * in-flight I/O drained, disks flushed, state taken, and the source engine has it. */
export type SwitchEventName =
  | 'freeze-requested' | 'paused' | 'frozen' | 'last-page-sent' | 'device-state-sent' | 'state-loaded' | 'committed' | 'activate'
  | 'first-instruction' | 'first-frame-out' | 'announce-sent' | 'done';

/** One instant of the switch by the wall clock of the host that saw it: epoch ms with
 * sub-millisecond precision (performance.timeOrigin + performance.now()). */
export interface SwitchEvent {
  readonly event: SwitchEventName;
  readonly host: 'source' | 'destination';
  readonly atMs: number;
}

export interface SwitchReport {
  /** In time order, each event on its own host's clock. */
  readonly timeline: readonly SwitchEvent[];
  /** Destination clock minus source clock, estimated over Activate and Done (NTP's formula);
   * null without the destination's half. On one machine (the lab) the clocks are one and this
   * shows the estimate's own error. */
  readonly clockSkewMs: number | null;
  /** Frames that reached the source's NIC after its state was taken, carried over the stream
   * and delivered on the destination. */
  readonly framesCarried: number;
  /** Frames lost at the switch (a backlog full on either end). */
  readonly framesDropped: number;
}

export interface PostcopyReport {
  readonly pagesPushed: number;
  /** Pages the destination asked for (a vCPU or device waited on them). */
  readonly pagesRequested: number;
  readonly requests: number;
  readonly durationMs: number;
  /** Faults that waited for the network, their summed and longest stall (microseconds). */
  readonly faults: number;
  readonly stallUsTotal: number;
  readonly stallUsMax: number;
  /** Pages that arrived twice: 0 by design. */
  readonly duplicates: number;
  /** The stalls' distribution (µs; protocol v3), null without faults or from an older peer. */
  readonly stallUs: { readonly p50: number; readonly p99: number; readonly max: number } | null;
}

export interface AgileReport {
  /** Pages on the swap device at the switch: the destination faults them from there. */
  readonly swappedPages: number;
  /** Pages swapped out when the migration began. */
  readonly evictedPages: number;
  readonly workingSetPages: number | null;
  readonly swapDevice: string | null;
  /** Pages only the source held while post-copy ran (not on the destination, not on the swap
   * device): what a source failure would lose. */
  readonly pagesAtRisk: number;
}

/** How a side's stage reads in its report: the outcome and, for an unhappy end, its error. */
export function reportEnd(stage: { readonly kind: string; readonly error?: string; readonly code?: string }): Pick<MigrationReport, 'outcome' | 'error'> {
  switch (stage.kind) {
    case 'completed': return { outcome: 'completed' };
    case 'failed': case 'in-doubt':
      return { outcome: stage.kind, error: { code: stage.code ?? 'MIGRATION_INTERNAL', message: stage.error ?? '' } };
    default: return { outcome: 'running' };
  }
}
