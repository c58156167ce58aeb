// Architectural state of the hart that is not in registers memory, plus the derived
// fields the hot paths use (TLB context pointers). Kept as module globals: V8 compiles
// wasm globals to plain slots, cheaper than memory loads on every instruction.

import { TLB_BASE, TLB_BYTES, TLB_CTX_BYTES } from './layout';

export const PRV_U: u32 = 0;
export const PRV_S: u32 = 1;
export const PRV_M: u32 = 3;

// mstatus bits
export const MSTATUS_SIE: u64 = 1 << 1;
export const MSTATUS_MIE: u64 = 1 << 3;
export const MSTATUS_SPIE: u64 = 1 << 5;
export const MSTATUS_MPIE: u64 = 1 << 7;
export const MSTATUS_SPP: u64 = 1 << 8;
export const MSTATUS_MPP_SHIFT: u64 = 11;
export const MSTATUS_MPP: u64 = 3 << 11;
export const MSTATUS_FS_SHIFT: u64 = 13;
export const MSTATUS_FS: u64 = 3 << 13;
export const MSTATUS_MPRV: u64 = 1 << 17;
export const MSTATUS_SUM: u64 = 1 << 18;
export const MSTATUS_MXR: u64 = 1 << 19;
export const MSTATUS_TVM: u64 = 1 << 20;
export const MSTATUS_TW: u64 = 1 << 21;
export const MSTATUS_TSR: u64 = 1 << 22;
export const MSTATUS_UXL_SXL: u64 = (<u64>2 << 32) | (<u64>2 << 34);
export const MSTATUS_SD: u64 = <u64>1 << 63;

// interrupt bits (mip / mie)
export const IRQ_SSI: u32 = 1;
export const IRQ_MSI: u32 = 3;
export const IRQ_STI: u32 = 5;
export const IRQ_MTI: u32 = 7;
export const IRQ_SEI: u32 = 9;
export const IRQ_MEI: u32 = 11;

export const MENVCFG_STCE: u64 = <u64>1 << 63;

// exception causes
export const CAUSE_MISALIGNED_FETCH: u64 = 0;
export const CAUSE_FETCH_ACCESS: u64 = 1;
export const CAUSE_ILLEGAL_INSN: u64 = 2;
export const CAUSE_BREAKPOINT: u64 = 3;
export const CAUSE_MISALIGNED_LOAD: u64 = 4;
export const CAUSE_LOAD_ACCESS: u64 = 5;
export const CAUSE_MISALIGNED_STORE: u64 = 6;
export const CAUSE_STORE_ACCESS: u64 = 7;
export const CAUSE_ECALL_U: u64 = 8;
export const CAUSE_ECALL_S: u64 = 9;
export const CAUSE_ECALL_M: u64 = 11;
export const CAUSE_FETCH_PAGE_FAULT: u64 = 12;
export const CAUSE_LOAD_PAGE_FAULT: u64 = 13;
export const CAUSE_STORE_PAGE_FAULT: u64 = 15;

// Exit reasons returned by run(): why the slice ended.
export const EXIT_BUDGET: i32 = 0;
export const EXIT_WFI: i32 = 1;
export const EXIT_SBI: i32 = 2;
export const EXIT_REQUEST: i32 = 3;
export const EXIT_FATAL: i32 = 4;
/** An access touched a page that is not in RAM (post-copy, swapped out): `missingPage`. */
export const EXIT_PAGE_MISSING: i32 = 5;

export let pc: u64 = 0;
export let priv: u32 = PRV_M;
export let mstatus: u64 = MSTATUS_UXL_SXL;
export let mie: u64 = 0;
/** mip bits written by software (SSIP, STIP without Sstc, SEIP). */
export let mipSw: u64 = 0;
/** mip bits driven by devices and timers (MSIP, MTIP, MEIP, SEIP line, STIP). */
export let mipHw: u64 = 0;
export let mideleg: u64 = 0;
export let medeleg: u64 = 0;
export let mtvec: u64 = 0;
export let stvec: u64 = 0;
export let mepc: u64 = 0;
export let sepc: u64 = 0;
export let mcause: u64 = 0;
export let scause: u64 = 0;
export let mtval: u64 = 0;
export let stval: u64 = 0;
export let mscratch: u64 = 0;
export let sscratch: u64 = 0;
export let satp: u64 = 0;
export let mcounteren: u32 = 0;
export let scounteren: u32 = 0;
export let mcountinhibit: u32 = 0;
export let menvcfg: u64 = 0;
export let senvcfg: u64 = 0;
export let stimecmp: u64 = 0xffff_ffff_ffff_ffff;
export let mtimecmp: u64 = 0xffff_ffff_ffff_ffff;
/** Deadline programmed through SBI set_timer (raises STIP when Sstc is off). */
export let sbiTimecmp: u64 = 0xffff_ffff_ffff_ffff;
export let instret: u64 = 0;
/** LR/SC reservation: physical-agnostic virtual address, or -1 when none. */
export let reservation: u64 = 0xffff_ffff_ffff_ffff;
export let hartId: u64 = 0;
/** When set, S-mode ecalls exit to the host (the machine implements SBI). */
export let sbiInMachine: bool = false;

/** Set by anything that may make an interrupt deliverable; ends the current chunk. */
export let breakChunk: bool = false;
export let exitReason: i32 = EXIT_BUDGET;
/** Set when a store retired translated code (mmu.ts codeWritten): a block stops after it. */
export let codeWritten: bool = false;
/** The next instruction starts a block: a jump, branch, trap, or anything the JIT leaves to
 * the interpreter came before it. Only such pcs are looked up in the block cache. */
export let blockStart: bool = true;
/** Executions of a block start before it is translated; 0 = the JIT is off. */
export let jitThreshold: u32 = 0;
/** Set when an instruction raised an exception: pc already points at the handler. */
export let trapped: bool = false;
export let fatalCause: u64 = 0;
/** Guest page index (from RAM base) that ended the slice with EXIT_PAGE_MISSING. */
export let missingPage: u64 = 0;

// TLB context pointers (see layout.ts). Data accesses use the context of the effective
// privilege (MPRV) and SUM; fetches that of the current privilege.
export let dataTlb: usize = TLB_BASE;
export let fetchTlb: usize = TLB_BASE;
/** One-entry fetch cache: virtual page of pc and its host addend. */
export let fetchVpn: u64 = 0xffff_ffff_ffff_ffff;
export let fetchAddend: u64 = 0;

/** Privilege used for loads and stores: MPRV makes M-mode act with MPP's rights. */
@inline export function dataPriv(): u32 {
  return priv == PRV_M && (mstatus & MSTATUS_MPRV) != 0 ? <u32>((mstatus >> MSTATUS_MPP_SHIFT) & 3) : priv;
}

/** TLB context index for a privilege: 0 = U, 1 = S, 2 = S with SUM, 3 = M. */
@inline function contextOf(p: u32): usize {
  if (p == PRV_M) return 3;
  if (p == PRV_U) return 0;
  return (mstatus & MSTATUS_SUM) != 0 ? 2 : 1;
}

export function updateContexts(): void {
  dataTlb = TLB_BASE + contextOf(dataPriv()) * TLB_CTX_BYTES;
  const f = TLB_BASE + contextOf(priv) * TLB_CTX_BYTES;
  if (f != fetchTlb) { fetchTlb = f; fetchVpn = 0xffff_ffff_ffff_ffff; }
}

// Offsets of the three TLBs inside a context.
export const TLB_READ: usize = 0;
export const TLB_WRITE: usize = TLB_BYTES;
export const TLB_EXEC: usize = TLB_BYTES * 2;
