// BlockBackend over an NBD export. One connection at a time; when it fails, everything in flight
// and everything submitted until a new connection is up fails fast with NBD_DISCONNECTED (the
// guest sees an I/O error and may retry), while a background loop reconnects with bounded
// backoff. Nothing is resent on a new connection: a request's fate on a dead connection is
// unknown, and only the guest can decide whether repeating it is right.
import type { Socket } from 'node:net';
import type { BlockBackend } from '../backend.js';
import {
  BlockAlignmentError, BlockClosedError, BlockImageError, BlockIoError, BlockRangeError, BlockReadOnlyError,
  NbdDisconnectedError, NbdHandshakeError, NbdTimeoutError, NbdWritesMaybeLostError,
} from '../errors.js';
import { NbdConnection, type ConnectionOptions } from './connection.js';
import {
  CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE, DEFAULT_MAX_BLOCK, TFLAG_READ_ONLY, TFLAG_SEND_FLUSH, TFLAG_SEND_TRIM,
} from './protocol.js';

export interface NbdBackendOptions {
  host: string;
  port: number;
  exportName?: string;
  /** Bound on connecting plus negotiating, for the first connection and every reconnect. Default 10 s. */
  timeoutMs?: number;
  /**
   * With requests outstanding and no reply bytes for this long, the connection is declared dead
   * (NBD_TIMEOUT) and replaced. Default 30 s; 0 disables (a stalled server then stalls I/O).
   */
  requestTimeoutMs?: number;
  /** Reconnect after a lost connection. Default true. */
  reconnect?: boolean;
  /** First reconnect delay, doubled per failed attempt up to maxReconnectDelayMs. Default 100 ms. */
  reconnectDelayMs?: number;
  /** Default 2 s. */
  maxReconnectDelayMs?: number;
  /** Upper bound on one READ/WRITE request; larger calls are split. Default and cap 32 MiB. */
  maxRequestBytes?: number;
  /**
   * When a connection is lost while writes acknowledged on it were not yet covered by a
   * completed flush, the next flush() fails with NBD_WRITES_MAYBE_LOST (once), because a server
   * with a volatile cache may have dropped them. Default true; only meaningful when the
   * server advertises NBD_FLAG_SEND_FLUSH.
   */
  failFlushAfterLostWrites?: boolean;
}

export type NbdState = 'connected' | 'reconnecting' | 'closed';

/** Trims are not bound by the data block size; this only keeps lengths inside 32 bits. */
const MAX_TRIM = 1 << 30;

export class NbdBackend implements BlockBackend {
  readonly size: number;
  readonly readOnly: boolean;
  readonly canDiscard: boolean;
  /** Whether the server has a cache that NBD_CMD_FLUSH commits (NBD_FLAG_SEND_FLUSH). */
  readonly flushNeeded: boolean;
  /** The server's minimum block size; requests must be aligned to it. */
  readonly minBlock: number;
  /** Largest single READ/WRITE sent; bigger calls are split. */
  readonly maxRequestBytes: number;

  private conn: NbdConnection | undefined;
  private state: NbdState = 'connected';
  private lastError: BlockIoError | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private attemptSocket: Socket | undefined;
  private delayMs: number;
  private writesMaybeLost = false;
  private closing: Promise<void> | undefined;
  private readonly listeners = new Set<(state: NbdState, error?: BlockIoError) => void>();
  private readonly connOpts: ConnectionOptions;
  private readonly label: string;
  private readonly o: Required<Omit<NbdBackendOptions, 'exportName'>>;

  private constructor(first: NbdConnection, connOpts: ConnectionOptions, o: Required<Omit<NbdBackendOptions, 'exportName'>>) {
    this.connOpts = connOpts;
    this.o = o;
    this.label = first.label;
    const info = first.info;
    this.size = info.size;
    this.readOnly = (info.flags & TFLAG_READ_ONLY) !== 0;
    this.canDiscard = !this.readOnly && (info.flags & TFLAG_SEND_TRIM) !== 0;
    this.flushNeeded = (info.flags & TFLAG_SEND_FLUSH) !== 0;
    this.minBlock = info.minBlock;
    const serverMax = Math.min(info.maxBlock ?? DEFAULT_MAX_BLOCK, DEFAULT_MAX_BLOCK, o.maxRequestBytes);
    this.maxRequestBytes = Math.max(info.minBlock, serverMax - (serverMax % info.minBlock));
    this.delayMs = o.reconnectDelayMs;
    this.attach(first);
  }

  static async connect(options: NbdBackendOptions): Promise<NbdBackend> {
    const o = {
      host: options.host,
      port: options.port,
      timeoutMs: options.timeoutMs ?? 10_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      reconnect: options.reconnect ?? true,
      reconnectDelayMs: options.reconnectDelayMs ?? 100,
      maxReconnectDelayMs: options.maxReconnectDelayMs ?? 2_000,
      maxRequestBytes: options.maxRequestBytes ?? DEFAULT_MAX_BLOCK,
      failFlushAfterLostWrites: options.failFlushAfterLostWrites ?? true,
    };
    if (!Number.isInteger(o.maxRequestBytes) || o.maxRequestBytes < 1) {
      throw new RangeError(`maxRequestBytes must be a positive integer, got ${o.maxRequestBytes}`);
    }
    const connOpts: ConnectionOptions = {
      host: o.host, port: o.port, exportName: options.exportName ?? '',
      timeoutMs: o.timeoutMs, requestTimeoutMs: o.requestTimeoutMs,
    };
    if (Buffer.byteLength(connOpts.exportName, 'utf8') > 4096) {
      throw new NbdHandshakeError(`NBD ${o.host}:${o.port}: export name longer than the protocol's 4096-byte limit`);
    }
    const conn = await NbdConnection.open(connOpts);
    if (conn.info.size % 512 !== 0) {
      await conn.disconnect(1000, new BlockImageError('unusable export'));
      throw new BlockImageError(`NBD ${conn.label}: export size ${conn.info.size} is not a multiple of 512`);
    }
    return new NbdBackend(conn, connOpts, o);
  }

  get connectionState(): NbdState { return this.state; }

  /** Why the last connection or reconnect attempt failed, if it did. */
  get lastConnectionError(): BlockIoError | undefined { return this.lastError; }

  /** Observes connected/reconnecting/closed transitions; returns an unsubscribe function. */
  onStateChange(listener: (state: NbdState, error?: BlockIoError) => void): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  /** Resolves when a connection is up; rejects after timeoutMs or if the backend is closed. */
  whenConnected(timeoutMs: number): Promise<void> {
    if (this.state === 'connected') return Promise.resolve();
    if (this.state === 'closed') return Promise.reject(new BlockClosedError(`NBD ${this.label}: backend is closed`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new NbdTimeoutError(`NBD ${this.label}: not reconnected within ${timeoutMs} ms` +
          (this.lastError ? ` (last error: ${this.lastError.message})` : '')));
      }, timeoutMs);
      const off = this.onStateChange((state) => {
        if (state === 'reconnecting') return;
        clearTimeout(timer);
        off();
        if (state === 'connected') resolve();
        else reject(new BlockClosedError(`NBD ${this.label}: backend is closed`));
      });
    });
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    this.checkRange('read', offset, length);
    const out = new Uint8Array(length);
    const parts: Promise<void>[] = [];
    for (let done = 0; done < length; done += this.maxRequestBytes) {
      const n = Math.min(this.maxRequestBytes, length - done);
      parts.push(this.send(CMD_READ, offset + done, n, undefined, out.subarray(done, done + n)));
    }
    await Promise.all(parts);
    return out;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkWritable('write');
    this.checkRange('write', offset, data.length);
    const parts: Promise<void>[] = [];
    for (let done = 0; done < data.length; done += this.maxRequestBytes) {
      const n = Math.min(this.maxRequestBytes, data.length - done);
      parts.push(this.send(CMD_WRITE, offset + done, n, data.subarray(done, done + n)));
    }
    await Promise.all(parts);
  }

  async discard(offset: number, length: number): Promise<void> {
    this.checkWritable('discard');
    this.checkRange('discard', offset, length);
    if (!this.canDiscard) return;
    const step = MAX_TRIM - (MAX_TRIM % this.minBlock);
    const parts: Promise<void>[] = [];
    for (let done = 0; done < length; done += step) {
      parts.push(this.send(CMD_TRIM, offset + done, Math.min(step, length - done)));
    }
    await Promise.all(parts);
  }

  async flush(): Promise<void> {
    this.checkOpen();
    if (this.writesMaybeLost) {
      this.writesMaybeLost = false;
      throw new NbdWritesMaybeLostError(
        `NBD ${this.label}: the connection was lost before a flush covered writes it had acknowledged; they may not be durable`);
    }
    // Without NBD_FLAG_SEND_FLUSH the server has no volatile cache to commit (and the spec
    // forbids sending the command): an acknowledged write is already as durable as it gets.
    if (!this.flushNeeded) return;
    const conn = this.requireConnection();
    const acked = conn.markFlushSent();
    await conn.submit(CMD_FLUSH, 0, 0);
    acked();
  }

  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const wasClosed = this.state === 'closed';
    this.state = 'closed';
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.attemptSocket?.destroy();
    const conn = this.conn;
    this.conn = undefined;
    if (!wasClosed) this.emit('closed');
    if (conn && !conn.closed) {
      await conn.disconnect(Math.min(this.o.timeoutMs, 5_000), new BlockClosedError(`NBD ${this.label}: backend closed with the request in flight`));
    }
  }

  private send(type: number, offset: number, length: number, data?: Uint8Array, dest?: Uint8Array): Promise<void> {
    try {
      return this.requireConnection().submit(type, offset, length, data, dest);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private requireConnection(): NbdConnection {
    this.checkOpen();
    const c = this.conn;
    if (!c || c.closed) {
      throw new NbdDisconnectedError(`NBD ${this.label}: not connected; reconnecting in the background` +
        (this.lastError ? ` (last error: ${this.lastError.message})` : ''), { cause: this.lastError });
    }
    return c;
  }

  private checkOpen(): void {
    if (this.state === 'closed') throw new BlockClosedError(`NBD ${this.label}: backend is closed`);
  }

  private checkWritable(op: string): void {
    this.checkOpen();
    if (this.readOnly) throw new BlockReadOnlyError(`NBD ${this.label}: ${op} on a read-only export`);
  }

  private checkRange(op: string, offset: number, length: number): void {
    this.checkOpen();
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new BlockRangeError(`NBD ${this.label}: ${op} of ${length} bytes at offset ${offset} is outside the ${this.size}-byte export`);
    }
    if (this.minBlock > 1 && (offset % this.minBlock !== 0 || length % this.minBlock !== 0)) {
      throw new BlockAlignmentError(`NBD ${this.label}: ${op} of ${length} bytes at offset ${offset} is not aligned to the server's ${this.minBlock}-byte minimum block size`);
    }
  }

  private attach(conn: NbdConnection): void {
    this.conn = conn;
    conn.onClosed((err) => {
      if (this.conn !== conn) return;
      this.conn = undefined;
      if (this.o.failFlushAfterLostWrites && conn.supportsFlush && conn.writeAcks > conn.durableAcks) {
        this.writesMaybeLost = true;
      }
      if (this.state === 'closed') return;
      this.lastError = err;
      if (!this.o.reconnect) {
        this.state = 'closed';
        this.emit('closed', err);
        return;
      }
      this.state = 'reconnecting';
      this.emit('reconnecting', err);
      this.delayMs = this.o.reconnectDelayMs;
      this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    if (this.state !== 'reconnecting' || this.reconnectTimer) return;
    const delay = this.delayMs;
    this.delayMs = Math.min(this.delayMs * 2, this.o.maxReconnectDelayMs);
    // Unref'd: a forgotten backend must not keep the process alive retrying forever.
    this.reconnectTimer = setTimeout(() => { this.reconnectTimer = undefined; void this.attempt(); }, delay);
    this.reconnectTimer.unref();
  }

  private async attempt(): Promise<void> {
    let conn: NbdConnection;
    try {
      conn = await NbdConnection.open(this.connOpts, (s) => { this.attemptSocket = s; });
    } catch (e) {
      this.attemptSocket = undefined;
      this.lastError = e instanceof BlockIoError ? e : new NbdDisconnectedError(String(e), { cause: e });
      this.scheduleReconnect();
      return;
    }
    this.attemptSocket = undefined;
    if (this.state !== 'reconnecting') {
      conn.teardown(new BlockClosedError(`NBD ${this.label}: backend closed while reconnecting`));
      return;
    }
    // Same endpoint, different disk? Refuse rather than let the guest scribble over it.
    if (conn.info.size !== this.size) {
      this.lastError = new NbdHandshakeError(`NBD ${this.label}: export size changed from ${this.size} to ${conn.info.size} across reconnect; refusing it`);
      conn.teardown(this.lastError);
      this.scheduleReconnect();
      return;
    }
    this.state = 'connected';
    this.delayMs = this.o.reconnectDelayMs;
    this.attach(conn);
    this.emit('connected');
  }

  private emit(state: NbdState, error?: BlockIoError): void {
    for (const l of [...this.listeners]) l(state, error);
  }
}
