// The C extension, decoded once: every 16-bit parcel maps to the 32-bit instruction it
// stands for (0 = illegal), in a 256 KiB table built at start-up. The interpreter then has
// one execution path for both encodings; only the instruction length differs.

import { RVC_TABLE } from './layout';

@inline function bits(x: u32, hi: u32, lo: u32): u32 { return (x >> lo) & ((1 << (hi - lo + 1)) - 1); }
@inline function sext(v: u32, width: u32): i32 { return (<i32>(v << (32 - width))) >> (32 - width); }

@inline function rType(f7: u32, rs2: u32, rs1: u32, f3: u32, rd: u32, op: u32): u32 {
  return (f7 << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op;
}
@inline function iType(imm: i32, rs1: u32, f3: u32, rd: u32, op: u32): u32 {
  return ((<u32>imm & 0xfff) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op;
}
@inline function sType(imm: i32, rs2: u32, rs1: u32, f3: u32, op: u32): u32 {
  const u = <u32>imm;
  return (((u >> 5) & 0x7f) << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | ((u & 0x1f) << 7) | op;
}
@inline function bType(imm: i32, rs2: u32, rs1: u32, f3: u32): u32 {
  const u = <u32>imm;
  return (((u >> 12) & 1) << 31) | (((u >> 5) & 0x3f) << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) |
    (((u >> 1) & 0xf) << 8) | (((u >> 11) & 1) << 7) | 0x63;
}
@inline function jType(imm: i32, rd: u32): u32 {
  const u = <u32>imm;
  return (((u >> 20) & 1) << 31) | (((u >> 1) & 0x3ff) << 21) | (((u >> 11) & 1) << 20) |
    (((u >> 12) & 0xff) << 12) | (rd << 7) | 0x6f;
}

const OP_LOAD: u32 = 0x03, OP_LOAD_FP: u32 = 0x07, OP_IMM: u32 = 0x13, OP_IMM32: u32 = 0x1b;
const OP_STORE: u32 = 0x23, OP_STORE_FP: u32 = 0x27, OP: u32 = 0x33, OP_LUI: u32 = 0x37;
const OP_32: u32 = 0x3b, OP_JALR: u32 = 0x67;

export function expand(h: u32): u32 {
  const q = h & 3;
  const f3 = bits(h, 15, 13);
  const rdp = bits(h, 4, 2) + 8;   // rd' / rs2'
  const rs1p = bits(h, 9, 7) + 8;  // rs1' / rd'
  const rd = bits(h, 11, 7);
  const rs2 = bits(h, 6, 2);
  if (q == 0) {
    if (f3 == 0) {
      const imm = (bits(h, 12, 11) << 4) | (bits(h, 10, 7) << 6) | (bits(h, 6, 6) << 2) | (bits(h, 5, 5) << 3);
      return imm == 0 ? 0 : iType(imm, 2, 0, rdp, OP_IMM);
    }
    const uimmD = (bits(h, 12, 10) << 3) | (bits(h, 6, 5) << 6);
    const uimmW = (bits(h, 12, 10) << 3) | (bits(h, 6, 6) << 2) | (bits(h, 5, 5) << 6);
    switch (f3) {
      case 1: return iType(uimmD, rs1p, 3, rdp, OP_LOAD_FP);
      case 2: return iType(uimmW, rs1p, 2, rdp, OP_LOAD);
      case 3: return iType(uimmD, rs1p, 3, rdp, OP_LOAD);
      case 5: return sType(uimmD, rdp, rs1p, 3, OP_STORE_FP);
      case 6: return sType(uimmW, rdp, rs1p, 2, OP_STORE);
      case 7: return sType(uimmD, rdp, rs1p, 3, OP_STORE);
    }
    return 0;
  }
  if (q == 1) {
    const imm6 = sext((bits(h, 12, 12) << 5) | rs2, 6);
    switch (f3) {
      case 0: return iType(imm6, rd, 0, rd, OP_IMM);
      case 1: return rd == 0 ? 0 : iType(imm6, rd, 0, rd, OP_IMM32);
      case 2: return iType(imm6, 0, 0, rd, OP_IMM);
      case 3: {
        if (rd == 2) {
          const imm = sext((bits(h, 12, 12) << 9) | (bits(h, 6, 6) << 4) | (bits(h, 5, 5) << 6) |
            (bits(h, 4, 3) << 7) | (bits(h, 2, 2) << 5), 10);
          return imm == 0 ? 0 : iType(imm, 2, 0, 2, OP_IMM);
        }
        if (imm6 == 0) return 0;
        return ((<u32>imm6 & 0xfffff) << 12) | (rd << 7) | OP_LUI;
      }
      case 4: {
        const f2 = bits(h, 11, 10);
        const shamt = (bits(h, 12, 12) << 5) | rs2;
        if (f2 == 0) return iType(<i32>shamt, rs1p, 5, rs1p, OP_IMM);
        if (f2 == 1) return iType(<i32>(shamt | 0x400), rs1p, 5, rs1p, OP_IMM);
        if (f2 == 2) return iType(imm6, rs1p, 7, rs1p, OP_IMM);
        const f = bits(h, 6, 5);
        if (bits(h, 12, 12) == 0) {
          if (f == 0) return rType(0x20, rdp, rs1p, 0, rs1p, OP);
          if (f == 1) return rType(0, rdp, rs1p, 4, rs1p, OP);
          if (f == 2) return rType(0, rdp, rs1p, 6, rs1p, OP);
          return rType(0, rdp, rs1p, 7, rs1p, OP);
        }
        if (f == 0) return rType(0x20, rdp, rs1p, 0, rs1p, OP_32);
        if (f == 1) return rType(0, rdp, rs1p, 0, rs1p, OP_32);
        return 0;
      }
      case 5: {
        const imm = sext((bits(h, 12, 12) << 11) | (bits(h, 11, 11) << 4) | (bits(h, 10, 9) << 8) |
          (bits(h, 8, 8) << 10) | (bits(h, 7, 7) << 6) | (bits(h, 6, 6) << 7) | (bits(h, 5, 3) << 1) |
          (bits(h, 2, 2) << 5), 12);
        return jType(imm, 0);
      }
      default: {
        const imm = sext((bits(h, 12, 12) << 8) | (bits(h, 11, 10) << 3) | (bits(h, 6, 5) << 6) |
          (bits(h, 4, 3) << 1) | (bits(h, 2, 2) << 5), 9);
        return bType(imm, 0, rs1p, f3 == 6 ? 0 : 1);
      }
    }
  }
  if (q == 2) {
    switch (f3) {
      case 0: return iType(<i32>((bits(h, 12, 12) << 5) | rs2), rd, 1, rd, OP_IMM);
      case 1: return iType(<i32>((bits(h, 12, 12) << 5) | (bits(h, 6, 5) << 3) | (bits(h, 4, 2) << 6)), 2, 3, rd, OP_LOAD_FP);
      case 2: return rd == 0 ? 0 : iType(<i32>((bits(h, 12, 12) << 5) | (bits(h, 6, 4) << 2) | (bits(h, 3, 2) << 6)), 2, 2, rd, OP_LOAD);
      case 3: return rd == 0 ? 0 : iType(<i32>((bits(h, 12, 12) << 5) | (bits(h, 6, 5) << 3) | (bits(h, 4, 2) << 6)), 2, 3, rd, OP_LOAD);
      case 4: {
        if (bits(h, 12, 12) == 0) {
          if (rs2 == 0) return rd == 0 ? 0 : iType(0, rd, 0, 0, OP_JALR);
          return rType(0, rs2, 0, 0, rd, OP);
        }
        if (rs2 == 0) return rd == 0 ? 0x00100073 : iType(0, rd, 0, 1, OP_JALR);
        return rType(0, rs2, rd, 0, rd, OP);
      }
      case 5: return sType(<i32>((bits(h, 12, 10) << 3) | (bits(h, 9, 7) << 6)), rs2, 2, 3, OP_STORE_FP);
      case 6: return sType(<i32>((bits(h, 12, 9) << 2) | (bits(h, 8, 7) << 6)), rs2, 2, 2, OP_STORE);
      case 7: return sType(<i32>((bits(h, 12, 10) << 3) | (bits(h, 9, 7) << 6)), rs2, 2, 3, OP_STORE);
    }
  }
  return 0;
}

export function buildRvcTable(): void {
  for (let h: u32 = 0; h < 0x10000; h++) {
    store<u32>(RVC_TABLE + (<usize>h << 2), (h & 3) == 3 ? 0 : expand(h));
  }
}
