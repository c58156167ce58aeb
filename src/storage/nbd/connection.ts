// One NBD connection in the transmission phase: many requests in flight, matched to replies by
// cookie, replies parsed incrementally however TCP chunks them. A connection never recovers:
// any failure tears it down, rejects everything in flight, and reports to its owner, which
// decides whether to open a new one.
import { connect, type Socket } from 'node:net';
import {
  BlockIoError, NbdDisconnectedError, NbdProtocolError, NbdServerError, NbdTimeoutError,
} from '../errors.js';
import { negotiate, SocketReader, type ExportInfo } from './handshake.js';
import {
  CMD_DISC, CMD_NAMES, CMD_READ, CMD_TRIM, CMD_WRITE, encodeRequest, ESHUTDOWN, hex32, readU64,
  SIMPLE_REPLY_BYTES, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC, TFLAG_SEND_FLUSH,
} from './protocol.js';

interface Pending {
  type: number;
  offset: number;
  length: number;
  /** Where READ data lands. */
  dest: Uint8Array | undefined;
  resolve: () => void;
  reject: (e: Error) => void;
}

export interface ConnectionOptions {
  host: string;
  port: number;
  exportName: string;
  /** Bound on connecting plus negotiating. */
  timeoutMs: number;
  /** A connection with requests outstanding and no reply bytes for this long is torn down; 0 = never. */
  requestTimeoutMs: number;
}

export class NbdConnection {
  private readonly pending = new Map<number, Pending>();
  private nextCookie = 1;
  private closedWith: BlockIoError | undefined;
  private finished = false;
  private closeListeners: Array<(err: BlockIoError) => void> = [];
  private drainWaiters: Array<() => void> = [];
  /** Set after an ESHUTDOWN reply: no new requests, disconnect once in-flight ones are answered. */
  private shuttingDown = false;

  // Reply parser state: a header being assembled, or a READ payload being copied in place.
  private readonly header = Buffer.alloc(SIMPLE_REPLY_BYTES);
  private headerFill = 0;
  private reading: Pending | undefined;
  private readingCookie = 0;
  private readFill = 0;

  private lastProgress = Date.now();
  private lastQueued = 0;
  private readonly watchdog: NodeJS.Timeout | undefined;

  /** Write/trim replies received; flushes compare against this to know what they covered. */
  writeAcks = 0;
  /** writeAcks as it was when the newest acknowledged flush was sent. */
  durableAcks = 0;

  private constructor(
    private readonly socket: Socket,
    readonly info: ExportInfo,
    readonly label: string,
    private readonly requestTimeoutMs: number,
  ) {
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
    if (requestTimeoutMs > 0) {
      this.watchdog = setInterval(this.checkProgress, Math.max(10, Math.min(1000, requestTimeoutMs / 4)));
      this.watchdog.unref();
    }
  }

  /** Connects and negotiates; rejects with a BlockIoError (never hangs past timeoutMs). */
  static async open(o: ConnectionOptions, track?: (s: Socket) => void): Promise<NbdConnection> {
    const label = `${o.host}:${o.port}${o.exportName ? ` export "${o.exportName}"` : ''}`;
    const socket = connect({ host: o.host, port: o.port });
    track?.(socket);
    socket.setNoDelay(true);
    const reader = new SocketReader(socket, label);
    const timer = setTimeout(() => {
      socket.destroy(new NbdTimeoutError(`NBD ${label}: no complete handshake within ${o.timeoutMs} ms`));
    }, o.timeoutMs);
    try {
      const info = await negotiate(reader, socket, o.exportName, label);
      const leftover = reader.detach();
      const conn = new NbdConnection(socket, info, label, o.requestTimeoutMs);
      if (leftover.length > 0) conn.onData(leftover);
      return conn;
    } catch (e) {
      socket.destroy();
      throw e instanceof BlockIoError ? e
        : new NbdDisconnectedError(`NBD ${label}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    } finally {
      clearTimeout(timer);
    }
  }

  get closed(): boolean { return this.closedWith !== undefined; }
  get inFlight(): number { return this.pending.size; }
  get supportsFlush(): boolean { return (this.info.flags & TFLAG_SEND_FLUSH) !== 0; }

  /** Called once, with the reason, when the connection is gone. */
  onClosed(listener: (err: BlockIoError) => void): void {
    if (this.finished) listener(this.closedWith!);
    else this.closeListeners.push(listener);
  }

  /**
   * Sends one request. data is WRITE's payload and must stay unchanged until the promise
   * settles; dest receives READ's payload and must be exactly length bytes.
   */
  submit(type: number, offset: number, length: number, data?: Uint8Array, dest?: Uint8Array): Promise<void> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    if (this.shuttingDown) return Promise.reject(new NbdDisconnectedError(`NBD ${this.label}: server is shutting down`));
    const cookie = this.nextCookie++;
    return new Promise<void>((resolve, reject) => {
      if (this.pending.size === 0) this.lastProgress = Date.now();
      this.pending.set(cookie, { type, offset, length, dest, resolve, reject });
      const head = encodeRequest(0, type, cookie, offset, length);
      if (data) {
        // One cork/uncork so header and payload leave in as few segments as possible.
        this.socket.cork();
        this.socket.write(head);
        this.socket.write(data);
        this.socket.uncork();
      } else {
        this.socket.write(head);
      }
    });
  }

  /** Resolves once nothing is in flight (immediately if closed). */
  drain(): Promise<void> {
    if (this.pending.size === 0 || this.closedWith) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /**
   * Soft disconnect: waits up to waitMs for in-flight requests, sends NBD_CMD_DISC, and closes.
   * Whatever is still in flight afterwards fails with `reason`.
   */
  async disconnect(waitMs: number, reason: BlockIoError): Promise<void> {
    if (this.closedWith) return;
    await withTimeout(this.drain(), waitMs);
    if (this.closedWith) return;
    // From here on replies are ignored and new requests refused; the server closes the socket
    // in answer to DISC.
    this.closedWith = reason;
    const closed = new Promise<void>((resolve) => this.socket.once('close', () => resolve()));
    this.socket.end(encodeRequest(0, CMD_DISC, 0, 0, 0));
    if (!await withTimeout(closed, Math.max(waitMs, 100))) this.socket.destroy();
    this.finish();
  }

  /** Hard disconnect with a reason every in-flight request is rejected with. */
  teardown(reason: BlockIoError): void {
    this.closedWith ??= reason;
    this.socket.destroy();
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.watchdog) clearInterval(this.watchdog);
    this.reading = undefined;
    const reason = this.closedWith!;
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(reason);
    for (const w of this.drainWaiters.splice(0)) w();
    for (const l of this.closeListeners.splice(0)) l(reason);
  }

  private readonly checkProgress = (): void => {
    // A big WRITE gets no reply bytes until the server has all of it; on a slow link, our send
    // queue shrinking is the only sign the connection is alive.
    const queued = this.socket.writableLength;
    if (queued !== this.lastQueued) {
      this.lastQueued = queued;
      this.lastProgress = Date.now();
      return;
    }
    if (this.pending.size > 0 && Date.now() - this.lastProgress > this.requestTimeoutMs) {
      this.teardown(new NbdTimeoutError(
        `NBD ${this.label}: no reply for ${this.requestTimeoutMs} ms with ${this.pending.size} request(s) in flight; connection dropped`));
    }
  };

  private readonly onError = (err: Error): void => {
    this.closedWith ??= err instanceof BlockIoError ? err
      : new NbdDisconnectedError(`NBD ${this.label}: connection lost: ${err.message}`, { cause: err });
  };

  private readonly onClose = (): void => {
    this.closedWith ??= new NbdDisconnectedError(`NBD ${this.label}: server closed the connection`);
    this.finish();
  };

  private protocolViolation(what: string): void {
    this.teardown(new NbdProtocolError(`NBD ${this.label}: protocol violation: ${what}; connection dropped`));
  }

  private readonly onData = (chunk: Buffer): void => {
    this.lastProgress = Date.now();
    let pos = 0;
    while (pos < chunk.length && !this.closedWith) {
      const r = this.reading;
      if (r) {
        const n = Math.min(r.length - this.readFill, chunk.length - pos);
        r.dest!.set(chunk.subarray(pos, pos + n), this.readFill);
        this.readFill += n;
        pos += n;
        if (this.readFill === r.length) {
          this.reading = undefined;
          this.complete(r, this.readingCookie);
        }
        continue;
      }
      const n = Math.min(SIMPLE_REPLY_BYTES - this.headerFill, chunk.length - pos);
      chunk.copy(this.header, this.headerFill, pos, pos + n);
      this.headerFill += n;
      pos += n;
      if (this.headerFill === SIMPLE_REPLY_BYTES) {
        this.headerFill = 0;
        this.onHeader();
      }
    }
  };

  private onHeader(): void {
    const magic = this.header.readUInt32BE(0);
    if (magic !== SIMPLE_REPLY_MAGIC) {
      this.protocolViolation(magic === STRUCTURED_REPLY_MAGIC
        ? 'structured reply although none was negotiated'
        : `bad reply magic ${hex32(magic)} (expected ${hex32(SIMPLE_REPLY_MAGIC)})`);
      return;
    }
    const errno = this.header.readUInt32BE(4);
    const cookie = readU64(this.header, 8);
    const p = cookie === undefined ? undefined : this.pending.get(cookie);
    if (!p) {
      this.protocolViolation(`reply for unknown cookie 0x${this.header.toString('hex', 8, 16)}`);
      return;
    }
    if (errno !== 0) {
      this.pending.delete(cookie!);
      // De-facto rule for simple replies (nbdkit, qemu, libnbd): a failed READ carries no data.
      p.reject(new NbdServerError(errno, `${CMD_NAMES[p.type] ?? p.type} of ${p.length} bytes at offset ${p.offset}`));
      if (errno === ESHUTDOWN) this.beginShutdown();
      this.afterSettle();
      return;
    }
    if (p.type === CMD_READ && p.length > 0) {
      // Stays in pending until its payload is in, so a teardown mid-payload rejects it.
      this.reading = p;
      this.readingCookie = cookie!;
      this.readFill = 0;
      return;
    }
    this.complete(p, cookie!);
  }

  private complete(p: Pending, cookie: number): void {
    this.pending.delete(cookie);
    if (p.type === CMD_WRITE || p.type === CMD_TRIM) this.writeAcks++;
    p.resolve();
    this.afterSettle();
  }

  private afterSettle(): void {
    if (this.pending.size === 0) {
      for (const w of this.drainWaiters.splice(0)) w();
    }
  }

  /** Flush bookkeeping: call when sending FLUSH; the returned function when it is acknowledged. */
  markFlushSent(): () => void {
    const covered = this.writeAcks;
    return () => { this.durableAcks = Math.max(this.durableAcks, covered); };
  }

  private beginShutdown(): void {
    // The spec requires a soft disconnect after ESHUTDOWN; the owner reconnects afterwards.
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    void this.disconnect(this.requestTimeoutMs || 5000,
      new NbdDisconnectedError(`NBD ${this.label}: server is shutting down (ESHUTDOWN)`));
  }
}

function withTimeout(p: Promise<void>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    void p.then(() => { clearTimeout(t); resolve(true); });
  });
}

