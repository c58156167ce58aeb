// An exact-arithmetic reference for IEEE 754 binary32/binary64, used to check the FPU.
// Values are rationals held in BigInts, so every result is rounded exactly once from the
// true value; nothing here shares code or structure with the AssemblyScript soft-float.

export interface Format {
  /** Significand precision in bits, including the hidden bit. */
  readonly p: number;
  readonly expBits: number;
  readonly bias: number;
  readonly width: number;
}

export const SINGLE: Format = { p: 24, expBits: 8, bias: 127, width: 32 };
export const DOUBLE: Format = { p: 53, expBits: 11, bias: 1023, width: 64 };

export const FLAG_NV = 16;
export const FLAG_DZ = 8;
export const FLAG_OF = 4;
export const FLAG_UF = 2;
export const FLAG_NX = 1;

/** sign * num / den, den > 0, num >= 0. */
export interface Rational {
  readonly neg: boolean;
  readonly num: bigint;
  readonly den: bigint;
}

export type Decoded =
  | { readonly kind: 'nan'; readonly signaling: boolean }
  | { readonly kind: 'inf'; readonly neg: boolean }
  | { readonly kind: 'finite'; readonly value: Rational; readonly neg: boolean };

const pow2 = (e: number): bigint => 1n << BigInt(e);

/** m * 2^e as a rational. */
export function scaled(neg: boolean, m: bigint, e: number): Rational {
  return e >= 0 ? { neg, num: m << BigInt(e), den: 1n } : { neg, num: m, den: pow2(-e) };
}

export function decode(bits: bigint, f: Format): Decoded {
  const frac = bits & (pow2(f.p - 1) - 1n);
  const exp = Number((bits >> BigInt(f.p - 1)) & (pow2(f.expBits) - 1n));
  const neg = ((bits >> BigInt(f.width - 1)) & 1n) === 1n;
  const expMax = 2 ** f.expBits - 1;
  if (exp === expMax) {
    return frac === 0n ? { kind: 'inf', neg } : { kind: 'nan', signaling: (frac >> BigInt(f.p - 2)) === 0n };
  }
  const value = exp === 0 ? scaled(neg, frac, 1 - f.bias - (f.p - 1)) : scaled(neg, frac | pow2(f.p - 1), exp - f.bias - (f.p - 1));
  return { kind: 'finite', value, neg };
}

export function add(a: Rational, b: Rational): Rational {
  const sa = a.neg ? -a.num : a.num;
  const sb = b.neg ? -b.num : b.num;
  const n = sa * b.den + sb * a.den;
  return { neg: n < 0n, num: n < 0n ? -n : n, den: a.den * b.den };
}

export function mul(a: Rational, b: Rational): Rational {
  return { neg: a.neg !== b.neg, num: a.num * b.num, den: a.den * b.den };
}

export function div(a: Rational, b: Rational): Rational {
  return { neg: a.neg !== b.neg, num: a.num * b.den, den: a.den * b.num };
}

export function negate(a: Rational): Rational {
  return { ...a, neg: !a.neg };
}

function bitLength(n: bigint): number {
  return n === 0n ? 0 : n.toString(2).length;
}

export function isqrt(n: bigint): bigint {
  if (n < 2n) return n;
  let x = pow2(Math.ceil(bitLength(n) / 2));
  for (;;) {
    const y = (x + n / x) >> 1n;
    if (y >= x) return x;
    x = y;
  }
}

/** A rational that rounds exactly like sqrt(a) (a > 0): enough root bits plus a sticky half. */
export function sqrtRational(a: Rational): Rational {
  // sqrt(num/den) = sqrt(num*den)/den; scale by 4^k to get ~200 root bits.
  const k = 200;
  const radicand = (a.num * a.den) << BigInt(2 * k);
  const s = isqrt(radicand);
  const sticky = s * s === radicand ? 0n : 1n;
  return { neg: false, num: 2n * s + sticky, den: 2n * a.den * pow2(k) };
}

/** Integer rounding of num/den (num >= 0) for a value of the given sign. */
export function roundInt(num: bigint, den: bigint, neg: boolean, rm: number): { q: bigint; exact: boolean } {
  const q = num / den;
  const r = num - q * den;
  if (r === 0n) return { q, exact: true };
  const twice = 2n * r;
  let up: boolean;
  switch (rm) {
    case 0: up = twice > den || (twice === den && (q & 1n) === 1n); break;
    case 1: up = false; break;
    case 2: up = neg; break;
    case 3: up = !neg; break;
    case 4: up = twice >= den; break;
    default: throw new Error(`bad rounding mode ${rm}`);
  }
  return { q: up ? q + 1n : q, exact: false };
}

/** floor(log2(num/den)) for a positive rational. */
function ilog2(num: bigint, den: bigint): number {
  let e = bitLength(num) - bitLength(den);
  // Now 2^(e-1) < num/den < 2^(e+1); settle which side of 2^e it falls.
  if (e >= 0 ? num < den << BigInt(e) : num << BigInt(-e) < den) e--;
  return e;
}

/** Correctly rounds the exact value x (an exact zero keeps x.neg as its sign). */
export function round(x: Rational, f: Format, rm: number): { bits: bigint; flags: number } {
  const signBit = x.neg ? pow2(f.width - 1) : 0n;
  if (x.num === 0n) return { bits: signBit, flags: 0 };
  const emin = 1 - f.bias;
  const emax = f.bias;
  const quantize = (qe: number): { q: bigint; exact: boolean } =>
    qe >= 0 ? roundInt(x.num, x.den << BigInt(qe), x.neg, rm) : roundInt(x.num << BigInt(-qe), x.den, x.neg, rm);
  // Rounded as if the exponent range were unbounded below: decides tininess.
  const e = ilog2(x.num, x.den);
  const unbounded = quantize(e - f.p + 1);
  const unboundedExp = unbounded.q === pow2(f.p) ? e + 1 : e;
  const tiny = unboundedExp < emin;
  const qe = Math.max(e, emin) - f.p + 1;
  const { q, exact } = quantize(qe);
  let flags = exact ? 0 : FLAG_NX;
  if (tiny && !exact) flags |= FLAG_UF;
  // q * 2^qe, with q <= 2^p.
  let m = q;
  let ex = qe + f.p - 1; // exponent of the leading place when m has p bits
  if (m === pow2(f.p)) {
    m >>= 1n;
    ex++;
  }
  if (ex > emax) {
    const toInf = rm === 0 || rm === 4 || (rm === 2 && x.neg) || (rm === 3 && !x.neg);
    const mag = toInf ? (pow2(f.expBits) - 1n) << BigInt(f.p - 1) : (pow2(f.expBits) - 2n) << BigInt(f.p - 1) | (pow2(f.p - 1) - 1n);
    return { bits: signBit | mag, flags: FLAG_OF | FLAG_NX };
  }
  if (m < pow2(f.p - 1)) return { bits: signBit | m, flags }; // subnormal (or zero)
  const field = BigInt(ex + f.bias) << BigInt(f.p - 1);
  return { bits: signBit | field | (m - pow2(f.p - 1)), flags };
}

export function canonicalNaN(f: Format): bigint {
  return f.width === 32 ? 0x7fc00000n : 0x7ff8000000000000n;
}
