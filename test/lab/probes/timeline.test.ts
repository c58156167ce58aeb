// The switch timeline and the probe's blackout on one axis, from a made-up report and probe.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { switchTimeline } from '../../../src/lab/probes/timeline.js';
import { probeFields, type ProbeReport } from '../../../src/lab/probes/report.js';
import type { MigrationReport } from '../../../src/migration/engine/report.js';

const T = 1_800_000_000_000;
const probe: ProbeReport = {
  startedAtMs: T - 5000, stoppedAtMs: T + 3000,
  udp: { intervalMs: 1, sent: 8000, received: 7960, lost: 40, duplicates: 0, maxGap: { ms: 41.5, startMs: T - 0.5, endMs: T + 41, open: false }, sendGapMaxMs: 1.4, rttMaxMs: 3 },
  stream: { bytes: 400_000, maxStall: { ms: 250, startMs: T - 2, endMs: T + 248, open: false }, intact: true, errors: 0 },
  connect: { everyMs: 25, attempts: 320, completed: 320, failed: 0, maxMs: 1012.34, medianMs: 1.1, slowestStartMs: T + 5 },
};

function report(sw?: MigrationReport['switch']): MigrationReport {
  return {
    vm: 'demo', direction: 'out', peer: 'x', outcome: 'completed', totalMs: 4000, downtimeMs: 20, bytes: 1, ramBytes: 1, rounds: [], stopRule: 'downtime',
    stages: [], compression: 'none', pages: { sent: 0, zero: 0, skipped: 0 }, pageBytes: { raw: 0, wire: 0 }, ...(sw ? { switch: sw } : {}),
  };
}

test('the timeline: the engine\'s events and the probe\'s blackout as ms from the pause, in order', () => {
  const items = switchTimeline(report({
    timeline: [
      { event: 'paused', host: 'source', atMs: T },
      { event: 'committed', host: 'destination', atMs: T + 12.25 },
      { event: 'done', host: 'source', atMs: T + 20 },
      { event: 'announce-sent', host: 'destination', atMs: T + 14 },
    ],
    clockSkewMs: 0, framesCarried: 3, framesDropped: 0,
  }), probe);
  assert.deepEqual(items?.map((i) => [i.event, i.offset_ms]), [
    ['tcp-stream-stall-start', -2],
    ['probe-last-reply-before-blackout', -0.5],
    ['paused', 0],
    ['committed', 12.3],
    ['announce-sent', 14],
    ['done', 20],
    ['probe-first-reply-after-blackout', 41],
    ['tcp-stream-resumed', 248],
  ]);
});

test('no switch section: no timeline; the row fields come from the probe alone', () => {
  assert.equal(switchTimeline(report(), probe), null);
  assert.deepEqual(probeFields(probe), { client_blackout_ms: 41.5, tcp_stall_ms: 250, tcp_connect_max_ms: 1012.3, udp_lost: 40 });
  assert.deepEqual(probeFields(null), { client_blackout_ms: null, tcp_stall_ms: null, tcp_connect_max_ms: null, udp_lost: null });
});
