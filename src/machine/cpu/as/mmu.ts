// Address translation (Sv39 with hardware A/D updates), the software TLB, and every guest
// memory access the interpreter makes. Dirty and access tracking live here, in the TLB
// refill path: a page enters a write TLB only after it has been marked dirty, so clearing
// the dirty log and dropping the write TLBs re-arms tracking (QEMU's TLB_NOTDIRTY idea)
// while the hit path stays a tag compare and a host load/store.

import * as S from './state';
import { PRV_M, PRV_U, MSTATUS_SUM, MSTATUS_MXR, TLB_READ, TLB_WRITE, TLB_EXEC,
  CAUSE_LOAD_PAGE_FAULT, CAUSE_STORE_PAGE_FAULT, CAUSE_FETCH_PAGE_FAULT,
  CAUSE_LOAD_ACCESS, CAUSE_STORE_ACCESS, CAUSE_FETCH_ACCESS, CAUSE_MISALIGNED_LOAD, CAUSE_MISALIGNED_STORE } from './state';
import { TLB_BASE, TLB_MASK, TLB_BYTES, TLB_CTX_BYTES, TLB_CONTEXTS, DIRTY_LOG, ACCESS_LOG, ABSENT_MAP, RAM_HOST, RAM_BASE,
  CODE_MAP } from './layout';
import { raise } from './trap';

@external("env", "mmioRead") declare function mmioRead(pa: u32, size: u32): f64;
@external("env", "mmioWrite") declare function mmioWrite(pa: u32, size: u32, value: u32): i32;

export const ACC_READ: u32 = 0;
export const ACC_WRITE: u32 = 1;
export const ACC_EXEC: u32 = 2;

const PTE_V: u64 = 1;
const PTE_R: u64 = 2;
const PTE_W: u64 = 4;
const PTE_X: u64 = 8;
const PTE_U: u64 = 16;
const PTE_A: u64 = 64;
const PTE_D: u64 = 128;
const PPN_MASK: u64 = 0xfff_ffff_ffff;
const INVALID: u64 = 0xffff_ffff_ffff_ffff;

export let ramEnd: u64 = RAM_BASE;
export function setRamSize(bytes: u64): void { ramEnd = RAM_BASE + bytes; }

@inline export function inRam(pa: u64, size: u64): bool {
  return pa >= RAM_BASE && pa + size <= ramEnd;
}
@inline export function hostOf(pa: u64): usize {
  return <usize>(pa - RAM_BASE) + RAM_HOST;
}
/** Pages whose dirty byte this hart turned from clear to set since the host last took the
 * count: what the next pre-copy round must send, read by the run loop's dirty-rate limit. */
let newlyDirty: u32 = 0;
export function takeNewlyDirtyCount(): u32 { const n = newlyDirty; newlyDirty = 0; return n; }
@inline function markDirty(pa: u64): void {
  const page = <usize>((pa - RAM_BASE) >> 12);
  if (load<u8>(DIRTY_LOG + page) == 0) newlyDirty++;
  store<u8>(DIRTY_LOG + page, 1);
  store<u8>(ACCESS_LOG + page, 1);
  // A page holding translated code never has a write TLB entry (jit.ts drops them when it
  // first masks the page, and refills below leave them out), so every store to it comes here.
  const mask = load<u32>(CODE_MAP + (page << 3), 4);
  if (mask != 0) {
    // The store's first and last possible byte (8 at most, clamped to the page).
    const off = <u32>pa & 0xfff;
    const last = off + 7 < 0xfff ? off + 7 : 0xfff;
    if ((mask & ((<u32>1 << (off >> 7)) | (<u32>1 << (last >> 7)))) != 0) codeWritten(page);
  }
}
/** Retires the translations read from `page`: their generation no longer matches. */
function codeWritten(page: usize): void {
  store<u32>(CODE_MAP + (page << 3), 0, 4);
  atomic.add<u32>(CODE_MAP + (page << 3), 1);
  S.codeWritten = true;
}
/** Whether a page may enter a write TLB: not while translated code was read from it. */
@inline function writeFillable(pa: u64): bool {
  return load<u32>(CODE_MAP + (<usize>((pa - RAM_BASE) >> 12) << 3), 4) == 0;
}
@inline function markAccessed(pa: u64): void {
  store<u8>(ACCESS_LOG + <usize>((pa - RAM_BASE) >> 12), 1);
}

// A page that is not in RAM never gets a TLB entry, so only the refill paths below look at the
// absent map. Touching one abandons the instruction before any side effect, as a page fault
// would, and ends the slice; the host fetches the page and runs the instruction again.
@inline function absent(pa: u64): bool {
  return load<u8>(ABSENT_MAP + <usize>((pa - RAM_BASE) >> 12)) != 0;
}
function pageMissing(pa: u64): void {
  S.missingPage = (pa - RAM_BASE) >> 12;
  S.trapped = true;
  S.exitReason = S.EXIT_PAGE_MISSING;
  S.breakChunk = true;
}

// ---- TLB maintenance -------------------------------------------------------------------

export function flushTlbAll(): void {
  memory.fill(TLB_BASE, 0xff, TLB_CTX_BYTES * TLB_CONTEXTS);
  S.fetchVpn = INVALID;
}

/** Drops every write entry so the next store to each page re-marks the dirty log. */
export function flushTlbWrites(): void {
  for (let c: u32 = 0; c < TLB_CONTEXTS; c++) {
    memory.fill(TLB_BASE + <usize>c * TLB_CTX_BYTES + TLB_WRITE, 0xff, TLB_BYTES);
  }
}

export function flushTlbPage(va: u64): void {
  const vpn = va >> 12;
  const off = (<usize>vpn & TLB_MASK) << 4;
  for (let c: u32 = 0; c < TLB_CONTEXTS; c++) {
    for (let k: u32 = 0; k < 3; k++) {
      const e = TLB_BASE + <usize>c * TLB_CTX_BYTES + <usize>k * TLB_BYTES + off;
      if (load<u64>(e) == vpn) store<u64>(e, INVALID);
    }
  }
  S.fetchVpn = INVALID;
}

@inline function fill(ctx: usize, kind: usize, va: u64, pa: u64): void {
  const vpn = va >> 12;
  const e = ctx + kind + ((<usize>vpn & TLB_MASK) << 4);
  store<u64>(e, vpn);
  store<u64>(e, <u64>hostOf(pa & ~<u64>0xfff) - (vpn << 12), 8);
}

// ---- translation -----------------------------------------------------------------------

@inline function pageFault(acc: u32, va: u64): void {
  raise(acc == ACC_WRITE ? CAUSE_STORE_PAGE_FAULT : acc == ACC_EXEC ? CAUSE_FETCH_PAGE_FAULT : CAUSE_LOAD_PAGE_FAULT, va);
}
@inline export function accessFault(acc: u32, va: u64): void {
  raise(acc == ACC_WRITE ? CAUSE_STORE_ACCESS : acc == ACC_EXEC ? CAUSE_FETCH_ACCESS : CAUSE_LOAD_ACCESS, va);
}

/** Sets when the last successful translation found the page's PTE dirty (or bare mode):
 * only then may a write TLB entry be created. */
let lastWritable: bool = false;

/** Translates va for an access at privilege p. On a fault raises it and returns 0 with
 * S.trapped set. */
export function translate(va: u64, acc: u32, p: u32): u64 {
  lastWritable = true;
  if (p == PRV_M || (S.satp >> 60) == 0) return va;
  if (((<i64>va << 25) >> 25) != <i64>va) { pageFault(acc, va); return 0; }
  let table = (S.satp & PPN_MASK) << 12;
  for (let level: i32 = 2; level >= 0; level--) {
    const pteAddr = table + (((va >> (12 + 9 * <u64>level)) & 0x1ff) << 3);
    if (!inRam(pteAddr, 8)) { accessFault(acc, va); return 0; }
    if (absent(pteAddr)) { pageMissing(pteAddr); return 0; }
    const host = hostOf(pteAddr);
    let pte = load<u64>(host);
    if ((pte & PTE_V) == 0 || ((pte & PTE_R) == 0 && (pte & PTE_W) != 0) || (pte >> 54) != 0) {
      pageFault(acc, va); return 0;
    }
    const ppn = (pte >> 10) & PPN_MASK;
    if ((pte & (PTE_R | PTE_X)) == 0) { table = ppn << 12; continue; }
    // Leaf: permission checks.
    if (p == PRV_U) {
      if ((pte & PTE_U) == 0) { pageFault(acc, va); return 0; }
    } else if ((pte & PTE_U) != 0) {
      if (acc == ACC_EXEC || (S.mstatus & MSTATUS_SUM) == 0) { pageFault(acc, va); return 0; }
    }
    let ok: bool;
    if (acc == ACC_READ) ok = (pte & PTE_R) != 0 || ((S.mstatus & MSTATUS_MXR) != 0 && (pte & PTE_X) != 0);
    else if (acc == ACC_WRITE) ok = (pte & PTE_W) != 0;
    else ok = (pte & PTE_X) != 0;
    if (!ok) { pageFault(acc, va); return 0; }
    const lowMask: u64 = (<u64>1 << (9 * <u64>level)) - 1;
    if ((ppn & lowMask) != 0) { pageFault(acc, va); return 0; } // misaligned superpage
    // Hardware A/D update; the PTE store is a guest-memory write, so it is logged.
    const want = PTE_A | (acc == ACC_WRITE ? PTE_D : 0);
    if ((pte & want) != want) {
      pte |= want;
      store<u64>(host, pte);
      markDirty(pteAddr);
    }
    lastWritable = (pte & PTE_D) != 0 && (pte & PTE_W) != 0;
    const pageVa = (va >> 12) & lowMask;
    return (((ppn & ~lowMask) | pageVa) << 12) | (va & 0xfff);
  }
  pageFault(acc, va);
  return 0;
}

// ---- data accesses ---------------------------------------------------------------------

@inline export function loadU8(va: u64): u64 {
  const vpn = va >> 12;
  const e = S.dataTlb + TLB_READ + ((<usize>vpn & TLB_MASK) << 4);
  if (load<u64>(e) == vpn) return <u64>load<u8>(<usize>(va + load<u64>(e, 8)));
  return loadSlow(va, 1);
}
@inline export function loadU16(va: u64): u64 {
  const vpn = va >> 12;
  const e = S.dataTlb + TLB_READ + ((<usize>vpn & TLB_MASK) << 4);
  if (load<u64>(e) == vpn && (va & 0xfff) <= 0xffe) return <u64>load<u16>(<usize>(va + load<u64>(e, 8)));
  return loadSlow(va, 2);
}
@inline export function loadU32(va: u64): u64 {
  const vpn = va >> 12;
  const e = S.dataTlb + TLB_READ + ((<usize>vpn & TLB_MASK) << 4);
  if (load<u64>(e) == vpn && (va & 0xfff) <= 0xffc) return <u64>load<u32>(<usize>(va + load<u64>(e, 8)));
  return loadSlow(va, 4);
}
@inline export function loadU64(va: u64): u64 {
  const vpn = va >> 12;
  const e = S.dataTlb + TLB_READ + ((<usize>vpn & TLB_MASK) << 4);
  if (load<u64>(e) == vpn && (va & 0xfff) <= 0xff8) return load<u64>(<usize>(va + load<u64>(e, 8)));
  return loadSlow(va, 8);
}

@inline export function storeU8(va: u64, v: u64): void {
  const vpn = va >> 12;
  const e = S.dataTlb + TLB_WRITE + ((<usize>vpn & TLB_MASK) << 4);
  if (load<u64>(e) == vpn) { store<u8>(<usize>(va + load<u64>(e, 8)), <u8>v); return; }
  storeSlow(va, v, 1);
}
@inline export function storeU16(va: u64, v: u64): void {
  const vpn = va >> 12;
  const e = S.dataTlb + TLB_WRITE + ((<usize>vpn & TLB_MASK) << 4);
  if (load<u64>(e) == vpn && (va & 0xfff) <= 0xffe) { store<u16>(<usize>(va + load<u64>(e, 8)), <u16>v); return; }
  storeSlow(va, v, 2);
}
@inline export function storeU32(va: u64, v: u64): void {
  const vpn = va >> 12;
  const e = S.dataTlb + TLB_WRITE + ((<usize>vpn & TLB_MASK) << 4);
  if (load<u64>(e) == vpn && (va & 0xfff) <= 0xffc) { store<u32>(<usize>(va + load<u64>(e, 8)), <u32>v); return; }
  storeSlow(va, v, 4);
}
@inline export function storeU64(va: u64, v: u64): void {
  const vpn = va >> 12;
  const e = S.dataTlb + TLB_WRITE + ((<usize>vpn & TLB_MASK) << 4);
  if (load<u64>(e) == vpn && (va & 0xfff) <= 0xff8) { store<u64>(<usize>(va + load<u64>(e, 8)), v); return; }
  storeSlow(va, v, 8);
}

export function loadSlow(va: u64, size: u32): u64 {
  if ((va & 0xfff) + <u64>size > 0x1000) {
    // Misaligned access that crosses a page: assemble it byte by byte (each byte may fault).
    let v: u64 = 0;
    for (let i: u32 = 0; i < size; i++) {
      const b = loadSlow(va + i, 1);
      if (S.trapped) return 0;
      v |= b << (<u64>i << 3);
    }
    return v;
  }
  const pa = translate(va, ACC_READ, S.dataPriv());
  if (S.trapped) return 0;
  if (inRam(pa, size)) {
    if (absent(pa)) { pageMissing(pa); return 0; }
    fill(S.dataTlb, TLB_READ, va, pa);
    markAccessed(pa);
    const h = hostOf(pa);
    if (size == 1) return <u64>load<u8>(h);
    if (size == 2) return <u64>load<u16>(h);
    if (size == 4) return <u64>load<u32>(h);
    return load<u64>(h);
  }
  return mmioLoad(va, pa, size);
}

function mmioLoad(va: u64, pa: u64, size: u32): u64 {
  if (pa >= RAM_BASE || (pa & (<u64>size - 1)) != 0) { accessFault(ACC_READ, va); return 0; }
  if (size == 8) {
    const lo = mmioRead(<u32>pa, 4);
    const hi = mmioRead(<u32>pa + 4, 4);
    if (lo < 0 || hi < 0) { accessFault(ACC_READ, va); return 0; }
    return (<u64>hi << 32) | <u64>lo;
  }
  const v = mmioRead(<u32>pa, size);
  if (v < 0) { accessFault(ACC_READ, va); return 0; }
  return <u64>v;
}

export function storeSlow(va: u64, v: u64, size: u32): void {
  if ((va & 0xfff) + <u64>size > 0x1000) {
    // Check both pages first so a faulting second page leaves memory untouched.
    const pa0 = translate(va, ACC_WRITE, S.dataPriv());
    if (S.trapped) return;
    if (inRam(pa0, 1) && absent(pa0)) { pageMissing(pa0); return; }
    const pa1 = translate((va + size - 1) & ~<u64>0xfff, ACC_WRITE, S.dataPriv());
    if (S.trapped) return;
    if (inRam(pa1, 1) && absent(pa1)) { pageMissing(pa1); return; }
    for (let i: u32 = 0; i < size; i++) {
      storeSlow(va + i, v >> (<u64>i << 3), 1);
      if (S.trapped) return;
    }
    return;
  }
  const pa = translate(va, ACC_WRITE, S.dataPriv());
  if (S.trapped) return;
  if (inRam(pa, size)) {
    if (absent(pa)) { pageMissing(pa); return; }
    markDirty(pa);
    if (lastWritable && writeFillable(pa)) fill(S.dataTlb, TLB_WRITE, va, pa);
    const h = hostOf(pa);
    if (size == 1) store<u8>(h, <u8>v);
    else if (size == 2) store<u16>(h, <u16>v);
    else if (size == 4) store<u32>(h, <u32>v);
    else store<u64>(h, v);
    return;
  }
  if (pa >= RAM_BASE || (pa & (<u64>size - 1)) != 0) { accessFault(ACC_WRITE, va); return; }
  let bad: i32;
  if (size == 8) bad = mmioWrite(<u32>pa, 4, <u32>v) | mmioWrite(<u32>pa + 4, 4, <u32>(v >> 32));
  else bad = mmioWrite(<u32>pa, size, <u32>v);
  if (bad != 0) accessFault(ACC_WRITE, va);
}

/** Host address for an atomic read-modify-write of `size` bytes at va, or 0 after raising.
 * AMOs must be naturally aligned and target RAM. */
export function amoHost(va: u64, size: u32): usize {
  if ((va & (<u64>size - 1)) != 0) { raise(CAUSE_MISALIGNED_STORE, va); return 0; }
  const vpn = va >> 12;
  const e = S.dataTlb + TLB_WRITE + ((<usize>vpn & TLB_MASK) << 4);
  if (load<u64>(e) == vpn) return <usize>(va + load<u64>(e, 8));
  const pa = translate(va, ACC_WRITE, S.dataPriv());
  if (S.trapped) return 0;
  if (!inRam(pa, size)) { accessFault(ACC_WRITE, va); return 0; }
  if (absent(pa)) { pageMissing(pa); return 0; }
  markDirty(pa);
  if (lastWritable && writeFillable(pa)) fill(S.dataTlb, TLB_WRITE, va, pa);
  return hostOf(pa);
}

/** Host address for a load-reserved, or 0 after raising. */
export function lrHost(va: u64, size: u32): usize {
  if ((va & (<u64>size - 1)) != 0) { raise(CAUSE_MISALIGNED_LOAD, va); return 0; }
  const pa = translate(va, ACC_READ, S.dataPriv());
  if (S.trapped) return 0;
  if (!inRam(pa, size)) { accessFault(ACC_READ, va); return 0; }
  if (absent(pa)) { pageMissing(pa); return 0; }
  markAccessed(pa);
  return hostOf(pa);
}

// ---- instruction fetch -----------------------------------------------------------------

/** Points the one-entry fetch cache at pc's page. Returns false after raising a fault. */
export function refillFetch(pc: u64): bool {
  const vpn = pc >> 12;
  const e = S.fetchTlb + TLB_EXEC + ((<usize>vpn & TLB_MASK) << 4);
  if (load<u64>(e) != vpn) {
    const pa = translate(pc, ACC_EXEC, S.priv);
    if (S.trapped) return false;
    if (!inRam(pa, 2)) { accessFault(ACC_EXEC, pc); return false; }
    if (absent(pa)) { pageMissing(pa); return false; }
    fill(S.fetchTlb, TLB_EXEC, pc, pa);
    markAccessed(pa);
  }
  S.fetchVpn = vpn;
  S.fetchAddend = load<u64>(e, 8);
  return true;
}

/** The upper half of a 32-bit instruction that straddles a page boundary. */
export function fetchHighHalf(pc: u64): u32 {
  const va = pc + 2;
  const pa = translate(va, ACC_EXEC, S.priv);
  if (S.trapped) return 0;
  if (!inRam(pa, 2)) { accessFault(ACC_EXEC, va); return 0; }
  if (absent(pa)) { pageMissing(pa); return 0; }
  markAccessed(pa);
  return <u32>load<u16>(hostOf(pa));
}

/** Physical read for the host side (debuggers, tests); 0 outside RAM. */
export function physRead64(pa: u64): u64 {
  return inRam(pa, 8) ? load<u64>(hostOf(pa)) : 0;
}
