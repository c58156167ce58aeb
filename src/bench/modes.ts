// npm run bench:modes -- [--json] [--workload NAME]... [--mode MODE]...
// ferry's four migration modes side by side in the lab: pre-copy (Clark et al.), post-copy,
// hybrid (pre-copy rounds, then post-copy) and Agile (Deshpande et al.: cold pages stay on the
// VM's swap device on shared storage, only the working set crosses the link). One 512 MiB guest
// per workload, booted twice: without a swap device for pre-copy, post-copy and hybrid (all of
// its memory stays resident, the baseline), and with a 512 MiB swap export on the storage host
// (nbdkit memory plugin) for Agile:
//   idle  - nothing but the UDP game server; 1 Gbit/s links
//   ws25  - memwriter fills 400 MiB with non-zero data, then writes 2,000 pages/s to the first
//           128 MiB (25% of RAM) and reads every page of those 128 MiB every 200 ms: a working
//           set of a quarter of RAM while most of RAM is cold non-zero data; 1 Gbit/s links
//   fast  - memwriter dirtying FAST_RATE pages/s over a FAST_HOT_MIB hot set, faster than the
//           200 Mbit/s link carries pages, so pre-copy cannot converge and stops on a cap
// On each VM the modes run in turn, alternating host-a -> host-b -> host-a ..., with a settling
// pause before each (Agile needs seconds of access tracking before cold pages are swapped out).
// On ws25 each mode runs three times and its row is the median-total run (`total_ms_runs` lists
// all three), so the Agile/pre-copy ratio is not one noisy pair. Per migration: total and down time, bytes, the game client's
// longest gap, the 1 ms blackout probe's client_blackout_ms and TCP figures, memwriter's throughput during the migration over before it, the guest alive and
// its memory verified afterwards, and the report's stop rule and post-copy/Agile figures. A
// failed migration is a row with its error, not the end of the run. The last line is one JSON
// object.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { Lab, type NbdServer } from '../lab/lab.js';
import { ensureGuestImage } from '../guest/image.js';
import { labSpecFromEnv, runOnClient, startLabDaemons, type LabFerrySpec } from '../lab/ferry-lab.js';
import { MigrationSession, type GuestWork, type MigrateOptions, type MigrationMode, type VmMemoryView, type WriterThroughput } from '../lab/migration-session.js';
import { CONVERGE_METHODS, isConvergeMethod as isThrottle, type ConvergeMethod as Throttle } from '../migration/precopy/converge.js';
import type { MigrationReport, PostcopyReport } from '../migration/engine/report.js';
import { probeFields, type ProbeFields } from '../lab/probes/report.js';
import { switchTimeline, type TimelineItem } from '../lab/probes/timeline.js';

const MEMORY_MIB = 512;
const MODES: readonly MigrationMode[] = ['precopy', 'postcopy', 'hybrid', 'agile'];
const FAST_RATE = 20_000;
const FAST_HOT_MIB = 96;
/** How often each mode migrates on a workload: the 1/3 comparison on ws25 takes the median of
 * three, because one pair of runs on this shared machine varies by ±15%. */
const WORKLOADS: Record<string, { readonly work: GuestWork; readonly linkMbit: number; readonly bandwidth: string; readonly runs?: number }> = {
  idle: { work: { game: true }, linkMbit: 1000, bandwidth: '1G' },
  ws25: { work: { game: true, writer: { wssMib: 400, hotMib: 128, rate: 2000, touchMs: 200, reportMs: 250 } }, linkMbit: 1000, bandwidth: '1G', runs: 3 },
  fast: { work: { game: true, writer: { wssMib: 192, hotMib: FAST_HOT_MIB, rate: FAST_RATE, reportMs: 250 } }, linkMbit: 200, bandwidth: '200M' },
};
/** Quiet time before each migration: Agile's access tracking needs several seconds to call
 * pages cold (and each check's verification has just read every page of memwriter's set). */
const SETTLE_MS = 15_000;
/** The last part of the settling pause, over which memwriter's undisturbed rate is measured. */
const RATE_WINDOW_MS = 5_000;
const SWAP_PORT = 10820;
/** Pre-copy's give-up rules: the run hit a cap rather than converging. */
const CAP_RULES = new Set(['max-rounds', 'sent-3x-memory', 'no-progress']);

interface MemoryRow { total_mib: number; resident_mib: number; swapped_mib: number; working_set_mib: number | null }

interface ModeRow extends ProbeFields {
  mode: MigrationMode;
  from: string;
  to: string;
  outcome: string;
  error?: { code: string; message: string };
  total_ms: number | null;
  downtime_ms: number | null;
  bytes: number | null;
  rounds: number | null;
  stop_rule: string | null;
  client_gap_ms: number | null;
  game_packets_lost: number | null;
  writer_pages_per_s_before: number | null;
  writer_pages_per_s_during: number | null;
  throughput_ratio: number | null;
  guest_alive_after: boolean;
  memory_verified: boolean;
  /** The VM's memory as its daemon reported it just before the migration (null: not reported). */
  memory_before: MemoryRow | null;
  report_mode: string | null;
  /** Milliseconds per stage of the source's report (where the total went). */
  stages_ms: Record<string, number> | null;
  postcopy: unknown;
  agile: unknown;
  switch_timeline: TimelineItem[] | null;
  /** Pre-copy's throttle (report.throttle): null when it never engaged. */
  throttle: unknown;
  /** The post-copy faults' waits for pages from the source (report.postcopy.stallUs, in ms):
   * null without a post-copy phase or without faults. Faults served from Agile's swap device
   * are not timed yet. */
  fault_latency_ms: { p50: number; p99: number; max: number } | null;
  /** The longest the vCPU waited at once for a page from the source (post-copy); null when it
   * never waited. */
  max_vcpu_stall_ms: number | null;
}

const ms1 = (us: number): number => Math.round(us / 100) / 10;

function faultFields(pc: PostcopyReport | undefined): Pick<ModeRow, 'fault_latency_ms' | 'max_vcpu_stall_ms'> {
  if (!pc || pc.faults === 0) return { fault_latency_ms: null, max_vcpu_stall_ms: null };
  return {
    fault_latency_ms: pc.stallUs ? { p50: ms1(pc.stallUs.p50), p99: ms1(pc.stallUs.p99), max: ms1(pc.stallUs.max) } : null,
    max_vcpu_stall_ms: ms1(pc.stallUsMax),
  };
}

interface WorkloadInfo {
  link_mbit: number;
  writer: GuestWork['writer'] | null;
  /** The Agile VM's swap export. */
  swap_device: string | null;
  /** Per VM: 'plain' (no swap device: pre-copy, post-copy, hybrid) and 'agile'. */
  boot_s: Partial<Record<'plain' | 'agile', number>>;
  memory_settled: Partial<Record<'plain' | 'agile', MemoryRow | null>>;
  error?: string;
}

interface ClientOut { info: WorkloadInfo; rows: ModeRow[] }

const log = (s: string) => process.stderr.write(`bench:modes: ${s}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function memoryRow(m: VmMemoryView | null): MemoryRow | null {
  if (!m) return null;
  const mib = (b: number) => Math.round((b / 1048576) * 10) / 10;
  return { total_mib: mib(m.totalBytes), resident_mib: mib(m.residentBytes), swapped_mib: mib(m.swappedBytes), working_set_mib: m.workingSetBytes === null ? null : mib(m.workingSetBytes) };
}

function errorOf(e: unknown): { code: string; message: string } {
  const code = typeof e === 'object' && e !== null && 'code' in e && typeof (e as { code: unknown }).code === 'string' ? (e as { code: string }).code : 'ERROR';
  return { code, message: e instanceof Error ? e.message.split('\n')[0]! : String(e) };
}

/** Client host: one workload, all modes. Prints one JSON line (ClientOut). */
async function clientWorkload(name: string, modes: readonly MigrationMode[], swap: string | undefined, throttle: Throttle | undefined): Promise<void> {
  const w = WORKLOADS[name]!;
  const info: WorkloadInfo = { link_mbit: w.linkMbit, writer: w.work.writer ?? null, swap_device: swap ?? null, boot_s: {}, memory_settled: {} };
  const rows: ModeRow[] = [];
  // The baseline modes run on a VM without a swap device, which keeps all its memory resident
  // (what pre-copy, post-copy and hybrid move); Agile runs on its own boot of the same guest
  // with the swap device, so no baseline profits from Agile's evictions.
  const groups: { vm: 'plain' | 'agile'; modes: MigrationMode[] }[] = [
    { vm: 'plain', modes: modes.filter((m) => m !== 'agile') },
    { vm: 'agile', modes: modes.filter((m) => m === 'agile') },
  ];
  for (const g of groups) {
    if (g.modes.length === 0) continue;
    if (g.vm === 'agile' && swap === undefined) throw new Error('agile needs --swap');
    const session = new MigrationSession(labSpecFromEnv(), (s) => log(`${name}/${g.vm}: ${s}`));
    try {
      const boot = await session.boot(MEMORY_MIB, w.work, g.vm === 'agile' ? { swap: swap! } : {});
      info.boot_s[g.vm] = Math.round(boot * 10) / 10;
      log(`${name}: ${g.vm} guest up after ${info.boot_s[g.vm]} s`);
      for (const mode of g.modes.flatMap((m) => Array.from({ length: w.runs ?? 1 }, () => m))) {
        await sleep(SETTLE_MS - (w.work.writer ? RATE_WINDOW_MS : 0));
        const before = w.work.writer ? await session.writerRate(RATE_WINDOW_MS).catch(() => null) : null;
        const memory = memoryRow(await session.vmMemory().catch(() => null));
        info.memory_settled[g.vm] ??= memory;
        log(`${name}/${mode}: ${session.host} -> ...; memory ${memory ? JSON.stringify(memory) : 'not reported'}${before ? `, memwriter ${before.pagesPerSec} pages/s` : ''}`);
        rows.push(await migrateOnce(session, name, mode, { bandwidth: w.bandwidth, ...(throttle ? { throttle } : {}) }, memory, before));
      }
    } catch (e) {
      info.error = `${g.vm}: ${errorOf(e).message}`;
      log(`${name}: ${info.error}`);
    } finally {
      await session.close();
    }
  }
  console.log(JSON.stringify({ info, rows } satisfies ClientOut));
}

async function migrateOnce(session: MigrationSession, name: string, mode: MigrationMode, opts: MigrateOptions, memory: MemoryRow | null, before: WriterThroughput | null): Promise<ModeRow> {
  const from = session.host;
  const base = {
    mode, from, memory_before: memory,
    writer_pages_per_s_before: before?.pagesPerSec ?? null,
  };
  try {
    // Pre-copy is the daemon's default: it is not named, so it also runs on a daemon that does
    // not know `mode` yet.
    const m = await session.migrate({ ...opts, ...(mode !== 'precopy' ? { mode } : {}) }, undefined, { writer: before !== null });
    const r = m.report as MigrationReport & { mode?: string; postcopy?: PostcopyReport; agile?: unknown };
    const during = m.writerDuring?.pagesPerSec ?? null;
    const row: ModeRow = {
      ...base, to: m.to, outcome: r.outcome, ...(r.error ? { error: r.error } : {}),
      total_ms: r.totalMs, downtime_ms: r.downtimeMs, ...probeFields(m.probe), bytes: r.bytes, rounds: r.rounds.length, stop_rule: r.stopRule,
      client_gap_ms: m.clientGapMs, game_packets_lost: m.gameLost,
      writer_pages_per_s_during: during,
      throughput_ratio: before && during !== null && before.pagesPerSec > 0 ? round2(during / before.pagesPerSec) : null,
      guest_alive_after: m.guestAliveAfter, memory_verified: m.memoryVerified,
      report_mode: r.mode ?? null, stages_ms: Object.fromEntries(r.stages.map((s) => [s.stage, Math.round(s.durationMs)])),
      postcopy: r.postcopy ?? null, agile: r.agile ?? null, switch_timeline: switchTimeline(r, m.probe), throttle: r.throttle ?? null,
      ...faultFields(r.postcopy),
    };
    log(`${name}/${mode}: ${JSON.stringify(row)}`);
    return row;
  } catch (e) {
    const error = errorOf(e);
    log(`${name}/${mode}: failed: ${error.code}: ${error.message}`);
    const { alive, memory: verified } = await session.check().catch(() => ({ alive: false, memory: false }));
    return {
      ...base, to: from === 'host-a' ? 'host-b' : 'host-a', outcome: 'error', error,
      total_ms: null, downtime_ms: null, ...probeFields(null), bytes: null, rounds: null, stop_rule: null, client_gap_ms: null, game_packets_lost: null,
      writer_pages_per_s_during: null, throughput_ratio: null,
      guest_alive_after: alive, memory_verified: verified, report_mode: null, stages_ms: null, postcopy: null, agile: null, switch_timeline: null, throttle: null,
      fault_latency_ms: null, max_vcpu_stall_ms: null,
    };
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      json: { type: 'boolean' }, client: { type: 'string' }, swap: { type: 'string' },
      workload: { type: 'string', multiple: true }, mode: { type: 'string', multiple: true },
      // Pre-copy's throttle for every migration (default: the daemon's), to compare methods.
      throttle: { type: 'string' },
    },
  });
  const throttle = values.throttle;
  if (throttle !== undefined && !isThrottle(throttle)) throw new Error(`unknown throttle '${throttle}' (throttles: ${CONVERGE_METHODS.join(', ')})`);
  const modes = (values.mode ?? MODES) as MigrationMode[];
  for (const m of modes) if (!MODES.includes(m)) throw new Error(`unknown mode '${m}' (modes: ${MODES.join(', ')})`);
  if (values.client !== undefined) return clientWorkload(values.client, modes, values.swap, throttle);
  const names = values.workload ?? Object.keys(WORKLOADS);
  for (const n of names) if (!(n in WORKLOADS)) throw new Error(`unknown workload '${n}' (workloads: ${Object.keys(WORKLOADS).join(', ')})`);

  await ensureGuestImage({ log });
  const work = mkdtempSync(join(tmpdir(), 'ferry-bench-modes-'));
  const lab = await Lab.up({ prefix: `bmo${process.pid % 10000}-` });
  const out: Record<string, ClientOut> = {};
  try {
    const { spec } = await startLabDaemons(lab, work, { log });
    for (const [i, name] of names.entries()) {
      const w = WORKLOADS[name]!;
      for (const host of ['host-a', 'host-b'] as const) await lab.shape(host, { rateMbit: w.linkMbit });
      let swap: NbdServer | undefined;
      try {
        swap = await lab.startNbd(`swap-${name}`, { sizeBytes: MEMORY_MIB << 20, port: SWAP_PORT + i });
        log(`${name}: ${w.linkMbit} Mbit/s links, swap nbd://${swap.address}:${swap.port}/`);
        out[name] = await runClientScript(lab, spec, name, modes, `nbd://${swap.address}:${swap.port}/`, throttle);
      } catch (e) {
        log(`${name}: ${errorOf(e).message}`);
        out[name] = { info: { link_mbit: w.linkMbit, writer: w.work.writer ?? null, swap_device: swap ? `nbd://${swap.address}:${swap.port}/` : null, boot_s: {}, memory_settled: {}, error: errorOf(e).message }, rows: [] };
      } finally {
        await swap?.stop().catch(() => undefined);
      }
    }
  } finally {
    await lab.down();
    rmSync(work, { recursive: true, force: true });
  }

  // One row per mode: with repeated runs, the run with the median total (all runs' totals beside it).
  const workloads: Record<string, Record<string, ModeRow & { total_ms_runs?: (number | null)[] }>> = {};
  for (const [name, o] of Object.entries(out)) workloads[name] = Object.fromEntries(modes.flatMap((m) => {
    const runs = o.rows.filter((r) => r.mode === m);
    if (runs.length === 0) return [];
    if (runs.length === 1) return [[m, runs[0]!]];
    const sorted = [...runs].sort((a, b) => (a.total_ms ?? Infinity) - (b.total_ms ?? Infinity));
    return [[m, { ...sorted[Math.floor((sorted.length - 1) / 2)]!, total_ms_runs: runs.map((r) => r.total_ms) }]];
  }));
  const rows = Object.values(out).flatMap((o) => o.rows);
  const ok = (r: ModeRow | undefined) => r !== undefined && r.outcome === 'completed' && r.guest_alive_after && r.memory_verified;
  const fast = workloads['fast'] ?? {};
  const ws25 = workloads['ws25'] ?? {};
  const precopyCapped = fast['precopy'] !== undefined && CAP_RULES.has(fast['precopy'].stop_rule ?? '');
  const ratio = (a: number | null | undefined, b: number | null | undefined) => (a != null && b != null && b > 0 ? round2(a / b) : null);
  const result = {
    memory_mib: MEMORY_MIB,
    modes,
    setup: Object.fromEntries(Object.entries(out).map(([n, o]) => [n, o.info])),
    workloads,
    all_alive_verified: rows.length === names.reduce((n, w) => n + modes.length * (WORKLOADS[w]!.runs ?? 1), 0) && rows.every(ok),
    agile_vs_precopy_total_ratio: ok(ws25['agile']) && ok(ws25['precopy']) ? ratio(ws25['agile']!.total_ms, ws25['precopy']!.total_ms) : null,
    agile_vs_precopy_bytes_ratio: ok(ws25['agile']) && ok(ws25['precopy']) ? ratio(ws25['agile']!.bytes, ws25['precopy']!.bytes) : null,
    fast_precopy_stop_rule: fast['precopy']?.stop_rule ?? null,
    postcopy_converged_fast_writer: precopyCapped && ok(fast['postcopy']),
    hybrid_converged_fast_writer: precopyCapped && ok(fast['hybrid']),
    // Completed migrations only (a failed one's figures are in its row).
    fast_downtime_ms: Object.fromEntries(Object.entries(fast).map(([m, r]) => [m, r.outcome === 'completed' ? r.downtime_ms : null])),
    throughput_ratio: Object.fromEntries(Object.entries(workloads).filter(([n]) => n !== 'idle').map(([n, w]) => [n, Object.fromEntries(Object.entries(w).map(([m, r]) => [m, r.outcome === 'completed' ? r.throughput_ratio : null]))])),
  };
  if (!values.json) {
    for (const [n, w] of Object.entries(workloads)) {
      for (const [m, r] of Object.entries(w)) {
        log(`${n.padEnd(5)} ${m.padEnd(8)} ${r.outcome.padEnd(9)} total ${r.total_ms ?? '-'} ms, down ${r.downtime_ms ?? '-'} ms, blackout ${r.client_blackout_ms ?? '-'} ms, ${r.bytes !== null ? (r.bytes / 1e6).toFixed(1) : '-'} MB, gap ${r.client_gap_ms ?? '-'} ms, throughput x${r.throughput_ratio ?? '-'}, ${r.guest_alive_after ? 'alive' : 'NOT ALIVE'}, ${r.memory_verified ? 'verified' : 'NOT VERIFIED'}${r.error ? ` (${r.error.code})` : ''}`);
      }
    }
  }
  console.log(JSON.stringify(result));
}

async function runClientScript(lab: Lab, spec: LabFerrySpec, name: string, modes: readonly MigrationMode[], swap: string, throttle: Throttle | undefined): Promise<ClientOut> {
  const logLines = (s: string) => { for (const l of s.split('\n')) if (l) process.stderr.write(`${l}\n`); };
  const args = [fileURLToPath(import.meta.url), '--client', name, '--swap', swap, ...modes.flatMap((m) => ['--mode', m]), ...(throttle ? ['--throttle', throttle] : [])];
  const { code, stdout } = await runOnClient(lab, spec, args, logLines);
  const last = stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(last) as ClientOut;
  } catch {
    throw new Error(`the client side of workload ${name} failed (${code}): ${stdout.slice(-500)}`);
  }
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

await main();
