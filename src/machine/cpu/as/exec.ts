// The interpreter loop: fetch, decode, execute, in bounded slices. Interrupts and timers are
// examined between chunks of instructions and whenever an instruction may have made one
// deliverable (CSR writes, xRET), which ends the chunk early.

import * as S from './state';
import { PRV_M, PRV_S, PRV_U, MSTATUS_FS, MSTATUS_TSR, MSTATUS_TVM, MSTATUS_TW,
  CAUSE_ILLEGAL_INSN, CAUSE_BREAKPOINT, CAUSE_ECALL_U, EXIT_BUDGET, EXIT_WFI } from './state';
import { getX, setX, getF, setF, RVC_TABLE } from './layout';
import { loadU8, loadU16, loadU32, loadU64, storeU8, storeU16, storeU32, storeU64, amoHost, lrHost,
  refillFetch, fetchHighHalf, flushTlbAll, flushTlbPage } from './mmu';
import { raise, doMret, doSret, checkInterrupts, pendingEnabled } from './trap';
import { csrCheck, csrRead, csrWrite, markFsDirty, setSliceRetired } from './csr';
import { fpExecute } from './fpu';
import { now } from './host';
import { jitTry, TOO_LONG } from './jit';

/** Instructions between interrupt checks when nothing asks for an earlier one. */
const CHUNK: i32 = 512;
const NAN_BOX: u64 = 0xffff_ffff_0000_0000;

@inline function sx32(v: u64): u64 { return <u64><i64><i32>v; }

export function mulhu(a: u64, b: u64): u64 {
  const a0 = a & 0xffff_ffff, a1 = a >> 32, b0 = b & 0xffff_ffff, b1 = b >> 32;
  const p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
  const mid = (p00 >> 32) + (p01 & 0xffff_ffff) + (p10 & 0xffff_ffff);
  return p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
}
export function mulh(a: u64, b: u64): u64 {
  let r = mulhu(a, b);
  if (<i64>a < 0) r -= b;
  if (<i64>b < 0) r -= a;
  return r;
}
export function mulhsu(a: u64, b: u64): u64 {
  let r = mulhu(a, b);
  if (<i64>a < 0) r -= b;
  return r;
}
// Division never traps in RISC-V: by zero and overflow have defined results.
@inline function divS(a: i64, b: i64): i64 {
  if (b == 0) return -1;
  if (a == i64.MIN_VALUE && b == -1) return a;
  return a / b;
}
@inline function divU(a: u64, b: u64): u64 { return b == 0 ? 0xffff_ffff_ffff_ffff : a / b; }
@inline function remS(a: i64, b: i64): i64 {
  if (b == 0) return a;
  if (a == i64.MIN_VALUE && b == -1) return 0;
  return a % b;
}
@inline function remU(a: u64, b: u64): u64 { return b == 0 ? a : a % b; }

@inline function illegal(raw: u32): void { raise(CAUSE_ILLEGAL_INSN, <u64>raw); }

/** Runs at most `budget` instructions; returns an exit reason (state.ts EXIT_*). */
export function run(budget: i32): i32 {
  S.exitReason = EXIT_BUDGET;
  let done: i32 = 0;
  while (true) {
    S.breakChunk = false;
    checkInterrupts(now());
    if (done >= budget) break;
    const limit = budget - done < CHUNK ? budget - done : CHUNK;
    let i: i32 = 0;
    // An interrupt taken above, or a chunk that ended mid-block, leaves pc anywhere.
    S.blockStart = true;
    while (i < limit) {
      if (S.blockStart && S.jitThreshold != 0) {
        S.blockStart = false;
        const n = jitTry(limit - i);
        if (n >= 0) {
          i += n;
          if (S.breakChunk) break;
          continue;
        }
        // A translated block that does not fit what is left of the chunk: start the next chunk
        // early (interrupts are examined sooner, never later) rather than interpret the whole
        // block. A fresh chunk it does not fit (the slice's last few instructions) steps.
        if (n == TOO_LONG && i > 0) break;
      }
      i++;
      step(done + i);
      if (S.breakChunk) break;
    }
    done += i;
    // The instruction that found its page missing runs again once the page is in.
    if (S.exitReason == S.EXIT_PAGE_MISSING) done--;
    if (S.exitReason != EXIT_BUDGET) break;
  }
  S.instret += <u64>done;
  setSliceRetired(0);
  return S.exitReason;
}

@inline function step(retiredInSlice: i32): void {
  // ---- fetch ----
  const pc = S.pc;
  if ((pc >> 12) != S.fetchVpn) {
    if (!refillFetch(pc)) { S.trapped = false; S.blockStart = true; return; }
  }
  const host = <usize>(pc + S.fetchAddend);
  let insn: u32;
  let raw: u32;
  let ilen: u64 = 4;
  if ((pc & 0xfff) != 0xffe) {
    insn = load<u32>(host);
  } else {
    insn = <u32>load<u16>(host);
    if ((insn & 3) == 3) {
      insn |= fetchHighHalf(pc) << 16;
      if (S.trapped) { S.trapped = false; S.blockStart = true; return; }
    }
  }
  raw = insn;
  if ((insn & 3) != 3) {
    raw = insn & 0xffff;
    insn = load<u32>(RVC_TABLE + (<usize>raw << 2));
    ilen = 2;
    if (insn == 0) { illegal(raw); S.trapped = false; S.blockStart = true; return; }
  }
  execute(insn, raw, pc, ilen, retiredInSlice);
  if (S.trapped) { S.trapped = false; S.blockStart = true; }
}

@inline function execute(insn: u32, raw: u32, pc: u64, ilen: u64, retiredInSlice: i32): void {
  const rd = (insn >> 7) & 31;
  const rs1 = (insn >> 15) & 31;
  const rs2 = (insn >> 20) & 31;
  const f3 = (insn >> 12) & 7;
  const npc = pc + ilen;
  switch (insn & 0x7f) {
    case 0x37: // LUI
      setX(rd, sx32(<u64>(insn & 0xffff_f000)));
      break;
    case 0x17: // AUIPC
      setX(rd, pc + sx32(<u64>(insn & 0xffff_f000)));
      break;
    case 0x6f: { // JAL
      const imm = ((<i32>(insn & 0x8000_0000)) >> 11) | (insn & 0xff000) | ((insn >> 9) & 0x800) | ((insn >> 20) & 0x7fe);
      setX(rd, npc);
      S.pc = pc + <u64><i64>imm;
      S.blockStart = true;
      return;
    }
    case 0x67: { // JALR
      if (f3 != 0) { illegal(raw); return; }
      const target = (getX(rs1) + <u64><i64>((<i32>insn) >> 20)) & ~<u64>1;
      setX(rd, npc);
      S.pc = target;
      S.blockStart = true;
      return;
    }
    case 0x63: { // BRANCH
      const a = getX(rs1), b = getX(rs2);
      S.blockStart = true; // both ways: the fall-through starts a block too
      let taken: bool;
      switch (f3) {
        case 0: taken = a == b; break;
        case 1: taken = a != b; break;
        case 4: taken = <i64>a < <i64>b; break;
        case 5: taken = <i64>a >= <i64>b; break;
        case 6: taken = a < b; break;
        case 7: taken = a >= b; break;
        default: illegal(raw); return;
      }
      if (taken) {
        const imm = ((<i32>(insn & 0x8000_0000)) >> 19) | ((insn << 4) & 0x800) | ((insn >> 20) & 0x7e0) | ((insn >> 7) & 0x1e);
        S.pc = pc + <u64><i64>imm;
        return;
      }
      break;
    }
    case 0x03: { // LOAD
      const addr = getX(rs1) + <u64><i64>((<i32>insn) >> 20);
      let v: u64;
      switch (f3) {
        case 0: v = <u64><i64><i8>loadU8(addr); break;
        case 1: v = <u64><i64><i16>loadU16(addr); break;
        case 2: v = sx32(loadU32(addr)); break;
        case 3: v = loadU64(addr); break;
        case 4: v = loadU8(addr); break;
        case 5: v = loadU16(addr); break;
        case 6: v = loadU32(addr); break;
        default: illegal(raw); return;
      }
      if (S.trapped) return;
      setX(rd, v);
      break;
    }
    case 0x23: { // STORE
      const imm = ((<i32>(insn & 0xfe00_0000)) >> 20) | ((insn >> 7) & 0x1f);
      const addr = getX(rs1) + <u64><i64>imm;
      const v = getX(rs2);
      switch (f3) {
        case 0: storeU8(addr, v); break;
        case 1: storeU16(addr, v); break;
        case 2: storeU32(addr, v); break;
        case 3: storeU64(addr, v); break;
        default: illegal(raw); return;
      }
      if (S.trapped) return;
      break;
    }
    case 0x13: { // OP-IMM
      const a = getX(rs1);
      const imm = <u64><i64>((<i32>insn) >> 20);
      let v: u64;
      switch (f3) {
        case 0: v = a + imm; break;
        case 1: if ((insn >> 26) != 0) { illegal(raw); return; } v = a << (imm & 63); break;
        case 2: v = <i64>a < <i64>imm ? 1 : 0; break;
        case 3: v = a < imm ? 1 : 0; break;
        case 4: v = a ^ imm; break;
        case 5: {
          const f6 = insn >> 26;
          if (f6 == 0) v = a >> (imm & 63);
          else if (f6 == 0x10) v = <u64>(<i64>a >> <i64>(imm & 63));
          else { illegal(raw); return; }
          break;
        }
        case 6: v = a | imm; break;
        default: v = a & imm; break;
      }
      setX(rd, v);
      break;
    }
    case 0x1b: { // OP-IMM-32
      const a = <u32>getX(rs1);
      const sh = rs2;
      const f7 = insn >> 25;
      let v: u32;
      switch (f3) {
        case 0: v = a + <u32>((<i32>insn) >> 20); break;
        case 1: if (f7 != 0) { illegal(raw); return; } v = a << sh; break;
        case 5:
          if (f7 == 0) v = a >> sh;
          else if (f7 == 0x20) v = <u32>(<i32>a >> sh);
          else { illegal(raw); return; }
          break;
        default: illegal(raw); return;
      }
      setX(rd, sx32(<u64>v));
      break;
    }
    case 0x33: { // OP
      const a = getX(rs1), b = getX(rs2);
      const f7 = insn >> 25;
      let v: u64;
      if (f7 == 0) {
        switch (f3) {
          case 0: v = a + b; break;
          case 1: v = a << (b & 63); break;
          case 2: v = <i64>a < <i64>b ? 1 : 0; break;
          case 3: v = a < b ? 1 : 0; break;
          case 4: v = a ^ b; break;
          case 5: v = a >> (b & 63); break;
          case 6: v = a | b; break;
          default: v = a & b; break;
        }
      } else if (f7 == 0x20) {
        if (f3 == 0) v = a - b;
        else if (f3 == 5) v = <u64>(<i64>a >> <i64>(b & 63));
        else { illegal(raw); return; }
      } else if (f7 == 1) {
        switch (f3) {
          case 0: v = a * b; break;
          case 1: v = mulh(a, b); break;
          case 2: v = mulhsu(a, b); break;
          case 3: v = mulhu(a, b); break;
          case 4: v = <u64>divS(<i64>a, <i64>b); break;
          case 5: v = divU(a, b); break;
          case 6: v = <u64>remS(<i64>a, <i64>b); break;
          default: v = remU(a, b); break;
        }
      } else { illegal(raw); return; }
      setX(rd, v);
      break;
    }
    case 0x3b: { // OP-32
      const a = <u32>getX(rs1), b = <u32>getX(rs2);
      const f7 = insn >> 25;
      let v: u32;
      if (f7 == 0) {
        if (f3 == 0) v = a + b;
        else if (f3 == 1) v = a << (b & 31);
        else if (f3 == 5) v = a >> (b & 31);
        else { illegal(raw); return; }
      } else if (f7 == 0x20) {
        if (f3 == 0) v = a - b;
        else if (f3 == 5) v = <u32>(<i32>a >> (b & 31));
        else { illegal(raw); return; }
      } else if (f7 == 1) {
        switch (f3) {
          case 0: v = a * b; break;
          case 4: {
            const x = <i32>a, y = <i32>b;
            v = y == 0 ? 0xffff_ffff : (x == i32.MIN_VALUE && y == -1) ? a : <u32>(x / y);
            break;
          }
          case 5: v = b == 0 ? 0xffff_ffff : a / b; break;
          case 6: {
            const x = <i32>a, y = <i32>b;
            v = y == 0 ? a : (x == i32.MIN_VALUE && y == -1) ? 0 : <u32>(x % y);
            break;
          }
          case 7: v = b == 0 ? a : a % b; break;
          default: illegal(raw); return;
        }
      } else { illegal(raw); return; }
      setX(rd, sx32(<u64>v));
      break;
    }
    case 0x0f: // MISC-MEM: FENCE is a no-op on one in-order hart; FENCE.I too: translated
      // code is retired by the stores that change it (jit.ts), not by FENCE.I.
      if (f3 > 1) { illegal(raw); return; }
      if (f3 == 1) S.blockStart = true;
      break;
    // The JIT ends blocks before these: what follows one starts a block.
    case 0x73: // SYSTEM
      S.blockStart = true;
      if (!system(insn, raw, pc, rd, rs1, f3, retiredInSlice)) return;
      break;
    case 0x2f: // AMO
      S.blockStart = true;
      if (!atomic(insn, raw, rd, rs1, rs2, f3)) return;
      break;
    case 0x07: { // LOAD-FP
      S.blockStart = true;
      if ((S.mstatus & MSTATUS_FS) == 0 || (f3 != 2 && f3 != 3)) { illegal(raw); return; }
      const addr = getX(rs1) + <u64><i64>((<i32>insn) >> 20);
      const v = f3 == 2 ? NAN_BOX | loadU32(addr) : loadU64(addr);
      if (S.trapped) return;
      setF(rd, v);
      markFsDirty();
      break;
    }
    case 0x27: { // STORE-FP
      S.blockStart = true;
      if ((S.mstatus & MSTATUS_FS) == 0 || (f3 != 2 && f3 != 3)) { illegal(raw); return; }
      const imm = ((<i32>(insn & 0xfe00_0000)) >> 20) | ((insn >> 7) & 0x1f);
      const addr = getX(rs1) + <u64><i64>imm;
      if (f3 == 2) storeU32(addr, getF(rs2)); else storeU64(addr, getF(rs2));
      if (S.trapped) return;
      break;
    }
    case 0x53: case 0x43: case 0x47: case 0x4b: case 0x4f: // OP-FP and fused multiply-add
      S.blockStart = true;
      if ((S.mstatus & MSTATUS_FS) == 0 || !fpExecute(insn)) { illegal(raw); return; }
      markFsDirty();
      break;
    default:
      illegal(raw);
      return;
  }
  S.pc = npc;
}

/** SYSTEM opcode. Returns false when it redirected pc itself (trap, xRET) or trapped. */
function system(insn: u32, raw: u32, pc: u64, rd: u32, rs1: u32, f3: u32, retiredInSlice: i32): bool {
  if (f3 == 0) {
    if (insn == 0x0000_0073) { raise(CAUSE_ECALL_U + <u64>S.priv, 0); return false; } // ECALL
    if (insn == 0x0010_0073) { raise(CAUSE_BREAKPOINT, pc); return false; }           // EBREAK
    if (insn == 0x3020_0073) {                                                         // MRET
      if (S.priv != PRV_M) { illegal(raw); return false; }
      doMret();
      return false;
    }
    if (insn == 0x1020_0073) {                                                         // SRET
      if (S.priv == PRV_U || (S.priv == PRV_S && (S.mstatus & MSTATUS_TSR) != 0)) { illegal(raw); return false; }
      doSret();
      return false;
    }
    if (insn == 0x1050_0073) {                                                         // WFI
      if (S.priv == PRV_U || (S.priv == PRV_S && (S.mstatus & MSTATUS_TW) != 0)) { illegal(raw); return false; }
      S.pc = pc + 4;
      if (pendingEnabled(now()) == 0) {
        // Nothing to do until an interrupt: give the host core back.
        S.exitReason = EXIT_WFI;
        S.breakChunk = true;
      }
      return false;
    }
    if ((insn >> 25) == 0x09 && rd == 0) {                                             // SFENCE.VMA
      if (S.priv == PRV_U || (S.priv == PRV_S && (S.mstatus & MSTATUS_TVM) != 0)) { illegal(raw); return false; }
      if (rs1 == 0) flushTlbAll(); else flushTlbPage(getX(rs1));
      return true;
    }
    illegal(raw);
    return false;
  }
  if (f3 == 4) { illegal(raw); return false; }
  const csr = insn >> 20;
  const src: u64 = f3 >= 5 ? <u64>rs1 : getX(rs1);
  const op = f3 & 3; // 1 = write, 2 = set, 3 = clear
  const writes = op == 1 || rs1 != 0;
  if (!csrCheck(csr, writes, raw)) return false;
  setSliceRetired(<u64>retiredInSlice);
  let old: u64 = 0;
  if (op != 1 || rd != 0) old = csrRead(csr);
  if (writes) {
    const v = op == 1 ? src : op == 2 ? old | src : old & ~src;
    csrWrite(csr, v);
  }
  setX(rd, old);
  return true;
}

/** A extension. Returns false when the instruction trapped. */
function atomic(insn: u32, raw: u32, rd: u32, rs1: u32, rs2: u32, f3: u32): bool {
  if (f3 != 2 && f3 != 3) { illegal(raw); return false; }
  const f5 = insn >> 27;
  const addr = getX(rs1);
  const wide = f3 == 3;
  const size: u32 = wide ? 8 : 4;
  if (f5 == 0x02) { // LR
    if (rs2 != 0) { illegal(raw); return false; }
    const h = lrHost(addr, size);
    if (S.trapped) return false;
    setX(rd, wide ? load<u64>(h) : sx32(<u64>load<u32>(h)));
    S.reservation = addr;
    return true;
  }
  if (f5 == 0x03) { // SC
    if ((addr & (<u64>size - 1)) != 0) { amoHost(addr, size); return false; }
    if (S.reservation != addr) { setX(rd, 1); S.reservation = 0xffff_ffff_ffff_ffff; return true; }
    const h = amoHost(addr, size);
    if (S.trapped) return false;
    if (wide) store<u64>(h, getX(rs2)); else store<u32>(h, <u32>getX(rs2));
    S.reservation = 0xffff_ffff_ffff_ffff;
    setX(rd, 0);
    return true;
  }
  const h = amoHost(addr, size);
  if (S.trapped) return false;
  const b = getX(rs2);
  if (wide) {
    const a = load<u64>(h);
    let r: u64;
    switch (f5) {
      case 0x01: r = b; break;
      case 0x00: r = a + b; break;
      case 0x04: r = a ^ b; break;
      case 0x0c: r = a & b; break;
      case 0x08: r = a | b; break;
      case 0x10: r = <i64>a < <i64>b ? a : b; break;
      case 0x14: r = <i64>a > <i64>b ? a : b; break;
      case 0x18: r = a < b ? a : b; break;
      case 0x1c: r = a > b ? a : b; break;
      default: illegal(raw); return false;
    }
    store<u64>(h, r);
    setX(rd, a);
  } else {
    const a = load<u32>(h);
    const bw = <u32>b;
    let r: u32;
    switch (f5) {
      case 0x01: r = bw; break;
      case 0x00: r = a + bw; break;
      case 0x04: r = a ^ bw; break;
      case 0x0c: r = a & bw; break;
      case 0x08: r = a | bw; break;
      case 0x10: r = <i32>a < <i32>bw ? a : bw; break;
      case 0x14: r = <i32>a > <i32>bw ? a : bw; break;
      case 0x18: r = a < bw ? a : bw; break;
      case 0x1c: r = a > bw ? a : bw; break;
      default: illegal(raw); return false;
    }
    store<u32>(h, r);
    setX(rd, sx32(<u64>a));
  }
  return true;
}
