// Control and status registers: privilege checks, WARL legalisation and side effects
// (TLB context changes, interrupt re-evaluation).

import * as S from './state';
import { PRV_M, PRV_S, PRV_U, MSTATUS_SIE, MSTATUS_MIE, MSTATUS_SPIE, MSTATUS_MPIE, MSTATUS_SPP,
  MSTATUS_MPP, MSTATUS_FS, MSTATUS_MPRV, MSTATUS_SUM, MSTATUS_MXR, MSTATUS_TVM, MSTATUS_TW,
  MSTATUS_TSR, MSTATUS_UXL_SXL, MSTATUS_SD, MENVCFG_STCE, CAUSE_ILLEGAL_INSN } from './state';
import { raise, currentMip } from './trap';
import { flushTlbAll } from './mmu';
import { now } from './host';
import { fflags, frm, setFflags, setFrm } from './fpu';

// misa: RV64 with A C D F I M S U.
export const MISA: u64 = (<u64>2 << 62) | (1 << 0) | (1 << 2) | (1 << 3) | (1 << 5) | (1 << 8) | (1 << 12) | (1 << 18) | (1 << 20);

const MSTATUS_WRITABLE: u64 = MSTATUS_SIE | MSTATUS_MIE | MSTATUS_SPIE | MSTATUS_MPIE | MSTATUS_SPP |
  MSTATUS_MPP | MSTATUS_FS | MSTATUS_MPRV | MSTATUS_SUM | MSTATUS_MXR | MSTATUS_TVM | MSTATUS_TW | MSTATUS_TSR;
const SSTATUS_MASK: u64 = MSTATUS_SIE | MSTATUS_SPIE | MSTATUS_SPP | MSTATUS_FS | MSTATUS_SUM | MSTATUS_MXR;
const SSTATUS_READ: u64 = SSTATUS_MASK | MSTATUS_SD | (<u64>3 << 32);
// Exceptions M-mode may delegate: all but ecall-from-M and the reserved codes.
const MEDELEG_MASK: u64 = 0xb3ff;
const S_INTERRUPTS: u64 = (1 << 1) | (1 << 5) | (1 << 9);
const MIE_MASK: u64 = 0xaaa;
/** mip bits M-mode software may write: SSIP, STIP (unless Sstc owns it) and SEIP. */
const MIP_SW_MASK: u64 = (1 << 1) | (1 << 5) | (1 << 9);

export const CSR_FFLAGS: u32 = 0x001;
export const CSR_FRM: u32 = 0x002;
export const CSR_FCSR: u32 = 0x003;
export const CSR_SSTATUS: u32 = 0x100;
export const CSR_SIE: u32 = 0x104;
export const CSR_STVEC: u32 = 0x105;
export const CSR_SCOUNTEREN: u32 = 0x106;
export const CSR_SENVCFG: u32 = 0x10a;
export const CSR_SSCRATCH: u32 = 0x140;
export const CSR_SEPC: u32 = 0x141;
export const CSR_SCAUSE: u32 = 0x142;
export const CSR_STVAL: u32 = 0x143;
export const CSR_SIP: u32 = 0x144;
export const CSR_STIMECMP: u32 = 0x14d;
export const CSR_SATP: u32 = 0x180;
export const CSR_MSTATUS: u32 = 0x300;
export const CSR_MISA: u32 = 0x301;
export const CSR_MEDELEG: u32 = 0x302;
export const CSR_MIDELEG: u32 = 0x303;
export const CSR_MIE: u32 = 0x304;
export const CSR_MTVEC: u32 = 0x305;
export const CSR_MCOUNTEREN: u32 = 0x306;
export const CSR_MENVCFG: u32 = 0x30a;
export const CSR_MCOUNTINHIBIT: u32 = 0x320;
export const CSR_MSCRATCH: u32 = 0x340;
export const CSR_MEPC: u32 = 0x341;
export const CSR_MCAUSE: u32 = 0x342;
export const CSR_MTVAL: u32 = 0x343;
export const CSR_MIP: u32 = 0x344;
export const CSR_MCYCLE: u32 = 0xb00;
export const CSR_MINSTRET: u32 = 0xb02;
export const CSR_CYCLE: u32 = 0xc00;
export const CSR_TIME: u32 = 0xc01;
export const CSR_INSTRET: u32 = 0xc02;
export const CSR_MVENDORID: u32 = 0xf11;
export const CSR_MARCHID: u32 = 0xf12;
export const CSR_MIMPID: u32 = 0xf13;
export const CSR_MHARTID: u32 = 0xf14;
export const CSR_MCONFIGPTR: u32 = 0xf15;

/** Instructions retired in the current slice, not yet folded into S.instret. */
export let sliceRetired: u64 = 0;

@inline function fsOn(): bool { return (S.mstatus & MSTATUS_FS) != 0; }

export function markFsDirty(): void {
  S.mstatus |= MSTATUS_FS | MSTATUS_SD;
}

/** Whether a counter CSR (cycle/time/instret/hpm) is readable at the current privilege. */
function counterAllowed(csr: u32): bool {
  const bit = csr & 31;
  if (S.priv < PRV_M && ((S.mcounteren >> bit) & 1) == 0) return false;
  if (S.priv == PRV_U && ((S.scounteren >> bit) & 1) == 0) return false;
  return true;
}

function stimecmpAllowed(): bool {
  if (S.priv == PRV_M) return true;
  return (S.menvcfg & MENVCFG_STCE) != 0 && (S.mcounteren & 2) != 0 && S.priv == PRV_S;
}

/** Checks privilege and read-only rules; raises illegal instruction when denied. */
export function csrCheck(csr: u32, write: bool, insn: u32): bool {
  const minPriv = (csr >> 8) & 3;
  let ok = S.priv >= minPriv && !(write && (csr >> 10) == 3);
  if (ok) {
    if (csr == CSR_SATP && S.priv == PRV_S && (S.mstatus & MSTATUS_TVM) != 0) ok = false;
    else if (csr <= CSR_FCSR && !fsOn()) ok = false;
    else if (csr >= 0xc00 && csr <= 0xc1f) ok = counterAllowed(csr);
    else if (csr == CSR_STIMECMP) ok = stimecmpAllowed();
    else if (!csrExists(csr)) ok = false;
  }
  if (!ok) raise(CAUSE_ILLEGAL_INSN, <u64>insn);
  return ok;
}

function csrExists(csr: u32): bool {
  switch (csr) {
    case CSR_FFLAGS: case CSR_FRM: case CSR_FCSR:
    case CSR_SSTATUS: case CSR_SIE: case CSR_STVEC: case CSR_SCOUNTEREN: case CSR_SENVCFG:
    case CSR_SSCRATCH: case CSR_SEPC: case CSR_SCAUSE: case CSR_STVAL: case CSR_SIP:
    case CSR_STIMECMP: case CSR_SATP:
    case CSR_MSTATUS: case CSR_MISA: case CSR_MEDELEG: case CSR_MIDELEG: case CSR_MIE:
    case CSR_MTVEC: case CSR_MCOUNTEREN: case CSR_MENVCFG: case CSR_MCOUNTINHIBIT:
    case CSR_MSCRATCH: case CSR_MEPC: case CSR_MCAUSE: case CSR_MTVAL: case CSR_MIP:
    case CSR_MVENDORID: case CSR_MARCHID: case CSR_MIMPID: case CSR_MHARTID: case CSR_MCONFIGPTR:
      return true;
  }
  // Counters, HPM counters/events and PMP exist (HPM read as zero, PMP is accepted and
  // ignored: there is no M-mode firmware to protect).
  if (csr >= 0xc00 && csr <= 0xc1f) return true;
  if (csr >= 0xb00 && csr <= 0xb1f) return true;
  if (csr >= 0x323 && csr <= 0x33f) return true;
  if (csr >= 0x3a0 && csr <= 0x3ef) return true;
  return false;
}

/** Reads a CSR without privilege checks (also used by save/restore). */
export function csrRead(csr: u32): u64 {
  switch (csr) {
    case CSR_FFLAGS: return <u64>fflags;
    case CSR_FRM: return <u64>frm;
    case CSR_FCSR: return <u64>((frm << 5) | fflags);
    case CSR_SSTATUS: return S.mstatus & SSTATUS_READ;
    case CSR_SIE: return S.mie & S.mideleg;
    case CSR_STVEC: return S.stvec;
    case CSR_SCOUNTEREN: return <u64>S.scounteren;
    case CSR_SENVCFG: return S.senvcfg;
    case CSR_SSCRATCH: return S.sscratch;
    case CSR_SEPC: return S.sepc;
    case CSR_SCAUSE: return S.scause;
    case CSR_STVAL: return S.stval;
    case CSR_SIP: return currentMip(now()) & S.mideleg;
    case CSR_STIMECMP: return S.stimecmp;
    case CSR_SATP: return S.satp;
    case CSR_MSTATUS: return S.mstatus;
    case CSR_MISA: return MISA;
    case CSR_MEDELEG: return S.medeleg;
    case CSR_MIDELEG: return S.mideleg;
    case CSR_MIE: return S.mie;
    case CSR_MTVEC: return S.mtvec;
    case CSR_MCOUNTEREN: return <u64>S.mcounteren;
    case CSR_MENVCFG: return S.menvcfg;
    case CSR_MCOUNTINHIBIT: return <u64>S.mcountinhibit;
    case CSR_MSCRATCH: return S.mscratch;
    case CSR_MEPC: return S.mepc;
    case CSR_MCAUSE: return S.mcause;
    case CSR_MTVAL: return S.mtval;
    case CSR_MIP: return currentMip(now());
    case CSR_MHARTID: return S.hartId;
    case CSR_TIME: return now();
    case CSR_CYCLE: case CSR_INSTRET: case CSR_MCYCLE: case CSR_MINSTRET:
      return S.instret + sliceRetired;
  }
  return 0;
}

/** Writes a CSR with WARL legalisation and side effects (no privilege checks). */
export function csrWrite(csr: u32, v: u64): void {
  switch (csr) {
    case CSR_FFLAGS: setFflags(<u32>v & 31); markFsDirty(); break;
    case CSR_FRM: setFrm(<u32>v & 7); markFsDirty(); break;
    case CSR_FCSR: setFflags(<u32>v & 31); setFrm((<u32>v >> 5) & 7); markFsDirty(); break;
    case CSR_SSTATUS: writeMstatus((S.mstatus & ~SSTATUS_MASK) | (v & SSTATUS_MASK)); break;
    case CSR_SIE: S.mie = (S.mie & ~S.mideleg) | (v & S.mideleg & MIE_MASK); S.breakChunk = true; break;
    case CSR_STVEC: S.stvec = legalTvec(v); break;
    case CSR_SCOUNTEREN: S.scounteren = <u32>v; break;
    case CSR_SENVCFG: S.senvcfg = v & 1; break; // FIOM only
    case CSR_SSCRATCH: S.sscratch = v; break;
    case CSR_SEPC: S.sepc = v & ~<u64>1; break;
    case CSR_SCAUSE: S.scause = v; break;
    case CSR_STVAL: S.stval = v; break;
    case CSR_SIP: {
      // Only SSIP is writable through sip (and only when delegated).
      const m: u64 = S.mideleg & 2;
      S.mipSw = (S.mipSw & ~m) | (v & m);
      S.breakChunk = true;
      break;
    }
    case CSR_STIMECMP: S.stimecmp = v; S.breakChunk = true; break;
    case CSR_SATP: {
      const mode = v >> 60;
      // Sv39 only; other modes are ignored (WARL). ASIDs are not implemented (ASIDLEN 0),
      // so Linux flushes on every switch, which keeps a VPN-tagged TLB correct.
      if (mode == 0 || mode == 8) {
        S.satp = v & ((<u64>0xf << 60) | 0xfff_ffff_ffff);
        flushTlbAll();
      }
      break;
    }
    case CSR_MSTATUS: writeMstatus((S.mstatus & ~MSTATUS_WRITABLE) | (v & MSTATUS_WRITABLE)); break;
    case CSR_MEDELEG: S.medeleg = v & MEDELEG_MASK; break;
    case CSR_MIDELEG: S.mideleg = v & S_INTERRUPTS; S.breakChunk = true; break;
    case CSR_MIE: S.mie = v & MIE_MASK; S.breakChunk = true; break;
    case CSR_MTVEC: S.mtvec = legalTvec(v); break;
    case CSR_MCOUNTEREN: S.mcounteren = <u32>v; break;
    case CSR_MENVCFG: S.menvcfg = v & (MENVCFG_STCE | 1); S.breakChunk = true; break;
    case CSR_MCOUNTINHIBIT: S.mcountinhibit = <u32>v & 0xfffffffd; break;
    case CSR_MSCRATCH: S.mscratch = v; break;
    case CSR_MEPC: S.mepc = v & ~<u64>1; break;
    case CSR_MCAUSE: S.mcause = v; break;
    case CSR_MTVAL: S.mtval = v; break;
    case CSR_MIP: {
      let m = MIP_SW_MASK;
      if ((S.menvcfg & MENVCFG_STCE) != 0) m &= ~(<u64>1 << 5);
      S.mipSw = (S.mipSw & ~m) | (v & m);
      S.breakChunk = true;
      break;
    }
    case CSR_MCYCLE: case CSR_MINSTRET: S.instret = v - sliceRetired; break;
  }
}

function legalTvec(v: u64): u64 {
  // Modes 2 and 3 are reserved: fall back to direct.
  return (v & 3) >= 2 ? v & ~<u64>3 : v;
}

function writeMstatus(v: u64): void {
  const old = S.mstatus;
  // MPP=2 (H) does not exist; keep it legal.
  if (((v & MSTATUS_MPP) >> 11) == 2) v &= ~MSTATUS_MPP;
  v = (v & ~MSTATUS_SD) | MSTATUS_UXL_SXL;
  if ((v & MSTATUS_FS) == MSTATUS_FS) v |= MSTATUS_SD;
  S.mstatus = v;
  if (((old ^ v) & MSTATUS_MXR) != 0) flushTlbAll();
  S.updateContexts();
  S.breakChunk = true;
}

export function setSliceRetired(n: u64): void { sliceRetired = n; }
