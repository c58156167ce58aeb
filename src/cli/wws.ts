// `ferry wws NAME`: measures a running VM's writable working set, the pages its guest dirties in
// each short interval (Clark et al., NSDI 2005, §4), to judge how it will migrate and what
// bandwidth a migration needs.

import { UsageError } from './errors.js';
import { connect, parse, table, GlobalOptions } from './vm.js';
import type { WwsTrace } from '../vm/types.js';

/** Node's fetch gives up on a response whose headers take over 5 minutes; the route answers
 * only once the trace is done, so the CLI stays under that. */
const MAX_DURATION_MS = 290_000;

const USAGE = `usage: ferry [--host URL] wws NAME [--interval MS] [--duration MS|Ns] [--json]

Samples the pages the guest of NAME (running) dirties in each interval: its writable working
set. Prints the dirty pages (and MB) of every interval and a summary: mean, max, p50, p90
pages per interval and the dirty rate they imply. A migration's pre-copy keeps up only with a
bandwidth above that rate.

  --interval MS        length of one interval, 10..60000 ms (default 50)
  --duration MS|Ns     how long to sample: milliseconds, or seconds with "s" (default 5s;
                       at most ${MAX_DURATION_MS / 1000}s)
  --json               the trace and its summary as one JSON object
  --host URL, --token T, --state DIR   the daemon (as for \`ferry vm\`)`;

export interface WwsSummary {
  readonly intervals: number;
  readonly meanPages: number;
  readonly maxPages: number;
  readonly p50Pages: number;
  readonly p90Pages: number;
  /** Dirtied bytes over the measured time: what pre-copy has to keep up with. */
  readonly dirtyBytesPerSec: number;
}

/** Parses `--duration`: plain milliseconds, or "ms"/"s" suffixed. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s)?$/.exec(text.trim());
  if (!m) throw new UsageError(`invalid --duration '${text}' (examples: 5000, 5000ms, 5s)`);
  return Math.round(Number(m[1]) * (m[2] === 's' ? 1000 : 1));
}

/** Nearest-rank percentile of ascending `sorted`. */
function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export function summarize(trace: WwsTrace): WwsSummary {
  const pages = trace.dirtyPages;
  const sorted = [...pages].sort((a, b) => a - b);
  const total = pages.reduce((a, b) => a + b, 0);
  const ms = trace.measuredIntervalMs.reduce((a, b) => a + b, 0) || pages.length * trace.intervalMs;
  return {
    intervals: pages.length,
    meanPages: pages.length > 0 ? total / pages.length : 0,
    maxPages: sorted.length > 0 ? sorted[sorted.length - 1]! : 0,
    p50Pages: percentile(sorted, 50),
    p90Pages: percentile(sorted, 90),
    dirtyBytesPerSec: ms > 0 ? (total * trace.pageSize * 1000) / ms : 0,
  };
}

export async function wwsCommand(argv: string[], globals: GlobalOptions = {}): Promise<number> {
  if (argv.length === 0) { console.log(USAGE); return 2; }
  const { values, common, args } = parse(argv, {
    interval: { type: 'string' },
    duration: { type: 'string' },
  } as const, ['NAME']);
  if (common.help) { console.log(USAGE); return 0; }
  const name = args[0]!;
  let intervalMs = 50;
  if (values.interval !== undefined) {
    intervalMs = /^\d+$/.test(values.interval.trim()) ? Number(values.interval.trim()) : NaN;
    if (!(intervalMs >= 10 && intervalMs <= 60_000)) throw new UsageError(`--interval must be an integer in 10..60000 (ms), got '${values.interval}'`);
  }
  const durationMs = values.duration !== undefined ? parseDuration(values.duration) : 5000;
  if (durationMs < intervalMs || durationMs > MAX_DURATION_MS) {
    throw new UsageError(`--duration must be between --interval (${intervalMs} ms) and ${MAX_DURATION_MS / 1000}s, got '${values.duration ?? ''}'`);
  }
  const client = connect(common, globals);
  if (process.stderr.isTTY) process.stderr.write(`wws ${name}: sampling every ${intervalMs} ms for ${(durationMs / 1000).toFixed(1)} s...`);
  let trace: WwsTrace;
  try {
    trace = await client.request<WwsTrace>('POST', `/v1/vms/${encodeURIComponent(name)}/wws`, { intervalMs, durationMs });
  } finally {
    if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  }
  const summary = summarize(trace);
  if (common.json) { console.log(JSON.stringify({ ...trace, summary })); return 0; }
  const mb = (pages: number): string => ((pages * trace.pageSize) / 1e6).toFixed(2);
  let at = 0;
  const rows = trace.dirtyPages.map((pages, i) => {
    const ms = trace.measuredIntervalMs[i] ?? trace.intervalMs;
    at += ms;
    return [String(i + 1), String(Math.round(at)), String(Math.round(ms)), String(pages), mb(pages)];
  });
  console.log(table([['#', 'AT ms', 'ms', 'PAGES', 'MB'], ...rows]));
  const rate = summary.dirtyBytesPerSec;
  console.log(`
${name}: ${summary.intervals} intervals of ${trace.intervalMs} ms, ${trace.pageSize}-byte pages
  pages per interval: mean ${summary.meanPages.toFixed(1)}, max ${summary.maxPages}, p50 ${summary.p50Pages}, p90 ${summary.p90Pages}
  dirty rate:         ${(rate / 1e6).toFixed(2)} MB/s (${((rate * 8) / 1e6).toFixed(1)} Mbit/s)`);
  return 0;
}
