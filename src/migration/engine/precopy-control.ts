// The sender's controls over its pre-copy rounds beside the planner: the throttle that makes a
// fast writer converge (precopy/converge.ts, applied through the VM) and the migration's
// deadline (--timeout S --on-timeout cancel|postcopy|force). The sender asks it after each
// round and checks `cut` while it sends.

import type { ThrottleStats, VcpuThrottle } from '../../machine/boot/throttle.js';
import { Converger, type ConvergeMethod, type ThrottleReport } from '../precopy/converge.js';
import type { PrecopyPlanner } from '../precopy/rounds.js';
import type { TimeoutReport, TimeoutStrategy } from './report.js';

export interface MigrationTimeout {
  readonly afterMs: number;
  readonly strategy: TimeoutStrategy;
}

export interface PrecopyControlOptions {
  readonly converge: ConvergeMethod;
  readonly downtimeLimitMs: number;
  readonly pageSize: number;
  readonly timeout: MigrationTimeout | undefined;
  /** The VM's throttle (MigrationSource.throttle); without one the guest is never slowed. */
  readonly throttle: ((setting: VcpuThrottle | null) => Promise<ThrottleStats>) | undefined;
  /** The sender's stage now (the deadline acts only while pre-copy runs). */
  readonly stage: () => string;
  /** The `cancel` strategy: roll the migration back (false once past the commit point). */
  readonly cancel: (reason: string) => boolean;
}

type Deadline =
  | { readonly kind: 'none' }
  | { readonly kind: 'armed'; readonly timer: NodeJS.Timeout }
  | { readonly kind: 'fired'; readonly stage: string; readonly acted: boolean }
  | { readonly kind: 'disarmed' };

/** Stages in which a deadline can still change how the migration goes. */
const BEFORE_SWITCH = new Set(['pre-migration', 'reservation', 'precopy']);

export class PrecopyControl {
  readonly converger: Converger;
  private deadline: Deadline = { kind: 'none' };
  private switchNow: 'postcopy' | 'force' | null = null;

  constructor(private readonly opts: PrecopyControlOptions) {
    const method = opts.throttle ? opts.converge : 'off';
    this.converger = new Converger({ method, downtimeLimitMs: opts.downtimeLimitMs, pageSize: opts.pageSize });
  }

  get throttleOff(): boolean { return this.converger.method === 'off'; }

  /** Set once a postcopy or force deadline fired in time: the round in progress ends early and
   * pre-copy stops after it. */
  get cut(): 'postcopy' | 'force' | null { return this.switchNow; }

  /** Starts the deadline's clock (at the start of the migration). */
  arm(): void {
    const t = this.opts.timeout;
    if (!t || this.deadline.kind !== 'none') return;
    const timer = setTimeout(() => this.fire(t), t.afterMs);
    this.deadline = { kind: 'armed', timer };
  }

  disarm(): void {
    if (this.deadline.kind === 'armed') clearTimeout(this.deadline.timer);
    if (this.deadline.kind !== 'fired') this.deadline = { kind: 'disarmed' };
  }

  /** After a pre-copy round that did not end pre-copy: slows the guest further if it must. */
  async afterRound(planner: PrecopyPlanner, nextPages: number): Promise<void> {
    const row = planner.lastRound;
    if (!row || !this.opts.throttle) return;
    const setting = this.converger.afterRound(row, planner.measuredBandwidth, nextPages);
    if (setting) this.converger.record(await this.opts.throttle(setting));
  }

  /** Pre-copy is over: the last figures of an engaged throttle (which stays on until the pause). */
  async endRounds(): Promise<void> {
    const setting = this.converger.setting;
    if (setting && this.opts.throttle) this.converger.record(await this.opts.throttle(setting));
  }

  throttleReport(): ThrottleReport | null {
    return this.converger.report();
  }

  timeoutReport(): TimeoutReport | undefined {
    const t = this.opts.timeout;
    if (!t) return undefined;
    const d = this.deadline;
    return { afterMs: t.afterMs, strategy: t.strategy, fired: d.kind === 'fired', firedInStage: d.kind === 'fired' ? d.stage : null, acted: d.kind === 'fired' && d.acted };
  }

  private fire(t: MigrationTimeout): void {
    const stage = this.opts.stage();
    let acted = false;
    if (t.strategy === 'cancel') {
      acted = this.opts.cancel(`the migration did not finish within its timeout of ${t.afterMs / 1000} s (--on-timeout cancel)`);
    } else if (BEFORE_SWITCH.has(stage)) {
      this.switchNow = t.strategy;
      acted = true;
    }
    this.deadline = { kind: 'fired', stage, acted };
  }
}
