// The Supervisor Binary Interface, implemented by the VMM itself (SBI spec v2.0). The hart
// exits its interpreter slice on an S-mode ecall; handleEcall() reads a7/a6/a0..a5, writes
// the sbiret into a0/a1 and tells the machine whether to keep running. The core advances
// pc past the ecall. Guest mistakes become SBI error codes; nothing here throws for them.

import type { ConsoleBackend } from '../devices/types.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { SbiHart, SbiOutcome } from './types.js';

export const SBI_SUCCESS = 0;
export const SBI_ERR_FAILED = -1;
export const SBI_ERR_NOT_SUPPORTED = -2;
export const SBI_ERR_INVALID_PARAM = -3;
export const SBI_ERR_DENIED = -4;
export const SBI_ERR_INVALID_ADDRESS = -5;
export const SBI_ERR_ALREADY_AVAILABLE = -6;

export const EID_LEGACY_SET_TIMER = 0x00;
export const EID_LEGACY_CONSOLE_PUTCHAR = 0x01;
export const EID_LEGACY_CONSOLE_GETCHAR = 0x02;
export const EID_LEGACY_SHUTDOWN = 0x08;
export const EID_BASE = 0x10;
export const EID_TIME = 0x54494d45;
export const EID_IPI = 0x735049;
export const EID_RFENCE = 0x52464e43;
export const EID_HSM = 0x48534d;
export const EID_SRST = 0x53525354;
export const EID_DBCN = 0x4442434e;

/** Spec version 2.0: major in bits 30:24, minor in 23:0. */
export const SBI_SPEC_VERSION = 2 << 24;
/** Implementation ID: "FERY" in ASCII. The registry (ext-base, "SBI Implementation IDs")
 * allocates small integers (0..11 at the time of writing); a four-character code cannot
 * collide with those and makes "SBI implementation ID=0x46455259" in dmesg recognisable. */
export const SBI_IMPL_ID = 0x46455259;
/** major << 16 | minor of ferry's SBI implementation. */
export const SBI_IMPL_VERSION = (0 << 16) | 1;

/** HSM hart states. */
const HSM_STARTED = 0;
/** SBI v2.0 DBCN says INVALID_PARAM for an inaccessible buffer (v3.0 moved shared memory
 * checks to INVALID_ADDRESS); we implement v2.0. */
const DBCN_BAD_BUFFER = SBI_ERR_INVALID_PARAM;
/** DBCN writes may be partial; bounding one call keeps a huge num_bytes from stalling the VMM. */
const DBCN_MAX_CHUNK = 64 * 1024;

const MASK64 = (1n << 64n) - 1n;
const A0 = 10;

/** Source of typed bytes for console_getchar / console_read; absent means no input. The
 * UART normally owns the ConsoleBackend's input, so this is wired separately. */
export interface SbiConsoleInput {
  /** Takes up to `max` buffered bytes without blocking. */
  read(max: number): Uint8Array;
}

export interface SbiOptions {
  /** Every hart of the machine indexed by hart id (defaults to just `hart`). */
  harts?: readonly SbiHart[];
  input?: SbiConsoleInput;
}

interface SbiRet { error: number; value: bigint }

const CONTINUE: SbiOutcome = { kind: 'continue' };

export class Sbi {
  private readonly harts: readonly SbiHart[];
  private readonly input: SbiConsoleInput | undefined;

  constructor(
    private readonly hart: SbiHart,
    private readonly memory: GuestMemory,
    private readonly console: ConsoleBackend,
    options: SbiOptions = {},
  ) {
    this.harts = options.harts ?? [hart];
    this.input = options.input;
  }

  handleEcall(): SbiOutcome {
    const eid = this.hart.getX(17);
    const fid = this.hart.getX(16);
    if (eid < 0x10n) return this.legacy(Number(eid));
    if (eid > 0xffffffffn) return this.reply({ error: SBI_ERR_NOT_SUPPORTED, value: 0n });
    const a = [0, 1, 2, 3, 4, 5].map((i) => this.hart.getX(A0 + i)) as [bigint, bigint, bigint, bigint, bigint, bigint];
    // FIDs are 32-bit; anything larger cannot name a function.
    const f = fid > 0xffffffffn ? -1 : Number(fid);
    switch (Number(eid)) {
      case EID_BASE: return this.reply(this.base(f, a[0]));
      case EID_TIME: return this.reply(f === 0 ? this.setTimer(a[0]) : notSupported());
      case EID_IPI: return this.reply(f === 0 ? this.sendIpi(a[0], a[1]) : notSupported());
      case EID_RFENCE: return this.reply(this.rfence(f, a[0], a[1]));
      case EID_HSM: return this.reply(this.hsm(f, a[0]));
      case EID_SRST: return f === 0 ? this.systemReset(a[0], a[1]) : this.reply(notSupported());
      case EID_DBCN: return this.reply(this.dbcn(f, a[0], a[1], a[2]));
      default: return this.reply(notSupported());
    }
  }

  /** Extensions probe_extension reports as present. */
  static readonly extensions: readonly number[] = [
    EID_LEGACY_SET_TIMER, EID_LEGACY_CONSOLE_PUTCHAR, EID_LEGACY_CONSOLE_GETCHAR, EID_LEGACY_SHUTDOWN,
    EID_BASE, EID_TIME, EID_IPI, EID_RFENCE, EID_HSM, EID_SRST, EID_DBCN,
  ];

  private reply(r: SbiRet): SbiOutcome {
    this.hart.setX(A0, BigInt.asUintN(64, BigInt(r.error)));
    this.hart.setX(A0 + 1, r.value & MASK64);
    return CONTINUE;
  }

  /** Legacy (v0.1) calls return a single value in a0 and leave a1 alone. */
  private legacy(eid: number): SbiOutcome {
    const a0 = this.hart.getX(A0);
    let ret = 0n;
    switch (eid) {
      case EID_LEGACY_SET_TIMER: this.hart.setTimer(a0); break;
      case EID_LEGACY_CONSOLE_PUTCHAR:
        ret = this.writeConsole(Uint8Array.of(Number(a0 & 0xffn))) ? 0n : BigInt(SBI_ERR_FAILED);
        break;
      case EID_LEGACY_CONSOLE_GETCHAR: {
        const b = this.input?.read(1);
        ret = b && b.length > 0 ? BigInt(b[0]!) : -1n;
        break;
      }
      case EID_LEGACY_SHUTDOWN: return { kind: 'shutdown' };
      default: ret = BigInt(SBI_ERR_NOT_SUPPORTED);
    }
    this.hart.setX(A0, BigInt.asUintN(64, ret));
    return CONTINUE;
  }

  private base(fid: number, a0: bigint): SbiRet {
    switch (fid) {
      case 0: return ok(SBI_SPEC_VERSION);
      case 1: return ok(SBI_IMPL_ID);
      case 2: return ok(SBI_IMPL_VERSION);
      case 3: {
        // The EID argument is a signed long; compare as the unsigned 32-bit EID space.
        const probed = a0 <= 0xffffffffn ? Number(a0) : -1;
        return ok(Sbi.extensions.includes(probed) ? 1 : 0);
      }
      case 4: case 5: case 6: return ok(0);
      default: return notSupported();
    }
  }

  private setTimer(deadline: bigint): SbiRet {
    this.hart.setTimer(deadline);
    return ok(0);
  }

  private sendIpi(mask: bigint, base: bigint): SbiRet {
    const targets = this.resolveHarts(mask, base);
    if (!targets) return { error: SBI_ERR_INVALID_PARAM, value: 0n };
    for (const h of targets) h.raiseSoftwareInterrupt();
    return ok(0);
  }

  private rfence(fid: number, mask: bigint, base: bigint): SbiRet {
    // 0 fence.i, 1 sfence.vma, 2 sfence.vma.asid. 3..6 are hypervisor fences: no H extension.
    if (fid < 0 || fid > 2) return notSupported();
    const targets = this.resolveHarts(mask, base);
    if (!targets) return { error: SBI_ERR_INVALID_PARAM, value: 0n };
    // A full flush is a valid (over-)implementation of every ranged/ASID fence, and the
    // interpreter's decode cache is dropped with the TLB, which covers fence.i.
    for (const h of targets) h.flushTlb();
    return ok(0);
  }

  /** The harts named by an SBI hart mask; undefined if any named hart does not exist. */
  private resolveHarts(mask: bigint, base: bigint): SbiHart[] | undefined {
    if (base === MASK64) return [...this.harts];
    const out: SbiHart[] = [];
    for (let bit = 0n; bit < 64n; bit++) {
      if (!((mask >> bit) & 1n)) continue;
      const id = base + bit;
      const h = id < BigInt(this.harts.length) ? this.harts[Number(id)] : undefined;
      if (!h) return undefined;
      out.push(h);
    }
    return out;
  }

  private hsm(fid: number, a0: bigint): SbiRet {
    switch (fid) {
      case 0: // hart_start: every existing hart is running already (no hotplug yet).
        return { error: this.validHart(a0) ? SBI_ERR_ALREADY_AVAILABLE : SBI_ERR_INVALID_PARAM, value: 0n };
      case 1: // hart_stop: stopping the only running hart would halt the machine silently.
        return { error: SBI_ERR_FAILED, value: 0n };
      case 2:
        return this.validHart(a0) ? ok(HSM_STARTED) : { error: SBI_ERR_INVALID_PARAM, value: 0n };
      case 3: return this.hartSuspend(a0);
      default: return notSupported();
    }
  }

  private hartSuspend(type: bigint): SbiRet {
    if (type > 0xffffffffn) return { error: SBI_ERR_INVALID_PARAM, value: 0n };
    const t = Number(type);
    // Retentive: default 0 or platform-specific 0x10000000..0x7fffffff. Returning at once
    // is a legal retentive suspend (as if a wake-up event arrived immediately).
    if (t === 0 || (t >= 0x10000000 && t <= 0x7fffffff)) return ok(0);
    // Non-retentive (default or platform-specific) would need a resume path: not provided.
    if (t === 0x80000000 || t >= 0x90000000) return notSupported();
    return { error: SBI_ERR_INVALID_PARAM, value: 0n };
  }

  private validHart(id: bigint): boolean {
    return id >= 0n && id < BigInt(this.harts.length);
  }

  private systemReset(type: bigint, reason: bigint): SbiOutcome {
    const reasonOk = reason <= 1n || (reason >= 0xe0000000n && reason <= 0xffffffffn);
    let outcome: SbiOutcome | undefined;
    let error = SBI_ERR_INVALID_PARAM;
    if (type === 0n) outcome = { kind: 'shutdown' };
    else if (type === 1n || type === 2n) outcome = { kind: 'reboot' };
    else if (type >= 0xf0000000n && type <= 0xffffffffn) error = SBI_ERR_NOT_SUPPORTED;
    if (outcome && reasonOk) return outcome;
    return this.reply({ error: outcome ? SBI_ERR_INVALID_PARAM : error, value: 0n });
  }

  private dbcn(fid: number, a0: bigint, lo: bigint, hi: bigint): SbiRet {
    if (fid === 2) {
      return this.writeConsole(Uint8Array.of(Number(a0 & 0xffn))) ? ok(0) : { error: SBI_ERR_FAILED, value: 0n };
    }
    if (fid !== 0 && fid !== 1) return notSupported();
    if (a0 === 0n) return ok(0);
    const len = a0 > BigInt(DBCN_MAX_CHUNK) ? DBCN_MAX_CHUNK : Number(a0);
    // On RV64 a physical address fits in base_addr_lo; a non-zero high half is out of range.
    // The whole requested range must be RAM even if only a chunk is transferred.
    if (hi !== 0n || a0 > BigInt(this.memory.ramSize) || !this.memory.contains(lo, Number(a0))) {
      return { error: DBCN_BAD_BUFFER, value: 0n };
    }
    if (fid === 0) {
      return this.writeConsole(this.memory.read(lo, len)) ? ok(len) : { error: SBI_ERR_FAILED, value: 0n };
    }
    const bytes = this.input?.read(len) ?? new Uint8Array(0);
    const n = Math.min(bytes.length, len);
    if (n > 0) this.memory.write(lo, bytes.subarray(0, n));
    return ok(n);
  }

  /** false when the backend failed (a closed pipe, say): reported to the guest as an I/O error. */
  private writeConsole(bytes: Uint8Array): boolean {
    try {
      this.console.write(bytes);
      return true;
    } catch {
      return false;
    }
  }
}

function ok(value: number | bigint): SbiRet {
  return { error: SBI_SUCCESS, value: BigInt(value) };
}

function notSupported(): SbiRet {
  return { error: SBI_ERR_NOT_SUPPORTED, value: 0n };
}
