// RISC-V encoders for the JIT tests, which write their guest code word by word.

const u = (v: number): number => v >>> 0;
export const iType = (op: number, rd: number, f3: number, rs1: number, imm: number): number =>
  u(((imm & 0xfff) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op);
export const rType = (op: number, rd: number, f3: number, rs1: number, rs2: number, f7: number): number =>
  u((f7 << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op);
export const sType = (f3: number, rs1: number, rs2: number, imm: number): number =>
  u((((imm >> 5) & 0x7f) << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | ((imm & 31) << 7) | 0x23);
export const bType = (f3: number, rs1: number, rs2: number, imm: number): number =>
  u((((imm >> 12) & 1) << 31) | (((imm >> 5) & 0x3f) << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12)
    | (((imm >> 1) & 0xf) << 8) | (((imm >> 11) & 1) << 7) | 0x63);
export const jal = (rd: number, imm: number): number =>
  u((((imm >> 20) & 1) << 31) | (((imm >> 1) & 0x3ff) << 21) | (((imm >> 11) & 1) << 20) | (((imm >> 12) & 0xff) << 12) | (rd << 7) | 0x6f);
export const uType = (op: number, rd: number, imm20: number): number => u(((imm20 & 0xfffff) << 12) | (rd << 7) | op);
export const addi = (rd: number, rs1: number, imm: number): number => iType(0x13, rd, 0, rs1, imm);
export const jalr = (rd: number, rs1: number, imm: number): number => iType(0x67, rd, 0, rs1, imm);
export const WFI = 0x1050_0073;
export const FENCE_I = 0x0000_100f;

/** A small seeded generator (xorshift128+ reduced to 32-bit draws): the fuzz test's inputs
 * are the same on every run, and a failing seed can be replayed. */
export class Prng {
  private a: number;
  private b: number;
  constructor(seed: number) { this.a = seed | 1; this.b = (seed * 0x9e3779b9) | 1; }
  next(): number {
    let x = this.a;
    const y = this.b;
    this.a = y;
    x ^= x << 23; x ^= x >>> 17; x ^= y ^ (y >>> 26);
    this.b = x;
    return (x + y) >>> 0;
  }
  below(n: number): number { return this.next() % n; }
  u64(): bigint { return (BigInt(this.next()) << 32n) | BigInt(this.next()); }
}
