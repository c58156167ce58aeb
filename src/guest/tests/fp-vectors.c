/*
 * Test-vector generator for ferry's FPU (test/machine/fpu-qemu.test.ts).
 *
 * Runs every F/D computational instruction on deterministic pseudo-random and edge-case
 * operands under each rounding mode, on whatever executes it (QEMU's user-mode emulator in
 * the test), and prints one line per execution:
 *
 *     <mnemonic> <frm> <a> <b> <c> <result> <fflags>
 *
 * all in hex, operands and result as 64-bit register images (so NaN boxing is visible).
 * Instructions with a rounding-mode field use the dynamic mode, set with fsrm beforehand.
 * Build: riscv64-linux-gnu-gcc -O2 -static -o fp-vectors fp-vectors.c -lm
 */
#include <stdint.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t u64;
typedef uint32_t u32;
typedef void (*op_fn)(u64 a, u64 b, u64 c, u64 *r, u64 *fl);

/* Operand kinds: what the generator must produce for each source register. */
enum { S, D, X, NONE };

#define CLEAR "fsflags zero\n\t"
#define READFL "\n\tfrflags %1"

/* f rd <- op(f rs1, f rs2) */
#define OP_FFF(fn, insn)                                                          \
	static void fn(u64 a, u64 b, u64 c, u64 *r, u64 *fl) {                        \
		(void)c;                                                                  \
		asm volatile("fmv.d.x ft0, %2\n\tfmv.d.x ft1, %3\n\t" CLEAR insn          \
			     " ft2, ft0, ft1\n\tfmv.x.d %0, ft2" READFL                       \
			     : "=&r"(*r), "=&r"(*fl) : "r"(a), "r"(b) : "ft0", "ft1", "ft2"); \
	}
/* f rd <- op(f rs1) */
#define OP_FF(fn, insn)                                                           \
	static void fn(u64 a, u64 b, u64 c, u64 *r, u64 *fl) {                        \
		(void)b; (void)c;                                                         \
		asm volatile("fmv.d.x ft0, %2\n\t" CLEAR insn                             \
			     " ft2, ft0\n\tfmv.x.d %0, ft2" READFL                            \
			     : "=&r"(*r), "=&r"(*fl) : "r"(a) : "ft0", "ft2");                \
	}
/* f rd <- op(f rs1, f rs2, f rs3) */
#define OP_FFFF(fn, insn)                                                         \
	static void fn(u64 a, u64 b, u64 c, u64 *r, u64 *fl) {                        \
		asm volatile("fmv.d.x ft0, %2\n\tfmv.d.x ft1, %3\n\tfmv.d.x ft2, %4\n\t"  \
			     CLEAR insn " ft3, ft0, ft1, ft2\n\tfmv.x.d %0, ft3" READFL       \
			     : "=&r"(*r), "=&r"(*fl) : "r"(a), "r"(b), "r"(c)                 \
			     : "ft0", "ft1", "ft2", "ft3");                                   \
	}
/* x rd <- op(f rs1, f rs2) */
#define OP_XFF(fn, insn)                                                          \
	static void fn(u64 a, u64 b, u64 c, u64 *r, u64 *fl) {                        \
		(void)c;                                                                  \
		asm volatile("fmv.d.x ft0, %2\n\tfmv.d.x ft1, %3\n\t" CLEAR insn          \
			     " %0, ft0, ft1" READFL                                           \
			     : "=&r"(*r), "=&r"(*fl) : "r"(a), "r"(b) : "ft0", "ft1");        \
	}
/* x rd <- op(f rs1) */
#define OP_XF(fn, insn)                                                           \
	static void fn(u64 a, u64 b, u64 c, u64 *r, u64 *fl) {                        \
		(void)b; (void)c;                                                         \
		asm volatile("fmv.d.x ft0, %2\n\t" CLEAR insn " %0, ft0" READFL           \
			     : "=&r"(*r), "=&r"(*fl) : "r"(a) : "ft0");                       \
	}
/* f rd <- op(x rs1) */
#define OP_FX(fn, insn)                                                           \
	static void fn(u64 a, u64 b, u64 c, u64 *r, u64 *fl) {                        \
		(void)b; (void)c;                                                         \
		asm volatile(CLEAR insn " ft2, %2\n\tfmv.x.d %0, ft2" READFL              \
			     : "=&r"(*r), "=&r"(*fl) : "r"(a) : "ft2");                       \
	}

#define BOTH(M, name, insn) M(name##_s, insn ".s") M(name##_d, insn ".d")
BOTH(OP_FFF, fadd, "fadd")
BOTH(OP_FFF, fsub, "fsub")
BOTH(OP_FFF, fmul, "fmul")
BOTH(OP_FFF, fdiv, "fdiv")
BOTH(OP_FF, fsqrt, "fsqrt")
BOTH(OP_FFF, fsgnj, "fsgnj")
BOTH(OP_FFF, fsgnjn, "fsgnjn")
BOTH(OP_FFF, fsgnjx, "fsgnjx")
BOTH(OP_FFF, fmin, "fmin")
BOTH(OP_FFF, fmax, "fmax")
BOTH(OP_FFFF, fmadd, "fmadd")
BOTH(OP_FFFF, fmsub, "fmsub")
BOTH(OP_FFFF, fnmsub, "fnmsub")
BOTH(OP_FFFF, fnmadd, "fnmadd")
BOTH(OP_XFF, feq, "feq")
BOTH(OP_XFF, flt, "flt")
BOTH(OP_XFF, fle, "fle")
BOTH(OP_XF, fclass, "fclass")
OP_XF(fcvt_w_s, "fcvt.w.s")
OP_XF(fcvt_wu_s, "fcvt.wu.s")
OP_XF(fcvt_l_s, "fcvt.l.s")
OP_XF(fcvt_lu_s, "fcvt.lu.s")
OP_XF(fcvt_w_d, "fcvt.w.d")
OP_XF(fcvt_wu_d, "fcvt.wu.d")
OP_XF(fcvt_l_d, "fcvt.l.d")
OP_XF(fcvt_lu_d, "fcvt.lu.d")
OP_FX(fcvt_s_w, "fcvt.s.w")
OP_FX(fcvt_s_wu, "fcvt.s.wu")
OP_FX(fcvt_s_l, "fcvt.s.l")
OP_FX(fcvt_s_lu, "fcvt.s.lu")
OP_FX(fcvt_d_w, "fcvt.d.w")
OP_FX(fcvt_d_wu, "fcvt.d.wu")
OP_FX(fcvt_d_l, "fcvt.d.l")
OP_FX(fcvt_d_lu, "fcvt.d.lu")
OP_FF(fcvt_s_d, "fcvt.s.d")
OP_FF(fcvt_d_s, "fcvt.d.s")
OP_XF(fmv_x_w, "fmv.x.w")
OP_XF(fmv_x_d, "fmv.x.d")
OP_FX(fmv_w_x, "fmv.w.x")
OP_FX(fmv_d_x, "fmv.d.x")

/* Whether results depend on the rounding mode (otherwise only frm=0 is run). */
enum { EXACT = 0, ROUNDS = 1 };
/* Operand relations the generator should favour for this instruction. */
enum { PLAIN, ADD, MUL, DIV, FMA, TOINT, NARROW };

struct op {
	const char *name;
	op_fn fn;
	int nsrc;
	int kind;    /* S, D or X for the sources */
	int rounds;
	int flavour;
	int count;   /* operand sets per rounding mode */
};

#define N 600
#define NF 1500
static const struct op ops[] = {
	{"fadd.s", fadd_s, 2, S, ROUNDS, ADD, N},         {"fadd.d", fadd_d, 2, D, ROUNDS, ADD, N},
	{"fsub.s", fsub_s, 2, S, ROUNDS, ADD, N},         {"fsub.d", fsub_d, 2, D, ROUNDS, ADD, N},
	{"fmul.s", fmul_s, 2, S, ROUNDS, MUL, N},         {"fmul.d", fmul_d, 2, D, ROUNDS, MUL, N},
	{"fdiv.s", fdiv_s, 2, S, ROUNDS, DIV, N},         {"fdiv.d", fdiv_d, 2, D, ROUNDS, DIV, N},
	{"fsqrt.s", fsqrt_s, 1, S, ROUNDS, PLAIN, N},     {"fsqrt.d", fsqrt_d, 1, D, ROUNDS, PLAIN, N},
	{"fsgnj.s", fsgnj_s, 2, S, EXACT, PLAIN, N},      {"fsgnj.d", fsgnj_d, 2, D, EXACT, PLAIN, N},
	{"fsgnjn.s", fsgnjn_s, 2, S, EXACT, PLAIN, N},    {"fsgnjn.d", fsgnjn_d, 2, D, EXACT, PLAIN, N},
	{"fsgnjx.s", fsgnjx_s, 2, S, EXACT, PLAIN, N},    {"fsgnjx.d", fsgnjx_d, 2, D, EXACT, PLAIN, N},
	{"fmin.s", fmin_s, 2, S, EXACT, ADD, N},          {"fmin.d", fmin_d, 2, D, EXACT, ADD, N},
	{"fmax.s", fmax_s, 2, S, EXACT, ADD, N},          {"fmax.d", fmax_d, 2, D, EXACT, ADD, N},
	{"fmadd.s", fmadd_s, 3, S, ROUNDS, FMA, NF},      {"fmadd.d", fmadd_d, 3, D, ROUNDS, FMA, NF},
	{"fmsub.s", fmsub_s, 3, S, ROUNDS, FMA, NF},      {"fmsub.d", fmsub_d, 3, D, ROUNDS, FMA, NF},
	{"fnmsub.s", fnmsub_s, 3, S, ROUNDS, FMA, NF},    {"fnmsub.d", fnmsub_d, 3, D, ROUNDS, FMA, NF},
	{"fnmadd.s", fnmadd_s, 3, S, ROUNDS, FMA, NF},    {"fnmadd.d", fnmadd_d, 3, D, ROUNDS, FMA, NF},
	{"feq.s", feq_s, 2, S, EXACT, ADD, N},            {"feq.d", feq_d, 2, D, EXACT, ADD, N},
	{"flt.s", flt_s, 2, S, EXACT, ADD, N},            {"flt.d", flt_d, 2, D, EXACT, ADD, N},
	{"fle.s", fle_s, 2, S, EXACT, ADD, N},            {"fle.d", fle_d, 2, D, EXACT, ADD, N},
	{"fclass.s", fclass_s, 1, S, EXACT, PLAIN, N},    {"fclass.d", fclass_d, 1, D, EXACT, PLAIN, N},
	{"fcvt.w.s", fcvt_w_s, 1, S, ROUNDS, TOINT, N},   {"fcvt.w.d", fcvt_w_d, 1, D, ROUNDS, TOINT, N},
	{"fcvt.wu.s", fcvt_wu_s, 1, S, ROUNDS, TOINT, N}, {"fcvt.wu.d", fcvt_wu_d, 1, D, ROUNDS, TOINT, N},
	{"fcvt.l.s", fcvt_l_s, 1, S, ROUNDS, TOINT, N},   {"fcvt.l.d", fcvt_l_d, 1, D, ROUNDS, TOINT, N},
	{"fcvt.lu.s", fcvt_lu_s, 1, S, ROUNDS, TOINT, N}, {"fcvt.lu.d", fcvt_lu_d, 1, D, ROUNDS, TOINT, N},
	{"fcvt.s.w", fcvt_s_w, 1, X, ROUNDS, PLAIN, N},   {"fcvt.d.w", fcvt_d_w, 1, X, ROUNDS, PLAIN, N},
	{"fcvt.s.wu", fcvt_s_wu, 1, X, ROUNDS, PLAIN, N}, {"fcvt.d.wu", fcvt_d_wu, 1, X, ROUNDS, PLAIN, N},
	{"fcvt.s.l", fcvt_s_l, 1, X, ROUNDS, PLAIN, N},   {"fcvt.d.l", fcvt_d_l, 1, X, ROUNDS, PLAIN, N},
	{"fcvt.s.lu", fcvt_s_lu, 1, X, ROUNDS, PLAIN, N}, {"fcvt.d.lu", fcvt_d_lu, 1, X, ROUNDS, PLAIN, N},
	{"fcvt.s.d", fcvt_s_d, 1, D, ROUNDS, NARROW, N},   {"fcvt.d.s", fcvt_d_s, 1, S, ROUNDS, PLAIN, N},
	{"fmv.x.w", fmv_x_w, 1, S, EXACT, PLAIN, 200},    {"fmv.x.d", fmv_x_d, 1, D, EXACT, PLAIN, 200},
	{"fmv.w.x", fmv_w_x, 1, X, EXACT, PLAIN, 200},    {"fmv.d.x", fmv_d_x, 1, X, EXACT, PLAIN, 200},
};

/* ---- deterministic operand generation ---- */

static u64 rng_state = 0x9e3779b97f4a7c15ull;
static u64 rnd(void) {
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}
static u64 below(u64 n) { return rnd() % n; }

/* Format description: mantissa bits and exponent field width. */
struct fmt { int mb; int eb; };
static const struct fmt FS = {23, 8}, FD = {52, 11};

static u64 pack(struct fmt f, u64 sign, u64 exp, u64 man) {
	return (sign << (f.mb + f.eb)) | (exp << f.mb) | (man & ((1ull << f.mb) - 1));
}

static u64 rand_mantissa(struct fmt f) {
	u64 m = rnd() & ((1ull << f.mb) - 1);
	switch (below(8)) {
	case 0: return 0;
	case 1: return (1ull << f.mb) - 1;                   /* all ones: rounding carries */
	case 2: return 1ull << below(f.mb);                   /* one bit */
	case 3: return ((1ull << f.mb) - 1) ^ (1ull << below(f.mb));
	case 4: return m & ~((1ull << below(f.mb)) - 1);      /* trailing zeros: exact-ish */
	case 5: return m | 1;
	default: return m;
	}
}

static u64 rand_exp(struct fmt f) {
	u64 emax = (1ull << f.eb) - 1, bias = emax >> 1;
	switch (below(10)) {
	case 0: return below(3);                 /* zero/subnormal and smallest normals */
	case 1: return emax - 1 - below(2);      /* largest finite */
	case 2: return emax;                     /* inf / NaN */
	case 3: case 4: case 5: return bias - 3 + below(7);  /* around 1.0 */
	case 6: return bias + 20 + below(50);    /* integer range for conversions */
	default: return 1 + below(emax - 1);
	}
}

static u64 special(struct fmt f) {
	u64 emax = (1ull << f.eb) - 1, bias = emax >> 1, top = 1ull << (f.mb - 1);
	u64 s = below(2);
	switch (below(14)) {
	case 0: return pack(f, s, 0, 0);                         /* zero */
	case 1: return pack(f, s, emax, 0);                      /* infinity */
	case 2: return pack(f, 0, emax, top);                    /* canonical qNaN */
	case 3: return pack(f, s, emax, top | (rnd() | 1));      /* qNaN with payload */
	case 4: return pack(f, s, emax, (rnd() & (top - 1)) | 1);/* sNaN */
	case 5: return pack(f, s, 0, 1);                         /* min subnormal */
	case 6: return pack(f, s, 0, ~0ull);                     /* max subnormal */
	case 7: return pack(f, s, 1, 0);                         /* min normal */
	case 8: return pack(f, s, emax - 1, ~0ull);              /* max finite */
	case 9: return pack(f, s, bias, 0);                      /* 1 */
	case 10: return pack(f, s, bias - 1, 0);                 /* 0.5 */
	case 11: return pack(f, s, bias + below(3), top);        /* 1.5, 3, 6 */
	case 12: return pack(f, s, 0, rnd());                    /* random subnormal */
	default: return pack(f, s, bias + 1, 0);                 /* 2 */
	}
}

static u64 rand_value(struct fmt f) {
	switch (below(8)) {
	case 0: case 1: return special(f);
	case 2: return rnd() & ((1ull << (f.mb + f.eb + 1)) - 1);
	default: return pack(f, below(2), rand_exp(f), rand_mantissa(f));
	}
}

/* Moves the value a few ulps (crossing binades and into NaN/inf is fine). */
static u64 nudge(struct fmt f, u64 v) {
	u64 mask = (1ull << (f.mb + f.eb + 1)) - 1;
	int64_t d = (int64_t)below(7) - 3;
	return (v + (u64)d) & mask;
}

static u64 sign_bit(struct fmt f) { return 1ull << (f.mb + f.eb); }
static int exp_of(struct fmt f, u64 v) { return (int)((v >> f.mb) & ((1ull << f.eb) - 1)); }
static u64 with_exp(struct fmt f, u64 v, long e) {
	long emax = (1l << f.eb) - 1;
	if (e < 0) e = 0;
	if (e > emax - 1) e = emax - 1;
	return (v & ~(((1ull << f.eb) - 1) << f.mb)) | ((u64)e << f.mb);
}

static double as_d(u64 v) { double d; memcpy(&d, &v, 8); return d; }
static u64 d_bits(double d) { u64 v; memcpy(&v, &d, 8); return v; }
static float as_f(u32 v) { float x; memcpy(&x, &v, 4); return x; }
static u32 f_bits(float x) { u32 v; memcpy(&v, &x, 4); return v; }

/* A value close to -(a*b), so that the fused sum cancels heavily. */
static u64 cancel_product(int kind, u64 a, u64 b) {
	if (kind == D) {
		double p = as_d(a) * as_d(b);
		return d_bits(-p);
	}
	/* 24x24-bit products are exact in double; rounding to float keeps the top half. */
	double p = (double)as_f((u32)a) * (double)as_f((u32)b);
	return f_bits((float)-p);
}

/*
 * Tininess is judged after rounding, so results just below the smallest normal (that may or
 * may not round up to it) and just around the overflow threshold are the delicate ones.
 * Returns a target magnitude within a few ulps of such a boundary.
 */
static double boundary(int kind) {
	int p = kind == D ? 53 : 24;
	double k = (double)below(9) - 4;
	if (below(2)) return ldexp(1.0 - ldexp(k, -p - 1), kind == D ? -1022 : -126);
	if (kind == D) return ldexp(1.0 - ldexp(k + 4, -p - 1), 1024);
	return ldexp(1.0 - ldexp(k, -p - 1), 128);
}

/* b such that a*b (or a/b) lands near a boundary; 0 if a is unsuitable. */
static u64 toward_boundary(int kind, u64 a, int divide) {
	double x = kind == D ? as_d(a) : (double)as_f((u32)a);
	if (x == 0 || x != x || x - x != 0) return 0;
	double t = boundary(kind) * (below(2) ? -1 : 1);
	double y = divide ? x / t : t / x;
	if (kind == D) return d_bits(y);
	return f_bits((float)y);
}

static u64 narrow_operand(void) {
	/* Doubles near single precision's subnormal and overflow boundaries, with the bits
	 * just below single precision's last place set in varied ways. */
	u64 bias = 1023;
	u64 e = below(2) ? bias - 126 - below(26) : bias + 127 + below(2);
	u64 man = rand_mantissa(FD);
	if (below(2)) man |= (u64)((1ull << 29) - 1) >> below(30);
	return pack(FD, below(2), e, man);
}

static u64 int_operand(void) {
	u64 r = rnd();
	switch (below(10)) {
	case 0: return below(2001) - 1000;
	case 1: return (1ull << below(64)) + below(5) - 2;
	case 2: return -(1ull << below(64)) + below(5) - 2;
	case 3: return r >> below(64);
	case 4: return -(r >> below(64));
	case 5: return (u64)(int64_t)(int32_t)(u32)r;               /* sign-extended word */
	case 6: return r & 0xffffffff;                                /* zero-extended word */
	case 7: return (r >> below(40)) & ~((1ull << below(20)) - 1); /* exact-ish */
	default: return r;
	}
}

/* Float operand near an integer-conversion boundary. */
static u64 toint_operand(struct fmt f) {
	static const int pows[] = {31, 32, 63, 64, 0, 1, 52, 23, 24, 53};
	u64 bias = ((1ull << f.eb) - 1) >> 1;
	switch (below(4)) {
	case 0: {
		u64 v = pack(f, below(2), bias + pows[below(10)], 0);
		return nudge(f, v);
	}
	case 1: /* small values with fractions: .5 ties and friends */
		return pack(f, below(2), bias - 2 + below(8), rand_mantissa(f) & ((1ull << f.mb) - (1ull << (f.mb - 3))));
	default: return rand_value(f);
	}
}

static u64 gen(struct fmt f, int flavour, int idx, u64 a, u64 b) {
	int bias = (1 << (f.eb - 1)) - 1;
	if (below(5) == 0) return rand_value(f);
	switch (flavour) {
	case ADD:
		if (idx == 1) {
			switch (below(5)) {
			case 0: return nudge(f, a);
			case 1: return nudge(f, a ^ sign_bit(f));
			case 2: return with_exp(f, rand_value(f), exp_of(f, a) - (long)below(f.mb + 4));
			default: return rand_value(f);
			}
		}
		break;
	case MUL:
	case DIV:
		if (idx == 1 && below(3) == 0) {
			u64 b = toward_boundary(f.mb == 52 ? D : S, a, flavour == DIV);
			if (b != 0) return b;
		}
		if (idx == 1 && below(2)) {
			/* Land the result near the subnormal/overflow boundaries. */
			long target = below(2) ? 1 - (long)below(f.mb + 2) : 2 * bias;
			long e = flavour == MUL ? target - exp_of(f, a) + bias : exp_of(f, a) - target + bias;
			return with_exp(f, rand_value(f), e + (long)below(3) - 1);
		}
		break;
	case FMA:
		if (idx == 1 && below(4) == 0) {
			u64 b = toward_boundary(f.mb == 52 ? D : S, a, 0);
			if (b != 0) return b;
		}
		if (idx == 1 && below(3) == 0) {
			long target = below(2) ? 1 - (long)below(f.mb + 2) : 2 * bias;
			return with_exp(f, rand_value(f), target - exp_of(f, a) + bias + (long)below(3) - 1);
		}
		if (idx == 2) {
			u64 c = cancel_product(f.mb == 52 ? D : S, a, b);
			switch (below(6)) {
			case 0: return c;
			case 1: return nudge(f, c);
			case 2: return nudge(f, c ^ sign_bit(f));
			case 3: return with_exp(f, rand_value(f), exp_of(f, c) - (long)below(2 * f.mb + 4));
			default: return rand_value(f);
			}
		}
		break;
	case TOINT: return toint_operand(f);
	case NARROW: return narrow_operand();
	default: break;
	}
	return rand_value(f);
}

/* 64-bit register image for an operand of the given kind. */
static u64 image(int kind, u64 v) {
	if (kind != S) return v;
	/* Mostly NaN-boxed; occasionally a bad box, which must read as the canonical NaN. */
	switch (below(40)) {
	case 0: return v;
	case 1: return v | (rnd() << 32);
	default: return v | 0xffffffff00000000ull;
	}
}

int main(void) {
	static char buf[1 << 16];
	setvbuf(stdout, buf, _IOFBF, sizeof buf);
	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
		const struct op *op = &ops[i];
		struct fmt f = op->kind == S ? FS : FD;
		for (int rm = 0; rm < (op->rounds ? 5 : 1); rm++) {
			for (int n = 0; n < op->count; n++) {
				u64 v[3] = {0, 0, 0};
				for (int k = 0; k < op->nsrc; k++) {
					if (op->kind == X) v[k] = int_operand();
					else v[k] = gen(f, op->flavour, k, v[0], v[1]);
				}
				for (int k = 0; k < op->nsrc; k++) v[k] = image(op->kind, v[k]);
				u64 r, fl;
				asm volatile("fsrm %0" : : "r"((u64)rm));
				op->fn(v[0], v[1], v[2], &r, &fl);
				printf("%s %d %016llx %016llx %016llx %016llx %02llx\n", op->name, rm,
				       (unsigned long long)v[0], (unsigned long long)v[1],
				       (unsigned long long)v[2], (unsigned long long)r, (unsigned long long)fl);
			}
		}
	}
	return 0;
}
