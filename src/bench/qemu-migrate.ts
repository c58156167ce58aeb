// The QEMU half of `npm run bench:migrate`: live-migrates qemu-system-riscv64 from host-a to
// host-b in the lab (pre-copy over TCP, driven through QMP) and reports QEMU's own figures plus
// whether the guest still works on the destination. QEMU's riscv64 guest often hangs after
// migration (see ../shared/notes/anchors.md), so liveness and memory integrity are checked on
// the destination, never assumed; a hung guest is a result, not an error. The guest runs the
// same image as ferry's, so the 1 ms blackout probe watches it the same way from the client host.
//
//   node dist/src/bench/qemu-migrate.js [--json] [--case idle|writer] [--rate-mbit N]

import { mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { Lab } from '../lab/lab.js';
import { LabVm } from '../lab/vm-process.js';
import { ensureGuestImage } from '../guest/image.js';
import { GUEST_CMDLINE } from '../guest/cmdline.js';
import { FerryError } from '../errors.js';
import { BlackoutProbe } from '../lab/probes/probe.js';
import { GUEST_PROBE_COMMAND, guestProbeTarget, probeFields, type ProbeFields } from '../lab/probes/report.js';

export interface QemuMigrationCase {
  memoryMiB: number;
  workload: 'idle' | 'writer';
  /** bytes/s, applied as QEMU max-bandwidth */
  bandwidth: number;
}

export interface QemuMigrationResult extends ProbeFields {
  total_ms: number;
  downtime_ms: number;
  bytes: number;
  rounds: number;
  status: string;
  guest_alive_after: boolean;
  memory_verified: boolean;
}

const MIGRATION_PORT = 4444;
const WRITER_CMD = 'memwriter --wss-mib 64 --rate 5000';
/** How long the writer runs on the source before the migration starts. */
const WRITER_WARM_MS = 3000;
const MIGRATION_TIMEOUT_MS = 120_000;
const ALIVE_TIMEOUT_MS = 10_000;
const VERIFY_TIMEOUT_MS = 15_000;
const BOOT_TIMEOUT_MS = 120_000;
/** As MigrationSession does: the probe watches on a while after the switch. */
const PROBE_SETTLE_MS = 1500;

type JsonObject = { [k: string]: unknown };

/** A minimal QMP client: one command in flight at a time, events skipped. */
export class QmpClient {
  private buf = '';
  private pending: { resolve: (v: JsonObject) => void; reject: (e: Error) => void } | undefined;
  private greeting: ((v: JsonObject) => void) | undefined;
  private closedError: Error | undefined;
  /** Every event QEMU sent, in order (e.g. MIGRATION, RESUME, STOP). */
  readonly events: JsonObject[] = [];

  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    const onEnd = (err?: Error): void => {
      this.closedError = err ?? new FerryError('QMP_CLOSED', 'QMP connection closed');
      this.pending?.reject(this.closedError);
      this.pending = undefined;
    };
    sock.on('error', (e) => onEnd(e));
    sock.on('close', () => onEnd());
  }

  /** Connects (retrying while the socket does not exist yet), reads the greeting and leaves
   * capabilities negotiation mode. */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let qmp: QmpClient | undefined;
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => { s.removeAllListeners('error'); resolve(s); });
          s.once('error', reject);
        });
        const client = new QmpClient(sock);
        qmp = client;
        await withTimeout(new Promise<JsonObject>((r) => { client.greeting = r; }), 5000, 'the QMP greeting');
        await client.execute('qmp_capabilities');
        return client;
      } catch (err) {
        qmp?.close();
        if (Date.now() > deadline) throw new FerryError('QMP_CONNECT', `cannot open QMP at ${path}: ${String(err)}`);
        await sleep(100);
      }
    }
  }

  private onData(d: string): void {
    this.buf += d;
    for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      let msg: JsonObject;
      try {
        msg = JSON.parse(line) as JsonObject;
      } catch {
        continue;
      }
      if ('QMP' in msg) {
        this.greeting?.(msg);
        this.greeting = undefined;
      } else if ('event' in msg) {
        this.events.push(msg);
      } else if ('return' in msg || 'error' in msg) {
        const p = this.pending;
        this.pending = undefined;
        if (!p) continue;
        if ('error' in msg) {
          const e = msg['error'] as { class?: string; desc?: string };
          p.reject(new FerryError('QMP_ERROR', `QMP error ${e.class ?? '?'}: ${e.desc ?? JSON.stringify(e)}`));
        } else {
          p.resolve(msg['return'] as JsonObject);
        }
      }
    }
  }

  execute(command: string, args?: JsonObject, timeoutMs = 5000): Promise<JsonObject> {
    if (this.closedError) return Promise.reject(this.closedError);
    if (this.pending) return Promise.reject(new FerryError('QMP_BUSY', 'a QMP command is already in flight'));
    const reply = new Promise<JsonObject>((resolve, reject) => { this.pending = { resolve, reject }; });
    this.sock.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
    return withTimeout(reply, timeoutMs, `QMP ${command}`).finally(() => { this.pending = undefined; });
  }

  close(): void { this.sock.destroy(); }
}

/**
 * Boots the guest under QEMU on host-a, starts an incoming QEMU with the same configuration on
 * host-b, optionally starts the memory writer, migrates, and checks the guest on host-b.
 * Both QEMU processes are killed before it returns (or throws).
 */
export async function migrateQemu(lab: Lab, c: QemuMigrationCase, log: (s: string) => void = () => {}): Promise<QemuMigrationResult> {
  if (!Number.isInteger(c.memoryMiB) || c.memoryMiB <= 0) throw new FerryError('BENCH_CONFIG', `bad memoryMiB ${c.memoryMiB}`);
  if (!(Number.isFinite(c.bandwidth) && c.bandwidth > 0)) throw new FerryError('BENCH_CONFIG', `bad bandwidth ${c.bandwidth}`);
  const image = await ensureGuestImage({ log });
  const work = await mkdtemp(join(tmpdir(), 'ferry-qemu-migrate-'));
  const srcQmpPath = join(work, 'src.qmp');
  const dstQmpPath = join(work, 'dst.qmp');
  const base = { index: 0, memoryMiB: c.memoryMiB, kernel: image.kernel, initramfs: image.initramfs, cmdline: GUEST_CMDLINE };
  const vms: LabVm[] = [];
  const qmps: QmpClient[] = [];
  let probe: BlackoutProbe | undefined;
  try {
    // Same machine on both sides; only the QMP socket and -incoming differ. (The gateway in the
    // kernel command line follows the host; it lives in the FDT in guest RAM, which the
    // incoming stream overwrites, so the destination ends up with the source's.)
    const src = await LabVm.startQemu(lab, { ...base, host: 'host-a', qemuArgs: ['-qmp', `unix:${srcQmpPath},server=on,wait=off`] });
    vms.push(src);
    const dst = await LabVm.startQemu(lab, {
      ...base, host: 'host-b',
      qemuArgs: ['-qmp', `unix:${dstQmpPath},server=on,wait=off`, '-incoming', `tcp:0.0.0.0:${MIGRATION_PORT}`],
    });
    vms.push(dst);
    const srcQmp = await QmpClient.connect(srcQmpPath);
    qmps.push(srcQmp);
    const dstQmp = await QmpClient.connect(dstQmpPath);
    qmps.push(dstQmp);

    const t0 = performance.now();
    await src.ready(BOOT_TIMEOUT_MS);
    log(`qemu: source guest up on host-a in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    if (c.workload === 'writer') {
      // `& true`: the console driver appends `; echo marker`, and `&;` is a syntax error.
      await src.exec(`${WRITER_CMD} >/tmp/mw.log 2>&1 & true`, 10_000);
      await pollGuest(src, 'cat /tmp/mw.log', (out) => out.includes('memwriter: ready'), 30_000, 'memwriter ready');
      await sleep(WRITER_WARM_MS);
      const tail = (await src.exec('tail -n 1 /tmp/mw.log', 10_000)).output.trim();
      log(`qemu: writer running on the source (${tail})`);
    }

    await src.exec(GUEST_PROBE_COMMAND, 10_000);
    probe = await BlackoutProbe.start(guestProbeTarget(src.address), (args) => lab.spawn('client', process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] }));
    await srcQmp.execute('migrate-set-parameters', { 'max-bandwidth': Math.round(c.bandwidth) });
    await srcQmp.execute('migrate', { uri: `tcp:${lab.address('host-b')}:${MIGRATION_PORT}` });
    const deadline = Date.now() + MIGRATION_TIMEOUT_MS;
    let info: JsonObject;
    for (;;) {
      info = await srcQmp.execute('query-migrate');
      const status = String(info['status'] ?? '');
      if (status === 'completed' || status === 'failed' || status === 'cancelled') break;
      if (Date.now() > deadline) {
        log(`qemu: migration still '${status}' after ${MIGRATION_TIMEOUT_MS} ms; cancelling`);
        await srcQmp.execute('migrate_cancel').catch(() => undefined);
        break;
      }
      await sleep(20);
    }
    const ram = (info['ram'] ?? {}) as JsonObject;
    const status = String(info['status'] ?? 'unknown');
    const result: QemuMigrationResult = {
      total_ms: num(info['total-time']),
      downtime_ms: num(info['downtime']),
      bytes: num(ram['transferred']),
      rounds: num(ram['dirty-sync-count']),
      status,
      guest_alive_after: false,
      memory_verified: false,
      ...probeFields(null),
    };
    if (status === 'completed') await waitDestinationRunning(dstQmp, ALIVE_TIMEOUT_MS);
    await sleep(PROBE_SETTLE_MS);
    Object.assign(result, probeFields(await probe.stop()));
    if (status !== 'completed') {
      log(`qemu: migration ended '${status}'${info['error-desc'] ? `: ${String(info['error-desc'])}` : ''}`);
      return result;
    }
    // The source reports 'completed' while the destination may still be loading the last of
    // the stream ('inmigrate'); what is typed at its console before it runs is lost, so wait
    // for 'running' (or give up: the VM state is part of the answer).
    const dstState = await waitDestinationRunning(dstQmp, ALIVE_TIMEOUT_MS);
    log(`qemu: migrated in ${result.total_ms} ms (downtime ${result.downtime_ms} ms, ${(result.bytes / 1e6).toFixed(1)} MB, ` +
      `${result.rounds} dirty syncs); destination VM state '${dstState}'`);

    // Liveness: a marker round trip through the destination guest's shell, after a short sleep
    // so that it also needs the guest's timer interrupts (the usual way QEMU's riscv64 guest
    // dies after migration: it idles and the timer never fires again, while console input
    // alone could still wake it).
    result.guest_alive_after = dstState === 'running' && await probeAlive(dst, ALIVE_TIMEOUT_MS);
    if (!result.guest_alive_after) {
      const now = await dstQmp.execute('query-status').catch(() => ({ status: '?' }));
      log(`qemu: destination guest did not answer within ${ALIVE_TIMEOUT_MS} ms (VM state '${String(now['status'])}'); treating it as hung. ` +
        `Its console ended with: ${JSON.stringify(dst.driver.output.slice(-300))}`);
    }

    if (c.workload === 'idle') {
      result.memory_verified = result.guest_alive_after;
    } else if (result.guest_alive_after) {
      const before = (await dst.exec('grep -c "verify" /tmp/mw.log', 10_000).catch(() => ({ output: '0' }))).output.trim();
      const sent = await dst.exec('kill -USR1 $(pidof memwriter)', 10_000).catch(() => undefined);
      if (sent?.status === 0) {
        const shown = await pollGuest(dst, 'grep "verify" /tmp/mw.log',
          (out) => (out.match(/verify (ok|FAILED)/g)?.length ?? 0) > Number(before || 0), VERIFY_TIMEOUT_MS, 'memwriter verify').catch(() => undefined);
        const last = shown?.trim().split('\n').pop() ?? '';
        result.memory_verified = /verify ok/.test(last);
        log(`qemu: memwriter on the destination: ${last || 'no verify line'}`);
      } else {
        log('qemu: memwriter is not running on the destination');
      }
    }
    return result;
  } finally {
    probe?.kill();
    for (const q of qmps) q.close();
    await Promise.all(vms.map((v) => v.kill()));
    await rm(work, { recursive: true, force: true });
  }
}

/** Polls the destination's run state until it is 'running' or `timeoutMs` passes; returns the last state. */
async function waitDestinationRunning(qmp: QmpClient, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = String((await qmp.execute('query-status').catch(() => ({ status: 'unknown' })))['status']);
    if (st === 'running' || Date.now() > deadline) return st;
    await sleep(20);
  }
}

/** True if the guest's shell runs `usleep 200000; echo alive-N` within `timeoutMs` (tries a few
 * times, in case the first line was mangled). */
async function probeAlive(vm: LabVm, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  vm.driver.send('\n');
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) return false;
    const n = Math.floor(Math.random() * 1e6);
    const r = await vm.exec(`usleep 200000; echo alive-$((${n} + 1))`, Math.min(left, 4000)).catch(() => undefined);
    if (r && r.output.includes(`alive-${n + 1}`)) return true;
  }
}

/** Runs `cmd` on the guest console until `accept` likes its output; returns that output. */
async function pollGuest(vm: LabVm, cmd: string, accept: (out: string) => boolean, timeoutMs: number, what: string): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) throw new FerryError('BENCH_TIMEOUT', `timed out waiting for ${what}`);
    const r = await vm.exec(cmd, left);
    if (accept(r.output)) return r.output;
    await sleep(250);
  }
}

function num(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}

function sleep(ms: number): Promise<void> { return new Promise((r) => setTimeout(r, ms)); }

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new FerryError('BENCH_TIMEOUT', `timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      json: { type: 'boolean' },
      case: { type: 'string' },
      'rate-mbit': { type: 'string', default: '1000' },
      'memory-mib': { type: 'string', default: '256' },
    },
  });
  const log = (s: string): void => { (values.json ? process.stderr : process.stdout).write(s + '\n'); };
  const which = values.case === undefined ? (['idle', 'writer'] as const) : [values.case];
  for (const w of which) if (w !== 'idle' && w !== 'writer') throw new FerryError('BENCH_CONFIG', `--case must be idle or writer, got '${w}'`);
  const rateMbit = Number(values['rate-mbit']);
  const memoryMiB = Number(values['memory-mib']);
  await ensureGuestImage({ log });
  const lab = await Lab.up({ prefix: `fq${process.pid % 10000}-` });
  try {
    await lab.shape('host-a', { rateMbit });
    const out: Record<string, unknown> = { peer: 'qemu-riscv64', memory_mib: memoryMiB, link_mbit: rateMbit };
    for (const w of which as readonly ('idle' | 'writer')[]) {
      const r = await migrateQemu(lab, { memoryMiB, workload: w, bandwidth: (rateMbit * 1e6) / 8 }, log);
      log(`qemu ${w}: ${JSON.stringify(r)}`);
      out[w] = r;
    }
    console.log(JSON.stringify(out));
  } finally {
    await lab.down();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
