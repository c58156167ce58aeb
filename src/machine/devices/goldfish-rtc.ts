// Goldfish RTC: a nanosecond wall clock with one alarm. Guest time is host time plus an
// offset the guest sets by writing TIME_HIGH then TIME_LOW; keeping only the offset in the
// snapshot means a migrated guest's clock keeps following real time on the destination.
//
// The device has no timer of its own: the machine calls poll() from its event loop (and
// can use nextDeadlineNs() to sleep precisely); register accesses poll too.

import type { AccessSize, IrqLine, MmioDevice } from './types.js';
import { checkBool, checkI64, checkU64, checkUint } from '../state-check.js';

export const GOLDFISH_RTC_SIZE = 0x1000;
const TIME_LOW = 0x00;
const TIME_HIGH = 0x04;
const ALARM_LOW = 0x08;
const ALARM_HIGH = 0x0c;
const IRQ_ENABLED = 0x10;
const CLEAR_ALARM = 0x14;
const ALARM_STATUS = 0x18;
const CLEAR_INTERRUPT = 0x1c;
const MASK64 = (1n << 64n) - 1n;

/** Nanoseconds since the Unix epoch. */
export type NanoClock = () => bigint;

export interface GoldfishRtcState {
  /** Guest time minus host time, ns (decimal i64). */
  offsetNs: string;
  /** TIME_HIGH as latched by the last TIME_LOW read. */
  timeHighLatch: number;
  /** Pending TIME_HIGH written by the guest, applied by the next TIME_LOW write. */
  timeHighWrite: number;
  /** Armed alarm in guest ns (decimal u64). */
  alarmNs: string;
  /** Pending ALARM_HIGH, applied by the next ALARM_LOW write. */
  alarmHighWrite: number;
  alarmArmed: boolean;
  irqEnabled: boolean;
  irqPending: boolean;
}

export class GoldfishRtc implements MmioDevice {
  readonly name = 'goldfish-rtc';
  private offsetNs = 0n;
  private timeHighLatch = 0;
  private timeHighWrite = 0;
  private alarmNs = 0n;
  private alarmHighWrite = 0;
  private alarmArmed = false;
  private irqEnabled = false;
  private irqPending = false;
  private irqLevel = false;

  constructor(private readonly clock: NanoClock, private readonly irq: IrqLine) {}

  /** Current guest time in ns. */
  now(): bigint {
    return BigInt.asUintN(64, this.clock() + this.offsetNs);
  }

  /** Fires the alarm if its time has come. */
  poll(): void {
    if (this.alarmArmed && this.now() >= this.alarmNs) {
      this.alarmArmed = false;
      this.irqPending = true;
    }
    this.updateIrq();
  }

  /** Host-clock ns at which the armed alarm fires, for the machine's scheduler. */
  nextDeadlineNs(): bigint | undefined {
    return this.alarmArmed ? this.alarmNs - this.offsetNs : undefined;
  }

  read(offset: number, size: AccessSize): number {
    if (size !== 4) return 0;
    this.poll();
    switch (offset) {
      case TIME_LOW: {
        // Latching keeps a LOW-then-HIGH read pair consistent across a 2^32 ns carry.
        const t = this.now();
        this.timeHighLatch = Number(t >> 32n);
        return Number(t & 0xffffffffn);
      }
      case TIME_HIGH: return this.timeHighLatch;
      case ALARM_LOW: return Number(this.alarmNs & 0xffffffffn);
      case ALARM_HIGH: return Number(this.alarmNs >> 32n);
      case IRQ_ENABLED: return this.irqEnabled ? 1 : 0;
      case ALARM_STATUS: return this.alarmArmed ? 1 : 0;
      default: return 0;
    }
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (size !== 4) return;
    const v = value >>> 0;
    switch (offset) {
      case TIME_LOW: {
        const target = (BigInt(this.timeHighWrite) << 32n) | BigInt(v);
        this.offsetNs = BigInt.asIntN(64, target - this.clock());
        break;
      }
      case TIME_HIGH: this.timeHighWrite = v; break;
      case ALARM_LOW:
        this.alarmNs = ((BigInt(this.alarmHighWrite) << 32n) | BigInt(v)) & MASK64;
        this.alarmArmed = true;
        break;
      case ALARM_HIGH: this.alarmHighWrite = v; break;
      case IRQ_ENABLED: this.irqEnabled = (v & 1) === 1; break;
      case CLEAR_ALARM: this.alarmArmed = false; break;
      case CLEAR_INTERRUPT: this.irqPending = false; break;
      default: break;
    }
    this.poll();
  }

  save(): GoldfishRtcState {
    return {
      offsetNs: this.offsetNs.toString(), timeHighLatch: this.timeHighLatch, timeHighWrite: this.timeHighWrite,
      alarmNs: this.alarmNs.toString(), alarmHighWrite: this.alarmHighWrite,
      alarmArmed: this.alarmArmed, irqEnabled: this.irqEnabled, irqPending: this.irqPending,
    };
  }

  restore(s: GoldfishRtcState): void {
    const n = this.name;
    const offsetNs = checkI64(n, 'offsetNs', s.offsetNs);
    const alarmNs = checkU64(n, 'alarmNs', s.alarmNs);
    const timeHighLatch = checkUint(n, 'timeHighLatch', s.timeHighLatch, 0xffffffff);
    const timeHighWrite = checkUint(n, 'timeHighWrite', s.timeHighWrite, 0xffffffff);
    const alarmHighWrite = checkUint(n, 'alarmHighWrite', s.alarmHighWrite, 0xffffffff);
    const alarmArmed = checkBool(n, 'alarmArmed', s.alarmArmed);
    const irqEnabled = checkBool(n, 'irqEnabled', s.irqEnabled);
    const irqPending = checkBool(n, 'irqPending', s.irqPending);
    this.offsetNs = offsetNs;
    this.alarmNs = alarmNs;
    this.timeHighLatch = timeHighLatch;
    this.timeHighWrite = timeHighWrite;
    this.alarmHighWrite = alarmHighWrite;
    this.alarmArmed = alarmArmed;
    this.irqEnabled = irqEnabled;
    this.irqPending = irqPending;
    this.updateIrq(true);
    this.poll();
  }

  private updateIrq(force = false): void {
    const level = this.irqPending && this.irqEnabled;
    if (force || level !== this.irqLevel) {
      this.irqLevel = level;
      this.irq.set(level);
    }
  }
}
