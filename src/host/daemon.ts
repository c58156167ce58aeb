// ferryd: one per host. Owns the host's VMs (one VmHandle each, the VM itself in a worker) and
// serves them over an HTTP/JSON API guarded by a bearer token. Configs live in the state
// directory so a restarted daemon finds its VMs again; a VM last seen running is booted again,
// every other VM comes back `created` (its memory did not survive the daemon).

import type { VmMemoryStats } from '../vm/paging/vm-paging.js';
import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash, timingSafeEqual } from 'node:crypto';
import { isAbsolute } from 'node:path';
import type { MigratableVm, SnapshotResult, VmConfig, VmEvent, VmHandle } from '../vm/types.js';
import { allowedCommands, transition, VmCommand, VmState } from '../vm/lifecycle.js';
import { badRequest, errorBody, HostError, notFound } from './errors.js';
import { validateConfig, validateName } from './config.js';
import { StateDir } from './store.js';
import type { VmFactory } from './factory.js';
import { MigrationService, type MigrationHost } from './migrations.js';
import type { SenderTimeouts } from '../migration/engine/sender.js';
import type { ReceiverTimeouts } from '../migration/engine/receiver.js';

export type { VmFactory } from './factory.js';

export const DEFAULT_LISTEN = '127.0.0.1:7480';
/** The migration listener's port when not given: next to the API's default. */
export const DEFAULT_MIGRATION_PORT = 7481;
const MAX_BODY = 1 << 20;
const HEARTBEAT_MS = 15_000;
const DISPOSE_TIMEOUT_MS = 15_000;

export interface DaemonOptions {
  readonly stateDir: string;
  /** `HOST:PORT`; port 0 picks a free one (see `Daemon.url`). */
  readonly listen?: string;
  readonly factory: VmFactory;
  readonly log?: (message: string) => void;
  /** `HOST:PORT` for incoming migrations; default: the API's host, port 7481 (0 if the API's is 0). */
  readonly migrationListen?: string;
  readonly migrationTimeouts?: { readonly sender?: Partial<SenderTimeouts>; readonly receiver?: Partial<ReceiverTimeouts> };
  readonly migrationTokenTtlMs?: number;
}

/** A VM as the API shows it. */
export interface VmView {
  readonly name: string;
  readonly state: VmState;
  readonly config: VmConfig;
  readonly allowedCommands: readonly string[];
  /** Resident, swapped and working-set sizes while the VM has memory (src/vm/paging). */
  readonly memory?: VmMemoryStats;
}

interface Entry {
  handle: VmHandle;
  unsubscribe: () => void;
  /** Commands on one VM run one after another; a stop never overtakes the start before it. */
  queue: Promise<unknown>;
  /** Console streams attached to this VM, ended when it is deleted or replaced. */
  readonly streams: Set<ServerResponse>;
}

type Params = Readonly<Record<string, string>>;
interface Reply { readonly status: number; readonly body?: unknown }
type Handler = (d: Daemon, req: IncomingMessage, res: ServerResponse, params: Params) => Promise<Reply | 'streaming'>;

export interface Route {
  readonly method: 'GET' | 'POST' | 'DELETE';
  /** OpenAPI-style template; `{name}` matches one path segment. */
  readonly path: string;
  readonly handler: Handler;
}

const LIFECYCLE = ['start', 'stop', 'pause', 'resume'] as const;
type LifecycleAction = typeof LIFECYCLE[number];

/** Every route the daemon serves; docs/api/openapi.json is checked against this list. */
export const ROUTES: readonly Route[] = [
  { method: 'GET', path: '/v1/vms', handler: (d) => d.list() },
  { method: 'POST', path: '/v1/vms', handler: async (d, req) => d.create(await readJson(req)) },
  { method: 'POST', path: '/v1/vms/restore', handler: async (d, req) => d.restore(await readJson(req)) },
  { method: 'GET', path: '/v1/events', handler: async (d, req, res) => d.events(req, res) },
  { method: 'GET', path: '/v1/vms/{name}', handler: async (d, _q, _s, p) => ({ status: 200, body: view(d.entry(p['name']!).handle) }) },
  { method: 'DELETE', path: '/v1/vms/{name}', handler: (d, _q, _s, p) => d.delete(p['name']!) },
  ...LIFECYCLE.map((action): Route => ({
    method: 'POST', path: `/v1/vms/{name}/${action}`, handler: (d, _q, _s, p) => d.lifecycle(p['name']!, action),
  })),
  { method: 'POST', path: '/v1/vms/{name}/snapshot', handler: async (d, req, _s, p) => d.snapshot(p['name']!, await readJson(req)) },
  { method: 'GET', path: '/v1/vms/{name}/console', handler: async (d, req, res, p) => d.consoleOut(p['name']!, req, res) },
  { method: 'POST', path: '/v1/vms/{name}/console', handler: async (d, req, _s, p) => d.consoleIn(p['name']!, await readJson(req)) },
  { method: 'POST', path: '/v1/vms/{name}/migrate', handler: async (d, req, _s, p) => ({ status: 202, body: d.migrations.startOutgoing(p['name']!, await readJson(req)) }) },
  { method: 'POST', path: '/v1/vms/{name}/wws', handler: async (d, req, _s, p) => d.wws(p['name']!, await readJson(req)) },
  { method: 'POST', path: '/v1/migrations/incoming', handler: async (d) => ({ status: 201, body: d.migrations.issueToken() }) },
  { method: 'GET', path: '/v1/migrations', handler: async (d) => ({ status: 200, body: { migrations: d.migrations.list() } }) },
  { method: 'GET', path: '/v1/migrations/{id}', handler: async (d, _q, _s, p) => ({ status: 200, body: d.migrations.get(p['id']!) }) },
  { method: 'POST', path: '/v1/migrations/{id}/cancel', handler: async (d, _q, _s, p) => ({ status: 200, body: d.migrations.cancel(p['id']!) }) },
  { method: 'POST', path: '/v1/migrations/{id}/resolve', handler: async (d, req, _s, p) => ({ status: 200, body: await d.migrations.resolve(p['id']!, await readJson(req)) }) },
];

export class Daemon implements MigrationHost {
  private readonly vms = new Map<string, Entry>();
  /** Names being created or restored: taken, though no handle exists yet. */
  private readonly reserved = new Set<string>();
  private readonly eventStreams = new Map<ServerResponse, string | undefined>();
  private readonly heartbeat: NodeJS.Timeout;
  private readonly tokenDigest: Buffer;
  private closing: Promise<void> | undefined;
  private migrationService: MigrationService | undefined;

  private constructor(
    private readonly server: Server,
    private readonly store: StateDir,
    readonly token: string,
    private readonly factory: VmFactory,
    readonly log: (message: string) => void,
  ) {
    this.tokenDigest = digest(token);
    this.heartbeat = setInterval(() => this.ping(), HEARTBEAT_MS).unref();
  }

  static async start(options: DaemonOptions): Promise<Daemon> {
    const log = options.log ?? ((m: string) => process.stderr.write(`ferryd: ${m}\n`));
    const store = new StateDir(options.stateDir);
    const token = store.token();
    const server = createServer();
    const daemon = new Daemon(server, store, token, options.factory, log);
    server.on('request', (req, res) => void daemon.handle(req, res));
    // Load before listening so the first request already sees every VM.
    await daemon.restoreFromDisk();
    const { host, port } = parseListen(options.listen ?? DEFAULT_LISTEN);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => { server.off('error', reject); resolve(); });
      });
    } catch (err) {
      await daemon.close();
      throw new HostError('LISTEN_FAILED', `cannot listen on ${host}:${port}: ${(err as Error).message}`, { cause: err });
    }
    try {
      const listen = options.migrationListen !== undefined ? parseListen(options.migrationListen) : { host, port: port === 0 ? 0 : DEFAULT_MIGRATION_PORT };
      daemon.migrationService = await MigrationService.start(daemon, {
        listen,
        ...(options.migrationTimeouts?.sender ? { senderTimeouts: options.migrationTimeouts.sender } : {}),
        ...(options.migrationTimeouts?.receiver ? { receiverTimeouts: options.migrationTimeouts.receiver } : {}),
        ...(options.migrationTokenTtlMs !== undefined ? { tokenTtlMs: options.migrationTokenTtlMs } : {}),
      });
    } catch (err) {
      await daemon.close();
      throw err;
    }
    return daemon;
  }

  get migrations(): MigrationService {
    if (!this.migrationService) throw new HostError('SHUTTING_DOWN', 'the migration service is not running');
    return this.migrationService;
  }

  get url(): string {
    const a = this.server.address() as AddressInfo;
    return `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  }

  /** Stops accepting requests, ends every stream, disposes every VM (ending its worker). */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    clearInterval(this.heartbeat);
    await this.migrationService?.close().catch((err: unknown) => this.log(`closing migrations: ${String(err)}`));
    const closed = this.server.listening
      ? new Promise<void>((resolve) => this.server.close(() => resolve()))
      : Promise.resolve();
    for (const res of this.eventStreams.keys()) res.end();
    this.eventStreams.clear();
    const entries = [...this.vms.values()];
    this.vms.clear();
    await Promise.all(entries.map(async (e) => {
      // Unsubscribe first: the `stopped` this causes is the daemon leaving, not the VM's
      // desired state, so it must not be recorded.
      e.unsubscribe();
      for (const s of e.streams) s.end();
      await withTimeout(e.queue.catch(() => undefined), DISPOSE_TIMEOUT_MS);
      await withTimeout(e.handle.dispose(), DISPOSE_TIMEOUT_MS).catch((err: unknown) => this.log(`disposing ${e.handle.name}: ${String(err)}`));
    }));
    this.server.closeAllConnections();
    await closed;
  }

  // --- request plumbing -------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      if (!this.authorized(req)) throw new HostError('UNAUTHORIZED', 'missing or wrong bearer token');
      if (this.closing) throw new HostError('SHUTTING_DOWN', 'the daemon is shutting down');
      const url = new URL(req.url ?? '/', 'http://ferryd');
      const { route, params, pathMatched } = match(req.method ?? 'GET', url.pathname);
      if (!route) {
        throw pathMatched
          ? new HostError('METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${url.pathname}`)
          : new HostError('ROUTE_NOT_FOUND', `no route ${req.method} ${url.pathname}`);
      }
      const reply = await route.handler(this, req, res, params);
      if (reply !== 'streaming') sendJson(res, reply.status, reply.body);
    } catch (err) {
      const { status, body } = errorBody(err);
      if (status === 500) this.log(`${req.method} ${req.url}: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
      if (res.headersSent) res.end();
      else sendJson(res, status, body, status === 401 ? { 'WWW-Authenticate': 'Bearer realm="ferryd"' } : {});
    }
  }

  private authorized(req: IncomingMessage): boolean {
    const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
    return m !== null && timingSafeEqual(digest(m[1]!), this.tokenDigest);
  }

  entry(name: string): Entry {
    const e = this.vms.get(name);
    if (!e) throw notFound(name);
    return e;
  }

  /** Runs `fn` after every earlier command on the same VM has settled. */
  private serialized<T>(e: Entry, fn: () => Promise<T>): Promise<T> {
    const next = e.queue.then(fn, fn);
    e.queue = next.catch(() => undefined);
    return next;
  }

  // --- VMs ---------------------------------------------------------------------------------

  async list(): Promise<Reply> {
    const vms = [...this.vms.values()].map((e) => view(e.handle)).sort((a, b) => a.name.localeCompare(b.name));
    return { status: 200, body: { vms } };
  }

  async create(body: unknown): Promise<Reply> {
    const config = validateConfig(body);
    this.reserve(config.name);
    try {
      const handle = await this.factory.create(config);
      this.adopt(handle);
      this.persist(handle);
      return { status: 201, body: view(handle) };
    } finally {
      this.reserved.delete(config.name);
    }
  }

  async delete(name: string): Promise<Reply> {
    const e = this.entry(name);
    return this.serialized(e, async () => {
      const kind = e.handle.state.kind;
      if (kind !== 'created' && kind !== 'stopped' && kind !== 'failed') {
        throw new HostError('VM_INVALID_STATE', `cannot delete a VM that is ${kind} (stop it first)`);
      }
      this.release(e);
      await e.handle.dispose();
      this.store.remove(name);
      return { status: 204 };
    });
  }

  async lifecycle(name: string, action: LifecycleAction): Promise<Reply> {
    const e = this.entry(name);
    return this.serialized(e, async () => {
      // Checked here as well as in the VM so the refusal names the state the client saw.
      transition(e.handle.state, { type: action } as VmCommand);
      await e.handle[action]();
      this.persist(e.handle);
      return { status: 200, body: view(e.handle) };
    });
  }

  async snapshot(name: string, body: unknown): Promise<Reply> {
    const e = this.entry(name);
    const file = snapshotPath(body);
    const result: SnapshotResult = await this.serialized(e, () => {
      const kind = e.handle.state.kind;
      if (kind !== 'running' && kind !== 'paused') throw new HostError('VM_INVALID_STATE', `cannot snapshot a VM that is ${kind}`);
      return e.handle.snapshot(file);
    });
    return { status: 200, body: result };
  }

  /**
   * Makes a VM from a snapshot file. A new name needs `config`; an existing VM that is not
   * running may be restored in place, keeping its config unless one is given.
   */
  async restore(body: unknown): Promise<Reply> {
    if (!isRecord(body)) throw badRequest('body must be a JSON object');
    for (const key of Object.keys(body)) {
      if (!['name', 'file', 'config', 'paused'].includes(key)) throw badRequest(`unknown field '${key}'`);
    }
    const name = validateName(body['name']);
    const file = snapshotPath(body);
    const paused = body['paused'] ?? false;
    if (typeof paused !== 'boolean') throw badRequest("'paused' must be a boolean");
    const configIn = body['config'];
    const make = async (base: VmConfig | undefined): Promise<VmHandle> => {
      let config = base;
      if (configIn !== undefined) {
        if (!isRecord(configIn)) throw badRequest("'config' must be an object");
        config = validateConfig({ ...configIn, name });
      }
      if (!config) throw badRequest(`no VM named '${name}': restoring it needs 'config'`);
      const handle = await this.factory.restore(config, file);
      try {
        if (!paused && handle.state.kind === 'paused') await handle.resume();
      } catch (err) {
        await handle.dispose().catch(() => undefined);
        throw err;
      }
      return handle;
    };

    const existing = this.vms.get(name);
    if (existing) {
      const reply = await this.serialized(existing, async () => {
        const kind = existing.handle.state.kind;
        if (kind !== 'created' && kind !== 'stopped' && kind !== 'failed') {
          throw new HostError('VM_INVALID_STATE', `cannot restore over a VM that is ${kind}`);
        }
        const handle = await make(existing.handle.config);
        this.release(existing);
        await existing.handle.dispose().catch((err: unknown) => this.log(`disposing ${name}: ${String(err)}`));
        this.adopt(handle);
        this.persist(handle);
        return { status: 200, body: view(handle) };
      });
      return reply;
    }
    this.reserve(name);
    try {
      const handle = await make(undefined);
      this.adopt(handle);
      this.persist(handle);
      return { status: 201, body: view(handle) };
    } finally {
      this.reserved.delete(name);
    }
  }

  private reserve(name: string): void {
    if (this.vms.has(name) || this.reserved.has(name)) throw new HostError('VM_EXISTS', `a VM named '${name}' already exists`);
    this.reserved.add(name);
  }

  private adopt(handle: VmHandle): Entry {
    const entry: Entry = { handle, queue: Promise.resolve(), streams: new Set(), unsubscribe: () => undefined };
    entry.unsubscribe = handle.onEvent((event) => {
      if (event.type === 'state' && this.vms.get(handle.name) === entry) this.persist(handle);
      this.broadcast(event);
    });
    this.vms.set(handle.name, entry);
    return entry;
  }

  /** Takes a VM out of the daemon's hands (before it is disposed or replaced). */
  private release(e: Entry): void {
    e.unsubscribe();
    for (const s of e.streams) s.end();
    e.streams.clear();
    if (this.vms.get(e.handle.name) === e) this.vms.delete(e.handle.name);
  }

  persist(handle: VmHandle): void {
    // A reservation for an incoming migration is not a VM of this host until it runs here.
    if (this.closing || handle.state.kind === 'migrating-in') return;
    try {
      this.store.save({ config: handle.config, lastState: handle.state.kind });
    } catch (err) {
      this.log(`saving ${handle.name}: ${String(err)}`);
    }
  }

  private async restoreFromDisk(): Promise<void> {
    for (const record of this.store.load(this.log)) {
      let handle: VmHandle;
      try {
        handle = await this.factory.create(record.config);
      } catch (err) {
        this.log(`cannot recreate VM ${record.config.name}: ${String(err)}`);
        continue;
      }
      const entry = this.adopt(handle);
      if (record.lastState === 'running') {
        // Booting takes seconds; the API is up meanwhile and shows the VM's progress.
        void this.serialized(entry, () => handle.start()).catch((err: unknown) => {
          this.log(`restarting VM ${handle.name}: ${err instanceof Error ? err.message : String(err)}`);
        });
      }
    }
  }

  // --- migration (MigrationHost) ------------------------------------------------------------

  migratable(name: string): MigratableVm {
    const handle = this.entry(name).handle;
    if (!isMigratable(handle)) throw new HostError('MIGRATION_UNSUPPORTED', `VM ${name} cannot be migrated by this daemon`);
    return handle;
  }

  async reserveIncoming(config: VmConfig, from: string): Promise<MigratableVm> {
    if (this.closing) throw new HostError('SHUTTING_DOWN', 'the daemon is shutting down');
    const make = this.factory.incoming;
    if (!make) throw new HostError('MIGRATION_UNSUPPORTED', 'this daemon cannot receive migrations');
    this.reserve(config.name);
    try {
      const handle = await make.call(this.factory, config, from);
      this.adopt(handle);
      return handle;
    } finally {
      this.reserved.delete(config.name);
    }
  }

  async removeVm(handle: VmHandle): Promise<void> {
    const e = this.vms.get(handle.name);
    if (e && e.handle === handle) {
      this.release(e);
      this.store.remove(handle.name);
    }
    await handle.dispose();
  }

  /** `POST /v1/vms/{name}/wws`: dirty pages per interval while the guest runs (Clark et al. §4). */
  async wws(name: string, body: unknown): Promise<Reply> {
    const vm = this.migratable(name);
    if (!isRecord(body)) throw badRequest('body must be a JSON object');
    for (const key of Object.keys(body)) if (key !== 'intervalMs' && key !== 'durationMs') throw badRequest(`unknown field '${key}'`);
    const intervalMs = body['intervalMs'] ?? 50;
    const durationMs = body['durationMs'] ?? 5000;
    if (typeof intervalMs !== 'number' || !Number.isInteger(intervalMs) || intervalMs < 10 || intervalMs > 60_000) throw badRequest("'intervalMs' must be an integer in 10..60000");
    if (typeof durationMs !== 'number' || !Number.isInteger(durationMs) || durationMs < intervalMs || durationMs > 600_000) throw badRequest("'durationMs' must be an integer in intervalMs..600000");
    const trace = await vm.traceWorkingSet(intervalMs, Math.floor(durationMs / intervalMs));
    return { status: 200, body: trace };
  }

  // --- streams -----------------------------------------------------------------------------

  /** `GET /v1/events[?vm=NAME]`: server-sent VmEvents, one SSE event per VmEvent, named by its type. */
  events(req: IncomingMessage, res: ServerResponse): 'streaming' {
    const vm = new URL(req.url ?? '/', 'http://ferryd').searchParams.get('vm') ?? undefined;
    if (vm !== undefined) this.entry(vm);
    openStream(res);
    this.eventStreams.set(res, vm);
    res.on('close', () => this.eventStreams.delete(res));
    return 'streaming';
  }

  broadcast(event: VmEvent): void {
    const frame = `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
    for (const [res, vm] of this.eventStreams) if (vm === undefined || vm === event.vm) res.write(frame);
  }

  private ping(): void {
    // Comments keep proxies from timing the stream out and reveal clients that went away.
    for (const res of this.eventStreams.keys()) res.write(': ping\n\n');
    for (const e of this.vms.values()) for (const res of e.streams) res.write(': ping\n\n');
  }

  /** `GET /v1/vms/{name}/console`: the guest's output as SSE `output` events, base64 in `data`. */
  consoleOut(name: string, _req: IncomingMessage, res: ServerResponse): 'streaming' {
    const e = this.entry(name);
    openStream(res);
    e.streams.add(res);
    const off = e.handle.onConsole((bytes) => res.write(`event: output\ndata: ${Buffer.from(bytes).toString('base64')}\n\n`));
    res.on('close', () => { off(); e.streams.delete(res); });
    return 'streaming';
  }

  /** `POST /v1/vms/{name}/console`: `{ "data": BASE64 }` or `{ "text": STRING }` typed to the guest. */
  async consoleIn(name: string, body: unknown): Promise<Reply> {
    const e = this.entry(name);
    if (!isRecord(body)) throw badRequest('body must be a JSON object');
    let bytes: Uint8Array;
    if (typeof body['data'] === 'string' && body['text'] === undefined) {
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body['data'])) throw badRequest("'data' must be base64");
      bytes = Buffer.from(body['data'], 'base64');
    } else if (typeof body['text'] === 'string' && body['data'] === undefined) {
      bytes = Buffer.from(body['text'], 'utf8');
    } else {
      throw badRequest("console input needs exactly one of 'data' (base64) or 'text'");
    }
    const kind = e.handle.state.kind;
    if (kind !== 'running' && kind !== 'paused') throw new HostError('VM_INVALID_STATE', `cannot type to the console of a VM that is ${kind}`);
    e.handle.consoleWrite(bytes);
    return { status: 204 };
  }
}

export function view(handle: VmHandle): VmView {
  const memory = handle.memoryStats?.();
  return { name: handle.name, state: handle.state, config: handle.config, allowedCommands: allowedCommands(handle.state), ...(memory ? { memory } : {}) };
}

function match(method: string, path: string): { route?: Route; params: Params; pathMatched: boolean } {
  const segments = path.split('/');
  let pathMatched = false;
  for (const route of ROUTES) {
    const tpl = route.path.split('/');
    if (tpl.length !== segments.length) continue;
    const params: Record<string, string> = {};
    let ok = true;
    for (let i = 0; i < tpl.length && ok; i++) {
      const t = tpl[i]!;
      const s = segments[i]!;
      if (t.startsWith('{')) {
        let v: string;
        try { v = decodeURIComponent(s); } catch { v = ''; }
        if (v === '') ok = false; else params[t.slice(1, -1)] = v;
      } else if (t !== s) ok = false;
    }
    if (!ok) continue;
    pathMatched = true;
    if (route.method === method) return { route, params, pathMatched };
  }
  return { params: {}, pathMatched };
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new HostError('PAYLOAD_TOO_LARGE', `request body over ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw badRequest(`body is not valid JSON: ${(err as Error).message}`);
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (status === 204 || body === undefined) {
    res.writeHead(status, headers).end();
    return;
  }
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function openStream(res: ServerResponse): void {
  res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store', 'Connection': 'keep-alive' });
  // An initial comment gets the headers to the client now, not with the first event.
  res.write(': ferryd\n\n');
}

function snapshotPath(body: unknown): string {
  if (!isRecord(body)) throw badRequest('body must be a JSON object');
  const file = body['file'];
  // The daemon's working directory means nothing to a client, so relative paths are refused.
  if (typeof file !== 'string' || !isAbsolute(file) || file.includes('\0')) throw badRequest("'file' must be an absolute path");
  return file;
}

function isMigratable(h: VmHandle): h is MigratableVm {
  return typeof (h as Partial<MigratableVm>).freeze === 'function';
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => { timer = setTimeout(() => resolve(undefined), ms); });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** `HOST:PORT`, `[V6]:PORT` or `:PORT` (loopback). */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new HostError('BAD_LISTEN', `invalid listen address '${text}' (expected HOST:PORT)`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}
