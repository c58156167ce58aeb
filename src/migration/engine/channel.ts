// One migration connection as messages: frames out with backpressure, frames in as a queue the
// engine awaits one at a time. An Abort or Cancel from the peer, a protocol error, the socket
// closing or a timeout fails the channel once; every pending and later call then rejects with
// that same error, so the engine has one place to learn the migration is over.

import type { Socket } from 'node:net';
import { FrameDecoder, FrameEncoder, type DecoderOptions, type CodecOptions } from '../protocol/codec.js';
import { MigrationProtocolError } from '../protocol/errors.js';
import type { ProtocolMessage } from '../protocol/messages.js';
import { MigrationError, abortName } from '../errors.js';

type Kind = ProtocolMessage['type'];
type Of<K extends Kind> = Extract<ProtocolMessage, { type: K }>;

export interface ChannelOptions {
  readonly codec?: CodecOptions & DecoderOptions;
  /** A write the socket has not taken within this long means the link is dead. */
  readonly stallTimeoutMs?: number;
}

export class MigrationChannel {
  readonly encoder: FrameEncoder;
  private readonly decoder: FrameDecoder;
  private readonly inbox: ProtocolMessage[] = [];
  private waiter: { resolve: () => void } | undefined;
  private failure: Error | undefined;
  private readonly failListeners = new Set<(e: Error) => void>();
  private readonly stallTimeoutMs: number;
  /** Bytes handed to the socket, framing included: what crossed (or is crossing) the wire. */
  bytesOut = 0;
  bytesIn = 0;

  constructor(readonly socket: Socket, opts: ChannelOptions = {}) {
    this.encoder = new FrameEncoder(opts.codec);
    this.decoder = new FrameDecoder(opts.codec);
    this.stallTimeoutMs = opts.stallTimeoutMs ?? 15_000;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => {
      try { this.decoder.end(); } catch (e) { this.fail(asProtocolError(e)); return; }
      this.fail(new MigrationError('MIGRATION_CONNECTION_LOST', 'the peer closed the connection'));
    });
    socket.on('error', (e) => this.fail(new MigrationError('MIGRATION_CONNECTION_LOST', `connection failed: ${e.message}`, { cause: e })));
    socket.on('close', () => this.fail(new MigrationError('MIGRATION_CONNECTION_LOST', 'the connection closed')));
  }

  get failed(): Error | undefined { return this.failure; }

  /** Called once, with the error that ended the channel. */
  onFail(listener: (e: Error) => void): () => void {
    if (this.failure) listener(this.failure);
    else this.failListeners.add(listener);
    return () => { this.failListeners.delete(listener); };
  }

  /** Sends one message; resolves once the socket has taken it (waits out backpressure). */
  send(message: ProtocolMessage): Promise<void> {
    this.throwIfFailed();
    return this.write(this.encoder.encode(message));
  }

  /** Sends an encoded frame (the sender encodes page batches itself to know their size). */
  async write(frame: Buffer): Promise<void> {
    this.throwIfFailed();
    this.bytesOut += frame.length;
    if (this.socket.write(frame)) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const err = new MigrationError('MIGRATION_TIMEOUT', `the link stalled: nothing was sent for ${this.stallTimeoutMs} ms`);
        this.fail(err);
      }, this.stallTimeoutMs);
      const off = this.onFail((e) => { clearTimeout(timer); reject(e); });
      this.socket.once('drain', () => { clearTimeout(timer); off(); resolve(); });
    });
    this.throwIfFailed();
  }

  /** The next message, which must be of one of `kinds`; anything else is a protocol error. */
  async expect<K extends Kind>(kinds: readonly K[], timeoutMs: number, what: string): Promise<Of<K>> {
    const m = await this.next(timeoutMs, what);
    if (!(kinds as readonly Kind[]).includes(m.type)) {
      const err = new MigrationError('MIGRATION_PROTOCOL', `expected ${kinds.join(' or ')} (${what}), got ${m.type}`);
      this.fail(err);
      throw err;
    }
    return m as Of<K>;
  }

  /** The next message from the peer (Abort and Cancel fail the channel instead). */
  async next(timeoutMs: number, what: string): Promise<ProtocolMessage> {
    for (;;) {
      const m = this.inbox.shift();
      if (m) return m;
      this.throwIfFailed();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.fail(new MigrationError('MIGRATION_TIMEOUT', `no answer from the peer within ${timeoutMs} ms (${what})`));
          resolve();
        }, timeoutMs);
        this.waiter = { resolve: () => { clearTimeout(timer); resolve(); } };
      });
      this.waiter = undefined;
    }
  }

  /** Messages already received, without waiting (the sender polls for RoundAcks). */
  drain(): ProtocolMessage[] {
    this.throwIfFailed();
    return this.inbox.splice(0);
  }

  /** Ends the channel with `error`: wakes every waiter. Idempotent. */
  fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    this.wake();
    for (const l of this.failListeners) l(error);
    this.failListeners.clear();
  }

  /** Tells the peer why we stop (best effort: the link may be what failed), then closes. */
  async abort(code: number, message: string): Promise<void> {
    if (!this.socket.destroyed && this.socket.writable) {
      try {
        const frame = this.encoder.encode({ type: 'Abort', code, message: message.slice(0, 1000) });
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 1000);
          this.socket.write(frame, () => { clearTimeout(timer); resolve(); });
        });
      } catch { /* closing anyway */ }
    }
    this.close();
  }

  close(): void {
    this.fail(new MigrationError('MIGRATION_CONNECTION_LOST', 'the connection was closed by this side'));
    this.socket.end();
    const s = this.socket;
    setTimeout(() => s.destroy(), 1000).unref();
  }

  private onData(chunk: Buffer): void {
    this.bytesIn += chunk.length;
    if (this.failure) return;
    try {
      this.decoder.push(chunk, (m) => {
        if (m.type === 'Abort') {
          this.fail(new MigrationError(m.code === 6 ? 'MIGRATION_CANCELLED' : 'MIGRATION_PEER_ABORTED', `the peer aborted (${abortName(m.code)}): ${m.message}`, { peerCode: m.code }));
        } else if (m.type === 'Cancel') {
          this.fail(new MigrationError('MIGRATION_CANCELLED', `the peer cancelled: ${m.reason}`));
        } else if (!this.failure) {
          this.inbox.push(m);
        }
      });
    } catch (e) {
      this.fail(asProtocolError(e));
    }
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.resolve();
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }
}

function asProtocolError(e: unknown): MigrationError {
  const message = e instanceof Error ? e.message : String(e);
  const code = e instanceof MigrationProtocolError ? ` [${e.code}]` : '';
  return new MigrationError('MIGRATION_PROTOCOL', `bad stream from the peer: ${message}${code}`, { cause: e });
}
