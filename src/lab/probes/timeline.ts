// The switch as the engine timed it and the blackout as the probe saw it, on one axis:
// milliseconds from the source's pause. Both use epoch ms (the engine's timeline states its
// clock skew; in the lab every host is this machine, one clock), so the gap between downtime
// and client blackout can be read item by item.

import type { MigrationReport } from '../../migration/engine/report.js';
import type { ProbeReport } from './report.js';

export interface TimelineItem {
  readonly event: string;
  readonly host: 'source' | 'destination' | 'client';
  /** Milliseconds after the pause (negative: before it). */
  readonly offset_ms: number;
}

/** Null when the report has no switch timeline (an engine that does not fill it, or no pause). */
export function switchTimeline(report: MigrationReport, probe: ProbeReport | null): TimelineItem[] | null {
  const events = report.switch?.timeline;
  if (!events || events.length === 0) return null;
  const zero = events.find((e) => e.event === 'paused')?.atMs ?? Math.min(...events.map((e) => e.atMs));
  const at = (ms: number) => Math.round((ms - zero) * 10) / 10;
  const items: TimelineItem[] = events.map((e) => ({ event: e.event, host: e.host, offset_ms: at(e.atMs) }));
  const gap = probe?.udp.maxGap;
  if (gap) {
    items.push({ event: 'probe-last-reply-before-blackout', host: 'client', offset_ms: at(gap.startMs) });
    items.push({ event: gap.open ? 'probe-stopped-without-reply' : 'probe-first-reply-after-blackout', host: 'client', offset_ms: at(gap.endMs) });
  }
  const stall = probe?.stream.maxStall;
  if (stall) {
    items.push({ event: 'tcp-stream-stall-start', host: 'client', offset_ms: at(stall.startMs) });
    items.push({ event: 'tcp-stream-resumed', host: 'client', offset_ms: at(stall.endMs) });
  }
  return items.sort((a, b) => a.offset_ms - b.offset_ms);
}

/** One line per item, for the human output. */
export function formatTimeline(items: readonly TimelineItem[], indent = '    '): string {
  return items.map((i) => `${indent}${(i.offset_ms >= 0 ? '+' : '') + i.offset_ms.toFixed(1)} ms  ${i.event} (${i.host})`).join('\n');
}
