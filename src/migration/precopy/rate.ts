// Bandwidth policy for pre-copy: the dynamic rate limit of Clark et al. (NSDI 2005, §5.1),
// a fixed-rate alternative, rate-string parsing and a token-bucket pacer.
//
// Units. Every rate in this module is BYTES per second (a plain number); the paper and the
// command line speak in bits, so `parseRate` and `mbit()` convert at the edge and nothing
// downstream has to remember which one it holds. `Infinity` means "unpaced".

/** 1 Mbit/s expressed in bytes per second. */
export const MBIT = 1_000_000 / 8;

/** Converts megabits per second to the bytes per second used everywhere else. */
export function mbit(n: number): number {
  return n * MBIT;
}

export class RateParseError extends Error {
  override readonly name = 'RateParseError';
}

const PREFIX: Record<string, number> = {
  '': 1,
  k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40,
};

// Bits are the default because link speeds are quoted in bits ("a 1G link").
const BIT_UNITS = new Set(['', 'b', 'b/s', 'bit', 'bit/s', 'bits', 'bits/s']);
const BYTE_UNITS = new Set(['B', 'B/s', 'byte', 'byte/s', 'bytes', 'bytes/s']);

/**
 * Parses a rate such as "1G", "125MB/s", "500Mbit", "100M", "10KiB/s" into BYTES per second.
 *
 * Grammar: NUMBER [PREFIX] [UNIT], whitespace allowed between parts.
 *  - PREFIX: k/K, M, G, T (decimal, 10^3 steps) or Ki, Mi, Gi, Ti (binary, 2^10 steps).
 *  - UNIT: none, "b", "bit", "bits" (optionally "/s") => bits per second;
 *          "B", "byte", "bytes" (optionally "/s")    => bytes per second.
 * So "1G" = "1Gbit" = 1e9 bit/s = 125e6 B/s = "125MB/s".
 * Rejected on purpose: "bps"/"Bps" (tools disagree on whether tc's "mbps" means bytes),
 * lowercase "m"/"g" (milli is not a rate prefix; likely a typo), zero, negatives, non-numbers.
 */
export function parseRate(text: string): number {
  const src = text.trim();
  const m = /^(\d+(?:\.\d+)?|\.\d+)\s*([kKMGT]i?)?\s*(.*)$/.exec(src);
  if (!m) {
    throw new RateParseError(`invalid rate ${JSON.stringify(text)}: expected a number with an optional unit, e.g. "1G", "125MB/s", "500Mbit"`);
  }
  const value = Number(m[1]);
  const prefix = m[2] ?? '';
  const unit = m[3] ?? '';
  const scale = PREFIX[prefix];
  if (scale === undefined) throw new RateParseError(`invalid rate ${JSON.stringify(text)}: unknown prefix ${JSON.stringify(prefix)}`);
  let bytesPerUnit: number;
  if (BIT_UNITS.has(unit)) bytesPerUnit = 1 / 8;
  else if (BYTE_UNITS.has(unit)) bytesPerUnit = 1;
  else if (/^[bB]ps$/.test(unit)) {
    throw new RateParseError(`ambiguous rate ${JSON.stringify(text)}: write "${m[1]}${prefix}bit" for bits/s or "${m[1]}${prefix}B/s" for bytes/s`);
  } else if (/^[mg]/.test(unit)) {
    throw new RateParseError(`invalid rate ${JSON.stringify(text)}: use uppercase ${unit[0]!.toUpperCase()} for the prefix (e.g. "100Mbit")`);
  } else {
    throw new RateParseError(`invalid rate ${JSON.stringify(text)}: unknown unit ${JSON.stringify(unit)}; use bit, bit/s, B or B/s (no unit means bits/s)`);
  }
  const rate = value * scale * bytesPerUnit;
  if (!(rate > 0) || !Number.isFinite(rate)) {
    throw new RateParseError(`invalid rate ${JSON.stringify(text)}: must be a positive, finite rate`);
  }
  return rate;
}

/** Renders bytes/s the way the paper quotes rates, for logs and reports. */
export function formatRate(bytesPerSec: number): string {
  if (!Number.isFinite(bytesPerSec)) return 'unlimited';
  const bits = bytesPerSec * 8;
  if (bits >= 1e9) return `${+(bits / 1e9).toFixed(3)} Gbit/s`;
  if (bits >= 1e6) return `${+(bits / 1e6).toFixed(3)} Mbit/s`;
  if (bits >= 1e3) return `${+(bits / 1e3).toFixed(3)} kbit/s`;
  return `${+bits.toFixed(3)} bit/s`;
}

/** All rates in bytes per second. */
export interface DynamicRateConfig {
  mode: 'dynamic';
  /** Rate of round 1 and the floor thereafter (paper: 100 Mbit/s). */
  start: number;
  /** Added to the observed dirty rate to get the next round's limit (paper: 50 Mbit/s). */
  margin: number;
  /** Upper bound for pre-copy rounds (paper: 500 Mbit/s). */
  cap: number;
  /** Rate of the stop-and-copy round; Infinity = as fast as the link goes. */
  final: number;
}

export interface FixedRateConfig {
  mode: 'fixed';
  /** Used for every round, stop-and-copy included (`--bandwidth RATE`). */
  rate: number;
}

export type RateConfig = DynamicRateConfig | FixedRateConfig;

export const DEFAULT_DYNAMIC_RATE: Readonly<DynamicRateConfig> = Object.freeze({
  mode: 'dynamic',
  start: mbit(100),
  margin: mbit(50),
  cap: mbit(500),
  final: Infinity,
});

export function dynamicRate(overrides: Partial<Omit<DynamicRateConfig, 'mode'>> = {}): DynamicRateConfig {
  return { ...DEFAULT_DYNAMIC_RATE, ...overrides, mode: 'dynamic' };
}

export function fixedRate(rate: number): FixedRateConfig {
  return { mode: 'fixed', rate };
}

function validate(cfg: RateConfig): void {
  const positive = (name: string, v: number, allowInf: boolean): void => {
    if (!(v > 0) || (!allowInf && !Number.isFinite(v))) throw new RangeError(`rate ${name} must be positive${allowInf ? '' : ' and finite'}, got ${v}`);
  };
  if (cfg.mode === 'fixed') {
    positive('rate', cfg.rate, true);
    return;
  }
  positive('start', cfg.start, false);
  positive('cap', cfg.cap, true);
  positive('final', cfg.final, true);
  if (!(cfg.margin >= 0) || !Number.isFinite(cfg.margin)) throw new RangeError(`rate margin must be >= 0 and finite, got ${cfg.margin}`);
  if (cfg.cap < cfg.start) throw new RangeError(`rate cap (${formatRate(cfg.cap)}) is below start (${formatRate(cfg.start)})`);
}

/**
 * The per-round rate limit. Round 1 runs at `start`; after each round the caller reports
 * how many bytes the guest dirtied and how long the round took, and the next round's limit
 * becomes clamp(dirtyRate + margin, start, cap). The floor is `start` because the paper
 * calls it the minimum bandwidth; a near-idle guest should not crawl. The paper ends
 * pre-copy once the computed rate exceeds the cap; we clamp instead and expose
 * `saturated`, leaving termination to the round planner's stop rules.
 */
export class RateController {
  readonly config: RateConfig;
  private rate: number;
  private lastDirtyRate = 0;
  private wantedRate = 0;

  constructor(config: RateConfig = DEFAULT_DYNAMIC_RATE) {
    validate(config);
    this.config = config;
    this.rate = config.mode === 'fixed' ? config.rate : config.start;
    this.wantedRate = this.rate;
  }

  /** Limit for the pre-copy round about to run. */
  get current(): number {
    return this.rate;
  }

  /** Limit for the stop-and-copy round. */
  get final(): number {
    return this.config.mode === 'fixed' ? this.config.rate : this.config.final;
  }

  /** Dirty rate (bytes/s) measured in the last observed round. */
  get observedDirtyRate(): number {
    return this.lastDirtyRate;
  }

  /** True when the dirty rate plus margin wanted more than the cap allows. */
  get saturated(): boolean {
    return this.config.mode === 'dynamic' && this.wantedRate > this.config.cap;
  }

  /** Feeds one finished round; returns the limit for the next round. */
  observe(dirtiedBytes: number, durationMs: number): number {
    // A zero-length round gives no rate information; keep the previous estimate.
    if (durationMs > 0) this.lastDirtyRate = (dirtiedBytes * 1000) / durationMs;
    if (this.config.mode === 'fixed') return this.rate;
    const { start, margin, cap } = this.config;
    this.wantedRate = this.lastDirtyRate + margin;
    this.rate = Math.min(cap, Math.max(start, this.wantedRate));
    return this.rate;
  }
}

/** The migration senders' bucket in time: 20 ms of the rate absorbs a late timer (see Pacer). */
export const PACER_BURST_MS = 20;

/**
 * Token bucket. Callers ask before sending: `delay(bytes, rate, now)` charges the bytes and
 * returns how many ms to wait before sending them. The bucket may go into debt, so a burst
 * bigger than the bucket is still allowed, just paid for later; debt is held in bytes, so a
 * rate change between calls takes effect immediately. Time is a parameter so the engine
 * owns the clock and tests can use a virtual one.
 */
export class Pacer {
  readonly burstBytes: number;
  readonly burstMs: number;
  private tokens: number;
  private last: number | undefined;

  /**
   * `burstBytes`: how much may go out back-to-back after an idle period; at least `burstMs` of
   * the current rate. The time floor is what keeps a paced sender at its rate: a sleep ends
   * a millisecond or more late, and a bucket smaller than that much sending throws the
   * overshoot away on every wait (measured: 256 KiB frames at 1 Gbit/s with a one-frame bucket
   * went out at 78% of the rate).
   */
  constructor(burstBytes = 64 * 1024, burstMs = 0) {
    if (!(burstBytes >= 0) || !Number.isFinite(burstBytes)) throw new RangeError(`burst must be >= 0, got ${burstBytes}`);
    if (!(burstMs >= 0) || !Number.isFinite(burstMs)) throw new RangeError(`burst time must be >= 0, got ${burstMs}`);
    this.burstBytes = burstBytes;
    this.burstMs = burstMs;
    this.tokens = burstBytes;
  }

  /** Charges `bytes` at `rate` bytes/s at time `nowMs`; returns the wait in ms (0 = send now). */
  delay(bytes: number, rate: number, nowMs: number): number {
    if (!(rate > 0)) throw new RangeError(`rate must be positive, got ${rate}`);
    if (!Number.isFinite(rate)) {
      // Unpaced: nothing to wait for, and nothing owed when pacing resumes.
      this.tokens = this.burstBytes;
      this.last = nowMs;
      return 0;
    }
    // Clocks that step backwards (or repeated `now`) must not mint tokens.
    const elapsed = this.last === undefined ? 0 : Math.max(0, nowMs - this.last);
    this.last = this.last === undefined ? nowMs : Math.max(this.last, nowMs);
    const burst = Math.max(this.burstBytes, (this.burstMs * rate) / 1000);
    this.tokens = Math.min(burst, this.tokens + (elapsed * rate) / 1000);
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / rate;
  }

  /** Forgets history; the next call starts with a full bucket. */
  reset(): void {
    this.tokens = this.burstBytes;
    this.last = undefined;
  }
}
