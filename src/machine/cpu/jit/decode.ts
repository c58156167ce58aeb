// Which instructions the translator takes, read from guest RAM as the interpreter reads them
// (compressed ones through the interpreter's own RVC expansion table). A block is a run of
// them inside one page; it ends after a jump or branch, and before anything else: CSR, system,
// AMO, FP, FENCE.I, an illegal encoding, or a 32-bit instruction straddling the page end. The
// interpreter executes those, so their legality checks and traps stay in one place.

export interface Insn {
  /** Virtual address. */
  readonly pc: bigint;
  /** The 32-bit encoding (a compressed instruction expanded). */
  readonly insn: number;
  readonly len: 2 | 4;
}

/** Most instructions in one block. A block only runs when this many fit in the interpreter's
 * chunk (512), so interrupts are examined no later than before. */
export const MAX_BLOCK = 64;

export function opcode(i: number): number { return i & 0x7f; }
export function rd(i: number): number { return (i >>> 7) & 31; }
export function rs1(i: number): number { return (i >>> 15) & 31; }
export function rs2(i: number): number { return (i >>> 20) & 31; }
export function f3(i: number): number { return (i >>> 12) & 7; }
export function f7(i: number): number { return i >>> 25; }

/** Whether the encoding is one the translator handles (and the interpreter would not reject). */
export function translatable(i: number): boolean {
  const f = f3(i);
  switch (opcode(i)) {
    case 0x37: case 0x17: case 0x6f: return true;
    case 0x67: return f === 0;
    case 0x63: return f !== 2 && f !== 3;
    case 0x03: return f !== 7;
    case 0x23: return f <= 3;
    case 0x13:
      if (f === 1) return i >>> 26 === 0;
      if (f === 5) return i >>> 26 === 0 || i >>> 26 === 0x10;
      return true;
    case 0x1b:
      if (f === 0) return true;
      if (f === 1) return f7(i) === 0;
      if (f === 5) return f7(i) === 0 || f7(i) === 0x20;
      return false;
    case 0x33: {
      const g = f7(i);
      return g === 0 || g === 1 || (g === 0x20 && (f === 0 || f === 5));
    }
    case 0x3b: {
      const g = f7(i);
      if (g === 0) return f === 0 || f === 1 || f === 5;
      if (g === 0x20) return f === 0 || f === 5;
      if (g === 1) return f !== 1 && f !== 2 && f !== 3;
      return false;
    }
    case 0x0f: return f === 0; // FENCE: nothing to order on one in-order hart
    default: return false;
  }
}

/** Jumps and branches: the last instruction of a block. */
export function endsBlock(i: number): boolean {
  const op = opcode(i);
  return op === 0x6f || op === 0x67 || op === 0x63;
}

/**
 * Reads the block starting at virtual `pc`, whose first byte is at `host` in `mem`.
 * `rvc` is the interpreter's expansion table (u32 per 16-bit parcel, 0 = illegal).
 */
export function decodeBlock(mem: DataView, rvc: Uint32Array, pc: bigint, host: number): Insn[] {
  const out: Insn[] = [];
  let off = Number(pc & 0xfffn);
  let h = host;
  let at = pc;
  while (out.length < MAX_BLOCK && off < 0x1000) {
    const lo = mem.getUint16(h, true);
    let insn: number;
    let len: 2 | 4;
    if ((lo & 3) === 3) {
      if (off > 0xffc) break;
      insn = mem.getUint32(h, true);
      len = 4;
    } else {
      insn = rvc[lo]!;
      len = 2;
      if (insn === 0) break;
    }
    if (!translatable(insn)) break;
    out.push({ pc: at, insn, len });
    if (endsBlock(insn)) break;
    off += len;
    h += len;
    at += BigInt(len);
  }
  return out;
}
