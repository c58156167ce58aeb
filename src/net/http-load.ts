// A steady HTTP client load (one request at a time, at a fixed pace) that counts what a user
// would call an error: a refused or reset connection, a non-2xx answer, no answer within the
// timeout. Slow answers are recorded separately: a retransmitted SYN during a migration's
// pause is slow, not failed.

export interface HttpLoadReport {
  readonly requests: number;
  readonly errors: number;
  readonly maxLatencyMs: number;
  /** The first few errors, for the report. */
  readonly errorSamples: readonly string[];
}

export class HttpLoad {
  private requests = 0;
  private errors = 0;
  private maxLatencyMs = 0;
  private readonly samples: string[] = [];
  private stopped = false;
  private readonly loop: Promise<void>;

  private constructor(private readonly url: string, private readonly intervalMs: number, private readonly timeoutMs: number) {
    this.loop = this.run();
  }

  static start(url: string, opts: { intervalMs?: number; timeoutMs?: number } = {}): HttpLoad {
    return new HttpLoad(url, opts.intervalMs ?? 50, opts.timeoutMs ?? 10_000);
  }

  /** Counts since the last call (per-migration windows). */
  take(): HttpLoadReport {
    const r = { requests: this.requests, errors: this.errors, maxLatencyMs: Math.round(this.maxLatencyMs), errorSamples: this.samples.splice(0) };
    this.requests = 0;
    this.errors = 0;
    this.maxLatencyMs = 0;
    return r;
  }

  async stop(): Promise<HttpLoadReport> {
    this.stopped = true;
    await this.loop;
    return this.take();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const t0 = performance.now();
      try {
        // A fresh connection each time, as separate page loads would make.
        const res = await fetch(this.url, { signal: AbortSignal.timeout(this.timeoutMs), headers: { Connection: 'close' } });
        await res.arrayBuffer();
        if (!res.ok) this.fail(`HTTP ${res.status}`);
      } catch (e) {
        this.fail(e instanceof Error ? `${e.name}: ${e.message}` : String(e));
      }
      const took = performance.now() - t0;
      this.requests++;
      this.maxLatencyMs = Math.max(this.maxLatencyMs, took);
      const wait = this.intervalMs - took;
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  }

  private fail(what: string): void {
    this.errors++;
    if (this.samples.length < 5) this.samples.push(what);
  }
}
