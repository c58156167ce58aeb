// The machine: one hart, the virt board's devices, guest RAM, and the loop that runs the
// hart in bounded slices. Slices end on a budget, on WFI (the host sleeps until the next
// timer deadline or a device interrupt), on an SBI call, or on a request from the host;
// pause, snapshot and migration act between slices.

import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { Vcpu } from '../cpu/vcpu.js';
import { ExitReason } from '../cpu/exports.js';
import { GuestMemory } from '../memory/guest-memory.js';
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
import { VirtioMmio } from '../devices/virtio/mmio.js';
import type { VirtioDevice } from '../devices/virtio/device.js';

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
const MAX_SLEEP_MS = 1000;

/** The RTC's time source: host wall-clock time in ns since the epoch. */
function wallClockNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

export type BootSpec =
  | { readonly kind: 'linux'; readonly kernel: Uint8Array; readonly initrd?: Uint8Array; readonly cmdline: string }
  | { readonly kind: 'bare'; readonly elf: Uint8Array };

export interface MachineOptions {
  readonly ramBytes: number;
  readonly console: ConsoleBackend;
  readonly boot: BootSpec;
  /** virtio devices, placed in virtio-mmio slots 0, 1, ... in this order. Built against the
   * machine's guest memory, hence a factory. */
  readonly virtio?: (memory: GuestMemory) => VirtioDevice[];
}

export type MachineExit =
  | { readonly kind: 'poweroff' }
  | { readonly kind: 'reboot' }
  | { readonly kind: 'fail'; readonly code: number }
  | { readonly kind: 'fatal'; readonly cause: bigint; readonly pc: bigint }
  | { readonly kind: 'stopped' };

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
  private running = false;

  constructor(opts: MachineOptions) {
    const sbiInMachine = opts.boot.kind === 'linux';
    this.vcpu = new Vcpu({
      ramBytes: opts.ramBytes,
      sbiInMachine,
      host: {
        hostTime: () => this.clock.ticks(),
        mmioRead: (pa, size) => this.bus.read(pa, size as AccessSize) ?? -1,
        mmioWrite: (pa, size, value) => (this.bus.write(pa, size as AccessSize, value) ? 0 : 1),
      },
    });
    this.memory = new GuestMemory(this.vcpu.memory.buffer, this.vcpu.layout);
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
  }

  /** Wakes the loop from a WFI sleep (a device raised an interrupt). */
  private kick(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Asks the loop to stop at the next slice boundary. */
  stop(): void {
    this.finish({ kind: 'stopped' });
  }

  /** Runs the hart until the guest powers off, fails, or stop() is called. */
  async run(): Promise<MachineExit> {
    if (this.running) throw new FerryError('MACHINE_BUSY', 'machine is already running');
    this.running = true;
    try {
      let lastYield = performance.now();
      while (!this.exit) {
        const reason = this.vcpu.run(SLICE);
        switch (reason) {
          case ExitReason.Sbi: {
            const outcome = this.sbi!.handleEcall();
            this.vcpu.pc = this.vcpu.pc + 4n;
            if (outcome.kind !== 'continue') this.finish({ kind: outcome.kind === 'shutdown' ? 'poweroff' : 'reboot' });
            break;
          }
          case ExitReason.Wfi:
            await this.sleepUntilInterrupt();
            lastYield = performance.now();
            continue;
          case ExitReason.Fatal:
            this.finish({ kind: 'fatal', cause: BigInt.asUintN(64, this.vcpu.exports.getFatalCause()), pc: this.vcpu.pc });
            break;
          default:
            break;
        }
        this.rtc.poll();
        const now = performance.now();
        if (now - lastYield >= YIELD_MS) {
          await yieldToEventLoop();
          lastYield = performance.now();
        }
      }
      return this.exit;
    } finally {
      this.running = false;
    }
  }

  private async sleepUntilInterrupt(): Promise<void> {
    const cpu = this.vcpu.exports;
    if (cpu.interruptPending()) return;
    const deadline = BigInt.asUintN(64, cpu.nextTimerDeadline());
    let ms = deadline === (1n << 64n) - 1n ? MAX_SLEEP_MS : Math.min(MAX_SLEEP_MS, this.clock.msUntil(deadline));
    const alarm = this.rtc.nextDeadlineNs();
    if (alarm !== undefined) ms = Math.min(ms, Math.max(0, Number(alarm - wallClockNs()) / 1e6));
    if (ms <= 0) { this.rtc.poll(); return; }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => { this.wake = undefined; resolve(); }, ms);
      this.wake = () => { clearTimeout(timer); resolve(); };
    });
    this.rtc.poll();
  }
}
