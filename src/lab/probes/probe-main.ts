// The blackout probe's own process (node dist/src/lab/probes/probe-main.js --target JSON),
// started on the lab's client host. Apart from the client's other work (HTTP load, game client,
// console, the operator's polling) so that none of it delays a send or a reply's timestamp.
// stdout: one JSON line {"kind":"ready"} once every part has seen the guest answer, then
// {"kind":"report",...} after "stop" on stdin. stdin closing also stops it, so it never
// outlives the process that started it.

import { createSocket } from 'node:dgram';
import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { ArrivalGaps, Durations, EchoTracker } from './gaps.js';
import { PROBE_CONNECT_EVERY_MS, type ProbeReport, type ProbeTarget } from './report.js';

const MAGIC = 0x46425031; // "FBP1"
/** After the last send: time for replies still on the way (and the connects in flight). */
const GRACE_MS = 300;
const CONNECT_TIMEOUT_MS = 5000;
const READY_TIMEOUT_MS = 30_000;
const PATTERN_MOD = 251;
const WAIT_MAX_MS = 0.5;
/** A futex wait overshoots by tens of microseconds: wake this much before a send is due. */
const EARLY_MS = 0.05;

const clock = (): number => performance.timeOrigin + performance.now();
const emit = (o: object): void => { process.stdout.write(`${JSON.stringify(o)}\n`); };

class UdpPart {
  readonly tracker = new EchoTracker();
  private readonly sock = createSocket('udp4');
  private running = false;
  private due = 0;
  private readonly futex = new Int32Array(new SharedArrayBuffer(4));

  constructor(private readonly t: ProbeTarget, readonly intervalMs: number) {
    // ICMP unreachable while the guest's port is not bound yet arrives as an error: keep going.
    this.sock.on('error', () => undefined);
    this.sock.on('message', (msg) => {
      const at = clock();
      if (msg.length < 8 || msg.readUInt32BE(0) !== MAGIC) return;
      this.tracker.reply(msg.readUInt32BE(4), at);
    });
  }

  start(): void {
    this.sock.bind(0, () => { this.running = true; this.due = clock(); this.tick(); });
  }

  /** Node's timers fire at 1 ms at best, often 1.2-2 ms: too coarse for a 1 ms schedule. Each
   * tick sleeps on a futex (no CPU) until the next send is due, at most WAIT_MAX_MS at a time,
   * then lets the event loop take the replies in. Sends keep to a fixed schedule (a late one
   * is caught up at half the interval, never in a burst), and a reply's timestamp is late by at
   * most WAIT_MAX_MS. */
  private tick(): void {
    if (!this.running) return;
    const now = clock();
    if (now >= this.due - EARLY_MS) {
      this.send(now);
      this.due = Math.max(this.due + this.intervalMs, now + this.intervalMs / 2);
    }
    const wait = Math.min(WAIT_MAX_MS, this.due - clock() - EARLY_MS);
    if (wait > 0.02) Atomics.wait(this.futex, 0, 0, wait);
    setImmediate(() => this.tick());
  }

  private send(now: number): void {
    const seq = this.tracker.send(now);
    // A fresh buffer each time: the socket may still hold the last one when it queued it.
    const buf = Buffer.alloc(16);
    buf.writeUInt32BE(MAGIC, 0);
    buf.writeUInt32BE(seq, 4);
    this.sock.send(buf, this.t.udpPort, this.t.host);
  }

  stopSending(): void { this.running = false; }
  close(): void { this.sock.close(); }
}

/** The guest's paced stream: the longest time between two arrivals. Reconnects after an error,
 * the silence running on from the last byte before it. */
class StreamPart {
  readonly gaps = new ArrivalGaps();
  bytes = 0;
  intact = true;
  errors = 0;
  private sock: Socket | undefined;
  private offset = 0;
  private stopped = false;

  constructor(private readonly t: ProbeTarget) {}

  start(): void {
    if (this.stopped) return;
    this.offset = 0;
    const s = connect({ host: this.t.host, port: this.t.streamPort });
    this.sock = s;
    s.setNoDelay(true);
    s.on('data', (b: Buffer) => {
      this.gaps.arrive(clock());
      for (let i = 0; i < b.length; i++) if (b[i] !== (this.offset + i) % PATTERN_MOD) { this.intact = false; break; }
      this.offset += b.length;
      this.bytes += b.length;
    });
    s.on('error', () => { this.errors++; });
    s.on('close', () => { if (!this.stopped) setTimeout(() => this.start(), 100); });
  }

  stop(): void { this.stopped = true; this.sock?.destroy(); }
}

/** A short TCP connect every `everyMs`: connect, one byte to the echo and back, close. Attempts
 * overlap, so a lost SYN (~1 s) does not hide the attempts behind it. */
class ConnectPart {
  readonly durations = new Durations();
  attempts = 0;
  completed = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly inFlight = new Map<Socket, number>();

  constructor(private readonly t: ProbeTarget, readonly everyMs: number) {}

  start(): void {
    this.timer = setInterval(() => this.attempt(), this.everyMs);
    this.attempt();
  }

  private attempt(): void {
    // A guest that stopped answering must not pile up thousands of sockets.
    if (this.inFlight.size >= 400) return;
    const start = clock();
    this.attempts++;
    const s = connect({ host: this.t.host, port: this.t.tcpEchoPort });
    this.inFlight.set(s, start);
    s.setNoDelay(true);
    s.setTimeout(CONNECT_TIMEOUT_MS);
    const end = (ok: boolean): void => {
      if (!this.inFlight.delete(s)) return;
      this.durations.add(start, clock() - start);
      if (ok) this.completed++; else this.durations.failed++;
      s.destroy();
    };
    s.once('connect', () => s.write('x'));
    s.once('data', () => end(true));
    s.once('timeout', () => end(false));
    s.once('error', () => end(false));
    s.once('close', () => end(false));
  }

  stopStarting(): void { clearInterval(this.timer); }

  /** Attempts still open count with what they have waited so far. */
  close(): void {
    for (const start of this.inFlight.values()) this.durations.add(start, clock() - start);
    for (const s of this.inFlight.keys()) s.destroy();
    this.inFlight.clear();
  }
}

function parseTarget(argv: readonly string[]): ProbeTarget {
  const i = argv.indexOf('--target');
  const text = i >= 0 ? argv[i + 1] : undefined;
  if (text === undefined) throw new Error('usage: probe-main --target JSON');
  return JSON.parse(text) as ProbeTarget;
}

async function main(): Promise<void> {
  const t = parseTarget(process.argv.slice(2));
  const startedAtMs = clock();
  const udp = new UdpPart(t, t.udpIntervalMs ?? 1);
  const stream = new StreamPart(t);
  const conn = new ConnectPart(t, t.connectEveryMs ?? PROBE_CONNECT_EVERY_MS);
  // Port 0 / interval 0 leave a part out (to measure what each costs the guest).
  udp.start();
  if (t.streamPort > 0) stream.start();
  if (conn.everyMs > 0) conn.start();

  const readyBy = Date.now() + READY_TIMEOUT_MS;
  const readyTimer = setInterval(() => {
    if (udp.tracker.received >= 20 && (t.streamPort === 0 || stream.gaps.count >= 2) && (conn.everyMs === 0 || conn.completed >= 1)) {
      clearInterval(readyTimer);
      emit({ kind: 'ready' });
    } else if (Date.now() > readyBy) {
      clearInterval(readyTimer);
      emit({ kind: 'error', message: `the guest at ${t.host} did not answer within ${READY_TIMEOUT_MS} ms (udp replies ${udp.tracker.received}, stream arrivals ${stream.gaps.count}, connects ${conn.completed})` });
      process.exit(1);
    }
  }, 20);

  await new Promise<void>((resolve) => {
    const rl = createInterface({ input: process.stdin });
    rl.on('line', (l) => { if (l.trim() === 'stop') resolve(); });
    rl.on('close', () => resolve());
  });
  clearInterval(readyTimer);
  udp.stopSending();
  conn.stopStarting();
  await new Promise((r) => setTimeout(r, GRACE_MS));
  const stoppedAtMs = clock();
  conn.close();
  stream.stop();
  const u = udp.tracker.summary(stoppedAtMs);
  udp.close();
  const report: ProbeReport = {
    startedAtMs, stoppedAtMs,
    udp: { intervalMs: udp.intervalMs, sent: u.sent, received: u.received, lost: u.lost, duplicates: u.duplicates, maxGap: u.maxGap, sendGapMaxMs: u.sendGapMaxMs, rttMaxMs: u.rttMaxMs },
    stream: { bytes: stream.bytes, maxStall: stream.gaps.longestUntil(stoppedAtMs, true), intact: stream.intact, errors: stream.errors },
    connect: {
      everyMs: conn.everyMs, attempts: conn.attempts, completed: conn.completed, failed: conn.durations.failed,
      maxMs: conn.durations.max, medianMs: conn.durations.median(), slowestStartMs: conn.durations.slowestStartMs,
    },
  };
  emit({ kind: 'report', report });
  process.exit(0);
}

await main();
