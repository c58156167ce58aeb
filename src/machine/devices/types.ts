// Contracts between the machine's bus and its devices. Devices never see the host directly:
// they get backends (console, later net and block) and interrupt lines.

export type AccessSize = 1 | 2 | 4;

/** A device mapped into guest-physical address space. Offsets are relative to its base.
 * 8-byte guest accesses arrive as two 4-byte accesses (low half first). */
export interface MmioDevice {
  readonly name: string;
  read(offset: number, size: AccessSize): number;
  write(offset: number, size: AccessSize, value: number): void;
}

/** A level-triggered interrupt wire, e.g. from a device into the PLIC. */
export interface IrqLine {
  set(level: boolean): void;
}

/** The console backend a UART front-end talks to (a terminal, a pipe, a test buffer). */
export interface ConsoleBackend {
  write(bytes: Uint8Array): void;
  /** Registers the receiver for bytes typed by the user; the UART buffers them. */
  onInput(listener: (bytes: Uint8Array) => void): void;
}

/** What the interrupt controller drives on the hart: external interrupt pending bits. */
export interface HartInterruptSink {
  setExternalInterrupt(mode: 'M' | 'S', level: boolean): void;
}
