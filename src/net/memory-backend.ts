// Two NetBackends joined by a virtual cable, for tests that need a network without a TAP
// (and without root): what one end sends, the other end receives.
import type { NetBackend } from './backend.js';

export interface MemoryNetStats {
  sent: number;
  received: number;
  /** Frames that reached this end before it had a receiver, or after either end closed. */
  dropped: number;
}

export class MemoryNetBackend implements NetBackend {
  readonly stats: MemoryNetStats = { sent: 0, received: 0, dropped: 0 };
  private peer: MemoryNetBackend | undefined;
  private listener: ((frame: Uint8Array) => void) | undefined;
  private closed = false;

  private constructor() {}

  /** A connected pair. */
  static pair(): [MemoryNetBackend, MemoryNetBackend] {
    const a = new MemoryNetBackend();
    const b = new MemoryNetBackend();
    a.peer = b;
    b.peer = a;
    return [a, b];
  }

  get isClosed(): boolean {
    return this.closed;
  }

  send(frame: Uint8Array): void {
    const peer = this.peer;
    if (this.closed || !peer || peer.closed) {
      this.stats.dropped++;
      return;
    }
    this.stats.sent++;
    // Copied because a device may reuse its transmit buffer as soon as send() returns, as it
    // may with a TAP; delivered on a later tick because a real network is never re-entrant.
    const copy = frame.slice();
    setImmediate(() => peer.deliver(copy));
  }

  onReceive(listener: (frame: Uint8Array) => void): void {
    this.listener = listener;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listener = undefined;
  }

  private deliver(frame: Uint8Array): void {
    if (this.closed || !this.listener) {
      this.stats.dropped++;
      return;
    }
    this.stats.received++;
    this.listener(frame);
  }
}
