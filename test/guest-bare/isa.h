// Helpers shared by the differential ISA programs: instruction encoders, a code buffer
// the programs write instructions into and call (fence.i between), fixed-seed operands.
#ifndef FERRY_ISA_H
#define FERRY_ISA_H
#include "bare.h"

#define A0 10
#define A1 11
#define A2 12
#define RA 1

static inline uint32_t enc_r(uint32_t f7, uint32_t rs2, uint32_t rs1, uint32_t f3, uint32_t rd, uint32_t op) {
  return (f7 << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op;
}
static inline uint32_t enc_i(int32_t imm, uint32_t rs1, uint32_t f3, uint32_t rd, uint32_t op) {
  return (((uint32_t)imm & 0xfff) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op;
}
static inline uint32_t enc_s(int32_t imm, uint32_t rs2, uint32_t rs1, uint32_t f3, uint32_t op) {
  uint32_t u = (uint32_t)imm;
  return (((u >> 5) & 0x7f) << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | ((u & 0x1f) << 7) | op;
}
static inline uint32_t enc_b(int32_t imm, uint32_t rs2, uint32_t rs1, uint32_t f3) {
  uint32_t u = (uint32_t)imm;
  return (((u >> 12) & 1) << 31) | (((u >> 5) & 0x3f) << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) |
    (((u >> 1) & 0xf) << 8) | (((u >> 11) & 1) << 7) | 0x63;
}
static inline uint32_t enc_j(int32_t imm, uint32_t rd) {
  uint32_t u = (uint32_t)imm;
  return (((u >> 20) & 1) << 31) | (((u >> 1) & 0x3ff) << 21) | (((u >> 11) & 1) << 20) |
    (((u >> 12) & 0xff) << 12) | (rd << 7) | 0x6f;
}
#define INSN_RET 0x00008067u
#define INSN_NOP 0x00000013u

/** Executable scratch buffer (16-bit granules, so compressed code fits too). */
extern uint16_t code_buf[64];
typedef uint64_t (*code_fn)(uint64_t, uint64_t, uint64_t);

static inline void code_put32(int at, uint32_t insn) { code_buf[at] = (uint16_t)insn; code_buf[at + 1] = (uint16_t)(insn >> 16); }
/** Writes 32-bit instructions to code_buf and calls it with a0..a2; returns a0. */
static inline uint64_t run32(const uint32_t *insns, int n, uint64_t a0, uint64_t a1, uint64_t a2) {
  for (int i = 0; i < n; i++) code_put32(2 * i, insns[i]);
  __asm__ volatile("fence.i" ::: "memory");
  return ((code_fn)(void *)code_buf)(a0, a1, a2);
}
/** One instruction followed by ret. */
static inline uint64_t run1(uint32_t insn, uint64_t a0, uint64_t a1) {
  uint32_t p[2] = { insn, INSN_RET };
  return run32(p, 2, a0, a1, 0);
}

static uint64_t xs_state = 0x9e3779b97f4a7c15ull;
static inline uint64_t xorshift(void) {
  uint64_t x = xs_state;
  x ^= x << 13; x ^= x >> 7; x ^= x << 17;
  return xs_state = x;
}

#define NOPS 22
static uint64_t ops[NOPS];
static inline void init_ops(void) {
  static const uint64_t fixed[] = { 0, 1, 2, 3, (uint64_t)-1, (uint64_t)-2, 0x8000000000000000ull, 0x7fffffffffffffffull,
    0x80000000ull, 0x7fffffffull, 0xffffffffull, 0xffffffff80000000ull, 0x100000000ull, 0x8000000000000001ull };
  int n = 0;
  for (unsigned i = 0; i < sizeof fixed / sizeof fixed[0]; i++) ops[n++] = fixed[i];
  while (n < NOPS) ops[n++] = xorshift();
}
#endif
