// RISC-V block -> one wasm function. Guest registers live in wasm locals for the block and are
// written back to the register file at every exit, so a trap inside the block finds exactly
// the registers of the instructions before it. Loads and stores inline the interpreter's TLB
// hit path (a tag compare against the same TLB in shared memory) and call the interpreter's
// own slow path on a miss, so refills, dirty and access marking, MMIO and traps are its.

import { Bytes, encodeModule, moduleHead, FuncType, I32, I64, Op, VOID } from './wasm.js';
import { Insn, opcode, rd, rs1, rs2, f3, f7 } from './decode.js';

export interface TranslatorLayout {
  readonly xregs: number;
  readonly cellPc: number;
  readonly cellStatus: number;
  readonly tlbMask: number;
  /** Offset of the write TLB inside a context (the read TLB is at 0). */
  readonly tlbWrite: number;
  readonly memoryMaxPages: number;
}

// Imported function indices, then the block itself.
const F_LOAD = 0, F_STORE = 1, F_MULH = 2, F_MULHSU = 3, F_MULHU = 4;
const TYPES: FuncType[] = [
  { params: [I64, I64, I32], results: [I64] },      // jitLoad(va, pc, size)
  { params: [I64, I64, I64, I32], results: [] },    // jitStore(va, value, pc, size)
  { params: [I64, I64], results: [I64] },           // mulh*
  { params: [I32, I32, I32], results: [I32] },      // block(dataTlb, allow, counted) -> counted
];
const IMPORT_NAMES = ['load', 'store', 'mulh', 'mulhsu', 'mulhu'] as const;
const IMPORTS = IMPORT_NAMES.map((name, i) => ({ module: 'j', name, type: i < 2 ? i : 2 }));

// Locals: 0 dataTlb, 1 allow, 2 counted before this block (params); 3 + r = x[r]; scratch.
const L_TLB = 0;
const L_ALLOW = 1;
const L_BEFORE = 2;
const reg = (r: number): number => 3 + r;
const L_VA = 35, L_V = 36, L_T = 37, L_T2 = 38, L_E = 39, L_S = 40, L_N = 41, L_C = 42;
const LOCALS: Array<[number, number]> = [[36, I64], [4, I32]];

/** Another block of the same module this one may continue into: its function index among
 * the module's blocks and its length. */
export interface ChainTarget { readonly index: number; readonly len: number }
export type Chain = (pc: bigint) => ChainTarget | undefined;

const sext32 = (v: number): bigint => BigInt(v | 0);

class Emitter {
  /** Registers written so far: what an exit must store. */
  private dirty = 0;
  /** For a block that loops back to its start: its length, and every register it writes
   * (an exit in a later iteration must store what earlier ones wrote). */
  private loopLen = 0;
  private loopDirty = 0;

  constructor(private readonly lay: TranslatorLayout, readonly b: Bytes, private readonly start: bigint,
    private readonly chain: Chain) {}

  op(...codes: number[]): this { this.b.bytes(codes); return this; }
  i32(v: number): this { this.b.byte(Op.i32_const).s32(v); return this; }
  i64(v: bigint | number): this { this.b.byte(Op.i64_const).s64(v); return this; }
  get(l: number): this { this.b.byte(Op.local_get).u32(l); return this; }
  set(l: number): this { this.b.byte(Op.local_set).u32(l); return this; }
  tee(l: number): this { this.b.byte(Op.local_tee).u32(l); return this; }
  mem(code: number, align: number, offset: number): this { this.b.byte(code).u32(align).u32(offset); return this; }
  call(f: number): this { this.b.byte(Op.call).u32(f); return this; }

  x(r: number): this { return r === 0 ? this.i64(0) : this.get(reg(r)); }
  /** Stores the value on the stack into x[r] (dropped for x0). */
  setX(r: number): this {
    if (r === 0) return this.op(0x1a);
    this.dirty |= 1 << r;
    return this.set(reg(r));
  }

  prologue(used: number): void {
    for (let r = 1; r < 32; r++) {
      if ((used & (1 << r)) !== 0) this.i32(0).mem(Op.i64_load, 3, this.lay.xregs + r * 8).set(reg(r));
    }
  }

  /** The body becomes a loop back to its start, taken while another round fits in `allow`. */
  loop(len: number, writes: number): void {
    this.loopLen = len;
    this.loopDirty = writes;
    this.i32(0).set(L_N);
    this.op(0x03, VOID);
  }
  endLoop(): void { if (this.loopLen > 0) this.op(Op.end); }
  /** What the block counted up to instruction k: blocks before it, rounds before, k + 1. */
  private counted(k: number): void {
    this.get(L_BEFORE).i32(k + 1).op(Op.i32_add);
    if (this.loopLen > 0) this.get(L_N).op(Op.i32_add);
  }

  private writeBack(extra = 0): void {
    const d = this.dirty | extra | this.loopDirty;
    for (let r = 1; r < 32; r++) {
      if ((d & (1 << r)) !== 0) this.i32(0).get(reg(r)).mem(Op.i64_store, 3, this.lay.xregs + r * 8);
    }
  }
  /** Leaves the block after instruction `k` with next pc `pc` (a constant, or local L_VA). */
  exit(k: number, pc: bigint | 'va', extra = 0): void {
    this.writeBack(extra);
    const next = pc === 'va' ? undefined : this.chain(pc);
    if (next) {
      // Straight into the next block (same page, same code generation, so valid when this
      // one is) if it fits in what the chunk allows; it finds the registers in memory.
      this.counted(k);
      this.tee(L_C).i32(next.len).op(Op.i32_add).get(L_ALLOW).op(0x4c /* i32.le_s */, Op.if, VOID);
      this.get(L_TLB).get(L_ALLOW).get(L_C).op(0x12 /* return_call */).b.u32(IMPORTS.length + next.index);
      this.op(Op.end);
      this.i32(this.lay.cellPc).i64(pc as bigint).mem(Op.i64_store, 3, 0);
      this.get(L_C).op(Op.return);
      return;
    }
    this.i32(this.lay.cellPc);
    if (pc === 'va') this.get(L_VA); else this.i64(pc);
    this.mem(Op.i64_store, 3, 0);
    this.counted(k);
    this.op(Op.return);
  }
  /** Leaves after a trap in instruction `k`: the interpreter's slow path set pc already. */
  private exitTrapped(k: number): void {
    this.writeBack();
    this.counted(k);
    this.op(Op.return);
  }

  /** After a slow-path call: status 1 leaves as trapped, 2 runs `finish` and leaves after it. */
  private checkStatus(k: number, npc: bigint, finish: () => number): void {
    this.i32(this.lay.cellStatus).mem(Op.i32_load, 2, 0).tee(L_S);
    this.op(Op.if, VOID);
    this.get(L_S).i32(1).op(Op.i32_eq, Op.if, VOID);
    this.exitTrapped(k);
    this.op(Op.end);
    const extra = finish();
    this.exit(k, npc, extra);
    this.op(Op.end);
  }

  /** va = x[base] + imm; leaves the TLB hit condition on the stack and the entry in L_E. */
  private tlbProbe(base: number, imm: number, tlb: number, size: number): void {
    this.x(base).i64(imm).op(Op.i64_add).tee(L_VA);
    this.i64(12).op(Op.i64_shr_u).tee(L_T);
    this.op(Op.i32_wrap_i64).i32(this.lay.tlbMask).op(Op.i32_and).i32(4).op(Op.i32_shl);
    this.get(L_TLB).op(Op.i32_add).tee(L_E);
    this.mem(Op.i64_load, 3, tlb).get(L_T).op(Op.i64_eq);
    if (size > 1) {
      this.get(L_VA).op(Op.i32_wrap_i64).i32(0xfff).op(Op.i32_and).i32(0x1000 - size).op(Op.i32_le_u, Op.i32_and);
    }
  }
  /** Host address of the hit: va + the entry's addend, as a wasm address. */
  private hitAddress(tlb: number): void {
    this.get(L_E).mem(Op.i64_load, 3, tlb + 8).get(L_VA).op(Op.i64_add, Op.i32_wrap_i64);
  }

  load(k: number, ins: Insn, npc: bigint): void {
    const i = ins.insn;
    const f = f3(i);
    const size = 1 << (f & 3);
    const fast = [Op.i64_load8_s, Op.i64_load16_s, Op.i64_load32_s, Op.i64_load, Op.i64_load8_u, Op.i64_load16_u, Op.i64_load32_u][f]!;
    const ext = f === 0 ? Op.i64_extend8_s : f === 1 ? Op.i64_extend16_s : f === 2 ? Op.i64_extend32_s : -1;
    const d = rd(i);
    this.tlbProbe(rs1(i), i >> 20, 0, size);
    this.op(Op.if, I64);
    this.hitAddress(0);
    this.mem(fast, 0, 0);
    this.op(Op.else);
    this.get(L_VA).i64(ins.pc).i32(size).call(F_LOAD);
    if (ext >= 0) this.op(ext);
    this.set(L_V);
    this.checkStatus(k, npc, () => {
      if (d === 0) return 0;
      this.get(L_V).set(reg(d));
      return 1 << d;
    });
    this.get(L_V);
    this.op(Op.end);
    this.setX(d);
  }

  store(k: number, ins: Insn, npc: bigint): void {
    const i = ins.insn;
    const f = f3(i);
    const size = 1 << f;
    const fast = [Op.i64_store8, Op.i64_store16, Op.i64_store32, Op.i64_store][f]!;
    const imm = ((i & 0xfe00_0000) >> 20) | ((i >>> 7) & 0x1f);
    this.tlbProbe(rs1(i), imm, this.lay.tlbWrite, size);
    this.op(Op.if, VOID);
    this.hitAddress(this.lay.tlbWrite);
    this.x(rs2(i)).mem(fast, 0, 0);
    this.op(Op.else);
    this.get(L_VA).x(rs2(i)).i64(ins.pc).i32(size).call(F_STORE);
    this.checkStatus(k, npc, () => 0);
    this.op(Op.end);
  }

  /** Signed or unsigned division with RISC-V's results for /0 and overflow; a in L_T, b in L_T2. */
  private divide(signed: boolean, rem: boolean): void {
    this.get(L_T2).op(Op.i64_eqz, Op.if, I64);
    if (rem) this.get(L_T); else this.i64(-1);
    this.op(Op.else);
    if (signed) {
      // b = -1: the quotient is -a (MIN / -1 wraps to MIN), the remainder 0; wasm would trap.
      this.get(L_T2).i64(-1).op(Op.i64_eq, Op.if, I64);
      if (rem) this.i64(0); else this.i64(0).get(L_T).op(Op.i64_sub);
      this.op(Op.else).get(L_T).get(L_T2).op(rem ? Op.i64_rem_s : Op.i64_div_s).op(Op.end);
    } else {
      this.get(L_T).get(L_T2).op(rem ? Op.i64_rem_u : Op.i64_div_u);
    }
    this.op(Op.end);
  }

  opImm(i: number): void {
    const d = rd(i);
    if (d === 0) return;
    const imm = i >> 20;
    const sh = (i >>> 20) & 63;
    this.x(rs1(i));
    switch (f3(i)) {
      case 0: this.i64(imm).op(Op.i64_add); break;
      case 1: this.i64(sh).op(Op.i64_shl); break;
      case 2: this.i64(imm).op(Op.i64_lt_s, Op.i64_extend_i32_u); break;
      case 3: this.i64(imm).op(Op.i64_lt_u, Op.i64_extend_i32_u); break;
      case 4: this.i64(imm).op(Op.i64_xor); break;
      case 5: this.i64(sh).op(i >>> 26 === 0 ? Op.i64_shr_u : Op.i64_shr_s); break;
      case 6: this.i64(imm).op(Op.i64_or); break;
      default: this.i64(imm).op(Op.i64_and); break;
    }
    this.setX(d);
  }

  opImm32(i: number): void {
    const d = rd(i);
    if (d === 0) return;
    const f = f3(i);
    if (f === 0) {
      this.x(rs1(i)).i64(i >> 20).op(Op.i64_add, Op.i64_extend32_s);
    } else {
      this.x(rs1(i)).op(Op.i32_wrap_i64).i32(rs2(i));
      this.op(f === 1 ? Op.i32_shl : f7(i) === 0 ? Op.i32_shr_u : Op.i32_shr_s, Op.i64_extend_i32_s);
    }
    this.setX(d);
  }

  op64(i: number): void {
    const d = rd(i);
    if (d === 0) return;
    const f = f3(i), g = f7(i);
    if (g === 1) {
      this.x(rs1(i)).set(L_T).x(rs2(i)).set(L_T2);
      switch (f) {
        case 0: this.get(L_T).get(L_T2).op(Op.i64_mul); break;
        case 1: this.get(L_T).get(L_T2).call(F_MULH); break;
        case 2: this.get(L_T).get(L_T2).call(F_MULHSU); break;
        case 3: this.get(L_T).get(L_T2).call(F_MULHU); break;
        default: this.divide((f & 1) === 0, f >= 6); break;
      }
      this.setX(d);
      return;
    }
    this.x(rs1(i)).x(rs2(i));
    if (g === 0x20) this.op(f === 0 ? Op.i64_sub : Op.i64_shr_s);
    else {
      switch (f) {
        case 0: this.op(Op.i64_add); break;
        case 1: this.op(Op.i64_shl); break;
        case 2: this.op(Op.i64_lt_s, Op.i64_extend_i32_u); break;
        case 3: this.op(Op.i64_lt_u, Op.i64_extend_i32_u); break;
        case 4: this.op(Op.i64_xor); break;
        case 5: this.op(Op.i64_shr_u); break;
        case 6: this.op(Op.i64_or); break;
        default: this.op(Op.i64_and); break;
      }
    }
    this.setX(d);
  }

  op32(i: number): void {
    const d = rd(i);
    if (d === 0) return;
    const f = f3(i), g = f7(i);
    if (g === 1 && f !== 0) {
      // Operands as 64-bit values, sign- or zero-extended from 32 bits; results are < 2^32
      // except for the cases divide() special-cases, and sign-extend like the interpreter's.
      const signed = f === 4 || f === 6;
      this.x(rs1(i));
      if (signed) this.op(Op.i64_extend32_s); else this.i64(0xffff_ffffn).op(Op.i64_and);
      this.set(L_T);
      this.x(rs2(i));
      if (signed) this.op(Op.i64_extend32_s); else this.i64(0xffff_ffffn).op(Op.i64_and);
      this.set(L_T2);
      this.divide(signed, f >= 6);
      this.op(Op.i64_extend32_s);
      this.setX(d);
      return;
    }
    if (f === 0) {
      this.x(rs1(i)).x(rs2(i)).op(g === 0x20 ? Op.i64_sub : g === 1 ? Op.i64_mul : Op.i64_add, Op.i64_extend32_s);
    } else {
      this.x(rs1(i)).op(Op.i32_wrap_i64).x(rs2(i)).op(Op.i32_wrap_i64);
      this.op(f === 1 ? Op.i32_shl : g === 0 ? Op.i32_shr_u : Op.i32_shr_s, Op.i64_extend_i32_s);
    }
    this.setX(d);
  }

  branch(k: number, ins: Insn, npc: bigint): void {
    const i = ins.insn;
    const imm = branchOffset(i);
    this.x(rs1(i)).x(rs2(i));
    const cmp = [Op.i64_eq, Op.i64_ne, -1, -1, Op.i64_lt_s, Op.i64_ge_s, Op.i64_lt_u, Op.i64_ge_u][f3(i)]!;
    const target = BigInt.asUintN(64, ins.pc + BigInt(imm));
    this.op(cmp, Op.if, VOID);
    // Round again if a whole round still fits in `allow` (br_if depth 1 is the loop).
    if (this.loopLen > 0 && target === this.start) {
      this.get(L_N).i32(this.loopLen).op(Op.i32_add).tee(L_N);
      this.i32(this.loopLen).op(Op.i32_add).get(L_BEFORE).op(Op.i32_add).get(L_ALLOW).op(0x4c /* i32.le_s */, Op.br_if, 1);
      // No room for another round: leave, counting the rounds done before this one.
      this.get(L_N).i32(this.loopLen).op(Op.i32_sub).set(L_N);
    }
    this.exit(k, target);
    this.op(Op.end);
    this.exit(k, npc);
  }

  jal(k: number, ins: Insn, npc: bigint): void {
    const i = ins.insn;
    const imm = ((i & 0x8000_0000) >> 11) | (i & 0xff000) | ((i >>> 9) & 0x800) | ((i >>> 20) & 0x7fe);
    if (rd(i) !== 0) this.i64(npc).setX(rd(i));
    this.exit(k, BigInt.asUintN(64, ins.pc + BigInt(imm)));
  }

  jalr(k: number, ins: Insn, npc: bigint): void {
    const i = ins.insn;
    // The target first: rd may be rs1.
    this.x(rs1(i)).i64(i >> 20).op(Op.i64_add).i64(-2).op(Op.i64_and).set(L_VA);
    if (rd(i) !== 0) this.i64(npc).setX(rd(i));
    this.exit(k, 'va');
  }
}

const branchOffset = (i: number): number =>
  ((i & 0x8000_0000) >> 19) | ((i << 4) & 0x800) | ((i >>> 20) & 0x7e0) | ((i >>> 7) & 0x1e);
const branchTarget = (ins: Insn): bigint => BigInt.asUintN(64, ins.pc + BigInt(branchOffset(ins.insn)));
/** Whether the instruction writes x[rd] (branches, stores and FENCE do not). */
const writesRd = (i: number): boolean => opcode(i) !== 0x63 && opcode(i) !== 0x23 && opcode(i) !== 0x0f;

/** Registers a block reads or writes (bit r), for the prologue's loads. */
function usedRegisters(block: Insn[]): number {
  let m = 0;
  for (const { insn } of block) m |= (1 << rd(insn)) | (1 << rs1(insn)) | (1 << rs2(insn));
  return m & ~1;
}

/** The wasm module for a non-empty block: it exports "b" and imports env.memory and j.*. */
const scratch = new Bytes(4096);

/** The body of one block's function (a non-empty block). */
export function translateBlock(block: Insn[], lay: TranslatorLayout, chain: Chain = () => undefined): Uint8Array {
  const e = new Emitter(lay, scratch.reset(), block[0]!.pc, chain);
  e.prologue(usedRegisters(block));
  const end = block[block.length - 1]!;
  if (opcode(end.insn) === 0x63 && branchTarget(end) === block[0]!.pc) {
    let writes = 0;
    for (const { insn } of block) if (writesRd(insn)) writes |= 1 << rd(insn);
    e.loop(block.length, writes & ~1);
  }
  let ended = false;
  for (let k = 0; k < block.length; k++) {
    const ins = block[k]!;
    const i = ins.insn;
    const npc = BigInt.asUintN(64, ins.pc + BigInt(ins.len));
    switch (opcode(i)) {
      case 0x37: if (rd(i) !== 0) e.i64((i & 0xffff_f000) | 0).setX(rd(i)); break;
      case 0x17: if (rd(i) !== 0) e.i64(BigInt.asUintN(64, ins.pc + sext32(i & 0xffff_f000))).setX(rd(i)); break;
      case 0x6f: e.jal(k, ins, npc); ended = true; break;
      case 0x67: e.jalr(k, ins, npc); ended = true; break;
      case 0x63: e.branch(k, ins, npc); ended = true; break;
      case 0x03: e.load(k, ins, npc); break;
      case 0x23: e.store(k, ins, npc); break;
      case 0x13: e.opImm(i); break;
      case 0x1b: e.opImm32(i); break;
      case 0x33: e.op64(i); break;
      case 0x3b: e.op32(i); break;
      default: break; // FENCE
    }
  }
  if (!ended) {
    const last = block[block.length - 1]!;
    e.exit(block.length - 1, BigInt.asUintN(64, last.pc + BigInt(last.len)));
  }
  e.endLoop();
  // Every path returned; wasm still wants the body's type on the stack at its end.
  e.op(0x00); // unreachable
  return scratch.view().slice();
}

let head: { lay: TranslatorLayout; bytes: Uint8Array } | undefined;

/** One module for a batch of block bodies; block i is its export "i". It imports env.memory
 * and j.* (the interpreter's slow paths). */
export function batchModule(bodies: Uint8Array[], lay: TranslatorLayout): Uint8Array<ArrayBuffer> {
  if (head?.lay !== lay) head = { lay, bytes: moduleHead(TYPES, IMPORTS, lay.memoryMaxPages) };
  return encodeModule(head.bytes, IMPORTS.length, 3, LOCALS, bodies);
}
