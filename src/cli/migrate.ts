// `ferry migrate ...`: live-migrates a VM from the daemon at --host to the daemon at --to, and
// lists, shows or cancels migrations. The source daemon runs the migration; this command only
// starts it, follows it (events, with polling as a fallback) and prints its report.

import { isMigrationMode, MIGRATION_MODES } from '../migration/engine/modes.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from './errors.js';
import { connect, parse, table, GlobalOptions } from './vm.js';
import { FerryError } from '../errors.js';
import { ApiError, FerryClient } from '../host/client.js';
import type { MigrationView } from '../host/migrations.js';
import type { MigrationReport } from '../migration/engine/report.js';
import { parseRate, RateParseError } from '../migration/precopy/rate.js';
import { CONVERGE_METHODS, isConvergeMethod } from '../migration/precopy/converge.js';
import { TIMEOUT_STRATEGIES } from '../migration/engine/report.js';

const USAGE = `usage: ferry [--host URL] migrate NAME --to URL [options]
       ferry [--host URL] migrate list|show ID|cancel NAME

Moves the running (or paused) VM NAME from the daemon at --host to the daemon at --to while
it keeps running (pre-copy), then prints the migration's report. Exit status 0 if the VM now
runs on the destination, 1 otherwise.

commands:
  NAME --to URL       migrate NAME; follows it until it ends
  list                migrations this daemon knows (running and recent)
  show ID             one migration, with its report once it ended
  cancel NAME         cancel the running outgoing migration of NAME (before its commit point)

options of \`migrate NAME\`:
  --to URL              the destination ferryd's API (http://HOST:PORT); the VM's memory goes
                        to HOST on the destination's migration port
  --to-token T          the destination's API token (default $FERRY_TO_TOKEN)
  --to-state DIR        ... or read it from the destination daemon's state directory
  --mode MODE           precopy (default), postcopy (switch at once, pull the rest), hybrid
                        (pre-copy rounds, post-copy if they do not converge) or agile (swap
                        cold pages out first, then hybrid over the working set; needs --swap)
  --bandwidth RATE      a fixed rate for every round, e.g. 1G, 500Mbit, 125MB/s (bits unless B)
  --rate-start RATE     the dynamic rate scheme instead (Clark et al.): first round and floor
  --rate-margin RATE      added to the measured dirty rate for the next round
  --rate-cap RATE         upper bound of pre-copy rounds
  --downtime-limit MS   stop pre-copy once the rest can be sent within MS (default 300)
  --max-rounds N        at most N pre-copy rounds (default 30)
  --no-compression      send pages uncompressed (default zstd)
  --throttle MODE       how pre-copy slows a guest that dirties faster than the link:
                        dirty-limit (default: stalls the vCPU only while it writes over a
                        page budget), auto-converge (sleeps 20%, 30%, ... up to 99% of its
                        time) or off (never slowed: such a migration stops on no-progress)
  --timeout S           the migration's deadline in seconds (decimals allowed)
  --on-timeout WHAT     at the deadline: cancel (default; roll back, the VM runs on the
                        source), postcopy (switch to post-copy now) or force (stop and copy
                        now, whatever the downtime)
  --json                print the report as JSON (the last line of stdout)

common options:
  --host URL, --token T, --state DIR   the source daemon (as for \`ferry vm\`)

Progress goes to stderr: a one-line bar on a terminal, else one line per stage.
Ctrl-C cancels the migration (the VM stays on the source, running or paused as it was) and
waits for it to end, so it never leaves a migration half done; past the commit point it can no
longer be cancelled and the command waits for the migration to finish.
A VM named list, show or cancel: put the options first (ferry migrate --to URL list).`;

export async function migrateCommand(argv: string[], globals: GlobalOptions = {}): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'list': case 'ls': return list(rest, globals);
    case 'show': return show(rest, globals);
    case 'cancel': return cancel(rest, globals);
    case undefined: case 'help': case '--help': case '-h':
      console.log(USAGE);
      return sub === undefined ? 2 : 0;
    default:
      return migrate(argv, globals);
  }
}

// --- flags -----------------------------------------------------------------------------------

const MIGRATE_FLAGS = {
  to: { type: 'string' },
  'to-token': { type: 'string' },
  'to-state': { type: 'string' },
  bandwidth: { type: 'string' },
  'rate-start': { type: 'string' },
  'rate-margin': { type: 'string' },
  'rate-cap': { type: 'string' },
  'downtime-limit': { type: 'string' },
  mode: { type: 'string' },
  'max-rounds': { type: 'string' },
  'no-compression': { type: 'boolean' },
  throttle: { type: 'string' },
  timeout: { type: 'string' },
  'on-timeout': { type: 'string' },
} as const;

/** Parses a rate flag locally so a typo is a usage error naming the flag; returns bytes/s. */
function rateFlag(flag: string, text: string): number {
  try {
    return parseRate(text);
  } catch (err) {
    if (err instanceof RateParseError) throw new UsageError(`--${flag}: ${err.message}`);
    throw err;
  }
}

function intFlag(flag: string, text: string, min: number, max: number): number {
  const n = /^\d+$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!(n >= min && n <= max)) throw new UsageError(`--${flag} must be an integer in ${min}..${max}, got '${text}'`);
  return n;
}

/** The destination daemon's API URL, checked like --host. */
function destinationUrl(text: string): URL {
  if (!/^https?:\/\/[^/]+\/?$/.test(text)) throw new UsageError(`invalid --to '${text}' (expected http://HOST:PORT of the destination ferryd)`);
  try {
    return new URL(text);
  } catch {
    throw new UsageError(`invalid --to '${text}' (expected http://HOST:PORT of the destination ferryd)`);
  }
}

function destinationToken(token: string | undefined, stateDir: string | undefined): string {
  const t = token ?? process.env['FERRY_TO_TOKEN'];
  if (t !== undefined) return t;
  if (stateDir === undefined) {
    throw new UsageError('no token for the destination: pass --to-token, set FERRY_TO_TOKEN, or --to-state DIR of the destination daemon');
  }
  try {
    return readFileSync(join(stateDir, 'token'), 'utf8').trim();
  } catch {
    throw new UsageError(`no token for the destination: ${join(stateDir, 'token')} (from --to-state) is not readable`);
  }
}

/**
 * `HOST:PORT` the source should connect to: the host of --to (which reaches the destination
 * from here, and presumably from the source) unless the destination's migration listener is
 * bound to one specific address.
 */
export function migrationAddress(to: URL, grant: { port: number; address: string }): string {
  const bound = grant.address;
  const wildcard = bound === '' || bound === '0.0.0.0' || bound === '::' || bound === '::0';
  if (!wildcard) return bound.includes(':') ? `[${bound}]:${grant.port}` : `${bound}:${grant.port}`;
  // URL.hostname keeps IPv6 brackets, which is the form the daemon expects.
  return `${to.hostname}:${grant.port}`;
}

// --- migrate NAME ----------------------------------------------------------------------------

async function migrate(argv: string[], globals: GlobalOptions): Promise<number> {
  const { values, common, args } = parse(argv, MIGRATE_FLAGS, ['NAME']);
  if (common.help) { console.log(USAGE); return 0; }
  const name = args[0]!;

  // Everything is checked before anything is asked of a daemon.
  if (values.to === undefined) throw new UsageError('--to URL is required (the destination ferryd, e.g. http://10.0.0.2:7480)');
  const to = destinationUrl(values.to);
  const rateFlags = (['rate-start', 'rate-margin', 'rate-cap'] as const).filter((f) => values[f] !== undefined);
  if (values.bandwidth !== undefined && rateFlags.length > 0) {
    throw new UsageError(`--bandwidth (a fixed rate) and --${rateFlags[0]} (the dynamic scheme) exclude each other`);
  }
  const body: Record<string, unknown> = {};
  if (values.bandwidth !== undefined) {
    rateFlag('bandwidth', values.bandwidth);
    body['bandwidth'] = values.bandwidth;
  }
  if (rateFlags.length > 0) {
    const rate: Record<string, string> = {};
    const parsed: Record<string, number> = {};
    for (const f of rateFlags) {
      parsed[f] = rateFlag(f, values[f]!);
      rate[f.slice('rate-'.length)] = values[f]!;
    }
    const start = parsed['rate-start'];
    const cap = parsed['rate-cap'];
    if (start !== undefined && cap !== undefined && cap < start) throw new UsageError('--rate-cap is below --rate-start');
    body['rate'] = rate;
  }
  if (values['downtime-limit'] !== undefined) body['downtimeLimitMs'] = intFlag('downtime-limit', values['downtime-limit'], 1, 600_000);
  if (values['max-rounds'] !== undefined) body['maxRounds'] = intFlag('max-rounds', values['max-rounds'], 1, 1000);
  if (values['no-compression']) body['compression'] = 'none';
  if (values.throttle !== undefined) {
    if (!isConvergeMethod(values.throttle)) throw new UsageError(`--throttle must be one of ${CONVERGE_METHODS.join(', ')}, got '${values.throttle}'`);
    body['throttle'] = values.throttle;
  }
  if (values['on-timeout'] !== undefined && values.timeout === undefined) throw new UsageError('--on-timeout needs --timeout S (the deadline it acts on)');
  if (values.timeout !== undefined) {
    const secs = /^\d+(\.\d+)?$/.test(values.timeout.trim()) ? Number(values.timeout.trim()) : NaN;
    if (!(secs >= 0.001 && secs <= 86_400)) throw new UsageError(`--timeout must be a number of seconds in 0.001..86400, got '${values.timeout}'`);
    body['timeoutMs'] = Math.round(secs * 1000);
    const strategy = values['on-timeout'] ?? 'cancel';
    if (!(TIMEOUT_STRATEGIES as readonly string[]).includes(strategy)) throw new UsageError(`--on-timeout must be one of ${TIMEOUT_STRATEGIES.join(', ')}, got '${strategy}'`);
    body['onTimeout'] = strategy;
  }
  if (values.mode !== undefined) {
    if (!isMigrationMode(values.mode)) throw new UsageError(`--mode must be one of ${MIGRATION_MODES.join(', ')}, got '${values.mode}'`);
    body['mode'] = values.mode;
  }
  const destination = new FerryClient(to.origin, destinationToken(values['to-token'], values['to-state']));
  const source = connect(common, globals);

  const grant = await destination.request<{ token: string; port: number; address: string; expiresInMs: number }>('POST', '/v1/migrations/incoming');
  body['destination'] = migrationAddress(to, grant);
  body['token'] = grant.token;

  const progress = new ProgressView(name);
  // Ctrl-C cancels rather than abandons: the handler is in place before the migration exists,
  // and a Ctrl-C that comes before its id is known cancels it as soon as it is.
  let id: string | undefined;
  let interrupts = 0;
  const requestCancel = (): void => {
    progress.note(`Ctrl-C: cancelling migration ${id}; waiting for it to end`);
    source.request<MigrationView>('POST', `/v1/migrations/${id}/cancel`).catch((err: unknown) => {
      if (err instanceof ApiError && err.code === 'MIGRATION_TOO_LATE') {
        progress.note('too late to cancel: the destination has committed; waiting for the migration to finish');
      } else {
        progress.note(`cancel failed: ${err instanceof Error ? err.message : String(err)}; still following`);
      }
    });
  };
  const onSigint = (): void => {
    interrupts++;
    if (interrupts === 1) {
      if (id !== undefined) requestCancel();
      else progress.note('Ctrl-C: the migration will be cancelled as soon as it has started');
    } else {
      progress.note(`still waiting for migration ${id ?? ''} to end (it is never left half done)`);
    }
  };
  process.on('SIGINT', onSigint);
  const watcher = new MigrationWatcher(source, name);
  let final: MigrationView;
  try {
    const started = await source.request<MigrationView>('POST', `/v1/vms/${encodeURIComponent(name)}/migrate`, body);
    id = started.id;
    if (interrupts > 0) requestCancel();
    final = await watcher.follow(started, (v) => progress.update(v));
  } finally {
    watcher.close();
    progress.end();
    process.off('SIGINT', onSigint);
  }
  const report = final.report!;
  if (common.json) console.log(JSON.stringify(report));
  else console.log(reportText(final.id, report));
  if (report.outcome === 'completed') return 0;
  const why = report.error ? `${report.error.message} [${report.error.code}]` : report.outcome;
  console.error(`ferry migrate: migration of ${name} ${report.outcome === 'in-doubt' ? 'is in doubt' : 'failed'}: ${why}`);
  if (report.outcome === 'in-doubt') {
    console.error(`  find out where ${name} runs, then POST /v1/migrations/${final.id}/resolve {"action":"release"|"resume"} on the source`);
  }
  return 1;
}

/** Follows one migration: its events on /v1/events?vm=NAME, and GET /v1/migrations/{id} as a
 * safety net (every 2 s while the stream is up, every 500 ms once it ended). */
class MigrationWatcher {
  private readonly abort = new AbortController();
  private readonly buffered: MigrationView[] = [];
  private streamEnded = false;
  private wake: (() => void) | undefined;

  /** Subscribes now, before the migration starts, so its first events are not missed. */
  constructor(private readonly client: FerryClient, vm: string) {
    void (async () => {
      try {
        for await (const ev of client.events(this.abort.signal, vm)) {
          if (ev.type === 'migration') { this.buffered.push(ev.migration as MigrationView); this.poke(); }
        }
      } catch {
        // No stream (or it broke): polling takes over.
      } finally {
        this.streamEnded = true;
        this.poke();
      }
    })();
  }

  async follow(initial: MigrationView, onView: (v: MigrationView) => void): Promise<MigrationView> {
    let last = initial;
    onView(last);
    let polled = Date.now();
    while (!last.report) {
      const v = this.buffered.shift();
      if (v) {
        if (v.id === initial.id) { last = v; onView(v); }
        continue;
      }
      const every = this.streamEnded ? 500 : 2000;
      const due = polled + every - Date.now();
      if (due <= 0) {
        last = await this.client.request<MigrationView>('GET', `/v1/migrations/${encodeURIComponent(initial.id)}`);
        polled = Date.now();
        onView(last);
        continue;
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => { this.wake = undefined; resolve(); }, due);
        this.wake = () => { clearTimeout(timer); resolve(); };
      });
    }
    return last;
  }

  close(): void {
    this.abort.abort();
    this.poke();
  }

  private poke(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

const MB = 1e6;
const mb = (bytes: number): string => (bytes / MB).toFixed(1);

function stageText(v: MigrationView): string {
  const p = v.progress;
  const stage = v.report ? v.stage : p.stage;
  return stage === 'precopy' || stage === 'stop-and-copy' ? `${stage} round ${p.round}` : stage;
}

/** Progress on stderr: a redrawn line on a terminal, one line per stage change otherwise. */
class ProgressView {
  private readonly tty = process.stderr.isTTY === true;
  private lastStage = '';
  private line = '';
  /** Pages of the current round, as first seen (the bar is the share of them sent). */
  private roundPages = 0;
  private round = -1;

  constructor(private readonly vm: string) {}

  update(v: MigrationView): void {
    const p = v.progress;
    const stage = stageText(v);
    if (!this.tty) {
      if (stage !== this.lastStage) {
        this.lastStage = stage;
        process.stderr.write(`migrate ${this.vm}: ${stage} (${mb(p.bytes)} MB sent, ${p.pagesRemaining} pages remaining, ${(p.elapsedMs / 1000).toFixed(1)} s)\n`);
      }
      return;
    }
    if (p.round !== this.round) { this.round = p.round; this.roundPages = 0; }
    this.roundPages = Math.max(this.roundPages, p.pagesRemaining);
    const width = 20;
    const frac = this.roundPages > 0 ? 1 - p.pagesRemaining / this.roundPages : (v.report ? 1 : 0);
    const filled = Math.round(Math.min(1, Math.max(0, frac)) * width);
    const expect = p.expectedDowntimeMs != null ? `, switch ~${p.expectedDowntimeMs} ms` : '';
    const eta = p.etaMs != null ? `, eta ${(p.etaMs / 1000).toFixed(1)} s` : '';
    this.line = `migrate ${this.vm} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${stage}, ${mb(p.bytes)} MB sent, ${p.pagesRemaining} pages left, ${(p.elapsedMs / 1000).toFixed(1)} s${expect}${eta}`;
    this.draw();
  }

  /** A message on its own line (the bar is redrawn under it). */
  note(message: string): void {
    if (this.tty) process.stderr.write('\r\x1b[K');
    process.stderr.write(`ferry migrate: ${message}\n`);
    if (this.tty && this.line !== '') this.draw();
  }

  end(): void {
    if (this.tty && this.line !== '') process.stderr.write('\r\x1b[K');
    this.line = '';
  }

  private draw(): void {
    const cols = process.stderr.columns ?? 120;
    process.stderr.write(`\r\x1b[K${this.line.length >= cols ? this.line.slice(0, cols - 1) : this.line}`);
  }
}

// --- reports ---------------------------------------------------------------------------------

const mbit = (bytesPerSec: number | null): string => (bytesPerSec === null ? '-' : ((bytesPerSec * 8) / 1e6).toFixed(1));

export function reportText(id: string, r: MigrationReport): string {
  const lines: [string, string][] = [
    ['outcome', `${r.outcome}${r.error ? ` (${r.error.message} [${r.error.code}])` : ''}`],
    ['migration', `${id}, ${r.direction === 'out' ? 'to' : 'from'} ${r.peer}`],
    ['total', `${r.totalMs} ms`],
    ['downtime', r.downtimeMs === null ? '- (never paused for the switch-over)' : `${r.downtimeMs} ms`],
    ['bytes', `${mb(r.bytes)} MB on the wire (RAM ${mb(r.ramBytes)} MB)`],
    ['pages', `${r.pages.sent} sent, ${r.pages.zero} zero, ${r.pages.skipped} skipped; ${r.compression === 'none' ? 'uncompressed' : r.compression} ${mb(r.pageBytes.raw)} MB -> ${mb(r.pageBytes.wire)} MB`],
    ['stop rule', r.stopRule ?? '-'],
    ...(r.downtimeLimit ? [['limit', `${r.downtimeLimit.limitMs} ms, expected ${r.downtimeLimit.expectedMs ?? '-'} ms: ${r.downtimeLimit.honoured ? 'honoured' : `not honoured (${r.downtimeLimit.reason})`}`] as [string, string]] : []),
    ...(r.throttle ? [['throttle', `${r.throttle.method} ${r.throttle.peakPercent !== null ? `up to ${r.throttle.peakPercent}%` : `down to ${r.throttle.minPagesPerSecond} pages/s`} for ${r.throttle.engagedMs} ms, guest stalled ${r.throttle.stalledMs} ms (${Math.round(r.throttle.timeLost * 100)}% of it)`] as [string, string]] : []),
    ...(r.timeout ? [['timeout', `${r.timeout.afterMs / 1000} s, ${r.timeout.strategy}: ${r.timeout.fired ? `fired in ${r.timeout.firedInStage}${r.timeout.acted ? '' : ' (too late to act)'}` : 'did not fire'}`] as [string, string]] : []),
  ];
  let text = `${r.vm}: migration ${r.outcome}\n${lines.map(([k, v]) => `  ${`${k}:`.padEnd(11)}${v}`).join('\n')}`;
  if (r.rounds.length > 0) {
    text += `\n\n${table([
      ['ROUND', 'SENT', 'SKIPPED', 'DIRTIED', 'MB', 'MS', 'RATE Mbit/s'],
      ...r.rounds.map((x) => [
        `${x.round}${x.final ? ' (stop-and-copy)' : ''}`,
        String(x.pagesSent), String(x.pagesSkipped), String(x.pagesDirtied),
        mb(x.bytesSent), String(Math.round(x.durationMs)), mbit(x.measuredRate),
      ]),
    ])}`;
  }
  return text;
}

// --- list, show, cancel ----------------------------------------------------------------------

function viewRow(v: MigrationView): string[] {
  return [v.id, v.vm || '-', v.direction, v.peer || '-', stageText(v), `${mb(v.progress.bytes)} MB`, v.startedAt];
}

async function list(argv: string[], globals: GlobalOptions): Promise<number> {
  const { common } = parse(argv, {}, []);
  if (common.help) { console.log('usage: ferry migrate list [--json]   (running and recent migrations of --host)'); return 0; }
  const { migrations } = await connect(common, globals).request<{ migrations: MigrationView[] }>('GET', '/v1/migrations');
  if (common.json) console.log(JSON.stringify(migrations, null, 2));
  else if (migrations.length === 0) console.log('no migrations');
  else console.log(table([['ID', 'VM', 'DIR', 'PEER', 'STAGE', 'SENT', 'STARTED'], ...migrations.map(viewRow)]));
  return 0;
}

async function show(argv: string[], globals: GlobalOptions): Promise<number> {
  const { common, args } = parse(argv, {}, ['ID']);
  if (common.help) { console.log('usage: ferry migrate show ID [--json]'); return 0; }
  const v = await connect(common, globals).request<MigrationView>('GET', `/v1/migrations/${encodeURIComponent(args[0]!)}`);
  if (common.json) { console.log(JSON.stringify(v, null, 2)); return 0; }
  if (v.report) { console.log(reportText(v.id, v.report)); return 0; }
  const p = v.progress;
  console.log([
    ['id', v.id], ['vm', v.vm || '-'], ['direction', v.direction], ['peer', v.peer || '-'], ['started', v.startedAt],
    ['stage', stageText(v)], ['sent', `${mb(p.bytes)} MB, ${p.pagesSent} pages`], ['remaining', `${p.pagesRemaining} pages`],
    ['elapsed', `${p.elapsedMs} ms`],
  ].map(([k, val]) => `${`${k}:`.padEnd(11)}${val}`).join('\n'));
  return 0;
}

async function cancel(argv: string[], globals: GlobalOptions): Promise<number> {
  const { common, args } = parse(argv, {}, ['NAME']);
  if (common.help) { console.log('usage: ferry migrate cancel NAME [--json]   (cancels the running outgoing migration of NAME)'); return 0; }
  const name = args[0]!;
  const client = connect(common, globals);
  const { migrations } = await client.request<{ migrations: MigrationView[] }>('GET', '/v1/migrations');
  const running = migrations.find((m) => m.vm === name && m.direction === 'out' && !m.report);
  if (!running) {
    await client.show(name); // an unknown VM says so
    throw new FerryError('MIGRATION_NOT_FOUND', `VM ${name} has no outgoing migration running (see ferry migrate list)`);
  }
  const v = await client.request<MigrationView>('POST', `/v1/migrations/${encodeURIComponent(running.id)}/cancel`);
  if (common.json) console.log(JSON.stringify(v, null, 2));
  else console.log(`${name}: cancelling migration ${v.id} (was ${stageText(v)}); ${name} stays on this host (ferry migrate show ${v.id} shows the outcome)`);
  return 0;
}
