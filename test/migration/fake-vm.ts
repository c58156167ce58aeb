// Fakes for the migration engine: a source VM whose "guest" writes RAM and marks a dirty log the
// way the real machine does, a destination daemon that reserves zeroed RAM, a listener that runs
// a MigrationReceiver per connection, and a frame-aware TCP proxy that can cut the link at an
// exact protocol message. No machine, no worker: RAM is a plain Uint8Array.

import { createHash } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { ActivationTimes, CarriedFrames, FrozenVm, VmConfig } from '../../src/vm/types.js';
import { wallClockMs } from '../../src/machine/clock.js';
import type { MachineState } from '../../src/machine/boot/machine.js';
import { RunThrottle, type ThrottleStats, type VcpuThrottle } from '../../src/machine/boot/throttle.js';
import { resolveVmConfig } from '../../src/vm/config.js';
import type { MigrationSource } from '../../src/migration/engine/sender.js';
import { MigrationReceiver, type IncomingHost, type MigrationTarget, type ReceiverOptions } from '../../src/migration/engine/receiver.js';
import type { ReceiverStage } from '../../src/migration/engine/stages.js';
import type { FaultStats, PageSupplier } from '../../src/vm/paging/page-server.js';
import type { MigrationReport } from '../../src/migration/engine/report.js';
import { hostingProblem } from '../../src/migration/engine/wire-config.js';
import { MigrationError } from '../../src/migration/errors.js';
import { TokenIssuer } from '../../src/migration/protocol/auth.js';
import { PAGE_COMPRESSIONS } from '../../src/migration/compression/index.js';
import { FRAME_HEADER_BYTES, PAGE_SIZE, type ConfigMessage, type ProtocolMessage } from '../../src/migration/protocol/messages.js';
import { FrameDecoder, FrameEncoder } from '../../src/migration/protocol/codec.js';

export { PAGE_SIZE };

/** xorshift32: deterministic page contents for a seed. */
export function rng(seed: number): () => number {
  let x = (seed >>> 0) || 0x9e3779b9;
  return () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x;
  };
}

export type PageKind = 'zero' | 'text' | 'random';

export interface FakeGuestOptions {
  readonly name?: string;
  /** RAM size; >= 16 (resolveVmConfig). Default 16. */
  readonly memoryMiB?: number;
  readonly seed?: number;
  /** Share of pages non-zero before the migration starts (half text, half random). Default 0.25. */
  readonly initialNonZero?: number;
  /** Pages the guest writes per tick while running; 0 = an idle guest. Default 4. */
  readonly pagesPerTick?: number;
  /** Interval of the writer (setInterval). Default 1 ms. */
  readonly tickMs?: number;
  /** Pages the writer touches: [first, first + count). Default: all of RAM. */
  readonly hot?: { readonly first: number; readonly count: number };
  /** Percent of writes that zero their page. Default 20. */
  readonly zeroPercent?: number;
  /** Start the guest (writer) at once. Default true. */
  readonly running?: boolean;
}

export type FakeSourceState = 'running' | 'paused' | 'migrating-out' | 'frozen' | 'stopped';

export interface SourceCall {
  readonly op: 'beginMigrationOut' | 'memory' | 'harvestDirtyLog' | 'throttle' | 'freeze' | 'takeCarriedFrames' | 'endMigrationOut';
  readonly arg?: unknown;
  readonly at: number;
}

/**
 * A MigrationSource with a guest. While running it writes pages with setInterval and marks the
 * dirty log byte of every page it writes, like the machine's store path. It keeps a shadow copy
 * of everything it wrote, so a test can check that nothing but the guest ever changed RAM.
 */
export class FakeSourceVm implements MigrationSource {
  readonly config: VmConfig;
  readonly ram: Uint8Array;
  readonly dirtyLog: Uint8Array;
  /** Absent map (the fake never swaps: all zero). */
  readonly absent: Uint8Array;
  /** What RAM must hold: every write of the guest, applied here too. */
  readonly shadow: Uint8Array;
  readonly pageCount: number;
  readonly calls: SourceCall[] = [];
  /** Broken promises of the MigrationSource contract, as the real Vm would refuse them. */
  readonly contractViolations: string[] = [];
  /** RAM as it was inside freeze(), the image the destination must end up with. */
  frozenRam: Uint8Array | undefined;
  frozenState: Record<string, unknown> | undefined;
  /** Set when the guest ran again after a freeze (the source copy resumed). */
  resumedAfterFreeze = false;
  writes = 0;
  /** Runs before each harvest copies the log (index 0 is the harvest that opens round 1). */
  beforeHarvest: ((index: number, vm: FakeSourceVm) => void) | undefined;
  /** Makes freeze() fail (a VM that cannot be paused). */
  freezeError: string | undefined;
  /** Makes swapDurable() fail (a swap device that does not take evicted pages). */
  swapDurableError: string | undefined;

  /** The run loop's own throttle policy, fed with this writer's ticks as slices. */
  private readonly throttler = new RunThrottle();
  private stallUntil = 0;
  /** Ticks the throttle made the guest skip. */
  ticksStalled = 0;
  private current: FakeSourceState;
  private resumeAs: 'running' | 'paused' = 'running';
  private timer: NodeJS.Timeout | undefined;
  private harvests = 0;
  private readonly next: () => number;
  private readonly opts: Required<Omit<FakeGuestOptions, 'hot' | 'name' | 'memoryMiB' | 'seed' | 'initialNonZero' | 'running'>> & { hot: { first: number; count: number } };

  constructor(options: FakeGuestOptions = {}) {
    const memoryMiB = options.memoryMiB ?? 16;
    this.config = { name: options.name ?? 'fake-1', memoryMiB, nets: [], disks: [] };
    const ramBytes = resolveVmConfig(this.config).ramBytes;
    this.ram = new Uint8Array(ramBytes);
    this.shadow = new Uint8Array(ramBytes);
    this.pageCount = ramBytes / PAGE_SIZE;
    this.dirtyLog = new Uint8Array(this.pageCount);
    this.absent = new Uint8Array(this.pageCount);
    this.next = rng(options.seed ?? 12345);
    this.opts = {
      pagesPerTick: options.pagesPerTick ?? 4,
      tickMs: options.tickMs ?? 1,
      zeroPercent: options.zeroPercent ?? 20,
      hot: options.hot ? { ...options.hot } : { first: 0, count: this.pageCount },
    };
    const share = options.initialNonZero ?? 0.25;
    for (let p = 0; p < this.pageCount; p++) {
      const r = (this.next() % 10_000) / 10_000;
      if (r < share) this.fill(p, r < share / 2 ? 'text' : 'random');
    }
    this.dirtyLog.fill(0);
    this.writes = 0;
    this.current = 'paused';
    if (options.running ?? true) this.startGuest();
  }

  get name(): string { return this.config.name; }
  get state(): FakeSourceState { return this.current; }
  /** Whether the guest executes (writes RAM) right now. */
  get guestRunning(): boolean { return this.timer !== undefined; }

  checksum(): string { return createHash('sha256').update(this.ram).digest('hex'); }
  /** RAM holds exactly what the guest wrote: the migration changed nothing. */
  ramIntact(): boolean { return Buffer.compare(this.ram, this.shadow) === 0; }
  callsOf(op: SourceCall['op']): SourceCall[] { return this.calls.filter((c) => c.op === op); }

  /** Writes one page as the guest would (RAM, shadow, dirty log). */
  writePage(page: number, kind: PageKind): void {
    this.fill(page, kind);
    this.writes++;
  }

  startGuest(): void {
    if (this.timer) return;
    if (this.current === 'paused') this.current = 'running';
    // Unref'd: a test that fails half-way must not keep the process alive.
    this.timer = this.opts.pagesPerTick > 0 ? setInterval(() => this.tick(), this.opts.tickMs) : setInterval(() => undefined, 1000);
    this.timer.unref();
  }

  stopGuest(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Ends the fake (test teardown). */
  dispose(): void { this.stopGuest(); }

  async memory(): Promise<{ bytes: Uint8Array; dirtyLog: Uint8Array; absent: Uint8Array; pageCount: number }> {
    this.record('memory');
    return { bytes: this.ram, dirtyLog: this.dirtyLog, absent: this.absent, pageCount: this.pageCount };
  }

  async beginMigrationOut(to: string): Promise<void> {
    this.record('beginMigrationOut', to);
    if (this.current !== 'running' && this.current !== 'paused') {
      this.violate(`beginMigrationOut while ${this.current}`);
      throw new Error(`VM ${this.name} is ${this.current}`);
    }
    this.resumeAs = this.current;
    this.current = 'migrating-out';
  }

  async harvestDirtyLog(): Promise<Uint8Array> {
    this.record('harvestDirtyLog');
    if (this.current !== 'migrating-out') this.violate(`harvestDirtyLog while ${this.current}`);
    this.beforeHarvest?.(this.harvests++, this);
    return this.takeLog();
  }

  /** As a VM with a swap device: its evicted pages are durable, or the device failed. */
  async swapDurable(): Promise<void> {
    if (this.swapDurableError !== undefined) throw new Error(this.swapDurableError);
  }

  async throttle(setting: VcpuThrottle | null): Promise<ThrottleStats> {
    this.record('throttle', setting);
    if (this.current !== 'migrating-out') this.violate(`throttle while ${this.current}`);
    const now = performance.now();
    this.throttler.set(setting ?? undefined, now);
    this.stallUntil = 0;
    return this.throttler.stats(now);
  }

  async freeze(): Promise<FrozenVm> {
    this.record('freeze');
    if (this.current !== 'migrating-out') this.violate(`freeze while ${this.current}`);
    if (this.freezeError !== undefined) throw new Error(this.freezeError);
    const t0 = performance.now();
    this.stopGuest();
    this.current = 'frozen';
    this.frozenRam = this.ram.slice();
    this.frozenState = { kind: 'fake-machine', writes: this.writes, pc: '0x80200000', nested: { harts: [0], tag: 'ferry ✓' } };
    const state = structuredClone(this.frozenState) as unknown as MachineState;
    const dirtyLog = this.takeLog();
    return { dirtyLog, accessLog: new Uint8Array(dirtyLog.length), state, quiesceMs: performance.now() - t0, pausedAtMs: wallClockMs() };
  }

  /** Frames that "reach the NIC" after the freeze: each takeCarriedFrames hands over and clears them. */
  lateFrames: Uint8Array[] = [];
  /** Frames a full held backlog "dropped" after the freeze. */
  lateDropped = 0;

  async takeCarriedFrames(): Promise<CarriedFrames> {
    this.record('takeCarriedFrames');
    if (this.current !== 'frozen') this.violate(`takeCarriedFrames while ${this.current}`);
    const frames = this.lateFrames.splice(0);
    const dropped = this.lateDropped;
    this.lateDropped = 0;
    return { nics: frames.length > 0 ? [{ nic: 0, frames }] : [], dropped };
  }

  async endMigrationOut(outcome: { committed: true } | { committed: false; error: string; frozen: boolean }): Promise<void> {
    this.record('endMigrationOut', outcome);
    if (this.current !== 'migrating-out' && this.current !== 'frozen') {
      this.violate(`endMigrationOut while ${this.current}`);
      throw new Error(`VM ${this.name} is ${this.current}, not migrating out`);
    }
    if (outcome.committed) {
      // The destination holds the VM: this copy never runs again.
      this.stopGuest();
      this.current = 'stopped';
      return;
    }
    if (outcome.frozen !== (this.current === 'frozen')) {
      this.violate(`endMigrationOut says frozen=${outcome.frozen} but the VM is ${this.current}`);
    }
    const wasFrozen = this.current === 'frozen';
    this.throttler.set(undefined, performance.now());
    this.current = this.resumeAs;
    if (this.resumeAs === 'running') {
      if (wasFrozen) this.resumedAfterFreeze = true;
      this.startGuest();
    }
  }

  private takeLog(): Uint8Array {
    const log = this.dirtyLog.slice();
    this.dirtyLog.fill(0);
    return log;
  }

  private tick(): void {
    const { hot, pagesPerTick, zeroPercent, tickMs } = this.opts;
    const now = performance.now();
    if (now < this.stallUntil) {
      this.ticksStalled++;
      this.throttler.stalled(tickMs);
      return;
    }
    let dirtied = 0;
    for (let i = 0; i < pagesPerTick; i++) {
      const page = hot.first + (this.next() % hot.count);
      const r = this.next() % 100;
      if (this.dirtyLog[page] === 0) dirtied++;
      this.writePage(page, r < zeroPercent ? 'zero' : r < zeroPercent + (100 - zeroPercent) / 2 ? 'text' : 'random');
    }
    const stall = this.throttler.afterSlice(now, tickMs, dirtied);
    if (stall > 0) this.stallUntil = now + stall;
  }

  private fill(page: number, kind: PageKind): void {
    const off = page * PAGE_SIZE;
    const view = this.ram.subarray(off, off + PAGE_SIZE);
    if (kind === 'zero') {
      view.fill(0);
    } else if (kind === 'text') {
      const line = `[${String(this.writes).padStart(8, '0')}] guest: page ${page} kworker/0:1 flushed dirty inode ${this.next() % 100_000}\n`;
      const text = Buffer.from(line.repeat(Math.ceil(PAGE_SIZE / line.length)));
      view.set(text.subarray(0, PAGE_SIZE));
    } else {
      const words = new Uint32Array(this.ram.buffer, this.ram.byteOffset + off, PAGE_SIZE / 4);
      for (let i = 0; i < words.length; i++) words[i] = this.next();
      if (view.every((b) => b === 0)) view[0] = 1;
    }
    this.shadow.set(view, off);
    this.dirtyLog[page] = 1;
  }

  private record(op: SourceCall['op'], arg?: unknown): void {
    this.calls.push(arg === undefined ? { op, at: performance.now() } : { op, arg, at: performance.now() });
  }

  private violate(what: string): void {
    this.contractViolations.push(what);
  }
}

export type FakeTargetState = 'reserved' | 'loaded' | 'running' | 'discarded' | 'in-doubt' | 'adopted' | 'lost';

/** The reserved VM on the destination: zeroed RAM, a state slot, a run flag. */
export class FakeTarget implements MigrationTarget {
  readonly ram: Uint8Array;
  readonly pageCount: number;
  readonly dirtyLog: Uint8Array;
  /** Absent map, as the receiver leaves it for post-copy (ABSENT_PEER / ABSENT_SWAP). */
  readonly absent: Uint8Array;
  /** Post-copy supplier the receiver attached (the fake "guest" faults through it). */
  peerPages: PageSupplier | undefined;
  loadedState: Record<string, unknown> | undefined;
  activated = false;
  status: FakeTargetState = 'reserved';
  readonly calls: string[] = [];

  constructor(readonly name: string, ramBytes: number, private readonly host: FakeTargetHost) {
    this.ram = new Uint8Array(ramBytes);
    this.pageCount = ramBytes / PAGE_SIZE;
    this.dirtyLog = new Uint8Array(this.pageCount);
    this.absent = new Uint8Array(this.pageCount);
  }

  async memory(): Promise<{ bytes: Uint8Array; pageCount: number; dirtyLog: Uint8Array; absent: Uint8Array }> {
    this.calls.push('memory');
    return { bytes: this.ram, pageCount: this.pageCount, dirtyLog: this.dirtyLog, absent: this.absent };
  }

  attachPeerPages(supplier: PageSupplier | undefined): void {
    this.calls.push(supplier ? 'attachPeerPages' : 'detachPeerPages');
    if (supplier) this.peerPages = supplier;
  }

  faultStats(): FaultStats {
    return { ...this.faults };
  }

  readonly faults: FaultStats = { faults: 0, stallUsTotal: 0, stallUsMax: 0 };

  /** The fake guest touches a page: an absent one is faulted in through the attached supplier. */
  async touch(page: number): Promise<void> {
    if (this.absent[page] === 0) return;
    if (!this.peerPages) throw new Error(`page ${page} absent and no supplier`);
    const t0 = performance.now();
    await this.peerPages.fetch([page]);
    const us = Math.round((performance.now() - t0) * 1000);
    this.faults.faults++;
    this.faults.stallUsTotal += us;
    this.faults.stallUsMax = Math.max(this.faults.stallUsMax, us);
  }

  async loadMigratedState(state: MachineState): Promise<void> {
    this.calls.push('loadMigratedState');
    if (this.status !== 'reserved') throw new Error(`loadMigratedState on a ${this.status} VM`);
    if (this.host.loadError !== undefined) throw new Error(this.host.loadError);
    this.loadedState = structuredClone(state as unknown as Record<string, unknown>);
    this.status = 'loaded';
    await this.host.afterLoad?.(this);
  }

  async activate(): Promise<{ readonly resumedAtMs: number }> {
    this.calls.push('activate');
    if (this.status !== 'loaded') throw new Error(`activate on a ${this.status} VM`);
    if (this.host.activateError !== undefined) throw new Error(this.host.activateError);
    this.activated = true;
    this.status = 'running';
    return { resumedAtMs: wallClockMs() };
  }

  /** Frames carried from the source, by NIC, in the order they were delivered. */
  readonly injected: { nic: number; frame: Uint8Array }[] = [];

  async injectFrames(nic: number, frames: readonly Uint8Array[]): Promise<{ readonly delivered: number; readonly dropped: number }> {
    this.calls.push('injectFrames');
    if (!this.activated) throw new Error('frames injected before activation');
    for (const frame of frames) this.injected.push({ nic, frame });
    return { delivered: frames.length, dropped: 0 };
  }

  async activationTimes(): Promise<ActivationTimes> {
    return { firstFrameOutMs: null, announceSentMs: null, framesDropped: 0 };
  }
}

/** The destination daemon as the receiver sees it. */
export class FakeTargetHost implements IncomingHost {
  readonly issuer = new TokenIssuer();
  readonly targets: FakeTarget[] = [];
  readonly discarded: { target: FakeTarget; reason: string }[] = [];
  readonly adopted: FakeTarget[] = [];
  readonly inDoubtCalls: { target: FakeTarget; reason: string }[] = [];
  readonly configs: ConfigMessage[] = [];
  /** loadMigratedState throws this (a state the machine refuses). */
  loadError: string | undefined;
  /** activate throws this. */
  activateError: string | undefined;
  /** reserve refuses with MIGRATION_CANNOT_HOST and this reason. */
  cannotHost: string | undefined;
  /** Runs once loadMigratedState has succeeded, before the receiver sends Committed. */
  afterLoad: ((target: FakeTarget) => void | Promise<void>) | undefined;

  async reserve(config: ConfigMessage, _peer: string): Promise<MigrationTarget> {
    this.configs.push(config);
    if (this.cannotHost !== undefined) throw new MigrationError('MIGRATION_CANNOT_HOST', this.cannotHost);
    const vmConfig = config.config as unknown as VmConfig;
    try {
      resolveVmConfig(vmConfig);
    } catch (e) {
      throw new MigrationError('MIGRATION_CANNOT_HOST', `bad VM config: ${e instanceof Error ? e.message : String(e)}`);
    }
    const problem = hostingProblem(config, vmConfig);
    if (problem !== undefined) throw new MigrationError('MIGRATION_CANNOT_HOST', problem);
    const t = new FakeTarget(`${config.name}-in-${this.targets.length}`, config.ramBytes, this);
    this.targets.push(t);
    return t;
  }

  async discard(target: MigrationTarget, reason: string): Promise<void> {
    const t = this.own(target);
    t.status = 'discarded';
    this.discarded.push({ target: t, reason });
  }

  adopt(target: MigrationTarget): void {
    const t = this.own(target);
    t.status = 'adopted';
    this.adopted.push(t);
  }

  inDoubt(target: MigrationTarget, reason: string): void {
    const t = this.own(target);
    t.status = 'in-doubt';
    this.inDoubtCalls.push({ target: t, reason });
  }

  readonly lostCalls: { target: FakeTarget; reason: string }[] = [];

  async lost(target: MigrationTarget, reason: string): Promise<void> {
    const t = this.own(target);
    t.status = 'lost';
    this.lostCalls.push({ target: t, reason });
  }

  private own(target: MigrationTarget): FakeTarget {
    const t = this.targets.find((x) => (x as MigrationTarget) === target);
    if (!t) throw new Error(`not a target of this host: ${target.name}`);
    return t;
  }
}

export interface ListenOptions {
  readonly receiver?: ReceiverOptions;
  /** Each accepted socket, before its receiver starts (to wrap or watch it). */
  readonly onConnection?: (socket: Socket) => void;
  /** Each stage change of each receiver, with its socket (to cut or pause it at a stage). */
  readonly onStage?: (stage: ReceiverStage, socket: Socket, receiver: MigrationReceiver) => void;
}

export interface ReceiverHarness {
  readonly port: number;
  readonly receivers: MigrationReceiver[];
  readonly sockets: Socket[];
  /** The report of the n-th connection's receiver (0-based), once it has ended. */
  report(n?: number): Promise<MigrationReport>;
  close(): Promise<void>;
}

/** Listens on 127.0.0.1:0 and serves each connection with a MigrationReceiver for `host`. */
export async function listenForMigrations(host: IncomingHost, opts: ListenOptions = {}): Promise<ReceiverHarness> {
  const receivers: MigrationReceiver[] = [];
  const sockets: Socket[] = [];
  const reports = new Map<number, { promise: Promise<MigrationReport>; resolve: (r: MigrationReport) => void }>();
  const slot = (n: number) => {
    let s = reports.get(n);
    if (!s) {
      let resolve!: (r: MigrationReport) => void;
      const promise = new Promise<MigrationReport>((r) => { resolve = r; });
      s = { promise, resolve };
      reports.set(n, s);
    }
    return s;
  };
  const server: Server = createServer((socket) => {
    const n = sockets.length;
    sockets.push(socket);
    socket.on('error', () => undefined);
    opts.onConnection?.(socket);
    const userStage = opts.receiver?.onStage;
    let receiver: MigrationReceiver | undefined;
    receiver = new MigrationReceiver(socket, host, {
      compressions: PAGE_COMPRESSIONS,
      ...opts.receiver,
      onStage: (stage) => {
        userStage?.(stage);
        if (receiver) opts.onStage?.(stage, socket, receiver);
      },
    });
    receivers.push(receiver);
    void receiver.run().then((r) => slot(n).resolve(r));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    receivers,
    sockets,
    report: (n = 0) => slot(n).promise,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export type ProxyDirection = 'forward' | 'return';
/** pass: deliver the frame; cut: drop it and tear both connections down (RST-like, no FIN data). */
export type ProxyVerdict = 'pass' | 'cut';

export interface FrameProxy {
  readonly port: number;
  /** Frames seen (and passed) per direction and type code. */
  readonly seen: { forward: Map<number, number>; return: Map<number, number> };
  /** Whether a rule cut the link. */
  readonly cut: boolean;
  count(direction: ProxyDirection, type: number): number;
  close(): Promise<void>;
}

/**
 * A TCP proxy in front of a receiver that reads frame headers (the sender→receiver direction is
 * `forward`, the return path `return`) and asks `rule` about each complete frame, so a test can
 * lose the link exactly before a given message arrives.
 */
export async function startFrameProxy(upstreamPort: number, rule: (direction: ProxyDirection, type: number) => ProxyVerdict = () => 'pass'): Promise<FrameProxy> {
  const seen = { forward: new Map<number, number>(), return: new Map<number, number>() };
  const pairs: Socket[] = [];
  let wasCut = false;
  const server = createServer((client) => {
    client.pause();
    const upstream = connect({ host: '127.0.0.1', port: upstreamPort });
    pairs.push(client, upstream);
    let cut = false;
    const teardown = () => {
      cut = true;
      wasCut = true;
      client.destroy();
      upstream.destroy();
    };
    const pipeFrames = (from: Socket, to: Socket, direction: ProxyDirection) => {
      let buf = Buffer.alloc(0);
      from.on('data', (chunk: Buffer) => {
        if (cut) return;
        buf = Buffer.concat([buf, chunk]);
        while (buf.length >= FRAME_HEADER_BYTES) {
          const len = buf.readUInt32LE(4);
          // Garbage headers: pass the bytes through unparsed.
          if (len > 8 << 20) { to.write(buf); buf = Buffer.alloc(0); return; }
          if (buf.length < FRAME_HEADER_BYTES + len) return;
          const frameBytes = buf.subarray(0, FRAME_HEADER_BYTES + len);
          buf = buf.subarray(FRAME_HEADER_BYTES + len);
          const type = frameBytes[0]!;
          if (rule(direction, type) === 'cut') { teardown(); return; }
          seen[direction].set(type, (seen[direction].get(type) ?? 0) + 1);
          to.write(frameBytes);
        }
      });
      from.on('end', () => { if (!cut) to.end(); });
      from.on('close', () => { if (!cut) to.destroy(); });
      from.on('error', () => undefined);
    };
    upstream.once('connect', () => {
      pipeFrames(client, upstream, 'forward');
      pipeFrames(upstream, client, 'return');
      client.resume();
    });
    upstream.on('error', () => client.destroy());
    client.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    get cut() { return wasCut; },
    count: (direction, type) => seen[direction].get(type) ?? 0,
    close: async () => {
      for (const s of pairs) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Resolves after `ms`. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until `cond` holds (polling), or fails after `ms`. */
export async function until(cond: () => boolean, ms = 2000, what = 'condition'): Promise<void> {
  const t0 = performance.now();
  while (!cond()) {
    if (performance.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await delay(5);
  }
}

/** A hand-driven destination that speaks only protocol version 1: it answers the handshake,
 * then only listens, recording every message it got. */
export async function listenAsVersion1(host: FakeTargetHost): Promise<{ readonly port: number; readonly seen: readonly ProtocolMessage[]; close(): Promise<void> }> {
  const seen: ProtocolMessage[] = [];
  const sockets: Socket[] = [];
  const server = createServer((s) => {
    sockets.push(s);
    s.on('error', () => undefined);
    const enc = new FrameEncoder();
    const dec = new FrameDecoder();
    let challenge: ReturnType<typeof host.issuer.challenge> | undefined;
    s.on('data', (b: Buffer) => dec.push(b, (m) => {
      seen.push(m);
      if (m.type === 'Hello') {
        challenge = host.issuer.challenge(1, m.tokenId, m.sourceNonce);
        s.write(enc.encode({ type: 'Challenge', versions: { min: 1, max: 1 }, version: 1, destinationNonce: challenge.transcript.destinationNonce }));
      } else if (m.type === 'Auth' && challenge) {
        s.write(enc.encode({ type: 'AuthOk', proof: host.issuer.verify(challenge, m.proof) }));
      }
    }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
