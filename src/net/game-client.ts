// Host-side client of the guest's gameserver (src/guest/programs/gameserver.c): registers,
// records every packet's sequence number and arrival time, and summarises what a player would
// have noticed during a migration: lost packets and the longest silence.
import { createSocket, type Socket } from 'node:dgram';
import { FerryError } from '../errors.js';

export const GAME_DEFAULT_PORT = 27960;
const MAGIC = 0x46475331; // "FGS1"
const HEADER_SIZE = 20;

export interface GamePacket {
  seq: number;
  /** Server tick index since the server started. */
  tick: number;
  /** Server CLOCK_MONOTONIC in ns (guest clock). */
  serverMonoNs: bigint;
  /** Host arrival time (performance.now(), ms). */
  arrivalMs: number;
}

export interface GameReport {
  received: number;
  /** Sequence numbers up to the last received that never arrived (the server numbers each
   * client's packets from 1). */
  lost: number;
  duplicates: number;
  /** Packets that arrived with a lower sequence number than one already seen. */
  reordered: number;
  firstSeq: number;
  lastSeq: number;
  /** Largest interval between consecutive arrivals (ms): the downtime a player saw. */
  maxGapMs: number;
  /** Largest jump in the server's tick counter minus one: ticks the server itself skipped. */
  maxTicksSkipped: number;
}

export interface GameClientOptions {
  host: string;
  port?: number;
  /** Interval between registration attempts until the first packet arrives (ms). */
  registerIntervalMs?: number;
  /** Keep every packet (for plots); off by default, the report needs only running values. */
  keepPackets?: boolean;
}

export function parseGamePacket(msg: Uint8Array, arrivalMs: number): GamePacket | undefined {
  if (msg.length < HEADER_SIZE) return undefined;
  const v = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
  if (v.getUint32(0) !== MAGIC) return undefined;
  return { seq: v.getUint32(4), tick: v.getUint32(8), serverMonoNs: v.getBigUint64(12), arrivalMs };
}

export class GameClient {
  readonly packets: GamePacket[] = [];
  private readonly seen = new Set<number>();
  private received = 0;
  private duplicates = 0;
  private reordered = 0;
  private firstSeq = 0;
  private lastSeq = 0;
  private maxSeq = 0;
  private lastArrival = -1;
  private lastTick = -1;
  private maxGapMs = 0;
  private maxTicksSkipped = 0;
  private registerTimer: NodeJS.Timeout | undefined;
  private waiters: Array<{ count: number; resolve: () => void }> = [];
  private closed = false;

  private constructor(private readonly socket: Socket, private readonly host: string, private readonly port: number, private readonly keep: boolean) {}

  /** Binds a UDP socket and starts registering; resolves once the socket is bound. */
  static async start(opts: GameClientOptions): Promise<GameClient> {
    const socket = createSocket('udp4');
    const client = new GameClient(socket, opts.host, opts.port ?? GAME_DEFAULT_PORT, opts.keepPackets ?? false);
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    // ICMP port-unreachable (server not up yet) surfaces as a socket error; retrying covers it.
    socket.on('error', () => {});
    socket.on('message', (msg) => client.onMessage(msg));
    const interval = opts.registerIntervalMs ?? 200;
    client.register();
    client.registerTimer = setInterval(() => client.register(), interval);
    return client;
  }

  private register(): void {
    if (this.closed) return;
    this.socket.send('hello', this.port, this.host);
  }

  private onMessage(msg: Buffer): void {
    const p = parseGamePacket(msg, performance.now());
    if (!p) return;
    if (this.registerTimer) {
      clearInterval(this.registerTimer);
      this.registerTimer = undefined;
    }
    if (this.keep) this.packets.push(p);
    if (this.seen.has(p.seq)) {
      this.duplicates++;
      return;
    }
    this.seen.add(p.seq);
    if (this.received === 0) this.firstSeq = p.seq;
    this.received++;
    if (p.seq < this.maxSeq) this.reordered++;
    this.maxSeq = Math.max(this.maxSeq, p.seq);
    this.firstSeq = Math.min(this.firstSeq, p.seq);
    this.lastSeq = this.maxSeq;
    if (this.lastArrival >= 0) this.maxGapMs = Math.max(this.maxGapMs, p.arrivalMs - this.lastArrival);
    this.lastArrival = p.arrivalMs;
    if (this.lastTick >= 0 && p.tick > this.lastTick) this.maxTicksSkipped = Math.max(this.maxTicksSkipped, p.tick - this.lastTick - 1);
    this.lastTick = Math.max(this.lastTick, p.tick);
    this.waiters = this.waiters.filter((w) => {
      if (this.received < w.count) return true;
      w.resolve();
      return false;
    });
  }

  /** Resolves when `count` distinct packets have arrived; rejects with GAME_TIMEOUT otherwise. */
  waitForPackets(count: number, timeoutMs: number): Promise<void> {
    if (this.received >= count) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new FerryError('GAME_TIMEOUT', `game client: ${this.received} of ${count} packets after ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = { count, resolve: (): void => { clearTimeout(timer); resolve(); } };
      this.waiters.push(waiter);
    });
  }

  report(): GameReport {
    const span = this.lastSeq;
    return {
      received: this.received,
      lost: span - this.received,
      duplicates: this.duplicates,
      reordered: this.reordered,
      firstSeq: this.firstSeq,
      lastSeq: this.lastSeq,
      maxGapMs: this.maxGapMs,
      maxTicksSkipped: this.maxTicksSkipped,
    };
  }

  /** Unregisters ("bye"), closes the socket and returns the final report. */
  async stop(): Promise<GameReport> {
    if (!this.closed) {
      this.closed = true;
      if (this.registerTimer) clearInterval(this.registerTimer);
      await new Promise<void>((resolve) => this.socket.send('bye', this.port, this.host, () => resolve()));
      await new Promise<void>((resolve) => this.socket.close(() => resolve()));
    }
    return this.report();
  }
}
