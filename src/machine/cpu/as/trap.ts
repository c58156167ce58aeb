// Exceptions and interrupts: delegation, trap entry, xRET, and choosing which pending
// interrupt to take.

import * as S from './state';
import { PRV_M, PRV_S, PRV_U, MSTATUS_SIE, MSTATUS_MIE, MSTATUS_SPIE, MSTATUS_MPIE, MSTATUS_SPP,
  MSTATUS_MPP, MSTATUS_MPP_SHIFT, MSTATUS_MPRV, CAUSE_ECALL_S, EXIT_SBI, EXIT_FATAL,
  IRQ_MEI, IRQ_MSI, IRQ_MTI, IRQ_SEI, IRQ_SSI, IRQ_STI, MENVCFG_STCE } from './state';

const INTERRUPT_BIT: u64 = <u64>1 << 63;

/** Raises a synchronous exception for the instruction at pc. The current instruction must
 * not retire: callers return right after and the run loop sees `trapped`. */
export function raise(cause: u64, tval: u64): void {
  S.trapped = true;
  S.reservation = 0xffff_ffff_ffff_ffff;
  if (cause == CAUSE_ECALL_S && S.sbiInMachine) {
    // The machine is the SBI implementation: leave the slice, the host handles the call
    // and advances pc past the ecall.
    S.exitReason = EXIT_SBI;
    S.breakChunk = true;
    return;
  }
  enterTrap(cause, tval, S.pc);
}

function enterTrap(cause: u64, tval: u64, epc: u64): void {
  const isIrq = (cause & INTERRUPT_BIT) != 0;
  const code = cause & 63;
  const deleg = isIrq ? S.mideleg : S.medeleg;
  if (S.priv <= PRV_S && ((deleg >> code) & 1) != 0) {
    S.scause = cause;
    S.sepc = epc;
    S.stval = tval;
    let ms = S.mstatus;
    ms = (ms & ~MSTATUS_SPIE) | ((ms & MSTATUS_SIE) != 0 ? MSTATUS_SPIE : 0);
    ms = (ms & ~MSTATUS_SPP) | (S.priv == PRV_S ? MSTATUS_SPP : 0);
    ms &= ~MSTATUS_SIE;
    S.mstatus = ms;
    S.pc = vectorOf(S.stvec, code, isIrq);
    S.priv = PRV_S;
  } else {
    if (S.sbiInMachine) {
      // No M-mode firmware exists to handle this: the guest cannot recover.
      S.fatalCause = cause;
      S.exitReason = EXIT_FATAL;
      S.breakChunk = true;
      S.mepc = epc;
      S.mtval = tval;
      return;
    }
    S.mcause = cause;
    S.mepc = epc;
    S.mtval = tval;
    let ms = S.mstatus;
    ms = (ms & ~MSTATUS_MPIE) | ((ms & MSTATUS_MIE) != 0 ? MSTATUS_MPIE : 0);
    ms = (ms & ~MSTATUS_MPP) | (<u64>S.priv << MSTATUS_MPP_SHIFT);
    ms &= ~MSTATUS_MIE;
    S.mstatus = ms;
    S.pc = vectorOf(S.mtvec, code, isIrq);
    S.priv = PRV_M;
  }
  S.updateContexts();
}

@inline function vectorOf(tvec: u64, code: u64, isIrq: bool): u64 {
  const base = tvec & ~(<u64>3);
  return (tvec & 3) == 1 && isIrq ? base + (code << 2) : base;
}

export function doMret(): void {
  let ms = S.mstatus;
  const mpp = <u32>((ms & MSTATUS_MPP) >> MSTATUS_MPP_SHIFT);
  ms = (ms & ~MSTATUS_MIE) | ((ms & MSTATUS_MPIE) != 0 ? MSTATUS_MIE : 0);
  ms |= MSTATUS_MPIE;
  ms &= ~MSTATUS_MPP; // MPP <- U (least privileged)
  if (mpp != PRV_M) ms &= ~MSTATUS_MPRV;
  S.mstatus = ms;
  S.priv = mpp;
  S.pc = S.mepc;
  S.updateContexts();
  S.breakChunk = true;
}

export function doSret(): void {
  let ms = S.mstatus;
  const spp = (ms & MSTATUS_SPP) != 0 ? PRV_S : PRV_U;
  ms = (ms & ~MSTATUS_SIE) | ((ms & MSTATUS_SPIE) != 0 ? MSTATUS_SIE : 0);
  ms |= MSTATUS_SPIE;
  ms &= ~MSTATUS_SPP;
  ms &= ~MSTATUS_MPRV;
  S.mstatus = ms;
  S.priv = spp;
  S.pc = S.sepc;
  S.updateContexts();
  S.breakChunk = true;
}

/** The effective mip: software-written bits, device lines and timer comparisons. */
export function currentMip(now: u64): u64 {
  let hw = S.mipHw & ~((<u64>1 << IRQ_MTI) | (<u64>1 << IRQ_STI));
  if (now >= S.mtimecmp) hw |= <u64>1 << IRQ_MTI;
  let sw = S.mipSw;
  if ((S.menvcfg & MENVCFG_STCE) != 0) {
    // With Sstc, STIP is read-only and reflects stimecmp.
    sw &= ~(<u64>1 << IRQ_STI);
    if (now >= S.stimecmp) hw |= <u64>1 << IRQ_STI;
  }
  if (S.sbiInMachine && now >= S.sbiTimecmp) hw |= <u64>1 << IRQ_STI;
  return sw | hw;
}

/** Bits of mip that are pending and enabled in mie (global enables not considered). */
export function pendingEnabled(now: u64): u64 {
  return currentMip(now) & S.mie;
}

// Priority order from the privileged spec: MEI, MSI, MTI, SEI, SSI, STI.
@inline function pick(bits: u64): i32 {
  if ((bits & (<u64>1 << IRQ_MEI)) != 0) return IRQ_MEI;
  if ((bits & (<u64>1 << IRQ_MSI)) != 0) return IRQ_MSI;
  if ((bits & (<u64>1 << IRQ_MTI)) != 0) return IRQ_MTI;
  if ((bits & (<u64>1 << IRQ_SEI)) != 0) return IRQ_SEI;
  if ((bits & (<u64>1 << IRQ_SSI)) != 0) return IRQ_SSI;
  if ((bits & (<u64>1 << IRQ_STI)) != 0) return IRQ_STI;
  return -1;
}

/** Takes the highest-priority deliverable interrupt, if any. Returns true if one was taken. */
export function checkInterrupts(now: u64): bool {
  const pend = pendingEnabled(now);
  if (pend == 0) return false;
  const mBits = pend & ~S.mideleg;
  const sBits = pend & S.mideleg;
  const mOn = S.priv < PRV_M || (S.mstatus & MSTATUS_MIE) != 0;
  const sOn = S.priv < PRV_S || (S.priv == PRV_S && (S.mstatus & MSTATUS_SIE) != 0);
  let irq: i32 = -1;
  if (mOn && mBits != 0) irq = pick(mBits);
  else if (sOn && sBits != 0) irq = pick(sBits);
  if (irq < 0) return false;
  S.reservation = 0xffff_ffff_ffff_ffff;
  enterTrap(INTERRUPT_BIT | <u64>irq, 0, S.pc);
  return true;
}
