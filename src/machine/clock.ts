// Guest time. The hart's `time` CSR and every timer compare against this clock, which runs
// at the virt board's 10 MHz timebase from the host's monotonic clock plus an offset. The
// offset is what a snapshot or migration carries, so guest time continues without jumping
// back (or ahead by the time the VM spent paused, when the caller chooses so).

import { VIRT_TIMEBASE_FREQUENCY } from './devices/virt-map.js';

const TICKS_PER_MS = VIRT_TIMEBASE_FREQUENCY / 1000;

export class GuestClock {
  private offsetTicks: number;
  private frozenAt: number | undefined;

  constructor(startTicks = 0) {
    this.offsetTicks = startTicks - performance.now() * TICKS_PER_MS;
  }

  /** Current guest time in timebase ticks. Frozen while the VM is paused. */
  ticks(): number {
    return this.frozenAt ?? Math.floor(performance.now() * TICKS_PER_MS + this.offsetTicks);
  }

  /** Stops guest time (pause); resume() continues from the same value. */
  freeze(): void {
    if (this.frozenAt === undefined) this.frozenAt = this.ticks();
  }

  resume(): void {
    if (this.frozenAt === undefined) return;
    const at = this.frozenAt;
    this.frozenAt = undefined;
    this.set(at);
  }

  set(ticks: number): void {
    this.offsetTicks = ticks - performance.now() * TICKS_PER_MS;
  }

  /** Host milliseconds until guest time reaches `ticks` (0 if already there). */
  msUntil(ticks: bigint): number {
    const d = Number(ticks) - this.ticks();
    return d <= 0 ? 0 : d / TICKS_PER_MS;
  }
}

/** The host's wall clock in epoch ms with sub-millisecond precision. Unlike performance.now(),
 * whose origin is each thread's start, it compares across threads and processes: the switch's
 * timeline puts events of the daemon, the VM's worker and the lab's client on one axis. */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}
