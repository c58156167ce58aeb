// Shared test doubles for machine tests.
import type { ConsoleBackend, HartInterruptSink, IrqLine } from '../../src/machine/devices/types.js';

export class FakeConsole implements ConsoleBackend {
  readonly output: number[] = [];
  private listener: ((bytes: Uint8Array) => void) | undefined;
  write(bytes: Uint8Array): void { this.output.push(...bytes); }
  onInput(listener: (bytes: Uint8Array) => void): void { this.listener = listener; }
  type(text: string | Uint8Array): void {
    const bytes = typeof text === 'string' ? new TextEncoder().encode(text) : text;
    if (!this.listener) throw new Error('no input listener registered');
    this.listener(bytes);
  }
  text(): string { return new TextDecoder().decode(Uint8Array.from(this.output)); }
}

export class FakeIrq implements IrqLine {
  level = false;
  changes = 0;
  set(level: boolean): void { this.level = level; this.changes++; }
}

export class FakeHartSink implements HartInterruptSink {
  M = false;
  S = false;
  setExternalInterrupt(mode: 'M' | 'S', level: boolean): void { this[mode] = level; }
}
