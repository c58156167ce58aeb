// The host terminal as a guest console: raw keystrokes go to the guest, guest output to
// stdout. Ctrl-A is the escape key as in QEMU: Ctrl-A X quits, Ctrl-A Ctrl-A sends Ctrl-A.

import type { ConsoleBackend } from '../machine/devices/types.js';

const CTRL_A = 0x01;

export class TerminalConsole implements ConsoleBackend {
  private escaped = false;
  private listener: ((bytes: Uint8Array) => void) | undefined;
  private readonly onData = (chunk: Buffer) => this.input(chunk);

  constructor(private readonly onQuit: () => void) {
    if (process.stdin.isTTY) process.stdin.setRawMode(true);
    process.stdin.on('data', this.onData);
    process.stdin.resume();
  }

  write(bytes: Uint8Array): void {
    process.stdout.write(bytes);
  }

  onInput(listener: (bytes: Uint8Array) => void): void {
    this.listener = listener;
  }

  private input(chunk: Buffer): void {
    const out: number[] = [];
    for (const b of chunk) {
      if (this.escaped) {
        this.escaped = false;
        if (b === 0x78 || b === 0x58) { this.onQuit(); return; } // x / X
        if (b === CTRL_A) out.push(CTRL_A);
        continue;
      }
      if (b === CTRL_A) { this.escaped = true; continue; }
      out.push(b);
    }
    if (out.length > 0) this.listener?.(Uint8Array.from(out));
  }

  dispose(): void {
    process.stdin.off('data', this.onData);
    if (process.stdin.isTTY) process.stdin.setRawMode(false);
    process.stdin.pause();
  }
}
