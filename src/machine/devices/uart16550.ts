// NS16550A front-end. Transmission is instantaneous (bytes go straight to the backend), so
// THR and the transmitter are always empty from the guest's point of view; what matters is
// the interrupt bookkeeping Linux's 8250 driver relies on.

import type { AccessSize, ConsoleBackend, IrqLine, MmioDevice } from './types.js';
import { checkArray, checkBool, checkUint } from '../state-check.js';
import { DeviceStateError } from './errors.js';

const REG_RBR_THR_DLL = 0;
const REG_IER_DLM = 1;
const REG_IIR_FCR = 2;
const REG_LCR = 3;
const REG_MCR = 4;
const REG_LSR = 5;
const REG_MSR = 6;
const REG_SCR = 7;

const IER_RDI = 0x01;
const IER_THRI = 0x02;
const IER_RLSI = 0x04;
const IER_MSI = 0x08;

const IIR_NO_INT = 0x01;
const IIR_MSI = 0x00;
const IIR_THRI = 0x02;
const IIR_RDI = 0x04;
const IIR_RLSI = 0x06;
const IIR_RX_TIMEOUT = 0x0c;
const IIR_FIFO_ENABLED = 0xc0;

const FCR_ENABLE = 0x01;
const FCR_CLEAR_RX = 0x02;

const LCR_DLAB = 0x80;

const MCR_DTR = 0x01;
const MCR_RTS = 0x02;
const MCR_OUT1 = 0x04;
const MCR_OUT2 = 0x08;
const MCR_LOOP = 0x10;

const LSR_DR = 0x01;
const LSR_OE = 0x02;
const LSR_BI = 0x10;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;

const MSR_DCTS = 0x01;
const MSR_DDSR = 0x02;
const MSR_TERI = 0x04;
const MSR_DDCD = 0x08;
const MSR_CTS = 0x10;
const MSR_DSR = 0x20;
const MSR_RI = 0x40;
const MSR_DCD = 0x80;

const RX_TRIGGER_LEVELS = [1, 4, 8, 14] as const;

/** Bytes the UART holds for the guest. A real 16550A has 16; a pasted command line would
 * overflow that long before the guest's IRQ handler runs (the vCPU runs in slices), and the
 * host cannot apply flow control to a terminal. 4 KiB absorbs a paste while still bounding
 * the snapshot; beyond it bytes are dropped and OE is reported, as hardware would. */
export const UART_RX_CAPACITY = 4096;

export interface UartState {
  ier: number;
  lcr: number;
  mcr: number;
  scr: number;
  dll: number;
  dlm: number;
  fifoEnabled: boolean;
  /** FCR bits 7:6, selects the RX trigger level. */
  rxTriggerSelect: number;
  /** Sticky LSR error bits (OE, BI) until LSR is read. */
  lsrErrors: number;
  /** MSR delta bits (3:0) until MSR is read. */
  msrDeltas: number;
  thrInterruptPending: boolean;
  rxFifo: number[];
}

export class Uart16550 implements MmioDevice {
  readonly name: string;
  private ier = 0;
  private lcr = 0;
  private mcr = 0;
  private scr = 0;
  private dll = 0;
  private dlm = 0;
  private fifoEnabled = false;
  private rxTriggerSelect = 0;
  private lsrErrors = 0;
  private msrDeltas = 0;
  private thrInterruptPending = false;
  private rx: number[] = [];
  private rxHead = 0;
  private irqLevel = false;

  constructor(private readonly backend: ConsoleBackend, private readonly irq: IrqLine, name = 'uart16550') {
    this.name = name;
    backend.onInput((bytes) => this.receive(bytes));
  }

  /** Bytes arriving on the serial input (from the backend, or looped back). */
  receive(bytes: Uint8Array): void {
    for (const b of bytes) {
      if (this.rxCount() >= UART_RX_CAPACITY) {
        this.lsrErrors |= LSR_OE;
        break;
      }
      this.rx.push(b);
    }
    this.updateIrq();
  }

  read(offset: number, _size: AccessSize): number {
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    let v = 0;
    switch (offset) {
      case REG_RBR_THR_DLL:
        v = dlab ? this.dll : this.popRx();
        break;
      case REG_IER_DLM:
        v = dlab ? this.dlm : this.ier;
        break;
      case REG_IIR_FCR:
        v = this.iir();
        // Reading IIR acknowledges a THRE interrupt only when it is what IIR reports.
        if ((v & 0x0f) === IIR_THRI) this.thrInterruptPending = false;
        break;
      case REG_LCR: v = this.lcr; break;
      case REG_MCR: v = this.mcr; break;
      case REG_LSR:
        v = this.lsr();
        this.lsrErrors = 0;
        break;
      case REG_MSR:
        v = this.modemStatus() | this.msrDeltas;
        this.msrDeltas = 0;
        break;
      case REG_SCR: v = this.scr; break;
      default: v = 0;
    }
    this.updateIrq();
    return v;
  }

  write(offset: number, _size: AccessSize, value: number): void {
    const v = value & 0xff;
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (offset) {
      case REG_RBR_THR_DLL:
        if (dlab) this.dll = v;
        else this.transmit(v);
        break;
      case REG_IER_DLM:
        if (dlab) this.dlm = v;
        else this.writeIer(v);
        break;
      case REG_IIR_FCR: this.writeFcr(v); break;
      case REG_LCR: this.lcr = v; break;
      case REG_MCR: this.writeMcr(v); break;
      case REG_SCR: this.scr = v; break;
      default: break; // LSR/MSR writes are factory-test only on real parts.
    }
    this.updateIrq();
  }

  save(): UartState {
    return {
      ier: this.ier, lcr: this.lcr, mcr: this.mcr, scr: this.scr, dll: this.dll, dlm: this.dlm,
      fifoEnabled: this.fifoEnabled, rxTriggerSelect: this.rxTriggerSelect,
      lsrErrors: this.lsrErrors, msrDeltas: this.msrDeltas,
      thrInterruptPending: this.thrInterruptPending,
      rxFifo: this.rx.slice(this.rxHead),
    };
  }

  restore(s: UartState): void {
    const n = this.name;
    const fifo = checkArray(n, 'rxFifo', s.rxFifo).map((b, i) => checkUint(n, `rxFifo[${i}]`, b, 0xff));
    if (fifo.length > UART_RX_CAPACITY) throw new DeviceStateError(n, 'rxFifo exceeds capacity');
    this.ier = checkUint(n, 'ier', s.ier, 0x0f);
    this.lcr = checkUint(n, 'lcr', s.lcr, 0xff);
    this.mcr = checkUint(n, 'mcr', s.mcr, 0x1f);
    this.scr = checkUint(n, 'scr', s.scr, 0xff);
    this.dll = checkUint(n, 'dll', s.dll, 0xff);
    this.dlm = checkUint(n, 'dlm', s.dlm, 0xff);
    this.fifoEnabled = checkBool(n, 'fifoEnabled', s.fifoEnabled);
    this.rxTriggerSelect = checkUint(n, 'rxTriggerSelect', s.rxTriggerSelect, 3);
    this.lsrErrors = checkUint(n, 'lsrErrors', s.lsrErrors, 0xff) & (LSR_OE | LSR_BI);
    this.msrDeltas = checkUint(n, 'msrDeltas', s.msrDeltas, 0x0f);
    this.thrInterruptPending = checkBool(n, 'thrInterruptPending', s.thrInterruptPending);
    this.rx = fifo;
    this.rxHead = 0;
    this.updateIrq(true);
  }

  private rxCount(): number { return this.rx.length - this.rxHead; }

  private popRx(): number {
    if (this.rxCount() === 0) return 0;
    const b = this.rx[this.rxHead++]!;
    // Compact lazily so a steady stream costs O(1) per byte.
    if (this.rxHead > 1024 && this.rxHead * 2 > this.rx.length) {
      this.rx = this.rx.slice(this.rxHead);
      this.rxHead = 0;
    }
    return b;
  }

  private transmit(byte: number): void {
    if (this.mcr & MCR_LOOP) this.receive(Uint8Array.of(byte));
    else this.backend.write(Uint8Array.of(byte));
    // The byte left THR at once, so THR is empty again: that is a fresh THRE event.
    this.thrInterruptPending = true;
  }

  private writeIer(v: number): void {
    const old = this.ier;
    this.ier = v & 0x0f; // 16550A implements bits 3:0; the 8250 probe checks the rest read 0
    if ((this.ier & IER_THRI) && !(old & IER_THRI)) this.thrInterruptPending = true;
  }

  private writeFcr(v: number): void {
    const enable = (v & FCR_ENABLE) !== 0;
    // Toggling FIFO mode resets both FIFOs on the real part.
    if (enable !== this.fifoEnabled || (v & FCR_CLEAR_RX)) this.clearRx();
    this.fifoEnabled = enable;
    if (enable) this.rxTriggerSelect = v >>> 6;
  }

  private clearRx(): void {
    this.rx = [];
    this.rxHead = 0;
  }

  private writeMcr(v: number): void {
    const before = this.modemStatus();
    this.mcr = v & 0x1f;
    const after = this.modemStatus();
    const changed = before ^ after;
    if (changed & MSR_CTS) this.msrDeltas |= MSR_DCTS;
    if (changed & MSR_DSR) this.msrDeltas |= MSR_DDSR;
    if (changed & MSR_DCD) this.msrDeltas |= MSR_DDCD;
    if ((before & MSR_RI) && !(after & MSR_RI)) this.msrDeltas |= MSR_TERI;
  }

  /** MSR bits 7:4. Outside loopback the virtual cable is always connected (CTS, DSR, DCD). */
  private modemStatus(): number {
    if (!(this.mcr & MCR_LOOP)) return MSR_CTS | MSR_DSR | MSR_DCD;
    let s = 0;
    if (this.mcr & MCR_RTS) s |= MSR_CTS;
    if (this.mcr & MCR_DTR) s |= MSR_DSR;
    if (this.mcr & MCR_OUT1) s |= MSR_RI;
    if (this.mcr & MCR_OUT2) s |= MSR_DCD;
    return s;
  }

  private lsr(): number {
    let v = LSR_THRE | LSR_TEMT | this.lsrErrors;
    if (this.rxCount() > 0) v |= LSR_DR;
    return v;
  }

  private iir(): number {
    return (this.iirSource() ?? IIR_NO_INT) | (this.fifoEnabled ? IIR_FIFO_ENABLED : 0);
  }

  /** Highest-priority pending interrupt identification, or undefined if none. */
  private iirSource(): number | undefined {
    if ((this.ier & IER_RLSI) && this.lsrErrors) return IIR_RLSI;
    if ((this.ier & IER_RDI) && this.rxCount() > 0) {
      // There is no character clock, so data below the trigger level is reported as a
      // character timeout straight away instead of after four idle character times.
      const trigger = this.fifoEnabled ? RX_TRIGGER_LEVELS[this.rxTriggerSelect]! : 1;
      return this.rxCount() >= trigger ? IIR_RDI : IIR_RX_TIMEOUT;
    }
    if ((this.ier & IER_THRI) && this.thrInterruptPending) return IIR_THRI;
    if ((this.ier & IER_MSI) && this.msrDeltas) return IIR_MSI;
    return undefined;
  }

  private updateIrq(force = false): void {
    // OUT2 does not gate the line: on the virt board the UART is wired straight to the PLIC.
    const level = this.iirSource() !== undefined;
    if (force || level !== this.irqLevel) {
      this.irqLevel = level;
      this.irq.set(level);
    }
  }
}
