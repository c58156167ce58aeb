// `ferry migrate` and `ferry wws` as a user runs them: flag checking, against the fake daemon
// (whose VMs cannot migrate), and following a migration against a scripted API.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { Daemon } from '../../src/host/daemon.js';
import type { MigrationView } from '../../src/host/migrations.js';
import type { MigrationReport } from '../../src/migration/engine/report.js';
import { FakeFactory } from '../host/fakes.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const ferry = join(root, 'bin/ferry.js');

/** Runs ferry without blocking the event loop: the daemons under test live in this process. */
function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const cleanEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
    for (const k of ['FERRY_TOKEN', 'FERRY_TO_TOKEN', 'FERRY_HOST']) if (!(k in env)) delete cleanEnv[k];
    execFile(process.execPath, [ferry, ...args], { env: cleanEnv, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function withDaemon(fn: (d: Daemon, dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-migrate-cli-'));
  const daemon = await Daemon.start({ stateDir: dir, listen: '127.0.0.1:0', factory: new FakeFactory(), log: () => undefined });
  try {
    await fn(daemon, dir);
  } finally {
    await daemon.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

// Flags are checked before any daemon is asked: nothing listens on port 1.
const NOWHERE = ['--host', 'http://127.0.0.1:1', '--token', 't'];
const TO = ['--to', 'http://127.0.0.1:1', '--to-token', 't'];

test('bad migrate and wws flags are usage errors (exit 2) naming the flag', async () => {
  const cases: [string[], RegExp][] = [
    [['migrate', 'web', ...TO, '--bogus'], /--bogus/],
    [['migrate', 'web', ...TO, '--bandwidth', '10mbps'], /--bandwidth: invalid rate "10mbps"/],
    [['migrate', 'web', ...TO, '--bandwidth', '1Gbps'], /--bandwidth: ambiguous rate/],
    [['migrate', 'web', '--to-token', 't'], /--to URL is required/],
    [['migrate', 'web', ...TO, '--bandwidth', '1G', '--rate-cap', '500Mbit'], /--bandwidth .* and --rate-cap .* exclude each other/],
    [['migrate', 'web', ...TO, '--rate-start', '200Mbit', '--rate-cap', '100Mbit'], /--rate-cap is below --rate-start/],
    [['migrate', 'web', ...TO, '--rate-margin', 'lots'], /--rate-margin: invalid rate/],
    [['migrate', 'web', ...TO, '--max-rounds', '0'], /--max-rounds must be an integer in 1\.\.1000/],
    [['migrate', 'web', ...TO, '--downtime-limit', '5ms'], /--downtime-limit must be an integer/],
    [['migrate', 'web', ...TO, '--throttle', 'hard'], /--throttle must be one of dirty-limit, auto-converge, off, got 'hard'/],
    [['migrate', 'web', ...TO, '--timeout', '10s'], /--timeout must be a number of seconds/],
    [['migrate', 'web', ...TO, '--timeout', '0'], /--timeout must be a number of seconds in 0\.001\.\.86400/],
    [['migrate', 'web', ...TO, '--on-timeout', 'force'], /--on-timeout needs --timeout S/],
    [['migrate', 'web', ...TO, '--timeout', '30', '--on-timeout', 'abort'], /--on-timeout must be one of cancel, postcopy, force, got 'abort'/],
    [['migrate', 'web', '--to', 'ftp://x', '--to-token', 't'], /invalid --to 'ftp:\/\/x'/],
    [['migrate', 'web', '--to', 'http://127.0.0.1:1'], /no token for the destination: pass --to-token/],
    [['migrate', ...TO], /expected NAME, got none/],
    [['migrate', 'show'], /expected ID/],
    [['wws', 'web', '--interval', '5'], /--interval must be an integer in 10\.\.60000/],
    [['wws', 'web', '--duration', 'soon'], /invalid --duration 'soon'/],
    [['wws', 'web', '--interval', '100', '--duration', '50'], /--duration must be between --interval/],
    [['wws', 'web', '--bogus'], /--bogus/],
  ];
  for (const [args, message] of cases) {
    const r = await run([...NOWHERE, ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
  }
  const help = await run(['migrate', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Ctrl-C cancels the migration/);
  assert.equal((await run(['wws', '--help'])).code, 0);
  assert.match((await run(['help'])).stdout, /migrate .*\n.*wws /);
});

test('against the fake daemon: migrate is refused (MIGRATION_UNSUPPORTED), cancel finds nothing', async () => {
  await withDaemon(async (d, dir) => {
    const g = ['--host', d.url, '--state', dir];
    assert.equal((await run([...g, 'vm', 'create', 'web', '--start'])).code, 0);

    // The destination is the same daemon: its token route works even though its VMs cannot move.
    const r = await run([...g, 'migrate', 'web', '--to', d.url, '--to-state', dir, '--bandwidth', '1G']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^ferry migrate: VM web cannot be migrated by this daemon \[MIGRATION_UNSUPPORTED\]$/m);
    assert.equal(r.stdout, '');
    // --to-token and $FERRY_TO_TOKEN work too; a wrong one is the destination refusing.
    assert.match((await run([...g, 'migrate', 'web', '--to', d.url, '--to-token', d.token])).stderr, /MIGRATION_UNSUPPORTED/);
    assert.match((await run([...g, 'migrate', 'web', '--to', d.url], { FERRY_TO_TOKEN: d.token })).stderr, /MIGRATION_UNSUPPORTED/);
    const wrong = await run([...g, 'migrate', 'web', '--to', d.url, '--to-token', 'nope']);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /UNAUTHORIZED/);

    const none = await run([...g, 'migrate', 'cancel', 'web']);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /VM web has no outgoing migration running \(see ferry migrate list\) \[MIGRATION_NOT_FOUND\]/);
    const unknown = await run([...g, 'migrate', 'cancel', 'ghost']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no VM named 'ghost' \[VM_NOT_FOUND\]/);

    const list = await run([...g, 'migrate', 'list', '--json']);
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual(JSON.parse(list.stdout), []);
    assert.equal((await run([...g, 'migrate', 'list'])).stdout, 'no migrations\n');
    const show = await run([...g, 'migrate', 'show', 'nope']);
    assert.equal(show.code, 1);
    assert.match(show.stderr, /MIGRATION_NOT_FOUND/);

    const wws = await run([...g, 'wws', 'web']);
    assert.equal(wws.code, 1);
    assert.match(wws.stderr, /MIGRATION_UNSUPPORTED/);
  });
});

// --- a scripted API: enough of two daemons to follow one migration ----------------------------

const REPORT: MigrationReport = {
  vm: 'web', direction: 'out', peer: '127.0.0.1:7999', outcome: 'completed',
  totalMs: 1234, downtimeMs: 56, bytes: 300_000_000, ramBytes: 268_435_456,
  rounds: [
    { round: 1, final: false, pagesPlanned: 65536, pagesSent: 60000, pagesSkipped: 5536, pagesDirtied: 3000, bytesSent: 250_000_000, durationMs: 1000, rateLimit: 12_500_000, measuredRate: 250_000_000, dirtyRate: 12_288_000 },
    { round: 2, final: true, pagesPlanned: 3000, pagesSent: 3000, pagesSkipped: 0, pagesDirtied: 0, bytesSent: 12_000_000, durationMs: 40, rateLimit: null, measuredRate: null, dirtyRate: null },
  ],
  stopRule: 'min-pages',
  stages: [{ stage: 'precopy', startMs: 0, durationMs: 1000 }],
  compression: 'zstd',
  pages: { sent: 63000, zero: 2536, skipped: 5536 },
  pageBytes: { raw: 258_048_000, wire: 100_000_000 },
};

function view(stage: string, round: number, report?: MigrationReport): MigrationView {
  return {
    id: 'm1', vm: 'web', direction: 'out', peer: '127.0.0.1:7999', startedAt: '2025-01-01T00:00:00.000Z', stage,
    progress: { stage, round, bytes: round * 1_000_000, pagesSent: round * 100, pagesRemaining: 1000 - round * 100, elapsedMs: round * 10 },
    ...(report ? { report } : {}),
  };
}

interface Scripted { url: string; bodies: unknown[]; cancels: number; close: () => Promise<void> }

interface ScriptOptions {
  /** Serve /v1/events (else 404: the CLI has to poll). */
  stream?: boolean;
  /** Stop in pre-copy until a cancel comes, then end with `final`. */
  holdUntilCancel?: boolean;
}

/** Source and destination in one server: `dst` authorises the token route, `src` the rest. */
async function scripted(final: MigrationReport, opts: ScriptOptions = {}): Promise<Scripted> {
  const streaming = opts.stream ?? true;
  let cancelled: () => void = () => undefined;
  const cancel = new Promise<void>((resolve) => { cancelled = resolve; });
  const streams = new Set<ServerResponse>();
  const state: Scripted = { url: '', bodies: [], cancels: 0, close: async () => undefined };
  let current = view('pre-migration', 0);
  const steps = [view('reservation', 0), view('precopy', 1), view('precopy', 1), view('precopy', 2), view('stop-and-copy', 3), view('activation', 3), view(final.outcome, 3, final)];
  const play = async (): Promise<void> => {
    // Events start once the CLI listens (when it streams at all), as a real migration's would
    // outlast the subscription.
    for (let i = 0; streaming && streams.size === 0 && i < 100; i++) await new Promise((r) => setTimeout(r, 20));
    for (const step of steps) {
      await new Promise((r) => setTimeout(r, 20));
      if (opts.holdUntilCancel && step.stage === 'precopy' && step.progress.round === 2) await cancel;
      current = step;
      for (const res of streams) res.write(`event: migration\ndata: ${JSON.stringify({ type: 'migration', vm: 'web', migration: step })}\n\n`);
    }
  };
  const json = (res: ServerResponse, status: number, body: unknown): void => {
    res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://x');
      const route = `${req.method} ${url.pathname}`;
      const need = route === 'POST /v1/migrations/incoming' ? 'dst' : 'src';
      if (req.headers.authorization !== `Bearer ${need}`) { json(res, 401, { error: { code: 'UNAUTHORIZED', message: 'wrong token' } }); return; }
      switch (route) {
        case 'POST /v1/migrations/incoming': json(res, 201, { token: 'ab.cd', port: 7999, address: '0.0.0.0', expiresInMs: 600_000 }); return;
        case 'POST /v1/vms/web/migrate':
          state.bodies.push(JSON.parse(Buffer.concat(chunks).toString('utf8')));
          json(res, 202, current);
          void play();
          return;
        case 'GET /v1/migrations/m1': json(res, 200, current); return;
        case 'POST /v1/migrations/m1/cancel': state.cancels++; cancelled(); json(res, 200, current); return;
        case 'GET /v1/events':
          if (!streaming) { json(res, 404, { error: { code: 'ROUTE_NOT_FOUND', message: 'no' } }); return; }
          res.writeHead(200, { 'Content-Type': 'text/event-stream' });
          res.write(': hi\n\n');
          streams.add(res);
          res.on('close', () => streams.delete(res));
          return;
        case 'POST /v1/vms/web/wws':
          json(res, 200, { intervalMs: 100, pageSize: 4096, dirtyPages: [10, 20, 30, 40, 1000], measuredIntervalMs: [100, 100, 100, 100, 100] });
          return;
        default: json(res, 404, { error: { code: 'ROUTE_NOT_FOUND', message: route } });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.close = () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); });
  return state;
}

test('migrate follows the migration to its report: stage lines, summary, --json, exit status', async () => {
  const api = await scripted(REPORT);
  try {
    const r = await run(['--host', api.url, '--token', 'src', 'migrate', 'web', '--to', api.url, '--to-token', 'dst', '--bandwidth', '1G', '--max-rounds', '5', '--no-compression']);
    assert.equal(r.code, 0, r.stderr);
    // The migration address: the --to host (the listener is bound to any address) and its port.
    assert.deepEqual(api.bodies[0], { bandwidth: '1G', maxRounds: 5, compression: 'none', destination: '127.0.0.1:7999', token: 'ab.cd' });
    // Not a terminal: one line per stage change.
    const stages = r.stderr.trimEnd().split('\n').map((l) => /^migrate web: (.*?) \(/.exec(l)?.[1]);
    assert.deepEqual(stages, ['pre-migration', 'reservation', 'precopy round 1', 'precopy round 2', 'stop-and-copy round 3', 'activation', 'completed']);
    assert.match(r.stdout, /^web: migration completed$/m);
    assert.match(r.stdout, /^ {2}downtime: {2}56 ms$/m);
    assert.match(r.stdout, /^ {2}bytes: {5}300\.0 MB on the wire/m);
    assert.match(r.stdout, /^ {2}stop rule: min-pages$/m);
    assert.match(r.stdout, /^ROUND\s+SENT\s+SKIPPED\s+DIRTIED\s+MB\s+MS\s+RATE Mbit\/s$/m);
    assert.match(r.stdout, /^1\s+60000\s+5536\s+3000\s+250\.0\s+1000\s+2000\.0$/m);
    assert.match(r.stdout, /^2 \(stop-and-copy\)\s+3000\s+0\s+0\s+12\.0\s+40\s+-$/m);

    const j = await run(['--host', api.url, '--token', 'src', 'migrate', 'web', '--to', api.url, '--to-token', 'dst', '--rate-start', '100Mbit', '--rate-cap', '1G', '--json']);
    assert.equal(j.code, 0, j.stderr);
    assert.deepEqual(api.bodies[1], { rate: { start: '100Mbit', cap: '1G' }, destination: '127.0.0.1:7999', token: 'ab.cd' });
    const lines = j.stdout.trimEnd().split('\n');
    assert.deepEqual(JSON.parse(lines[lines.length - 1]!), REPORT);
    assert.equal(api.cancels, 0);
  } finally {
    await api.close();
  }
});

test('a failed migration exits 1 with its error; without an event stream the CLI polls', async () => {
  const failed: MigrationReport = { ...REPORT, outcome: 'failed', error: { code: 'MIGRATION_CANCELLED', message: 'cancelled by the operator' }, downtimeMs: null };
  const api = await scripted(failed, { stream: false });
  try {
    const r = await run(['--host', api.url, '--token', 'src', 'migrate', 'web', '--to', api.url], { FERRY_TO_TOKEN: 'dst' });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /^web: migration failed$/m);
    assert.match(r.stdout, /downtime: {2}- \(never paused/);
    assert.match(r.stderr, /^ferry migrate: migration of web failed: cancelled by the operator \[MIGRATION_CANCELLED\]$/m);
    assert.match(r.stderr, /^migrate web: failed/m);
  } finally {
    await api.close();
  }
});

test('Ctrl-C cancels the migration and keeps following it to its end', async () => {
  const failed: MigrationReport = { ...REPORT, outcome: 'failed', error: { code: 'MIGRATION_CANCELLED', message: 'cancelled by the operator' }, downtimeMs: null };
  const api = await scripted(failed, { holdUntilCancel: true });
  try {
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env['FERRY_TOKEN'];
    const child = spawn(process.execPath, [ferry, '--host', api.url, '--token', 'src', 'migrate', 'web', '--to', api.url, '--to-token', 'dst', '--json'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    // Interrupt once it is in pre-copy, as a user would.
    await new Promise<void>((resolve) => {
      child.stderr.on('data', (b: Buffer) => {
        stderr += b.toString();
        if (stderr.includes('precopy round 1')) resolve();
      });
    });
    child.kill('SIGINT');
    assert.equal(await exited, 1, stderr);
    assert.equal(api.cancels, 1);
    assert.match(stderr, /Ctrl-C: cancelling migration m1; waiting for it to end/);
    const lines = stdout.trimEnd().split('\n');
    assert.equal((JSON.parse(lines[lines.length - 1]!) as MigrationReport).outcome, 'failed');
  } finally {
    await api.close();
  }
});

test('wws prints each interval and a summary; --json adds the summary to the trace', async () => {
  const api = await scripted(REPORT);
  try {
    const r = await run(['--host', api.url, '--token', 'src', 'wws', 'web', '--interval', '100', '--duration', '0.5s']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^#\s+AT ms\s+ms\s+PAGES\s+MB$/m);
    assert.match(r.stdout, /^5\s+500\s+100\s+1000\s+4\.10$/m);
    assert.match(r.stdout, /mean 220\.0, max 1000, p50 30, p90 1000/);
    // 1100 pages x 4096 B in 0.5 s.
    assert.match(r.stdout, /dirty rate: +9\.01 MB\/s \(72\.1 Mbit\/s\)/);
    const j = await run(['--host', api.url, '--token', 'src', 'wws', 'web', '--json']);
    assert.equal(j.code, 0, j.stderr);
    const out = JSON.parse(j.stdout) as { dirtyPages: number[]; summary: { meanPages: number; p90Pages: number; dirtyBytesPerSec: number } };
    assert.deepEqual(out.dirtyPages, [10, 20, 30, 40, 1000]);
    assert.equal(out.summary.meanPages, 220);
    assert.equal(out.summary.dirtyBytesPerSec, (1100 * 4096) / 0.5);
  } finally {
    await api.close();
  }
});
