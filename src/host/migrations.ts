// The daemon's migrations, both ways. Outgoing: a PrecopySender per VM being moved away.
// Incoming: a listener on the migration port; each connection gets a MigrationReceiver that
// reserves the VM through the daemon. Tokens for incoming migrations come from this daemon's
// API (one-time, see docs/migration-protocol.md), so only whoever holds the API token can
// authorise a VM to be pushed here.

import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import type { MigratableVm, VmConfig, VmEvent, VmHandle } from '../vm/types.js';
import { HostError, badRequest } from './errors.js';
import { validateConfig } from './config.js';
import { PrecopySender, type SenderTimeouts } from '../migration/engine/sender.js';
import { MigrationReceiver, type IncomingHost, type MigrationTarget, type ReceiverTimeouts } from '../migration/engine/receiver.js';
import { hostingProblem } from '../migration/engine/wire-config.js';
import type { MigrationProgress, MigrationReport } from '../migration/engine/report.js';
import { MigrationError } from '../migration/errors.js';
import { TokenIssuer, formatToken, parseToken } from '../migration/protocol/auth.js';
import type { ConfigMessage } from '../migration/protocol/messages.js';
import { parseMigrateRequest, type MigrateRequest } from './migrate-request.js';
import { DEFAULT_PAGE_COMPRESSION, PAGE_COMPRESSIONS } from '../migration/compression/index.js';

/** A migration as the API shows it. */
export interface MigrationView {
  readonly id: string;
  readonly vm: string;
  readonly direction: 'out' | 'in';
  readonly peer: string;
  readonly startedAt: string;
  /** Stage kind while running; `completed`, `failed` or `in-doubt` at the end. */
  readonly stage: string;
  readonly progress: MigrationProgress;
  /** Set once it ended (or went in doubt). */
  readonly report?: MigrationReport;
}

/** What the service needs from its daemon. */
export interface MigrationHost {
  /** The VM named `name`, if it can be migrated; throws the API's not-found otherwise. */
  migratable(name: string): MigratableVm;
  /** Creates the paused, empty VM of an incoming migration and shows it in the daemon's list. */
  reserveIncoming(config: VmConfig, from: string): Promise<MigratableVm>;
  /** Forgets a VM (it left, or its reservation was freed) and releases its resources. */
  removeVm(handle: VmHandle): Promise<void>;
  /** Records the VM's config and state (a VM that arrived and runs). */
  persist(handle: VmHandle): void;
  broadcast(event: VmEvent): void;
  log(message: string): void;
}

export interface MigrationServiceOptions {
  /** `HOST:PORT` the migration listener binds (port 0: any free port). */
  readonly listen: { host: string; port: number };
  readonly senderTimeouts?: Partial<SenderTimeouts>;
  readonly receiverTimeouts?: Partial<ReceiverTimeouts>;
  readonly tokenTtlMs?: number;
}

/** One migration the service knows: its engine, and its report once it ended. */
interface MigrationEntry {
  readonly id: string;
  readonly direction: 'out' | 'in';
  readonly startedAt: string;
  readonly engine: PrecopySender | MigrationReceiver;
  report?: MigrationReport;
  /** The VM kept paused after a failure past the commit point, until resolved. */
  inDoubt?: MigratableVm;
}

/** Finished migrations kept for `GET /v1/migrations`. */
const HISTORY = 50;

export class MigrationService {
  private readonly records = new Map<string, MigrationEntry>();
  private readonly issuer: TokenIssuer;
  private readonly sockets = new Set<Socket>();
  private closed = false;

  private constructor(private readonly host: MigrationHost, private readonly server: Server, private readonly opts: MigrationServiceOptions) {
    this.issuer = new TokenIssuer(opts.tokenTtlMs !== undefined ? { ttlMs: opts.tokenTtlMs } : {});
    server.on('connection', (socket) => this.accept(socket));
  }

  static async start(host: MigrationHost, opts: MigrationServiceOptions): Promise<MigrationService> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new HostError('LISTEN_FAILED', `cannot listen for migrations on ${opts.listen.host}:${opts.listen.port}: ${e.message}`)));
      server.listen(opts.listen.port, opts.listen.host, () => resolve());
    });
    return new MigrationService(host, server, opts);
  }

  get port(): number { return (this.server.address() as AddressInfo).port; }
  get address(): string { return (this.server.address() as AddressInfo).address; }

  /** `POST /v1/migrations/incoming`: a one-time token for one VM to be pushed here. */
  issueToken(): { token: string; port: number; address: string; expiresInMs: number } {
    const token = this.issuer.issue();
    return { token: formatToken(token), port: this.port, address: this.address, expiresInMs: this.opts.tokenTtlMs ?? 600_000 };
  }

  /** `POST /v1/vms/{name}/migrate`: starts moving `name` away; the migration runs on. */
  startOutgoing(name: string, body: unknown): MigrationView {
    const request: MigrateRequest = parseMigrateRequest(body);
    const vm = this.host.migratable(name);
    const kind = vm.state.kind;
    if (kind !== 'running' && kind !== 'paused') throw new HostError('VM_INVALID_STATE', `cannot migrate a VM that is ${kind}`);
    for (const r of this.records.values()) {
      if (r.engine.vm === name && r.direction === 'out' && !r.report) throw new HostError('VM_INVALID_STATE', `VM ${name} is already migrating (${r.id})`);
    }
    let token;
    try { token = parseToken(request.token); } catch (e) { throw badRequest((e as Error).message); }
    const id = randomUUID();
    const sender = new PrecopySender({
      source: vm,
      host: request.host,
      port: request.port,
      token,
      mode: request.mode,
      ...(request.rate ? { rate: request.rate } : {}),
      ...(request.downtimeLimitMs !== undefined ? { downtimeLimitMs: request.downtimeLimitMs } : {}),
      ...(request.maxRounds !== undefined ? { maxRounds: request.maxRounds } : {}),
      ...(request.throttle !== undefined ? { converge: request.throttle } : {}),
      ...(request.timeout ? { timeout: request.timeout } : {}),
      compression: request.compression === 'none' ? null : DEFAULT_PAGE_COMPRESSION,
      ...(this.opts.senderTimeouts ? { timeouts: this.opts.senderTimeouts } : {}),
      onStage: () => this.announce(record),
      onProgress: () => this.announce(record),
    });
    const record: MigrationEntry = { id, direction: 'out', startedAt: new Date().toISOString(), engine: sender };
    this.add(record);
    void sender.run().then(async (report) => {
      record.report = report;
      if (report.outcome === 'completed') {
        // The VM lives on the destination now; its record here would only collide with it
        // coming back.
        await this.host.removeVm(vm).catch((e: unknown) => this.host.log(`removing migrated VM ${name}: ${String(e)}`));
      } else if (report.outcome === 'in-doubt') {
        record.inDoubt = vm;
        this.host.log(`migration ${id} of ${name} is in doubt: ${report.error?.message ?? ''}; resolve it with POST /v1/migrations/${id}/resolve`);
      }
      this.announce(record);
    });
    return this.view(record);
  }

  list(): MigrationView[] {
    return [...this.records.values()].map((r) => this.view(r));
  }

  get(id: string): MigrationView {
    return this.view(this.record(id));
  }

  /** `POST /v1/migrations/{id}/cancel`: refused once the destination has committed. */
  cancel(id: string): MigrationView {
    const r = this.record(id);
    if (r.report || !r.engine.cancel('cancelled by the operator')) {
      throw new HostError('MIGRATION_TOO_LATE', `migration ${id} is past its commit point (${r.engine.stage.kind}); it can no longer be cancelled`);
    }
    return this.view(r);
  }

  /**
   * `POST /v1/migrations/{id}/resolve`: an operator settles an in-doubt migration once they know
   * where the VM runs. Source: `release` (the destination runs it) or `resume` (it does not).
   * Destination: `activate` or `discard`.
   */
  async resolve(id: string, body: unknown): Promise<MigrationView> {
    const r = this.record(id);
    const vm = r.inDoubt;
    if (!vm) throw new HostError('VM_INVALID_STATE', `migration ${id} is not in doubt`);
    const action = (body as { action?: unknown } | null)?.action;
    const allowed = r.direction === 'out' ? ['release', 'resume'] : ['activate', 'discard'];
    if (typeof action !== 'string' || !allowed.includes(action)) throw badRequest(`'action' must be one of ${allowed.join(', ')}`);
    switch (action) {
      case 'release':
        await vm.endMigrationOut({ committed: true });
        await this.host.removeVm(vm);
        break;
      case 'resume':
        await vm.endMigrationOut({ committed: false, error: 'resolved by the operator: the destination does not run it', frozen: true });
        break;
      case 'activate':
        await vm.activate();
        this.host.persist(vm);
        break;
      case 'discard':
        await this.host.removeVm(vm);
        break;
    }
    r.inDoubt = undefined;
    r.report = { ...r.report!, outcome: action === 'release' || action === 'activate' ? 'completed' : 'failed' };
    this.announce(r);
    return this.view(r);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const r of this.records.values()) if (!r.report) r.engine.cancel('the daemon is shutting down');
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: Socket): void {
    if (this.closed) { socket.destroy(); return; }
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    const id = randomUUID();
    const incoming: IncomingHost = {
      issuer: this.issuer,
      reserve: (config, peer) => this.reserve(config, peer),
      discard: async (target) => { await this.host.removeVm(target as MigratableVm); },
      adopt: (target) => this.host.persist(target as MigratableVm),
      lost: async (target, reason) => {
        const vm = target as unknown as MigratableVm;
        this.host.log(`incoming migration ${id} of ${target.name}: ${reason}; the VM is stopped as failed`);
        await vm.abandon(reason);
        this.host.persist(vm);
      },
      inDoubt: (target, reason) => {
        record.inDoubt = target as MigratableVm;
        this.host.log(`incoming migration ${id} of ${target.name} is in doubt: ${reason}; resolve it with POST /v1/migrations/${id}/resolve`);
      },
    };
    const receiver = new MigrationReceiver(socket, incoming, {
      compressions: PAGE_COMPRESSIONS,
      ...(this.opts.receiverTimeouts ? { timeouts: this.opts.receiverTimeouts } : {}),
      onStage: () => this.announce(record),
    });
    const record: MigrationEntry = { id, direction: 'in', startedAt: new Date().toISOString(), engine: receiver };
    void receiver.run().then((report) => {
      // A connection that never named a VM (a probe, a failed handshake) leaves no record.
      if (report.vm === '') { this.records.delete(id); return; }
      record.report = report;
      this.announce(record);
    });
    this.add(record);
  }

  private async reserve(m: ConfigMessage, peer: string): Promise<MigrationTarget> {
    let config: VmConfig;
    try {
      config = validateConfig(m.config);
    } catch (e) {
      throw new MigrationError('MIGRATION_CANNOT_HOST', `the VM config is not valid here: ${(e as Error).message}`);
    }
    if (config.name !== m.name) throw new MigrationError('MIGRATION_CANNOT_HOST', `Config names VM '${m.name}' but its config '${config.name}'`);
    const problem = hostingProblem(m, config);
    if (problem) throw new MigrationError('MIGRATION_CANNOT_HOST', problem);
    try {
      return await this.host.reserveIncoming(config, peer);
    } catch (e) {
      throw new MigrationError('MIGRATION_CANNOT_HOST', `cannot reserve VM ${config.name}: ${(e as Error).message}`, { cause: e });
    }
  }

  private add(r: MigrationEntry): void {
    this.records.set(r.id, r);
    const done = [...this.records.values()].filter((x) => x.report && !x.inDoubt);
    for (const old of done.slice(0, Math.max(0, done.length - HISTORY))) this.records.delete(old.id);
  }

  private record(id: string): MigrationEntry {
    const r = this.records.get(id);
    if (!r) throw new HostError('MIGRATION_NOT_FOUND', `no migration '${id}'`);
    return r;
  }

  private view(r: MigrationEntry): MigrationView {
    const vm = r.engine.vm;
    const stage = r.report ? (r.inDoubt ? 'in-doubt' : r.report.outcome) : r.engine.stage.kind;
    return {
      id: r.id, vm, direction: r.direction, peer: r.engine.peer, startedAt: r.startedAt, stage,
      progress: r.engine.progress(),
      ...(r.report ? { report: r.report } : {}),
    };
  }

  private announce(r: MigrationEntry): void {
    const view = this.view(r);
    if (view.vm === '') return;
    this.host.broadcast({ type: 'migration', vm: view.vm, migration: view });
  }
}
