// The operator and the users of a migrating VM, on the lab's client host: boots a guest on
// host-a through ferryd's API, puts it to work (HTTP, the UDP game stream, a checksummed memory
// writer), migrates it between the daemons while a client load runs and the blackout probe
// (probes/) watches from its own process, and checks after every move that the guest is alive
// and its memory intact. Used by the demo and the migration benches.

import { FerryClient } from '../host/client.js';
import { attachApiConsole, type ApiConsole } from '../host/console-client.js';
import type { MigrationView } from '../host/migrations.js';
import type { MigrationReport } from '../migration/engine/report.js';
import { GUEST_PROMPT } from '../machine/console/shell.js';
import { GameClient } from '../net/game-client.js';
import { HttpLoad, type HttpLoadReport } from '../net/http-load.js';
import { FerryError } from '../errors.js';
import type { VmConfig } from '../vm/types.js';
import type { FerryHost, LabFerrySpec } from './ferry-lab.js';
import { BlackoutProbe } from './probes/probe.js';
import { GUEST_PROBE_COMMAND, guestProbeTarget, type ProbeReport } from './probes/report.js';

export interface GuestWork {
  /** memwriter's working set and rate (pages/s); undefined: no writer. `hotMib`: after filling
   * the whole set once, writes go only to its first hotMib MiB (default: all of it); `touchMs`:
   * every touchMs ms memwriter reads one word of every hot page (default: never); `reportMs`:
   * its `rate=` line interval (default 1000). */
  readonly writer?: { readonly wssMib: number; readonly rate: number; readonly hotMib?: number; readonly touchMs?: number; readonly reportMs?: number };
  /** Start the UDP game server (port 27960). */
  readonly game?: boolean;
}

export type MigrationMode = 'precopy' | 'postcopy' | 'hybrid' | 'agile';

/** The migrate request's options; each is sent only when given (the daemon's defaults apply). */
export interface MigrateOptions {
  readonly bandwidth?: string;
  readonly downtimeLimitMs?: number;
  readonly compression?: 'zstd' | 'none';
  /** Default (absent): the daemon's default, pre-copy. */
  readonly mode?: MigrationMode;
  readonly maxRounds?: number;
  /** Pre-copy's throttle: dirty-limit, auto-converge or off. */
  readonly throttle?: 'dirty-limit' | 'auto-converge' | 'off';
}

/** What `migrate` measures besides the report, when asked. */
export interface MeasureOptions {
  /** memwriter's throughput (pages/s) from the migration's start until its report. */
  readonly writer?: boolean;
}

/** memwriter's achieved throughput over a window of its `rate=` lines. */
export interface WriterThroughput {
  readonly pagesPerSec: number;
  /** Page writes in the window and its length by the host's clock. */
  readonly writes: number;
  readonly seconds: number;
}

export interface WriterMark {
  /** memwriter's write counter in its latest `rate=` line. */
  readonly writes: number;
  /** performance.now() on the host when it was read. */
  readonly atMs: number;
}

/** The VM's memory as GET /v1/vms/{name} shows it while it runs (absent on older daemons). */
export interface VmMemoryView {
  readonly totalBytes: number;
  readonly residentBytes: number;
  readonly swappedBytes: number;
  readonly workingSetBytes: number | null;
}

/** One migration as the demo and the benchmark report it. */
export interface MigrationOutcome {
  readonly from: FerryHost;
  readonly to: FerryHost;
  readonly report: MigrationReport;
  readonly guestAliveAfter: boolean;
  readonly memoryVerified: boolean;
  /** Longest silence of the game stream around the migration (null: no game client ran). */
  readonly clientGapMs: number | null;
  readonly gameLost: number | null;
  readonly http: HttpLoadReport | null;
  /** memwriter's throughput during the migration (null: not asked for, no writer, or no reading). */
  readonly writerDuring: WriterThroughput | null;
  /** What the 1 ms blackout probe saw from before the migration started until after the settling pause. */
  readonly probe: ProbeReport;
}

const VM = 'demo';

export class MigrationSession {
  private readonly clients: Record<FerryHost, FerryClient>;
  private where: FerryHost = 'host-a';
  private console: ApiConsole | undefined;
  private http: HttpLoad | undefined;
  private work: GuestWork = {};

  constructor(private readonly spec: LabFerrySpec, private readonly log: (s: string) => void) {
    this.clients = {
      'host-a': new FerryClient(spec.hosts['host-a'].url, spec.hosts['host-a'].token),
      'host-b': new FerryClient(spec.hosts['host-b'].url, spec.hosts['host-b'].token),
    };
  }

  get host(): FerryHost { return this.where; }
  get address(): string { return this.spec.vm.address; }

  /** Creates and boots the guest on host-a and starts its work. Returns the boot time in s.
   * `opts.swap`: the VM's swap device (VmConfig.swap, `nbd://…`), passed through. */
  async boot(memoryMiB: number, work: GuestWork, opts: { readonly swap?: string } = {}): Promise<number> {
    this.work = work;
    const { vm, hosts } = this.spec;
    const config: VmConfig = {
      name: VM, memoryMiB, nets: [{ mac: vm.mac, bridge: 'br0' }],
      disks: this.spec.disk !== undefined ? [this.spec.disk] : [],
      // The gateway is host-a; after a move the guest still reaches it over the LAN.
      ip: `${vm.address}/${vm.prefixLength},${hosts['host-a'].address}`,
      ...(opts.swap !== undefined ? { swap: opts.swap } : {}),
    };
    const a = this.clients['host-a'];
    await a.request('POST', '/v1/vms', config);
    this.console = await attachApiConsole(a, VM);
    const t0 = performance.now();
    await a.request('POST', `/v1/vms/${VM}/start`);
    await this.console.driver.waitFor(GUEST_PROMPT, 600_000);
    const bootS = (performance.now() - t0) / 1000;
    if (work.game) await this.sh('gameserver >/dev/null 2>&1 & true');
    await this.sh(GUEST_PROBE_COMMAND);
    if (work.writer) {
      const w = work.writer;
      const extra = [
        w.hotMib !== undefined ? ` --hot-mib ${w.hotMib}` : '', w.touchMs !== undefined ? ` --touch-ms ${w.touchMs}` : '',
        w.reportMs !== undefined ? ` --report-ms ${w.reportMs}` : '',
      ].join('');
      await this.sh(`memwriter --wss-mib ${w.wssMib} --rate ${w.rate}${extra} >/tmp/mw.log 2>&1 & true`);
      // The initial fill of a large set takes a while in an emulated guest.
      await this.waitForOutput('head -1 /tmp/mw.log', /memwriter: ready/, 60_000 + w.wssMib * 500);
    }
    await this.waitForHttp(120_000);
    return bootS;
  }

  /** A steady HTTP load from the client host, counted per migration. */
  startHttpLoad(): void {
    this.http ??= HttpLoad.start(`http://${this.address}/`, { intervalMs: 50 });
  }

  async stopHttpLoad(): Promise<void> {
    await this.http?.stop();
    this.http = undefined;
  }

  /**
   * Moves the VM to the other host through the daemons' API (a token from the destination, the
   * migrate request to the source), with the game stream and the blackout probe (its own
   * process) watching from before the request until 1.5 s after the report, then checks the
   * guest on its new host (or on the old one, if the migration failed).
   */
  async migrate(opts: MigrateOptions = {}, during?: (id: string) => Promise<void>, measure: MeasureOptions = {}): Promise<MigrationOutcome> {
    const from = this.where;
    const to: FerryHost = from === 'host-a' ? 'host-b' : 'host-a';
    const game = this.work.game ? await GameClient.start({ host: this.address }) : undefined;
    let probe: BlackoutProbe | undefined;
    try {
      if (game) await game.waitForPackets(20, 30_000);
      probe = await BlackoutProbe.start(guestProbeTarget(this.address));
      return await this.migrateWatched(from, to, opts, during, measure, probe, game);
    } catch (e) {
      await game?.stop().catch(() => undefined);
      probe?.kill();
      throw e;
    }
  }

  private async migrateWatched(from: FerryHost, to: FerryHost, opts: MigrateOptions, during: ((id: string) => Promise<void>) | undefined, measure: MeasureOptions, probe: BlackoutProbe, game: GameClient | undefined): Promise<MigrationOutcome> {
    this.http?.take();
    const writerMark = measure.writer && this.work.writer ? await this.writerMark().catch(() => null) : null;
    const id = await this.startMigration(opts);
    await during?.(id);
    const report = await this.awaitReport(from, id);
    this.log(`${from} -> ${to}: ${report.outcome} in ${report.totalMs} ms, downtime ${report.downtimeMs ?? '-'} ms, ${(report.bytes / 1e6).toFixed(1)} MB, ${report.rounds.length} rounds, stop rule ${report.stopRule ?? '-'}`);
    if (report.outcome === 'completed') {
      this.where = to;
      this.console?.close();
      this.console = await attachApiConsole(this.clients[to], VM);
    }
    // Before the settling pause and the check (whose verification stops the writer).
    const writerDuring = writerMark !== null
      ? await this.writerThroughput(writerMark).catch((e: unknown) => { this.log(`memwriter throughput unreadable: ${e instanceof Error ? e.message : String(e)}`); return null; })
      : null;
    // Let the streams settle so a gap right after the switch is inside the window.
    await sleep(1500);
    const probeReport = await probe.stop();
    const gameReport = game ? await game.stop() : undefined;
    const http = this.http?.take() ?? null;
    const { alive, memory } = await this.check();
    return {
      from, to, report, guestAliveAfter: alive, memoryVerified: memory,
      clientGapMs: gameReport ? Math.round(gameReport.maxGapMs) : null,
      gameLost: gameReport ? gameReport.lost : null,
      http, writerDuring, probe: probeReport,
    };
  }

  /** Starts moving the VM to the other host; returns the migration's id on the source. */
  async startMigration(opts: MigrateOptions = {}): Promise<string> {
    const from = this.where;
    const to: FerryHost = from === 'host-a' ? 'host-b' : 'host-a';
    const incoming = await this.clients[to].request<{ token: string; port: number }>('POST', '/v1/migrations/incoming');
    const started = await this.clients[from].request<MigrationView>('POST', `/v1/vms/${VM}/migrate`, {
      destination: `${this.spec.hosts[to].address}:${incoming.port}`, token: incoming.token,
      ...(opts.bandwidth !== undefined ? { bandwidth: opts.bandwidth } : {}),
      ...(opts.downtimeLimitMs !== undefined ? { downtimeLimitMs: opts.downtimeLimitMs } : {}),
      ...(opts.compression !== undefined ? { compression: opts.compression } : {}),
      ...(opts.mode !== undefined ? { mode: opts.mode } : {}),
      ...(opts.maxRounds !== undefined ? { maxRounds: opts.maxRounds } : {}),
      ...(opts.throttle !== undefined ? { throttle: opts.throttle } : {}),
    });
    return started.id;
  }

  /** The migration `id` as its source daemon shows it. */
  migration(id: string): Promise<MigrationView> {
    return this.clients[this.where].request<MigrationView>('GET', `/v1/migrations/${id}`);
  }

  cancel(id: string): Promise<MigrationView> {
    return this.clients[this.where].request<MigrationView>('POST', `/v1/migrations/${id}/cancel`);
  }

  /** The VM's state kind on `host`, or null if that daemon has no such VM (or is down). */
  async vmState(host: FerryHost): Promise<string | null> {
    try {
      const v = await this.clients[host].request<{ state: { kind: string } }>('GET', `/v1/vms/${VM}`);
      return v.state.kind;
    } catch {
      return null;
    }
  }

  /** The VM's memory figures from its daemon (GET /v1/vms/demo `memory`); null when the daemon
   * does not report them (or the VM does not run). */
  async vmMemory(): Promise<VmMemoryView | null> {
    const v = await this.clients[this.where].request<{ memory?: VmMemoryView }>('GET', `/v1/vms/${VM}`);
    return v.memory ?? null;
  }

  /** Where memwriter's write counter stood (its latest `rate=` line) at a host time: one end
   * of a window for `writerThroughput`. */
  async writerMark(): Promise<WriterMark> {
    const atMs = performance.now();
    const out = await this.sh("grep 'memwriter: writes=' /tmp/mw.log | tail -n 1");
    const m = /^memwriter: writes=(\d+) rate=\d+\s*$/m.exec(out);
    // Before the first report: nothing written since the fill.
    return { writes: m ? Number(m[1]) : 0, atMs };
  }

  /**
   * memwriter's achieved page writes per second between two marks (`to` default: now), by the
   * host's clock, so time the guest spent paused or stalled counts. Each end is as exact as
   * memwriter's report interval (its latest `rate=` line was printed up to one interval before
   * the mark); GuestWork.writer.reportMs shortens it.
   */
  async writerThroughput(from: WriterMark, to?: WriterMark): Promise<WriterThroughput> {
    const end = to ?? await this.writerMark();
    const seconds = (end.atMs - from.atMs) / 1000;
    const writes = end.writes - from.writes;
    return { pagesPerSec: seconds > 0 ? Math.round(writes / seconds) : 0, writes, seconds: Math.round(seconds * 1000) / 1000 };
  }

  /** memwriter's throughput over the next `ms` milliseconds (the guest undisturbed). */
  async writerRate(ms: number): Promise<WriterThroughput> {
    const mark = await this.writerMark();
    await sleep(ms);
    return this.writerThroughput(mark);
  }

  /** Alive: the shell runs a command that needs the timer (sleep). Memory: memwriter's own check. */
  async check(): Promise<{ alive: boolean; memory: boolean }> {
    let alive = false;
    try {
      const r = await this.console!.driver.exec('usleep 100000; echo alive-$((20+22))', 20_000);
      alive = r.output.includes('alive-42');
    } catch (e) {
      this.log(`guest did not answer: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
    }
    if (!alive) return { alive, memory: false };
    if (!this.work.writer) return { alive, memory: alive };
    // A verification of a large set takes seconds in the guest: wait for a verify line newer
    // than those already in the log, never take an older one for this check's.
    const before = await this.sh('grep -c verify /tmp/mw.log || true').then((o) => Number(/^(\d+)\s*$/m.exec(o)?.[1] ?? NaN)).catch(() => NaN);
    if (!Number.isInteger(before)) {
      this.log("memwriter's log could not be read");
      return { alive, memory: false };
    }
    if (!/\d/.test(await this.sh('pidof memwriter || true').catch(() => ''))) this.log('memwriter is not running');
    await this.sh('kill -USR1 $(pidof memwriter)').catch(() => '');
    const timeoutMs = 30_000 + this.work.writer.wssMib * 100;
    const verdict = await this.waitForOutput(`grep verify /tmp/mw.log | tail -n +${before + 1} | head -1`, /verify (ok|FAILED)/, timeoutMs).catch(() => '');
    const memory = /verify ok/.test(verdict) && !/FAILED/.test(verdict);
    // A failed check must say which way it failed: a verify still running is not a corrupted page.
    if (!memory) this.log(verdict === '' ? `memwriter gave no verdict within ${timeoutMs} ms` : `memwriter: ${verdict.trim()}`);
    return { alive, memory };
  }

  /** Stops the guest wherever it is and deletes it, so another session can start afresh. */
  async close(): Promise<void> {
    await this.stopHttpLoad();
    this.console?.close();
    const host = this.clients[this.where];
    await host.request('POST', `/v1/vms/${VM}/stop`).catch(() => undefined);
    await host.request('DELETE', `/v1/vms/${VM}`).catch(() => undefined);
  }

  private async awaitReport(host: FerryHost, id: string): Promise<MigrationReport> {
    const deadline = Date.now() + 600_000;
    for (;;) {
      const v = await this.clients[host].request<MigrationView>('GET', `/v1/migrations/${id}`);
      if (v.report) return v.report;
      if (Date.now() > deadline) throw new FerryError('DEMO_TIMEOUT', `migration ${id} did not end within 10 minutes (${v.stage})`);
      await sleep(100);
    }
  }

  private async sh(command: string): Promise<string> {
    const r = await this.console!.driver.exec(command, 60_000);
    if (r.status !== 0) throw new FerryError('DEMO_GUEST', `\`${command}\` failed in the guest (${r.status}): ${r.output}`);
    return r.output;
  }

  private async waitForOutput(command: string, pattern: RegExp, timeoutMs: number): Promise<string> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const out = (await this.console!.driver.exec(command, 20_000)).output;
      if (pattern.test(out)) return out;
      if (Date.now() > end) throw new FerryError('DEMO_GUEST', `\`${command}\` never printed ${pattern}: ${out}`);
      await sleep(500);
    }
  }

  /** Whether the guest still runs a shell, and what its network says: tells a hung guest from a
   * lost network when a check fails. */
  private async consoleState(): Promise<string> {
    const driver = this.console!.driver;
    try {
      const r = await driver.exec('ip -br addr 2>&1; pidof httpd || echo no httpd', 10_000);
      return `the console answers: ${JSON.stringify(r.output.trim())}`;
    } catch {
      return `the console is silent; it ended with ${JSON.stringify(driver.output.slice(-400))}`;
    }
  }

  private async waitForHttp(timeoutMs: number): Promise<void> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        const res = await fetch(`http://${this.address}/`, { signal: AbortSignal.timeout(3000) });
        if (res.ok) return;
      } catch { /* not up yet */ }
      if (Date.now() > end) throw new FerryError('DEMO_GUEST', `the guest's web server at ${this.address} never answered; ${await this.consoleState()}`);
      await sleep(500);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
