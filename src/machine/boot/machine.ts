// The machine: one hart, the virt board's devices, guest RAM, and the loop that runs the
// hart in bounded slices. Slices end on a budget, on WFI (the host sleeps until the next
// timer deadline or a device interrupt), on an SBI call, or on a request from the host;
// pause, snapshot and migration act between slices.

import type { JitOptions } from '../cpu/jit/jit.js';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { Vcpu, parseVcpuState } from '../cpu/vcpu.js';
import { forEachNonZero } from '../memory/page-maps.js';
import { ExitReason } from '../cpu/exports.js';
import { GuestMemory, MARK_INSTALLED, MARK_WRITTEN, PAGE_SIZE, takeMarks } from '../memory/guest-memory.js';
import { MmioBus } from '../devices/bus.js';
import { Uart16550 } from '../devices/uart16550.js';
import { Plic } from '../devices/plic.js';
import { Clint } from '../devices/clint.js';
import { Syscon, SysconEvent } from '../devices/syscon.js';
import { GoldfishRtc } from '../devices/goldfish-rtc.js';
import { VIRT_CLINT, VIRT_PLIC, VIRT_RTC, VIRT_TEST, VIRT_UART0, VIRT_VIRTIO, virtioSlot } from '../devices/virt-map.js';
import type { AccessSize, ConsoleBackend, HartInterruptSink } from '../devices/types.js';
import { Sbi } from '../sbi/sbi.js';
import type { SbiHart } from '../sbi/types.js';
import { buildVirtDeviceTree } from '../fdt/virt.js';
import { GuestClock } from '../clock.js';
import { loadElf } from './elf.js';
import { planLinuxBoot } from './linux.js';
import { FerryError } from '../../errors.js';
import { VirtioMmio, type VirtioMmioState } from '../devices/virtio/mmio.js';
import type { VirtioDevice } from '../devices/virtio/device.js';
import type { VcpuState } from '../cpu/cpu-state.js';
import type { ClintState } from '../devices/clint.js';
import type { PlicState } from '../devices/plic.js';
import type { UartState } from '../devices/uart16550.js';
import type { GoldfishRtcState } from '../devices/goldfish-rtc.js';
import { DeviceStateError } from '../devices/errors.js';
import { checkArray, checkBool, checkU64, checkUint } from '../state-check.js';
import { RunThrottle, type ThrottleStats, type VcpuThrottle } from './throttle.js';

/** ISA advertised to the guest. Sstc lets Linux program its timer without SBI calls. */
export const GUEST_ISA = ['i', 'm', 'a', 'f', 'd', 'c', 'zicsr', 'zifencei', 'zicntr', 'sstc'];

const IRQ_MSI = 3;
const IRQ_SEI = 9;
const IRQ_MEI = 11;
/** Instructions per slice: long enough to amortise the exit, short enough to keep the
 * event loop (console, timers, API) responsive. */
const SLICE = 200_000;
/** Yield to the event loop at least this often while the guest is busy. */
const YIELD_MS = 20;
/** ... and this often while a batch of translated blocks compiles in the background: V8
 * finishes an asynchronous compile in a few steps on this thread's event loop, and its blocks
 * stay interpreted until the last one. */
const JIT_YIELD_MS = 1;
const MAX_SLEEP_MS = 1000;

/** The RTC's time source: host wall-clock time in ns since the epoch. */
function wallClockNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

export type BootSpec =
  | { readonly kind: 'linux'; readonly kernel: Uint8Array; readonly initrd?: Uint8Array; readonly cmdline: string }
  | { readonly kind: 'bare'; readonly elf: Uint8Array }
  /** A Linux machine whose RAM and state arrive from elsewhere (a migration's destination):
   * nothing is loaded, RAM stays zeroed until the image is written into it. */
  | { readonly kind: 'incoming' };

export interface MachineOptions {
  readonly ramBytes: number;
  /** Translate hot guest code to wasm (cpu/DESIGN.md); default: the FERRY_JIT variable. */
  readonly jit?: JitOptions | false;
  readonly console: ConsoleBackend;
  readonly boot: BootSpec;
  /** virtio devices, placed in virtio-mmio slots 0, 1, ... in this order. Built against the
   * machine's guest memory, hence a factory. */
  readonly virtio?: (memory: GuestMemory) => VirtioDevice[];
  /** Brings absent pages into RAM (post-copy, swapped-out pages). Without one, a machine never
   * has absent pages. */
  readonly pager?: MachinePager;
  /** A cell another thread sets (non-zero) after posting this machine's thread a request: the
   * run loop then yields to the event loop at the next slice boundary instead of after up to
   * YIELD_MS, as a KVM vCPU is kicked out of guest mode. Migration asks many small things of a
   * busy guest's thread (dirty logs, evictions, the freeze), each of which would otherwise wait
   * for the next periodic yield. */
  readonly attention?: Int32Array;
}

/** The host side of demand paging. `fault` serves the vCPU, which waits for it alone (the
 * event loop, devices and timers go on); `faultSync` serves device accesses through
 * GuestMemory, which cannot wait asynchronously. Both reject or throw GuestMemoryLostError
 * when a page cannot be had. */
export interface MachinePager {
  fault(page: number): Promise<void>;
  faultSync(firstPage: number, lastPage: number): void;
}

export type MachineExit =
  | { readonly kind: 'poweroff' }
  | { readonly kind: 'reboot' }
  | { readonly kind: 'fail'; readonly code: number }
  | { readonly kind: 'fatal'; readonly cause: bigint; readonly pc: bigint }
  | { readonly kind: 'stopped' }
  /** A page the guest needed could not be brought into RAM (its only copy was lost). */
  | { readonly kind: 'memory-lost'; readonly reason: string }
  /** pause() took effect: the machine is intact and run() continues it. */
  | { readonly kind: 'paused' };

/** One virtio-mmio slot. `kind` and `deviceId` name the device model so a state is never
 * restored into a slot holding a different device. */
export interface VirtioSlotState {
  slot: number;
  kind: string;
  deviceId: number;
  transport: VirtioMmioState;
}

/**
 * Everything that makes up a machine except its RAM (too large for one object: the snapshot
 * file and the migration stream carry it separately). Sections are named, never positional;
 * 64-bit values are decimal strings, so the whole object survives JSON.
 */
export interface MachineState {
  /** How the machine was built: a state only fits a machine built the same way. */
  config: { ramBytes: number; sbiInMachine: boolean };
  cpu: VcpuState;
  clint: ClintState;
  plic: PlicState;
  uart: UartState;
  rtc: GoldfishRtcState;
  virtio: VirtioSlotState[];
  /** Guest time (timebase ticks, decimal) when the state was taken. */
  clock: { ticks: string };
}

/** Saving or restoring a machine whose run() is active, or a state that does not fit it. */
export class MachineStateError extends FerryError {
  constructor(code: 'MACHINE_RUNNING' | 'MACHINE_STATE_MISMATCH', message: string) {
    super(code, message);
  }
}

/** Pages taken out of RAM (Machine.evictPages): the contents of `pages`, in order, to store;
 * `unchanged` hold exactly what their backing store already keeps, so they come without data. */
export interface Eviction {
  readonly pages: readonly number[];
  readonly data: Uint8Array;
  readonly unchanged: readonly number[];
}

export class Machine {
  readonly vcpu: Vcpu;
  readonly memory: GuestMemory;
  readonly bus = new MmioBus();
  readonly clock = new GuestClock();
  readonly uart: Uart16550;
  readonly plic: Plic;
  readonly clint: Clint;
  readonly syscon: Syscon;
  readonly rtc: GoldfishRtc;
  readonly sbi: Sbi | undefined;
  readonly virtio: VirtioMmio[];
  private exit: MachineExit | undefined;
  private wake: (() => void) | undefined;
  /** Ends a throttle stall early: pause, stop and a new setting must not wait for it. */
  private wakeStall: (() => void) | undefined;
  private readonly throttle = new RunThrottle();
  private running = false;
  private pauseRequested = false;
  private readonly sbiInMachine: boolean;
  private readonly pager: MachinePager | undefined;
  private readonly attention: Int32Array | undefined;
  /** Per page: 1 while RAM holds exactly the copy its backing store keeps (a harvest saw
   * MARK_INSTALLED, and no write since). Marks not yet harvested are read at eviction. */
  private readonly backed: Uint8Array;

  constructor(opts: MachineOptions) {
    const sbiInMachine = opts.boot.kind !== 'bare';
    this.sbiInMachine = sbiInMachine;
    this.vcpu = new Vcpu({
      ramBytes: opts.ramBytes,
      jit: opts.jit,
      sbiInMachine,
      host: {
        hostTime: () => this.clock.ticks(),
        mmioRead: (pa, size) => this.bus.read(pa, size as AccessSize) ?? -1,
        mmioWrite: (pa, size, value) => (this.bus.write(pa, size as AccessSize, value) ? 0 : 1),
      },
    });
    this.memory = new GuestMemory(this.vcpu.memory.buffer, this.vcpu.layout);
    this.backed = new Uint8Array(this.memory.pageCount);
    this.pager = opts.pager;
    this.attention = opts.attention;
    if (opts.pager) this.memory.onAbsent((first, last) => opts.pager!.faultSync(first, last));
    const cpu = this.vcpu.exports;
    const sink: HartInterruptSink = {
      setExternalInterrupt: (mode, level) => {
        cpu.setIrqLine(mode === 'M' ? IRQ_MEI : IRQ_SEI, level ? 1 : 0);
        if (level) this.kick();
      },
    };
    this.plic = new Plic([sink], VIRT_PLIC.sourceCount);
    this.uart = new Uart16550(opts.console, this.plic.irqLine(VIRT_UART0.irq));
    this.clint = new Clint([{
      readTime: () => BigInt(this.clock.ticks()),
      writeTime: (v) => this.clock.set(Number(v)),
      setMtimecmp: (v) => cpu.setMtimecmp(v),
      setMsip: (level) => cpu.setIrqLine(IRQ_MSI, level ? 1 : 0),
    }]);
    this.syscon = new Syscon((e) => this.onSyscon(e));
    this.rtc = new GoldfishRtc(wallClockNs, this.plic.irqLine(VIRT_RTC.irq));
    this.bus.map(VIRT_TEST.base, VIRT_TEST.size, this.syscon);
    this.bus.map(VIRT_RTC.base, VIRT_RTC.size, this.rtc);
    this.bus.map(VIRT_CLINT.base, VIRT_CLINT.size, this.clint);
    this.bus.map(VIRT_PLIC.base, VIRT_PLIC.size, this.plic);
    this.bus.map(VIRT_UART0.base, VIRT_UART0.size, this.uart);
    const devices = opts.virtio?.(this.memory) ?? [];
    if (devices.length > VIRT_VIRTIO.count) throw new FerryError('MACHINE_CONFIG', `at most ${VIRT_VIRTIO.count} virtio devices`);
    this.virtio = devices.map((d, i) => {
      const slot = virtioSlot(i);
      const transport = new VirtioMmio(d, this.memory, this.plic.irqLine(slot.irq));
      this.bus.map(slot.base, slot.size, transport);
      return transport;
    });
    this.sbi = sbiInMachine ? new Sbi(this.sbiHart(), this.memory, opts.console) : undefined;
    this.load(opts.boot);
  }

  private sbiHart(): SbiHart {
    const v = this.vcpu;
    return {
      hartId: 0,
      getX: (i) => v.getX(i),
      setX: (i, value) => v.setX(i, value),
      readTime: () => BigInt(this.clock.ticks()),
      setTimer: (deadline) => v.exports.setSbiTimecmp(deadline),
      raiseSoftwareInterrupt: () => v.exports.raiseSoftwareIrq(1),
      flushTlb: () => v.exports.tlbFlush(),
    };
  }

  private load(boot: BootSpec): void {
    if (boot.kind === 'incoming') return;
    if (boot.kind === 'bare') {
      this.vcpu.pc = loadElf(boot.elf, this.memory);
      return;
    }
    const dtbMax = 64 * 1024;
    const plan = planLinuxBoot(this.memory, boot.kernel, boot.initrd?.length ?? 0, dtbMax);
    const dtb = buildVirtDeviceTree({
      ramBase: this.memory.ramBase,
      ramSize: BigInt(this.memory.ramSize),
      hartCount: 1,
      isaExtensions: GUEST_ISA,
      bootargs: boot.cmdline,
      virtio: this.virtio.map((_, index) => ({ index })),
      ...(plan.initrd ? { initrd: plan.initrd } : {}),
    });
    if (dtb.length > dtbMax) throw new FerryError('BOOT_INVALID', 'device tree is larger than its slot');
    this.memory.write(plan.kernelEntry, boot.kernel);
    if (plan.initrd && boot.initrd) this.memory.write(plan.initrd.start, boot.initrd);
    this.memory.write(plan.dtbAddr, dtb);
    this.vcpu.exports.enterSupervisor(plan.kernelEntry, plan.dtbAddr);
  }

  private onSyscon(e: SysconEvent): void {
    this.finish(e.kind === 'fail' ? { kind: 'fail', code: e.code } : { kind: e.kind });
  }

  private finish(exit: MachineExit): void {
    if (!this.exit) this.exit = exit;
    this.vcpu.exports.requestExit();
    this.kick();
    this.endStall();
  }

  private endStall(): void {
    const w = this.wakeStall;
    this.wakeStall = undefined;
    w?.();
  }

  /**
   * Slows the vCPU (a migration that does not converge; see throttle.ts), or with undefined lets
   * it run freely again. Returns the throttle's figures so far. Interrupts do not end a stall:
   * a guest woken by its NIC would otherwise outrun the throttle.
   */
  setThrottle(t: VcpuThrottle | undefined): ThrottleStats {
    const now = performance.now();
    this.throttle.set(t, now);
    this.endStall();
    return this.throttle.stats(now);
  }

  /** Wakes the loop from a WFI sleep (a device raised an interrupt). */
  private kick(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Asks the loop to stop at the next slice boundary. The machine is finished: run() again
   * returns the same exit at once. */
  stop(): void {
    this.finish({ kind: 'stopped' });
  }

  /**
   * Asks run() to return `{ kind: 'paused' }` at the next slice boundary with guest time
   * frozen; run() again continues the guest. On a machine that is not running this only
   * freezes guest time, so an idle machine's guest does not see time pass.
   */
  pause(): void {
    if (!this.running) {
      this.clock.freeze();
      return;
    }
    this.pauseRequested = true;
    this.kick();
    this.endStall();
  }

  /**
   * Returns the pages written since the last harvest (a byte per page, 1 = dirty) and starts a
   * new log. Between slices only, so no guest store falls between taking the log and re-arming
   * the write TLB; marks another thread makes meanwhile are taken atomically (takeMarks). No
   * write is lost between two harvests.
   */
  harvestDirtyLog(): Uint8Array {
    const log = takeMarks(this.memory.dirtyLog);
    this.vcpu.exports.tlbDropWrites();
    // Callers see 1 for any change; which kind it was stays here, for evictPages.
    forEachNonZero([log], log.length, (p) => {
      this.backed[p] = log[p] === MARK_INSTALLED ? 1 : 0;
      log[p] = MARK_WRITTEN;
    });
    return log;
  }

  /** As harvestDirtyLog, for the access log (reads, writes and fetches): the working set. */
  harvestAccessLog(): Uint8Array {
    const log = takeMarks(this.memory.accessLog);
    this.vcpu.exports.tlbFlush();
    return log;
  }

  /**
   * Takes pages out of RAM between two slices: marks them absent with `mark` (who holds them
   * now) and zeroes them. No TLB entry survives, so the next touch faults the page back in
   * through the pager. Pages installed from their backing store and not written since come back
   * as `unchanged`, without data. Pages already absent are skipped.
   */
  evictPages(pages: readonly number[], mark: number): Eviction {
    const mem = this.memory;
    const taken: number[] = [];
    const unchanged: number[] = [];
    for (const p of pages) {
      if (!Number.isInteger(p) || p < 0 || p >= mem.pageCount || mem.absent[p] !== 0) continue;
      const log = mem.dirtyLog[p];
      (log === MARK_INSTALLED || (log === 0 && this.backed[p] === 1) ? unchanged : taken).push(p);
    }
    const data = new Uint8Array(taken.length * PAGE_SIZE);
    taken.forEach((p, i) => data.set(mem.bytes.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE), i * PAGE_SIZE));
    for (const p of [...taken, ...unchanged]) {
      mem.absent[p] = mark;
      mem.bytes.fill(0, p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
      mem.retireCode(p);
    }
    this.vcpu.exports.tlbFlush();
    return { pages: taken, data, unchanged };
  }

  /** With the machine paused: lets devices finish in-flight I/O and stop writing RAM on
   * their own (see VirtioDevice.quiesce), so RAM and save() describe one instant. */
  async quiesce(): Promise<void> {
    this.assertIdle('quiesce');
    await Promise.all(this.virtio.map((t) => t.device.quiesce?.()));
  }

  unquiesce(): void {
    for (const t of this.virtio) t.device.unquiesce?.();
  }

  /** Whether run() is active (save and restore need it not to be). */
  get isRunning(): boolean { return this.running; }

  /** Runs the hart until the guest powers off, fails, stop() or pause() is called. */
  async run(): Promise<MachineExit> {
    if (this.running) throw new FerryError('MACHINE_BUSY', 'machine is already running');
    this.running = true;
    this.pauseRequested = false;
    this.clock.resume();
    try {
      // Whoever started the loop (a resume, an activation) answers before the first slice: the
      // loop otherwise runs up to YIELD_MS of guest code before the caller's next line.
      await yieldToEventLoop();
      let lastYield = performance.now();
      // A message for the worker (the attention cell) or the yield clock.
      const yieldDue = (): boolean => (this.attention !== undefined && Atomics.exchange(this.attention, 0, 0) !== 0)
        || performance.now() - lastYield >= (this.vcpu.jitCompiling ? JIT_YIELD_MS : YIELD_MS);
      while (!this.exit) {
        if (this.pauseRequested) {
          this.pauseRequested = false;
          this.clock.freeze();
          return { kind: 'paused' };
        }
        const sliceStart = performance.now();
        const reason = this.vcpu.run(SLICE);
        // Charged for every slice, however it ended: a writer that sleeps between batches ends
        // its slices in WFI.
        const sliceEnd = performance.now();
        const stall = this.throttle.afterSlice(sliceEnd, sliceEnd - sliceStart, this.vcpu.exports.takeNewlyDirty());
        switch (reason) {
          case ExitReason.Sbi: {
            const outcome = this.sbi!.handleEcall();
            this.vcpu.pc = this.vcpu.pc + 4n;
            if (outcome.kind !== 'continue') this.finish({ kind: outcome.kind === 'shutdown' ? 'poweroff' : 'reboot' });
            break;
          }
          case ExitReason.Wfi:
            await this.payThrottle(stall);
            // Only a real sleep lets the event loop run. A WFI with an interrupt already pending
            // (or a timer already due) returns at once, and a loaded guest meets one such WFI
            // after another: the loop still yields on its clock, or device I/O, timers and the
            // host's requests wait (a rehearsal's setImmediate waited 370-850 ms beside the
            // demo's clients).
            if (await this.sleepUntilInterrupt()) lastYield = performance.now();
            else if (yieldDue()) {
              await yieldToEventLoop();
              lastYield = performance.now();
            }
            continue;
          case ExitReason.PageMissing: {
            const page = Number(this.vcpu.exports.getMissingPage());
            if (!this.pager) {
              this.finish({ kind: 'memory-lost', reason: `guest page ${page} is absent and the machine has no pager` });
              break;
            }
            try {
              await this.pager.fault(page);
            } catch (e) {
              this.finish({ kind: 'memory-lost', reason: e instanceof Error ? e.message : String(e) });
            }
            await this.payThrottle(stall);
            lastYield = performance.now();
            continue;
          }
          case ExitReason.Fatal:
            this.finish({ kind: 'fatal', cause: BigInt.asUintN(64, this.vcpu.exports.getFatalCause()), pc: this.vcpu.pc });
            break;
          default:
            break;
        }
        this.rtc.poll();
        if (stall > 0) {
          await this.payThrottle(stall);
          lastYield = performance.now();
        }
        if (yieldDue()) {
          await yieldToEventLoop();
          lastYield = performance.now();
        }
      }
      return this.exit;
    } finally {
      this.running = false;
    }
  }

  /** The machine's state without RAM. Only between slices: throws MACHINE_RUNNING while
   * run() is active (pause() and await run() first). */
  save(): MachineState {
    this.assertIdle('save');
    return this.capture();
  }

  /**
   * Runs the switch's state paths once and changes nothing: captures the state (between two
   * slices it is consistent, running or not) and validates it, which restores it into
   * scratch devices. A migration's two ends are fresh worker
   * threads, and V8 runs code slowly until it has compiled it: unrehearsed, the pause pays
   * for compiling save() on the source and the checks and restores on the destination.
   */
  rehearseSwitch(): void {
    this.checkState(this.capture());
  }

  /**
   * Validates `state` against this machine without changing anything: the sections' shapes
   * and values (by restoring them into throwaway copies of the devices), and that the state
   * was taken from a machine built like this one (RAM size, boot mode, virtio slots). Throws
   * MachineStateError or DeviceStateError. Virtio device models validate their own part only
   * when really restored; the transport part is checked here.
   */
  checkState(state: unknown): MachineState {
    const mismatch = (m: string) => new MachineStateError('MACHINE_STATE_MISMATCH', m);
    if (typeof state !== 'object' || state === null) throw new DeviceStateError('machine', 'state must be an object');
    const s = state as Partial<Record<keyof MachineState, unknown>>;
    for (const key of ['config', 'cpu', 'clint', 'plic', 'uart', 'rtc', 'virtio', 'clock'] as const) {
      if (typeof s[key] !== 'object' || s[key] === null) throw new DeviceStateError('machine', `section ${key} is missing`);
    }
    const config = s.config as Partial<MachineState['config']>;
    const ramBytes = checkUint('machine', 'config.ramBytes', config.ramBytes, Number.MAX_SAFE_INTEGER);
    const sbi = checkBool('machine', 'config.sbiInMachine', config.sbiInMachine);
    if (ramBytes !== this.memory.ramSize) throw mismatch(`the state is of a machine with ${ramBytes} bytes of RAM, this one has ${this.memory.ramSize}`);
    if (sbi !== this.sbiInMachine) throw mismatch(`the state is of a ${sbi ? 'Linux (SBI)' : 'bare-metal'} machine, this one is ${this.sbiInMachine ? 'Linux (SBI)' : 'bare-metal'}`);
    const ticks = checkU64('machine', 'clock.ticks', (s.clock as { ticks?: unknown }).ticks);
    if (ticks > BigInt(Number.MAX_SAFE_INTEGER)) throw new DeviceStateError('machine', 'clock.ticks is out of range');
    const slots = checkArray('machine', 'virtio', s.virtio);
    const describe = (kind: unknown, id: unknown) => `virtio-${String(kind)} (device id ${String(id)})`;
    if (slots.length !== this.virtio.length) {
      throw mismatch(`the state has ${slots.length} virtio device(s), this machine has ${this.virtio.length}`);
    }
    slots.forEach((raw, i) => {
      if (typeof raw !== 'object' || raw === null) throw new DeviceStateError('machine', `virtio[${i}] must be an object`);
      const slot = raw as Partial<VirtioSlotState>;
      const dev = this.virtio[i]!.device;
      if (slot.slot !== i) throw new DeviceStateError('machine', `virtio[${i}] names slot ${String(slot.slot)}`);
      if (slot.kind !== dev.name || slot.deviceId !== dev.deviceId) {
        throw mismatch(`virtio slot ${i} holds ${describe(slot.kind, slot.deviceId)} in the state but ${describe(dev.name, dev.deviceId)} in this machine`);
      }
      if (typeof slot.transport !== 'object' || slot.transport === null) throw new DeviceStateError('machine', `virtio[${i}].transport is missing`);
    });
    const full = state as MachineState;
    this.trialRestore(full);
    return full;
  }

  /**
   * Restores a state taken by save(), all or nothing: it is checked first (checkState), then
   * applied component by component, and if a component still refuses its part the ones already
   * restored are put back. RAM is not part of it; when a virtio-blk request was in flight the
   * RAM must be loaded first, since the replay reads the request from guest memory.
   * Guest time is set to the saved ticks and stays frozen until run(), so the guest sees no
   * jump back and no burst of expired timers.
   */
  restore(state: MachineState): void {
    this.assertIdle('restore');
    const s = this.checkState(state);
    const before = this.capture();
    const steps: [apply: () => void, undo: () => void][] = [
      [() => this.vcpu.restore(s.cpu), () => this.vcpu.restore(before.cpu)],
      [() => this.clint.restore(s.clint), () => this.clint.restore(before.clint)],
      [() => this.plic.restore(s.plic), () => this.plic.restore(before.plic)],
      [() => this.uart.restore(s.uart), () => this.uart.restore(before.uart)],
      [() => this.rtc.restore(s.rtc), () => this.rtc.restore(before.rtc)],
      ...this.virtio.map((t, i): [() => void, () => void] => [() => t.restore(s.virtio[i]!.transport), () => t.restore(before.virtio[i]!.transport)]),
    ];
    let done = 0;
    try {
      for (const [apply] of steps) { apply(); done++; }
    } catch (e) {
      for (let i = done - 1; i >= 0; i--) {
        try { steps[i]![1](); } catch { /* the original error is the one worth reporting */ }
      }
      throw e;
    }
    // Set while thawed (set() does not move a frozen clock), then hold it until run().
    this.clock.resume();
    this.clock.set(Number(s.clock.ticks));
    this.clock.freeze();
    // The restored guest is live, whatever this machine was doing before.
    this.exit = undefined;
    this.pauseRequested = false;
  }

  private capture(): MachineState {
    return {
      config: { ramBytes: this.memory.ramSize, sbiInMachine: this.sbiInMachine },
      cpu: this.vcpu.save(),
      clint: this.clint.save(),
      plic: this.plic.save(),
      uart: this.uart.save(),
      rtc: this.rtc.save(),
      virtio: this.virtio.map((t, slot) => ({ slot, kind: t.device.name, deviceId: t.device.deviceId, transport: t.save() })),
      clock: { ticks: String(this.clock.ticks()) },
    };
  }

  /** Restores every section into scratch devices, so a bad value is found before this
   * machine is touched. */
  private trialRestore(s: MachineState): void {
    const noLine = { set: () => {} };
    parseVcpuState(s.cpu);
    new Clint([{ readTime: () => 0n, setMtimecmp: () => {}, setMsip: () => {} }]).restore(s.clint);
    new Plic([{ setExternalInterrupt: () => {} }], this.plic.sourceCount).restore(s.plic);
    new Uart16550({ write: () => {}, onInput: () => {} }, noLine).restore(s.uart);
    new GoldfishRtc(() => 0n, noLine).restore(s.rtc);
    this.virtio.forEach((t, i) => {
      const d = t.device;
      const stub: VirtioDevice = {
        name: d.name, deviceId: d.deviceId, features: d.features, queueSizes: d.queueSizes,
        readConfig: () => 0, writeConfig: () => {}, activate: () => {}, notify: () => {}, reset: () => {},
        save: () => ({}), restore: () => {},
      };
      new VirtioMmio(stub, this.memory, noLine, () => {}).restore(s.virtio[i]!.transport);
    });
  }

  private assertIdle(what: string): void {
    if (this.running) {
      throw new MachineStateError('MACHINE_RUNNING', `cannot ${what} a running machine: pause() it and wait for run() to return first`);
    }
  }

  /**
   * A throttle's stall, `ms` first: the event loop runs meanwhile (requests, timers, device
   * I/O). A debt longer than one stall (a slice that dirtied far over the budget) is paid in full
   * before the next slice: running one between two capped stalls would let the guest outrun its
   * budget.
   */
  private async payThrottle(ms: number): Promise<void> {
    let stall = ms;
    while (stall > 0 && !this.exit && !this.pauseRequested) {
      const t0 = performance.now();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => { this.wakeStall = undefined; resolve(); }, stall);
        this.wakeStall = () => { clearTimeout(timer); resolve(); };
      });
      const t1 = performance.now();
      this.throttle.stalled(t1 - t0);
      stall = this.throttle.afterSlice(t1, 0, 0);
    }
  }

  /** Sleeps until an interrupt is pending or the next timer is due; false when it returned at
   * once, without letting the event loop run. */
  private async sleepUntilInterrupt(): Promise<boolean> {
    const cpu = this.vcpu.exports;
    if (cpu.interruptPending()) return false;
    const deadline = BigInt.asUintN(64, cpu.nextTimerDeadline());
    let ms = deadline === (1n << 64n) - 1n ? MAX_SLEEP_MS : Math.min(MAX_SLEEP_MS, this.clock.msUntil(deadline));
    const alarm = this.rtc.nextDeadlineNs();
    if (alarm !== undefined) ms = Math.min(ms, Math.max(0, Number(alarm - wallClockNs()) / 1e6));
    if (ms <= 0) { this.rtc.poll(); return false; }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => { this.wake = undefined; resolve(); }, ms);
      this.wake = () => { clearTimeout(timer); resolve(); };
    });
    this.rtc.poll();
    return true;
  }
}
