// The interpreter core's public face: what the TypeScript host may call. Everything takes
// and returns plain numbers (i64 as BigInt on the JS side), so the host needs no bindings.

import * as S from './state';
import { XREGS, FREGS, TLB_BASE, DIRTY_LOG, ACCESS_LOG, ABSENT_MAP, RAM_HOST, RAM_BASE, RVC_TABLE, CODE_MAP,
  JIT_CELLS, JIT_ENTRIES, JIT_CACHE, JIT_LENS, TLB_MASK, TLB_BYTES } from './layout';
import { flushTlbAll, flushTlbWrites, setRamSize, takeNewlyDirtyCount } from './mmu';
import { buildRvcTable } from './rvc';
import { csrRead, csrWrite } from './csr';
import { currentMip } from './trap';
import { now } from './host';
import { jitFlush, jitRetired, jitCompiled, jitStale, jitEvicted, JIT_SLOT_BASE } from './jit';

export { run, mulh as jitMulh, mulhsu as jitMulhsu, mulhu as jitMulhu } from './exec';
export { jitLoad, jitStore } from './jit';
export { fpExecute } from './fpu';

export function abortHandler(msg: usize, file: usize, line: u32, col: u32): void {
  unreachable();
}

export function layoutXRegs(): u32 { return <u32>XREGS; }
export function layoutFRegs(): u32 { return <u32>FREGS; }
export function layoutTlb(): u32 { return <u32>TLB_BASE; }
export function layoutDirtyLog(): u32 { return <u32>DIRTY_LOG; }
export function layoutAccessLog(): u32 { return <u32>ACCESS_LOG; }
export function layoutAbsentMap(): u32 { return <u32>ABSENT_MAP; }
export function layoutRamHost(): u32 { return <u32>RAM_HOST; }
export function layoutRamBase(): u64 { return RAM_BASE; }
export function layoutRvcTable(): u32 { return <u32>RVC_TABLE; }
export function layoutCodeMap(): u32 { return <u32>CODE_MAP; }
export function layoutJitCache(): u32 { return <u32>JIT_CACHE; }
export function layoutJitLens(): u32 { return <u32>JIT_LENS; }
export function layoutJitCells(): u32 { return <u32>JIT_CELLS; }
export function layoutTlbMask(): u32 { return TLB_MASK; }
export function layoutTlbBytes(): u32 { return <u32>TLB_BYTES; }
export function jitSlotBase(): u32 { return JIT_SLOT_BASE; }
export function jitEntries(): u32 { return JIT_ENTRIES; }

/** Turns translation on (executions before a block is translated) or off (0). Dropping the
 * cache on every change keeps an off JIT from ever running an old block. */
export function jitSetThreshold(t: u32): void { S.jitThreshold = t; jitFlush(); }
export function jitThreshold(): u32 { return S.jitThreshold; }
export function jitGetRetired(): u64 { return jitRetired; }
export function jitGetCompiled(): u32 { return jitCompiled; }
export function jitDropCache(): void { jitFlush(); }
export function jitGetStale(): u32 { return jitStale; }
export function jitGetEvicted(): u32 { return jitEvicted; }

/** Resets the hart to its power-on state with `ramBytes` of RAM. */
export function init(ramBytes: u64, hartId: u64, sbiInMachine: bool): void {
  buildRvcTable();
  setRamSize(ramBytes);
  memory.fill(XREGS, 0, 512);
  S.pc = RAM_BASE;
  S.priv = S.PRV_M;
  S.mstatus = S.MSTATUS_UXL_SXL;
  S.mie = 0; S.mipSw = 0; S.mipHw = 0; S.mideleg = 0; S.medeleg = 0;
  S.mtvec = 0; S.stvec = 0; S.mepc = 0; S.sepc = 0; S.mcause = 0; S.scause = 0;
  S.mtval = 0; S.stval = 0; S.mscratch = 0; S.sscratch = 0; S.satp = 0;
  S.mcounteren = 0; S.scounteren = 0; S.mcountinhibit = 0; S.menvcfg = 0; S.senvcfg = 0;
  S.stimecmp = 0xffff_ffff_ffff_ffff; S.mtimecmp = 0xffff_ffff_ffff_ffff; S.sbiTimecmp = 0xffff_ffff_ffff_ffff;
  S.instret = 0; S.reservation = 0xffff_ffff_ffff_ffff;
  S.hartId = hartId;
  S.sbiInMachine = sbiInMachine;
  S.exitReason = S.EXIT_BUDGET;
  S.trapped = false;
  flushTlbAll();
  jitFlush();
  S.blockStart = true;
  S.updateContexts();
}

/** Puts the hart where M-mode firmware would leave it before jumping to an S-mode kernel:
 * S-mode at `entry`, a0 = hart id, a1 = device tree, traps and interrupts delegated,
 * counters and Sstc open to S-mode, FPU on. */
export function enterSupervisor(entry: u64, dtb: u64): void {
  S.medeleg = 0xb1ff; // misaligned, access faults, illegal, breakpoint, ecall-U, page faults
  S.mideleg = 0x222;
  S.mcounteren = 0xffff_ffff;
  // scounteren's reset value is unspecified. Linux only opens `time` to user mode from its
  // SBI PMU driver, which we do not offer; without TM the vDSO's rdtime would trap.
  S.scounteren = 0x2;
  S.menvcfg = S.MENVCFG_STCE;
  S.mstatus = (S.mstatus & ~S.MSTATUS_FS) | (<u64>1 << S.MSTATUS_FS_SHIFT);
  store<u64>(XREGS + 10 * 8, S.hartId);
  store<u64>(XREGS + 11 * 8, dtb);
  S.priv = S.PRV_S;
  S.pc = entry;
  S.updateContexts();
}

export function getPc(): u64 { return S.pc; }
export function setPc(v: u64): void { S.pc = v; }
export function getPriv(): u32 { return S.priv; }
export function setPriv(p: u32): void { S.priv = p; S.updateContexts(); S.fetchVpn = 0xffff_ffff_ffff_ffff; }
export function getInstret(): u64 { return S.instret; }
export function getFatalCause(): u64 { return S.fatalCause; }
export function getMissingPage(): u64 { return S.missingPage; }
export function getCsr(csr: u32): u64 { return csrRead(csr); }
export function setCsr(csr: u32, v: u64): void { csrWrite(csr, v); }
export function getMtimecmp(): u64 { return S.mtimecmp; }
export function setMtimecmp(v: u64): void { S.mtimecmp = v; S.breakChunk = true; }
export function getSbiTimecmp(): u64 { return S.sbiTimecmp; }
export function setSbiTimecmp(v: u64): void { S.sbiTimecmp = v; S.breakChunk = true; }
export function getReservation(): u64 { return S.reservation; }
export function setReservation(v: u64): void { S.reservation = v; }
export function getMipHw(): u64 { return S.mipHw; }
export function getMipSw(): u64 { return S.mipSw; }
export function setMipSw(v: u64): void { S.mipSw = v; S.breakChunk = true; }

/** Drives an interrupt line into mip (bit = IRQ number: 3 MSI, 9 SEI, 11 MEI). */
export function setIrqLine(bit: u32, level: bool): void {
  const m: u64 = <u64>1 << bit;
  S.mipHw = level ? S.mipHw | m : S.mipHw & ~m;
  S.breakChunk = true;
}
/** Sets a software-pending bit (SBI send_ipi raises SSIP this way). */
export function raiseSoftwareIrq(bit: u32): void { S.mipSw |= <u64>1 << bit; S.breakChunk = true; }
/** Ends the current slice at the next instruction boundary. */
export function requestExit(): void { S.exitReason = S.EXIT_REQUEST; S.breakChunk = true; }

/** Earliest timer deadline that could wake the hart (ticks), for WFI sleeps. */
export function nextTimerDeadline(): u64 {
  let d: u64 = 0xffff_ffff_ffff_ffff;
  if ((S.mie & (<u64>1 << 7)) != 0 && S.mtimecmp < d) d = S.mtimecmp;
  if ((S.mie & (<u64>1 << 5)) != 0) {
    if ((S.menvcfg & S.MENVCFG_STCE) != 0 && S.stimecmp < d) d = S.stimecmp;
    if (S.sbiInMachine && S.sbiTimecmp < d) d = S.sbiTimecmp;
  }
  return d;
}
/** Whether an interrupt is pending and enabled in mie (what WFI waits for). */
export function interruptPending(): bool { return (currentMip(now()) & S.mie) != 0; }

export function tlbFlush(): void { flushTlbAll(); }
/** Re-arms dirty tracking once the host has taken the dirty log: the next store to each page
 * misses the write TLB and marks the log again. (The host takes the log itself, word by word
 * with atomic exchanges, since another thread may mark pages meanwhile.) */
export function tlbDropWrites(): void { flushTlbWrites(); }
/** Pages newly marked dirty since the last call (see mmu.ts newlyDirty); resets the count. */
export function takeNewlyDirty(): u32 { return takeNewlyDirtyCount(); }
export function setMipHw(v: u64): void { S.mipHw = v; S.breakChunk = true; }
