// npm run bench:demo -- [--runs N] [--json]
// The demo's scenario (`ferry demo`: boot on host-a, move to host-b and back under HTTP and
// game load, the 1 ms blackout probe on every move) N times, each in a fresh lab with fresh
// daemons as a user's `npm run demo` gets: a cold destination is part of what the first move
// costs, and one lab for all runs would hide it from every run but the first. Summarises the
// client's blackout over every move against the reported downtime. The last line is one JSON
// object.

import { parseArgs } from 'node:util';
import { runDemoLab, type DemoResult, type DemoRow } from '../cli/demo.js';

interface RunRow {
  run: number;
  ok: boolean;
  boot_s: number | null;
  problems: readonly string[];
  migrations: readonly DemoRow[];
  error?: string;
}

const errorMessage = (e: unknown): string => (e instanceof Error ? e.message.split('\n')[0]! : String(e));
const log = (s: string) => process.stderr.write(`bench:demo: ${s}\n`);

function parseResult(stdout: string): DemoResult | null {
  try {
    return JSON.parse(stdout.trim().split('\n').pop() ?? '') as DemoResult;
  } catch {
    return null;
  }
}

function percentile(xs: readonly number[], p: number): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)]!;
}

const maxOf = (xs: readonly number[]): number | null => (xs.length === 0 ? null : Math.max(...xs));
const nums = (xs: readonly (number | null)[]): number[] => xs.filter((x): x is number => x !== null);
const r1 = (x: number | null): number | null => (x === null ? null : Math.round(x * 10) / 10);

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { json: { type: 'boolean' }, runs: { type: 'string', default: '10' } } });
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be a positive integer, got '${values.runs}'`);
  const rows: RunRow[] = [];
  for (let i = 1; i <= runs; i++) {
    log(`run ${i} of ${runs}`);
    try {
      const { code, stdout } = await runDemoLab(true, log);
      const res = parseResult(stdout);
      rows.push(res
        ? { run: i, ok: code === 0 && res.ok, boot_s: res.boot_s, problems: res.problems, migrations: res.migrations }
        : { run: i, ok: false, boot_s: null, problems: [], migrations: [], error: `the demo printed no result (status ${code}): ${stdout.slice(-300)}` });
    } catch (e) {
      rows.push({ run: i, ok: false, boot_s: null, problems: [], migrations: [], error: errorMessage(e) });
    }
    const last = rows[rows.length - 1]!;
    log(`run ${i}: ${last.ok ? 'ok' : 'FAILED'}; ${last.migrations.map((m) => `${m.from} -> ${m.to} downtime ${m.downtime_ms ?? '-'} ms, blackout ${m.client_blackout_ms ?? '-'} ms, slowest connect ${m.tcp_connect_max_ms ?? '-'} ms`).join('; ')}${last.error ? ` (${last.error})` : ''}`);
  }
  const moves = rows.flatMap((r) => r.migrations);
  const blackouts = nums(moves.map((m) => m.client_blackout_ms));
  const dropped = nums(moves.map((m) => m.frames_dropped));
  const result = {
    runs,
    ok_runs: rows.filter((r) => r.ok).length,
    moves: moves.length,
    /** Moves the probe gave no blackout figure for: they count against the bar, not in the percentiles. */
    moves_unmeasured: moves.length - blackouts.length,
    blackout_p50_ms: r1(percentile(blackouts, 0.5)),
    blackout_max_ms: r1(maxOf(blackouts)),
    downtime_p50_ms: r1(percentile(nums(moves.map((m) => m.downtime_ms)), 0.5)),
    excess_max_ms: r1(maxOf(moves.flatMap((m) => (m.client_blackout_ms !== null && m.downtime_ms !== null ? [m.client_blackout_ms - m.downtime_ms] : [])))),
    tcp_stall_max_ms: r1(maxOf(nums(moves.map((m) => m.tcp_stall_ms)))),
    tcp_connect_max_ms: r1(maxOf(nums(moves.map((m) => m.tcp_connect_max_ms)))),
    udp_lost_total: nums(moves.map((m) => m.udp_lost)).reduce((a, b) => a + b, 0),
    // Null, not 0, when no report said: the engine may not count frames yet.
    frames_dropped_total: dropped.length === 0 ? null : dropped.reduce((a, b) => a + b, 0),
    per_run: rows,
  };
  if (!values.json) log(`${result.ok_runs}/${runs} runs ok; blackout p50 ${result.blackout_p50_ms ?? '-'} ms, max ${result.blackout_max_ms ?? '-'} ms; excess max ${result.excess_max_ms ?? '-'} ms; slowest connect ${result.tcp_connect_max_ms ?? '-'} ms`);
  console.log(JSON.stringify(result));
}

await main();
