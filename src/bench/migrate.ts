// npm run bench:migrate -- [--json] [--memory MiB] [--case NAME]...
// ferry's live migration side by side with qemu-system-riscv64's, in the lab, on a 1 Gbit/s link
// (tbf on host-a's and host-b's uplinks), for the same guest (256 MiB, --memory): idle, and running
// memwriter over a 64 MiB working set at 5,000 pages/s. Both sides get the same rate cap
// (ferry --bandwidth 1G, QEMU max-bandwidth 125 MB/s). After every migration the guest is
// checked on the destination (a command that needs the timer; memwriter's checksum), never
// assumed alive. The 1 ms blackout probe (src/lab/probes) watches both from the client host
// (client_blackout_ms beside downtime_ms). The last line is one JSON object; ratios are
// ferry / QEMU, the worst case.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { Lab } from '../lab/lab.js';
import { ensureGuestImage } from '../guest/image.js';
import { labSpecFromEnv, runOnClient, startLabDaemons, type LabFerrySpec } from '../lab/ferry-lab.js';
import { MigrationSession } from '../lab/migration-session.js';
import { probeFields, type ProbeFields } from '../lab/probes/report.js';
import { switchTimeline, type TimelineItem } from '../lab/probes/timeline.js';
import { migrateQemu, type QemuMigrationResult } from './qemu-migrate.js';

const CASES = {
  idle: { writer: undefined },
  writer: { writer: { wssMib: 64, rate: 5000 } },
} as const;
type CaseName = keyof typeof CASES;
const LINK_MBIT = 1000;
const BANDWIDTH = '1G';

interface FerryResult extends ProbeFields {
  total_ms: number;
  downtime_ms: number | null;
  bytes: number;
  rounds: number;
  stop_rule: string | null;
  outcome: string;
  guest_alive_after: boolean;
  memory_verified: boolean;
  /** The engine's switch events and the probe's blackout, ms from the pause (null: no timeline in the report). */
  switch_timeline: TimelineItem[] | null;
}

/** Client host: boots the guest on host-a, lets the workload run, migrates to host-b. */
async function clientCase(name: CaseName, memoryMiB: number): Promise<void> {
  const log = (s: string) => process.stderr.write(`bench:migrate: ${s}\n`);
  const session = new MigrationSession(labSpecFromEnv(), log);
  try {
    const writer = CASES[name].writer;
    await session.boot(memoryMiB, writer ? { writer } : {});
    // As on the QEMU side: the workload runs a few seconds before the migration starts.
    await new Promise((r) => setTimeout(r, 3000));
    const m = await session.migrate({ bandwidth: BANDWIDTH });
    const r = m.report;
    const out: FerryResult = {
      total_ms: r.totalMs, downtime_ms: r.downtimeMs, bytes: r.bytes, rounds: r.rounds.length, stop_rule: r.stopRule,
      outcome: r.outcome, guest_alive_after: m.guestAliveAfter, memory_verified: m.memoryVerified, ...probeFields(m.probe), switch_timeline: switchTimeline(r, m.probe),
    };
    console.log(JSON.stringify(out));
  } finally {
    await session.close();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { json: { type: 'boolean' }, client: { type: 'string' }, case: { type: 'string', multiple: true }, memory: { type: 'string', default: '256' } } });
  const memoryMiB = Number(values.memory);
  if (!Number.isInteger(memoryMiB) || memoryMiB < 64) throw new Error(`--memory must be a whole number of MiB (64 or more), got '${values.memory}'`);
  if (values.client !== undefined) return clientCase(values.client as CaseName, memoryMiB);
  const log = (s: string) => process.stderr.write(`bench:migrate: ${s}\n`);
  const names = (values.case ?? Object.keys(CASES)) as CaseName[];
  for (const n of names) if (!(n in CASES)) throw new Error(`unknown case '${n}' (cases: ${Object.keys(CASES).join(', ')})`);
  await ensureGuestImage({ log });
  const work = mkdtempSync(join(tmpdir(), 'ferry-bench-migrate-'));
  const lab = await Lab.up({ prefix: `bm${process.pid % 10000}-`, shapes: { 'host-a': { rateMbit: LINK_MBIT }, 'host-b': { rateMbit: LINK_MBIT } } });
  const cases: Record<string, { ferry: FerryResult; qemu: QemuMigrationResult }> = {};
  try {
    const { spec } = await startLabDaemons(lab, work, { log });
    for (const name of names) {
      log(`${name}: ferry`);
      const ferryOut = await runClientScript(lab, spec, name, memoryMiB, log);
      log(`${name}: ferry ${JSON.stringify(ferryOut)}`);
      log(`${name}: qemu`);
      const qemu = await migrateQemu(lab, { memoryMiB, workload: name, bandwidth: 125e6 }, log);
      log(`${name}: qemu ${JSON.stringify(qemu)}`);
      cases[name] = { ferry: ferryOut, qemu };
    }
  } finally {
    await lab.down();
    rmSync(work, { recursive: true, force: true });
  }
  const rows = Object.values(cases);
  const worst = (f: (c: { ferry: FerryResult; qemu: QemuMigrationResult }) => number) => round2(Math.max(...rows.map(f)));
  const result = {
    memory_mib: memoryMiB,
    link_mbit: LINK_MBIT,
    cases,
    ferry_alive_all: rows.every((c) => c.ferry.outcome === 'completed' && c.ferry.guest_alive_after && c.ferry.memory_verified),
    qemu_alive_all: rows.every((c) => c.qemu.guest_alive_after && c.qemu.memory_verified),
    bytes_ratio: worst((c) => c.ferry.bytes / c.qemu.bytes),
    total_ratio: worst((c) => c.ferry.total_ms / c.qemu.total_ms),
    // QEMU's idle downtime is often 0-1 ms; 1 ms floors the divisor.
    downtime_ratio: worst((c) => (c.ferry.downtime_ms ?? Infinity) / Math.max(1, c.qemu.downtime_ms)),
  };
  if (!values.json) for (const [n, c] of Object.entries(cases)) log(`${n}: ferry ${c.ferry.total_ms} ms / ${c.ferry.downtime_ms} ms down / ${c.ferry.client_blackout_ms ?? '-'} ms blackout / ${(c.ferry.bytes / 1e6).toFixed(1)} MB; qemu ${c.qemu.total_ms} ms / ${c.qemu.downtime_ms} ms down / ${c.qemu.client_blackout_ms ?? '-'} ms blackout / ${(c.qemu.bytes / 1e6).toFixed(1)} MB`);
  console.log(JSON.stringify(result));
}

async function runClientScript(lab: Lab, spec: LabFerrySpec, name: CaseName, memoryMiB: number, log: (s: string) => void): Promise<FerryResult> {
  const logLines = (s: string) => { for (const l of s.split('\n')) if (l) log(l); };
  const { code, stdout } = await runOnClient(lab, spec, [fileURLToPath(import.meta.url), '--client', name, '--memory', String(memoryMiB)], logLines);
  if (code !== 0) throw new Error(`ferry's side of case ${name} failed (${code}): ${stdout}`);
  return JSON.parse(stdout.trim().split('\n').pop()!) as FerryResult;
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

await main();
