// RISC-V F and D extensions: the computational instructions (OP-FP and the fused
// multiply-adds). Loads and stores belong to the core.
//
// Everything is a small soft-float on integers. Native f64 arithmetic cannot honour the
// directed rounding modes or report the exception flags, and WebAssembly has no fused
// multiply-add, so no host FP operation is used for results.
//
// Both formats share one internal representation: a finite non-zero operand is unpacked to
// sign, unbiased exponent e and a 53-bit significand m with its leading 1 at bit 52, so the
// value is m * 2^(e-52). Single-precision significands simply carry 29 trailing zeros.
// Every operation computes an exact result (or a truncated one plus a sticky bit) and
// hands it to roundPack once, so single precision is never double-rounded.

import { getF, getX, setF, setX } from './layout';

export let fflags: u32 = 0;
export let frm: u32 = 0;

export function setFflags(v: u32): void {
  fflags = v & 0x1f;
}

export function setFrm(v: u32): void {
  frm = v & 7;
}

const NV: u32 = 16;
const DZ: u32 = 8;
const OF: u32 = 4;
const UF: u32 = 2;
const NX: u32 = 1;

const RNE: u32 = 0;
const RTZ: u32 = 1;
const RDN: u32 = 2;
const RUP: u32 = 3;
const RMM: u32 = 4;

const CANON_S: u64 = 0x7fc00000;
const CANON_D: u64 = 0x7ff8000000000000;
const BOX: u64 = 0xffffffff00000000;

// Operand classes produced by unpack.
const ZERO: u32 = 0;
const FINITE: u32 = 1;
const INF: u32 = 2;
const QNAN: u32 = 3;
const SNAN: u32 = 4;

// Flags raised by the instruction being executed; committed to fflags only on success.
let exc: u32 = 0;

// ---------------------------------------------------------------------------------------
// Register access with NaN boxing

/** An .S operand is valid only if the upper half is all ones; otherwise it reads as the
 *  canonical NaN (a quiet NaN, so it never raises NV by itself). */
function readS(r: u32): u64 {
  const v = getF(r);
  return (v & BOX) == BOX ? v & 0xffffffff : CANON_S;
}

function readOp(r: u32, dbl: bool): u64 {
  return dbl ? getF(r) : readS(r);
}

function writeOp(r: u32, v: u64, dbl: bool): void {
  setF(r, dbl ? v : v | BOX);
}

// ---------------------------------------------------------------------------------------
// Format helpers

@inline function mantBits(dbl: bool): i32 {
  return dbl ? 52 : 23;
}

@inline function expBias(dbl: bool): i32 {
  return dbl ? 1023 : 127;
}

@inline function signShift(dbl: bool): u64 {
  return dbl ? 63 : 31;
}

@inline function canonical(dbl: bool): u64 {
  return dbl ? CANON_D : CANON_S;
}

function infinity(dbl: bool, sign: u32): u64 {
  const expMask: u64 = dbl ? 0x7ff0000000000000 : 0x7f800000;
  return (<u64>sign << signShift(dbl)) | expMask;
}

function zero(dbl: bool, sign: u32): u64 {
  return <u64>sign << signShift(dbl);
}

function signOf(v: u64, dbl: bool): u32 {
  return <u32>(v >> signShift(dbl)) & 1;
}

// Unpacked operand (globals, because the stub runtime has no tuples or objects).
let uS: u32 = 0;
let uE: i32 = 0;
let uM: u64 = 0;
let uC: u32 = 0;

function unpack(v: u64, dbl: bool): void {
  const mb = mantBits(dbl);
  const bias = expBias(dbl);
  const fracMask: u64 = (<u64>1 << mb) - 1;
  const expMax: i32 = dbl ? 0x7ff : 0xff;
  uS = signOf(v, dbl);
  const ex = <i32>(v >> mb) & expMax;
  const frac = v & fracMask;
  uE = 0;
  uM = 0;
  if (ex == expMax) {
    if (frac == 0) uC = INF;
    else uC = (frac >> (mb - 1)) & 1 ? QNAN : SNAN;
  } else if (ex == 0) {
    if (frac == 0) {
      uC = ZERO;
    } else {
      uC = FINITE;
      const k = <i32>clz<u64>(frac) - 11;
      uM = frac << k;
      uE = 1 - bias - mb - k + 52;
    }
  } else {
    uC = FINITE;
    uM = (frac | (<u64>1 << mb)) << (52 - mb);
    uE = ex - bias;
  }
}

@inline function isNaNClass(c: u32): bool {
  return c >= QNAN;
}

// ---------------------------------------------------------------------------------------
// Rounding

let inexact: bool = false;

/** Shifts sig right by s (s >= 0), rounding the discarded bits according to rm. */
function roundShift(sig: u64, s: i32, sign: u32, rm: u32): u64 {
  if (s <= 0) {
    inexact = false;
    return sig << <u64>(-s);
  }
  if (s > 63) {
    // Everything is discarded, and it is below half of the last kept place.
    sig = sig != 0 ? 1 : 0;
    s = 63;
  }
  const half: u64 = <u64>1 << <u64>(s - 1);
  const lost = sig & ((half << 1) - 1);
  const kept = sig >> <u64>s;
  inexact = lost != 0;
  let inc = false;
  switch (rm) {
    case RNE: inc = lost > half || (lost == half && (kept & 1) != 0); break;
    case RDN: inc = inexact && sign != 0; break;
    case RUP: inc = inexact && sign == 0; break;
    case RMM: inc = lost >= half; break;
    default: break; // RTZ
  }
  return inc ? kept + 1 : kept;
}

/** Rounds sig * 2^(e-62), where sig has its leading 1 at bit 62 (lower bits may include a
 *  sticky bit), to the format, raising OF/UF/NX. Underflow uses tininess after rounding. */
function roundPack(dbl: bool, sign: u32, e: i32, sig: u64, rm: u32): u64 {
  const mb = mantBits(dbl);
  const emax = expBias(dbl);
  const emin = 1 - emax;
  const shift = 62 - mb;
  const signBit = <u64>sign << signShift(dbl);
  if (e < emin) {
    // Tiny unless rounding to full precision with an unbounded exponent would carry the
    // value up to the smallest normal.
    let tiny = true;
    if (e == emin - 1) tiny = roundShift(sig, shift, sign, rm) < (<u64>1 << <u64>(mb + 1));
    const kept = roundShift(sig, shift + (emin - e), sign, rm);
    if (inexact) exc |= tiny ? UF | NX : NX;
    // A carry out of the subnormal field lands in the exponent field, giving the smallest
    // normal, which is exactly right.
    return signBit | kept;
  }
  let kept = roundShift(sig, shift, sign, rm);
  if (kept >> <u64>(mb + 1)) {
    kept >>= 1;
    e++;
  }
  if (e > emax) {
    exc |= OF | NX;
    const toInf = rm == RNE || rm == RMM || (rm == RDN && sign != 0) || (rm == RUP && sign == 0);
    if (toInf) return infinity(dbl, sign);
    // Largest finite magnitude.
    return signBit | ((<u64>(2 * emax) << mb) | ((<u64>1 << mb) - 1));
  }
  if (inexact) exc |= NX;
  return signBit | (<u64>(e + emax) << mb) | (kept & ((<u64>1 << mb) - 1));
}

/** Like roundPack, for sig != 0 at any bit position; the value is still sig * 2^(e-62). */
function normRoundPack(dbl: bool, sign: u32, e: i32, sig: u64, rm: u32): u64 {
  const lz = <i32>clz<u64>(sig);
  if (lz == 0) {
    sig = (sig >> 1) | (sig & 1);
    e += 1;
  } else {
    sig <<= <u64>(lz - 1);
    e -= lz - 1;
  }
  return roundPack(dbl, sign, e, sig, rm);
}

/** Right shift that ORs every discarded bit into bit 0, keeping inexactness visible. */
function shrJam(v: u64, s: i32): u64 {
  if (s <= 0) return v;
  if (s > 63) return v != 0 ? 1 : 0;
  return (v >> <u64>s) | ((v & ((<u64>1 << <u64>s) - 1)) != 0 ? 1 : 0);
}

// ---------------------------------------------------------------------------------------
// 128-bit helpers for the exact product of two 53-bit significands. Results go to H:L.

let H: u64 = 0;
let L: u64 = 0;

function mul128(a: u64, b: u64): void {
  const a0 = a & 0xffffffff;
  const a1 = a >> 32;
  const b0 = b & 0xffffffff;
  const b1 = b >> 32;
  const p00 = a0 * b0;
  const p01 = a0 * b1;
  const p10 = a1 * b0;
  const p11 = a1 * b1;
  const mid = (p00 >> 32) + (p01 & 0xffffffff) + (p10 & 0xffffffff);
  L = (mid << 32) | (p00 & 0xffffffff);
  H = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
}

function shl128(h: u64, l: u64, s: i32): void {
  if (s == 0) {
    H = h;
    L = l;
  } else if (s >= 64) {
    H = l << <u64>(s - 64);
    L = 0;
  } else {
    H = (h << <u64>s) | (l >> <u64>(64 - s));
    L = l << <u64>s;
  }
}

function shrJam128(h: u64, l: u64, s: i32): void {
  if (s <= 0) {
    H = h;
    L = l;
  } else if (s >= 128) {
    H = 0;
    L = (h | l) != 0 ? 1 : 0;
  } else if (s >= 64) {
    const lost = s == 64 ? l : l | (h << <u64>(128 - s));
    H = 0;
    L = (s == 64 ? h : h >> <u64>(s - 64)) | (lost != 0 ? 1 : 0);
  } else {
    const lost = l << <u64>(64 - s);
    H = h >> <u64>s;
    L = (l >> <u64>s) | (h << <u64>(64 - s)) | (lost != 0 ? 1 : 0);
  }
}

// ---------------------------------------------------------------------------------------
// Arithmetic

function fadd(dbl: bool, a: u64, b: u64, negB: bool, rm: u32): u64 {
  unpack(a, dbl);
  const aS = uS, aE = uE, aM = uM, aC = uC;
  unpack(b, dbl);
  const bS = uS ^ (negB ? 1 : 0), bE = uE, bM = uM, bC = uC;
  if (isNaNClass(aC) || isNaNClass(bC)) {
    if (aC == SNAN || bC == SNAN) exc |= NV;
    return canonical(dbl);
  }
  if (aC == INF) {
    if (bC == INF && aS != bS) {
      exc |= NV;
      return canonical(dbl);
    }
    return infinity(dbl, aS);
  }
  if (bC == INF) return infinity(dbl, bS);
  if (aC == ZERO && bC == ZERO) return zero(dbl, aS == bS ? aS : rm == RDN ? 1 : 0);
  // One exact zero: the other operand is already representable in this format.
  if (aC == ZERO) return b ^ (negB ? <u64>1 << signShift(dbl) : 0);
  if (bC == ZERO) return a;
  // Significands placed at bit 61 leave room for the carry and 9+ guard bits.
  let x = aM << 9, y = bM << 9;
  let e = aE;
  if (aE >= bE) {
    y = shrJam(y, aE - bE);
  } else {
    x = shrJam(x, bE - aE);
    e = bE;
  }
  let sign = aS;
  let sum: u64;
  if (aS == bS) {
    sum = x + y;
  } else if (x >= y) {
    sum = x - y;
  } else {
    sum = y - x;
    sign = bS;
  }
  if (sum == 0) return zero(dbl, rm == RDN ? 1 : 0);
  return normRoundPack(dbl, sign, e + 1, sum, rm);
}

function fmul(dbl: bool, a: u64, b: u64, rm: u32): u64 {
  unpack(a, dbl);
  const aS = uS, aE = uE, aM = uM, aC = uC;
  unpack(b, dbl);
  const bE = uE, bM = uM, bC = uC;
  const sign = aS ^ uS;
  if (isNaNClass(aC) || isNaNClass(bC)) {
    if (aC == SNAN || bC == SNAN) exc |= NV;
    return canonical(dbl);
  }
  if (aC == INF || bC == INF) {
    if (aC == ZERO || bC == ZERO) {
      exc |= NV;
      return canonical(dbl);
    }
    return infinity(dbl, sign);
  }
  if (aC == ZERO || bC == ZERO) return zero(dbl, sign);
  return mulFinite(dbl, sign, aE, aM, bE, bM, rm);
}

function mulFinite(dbl: bool, sign: u32, aE: i32, aM: u64, bE: i32, bM: u64, rm: u32): u64 {
  // The product is in [2^104, 2^106); keep its top 64 bits with the rest as sticky.
  mul128(aM, bM);
  const sig = (H << 22) | (L >> 42) | ((L & ((<u64>1 << 42) - 1)) != 0 ? 1 : 0);
  return normRoundPack(dbl, sign, aE + bE, sig, rm);
}

function fdiv(dbl: bool, a: u64, b: u64, rm: u32): u64 {
  unpack(a, dbl);
  const aS = uS, aE = uE, aM = uM, aC = uC;
  unpack(b, dbl);
  const bE = uE, bM = uM, bC = uC;
  const sign = aS ^ uS;
  if (isNaNClass(aC) || isNaNClass(bC)) {
    if (aC == SNAN || bC == SNAN) exc |= NV;
    return canonical(dbl);
  }
  if (aC == INF) {
    if (bC == INF) {
      exc |= NV;
      return canonical(dbl);
    }
    return infinity(dbl, sign);
  }
  if (bC == INF) return zero(dbl, sign);
  if (bC == ZERO) {
    if (aC == ZERO) {
      exc |= NV;
      return canonical(dbl);
    }
    exc |= DZ;
    return infinity(dbl, sign);
  }
  if (aC == ZERO) return zero(dbl, sign);
  // Restoring division: 63 quotient bits of aM/bM * 2^62, remainder becomes sticky.
  let rem = aM;
  let q: u64 = 0;
  for (let i = 0; i < 63; i++) {
    q <<= 1;
    if (rem >= bM) {
      rem -= bM;
      q |= 1;
    }
    rem <<= 1;
  }
  return normRoundPack(dbl, sign, aE - bE, q | (rem != 0 ? 1 : 0), rm);
}

function fsqrt(dbl: bool, a: u64, rm: u32): u64 {
  unpack(a, dbl);
  if (isNaNClass(uC)) {
    if (uC == SNAN) exc |= NV;
    return canonical(dbl);
  }
  if (uC == ZERO) return a;
  if (uS != 0) {
    exc |= NV;
    return canonical(dbl);
  }
  if (uC == INF) return a;
  // Make the exponent of m * 2^E even so it halves exactly.
  let m = uM;
  let E = uE - 52;
  if (E & 1) {
    m <<= 1;
    E -= 1;
  }
  // Digit-by-digit square root of m * 4^T, two radicand bits per step. T = 34 keeps the
  // partial remainder (< 2 * root) below 2^62 so shifting it by two cannot overflow,
  // while still giving a 61-bit root, ample for 53 bits plus rounding information.
  const T = 34;
  const pairs = 27 + T; // m < 2^54
  let rem: u64 = 0;
  let root: u64 = 0;
  for (let i = pairs - 1; i >= 0; i--) {
    const bits: u64 = i >= T ? (m >> <u64>(2 * (i - T))) & 3 : 0;
    rem = (rem << 2) | bits;
    const trial = (root << 2) | 1;
    root <<= 1;
    if (rem >= trial) {
      rem -= trial;
      root |= 1;
    }
  }
  return normRoundPack(dbl, 0, (E >> 1) - T + 62, root | (rem != 0 ? 1 : 0), rm);
}

/** (negProd ? -(a*b) : a*b) + (negC ? -c : c) with a single rounding. */
function fma(dbl: bool, a: u64, b: u64, c: u64, negProd: bool, negC: bool, rm: u32): u64 {
  unpack(a, dbl);
  const aS = uS, aE = uE, aM = uM, aC = uC;
  unpack(b, dbl);
  const bS = uS, bE = uE, bM = uM, bC = uC;
  unpack(c, dbl);
  const cS = uS ^ (negC ? 1 : 0), cE = uE, cM = uM, cC = uC;
  const pS = aS ^ bS ^ (negProd ? 1 : 0);
  if (aC == SNAN || bC == SNAN || cC == SNAN) exc |= NV;
  // inf * 0 is invalid even when the addend is a quiet NaN.
  if ((aC == INF && bC == ZERO) || (aC == ZERO && bC == INF)) {
    exc |= NV;
    return canonical(dbl);
  }
  if (isNaNClass(aC) || isNaNClass(bC) || isNaNClass(cC)) return canonical(dbl);
  if (aC == INF || bC == INF) {
    if (cC == INF && cS != pS) {
      exc |= NV;
      return canonical(dbl);
    }
    return infinity(dbl, pS);
  }
  if (cC == INF) return infinity(dbl, cS);
  if (aC == ZERO || bC == ZERO) {
    if (cC == ZERO) return zero(dbl, pS == cS ? pS : rm == RDN ? 1 : 0);
    return c ^ (negC ? <u64>1 << signShift(dbl) : 0);
  }
  if (cC == ZERO) return mulFinite(dbl, pS, aE, aM, bE, bM, rm);

  // Product in [2^104, 2^106) shifted to put its leading bit at 124/125; the addend's
  // leading bit goes to 124. Both are then scaled by 2^(exponent - 124).
  mul128(aM, bM);
  shl128(H, L, 20);
  let pH = H, pL = L;
  let xH = cM << 8, xL: u64 = 0;
  const pE = aE + bE;
  let e = pE;
  if (pE >= cE) {
    shrJam128(xH, xL, pE - cE);
    xH = H;
    xL = L;
  } else {
    shrJam128(pH, pL, cE - pE);
    pH = H;
    pL = L;
    e = cE;
  }
  let sign = pS;
  let rH: u64, rL: u64;
  if (pS == cS) {
    rL = pL + xL;
    rH = pH + xH + (rL < pL ? 1 : 0);
  } else if (pH > xH || (pH == xH && pL >= xL)) {
    rL = pL - xL;
    rH = pH - xH - (pL < xL ? 1 : 0);
  } else {
    rL = xL - pL;
    rH = xH - pH - (xL < pL ? 1 : 0);
    sign = cS;
  }
  if ((rH | rL) == 0) return zero(dbl, rm == RDN ? 1 : 0);
  const lz = rH != 0 ? <i32>clz<u64>(rH) : 64 + <i32>clz<u64>(rL);
  shl128(rH, rL, lz);
  return normRoundPack(dbl, sign, e + 2 - lz, H | (L != 0 ? 1 : 0), rm);
}

// ---------------------------------------------------------------------------------------
// Conversions

/** Float to integer. kind: 0 = W, 1 = WU, 2 = L, 3 = LU. Returns the value for rd
 *  (32-bit results sign-extended). */
function fcvtToInt(dbl: bool, v: u64, kind: u32, rm: u32): u64 {
  const is64 = kind >= 2;
  const unsigned = (kind & 1) != 0;
  const maxPos: u64 = is64 ? (unsigned ? 0xffffffffffffffff : 0x7fffffffffffffff) : unsigned ? 0xffffffff : 0x7fffffff;
  // Magnitude of the most negative representable result.
  const maxNegMag: u64 = unsigned ? 0 : is64 ? 0x8000000000000000 : 0x80000000;
  const minVal: u64 = unsigned ? 0 : is64 ? 0x8000000000000000 : 0xffffffff80000000;
  const maxVal: u64 = is64 || !unsigned ? maxPos : 0xffffffffffffffff; // WU max sign-extends
  unpack(v, dbl);
  if (isNaNClass(uC)) {
    exc |= NV;
    return maxVal;
  }
  if (uC == INF) {
    exc |= NV;
    return uS ? minVal : maxVal;
  }
  if (uC == ZERO) return 0;
  // Beyond 2^64 nothing fits; below, a 64-bit magnitude holds the rounded value exactly.
  if (uE > 63) {
    exc |= NV;
    return uS ? minVal : maxVal;
  }
  const mag = roundShift(uM, 52 - uE, uS, rm);
  const fits = uS ? mag <= maxNegMag : mag <= maxPos;
  if (!fits) {
    exc |= NV;
    return uS ? minVal : maxVal;
  }
  if (inexact) exc |= NX;
  const r: u64 = uS ? 0 - mag : mag;
  return is64 ? r : <u64>(<i64>(<i32>(<u32>r)));
}

/** Integer to float. kind as in fcvtToInt; x is the raw integer register. */
function fcvtFromInt(dbl: bool, x: u64, kind: u32, rm: u32): u64 {
  let sign: u32 = 0;
  let mag: u64;
  switch (kind) {
    case 0: {
      const w = <i64>(<i32>(<u32>x));
      sign = w < 0 ? 1 : 0;
      mag = w < 0 ? <u64>(0 - w) : <u64>w;
      break;
    }
    case 1: mag = x & 0xffffffff; break;
    case 2: {
      sign = <u32>(x >> 63);
      mag = sign ? 0 - x : x;
      break;
    }
    default: mag = x; break;
  }
  if (mag == 0) return zero(dbl, 0);
  return normRoundPack(dbl, sign, 62, mag, rm);
}

function fcvtSD(d: u64, rm: u32): u64 {
  unpack(d, true);
  if (isNaNClass(uC)) {
    if (uC == SNAN) exc |= NV;
    return CANON_S;
  }
  if (uC == INF) return infinity(false, uS);
  if (uC == ZERO) return zero(false, uS);
  return roundPack(false, uS, uE, uM << 10, rm);
}

function fcvtDS(s: u64): u64 {
  unpack(s, false);
  if (isNaNClass(uC)) {
    if (uC == SNAN) exc |= NV;
    return CANON_D;
  }
  if (uC == INF) return infinity(true, uS);
  if (uC == ZERO) return zero(true, uS);
  // Widening is exact and every single is a normal double.
  return (<u64>uS << 63) | (<u64>(uE + 1023) << 52) | (uM & 0xfffffffffffff);
}

// ---------------------------------------------------------------------------------------
// Comparisons, sign injection, classification

function isNaNBits(v: u64, dbl: bool): bool {
  const mag = dbl ? v & 0x7fffffffffffffff : v & 0x7fffffff;
  return mag > (dbl ? <u64>0x7ff0000000000000 : <u64>0x7f800000);
}

function isSNaNBits(v: u64, dbl: bool): bool {
  const quiet: u64 = dbl ? 0x0008000000000000 : 0x00400000;
  return isNaNBits(v, dbl) && (v & quiet) == 0;
}

/** Maps a non-NaN value to an unsigned key ordered like the values, with -0 below +0. */
function orderKey(v: u64, dbl: bool): u64 {
  const sb: u64 = <u64>1 << signShift(dbl);
  const mask: u64 = dbl ? 0xffffffffffffffff : 0xffffffff;
  return v & sb ? ~v & mask : v | sb;
}

function fminmax(dbl: bool, a: u64, b: u64, max: bool): u64 {
  if (isSNaNBits(a, dbl) || isSNaNBits(b, dbl)) exc |= NV;
  const an = isNaNBits(a, dbl), bn = isNaNBits(b, dbl);
  if (an && bn) return canonical(dbl);
  if (an) return b;
  if (bn) return a;
  const aLess = orderKey(a, dbl) < orderKey(b, dbl);
  return aLess != max ? a : b;
}

/** funct3: 2 = FEQ (quiet), 1 = FLT, 0 = FLE (signaling). */
function fcompare(dbl: bool, a: u64, b: u64, op: u32): u64 {
  if (isNaNBits(a, dbl) || isNaNBits(b, dbl)) {
    if (op != 2 || isSNaNBits(a, dbl) || isSNaNBits(b, dbl)) exc |= NV;
    return 0;
  }
  const magMask: u64 = dbl ? 0x7fffffffffffffff : 0x7fffffff;
  const bothZero = ((a | b) & magMask) == 0;
  const ka = orderKey(a, dbl), kb = orderKey(b, dbl);
  let r: bool;
  if (op == 2) r = bothZero || a == b;
  else if (op == 1) r = !bothZero && ka < kb;
  else r = bothZero || ka <= kb;
  return r ? 1 : 0;
}

function fclass(dbl: bool, v: u64): u64 {
  unpack(v, dbl);
  const neg = uS != 0;
  switch (uC) {
    case INF: return neg ? 1 << 0 : 1 << 7;
    case ZERO: return neg ? 1 << 3 : 1 << 4;
    case SNAN: return 1 << 8;
    case QNAN: return 1 << 9;
    default: break;
  }
  const expField = (v >> <u64>mantBits(dbl)) & (dbl ? 0x7ff : 0xff);
  if (expField == 0) return neg ? 1 << 2 : 1 << 5;
  return neg ? 1 << 1 : 1 << 6;
}

// ---------------------------------------------------------------------------------------
// Decode

/** The effective rounding mode, or 0xff when the encoding's rm (or frm, for DYN) is reserved. */
function effectiveRm(rmField: u32): u32 {
  const rm = rmField == 7 ? frm : rmField;
  return rm <= RMM ? rm : 0xff;
}

/** Executes one OP-FP (0x53) or FMADD/FMSUB/FNMSUB/FNMADD (0x43/0x47/0x4b/0x4f) instruction.
 *  Returns false if the encoding is illegal (unknown funct, illegal rounding mode) — then it
 *  must not have changed any register or flag. */
export function fpExecute(insn: u32): bool {
  const opcode = insn & 0x7f;
  const rd = (insn >> 7) & 31;
  const rmField = (insn >> 12) & 7;
  const rs1 = (insn >> 15) & 31;
  const rs2 = (insn >> 20) & 31;
  const fmt = (insn >> 25) & 3;
  if (fmt > 1) return false; // H and Q are not implemented
  const dbl = fmt == 1;
  exc = 0;

  if (opcode != 0x53) {
    const rm = effectiveRm(rmField);
    if (rm == 0xff) return false;
    let negProd = false, negC = false;
    switch (opcode) {
      case 0x43: break;
      case 0x47: negC = true; break;
      case 0x4b: negProd = true; break;
      case 0x4f: negProd = true; negC = true; break;
      default: return false;
    }
    const r = fma(dbl, readOp(rs1, dbl), readOp(rs2, dbl), readOp(insn >> 27, dbl), negProd, negC, rm);
    writeOp(rd, r, dbl);
    fflags |= exc;
    return true;
  }

  const funct5 = insn >> 27;
  switch (funct5) {
    case 0x00:
    case 0x01:
    case 0x02:
    case 0x03: {
      const rm = effectiveRm(rmField);
      if (rm == 0xff) return false;
      const a = readOp(rs1, dbl), b = readOp(rs2, dbl);
      let r: u64;
      if (funct5 == 0x02) r = fmul(dbl, a, b, rm);
      else if (funct5 == 0x03) r = fdiv(dbl, a, b, rm);
      else r = fadd(dbl, a, b, funct5 == 0x01, rm);
      writeOp(rd, r, dbl);
      break;
    }
    case 0x0b: {
      const rm = effectiveRm(rmField);
      if (rs2 != 0 || rm == 0xff) return false;
      writeOp(rd, fsqrt(dbl, readOp(rs1, dbl), rm), dbl);
      break;
    }
    case 0x04: {
      if (rmField > 2) return false;
      const a = readOp(rs1, dbl), b = readOp(rs2, dbl);
      const sb: u64 = <u64>1 << signShift(dbl);
      let s: u64;
      if (rmField == 0) s = b & sb;
      else if (rmField == 1) s = ~b & sb;
      else s = (a ^ b) & sb;
      writeOp(rd, (a & ~sb) | s, dbl);
      break;
    }
    case 0x05: {
      if (rmField > 1) return false;
      writeOp(rd, fminmax(dbl, readOp(rs1, dbl), readOp(rs2, dbl), rmField == 1), dbl);
      break;
    }
    case 0x08: {
      // FCVT.S.D is fmt=S with rs2=D; FCVT.D.S is fmt=D with rs2=S.
      const rm = effectiveRm(rmField);
      if (rm == 0xff || rs2 != (dbl ? 0 : 1)) return false;
      if (dbl) setF(rd, fcvtDS(readS(rs1)));
      else setF(rd, fcvtSD(getF(rs1), rm) | BOX);
      break;
    }
    case 0x14: {
      if (rmField > 2) return false;
      setX(rd, fcompare(dbl, readOp(rs1, dbl), readOp(rs2, dbl), rmField));
      break;
    }
    case 0x18: {
      const rm = effectiveRm(rmField);
      if (rm == 0xff || rs2 > 3) return false;
      setX(rd, fcvtToInt(dbl, readOp(rs1, dbl), rs2, rm));
      break;
    }
    case 0x1a: {
      const rm = effectiveRm(rmField);
      if (rm == 0xff || rs2 > 3) return false;
      writeOp(rd, fcvtFromInt(dbl, getX(rs1), rs2, rm), dbl);
      break;
    }
    case 0x1c: {
      if (rs2 != 0) return false;
      if (rmField == 0) {
        // FMV.X.W ignores NaN boxing: it moves the raw low word, sign-extended.
        const v = getF(rs1);
        setX(rd, dbl ? v : <u64>(<i64>(<i32>(<u32>v))));
      } else if (rmField == 1) {
        setX(rd, fclass(dbl, readOp(rs1, dbl)));
      } else {
        return false;
      }
      break;
    }
    case 0x1e: {
      if (rs2 != 0 || rmField != 0) return false;
      const x = getX(rs1);
      setF(rd, dbl ? x : (x & 0xffffffff) | BOX);
      break;
    }
    default:
      return false;
  }
  fflags |= exc;
  return true;
}
