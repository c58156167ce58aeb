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
  /** Absolute offset of `window[0]` in the output. */
  windowStart: number;
  /** The not-yet-ruled-out tail of the output this waiter searches. */
  window: string;
  readonly resolve: (m: RegExpExecArray) => void;
}

/** Patterns are short markers. Each waiter searches only new output plus this much of the
 * old (a match may straddle two writes), so long outputs are not searched quadratically. */
const RESCAN_CHARS = 256;

/** Guest markers (see src/guest/init.sh). */
export const GUEST_READY = 'ferry-guest: ready';
export const GUEST_PROMPT = 'ferry# ';

export class ConsoleDriver implements ConsoleBackend {
  /** Everything the guest printed, in pieces; joined on demand (appending to one string
   * and searching it after every byte would flatten it every time). */
  private chunks: string[] = [];
  private total = 0;
  private listener: ((bytes: Uint8Array) => void) | undefined;
  private waiters: Waiter[] = [];
  private readonly decoder = new TextDecoder();
  /** Also forward guest output here (e.g. the terminal), if set. */
  echo: ((bytes: Uint8Array) => void) | undefined;

  write(bytes: Uint8Array): void {
    const piece = this.decoder.decode(bytes, { stream: true });
    this.chunks.push(piece);
    this.total += piece.length;
    this.echo?.(bytes);
    if (this.waiters.length === 0) return;
    this.waiters = this.waiters.filter((w) => {
      w.window += piece;
      return !this.search(w);
    });
  }

  /** Searches a waiter's window; resolves it and returns true on a match. */
  private search(w: Waiter): boolean {
    w.pattern.lastIndex = 0;
    const m = w.pattern.exec(w.window);
    if (m) {
      m.index += w.windowStart;
      w.resolve(m);
      return true;
    }
    if (w.window.length > RESCAN_CHARS) {
      const drop = w.window.length - RESCAN_CHARS;
      w.window = w.window.slice(drop);
      w.windowStart += drop;
    }
    return false;
  }

  onInput(listener: (bytes: Uint8Array) => void): void {
    this.listener = listener;
  }

  get output(): string {
    if (this.chunks.length > 1) this.chunks = [this.chunks.join('')];
    return this.chunks[0] ?? '';
  }
  get length(): number { return this.total; }

  send(text: string): void {
    this.listener?.(new TextEncoder().encode(text));
  }

  /** Resolves with the first match of `pattern` in output from offset `from` on. */
  waitFor(pattern: RegExp | string, timeoutMs: number, from = 0): Promise<RegExpExecArray> {
    const re = typeof pattern === 'string' ? new RegExp(escapeRegExp(pattern), 'g') : new RegExp(pattern.source, pattern.flags.includes('g') ? pattern.flags : pattern.flags + 'g');
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new ConsoleTimeoutError(String(pattern), timeoutMs, this.output.slice(-2000)));
      }, timeoutMs);
      const waiter: Waiter = {
        pattern: re, windowStart: from, window: this.output.slice(from),
        resolve: (m) => { clearTimeout(timer); resolve(m); },
      };
      if (!this.search(waiter)) this.waiters.push(waiter);
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
    const from = this.total;
    this.send(`echo '__FERRY_${id}'_B__; ${command}; echo '__FERRY_${id}'_E__ $?\n`);
    const b = await this.waitFor(new RegExp(`${begin}\\r?\\n`), timeoutMs, from);
    const e = await this.waitFor(new RegExp(`${end} (\\d+)`), timeoutMs, b.index + b[0].length);
    const cleaned = this.output.slice(b.index + b[0].length, e.index).replace(/\r/g, '');
    return { output: cleaned, status: Number(e[1]) };
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
