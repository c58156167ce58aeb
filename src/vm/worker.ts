// A VM's worker thread: it owns the machine (vCPU, RAM, devices) and the host backends behind
// the devices, so a busy guest never holds up the daemon's event loop. The main thread's Vm
// drives it with the requests of worker-protocol.ts.

import { parentPort, workerData } from 'node:worker_threads';
import { readFileSync, statSync } from 'node:fs';
import { FerryError } from '../errors.js';
import { WARM_UP_CALLS } from '../machine/memory/page-maps.js';
import { Machine, type BootSpec, type MachineExit, type MachinePager } from '../machine/boot/machine.js';
import { GuestMemoryLostError } from '../machine/memory/errors.js';
import type { ConsoleBackend } from '../machine/devices/types.js';
import { ensureGuestImage } from '../guest/image.js';
import { restoreSnapshot, writeSnapshot } from './snapshot/file.js';
import { VirtioNet } from '../machine/devices/virtio/net.js';
import { VmDevices } from './devices.js';
import { startTapThread } from '../net/tap.js';
import { resolveVmConfig } from './config.js';
import { wallClockMs } from '../machine/clock.js';
import type { ActivationTimes } from './types.js';
import {
  PAGER_DONE, PAGER_FAILED, PAGER_WAITING, toWireError, type FromWorker, type GuestExit, type ReplyResults, type ToWorker, type VmWorkerData, type WorkerInit, type WorkerRequest, type WorkerStatus,
} from './worker-protocol.js';

if (!parentPort) throw new Error('src/vm/worker.ts runs as a worker thread (see vm.ts)');
const port = parentPort;
/** A standby's NIC thread, started while it waits: a thread's start is most of a TAP's open. */
const tapThread = (workerData as VmWorkerData | undefined)?.standby ? startTapThread() : undefined;
/** Set by the first message (see WorkerInit); every request waits for `built`, which needs it. */
let config: WorkerInit['config'];
let incoming = false;
let attention: Int32Array;
let initialize!: (init: WorkerInit) => void;
const initialized = new Promise<void>((resolve) => {
  initialize = (init) => {
    ({ config, incoming } = init);
    attention = new Int32Array(init.attention);
    resolve();
  };
});

function post(msg: FromWorker, transfer: ArrayBuffer[] = []): void {
  port.postMessage(msg, transfer);
}

/** Long enough to gather a line or a burst; short enough to feel interactive. */
const CONSOLE_FLUSH_MS = 5;
/** A burst this large goes out at once rather than growing further. */
const CONSOLE_MAX_BATCH = 64 * 1024;

/** The UART's backend: output is coalesced into one message per few ms, so a chatty guest
 * (a byte per MMIO write) costs the main thread a message per batch, not per byte. */
class PortConsole implements ConsoleBackend {
  private chunks: Uint8Array[] = [];
  private size = 0;
  private timer: NodeJS.Timeout | undefined;
  private input: ((bytes: Uint8Array) => void) | undefined;

  write(bytes: Uint8Array): void {
    // The UART may reuse its buffer.
    this.chunks.push(bytes.slice());
    this.size += bytes.length;
    if (this.size >= CONSOLE_MAX_BATCH) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), CONSOLE_FLUSH_MS);
  }

  onInput(listener: (bytes: Uint8Array) => void): void {
    this.input = listener;
  }

  type(bytes: Uint8Array): void {
    this.input?.(bytes);
  }

  /** Also called before replies and exit notices, so output the guest printed before a
   * pause or power-off reaches the parent before the news of it. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.size === 0) return;
    const out = new Uint8Array(this.size);
    let at = 0;
    for (const c of this.chunks) { out.set(c, at); at += c.length; }
    this.chunks = [];
    this.size = 0;
    post({ type: 'console', bytes: out }, [out.buffer]);
  }
}

const consoleBackend = new PortConsole();

/** How long a device access waits for absent pages before the VM is given up. The main thread
 * answers within its own fetch timeouts; this only guards against it never answering. */
const SYNC_FAULT_TIMEOUT_MS = 120_000;

/** Absent pages come from the main thread, which owns the migration stream and the swap
 * device. The vCPU waits for them asynchronously (its slice loop awaits; devices, timers and
 * the console go on); a device access blocks the worker on the control cell, since it sits in
 * the middle of synchronous device code. */
class WorkerPager implements MachinePager {
  readonly control = new SharedArrayBuffer(4);
  private readonly cell = new Int32Array(this.control);
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();

  fault(page: number): Promise<void> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      post({ type: 'page-fault', id, first: page, count: 1, sync: false });
    });
  }

  answered(id: number, ok: boolean, error?: string): void {
    const w = this.waiting.get(id);
    this.waiting.delete(id);
    if (ok) w?.resolve();
    else w?.reject(new GuestMemoryLostError(error ?? 'the page could not be fetched'));
  }

  faultSync(first: number, last: number): void {
    Atomics.store(this.cell, 0, PAGER_WAITING);
    post({ type: 'page-fault', id: 0, first, count: last - first + 1, sync: true });
    const outcome = Atomics.wait(this.cell, 0, PAGER_WAITING, SYNC_FAULT_TIMEOUT_MS);
    const value = Atomics.load(this.cell, 0);
    if (outcome === 'timed-out' || value !== PAGER_DONE) {
      throw new GuestMemoryLostError(value === PAGER_FAILED ? `guest pages ${first}..${last} could not be fetched` : `guest pages ${first}..${last}: no answer within ${SYNC_FAULT_TIMEOUT_MS} ms`);
    }
  }
}

const pager = new WorkerPager();

interface Built {
  readonly machine: Machine;
  readonly devices: VmDevices;
}

async function build(): Promise<Built> {
  const vm = resolveVmConfig(config);
  const boot = incoming ? { kind: 'incoming' as const } : await linuxBoot(vm.cmdline);
  const devices = await VmDevices.open(vm.devices, tapThread ? { tapThread } : {});
  try {
    const machine = new Machine({ ramBytes: vm.ramBytes, console: consoleBackend, boot, virtio: (mem) => devices.models(mem), pager, attention });
    // A destination holds NIC input from the start: a frame written into guest RAM before the
    // state loads, or before post-copy can serve the page it lands in, would wait for nobody.
    if (incoming) {
      await machine.quiesce();
      for (let i = 0; i < WARM_UP_CALLS; i++) machine.rehearseSwitch();
    }
    return { machine, devices };
  } catch (e) {
    await devices.close();
    throw e;
  }
}

/** The guest image to boot. An incoming migration fills RAM and state itself, so it reads
 * (or builds) none. */
async function linuxBoot(cmdline: string): Promise<BootSpec> {
  let kernelPath = config.kernel;
  let initrdPath = config.initramfs;
  if (kernelPath === undefined) {
    const image = await ensureGuestImage();
    kernelPath = image.kernel;
    initrdPath ??= image.initramfs;
  }
  const kernel = readFileSync(kernelPath);
  const initrd = initrdPath !== undefined ? readFileSync(initrdPath) : undefined;
  return { kind: 'linux', kernel, cmdline, ...(initrd ? { initrd } : {}) };
}

// Built as soon as the worker knows what to build, so the first request does not also pay for
// opening backends it could have been opening meanwhile; requests wait for it.
const built = initialized.then(build);
let status: WorkerStatus = 'starting';
built.then(() => setStatus('ready'), () => { /* reported to the first request */ });

function setStatus(s: WorkerStatus): void {
  status = s;
  post({ type: 'status', status: s });
}

/** The active machine.run(), while there is one. */
let running: Promise<MachineExit> | undefined;
/** Set once the machine has run or been restored: boot and restore want a fresh one. */
let used = false;
let closed: Promise<void> | undefined;

function closeDevices(devices: VmDevices): Promise<void> {
  closed ??= devices.close();
  return closed;
}

function describeExit(exit: GuestExit): string {
  switch (exit.kind) {
    case 'poweroff': return 'guest powered off';
    case 'reboot': return 'guest rebooted';
    case 'fail': return `guest reported failure ${exit.code}`;
    case 'fatal': return `guest hit a fatal trap (cause ${exit.cause}, pc ${exit.pc})`;
    case 'memory-lost': return `guest memory lost: ${exit.reason}`;
  }
}

function go({ machine, devices }: Built): void {
  used = true;
  const run = machine.run();
  running = run;
  setStatus('running');
  run.then(async (exit) => {
    if (running === run) running = undefined;
    // Requested outcomes: the request that asked for them reports them.
    if (exit.kind === 'paused' || exit.kind === 'stopped') return;
    const guestExit: GuestExit = exit.kind === 'fatal'
      ? { kind: 'fatal', cause: `0x${exit.cause.toString(16)}`, pc: `0x${exit.pc.toString(16)}` }
      : exit;
    consoleBackend.flush();
    await closeDevices(devices);
    setStatus('stopped');
    post({ type: 'guest-exit', exit: guestExit, reason: describeExit(guestExit) });
  }, (e: unknown) => crash(e));
}

/** Pauses the loop and waits for it to return. */
async function halt(machine: Machine): Promise<MachineExit | undefined> {
  const run = running;
  if (!run) return undefined;
  machine.pause();
  return await run;
}

/** Set by a restore: the first resume announces the NICs' new location. */
let announcePending = false;

/** Rounds of VMM announcements after activation (ms after resume), as QEMU spaces its own:
 * a switch that missed the first frame learns from a later one. The first goes at once. */
const ANNOUNCE_ROUNDS_MS = [50, 150, 300, 550];

function nicsOf(machine: Machine): VirtioNet[] {
  return machine.virtio.map((t) => t.device).filter((d): d is VirtioNet => d instanceof VirtioNet);
}

/** What an activation showed the LAN, for the switch's timeline. */
const activation: { firstFrameOutMs: number | null; announceSentMs: number | null; framesDropped: number } = { firstFrameOutMs: null, announceSentMs: null, framesDropped: 0 };

/** Activation after a move: RARPs from the VMM (at once, then spaced), and the guest's own
 * gratuitous ARPs (VIRTIO_NET_F_GUEST_ANNOUNCE), the fallback for a guest that ignores the
 * request being the RARPs. The first RARP goes before the guest runs a single instruction,
 * so the LAN starts learning the new port while the guest is still waking. */
function announceMove(machine: Machine): void {
  const nics = nicsOf(machine);
  for (const nic of nics) nic.sendRarp();
  if (nics.length > 0) activation.announceSentMs = wallClockMs();
  for (const nic of nics) {
    nic.onNextTransmit(() => { activation.firstFrameOutMs ??= wallClockMs(); });
    nic.announce();
  }
  for (const at of ANNOUNCE_ROUNDS_MS) {
    setTimeout(() => { if (!closed) for (const nic of nics) nic.sendRarp(); }, at).unref();
  }
}

/** How long a freeze waits for in-flight disk requests; a backend that hangs longer is a
 * failed stop-and-copy (the guest resumes on the source). */
const QUIESCE_TIMEOUT_MS = 10_000;

async function quiesceWithin(b: Built, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new FerryError('VM_QUIESCE_TIMEOUT', `in-flight device I/O did not finish within ${ms} ms`)), ms);
  });
  try {
    await Promise.race([b.machine.quiesce(), late]);
    await Promise.race([b.devices.flushDisks(), late]);
  } finally {
    clearTimeout(timer);
  }
}

type Handler<T extends WorkerRequest['type']> = (req: Extract<WorkerRequest, { type: T }>, b: Built) => Promise<ReplyResults[T]>;

const handlers: { [T in WorkerRequest['type']]: Handler<T> } = {
  boot: async (_req, b) => {
    if (used) throw new FerryError('VM_WORKER_STATE', 'this worker\'s machine has already run; a new boot needs a new worker');
    go(b);
    return undefined;
  },
  pause: async (_req, b) => {
    const exit = await halt(b.machine);
    if (exit === undefined) throw new FerryError('VM_WORKER_STATE', `the machine is not running (${status})`);
    if (exit.kind !== 'paused') throw new FerryError('VM_GUEST_EXITED', `the guest ended before it could be paused (${exit.kind})`);
    setStatus('paused');
    return undefined;
  },
  resume: async (_req, b) => {
    if (running) throw new FerryError('VM_WORKER_STATE', 'the machine is already running');
    if (!used || closed) throw new FerryError('VM_WORKER_STATE', `the machine cannot be resumed (${status})`);
    go(b);
    if (announcePending) {
      announcePending = false;
      announceMove(b.machine);
    }
    return undefined;
  },
  stop: async (_req, b) => {
    const run = running;
    b.machine.stop();
    if (run) await run;
    await closeDevices(b.devices);
    setStatus('stopped');
    return undefined;
  },
  snapshot: async (req, b) => {
    if (running) throw new FerryError('VM_WORKER_STATE', 'the machine must be paused for a snapshot');
    const total = b.machine.memory.ramSize;
    const t0 = performance.now();
    post({ type: 'progress', operation: 'snapshot', done: 0, total });
    // A snapshot holds all of RAM: bring absent pages in first (one request for the range).
    b.machine.memory.ensurePresent(0, b.machine.memory.pageCount - 1);
    // Finished device work (a disk write in flight, a balloon report) belongs in the image.
    let info: Awaited<ReturnType<typeof writeSnapshot>>;
    try {
      await quiesceWithin(b, QUIESCE_TIMEOUT_MS);
      info = await writeSnapshot(req.file, b.machine, { label: config.name });
    } finally {
      b.machine.unquiesce();
    }
    post({ type: 'progress', operation: 'snapshot', done: total, total });
    return { bytes: info.bytes, ms: Math.round(performance.now() - t0) };
  },
  restore: async (req, b) => {
    if (used) throw new FerryError('VM_WORKER_STATE', 'a snapshot is restored only into a freshly built machine');
    const total = b.machine.memory.ramSize;
    const t0 = performance.now();
    post({ type: 'progress', operation: 'restore', done: 0, total });
    // Set first: a restore that fails halfway leaves RAM overwritten, not fit to boot.
    used = true;
    await restoreSnapshot(req.file, b.machine);
    // The VM may now sit behind another switch port: tell the LAN once it runs again.
    announcePending = true;
    post({ type: 'progress', operation: 'restore', done: total, total });
    setStatus('paused');
    return { bytes: statSync(req.file).size, ms: Math.round(performance.now() - t0) };
  },
  memory: async (_req, b) => {
    const buffer = b.machine.vcpu.memory.buffer;
    if (!(buffer instanceof SharedArrayBuffer)) throw new FerryError('VM_WORKER_STATE', 'guest RAM is not shared memory');
    return { buffer, layout: b.machine.vcpu.layout, pagerControl: pager.control };
  },
  'harvest-dirty': async (_req, b) => ({ log: b.machine.harvestDirtyLog() }),
  'rehearse-switch': async (_req, b) => {
    // Between the guest's slices: each rehearsal of a 2 GiB machine costs a few ms until compiled.
    for (let i = 0; i < WARM_UP_CALLS; i++) {
      b.machine.rehearseSwitch();
      await new Promise((resolve) => setImmediate(resolve));
    }
    return undefined;
  },
  'harvest-access': async (_req, b) => ({ log: b.machine.harvestAccessLog() }),
  throttle: async (req, b) => b.machine.setThrottle(req.setting ?? undefined),
  evict: async (req, b) => b.machine.evictPages(req.pages, req.mark),
  freeze: async (_req, b) => {
    if (!used || closed) throw new FerryError('VM_WORKER_STATE', `the machine cannot be frozen (${status})`);
    const t0 = performance.now();
    const wasRunning = running !== undefined;
    const exit = await halt(b.machine);
    const pausedAtMs = wallClockMs();
    if (exit !== undefined && exit.kind !== 'paused') throw new FerryError('VM_GUEST_EXITED', `the guest ended before it could be frozen (${exit.kind})`);
    setStatus('paused');
    try {
      await quiesceWithin(b, QUIESCE_TIMEOUT_MS);
    } catch (e) {
      b.machine.unquiesce();
      if (wasRunning) go(b);
      throw e;
    }
    const quiesceMs = performance.now() - t0;
    // One synchronous step: nothing runs between the harvest and the state; frames from here on
    // are carried to the destination (take-frames) if the migration commits.
    const log = b.machine.harvestDirtyLog();
    const accessLog = b.machine.harvestAccessLog();
    const state = b.machine.save();
    for (const nic of nicsOf(b.machine)) nic.markCarry();
    return { log, accessLog, state, wasRunning, quiesceMs, pausedAtMs };
  },
  'take-frames': async (_req, b) => {
    let dropped = 0;
    const nics = nicsOf(b.machine).map((nic, i) => {
      const taken = nic.takeCarried();
      dropped += taken.dropped;
      return { nic: i, frames: taken.frames };
    }).filter((n) => n.frames.length > 0);
    return { nics, dropped };
  },
  'inject-frames': async (req, b) => {
    const nic = nicsOf(b.machine)[req.nic];
    if (!nic) throw new FerryError('VM_NO_SUCH_NIC', `frames for NIC ${req.nic}, the VM has ${nicsOf(b.machine).length}`);
    const r = nic.inject(req.frames);
    activation.framesDropped += r.dropped;
    return r;
  },
  activate: async (_req, b) => {
    if (!incoming || running || !used || closed) throw new FerryError('VM_WORKER_STATE', `only a loaded incoming machine is activated (${status})`);
    announcePending = false;
    for (const nic of nicsOf(b.machine)) activation.framesDropped += nic.heldDrops;
    announceMove(b.machine);
    const resumedAtMs = wallClockMs();
    go(b);
    // After this reply: delivering the held frames may wait (this thread blocked) for absent
    // pages, which post-copy serves from now on; the activation must not wait for them.
    setImmediate(() => { if (!closed) b.machine.unquiesce(); });
    return { resumedAtMs };
  },
  'switch-times': async (): Promise<ActivationTimes> => ({ ...activation }),
  thaw: async (req, b) => {
    b.machine.unquiesce();
    if (req.resume && !running && !closed) go(b);
    return undefined;
  },
  'load-state': async (req, b) => {
    if (!incoming || running) throw new FerryError('VM_WORKER_STATE', 'a migrated state loads only into an incoming machine that has not run');
    b.machine.restore(req.state);
    used = true;
    // The VM now sits behind another switch port: tell the LAN once it runs.
    announcePending = true;
    setStatus('paused');
    return undefined;
  },
  wws: async (req, b) => {
    if (!running) throw new FerryError('VM_WORKER_STATE', 'the working set is traced only while the guest runs');
    const dirtyPages: number[] = [];
    const intervalMs: number[] = [];
    b.machine.harvestDirtyLog();
    let last = performance.now();
    for (let i = 0; i < req.samples && running; i++) {
      await new Promise((r) => setTimeout(r, Math.max(0, last + req.intervalMs - performance.now())));
      const log = b.machine.harvestDirtyLog();
      const now = performance.now();
      let n = 0;
      for (let p = 0; p < log.length; p++) n += log[p]!;
      dirtyPages.push(n);
      intervalMs.push(Math.round((now - last) * 10) / 10);
      last = now;
    }
    return { dirtyPages, intervalMs };
  },
};

/** The buffers of a reply's top-level byte arrays that the reply alone holds (the logs a
 * harvest or a freeze took): moved, not copied, because at 2 GiB each is 512 KiB on the pause. */
function ownedBuffers(result: unknown): ArrayBuffer[] {
  if (typeof result !== 'object' || result === null) return [];
  const out: ArrayBuffer[] = [];
  for (const v of Object.values(result)) {
    if (v instanceof Uint8Array && v.buffer instanceof ArrayBuffer && v.byteOffset === 0 && v.byteLength === v.buffer.byteLength) out.push(v.buffer);
  }
  return out;
}

async function handle(req: WorkerRequest): Promise<void> {
  try {
    const b = await built;
    const result = await (handlers[req.type] as Handler<typeof req.type>)(req as never, b);
    consoleBackend.flush();
    post(result === undefined ? { type: 'reply', id: req.id, ok: true } : { type: 'reply', id: req.id, ok: true, result }, ownedBuffers(result));
  } catch (e) {
    consoleBackend.flush();
    post({ type: 'reply', id: req.id, ok: false, error: toWireError(e) });
  }
}

// One request at a time, in order: each sees the machine as the previous one left it.
let queue: Promise<void> = Promise.resolve();
port.on('message', (msg: ToWorker) => {
  if (msg.type === 'init') {
    initialize(msg.init);
    return;
  }
  if (msg.type === 'console-input') {
    consoleBackend.type(msg.bytes);
    return;
  }
  if (msg.type === 'page-ready') {
    pager.answered(msg.id, msg.ok, msg.error);
    return;
  }
  queue = queue.then(() => handle(msg));
});

let crashing = false;
/** Tells the parent, releases the backends (a TAP would otherwise outlive the worker, its fd
 * being the process's), and ends the thread. */
function crash(e: unknown): void {
  if (crashing) return;
  crashing = true;
  try { consoleBackend.flush(); } catch { /* the crash report matters more */ }
  post({ type: 'crash', error: toWireError(e) });
  const giveUp = new Promise<void>((resolve) => setTimeout(resolve, 2000).unref());
  const release = built.then((b) => closeDevices(b.devices), () => undefined);
  void Promise.race([release, giveUp]).finally(() => process.exit(1));
}

process.on('uncaughtException', crash);
process.on('unhandledRejection', crash);
