// The probe's arithmetic, apart from its sockets so it can be tested on made-up sequences.
// Times are epoch ms (performance.timeOrigin + performance.now()), so a blackout can be lined
// up with the migration report's switch timeline, which uses the same clock.

/** A silence between two arrivals: it started with the last arrival before it and ended with
 * the first one after it (`endMs`). `open`: nothing arrived after it before the probe stopped,
 * so `endMs` is the stop and the silence is at least `ms`. */
export interface Gap {
  readonly ms: number;
  readonly startMs: number;
  readonly endMs: number;
  readonly open: boolean;
}

/** The longest silence in a sequence of arrivals (in time order). */
export class ArrivalGaps {
  private last: number | undefined;
  private longest: Gap | null = null;
  count = 0;

  arrive(atMs: number): void {
    if (this.last !== undefined) this.consider({ ms: atMs - this.last, startMs: this.last, endMs: atMs, open: false });
    this.last = atMs;
    this.count++;
  }

  /** The longest gap, counting the silence from the last arrival to `endMs` when `openAtEnd`
   * (something was still owed then: a probe sent, a stream running). Null before two
   * arrivals, or one arrival and no open tail. */
  longestUntil(endMs: number, openAtEnd: boolean): Gap | null {
    if (openAtEnd && this.last !== undefined && endMs > this.last) {
      const tail: Gap = { ms: endMs - this.last, startMs: this.last, endMs, open: true };
      if (this.longest === null || tail.ms > this.longest.ms) return tail;
    }
    return this.longest;
  }

  private consider(g: Gap): void {
    if (this.longest === null || g.ms > this.longest.ms) this.longest = g;
  }
}

export interface EchoSummary {
  readonly sent: number;
  readonly received: number;
  /** Probes never answered (the probe waits a grace period after its last send). */
  readonly lost: number;
  readonly duplicates: number;
  /** Longest run without replies: the blackout a client saw. */
  readonly maxGap: Gap | null;
  /** The probe's own longest pause between two sends: the resolution it achieved. */
  readonly sendGapMaxMs: number;
  readonly rttMaxMs: number;
}

/** Datagrams numbered from 0, each answered at most once: what came back, and the longest
 * silence between replies. */
export class EchoTracker {
  private readonly sentAt: number[] = [];
  private readonly answered = new Set<number>();
  private readonly replies = new ArrivalGaps();
  private duplicates = 0;
  private sendGapMax = 0;
  private rttMax = 0;
  /** Arrival of the latest reply. */
  private lastReplyMs = -Infinity;

  /** Records a send; returns its sequence number. */
  send(atMs: number): number {
    const prev = this.sentAt[this.sentAt.length - 1];
    if (prev !== undefined) this.sendGapMax = Math.max(this.sendGapMax, atMs - prev);
    return this.sentAt.push(atMs) - 1;
  }

  /** Records a reply; unknown sequence numbers are ignored, repeats counted. */
  reply(seq: number, atMs: number): void {
    const sent = this.sentAt[seq];
    if (sent === undefined) return;
    if (this.answered.has(seq)) { this.duplicates++; return; }
    this.answered.add(seq);
    this.replies.arrive(atMs);
    this.rttMax = Math.max(this.rttMax, atMs - sent);
    this.lastReplyMs = atMs;
  }

  get received(): number { return this.answered.size; }

  /** The summary at `endMs`: a probe sent after the last reply and never answered leaves the
   * silence open up to then. */
  summary(endMs: number): EchoSummary {
    const lastSent = this.sentAt[this.sentAt.length - 1];
    const owed = lastSent !== undefined && lastSent > this.lastReplyMs;
    return {
      sent: this.sentAt.length,
      received: this.answered.size,
      lost: this.sentAt.length - this.answered.size,
      duplicates: this.duplicates,
      maxGap: this.replies.longestUntil(endMs, owed),
      sendGapMaxMs: this.sendGapMax,
      rttMaxMs: this.rttMax,
    };
  }
}

/** Durations of repeated attempts (the short TCP connects): the slowest, and the median. */
export class Durations {
  private readonly values: number[] = [];
  private slowest: { readonly ms: number; readonly startMs: number } | null = null;
  failed = 0;

  add(startMs: number, ms: number): void {
    if (this.slowest === null || ms > this.slowest.ms) this.slowest = { ms, startMs };
    this.values.push(ms);
  }

  get count(): number { return this.values.length; }
  get max(): number { return this.slowest?.ms ?? 0; }
  /** When the slowest attempt began (epoch ms; 0 before any). */
  get slowestStartMs(): number { return this.slowest?.startMs ?? 0; }

  median(): number | null {
    if (this.values.length === 0) return null;
    const s = [...this.values].sort((x, y) => x - y);
    return s[Math.floor((s.length - 1) / 2)]!;
  }
}
