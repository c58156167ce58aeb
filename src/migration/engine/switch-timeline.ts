// The switch as both ends saw it: each instant on the wall clock of the host that saw it, so a
// client's probe (on its own host's clock) lines up with them, and the frames carried across.
// The source keeps it; the destination's half arrives in SwitchTimes (protocol v3).

import { wallClockMs } from '../../machine/clock.js';
import type { SwitchTimesMessage } from '../protocol/messages.js';
import type { SwitchEvent, SwitchEventName, SwitchReport } from './report.js';

export class SwitchTimeline {
  private readonly events: SwitchEvent[] = [];
  private carried = 0;
  private dropped = 0;
  private heard = false;

  /** An instant on this (the source's) host; default now. */
  mark(event: SwitchEventName, atMs = wallClockMs()): void {
    this.events.push({ event, host: 'source', atMs });
  }

  /** Frames the source carried (or dropped before it could). */
  carriedFrames(sent: number, dropped: number): void {
    this.carried += sent;
    this.dropped += dropped;
  }

  /** The destination's half. Its frames dropped add to ours; frames it delivered are ours carried. */
  destinationSaw(m: SwitchTimesMessage): void {
    this.heard = true;
    for (const e of m.events) this.events.push({ event: e.event, host: 'destination', atMs: e.atMs });
    this.dropped += m.framesDropped;
  }

  /**
   * Destination clock minus source clock by NTP's formula over Activate (sent here, received
   * there) and Done (sent there, received here): exact when the two legs take equally long.
   * Null until both halves are known.
   */
  private skewMs(): number | null {
    const at = (host: SwitchEvent['host'], event: SwitchEventName) => this.events.find((e) => e.host === host && e.event === event)?.atMs;
    const a1 = at('source', 'activate');
    const b1 = at('destination', 'activate');
    const b2 = at('destination', 'done');
    const a2 = at('source', 'done');
    if (a1 === undefined || b1 === undefined || b2 === undefined || a2 === undefined) return null;
    return round2(((b1 - a1) + (b2 - a2)) / 2);
  }

  report(): SwitchReport {
    const timeline = [...this.events].sort((x, y) => x.atMs - y.atMs).map((e) => ({ ...e, atMs: round2(e.atMs) }));
    return {
      timeline,
      clockSkewMs: this.heard ? this.skewMs() : null,
      framesCarried: this.carried,
      framesDropped: this.dropped,
    };
  }
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
