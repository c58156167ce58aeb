// The main thread's side of a VM: a VmHandle whose machine lives in a worker thread
// (worker.ts). The lifecycle state is kept here and changes only through transition(), once the
// worker has confirmed what was asked; a refused command is refused before anything is sent.

import type { Worker } from 'node:worker_threads';
import { resolve as resolvePath } from 'node:path';
import { FerryError } from '../errors.js';
import { transition, type VmCommand, type VmState, type VmStateKind } from './lifecycle.js';
import { resolveVmConfig } from './config.js';
import type { SnapshotResult, VmConfig, VmEvent, VmHandle } from './types.js';
import type { FromWorker, ReplyResults, ToWorker, WorkerInit, WorkerRequest, WorkerRequestType, WorkerStatus } from './worker-protocol.js';
import { GuestMemory, PAGE_SIZE } from '../machine/memory/guest-memory.js';
import type { MachineState } from '../machine/boot/machine.js';
import type { ThrottleStats, VcpuThrottle } from '../machine/boot/throttle.js';
import type { ActivationTimes, CarriedFrames, FrozenVm, MigratableVm, WwsTrace, SwapOut } from './types.js';
import { VmPaging, type VmMemoryStats } from './paging/vm-paging.js';
import type { AgileOptions } from './paging/agile.js';
import type { PageSupplier, FaultStats, StallPercentiles } from './paging/page-server.js';
import { ABSENT_PEER, ABSENT_SWAP, countMarked } from './paging/marks.js';
import { spawnVmWorker, type VmWorkerSource } from './worker-pool.js';

export interface VmTimeouts {
  /** Building the machine and booting it; includes building the guest image when the cache
   * is cold. */
  readonly boot: number;
  /** pause, resume. */
  readonly control: number;
  /** Stopping the machine and closing its backends. */
  readonly stop: number;
  /** Writing or restoring a snapshot file. */
  readonly snapshot: number;
}

export const DEFAULT_VM_TIMEOUTS: VmTimeouts = { boot: 900_000, control: 10_000, stop: 15_000, snapshot: 300_000 };

export interface VmOptions {
  readonly timeouts?: Partial<VmTimeouts>;
  /** Agile policy knobs for VMs with a swap device (epoch, cold window, eviction rate). */
  readonly agile?: Partial<AgileOptions>;
  /** Started worker threads to take (a daemon's standby, worker-pool.ts); default: spawn one. */
  readonly workers?: VmWorkerSource;
}

interface Pending {
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/** One worker's connection. A VM that is stopped and started again gets a new one; messages
 * from an old one are ignored. */
interface Link {
  readonly worker: Worker;
  /** WorkerInit.attention: set after every message, so a busy vCPU loop takes it promptly. */
  readonly attention: Int32Array;
  readonly pending: Map<number, Pending>;
  readonly exited: Promise<number>;
  status: WorkerStatus;
  /** Set when we end the worker (or it told us it is ending): its exit is then no failure. */
  ending: boolean;
}

type RequestBody = WorkerRequest extends infer R ? R extends WorkerRequest ? Omit<R, 'id'> : never : never;

export class Vm implements VmHandle, MigratableVm {
  readonly name: string;
  private current: VmState = { kind: 'created' };
  private link: Link | undefined;
  private nextId = 1;
  private tail: Promise<void> = Promise.resolve();
  private disposing: Promise<void> | undefined;
  private readonly timeouts: VmTimeouts;
  private readonly consoleListeners = new Set<(bytes: Uint8Array) => void>();
  private readonly eventListeners = new Set<(event: VmEvent) => void>();
  /** Guest RAM as the main thread sees it (the worker's shared memory), once asked for. */
  private sharedMemory: GuestMemory | undefined;
  /** Demand paging for this worker's RAM (absent pages, the swap device), with the memory. */
  private paging: VmPaging | undefined;
  private incoming = false;
  private readonly agileOptions: Partial<AgileOptions> | undefined;
  private readonly workers: VmWorkerSource | undefined;

  private constructor(readonly config: VmConfig, options: VmOptions) {
    this.name = config.name;
    this.timeouts = { ...DEFAULT_VM_TIMEOUTS, ...options.timeouts };
    this.agileOptions = options.agile;
    this.workers = options.workers;
  }

  /** A VM in state `created`; no worker yet. Throws DeviceSpecError for an invalid config. */
  static create(config: VmConfig, options: VmOptions = {}): Vm {
    resolveVmConfig(config);
    return new Vm(config, options);
  }

  /** A VM built from `config` with the snapshot in `file` loaded, paused; resume() runs it. */
  static async restore(config: VmConfig, file: string, options: VmOptions = {}): Promise<Vm> {
    const vm = Vm.create(config, options);
    try {
      await vm.serial(() => vm.restoreFrom(resolvePath(file)));
    } catch (e) {
      await vm.dispose();
      throw e;
    }
    return vm;
  }

  /**
   * A migration's destination: an empty machine (devices and backends open, RAM zeroed) in
   * state `migrating-in`, waiting for RAM, then loadMigratedState() and activate().
   */
  static async incoming(config: VmConfig, from: string, options: VmOptions = {}): Promise<Vm> {
    const vm = Vm.create(config, options);
    vm.incoming = true;
    try {
      await vm.serial(async () => {
        const command: VmCommand = { type: 'migrate-in', from };
        transition(vm.current, command);
        const link = vm.spawn();
        try {
          await vm.attachMemory(link);
        } catch (e) {
          await vm.endWorker(link);
          throw e;
        }
        vm.apply([command]);
      });
    } catch (e) {
      await vm.dispose();
      throw e;
    }
    return vm;
  }

  get state(): VmState { return this.current; }

  /** Read through a call, so checks after an await are not narrowed by checks before it. */
  private stateKind(): VmStateKind { return this.current.kind; }

  /** The worker's thread id while it has one (diagnostics). */
  get workerThreadId(): number | undefined { return this.link?.worker.threadId; }

  start(): Promise<void> {
    return this.serial(async () => {
      const command: VmCommand = { type: 'start' };
      transition(this.current, command);
      const link = this.spawn();
      try {
        await this.request(link, { type: 'boot' }, this.timeouts.boot);
        await this.startPaging(link);
      } catch (e) {
        await this.endWorker(link);
        throw e;
      }
      this.apply([command]);
    });
  }

  /** Memory sizes are reported from the start; a VM with a swap device also tracks its working
   * set and keeps cold pages there. */
  private async startPaging(link: Link): Promise<void> {
    await this.attachMemory(link);
    this.paging?.agile?.start();
  }

  /** Resident, swapped and working-set sizes; undefined while the VM has no worker memory. */
  memoryStats(): VmMemoryStats | undefined {
    return this.paging?.stats();
  }

  pause(): Promise<void> {
    return this.serial(() => this.control({ type: 'pause' }));
  }

  resume(): Promise<void> {
    return this.serial(() => this.control({ type: 'resume' }));
  }

  stop(): Promise<void> {
    return this.serial(async () => {
      const command: VmCommand = { type: 'stop', reason: 'stopped' };
      transition(this.current, command);
      const link = this.requireLink();
      await this.request(link, { type: 'stop' }, this.timeouts.stop);
      await this.endWorker(link);
      this.apply([command]);
    });
  }

  snapshot(file: string): Promise<SnapshotResult> {
    return this.serial(async () => {
      const was = this.current.kind;
      if (was !== 'running' && was !== 'paused') throw new FerryError('VM_INVALID_STATE', `cannot snapshot a VM that is ${was}`);
      const path = resolvePath(file);
      const t0 = performance.now();
      if (was === 'running') await this.control({ type: 'pause' });
      let written: ReplyResults['snapshot'];
      try {
        written = await this.request(this.requireLink(), { type: 'snapshot', file: path }, this.timeouts.snapshot);
      } finally {
        // Back to running even when the write failed: a failed snapshot must not stall the guest.
        if (was === 'running' && this.stateKind() === 'paused') await this.control({ type: 'resume' });
      }
      return { file: path, bytes: written.bytes, ms: Math.round(performance.now() - t0) };
    });
  }

  // --- migration (see MigratableVm in types.ts) -------------------------------------------

  memory(): Promise<GuestMemory> {
    return this.serial(() => this.attachMemory(this.requireLink()));
  }

  beginMigrationOut(to: string): Promise<void> {
    return this.serial(async () => {
      const command: VmCommand = { type: 'migrate-out', to };
      transition(this.current, command);
      await this.attachMemory(this.requireLink());
      // RAM must hold still for the sender: no eviction until the migration ends. Pages
      // already evicted need to be durable on the device only at the switch (swapDurable).
      await this.paging?.agile?.suspend();
      await this.request(this.requireLink(), { type: 'rehearse-switch' }, this.timeouts.control);
      this.apply([command]);
    });
  }

  harvestDirtyLog(): Promise<Uint8Array> {
    return this.serial(async () => {
      this.expect('migrating-out', 'harvest the dirty log of');
      return (await this.request(this.requireLink(), { type: 'harvest-dirty' }, this.timeouts.control)).log;
    });
  }

  harvestAccessLog(): Promise<Uint8Array> {
    return this.serial(async () => {
      this.expect('migrating-out', 'harvest the access log of');
      return (await this.request(this.requireLink(), { type: 'harvest-access' }, this.timeouts.control)).log;
    });
  }

  /** Slows the vCPU while a migration's rounds do not converge (null: full speed again). */
  throttle(setting: VcpuThrottle | null): Promise<ThrottleStats> {
    return this.serial(async () => {
      this.expect('migrating-out', 'throttle');
      return this.request(this.requireLink(), { type: 'throttle', setting }, this.timeouts.control);
    });
  }

  freeze(): Promise<FrozenVm> {
    return this.serial(async () => {
      this.expect('migrating-out', 'freeze');
      const r = await this.request(this.requireLink(), { type: 'freeze' }, this.timeouts.control + 10_000);
      return { dirtyLog: r.log, accessLog: r.accessLog, state: r.state, quiesceMs: r.quiesceMs, pausedAtMs: r.pausedAtMs };
    });
  }

  takeCarriedFrames(): Promise<CarriedFrames> {
    return this.serial(async () => {
      this.expect('migrating-out', 'take the carried frames of');
      return this.request(this.requireLink(), { type: 'take-frames' }, this.timeouts.control);
    });
  }

  /** Not queued behind the VM's commands: frames go to the worker as they come, in order. */
  injectFrames(nic: number, frames: readonly Uint8Array[]): Promise<{ readonly delivered: number; readonly dropped: number }> {
    return this.request(this.requireLink(), { type: 'inject-frames', nic, frames }, this.timeouts.control);
  }

  activationTimes(): Promise<ActivationTimes> {
    return this.request(this.requireLink(), { type: 'switch-times' }, this.timeouts.control);
  }

  endMigrationOut(outcome: { committed: true } | { committed: false; error: string; frozen: boolean }): Promise<void> {
    return this.serial(async () => {
      const state = this.current;
      if (state.kind !== 'migrating-out') throw new FerryError('VM_INVALID_STATE', `VM ${this.name} is ${state.kind}, not migrating out`);
      if (outcome.committed) {
        // The destination holds the VM now: this copy must never run again.
        const command: VmCommand = { type: 'migration-committed' };
        const link = this.link;
        if (link && !link.ending) {
          try { await this.request(link, { type: 'stop' }, this.timeouts.stop); } catch { /* ended below regardless */ }
          await this.endWorker(link);
        }
        this.apply([command]);
        return;
      }
      const command: VmCommand = { type: 'migration-aborted', error: outcome.error };
      // The VM stays here: whatever throttle the migration set ends with it.
      try {
        await this.request(this.requireLink(), { type: 'throttle', setting: null }, this.timeouts.control);
      } catch { /* a worker that cannot take it cannot thaw either: that error is the one to report */ }
      if (outcome.frozen) await this.request(this.requireLink(), { type: 'thaw', resume: state.resumeAs === 'running' }, this.timeouts.control);
      this.paging?.agile?.resume();
      this.apply([command]);
    });
  }

  /** Agile: evicts every page outside the working set to the swap device now, so the migration
   * moves only the working set; swapDurable() says when the device holds them. */
  swapOutCold(): Promise<SwapOut> {
    return this.serial(async () => {
      this.expect('migrating-out', 'swap out');
      const paging = this.paging;
      if (!paging?.agile || !paging.swap) throw new FerryError('VM_NO_SWAP', `VM ${this.name} has no swap device: Agile migration needs one (ferry run --swap nbd://...)`);
      const evicted = await paging.agile.evictCold();
      return {
        evictedPages: evicted,
        swappedPages: countMarked(paging.mem, ABSENT_SWAP),
        workingSetPages: paging.agile.tracker.workingSetPages(),
        swapDevice: paging.swap.identity,
      };
    });
  }

  /** Every page evicted so far durable on the swap device, failed writes written again. Not
   * queued behind the VM's commands: it waits only for the device. */
  swapDurable(): Promise<void> {
    return this.paging?.swap?.settle() ?? Promise.resolve();
  }

  /** Destination of a post-copy: absent pages of origin `peer` come from `supplier`. */
  attachPeerPages(supplier: PageSupplier | undefined): void {
    if (!this.paging) throw new FerryError('VM_INVALID_STATE', `VM ${this.name} has no paging yet`);
    this.paging.server.attach(ABSENT_PEER, supplier);
  }

  stallPercentiles(): StallPercentiles | null {
    return this.paging?.server.percentiles() ?? null;
  }

  faultStats(): FaultStats {
    return { ...(this.paging?.server.stats ?? { faults: 0, stallUsTotal: 0, stallUsMax: 0 }) };
  }

  abandon(reason: string): Promise<void> {
    return this.serial(async () => {
      const link = this.link;
      if (link && !link.ending) {
        try { await this.request(link, { type: 'stop' }, this.timeouts.stop); } catch { /* ended below regardless */ }
        await this.endWorker(link);
      }
      if (this.current.kind !== 'failed') this.fail(reason);
    });
  }

  loadMigratedState(state: MachineState): Promise<void> {
    return this.serial(async () => {
      this.expect('migrating-in', 'load a migrated state into');
      await this.request(this.requireLink(), { type: 'load-state', state }, this.timeouts.snapshot);
    });
  }

  activate(): Promise<{ readonly resumedAtMs: number }> {
    return this.serial(async () => {
      const command: VmCommand = { type: 'migration-committed' };
      transition(this.current, command);
      const r = await this.request(this.requireLink(), { type: 'activate' }, this.timeouts.control);
      this.paging?.agile?.start();
      this.apply([command]);
      return r;
    });
  }

  traceWorkingSet(intervalMs: number, samples: number): Promise<WwsTrace> {
    return this.serial(async () => {
      this.expect('running', 'trace the working set of');
      const r = await this.request(this.requireLink(), { type: 'wws', intervalMs, samples }, this.timeouts.control + intervalMs * samples * 2);
      return { intervalMs, dirtyPages: [...r.dirtyPages], measuredIntervalMs: [...r.intervalMs], pageSize: PAGE_SIZE };
    });
  }

  private expect(kind: VmStateKind, what: string): void {
    if (this.current.kind !== kind) throw new FerryError('VM_INVALID_STATE', `cannot ${what} a VM that is ${this.current.kind}`);
  }

  private async attachMemory(link: Link): Promise<GuestMemory> {
    if (this.sharedMemory && this.link === link) return this.sharedMemory;
    const { buffer, layout, pagerControl } = await this.request(link, { type: 'memory' }, this.timeouts.boot);
    const mem = new GuestMemory(buffer, layout);
    this.paging = await VmPaging.open(mem, pagerControl, {
      harvestAccess: async () => (await this.request(link, { type: 'harvest-access' }, this.timeouts.control)).log,
      evict: (pages, mark) => this.request(link, { type: 'evict', pages, mark }, this.timeouts.control),
      answer: (id, ok, error) => {
        if (!link.ending) post(link, { type: 'page-ready', id, ok, ...(error !== undefined ? { error } : {}) });
      },
    }, this.config.swap, this.agileOptions);
    this.sharedMemory = mem;
    return mem;
  }

  consoleWrite(bytes: Uint8Array): void {
    const link = this.link;
    if (!link || link.ending) return;
    const copy = bytes.slice();
    post(link, { type: 'console-input', bytes: copy }, [copy.buffer]);
  }

  onConsole(listener: (bytes: Uint8Array) => void): () => void {
    this.consoleListeners.add(listener);
    return () => { this.consoleListeners.delete(listener); };
  }

  onEvent(listener: (event: VmEvent) => void): () => void {
    this.eventListeners.add(listener);
    return () => { this.eventListeners.delete(listener); };
  }

  /** Stops the guest if it runs (state `stopped`, reason `disposed`), lets the worker close its
   * backends, and waits for the thread to end. Not queued behind other operations: those still
   * in flight are rejected when the worker goes. */
  dispose(): Promise<void> {
    this.disposing ??= (async () => {
      const link = this.link;
      if (link) {
        if (!link.ending) {
          link.ending = true;
          try {
            await this.request(link, { type: 'stop' }, this.timeouts.stop);
          } catch {
            // Terminated below regardless; a worker that cannot stop cleanly has nothing left to save.
          }
        }
        await this.endWorker(link);
      }
      if (this.current.kind === 'running' || this.current.kind === 'paused') this.apply([{ type: 'stop', reason: 'disposed' }]);
    })();
    return this.disposing;
  }

  private async restoreFrom(file: string): Promise<void> {
    // A restored VM has run before (elsewhere) and is now paused.
    const commands: VmCommand[] = [{ type: 'start' }, { type: 'pause' }];
    commands.reduce(transition, this.current);
    const link = this.spawn();
    try {
      await this.request(link, { type: 'restore', file }, this.timeouts.snapshot);
    } catch (e) {
      await this.endWorker(link);
      throw e;
    }
    this.apply(commands);
  }

  private async control(command: { type: 'pause' } | { type: 'resume' }): Promise<void> {
    transition(this.current, command);
    await this.request(this.requireLink(), { type: command.type }, this.timeouts.control);
    this.apply([command]);
  }

  /** Operations run one at a time, each seeing the state the previous one left. */
  private serial<T>(op: () => Promise<T>): Promise<T> {
    const run = this.tail.then(() => {
      if (this.disposing) throw new FerryError('VM_DISPOSED', `VM ${this.name} has been disposed`);
      return op();
    });
    this.tail = run.then(() => undefined, () => undefined);
    return run;
  }

  /** Applies commands already checked against the state; one state event for the result. */
  private apply(commands: VmCommand[]): void {
    this.setState(commands.reduce(transition, this.current));
  }

  private setState(state: VmState): void {
    this.current = state;
    this.emit({ type: 'state', vm: this.name, state });
  }

  private fail(error: string): void {
    if (this.current.kind === 'failed') return;
    this.apply([{ type: 'fail', error }]);
  }

  private emit(event: VmEvent): void {
    for (const l of this.eventListeners) {
      try { l(event); } catch { /* one listener's failure must not starve the others */ }
    }
  }

  private requireLink(): Link {
    const link = this.link;
    if (!link || link.ending) throw new FerryError('VM_NO_WORKER', `VM ${this.name} has no running worker`);
    return link;
  }

  private spawn(): Link {
    const init: WorkerInit = { config: this.config, incoming: this.incoming, attention: new SharedArrayBuffer(4) };
    this.sharedMemory = undefined;
    void this.paging?.close().catch(() => undefined);
    this.paging = undefined;
    const worker = this.workers?.take() ?? spawnVmWorker(`ferry-vm-${this.name}`);
    const exited = new Promise<number>((resolve) => worker.once('exit', (code) => { this.onExit(link, code); resolve(code); }));
    const link: Link = { worker, attention: new Int32Array(init.attention), pending: new Map(), status: 'starting', ending: false, exited };
    worker.on('message', (msg: FromWorker) => this.onMessage(link, msg));
    worker.on('error', (e) => this.onCrash(link, e.message));
    this.link = link;
    post(link, { type: 'init', init });
    return link;
  }

  private request<T extends WorkerRequestType>(link: Link, body: Extract<RequestBody, { type: T }>, timeoutMs: number): Promise<ReplyResults[T]> {
    const id = this.nextId++;
    return new Promise<ReplyResults[T]>((resolve, reject) => {
      const timer = setTimeout(() => {
        link.pending.delete(id);
        const err = new FerryError('VM_TIMEOUT', `VM ${this.name}: the worker did not answer ${body.type} within ${timeoutMs} ms (worker ${link.status})`);
        reject(err);
        // A worker that does not answer is wedged (a vCPU loop that never yields): nothing it
        // says later can be trusted to match our state.
        if (!link.ending) {
          link.ending = true;
          this.fail(err.message);
          void this.endWorker(link);
        }
      }, timeoutMs);
      link.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      post(link, { ...body, id } as WorkerRequest);
    });
  }

  private onMessage(link: Link, msg: FromWorker): void {
    if (link !== this.link && msg.type !== 'reply') return;
    switch (msg.type) {
      case 'reply': {
        const p = link.pending.get(msg.id);
        if (!p) return;
        link.pending.delete(msg.id);
        clearTimeout(p.timer);
        if (msg.ok) p.resolve(msg.result);
        else p.reject(new FerryError(msg.error.code, msg.error.message));
        return;
      }
      case 'console':
        for (const l of this.consoleListeners) {
          try { l(msg.bytes); } catch { /* as for events */ }
        }
        return;
      case 'status':
        link.status = msg.status;
        return;
      case 'progress':
        this.emit({ type: 'progress', vm: this.name, operation: msg.operation, done: msg.done, total: msg.total });
        return;
      case 'page-fault':
        if (this.paging) this.paging.onFault(msg.id, msg.first, msg.count, msg.sync);
        else if (!msg.sync) post(link, { type: 'page-ready', id: msg.id, ok: false, error: 'no pager on the main thread' });
        return;
      case 'guest-exit': {
        // The worker has closed its backends already; only the thread is left to end.
        link.ending = true;
        this.emit({ type: 'guest-exit', vm: this.name, reason: msg.reason });
        const clean = msg.exit.kind === 'poweroff' || msg.exit.kind === 'reboot';
        const command: VmCommand = clean ? { type: 'stop', reason: msg.reason } : { type: 'fail', error: msg.reason };
        try {
          this.apply([command]);
        } catch {
          this.fail(msg.reason);
        }
        void this.endWorker(link);
        return;
      }
      case 'crash':
        this.onCrash(link, `${msg.error.message} (${msg.error.code})`);
        return;
    }
  }

  private onCrash(link: Link, message: string): void {
    if (link !== this.link) return;
    const wasEnding = link.ending;
    link.ending = true;
    this.rejectPending(link, new FerryError('VM_WORKER_CRASHED', `VM ${this.name}: worker crashed: ${message}`));
    if (!wasEnding) this.fail(`worker crashed: ${message}`);
    // The worker exits by itself once it has released its backends; terminate() only if not.
    const grace = setTimeout(() => { void link.worker.terminate(); }, 3000);
    void link.exited.then(() => clearTimeout(grace));
  }

  private onExit(link: Link, code: number): void {
    this.rejectPending(link, new FerryError('VM_WORKER_EXITED', `VM ${this.name}: worker exited (code ${code})`));
    if (link !== this.link) return;
    this.link = undefined;
    if (!link.ending) this.fail(`worker exited unexpectedly (code ${code})`);
  }

  private rejectPending(link: Link, err: Error): void {
    for (const p of link.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    link.pending.clear();
  }

  private async endWorker(link: Link): Promise<void> {
    link.ending = true;
    await link.worker.terminate();
    await link.exited;
    if (this.link === undefined || this.link === link) {
      const paging = this.paging;
      this.paging = undefined;
      this.sharedMemory = undefined;
      await paging?.close().catch(() => undefined);
    }
  }
}

/** Posts to the worker and asks its vCPU loop to look at its messages at the next slice boundary. */
function post(link: Link, msg: ToWorker, transfer: ArrayBuffer[] = []): void {
  link.worker.postMessage(msg, transfer);
  Atomics.store(link.attention, 0, 1);
}
