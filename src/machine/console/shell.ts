// Drives the guest's serial console programmatically: waits for output patterns and types
// commands. `ferry run --exec`, tests and benchmarks use it to talk to the guest shell.

import type { ConsoleBackend } from '../devices/types.js';
import { FerryError } from '../../errors.js';

export class ConsoleTimeoutError extends FerryError {
  constructor(what: string, ms: number, tail: string) {
    super('CONSOLE_TIMEOUT', `timed out after ${ms} ms waiting for ${what}; console ended with:\n${tail}`);
  }
}

interface Waiter {
  readonly pattern: RegExp;
  readonly from: number;
  readonly resolve: (m: RegExpExecArray) => void;
}

/** Guest markers (see src/guest/init.sh). */
export const GUEST_READY = 'ferry-guest: ready';
export const GUEST_PROMPT = 'ferry# ';

export class ConsoleDriver implements ConsoleBackend {
  /** Everything the guest printed, as text. */
  private text = '';
  private listener: ((bytes: Uint8Array) => void) | undefined;
  private waiters: Waiter[] = [];
  private readonly decoder = new TextDecoder();
  /** Also forward guest output here (e.g. the terminal), if set. */
  echo: ((bytes: Uint8Array) => void) | undefined;

  write(bytes: Uint8Array): void {
    this.text += this.decoder.decode(bytes, { stream: true });
    this.echo?.(bytes);
    if (this.waiters.length === 0) return;
    this.waiters = this.waiters.filter((w) => {
      w.pattern.lastIndex = w.from;
      const m = w.pattern.exec(this.text);
      if (m) w.resolve(m);
      return !m;
    });
  }

  onInput(listener: (bytes: Uint8Array) => void): void {
    this.listener = listener;
  }

  get output(): string { return this.text; }
  get length(): number { return this.text.length; }

  send(text: string): void {
    this.listener?.(new TextEncoder().encode(text));
  }

  /** Resolves with the first match of `pattern` in output from offset `from` on. */
  waitFor(pattern: RegExp | string, timeoutMs: number, from = 0): Promise<RegExpExecArray> {
    const re = typeof pattern === 'string' ? new RegExp(escapeRegExp(pattern), 'g') : new RegExp(pattern.source, pattern.flags.includes('g') ? pattern.flags : pattern.flags + 'g');
    re.lastIndex = from;
    const now = re.exec(this.text);
    if (now) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new ConsoleTimeoutError(String(pattern), timeoutMs, this.text.slice(-2000)));
      }, timeoutMs);
      const waiter: Waiter = { pattern: re, from, resolve: (m) => { clearTimeout(timer); resolve(m); } };
      this.waiters.push(waiter);
    });
  }

  /**
   * Runs a shell command at the guest prompt and returns its output and exit status. The
   * markers are quoted in the typed line, so the terminal's echo of the command cannot be
   * mistaken for the command's own output.
   */
  async exec(command: string, timeoutMs: number): Promise<{ output: string; status: number }> {
    const id = Math.random().toString(36).slice(2, 8);
    const begin = `__FERRY_${id}_B__`;
    const end = `__FERRY_${id}_E__`;
    const from = this.text.length;
    this.send(`echo '__FERRY_${id}'_B__; ${command}; echo '__FERRY_${id}'_E__ $?\n`);
    const b = await this.waitFor(new RegExp(`${begin}\\r?\\n`), timeoutMs, from);
    const e = await this.waitFor(new RegExp(`${end} (\\d+)`), timeoutMs, b.index + b[0].length);
    const cleaned = this.text.slice(b.index + b[0].length, e.index).replace(/\r/g, '');
    return { output: cleaned, status: Number(e[1]) };
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
