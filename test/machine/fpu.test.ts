// Unit tests for the FPU (src/machine/cpu/as/fpu.ts). Expected values come from the host's
// IEEE arithmetic (round-to-nearest-even) or from the exact BigInt reference in
// fpu-reference.ts, never from the implementation under test.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BOX, buildFpu, DYN, DZ, FMT_D, FMT_S, Fpu, NV, NX, OF, opFp, r4, RDN, RMM, RNE, RTZ, RUP, UF,
} from './fpu-harness.js';
import {
  add, canonicalNaN, decode, div, DOUBLE, type Format, mul, negate, type Rational, round, roundInt,
  scaled, SINGLE, sqrtRational,
} from './fpu-reference.js';

let fpu: Fpu;
before(async () => {
  fpu = await buildFpu();
});

const ROUNDING_MODES = [RNE, RTZ, RDN, RUP, RMM];
const FORMATS = [SINGLE, DOUBLE];
const FADD = 0x00, FSUB = 0x01, FMUL = 0x02, FDIV = 0x03, FSQRT = 0x0b;
const FSGNJ = 0x04, FMINMAX = 0x05, FCVT_FF = 0x08, FCMP = 0x14, FCVT_IF = 0x18, FCVT_FI = 0x1a;
const FMV_XF = 0x1c, FMV_FX = 0x1e;
const FMADD = 0x43, FMSUB = 0x47, FNMSUB = 0x4b, FNMADD = 0x4f;
const [W, WU, L, LU] = [0, 1, 2, 3];

// ---- bit-pattern helpers ----

const scratch = new DataView(new ArrayBuffer(8));
function dBits(x: number): bigint {
  scratch.setFloat64(0, x);
  return scratch.getBigUint64(0);
}
function dVal(b: bigint): number {
  scratch.setBigUint64(0, b);
  return scratch.getFloat64(0);
}
function sBits(x: number): bigint {
  scratch.setFloat32(0, x);
  return BigInt(scratch.getUint32(0));
}
function sVal(b: bigint): number {
  scratch.setUint32(0, Number(b));
  return scratch.getFloat32(0);
}
const bitsOf = (f: Format, x: number): bigint => (f === SINGLE ? sBits(x) : dBits(x));
const valueOf = (f: Format, b: bigint): number => (f === SINGLE ? sVal(b) : dVal(b));
const fmtOf = (f: Format): number => (f === SINGLE ? FMT_S : FMT_D);
const signBit = (f: Format): bigint => 1n << BigInt(f.width - 1);
const hex = (b: bigint): string => `0x${b.toString(16)}`;

// ---- running instructions ----

interface Result {
  bits: bigint;
  flags: number;
}

function exec(insn: number, frm = RNE): number {
  fpu.frm = frm;
  fpu.fflags = 0;
  assert.ok(fpu.exec(insn), `instruction ${insn.toString(16)} should be legal`);
  return fpu.fflags;
}

function setOperand(f: Format, reg: number, bits: bigint): void {
  fpu.setF(reg, f === SINGLE ? bits | BOX : bits);
}

function fResult(f: Format, reg: number): bigint {
  const v = fpu.getF(reg);
  if (f === DOUBLE) return v;
  assert.equal(v & BOX, BOX, `single result ${hex(v)} must be NaN-boxed`);
  return v & 0xffffffffn;
}

function arith(f: Format, funct5: number, rm: number, a: bigint, b = 0n): Result {
  setOperand(f, 1, a);
  setOperand(f, 2, b);
  const flags = exec(opFp(funct5, fmtOf(f), rm, 3, 1, funct5 === FSQRT ? 0 : 2));
  return { bits: fResult(f, 3), flags };
}

function fused(f: Format, opcode: number, rm: number, a: bigint, b: bigint, c: bigint): Result {
  setOperand(f, 1, a);
  setOperand(f, 2, b);
  setOperand(f, 3, c);
  const flags = exec(r4(opcode, fmtOf(f), rm, 4, 1, 2, 3));
  return { bits: fResult(f, 4), flags };
}

function toInt(f: Format, kind: number, rm: number, a: bigint): Result {
  setOperand(f, 1, a);
  const flags = exec(opFp(FCVT_IF, fmtOf(f), rm, 10, 1, kind));
  return { bits: fpu.getX(10), flags };
}

function fromInt(f: Format, kind: number, rm: number, x: bigint): Result {
  fpu.setX(10, x);
  const flags = exec(opFp(FCVT_FI, fmtOf(f), rm, 3, 10, kind));
  return { bits: fResult(f, 3), flags };
}

function intResult(f: Format, funct5: number, funct3: number, a: bigint, b = 0n, rs2 = 2): Result {
  setOperand(f, 1, a);
  setOperand(f, 2, b);
  const flags = exec(opFp(funct5, fmtOf(f), funct3, 10, 1, rs2));
  return { bits: fpu.getX(10), flags };
}

// ---- deterministic random operands ----

let seed = 0x2f6b_91c3;
function rand32(): number {
  // mulberry32
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return (t ^ (t >>> 14)) >>> 0;
}
const below = (n: number): number => rand32() % n;
const rand64 = (): bigint => (BigInt(rand32()) << 32n) | BigInt(rand32());

function randMantissa(f: Format): bigint {
  const width = BigInt(f.p - 1);
  const all = (1n << width) - 1n;
  switch (below(6)) {
    case 0: return 0n;
    case 1: return all;
    case 2: return 1n << BigInt(below(f.p - 1));
    case 3: return all ^ (1n << BigInt(below(f.p - 1)));
    default: return rand64() & all;
  }
}

/** Finite values, weighted towards subnormals, the normal boundary, 1.0 and overflow. */
function randFinite(f: Format): bigint {
  const expMax = 2 ** f.expBits - 1;
  let e: number;
  switch (below(6)) {
    case 0: e = below(3); break;
    case 1: e = expMax - 1 - below(3); break;
    case 2: e = f.bias - 4 + below(9); break;
    default: e = 1 + below(expMax - 1);
  }
  const sign = below(2) === 1 ? signBit(f) : 0n;
  return sign | (BigInt(e) << BigInt(f.p - 1)) | randMantissa(f);
}

/** v moved by up to two ulps; a random finite value if that leaves the finite range. */
function nudged(f: Format, v: bigint): bigint {
  const n = v + BigInt(below(5)) - 2n;
  const inf = ((1n << BigInt(f.expBits)) - 1n) << BigInt(f.p - 1);
  return n < 0n || (n & ~signBit(f)) >= inf || n >> BigInt(f.width) !== 0n ? randFinite(f) : n;
}

/** Exact value of a finite operand. */
function exact(f: Format, bits: bigint): Rational {
  const d = decode(bits, f);
  assert.equal(d.kind, 'finite');
  if (d.kind !== 'finite') throw new Error('unreachable');
  return d.value;
}

/** Reference for x + y where a zero result's sign follows IEEE 754's sum rules. */
function refSum(f: Format, x: Rational, y: Rational, rm: number): Result {
  const s = add(x, y);
  if (s.num !== 0n) return round(s, f, rm);
  const neg = x.num === 0n && y.num === 0n && x.neg === y.neg ? x.neg : rm === RDN;
  return { bits: neg ? signBit(f) : 0n, flags: 0 };
}

function assertSame(got: Result, want: Result, what: string): void {
  if (got.bits !== want.bits || got.flags !== want.flags) {
    assert.fail(`${what}: got ${hex(got.bits)} flags ${got.flags}, want ${hex(want.bits)} flags ${want.flags}`);
  }
}

// ---------------------------------------------------------------------------------------

describe('round-to-nearest-even against host arithmetic', () => {
  for (const f of FORMATS) {
    test(`add, sub, mul, div, sqrt (${f.width}-bit)`, () => {
      // Host doubles are IEEE RNE; for single, one double operation followed by fround is
      // also correctly rounded, since 53 >= 2*24 + 2.
      const narrow = (x: number): number => (f === SINGLE ? Math.fround(x) : x);
      const ops: [number, (x: number, y: number) => number][] = [
        [FADD, (x, y) => x + y], [FSUB, (x, y) => x - y], [FMUL, (x, y) => x * y], [FDIV, (x, y) => x / y],
        [FSQRT, (x) => Math.sqrt(x)],
      ];
      for (let i = 0; i < 3000; i++) {
        const a = randFinite(f), b = randFinite(f);
        for (const [funct5, op] of ops) {
          const want = narrow(op(valueOf(f, a), valueOf(f, b)));
          const got = arith(f, funct5, RNE, a, b).bits;
          const expected = Number.isNaN(want) ? canonicalNaN(f) : bitsOf(f, want);
          if (got !== expected) assert.fail(`op ${funct5} ${hex(a)} ${hex(b)}: got ${hex(got)}, want ${hex(expected)}`);
        }
      }
    });
  }
});

describe('every rounding mode against the exact reference', () => {
  for (const f of FORMATS) {
    test(`add/sub/mul/div/sqrt with flags (${f.width}-bit)`, () => {
      for (let i = 0; i < 1500; i++) {
        const a = randFinite(f);
        // Related operands exercise cancellation and near-boundary products.
        const b = below(4) === 0 ? nudged(f, a ^ signBit(f)) : randFinite(f);
        const x = exact(f, a), y = exact(f, b);
        for (const rm of ROUNDING_MODES) {
          assertSame(arith(f, FADD, rm, a, b), refSum(f, x, y, rm), `fadd ${hex(a)} ${hex(b)} rm${rm}`);
          assertSame(arith(f, FSUB, rm, a, b), refSum(f, x, negate(y), rm), `fsub ${hex(a)} ${hex(b)} rm${rm}`);
          const p = mul(x, y);
          const wantMul = p.num === 0n ? { bits: p.neg ? signBit(f) : 0n, flags: 0 } : round(p, f, rm);
          assertSame(arith(f, FMUL, rm, a, b), wantMul, `fmul ${hex(a)} ${hex(b)} rm${rm}`);
          if (y.num !== 0n) {
            const q = div(x, y);
            const wantDiv = q.num === 0n ? { bits: q.neg ? signBit(f) : 0n, flags: 0 } : round(q, f, rm);
            assertSame(arith(f, FDIV, rm, a, b), wantDiv, `fdiv ${hex(a)} ${hex(b)} rm${rm}`);
          }
          if (!x.neg && x.num !== 0n) {
            assertSame(arith(f, FSQRT, rm, a), round(sqrtRational(x), f, rm), `fsqrt ${hex(a)} rm${rm}`);
          }
        }
      }
    });

    test(`fused multiply-add family with flags (${f.width}-bit)`, () => {
      const variants: [number, boolean, boolean][] = [
        [FMADD, false, false], [FMSUB, false, true], [FNMSUB, true, false], [FNMADD, true, true],
      ];
      for (let i = 0; i < 1500; i++) {
        const a = randFinite(f), b = randFinite(f);
        const p = mul(exact(f, a), exact(f, b));
        let c: bigint;
        switch (below(4)) {
          case 0: c = randFinite(f); break;
          // Minus the rounded product, give or take an ulp: the sum is (nearly) the
          // product's rounding error, which only a truly fused operation gets right.
          default: c = nudged(f, p.num === 0n ? 0n : round(negate(p), f, RNE).bits);
        }
        const z = exact(f, c);
        for (const rm of ROUNDING_MODES) {
          for (const [opcode, negP, negC] of variants) {
            const want = refSum(f, negP ? negate(p) : p, negC ? negate(z) : z, rm);
            assertSame(fused(f, opcode, rm, a, b, c), want, `fma ${opcode} ${hex(a)} ${hex(b)} ${hex(c)} rm${rm}`);
          }
        }
      }
    });

    test(`integer conversions (${f.width}-bit)`, () => {
      const ranges: [number, bigint, bigint][] = [
        [W, -(1n << 31n), (1n << 31n) - 1n], [WU, 0n, (1n << 32n) - 1n],
        [L, -(1n << 63n), (1n << 63n) - 1n], [LU, 0n, (1n << 64n) - 1n],
      ];
      for (let i = 0; i < 2000; i++) {
        // Magnitudes from fractions up to beyond 2^64.
        const e = f.bias - 3 + below(70);
        const a = below(3) === 0 ? randFinite(f) : (below(2) === 1 ? signBit(f) : 0n) | (BigInt(e) << BigInt(f.p - 1)) | randMantissa(f);
        const x = exact(f, a);
        for (const rm of ROUNDING_MODES) {
          for (const [kind, min, max] of ranges) {
            const { q, exact: isExact } = roundInt(x.num, x.den, x.neg, rm);
            const v = x.neg ? -q : q;
            let want: Result;
            if (v < min) want = { bits: min, flags: NV };
            else if (v > max) want = { bits: max, flags: NV };
            else want = { bits: v, flags: isExact ? 0 : NX };
            // 32-bit results are sign-extended into the 64-bit register, even for WU.
            want.bits = kind < L ? BigInt.asUintN(64, BigInt.asIntN(32, want.bits)) : BigInt.asUintN(64, want.bits);
            assertSame(toInt(f, kind, rm, a), want, `fcvt to int kind ${kind} ${hex(a)} rm${rm}`);
          }
        }
        const n = rand64() >> BigInt(below(64));
        const sources: [number, bigint][] = [
          [W, BigInt.asIntN(32, n)], [WU, BigInt.asUintN(32, n)], [L, BigInt.asIntN(64, n)], [LU, n],
        ];
        for (const rm of ROUNDING_MODES) {
          for (const [kind, value] of sources) {
            const want = value === 0n ? { bits: 0n, flags: 0 } : round(scaled(value < 0n, value < 0n ? -value : value, 0), f, rm);
            // The register holds garbage above a word source; it must be ignored.
            const reg = kind < L ? (rand64() << 32n) | BigInt.asUintN(32, value) : BigInt.asUintN(64, value);
            assertSame(fromInt(f, kind, rm, reg), want, `fcvt from int kind ${kind} ${value} rm${rm}`);
          }
        }
      }
    });
  }

  test('fcvt.s.d and fcvt.d.s', () => {
    for (let i = 0; i < 4000; i++) {
      // Doubles around single precision's range, including its subnormals.
      const e = 1023 - 155 + below(290);
      const d = (below(2) === 1 ? signBit(DOUBLE) : 0n) | (BigInt(e) << 52n) | randMantissa(DOUBLE);
      for (const rm of ROUNDING_MODES) {
        setOperand(DOUBLE, 1, d);
        const flags = exec(opFp(FCVT_FF, FMT_S, rm, 3, 1, 1));
        assertSame({ bits: fResult(SINGLE, 3), flags }, round(exact(DOUBLE, d), SINGLE, rm), `fcvt.s.d ${hex(d)} rm${rm}`);
      }
      const s = randFinite(SINGLE);
      setOperand(SINGLE, 1, s);
      const flags = exec(opFp(FCVT_FF, FMT_D, RNE, 3, 1, 0));
      assertSame({ bits: fpu.getF(3), flags }, { bits: dBits(sVal(s)), flags: 0 }, `fcvt.d.s ${hex(s)}`);
    }
  });
});

describe('rounding-mode selection', () => {
  const third = (f: Format): [bigint, bigint] => [bitsOf(f, 1), bitsOf(f, 3)];
  test('static rm wins over frm; DYN uses frm', () => {
    for (const f of FORMATS) {
      const [one, three] = third(f);
      const down = arith(f, FDIV, RDN, one, three).bits;
      const up = arith(f, FDIV, RUP, one, three).bits;
      assert.equal(up, down + 1n);
      setOperand(f, 1, one);
      setOperand(f, 2, three);
      exec(opFp(FDIV, fmtOf(f), RDN, 3, 1, 2), RUP);
      assert.equal(fResult(f, 3), down);
      exec(opFp(FDIV, fmtOf(f), DYN, 3, 1, 2), RUP);
      assert.equal(fResult(f, 3), up);
    }
  });

  test('reserved rounding modes are illegal and change nothing', () => {
    const insns = [
      opFp(FADD, FMT_D, 5, 3, 1, 2), opFp(FMUL, FMT_S, 6, 3, 1, 2), opFp(FSQRT, FMT_D, 5, 3, 1, 0),
      opFp(FCVT_IF, FMT_D, 5, 10, 1, W), opFp(FCVT_FI, FMT_S, 6, 3, 10, L), opFp(FCVT_FF, FMT_D, 5, 3, 1, 0),
      r4(FMADD, FMT_D, 5, 3, 1, 2, 4),
    ];
    const dynInsns = [opFp(FADD, FMT_S, DYN, 3, 1, 2), r4(FNMADD, FMT_S, DYN, 3, 1, 2, 4), opFp(FCVT_IF, FMT_S, DYN, 10, 1, LU)];
    const check = (insn: number, frm: number): void => {
      fpu.setF(1, dBits(1));
      fpu.setF(2, dBits(3));
      fpu.setF(3, 0x1234n);
      fpu.setX(10, 0x5678n);
      fpu.frm = frm;
      fpu.fflags = NX;
      assert.equal(fpu.exec(insn), false, `${insn.toString(16)} with frm ${frm}`);
      assert.equal(fpu.getF(3), 0x1234n);
      assert.equal(fpu.getX(10), 0x5678n);
      assert.equal(fpu.fflags, NX);
    };
    for (const insn of insns) check(insn, RNE);
    for (const insn of dynInsns) for (const frm of [5, 6, 7]) check(insn, frm);
  });

  test('unknown encodings are illegal', () => {
    const bad = [
      opFp(FADD, 2, RNE, 3, 1, 2), opFp(FADD, 3, RNE, 3, 1, 2), // half and quad formats
      opFp(FSQRT, FMT_D, RNE, 3, 1, 1), opFp(FSGNJ, FMT_S, 3, 3, 1, 2), opFp(FMINMAX, FMT_D, 2, 3, 1, 2),
      opFp(FCMP, FMT_S, 3, 10, 1, 2), opFp(FCVT_IF, FMT_D, RNE, 10, 1, 4), opFp(FCVT_FI, FMT_S, RNE, 3, 10, 5),
      opFp(FCVT_FF, FMT_S, RNE, 3, 1, 0), opFp(FCVT_FF, FMT_D, RNE, 3, 1, 1), opFp(FMV_XF, FMT_S, 2, 10, 1, 0),
      opFp(FMV_XF, FMT_D, 0, 10, 1, 1), opFp(FMV_FX, FMT_S, 1, 3, 10, 0), opFp(0x06, FMT_S, RNE, 3, 1, 2),
      opFp(0x1f, FMT_D, RNE, 3, 1, 2), r4(FMADD, 2, RNE, 3, 1, 2, 4),
    ];
    for (const insn of bad) {
      fpu.fflags = 0;
      fpu.setF(3, 0x1234n);
      assert.equal(fpu.exec(insn), false, insn.toString(16));
      assert.equal(fpu.getF(3), 0x1234n);
      assert.equal(fpu.fflags, 0);
    }
  });
});

describe('exception flags', () => {
  test('inexact, and flags accrue rather than replace', () => {
    setOperand(DOUBLE, 1, dBits(1));
    setOperand(DOUBLE, 2, dBits(3));
    fpu.fflags = DZ;
    assert.ok(fpu.exec(opFp(FDIV, FMT_D, RNE, 3, 1, 2)));
    assert.equal(fpu.fflags, DZ | NX);
    assert.equal(arith(DOUBLE, FDIV, RNE, dBits(1), dBits(4)).flags, 0);
  });

  test('overflow goes to infinity or the largest finite value by rounding mode', () => {
    for (const f of FORMATS) {
      const max = bitsOf(f, f === SINGLE ? 3.4028234663852886e38 : Number.MAX_VALUE);
      const inf = bitsOf(f, Infinity);
      const two = bitsOf(f, 2);
      const cases: [number, bigint, bigint][] = [
        [RNE, inf, inf | signBit(f)], [RTZ, max, max | signBit(f)], [RDN, max, inf | signBit(f)],
        [RUP, inf, max | signBit(f)], [RMM, inf, inf | signBit(f)],
      ];
      for (const [rm, pos, neg] of cases) {
        assert.deepEqual(arith(f, FMUL, rm, max, two), { bits: pos, flags: OF | NX });
        assert.deepEqual(arith(f, FMUL, rm, max | signBit(f), two), { bits: neg, flags: OF | NX });
      }
      // Half an ulp above the largest finite value rounds up to infinity under RNE.
      const halfUlp = scaled(false, 1n, f.bias - f.p);
      assert.equal(round(add(exact(f, max), halfUlp), f, RNE).bits, inf);
      assert.deepEqual(arith(f, FADD, RNE, max, bitsOf(f, valueOf(f, max) * 2 ** -f.p)), { bits: inf, flags: OF | NX });
      // Less than half an ulp is absorbed without overflow.
      assert.deepEqual(arith(f, FADD, RNE, max, bitsOf(f, valueOf(f, max) * 2 ** -(f.p + 1))), { bits: max, flags: NX });
    }
  });

  test('underflow uses tininess after rounding (fcvt.s.d edge)', () => {
    const minNormal = 0x00800000n;
    const maxSub = 0x007fffffn;
    const cvt = (x: number, rm: number): Result => {
      setOperand(DOUBLE, 1, dBits(x));
      const flags = exec(opFp(FCVT_FF, FMT_S, rm, 3, 1, 1));
      return { bits: fResult(SINGLE, 3), flags };
    };
    // 2^-126 (1 - 2^-25): with unbounded exponent RNE ties up to 2^-126, so it is not tiny.
    assert.deepEqual(cvt(2 ** -126 * (1 - 2 ** -25), RNE), { bits: minNormal, flags: NX });
    // Truncating it stays below 2^-126: tiny and inexact.
    assert.deepEqual(cvt(2 ** -126 * (1 - 2 ** -25), RTZ), { bits: maxSub, flags: UF | NX });
    assert.deepEqual(cvt(2 ** -126 * (1 - 2 ** -25), RUP), { bits: minNormal, flags: NX });
    // 2^-126 (1 - 2^-24) is exactly representable with 24 bits, hence tiny; the subnormal
    // rounding is inexact and its tie goes up to the smallest normal.
    assert.deepEqual(cvt(2 ** -126 * (1 - 2 ** -24), RNE), { bits: minNormal, flags: UF | NX });
    // Exact subnormal results raise nothing.
    assert.deepEqual(cvt(2 ** -140, RNE), { bits: 1n << 9n, flags: 0 });
  });

  test('underflow uses tininess after rounding (double multiply edge)', () => {
    // (1 + 2^-27) * (1 - 2^-27) 2^-1022 = 2^-1022 (1 - 2^-54): RNE with unbounded exponent
    // reaches 2^-1022, so not tiny; RTZ does not, so tiny.
    const a = 0x3ff0000002000000n;
    const b = 0x000ffffffe000000n;
    assert.equal(dVal(a), 1 + 2 ** -27);
    assert.equal(dVal(b), (1 - 2 ** -27) * 2 ** -1022);
    assert.deepEqual(arith(DOUBLE, FMUL, RNE, a, b), { bits: 0x0010000000000000n, flags: NX });
    assert.deepEqual(arith(DOUBLE, FMUL, RTZ, a, b), { bits: 0x000fffffffffffffn, flags: UF | NX });
    // (1 - 2^-53) 2^-1022 is tiny at any precision; RNE still ties up to the smallest normal.
    assert.deepEqual(arith(DOUBLE, FMUL, RNE, 0x3fefffffffffffffn, 0x0010000000000000n), { bits: 0x0010000000000000n, flags: UF | NX });
    // Underflow to zero.
    assert.deepEqual(arith(DOUBLE, FMUL, RNE, dBits(2 ** -600), dBits(-(2 ** -600))), { bits: signBit(DOUBLE), flags: UF | NX });
    assert.deepEqual(arith(DOUBLE, FMUL, RUP, dBits(2 ** -600), dBits(2 ** -600)), { bits: 1n, flags: UF | NX });
  });

  test('division by zero', () => {
    for (const f of FORMATS) {
      assert.deepEqual(arith(f, FDIV, RNE, bitsOf(f, 1), bitsOf(f, 0)), { bits: bitsOf(f, Infinity), flags: DZ });
      assert.deepEqual(arith(f, FDIV, RNE, bitsOf(f, -1), bitsOf(f, 0)), { bits: bitsOf(f, -Infinity), flags: DZ });
      assert.deepEqual(arith(f, FDIV, RNE, bitsOf(f, 1), bitsOf(f, -0)), { bits: bitsOf(f, -Infinity), flags: DZ });
      assert.deepEqual(arith(f, FDIV, RNE, bitsOf(f, Infinity), bitsOf(f, 0)), { bits: bitsOf(f, Infinity), flags: 0 });
    }
  });

  test('invalid operations give the canonical NaN and NV', () => {
    for (const f of FORMATS) {
      const nan = canonicalNaN(f);
      const snan = f === SINGLE ? 0x7f800001n : 0x7ff0000000000001n;
      const qnanPayload = f === SINGLE ? 0xffc12345n : 0xfff8000000012345n;
      const inf = bitsOf(f, Infinity), ninf = bitsOf(f, -Infinity);
      const one = bitsOf(f, 1), zero = bitsOf(f, 0);
      const invalid = { bits: nan, flags: NV };
      const quiet = { bits: nan, flags: 0 };
      assert.deepEqual(arith(f, FADD, RNE, snan, one), invalid);
      assert.deepEqual(arith(f, FADD, RNE, qnanPayload, one), quiet);
      assert.deepEqual(arith(f, FADD, RNE, inf, ninf), invalid);
      assert.deepEqual(arith(f, FSUB, RNE, inf, inf), invalid);
      assert.deepEqual(arith(f, FADD, RNE, inf, inf), { bits: inf, flags: 0 });
      assert.deepEqual(arith(f, FMUL, RNE, zero, ninf), invalid);
      assert.deepEqual(arith(f, FDIV, RNE, zero, zero), invalid);
      assert.deepEqual(arith(f, FDIV, RNE, inf, ninf), invalid);
      assert.deepEqual(arith(f, FSQRT, RNE, bitsOf(f, -1)), invalid);
      assert.deepEqual(arith(f, FSQRT, RNE, ninf), invalid);
      assert.deepEqual(arith(f, FSQRT, RNE, bitsOf(f, -0)), { bits: bitsOf(f, -0), flags: 0 });
      assert.deepEqual(arith(f, FSQRT, RNE, snan), invalid);
      // inf * 0 is invalid even with a quiet NaN addend.
      assert.deepEqual(fused(f, FMADD, RNE, inf, zero, qnanPayload), invalid);
      assert.deepEqual(fused(f, FMADD, RNE, one, one, qnanPayload), quiet);
      assert.deepEqual(fused(f, FMADD, RNE, one, one, snan), invalid);
      assert.deepEqual(fused(f, FMADD, RNE, inf, one, ninf), invalid);
      assert.deepEqual(fused(f, FMSUB, RNE, inf, one, inf), invalid);
      assert.deepEqual(fused(f, FNMADD, RNE, inf, one, ninf), invalid);
      assert.deepEqual(fused(f, FNMADD, RNE, inf, one, inf), { bits: ninf, flags: 0 });
      assert.deepEqual(fused(f, FMADD, RNE, one, one, ninf), { bits: ninf, flags: 0 });
    }
  });

  test('signed zeros of exact sums', () => {
    for (const f of FORMATS) {
      const pz = bitsOf(f, 0), nz = bitsOf(f, -0), one = bitsOf(f, 1), none = bitsOf(f, -1);
      for (const rm of ROUNDING_MODES) {
        const cancel = rm === RDN ? nz : pz;
        assert.equal(arith(f, FADD, rm, one, none).bits, cancel);
        assert.equal(arith(f, FADD, rm, pz, nz).bits, cancel);
        assert.equal(arith(f, FADD, rm, nz, nz).bits, nz);
        assert.equal(arith(f, FSUB, rm, nz, pz).bits, nz);
        assert.equal(fused(f, FMADD, rm, one, one, none).bits, cancel);
        assert.equal(fused(f, FMADD, rm, nz, one, nz).bits, nz);
        assert.equal(fused(f, FNMADD, rm, pz, one, pz).bits, nz);
        assert.equal(fused(f, FMSUB, rm, pz, one, pz).bits, cancel);
      }
    }
  });
});

describe('fused multiply-add is a single rounding', () => {
  test('recovers the exact error of a double product', () => {
    // fma(a, b, -round(a*b)) is exactly the low part of the product, which is representable:
    // a result a separately rounded product would lose entirely.
    for (let i = 0; i < 2000; i++) {
      const a = dBits(1 + rand32() / 2 ** 32), b = dBits((1 + rand32() / 2 ** 32) * 2 ** (below(40) - 20));
      const p = dVal(a) * dVal(b);
      const got = fused(DOUBLE, FMADD, RNE, a, b, dBits(-p));
      const err = add(mul(exact(DOUBLE, a), exact(DOUBLE, b)), exact(DOUBLE, dBits(-p)));
      assert.equal(got.flags, 0);
      const want = err.num === 0n ? 0n : round(err, DOUBLE, RNE).bits;
      assert.equal(got.bits, want, `${hex(a)} * ${hex(b)}`);
    }
  });

  test('known cancellation cases', () => {
    // (1 + 2^-52)(1 - 2^-52) - 1 = -2^-104 exactly.
    assert.deepEqual(fused(DOUBLE, FMADD, RNE, dBits(1 + 2 ** -52), dBits(1 - 2 ** -52), dBits(-1)), { bits: dBits(-(2 ** -104)), flags: 0 });
    // Single: (1 + 2^-23)^2 - (1 + 2^-22) = 2^-46.
    assert.deepEqual(fused(SINGLE, FMSUB, RUP, sBits(1 + 2 ** -23), sBits(1 + 2 ** -23), sBits(1 + 2 ** -22)), { bits: sBits(2 ** -46), flags: 0 });
    // (1 + 2^-26)(1 + 2^-27) lies exactly halfway between two doubles; a tiny addend on
    // either side decides the rounding, which a separately rounded product cannot see.
    const a = dBits(1 + 2 ** -26), b = dBits(1 + 2 ** -27);
    const down = dBits(1 + 2 ** -26 + 2 ** -27), up = dBits(1 + 2 ** -26 + 2 ** -27 + 2 ** -52);
    const tiny = 1n; // 2^-1074
    assert.deepEqual(fused(DOUBLE, FMADD, RNE, a, b, 0n), { bits: down, flags: NX });
    assert.deepEqual(fused(DOUBLE, FMADD, RNE, a, b, tiny), { bits: up, flags: NX });
    assert.deepEqual(fused(DOUBLE, FMADD, RNE, a, b, tiny | signBit(DOUBLE)), { bits: down, flags: NX });
    assert.deepEqual(fused(DOUBLE, FMADD, RMM, a, b, 0n), { bits: up, flags: NX });
    assert.deepEqual(fused(DOUBLE, FMADD, RMM, a, b, tiny | signBit(DOUBLE)), { bits: down, flags: NX });
    assert.deepEqual(fused(DOUBLE, FNMSUB, RNE, a, b, tiny), { bits: down | signBit(DOUBLE), flags: NX });
  });
});

describe('NaN boxing', () => {
  test('badly boxed single operands read as the canonical NaN', () => {
    fpu.setF(1, 0x000000003f800000n); // 1.0f without the box
    fpu.setF(2, sBits(1) | BOX);
    assert.equal(exec(opFp(FADD, FMT_S, RNE, 3, 1, 2)), 0);
    assert.equal(fpu.getF(3), 0x7fc00000n | BOX);
    fpu.setF(1, 0xfffffffe3f800000n);
    exec(opFp(FSGNJ, FMT_S, 1, 3, 1, 2)); // fsgnjn: sign of the (valid) second operand, negated
    assert.equal(fpu.getF(3), 0xffc00000n | BOX);
    exec(opFp(FMV_XF, FMT_S, 1, 10, 1, 0));
    assert.equal(fpu.getX(10), 1n << 9n, 'fclass sees a quiet NaN');
    exec(opFp(FCVT_FF, FMT_D, RNE, 3, 1, 0));
    assert.equal(fpu.getF(3), 0x7ff8000000000000n);
    assert.equal(exec(opFp(FCMP, FMT_S, 2, 10, 1, 2)), 0, 'feq on the canonical NaN is quiet');
    assert.equal(fpu.getX(10), 0n);
  });

  test('fmv.x.w ignores boxing and sign-extends; fmv.w.x boxes', () => {
    fpu.setF(1, 0x12345678_87654321n);
    exec(opFp(FMV_XF, FMT_S, 0, 10, 1, 0));
    assert.equal(fpu.getX(10), 0xffffffff_87654321n);
    fpu.setF(1, 0xffffffff_7fffffffn);
    exec(opFp(FMV_XF, FMT_S, 0, 10, 1, 0));
    assert.equal(fpu.getX(10), 0x7fffffffn);
    fpu.setX(10, 0xabcdef01_23456789n);
    exec(opFp(FMV_FX, FMT_S, 0, 3, 10, 0));
    assert.equal(fpu.getF(3), 0xffffffff_23456789n);
    exec(opFp(FMV_FX, FMT_D, 0, 3, 10, 0));
    assert.equal(fpu.getF(3), 0xabcdef01_23456789n);
    fpu.setF(1, 0x7ff0000000000001n);
    exec(opFp(FMV_XF, FMT_D, 0, 10, 1, 0));
    assert.equal(fpu.getX(10), 0x7ff0000000000001n);
  });

  test('single results are boxed and x0 is never written', () => {
    assert.equal(fromInt(SINGLE, W, RNE, 7n).bits, sBits(7));
    fpu.setF(1, dBits(2));
    fpu.setF(2, dBits(1));
    exec(opFp(FCMP, FMT_D, 1, 0, 1, 2));
    assert.equal(fpu.getX(0), 0n);
  });
});

describe('sign injection, min/max, compare, classify', () => {
  test('fsgnj family works on raw bits, NaNs included', () => {
    for (const f of FORMATS) {
      const snan = f === SINGLE ? 0x7f800001n : 0x7ff0000000000001n;
      const neg = signBit(f);
      const run = (funct3: number, a: bigint, b: bigint): bigint => {
        setOperand(f, 1, a);
        setOperand(f, 2, b);
        assert.equal(exec(opFp(FSGNJ, fmtOf(f), funct3, 3, 1, 2)), 0);
        return fResult(f, 3);
      };
      assert.equal(run(0, snan, neg), snan | neg);
      assert.equal(run(1, snan | neg, neg), snan);
      assert.equal(run(2, snan | neg, neg), snan);
      assert.equal(run(2, bitsOf(f, 3), neg), bitsOf(f, -3));
    }
  });

  test('fmin/fmax: -0 < +0, NaN operands', () => {
    for (const f of FORMATS) {
      const pz = bitsOf(f, 0), nz = bitsOf(f, -0), one = bitsOf(f, 1), two = bitsOf(f, -2);
      const snan = f === SINGLE ? 0x7f800001n : 0x7ff0000000000001n;
      const qnan = f === SINGLE ? 0xffc00001n : 0xfff8000000000001n;
      const run = (max: boolean, a: bigint, b: bigint): Result => arith(f, FMINMAX, max ? 1 : 0, a, b);
      assert.deepEqual(run(false, pz, nz), { bits: nz, flags: 0 });
      assert.deepEqual(run(false, nz, pz), { bits: nz, flags: 0 });
      assert.deepEqual(run(true, pz, nz), { bits: pz, flags: 0 });
      assert.deepEqual(run(true, nz, pz), { bits: pz, flags: 0 });
      assert.deepEqual(run(false, one, two), { bits: two, flags: 0 });
      assert.deepEqual(run(true, one, two), { bits: one, flags: 0 });
      assert.deepEqual(run(false, qnan, one), { bits: one, flags: 0 });
      assert.deepEqual(run(true, one, qnan), { bits: one, flags: 0 });
      assert.deepEqual(run(false, snan, one), { bits: one, flags: NV });
      assert.deepEqual(run(true, qnan, snan), { bits: canonicalNaN(f), flags: NV });
      assert.deepEqual(run(false, qnan, qnan), { bits: canonicalNaN(f), flags: 0 });
    }
  });

  test('feq is quiet, flt/fle signal on any NaN', () => {
    for (const f of FORMATS) {
      const snan = f === SINGLE ? 0x7f800001n : 0x7ff0000000000001n;
      const qnan = canonicalNaN(f);
      const one = bitsOf(f, 1), two = bitsOf(f, 2), pz = bitsOf(f, 0), nz = bitsOf(f, -0);
      const FEQ = 2, FLT = 1, FLE = 0;
      const cmp = (op: number, a: bigint, b: bigint): Result => intResult(f, FCMP, op, a, b);
      assert.deepEqual(cmp(FEQ, one, one), { bits: 1n, flags: 0 });
      assert.deepEqual(cmp(FEQ, pz, nz), { bits: 1n, flags: 0 });
      assert.deepEqual(cmp(FLT, nz, pz), { bits: 0n, flags: 0 });
      assert.deepEqual(cmp(FLE, nz, pz), { bits: 1n, flags: 0 });
      assert.deepEqual(cmp(FLT, one, two), { bits: 1n, flags: 0 });
      assert.deepEqual(cmp(FLT, bitsOf(f, -2), bitsOf(f, -1)), { bits: 1n, flags: 0 });
      assert.deepEqual(cmp(FLE, two, one), { bits: 0n, flags: 0 });
      assert.deepEqual(cmp(FEQ, qnan, qnan), { bits: 0n, flags: 0 });
      assert.deepEqual(cmp(FEQ, snan, one), { bits: 0n, flags: NV });
      assert.deepEqual(cmp(FLT, qnan, one), { bits: 0n, flags: NV });
      assert.deepEqual(cmp(FLE, one, qnan), { bits: 0n, flags: NV });
    }
  });

  test('fclass distinguishes all ten classes', () => {
    for (const f of FORMATS) {
      const minSub = 1n, minNormal = 1n << BigInt(f.p - 1);
      const cases: [bigint, number][] = [
        [bitsOf(f, -Infinity), 0], [bitsOf(f, -1), 1], [minSub | signBit(f), 2], [bitsOf(f, -0), 3],
        [bitsOf(f, 0), 4], [minSub, 5], [minNormal, 6], [bitsOf(f, Infinity), 7],
        [f === SINGLE ? 0x7f800001n : 0x7ff0000000000001n, 8], [canonicalNaN(f), 9],
        [(f === SINGLE ? 0xffc00000n : 0xfff8000000000000n) | 1n, 9], [minNormal - 1n, 5],
      ];
      for (const [bits, cls] of cases) {
        assert.deepEqual(intResult(f, FMV_XF, 1, bits, 0n, 0), { bits: 1n << BigInt(cls), flags: 0 }, hex(bits));
      }
    }
  });
});

describe('integer conversion saturation', () => {
  test('NaN, infinities and out-of-range values', () => {
    const sx = (v: bigint): bigint => BigInt.asUintN(64, BigInt.asIntN(32, v));
    const limits: [number, bigint, bigint][] = [
      [W, sx(0x80000000n), 0x7fffffffn], [WU, 0n, sx(0xffffffffn)],
      [L, 0x8000000000000000n, 0x7fffffffffffffffn], [LU, 0n, 0xffffffffffffffffn],
    ];
    for (const f of FORMATS) {
      for (const [kind, min, max] of limits) {
        for (const rm of ROUNDING_MODES) {
          assert.deepEqual(toInt(f, kind, rm, canonicalNaN(f)), { bits: max, flags: NV });
          assert.deepEqual(toInt(f, kind, rm, canonicalNaN(f) | signBit(f)), { bits: max, flags: NV });
          assert.deepEqual(toInt(f, kind, rm, bitsOf(f, Infinity)), { bits: max, flags: NV });
          assert.deepEqual(toInt(f, kind, rm, bitsOf(f, -Infinity)), { bits: min, flags: NV });
          assert.deepEqual(toInt(f, kind, rm, bitsOf(f, 2 ** 70)), { bits: max, flags: NV });
          assert.deepEqual(toInt(f, kind, rm, bitsOf(f, -(2 ** 70))), { bits: min, flags: NV });
        }
      }
      // Negative values rounding to zero are fine for unsigned targets; -1 is not.
      assert.deepEqual(toInt(f, WU, RTZ, bitsOf(f, -0.75)), { bits: 0n, flags: NX });
      assert.deepEqual(toInt(f, LU, RNE, bitsOf(f, -0.5)), { bits: 0n, flags: NX });
      assert.deepEqual(toInt(f, LU, RMM, bitsOf(f, -0.5)), { bits: 0n, flags: NV });
      assert.deepEqual(toInt(f, WU, RNE, bitsOf(f, -1)), { bits: 0n, flags: NV });
      assert.deepEqual(toInt(f, WU, RNE, bitsOf(f, -0)), { bits: 0n, flags: 0 });
      // Boundaries: -2^31 fits W; 2^31 does not; 2^32 - 256 fits WU (sign-extended).
      assert.deepEqual(toInt(f, W, RNE, bitsOf(f, -(2 ** 31))), { bits: sx(0x80000000n), flags: 0 });
      assert.deepEqual(toInt(f, W, RNE, bitsOf(f, 2 ** 31)), { bits: 0x7fffffffn, flags: NV });
      assert.deepEqual(toInt(f, WU, RNE, bitsOf(f, 2 ** 32 - 256)), { bits: sx(0xffffff00n), flags: 0 });
      assert.deepEqual(toInt(f, L, RNE, bitsOf(f, -(2 ** 63))), { bits: 0x8000000000000000n, flags: 0 });
      assert.deepEqual(toInt(f, L, RNE, bitsOf(f, 2 ** 63)), { bits: 0x7fffffffffffffffn, flags: NV });
      assert.deepEqual(toInt(f, LU, RNE, bitsOf(f, 2 ** 63)), { bits: 0x8000000000000000n, flags: 0 });
      assert.deepEqual(toInt(f, LU, RNE, bitsOf(f, 2 ** 64)), { bits: 0xffffffffffffffffn, flags: NV });
    }
    // Doubles can sit just beyond the W range and round back into it.
    assert.deepEqual(toInt(DOUBLE, W, RTZ, dBits(2147483647.5)), { bits: 0x7fffffffn, flags: NX });
    assert.deepEqual(toInt(DOUBLE, W, RNE, dBits(2147483647.5)), { bits: 0x7fffffffn, flags: NV });
    assert.deepEqual(toInt(DOUBLE, W, RUP, dBits(-2147483648.5)), { bits: sx(0x80000000n), flags: NX });
    assert.deepEqual(toInt(DOUBLE, W, RDN, dBits(-2147483648.5)), { bits: sx(0x80000000n), flags: NV });
  });

  test('rounding of halves', () => {
    const cases: [number, number[]][] = [
      // value: RNE, RTZ, RDN, RUP, RMM
      [2.5, [2, 2, 2, 3, 3]], [-2.5, [-2, -2, -3, -2, -3]], [3.5, [4, 3, 3, 4, 4]],
      [0.4, [0, 0, 0, 1, 0]], [-0.4, [0, 0, -1, 0, 0]],
    ];
    for (const f of FORMATS) {
      for (const [v, outs] of cases) {
        ROUNDING_MODES.forEach((rm, i) => {
          assert.equal(toInt(f, L, rm, bitsOf(f, v)).bits, BigInt.asUintN(64, BigInt(outs[i])), `${v} rm${rm}`);
        });
      }
    }
  });
});
