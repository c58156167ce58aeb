// Differential test: RV64I + M integer instructions over a table of edge operands. Each
// instruction is written into a code buffer and executed, so every immediate and shift
// amount can be swept. Prints a FNV-1a hash per instruction plus one sample result.
#include "isa.h"

uint16_t code_buf[64] __attribute__((aligned(64)));
static uint8_t data[8192] __attribute__((aligned(4096)));

struct op { const char *name; uint32_t enc; };
#define RR(f7, f3, op) (((uint32_t)(f7) << 25) | (A1 << 20) | (A0 << 15) | ((f3) << 12) | (A0 << 7) | (op))
static const struct op rops[] = {
  { "add", RR(0, 0, 0x33) }, { "sub", RR(0x20, 0, 0x33) }, { "sll", RR(0, 1, 0x33) }, { "slt", RR(0, 2, 0x33) },
  { "sltu", RR(0, 3, 0x33) }, { "xor", RR(0, 4, 0x33) }, { "srl", RR(0, 5, 0x33) }, { "sra", RR(0x20, 5, 0x33) },
  { "or", RR(0, 6, 0x33) }, { "and", RR(0, 7, 0x33) },
  { "mul", RR(1, 0, 0x33) }, { "mulh", RR(1, 1, 0x33) }, { "mulhsu", RR(1, 2, 0x33) }, { "mulhu", RR(1, 3, 0x33) },
  { "div", RR(1, 4, 0x33) }, { "divu", RR(1, 5, 0x33) }, { "rem", RR(1, 6, 0x33) }, { "remu", RR(1, 7, 0x33) },
  { "addw", RR(0, 0, 0x3b) }, { "subw", RR(0x20, 0, 0x3b) }, { "sllw", RR(0, 1, 0x3b) }, { "srlw", RR(0, 5, 0x3b) },
  { "sraw", RR(0x20, 5, 0x3b) }, { "mulw", RR(1, 0, 0x3b) }, { "divw", RR(1, 4, 0x3b) }, { "divuw", RR(1, 5, 0x3b) },
  { "remw", RR(1, 6, 0x3b) }, { "remuw", RR(1, 7, 0x3b) },
};
#define II(f3, op) ((A0 << 15) | ((f3) << 12) | (A0 << 7) | (op))
static const struct op iops[] = {
  { "addi", II(0, 0x13) }, { "slti", II(2, 0x13) }, { "sltiu", II(3, 0x13) }, { "xori", II(4, 0x13) },
  { "ori", II(6, 0x13) }, { "andi", II(7, 0x13) }, { "addiw", II(0, 0x1b) },
};
static const struct op shops[] = {
  { "slli", II(1, 0x13) }, { "srli", II(5, 0x13) }, { "srai", II(5, 0x13) | (0x10u << 26) },
  { "slliw", II(1, 0x1b) }, { "srliw", II(5, 0x1b) }, { "sraiw", II(5, 0x1b) | (0x20u << 25) },
};

static void line(const char *name, uint64_t h, uint64_t sample) {
  puts_(name); putc_(' '); putkv("h", h); putkv("s", sample); putc_('\n');
}

static void test_rr(void) {
  uint64_t all = FNV_INIT;
  for (unsigned k = 0; k < sizeof rops / sizeof rops[0]; k++) {
    uint64_t h = FNV_INIT;
    for (int i = 0; i < NOPS; i++)
      for (int j = 0; j < NOPS; j++) h = fnv(h, run1(rops[k].enc, ops[i], ops[j]));
    // Register shifts with every amount 0..127 (only the low 6 / 5 bits count).
    for (int i = 0; i < NOPS; i++)
      for (uint64_t s = 0; s < 128; s++) h = fnv(h, run1(rops[k].enc, ops[i], s | (ops[(i + 3) % NOPS] << 7)));
    line(rops[k].name, h, run1(rops[k].enc, ops[NOPS - 1], ops[NOPS - 2]));
    all = fnv(all, h);
  }
  // Named edge cases, printed raw.
  static const struct { const char *name; uint32_t enc; uint64_t a, b; } raw[] = {
    { "div-by-0", RR(1, 4, 0x33), 1234, 0 }, { "divu-by-0", RR(1, 5, 0x33), 1234, 0 },
    { "rem-by-0", RR(1, 6, 0x33), 1234, 0 }, { "remu-by-0", RR(1, 7, 0x33), 1234, 0 },
    { "div-ovf", RR(1, 4, 0x33), 0x8000000000000000ull, (uint64_t)-1 }, { "rem-ovf", RR(1, 6, 0x33), 0x8000000000000000ull, (uint64_t)-1 },
    { "divw-ovf", RR(1, 4, 0x3b), 0x80000000ull, (uint64_t)-1 }, { "remw-ovf", RR(1, 6, 0x3b), 0x80000000ull, (uint64_t)-1 },
    { "divw-by-0", RR(1, 4, 0x3b), 0x12345678ull, 0 }, { "divuw-by-0", RR(1, 5, 0x3b), 0x12345678ull, 0 },
    { "remw-by-0", RR(1, 6, 0x3b), 0xfedcba9880000000ull, 0 }, { "remuw-by-0", RR(1, 7, 0x3b), 0xfedcba9880000000ull, 0 },
    { "mulh-min", RR(1, 1, 0x33), 0x8000000000000000ull, 0x8000000000000000ull },
    { "mulhsu-neg", RR(1, 2, 0x33), (uint64_t)-1, (uint64_t)-1 }, { "mulhu-max", RR(1, 3, 0x33), (uint64_t)-1, (uint64_t)-1 },
    { "sraw-neg", RR(0x20, 5, 0x3b), 0x80000000ull, 31 }, { "srlw-hi", RR(0, 5, 0x3b), 0xffffffff80000000ull, 0 },
  };
  for (unsigned k = 0; k < sizeof raw / sizeof raw[0]; k++) {
    puts_(raw[k].name); putc_(' '); puthex(run1(raw[k].enc, raw[k].a, raw[k].b)); putc_('\n');
  }
  line("group-rr", all, 0);
}

static void test_imm(void) {
  int32_t imms[24] = { 0, 1, -1, 2, 2047, -2048, 0x555, -0x556, 0x7ff, 0x800, 31, 32, 63, 64 };
  for (int i = 14; i < 24; i++) imms[i] = (int32_t)(xorshift() & 0xfff);
  uint64_t all = FNV_INIT;
  for (unsigned k = 0; k < sizeof iops / sizeof iops[0]; k++) {
    uint64_t h = FNV_INIT;
    for (int m = 0; m < 24; m++)
      for (int i = 0; i < NOPS; i++) h = fnv(h, run1(iops[k].enc | ((uint32_t)imms[m] << 20), ops[i], 0));
    line(iops[k].name, h, run1(iops[k].enc | (0x800u << 20), ops[NOPS - 1], 0));
    all = fnv(all, h);
  }
  for (unsigned k = 0; k < sizeof shops / sizeof shops[0]; k++) {
    uint64_t h = FNV_INIT;
    int w = k >= 3 ? 32 : 64;
    for (int s = 0; s < w; s++)
      for (int i = 0; i < NOPS; i++) h = fnv(h, run1(shops[k].enc | ((uint32_t)s << 20), ops[i], 0));
    line(shops[k].name, h, run1(shops[k].enc | (13u << 20), ops[NOPS - 1], 0));
    all = fnv(all, h);
  }
  // lui / auipc (auipc result made position-independent by subtracting the buffer address).
  uint64_t hl = FNV_INIT, ha = FNV_INIT;
  for (int i = 0; i < 64; i++) {
    uint32_t imm20 = i < 8 ? (uint32_t[]){ 0, 1, 0x80000, 0xfffff, 0x7ffff, 0x80001, 0x12345, 0xedcba }[i] : (uint32_t)(xorshift() & 0xfffff);
    hl = fnv(hl, run1((imm20 << 12) | (A0 << 7) | 0x37, 0, 0));
    uint32_t p[3] = { (imm20 << 12) | (A0 << 7) | 0x17, enc_r(0x20, A1, A0, 0, A0, 0x33), INSN_RET };
    ha = fnv(ha, run32(p, 3, 0, (uint64_t)code_buf, 0));
  }
  line("lui", hl, run1((0x80000u << 12) | (A0 << 7) | 0x37, 0, 0));
  line("auipc", ha, 0);
  // Writes to x0 are discarded.
  uint32_t z[3] = { enc_i(5, A0, 0, 0, 0x13), enc_i(0, 0, 0, A0, 0x13), INSN_RET };
  line("x0", run32(z, 3, 77, 0, 0), 0);
  line("group-imm", fnv(fnv(all, hl), ha), 0);
}

static void fill_data(void) {
  uint64_t s = 0x1234567887654321ull;
  for (int i = 0; i < 8192; i++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; data[i] = (uint8_t)s; }
}

static const int offsets[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 4088, 4089, 4090, 4091,
  4092, 4093, 4094, 4095, 4096, 4097 };
#define NOFF (int)(sizeof offsets / sizeof offsets[0])

static void test_mem(void) {
  static const struct op loads[] = {
    { "lb", II(0, 0x03) }, { "lh", II(1, 0x03) }, { "lw", II(2, 0x03) }, { "ld", II(3, 0x03) },
    { "lbu", II(4, 0x03) }, { "lhu", II(5, 0x03) }, { "lwu", II(6, 0x03) },
  };
  fill_data();
  uint64_t all = FNV_INIT;
  for (unsigned k = 0; k < 7; k++) {
    uint64_t h = FNV_INIT;
    for (int o = 0; o < NOFF; o++) {
      h = fnv(h, run1(loads[k].enc, (uint64_t)&data[offsets[o]], 0));
      h = fnv(h, run1(loads[k].enc | ((uint32_t)-5 << 20), (uint64_t)&data[offsets[o] + 5], 0));
      h = fnv(h, run1(loads[k].enc | (2000u << 20), (uint64_t)&data[offsets[o] + 100] - 2000, 0));
    }
    line(loads[k].name, h, run1(loads[k].enc, (uint64_t)&data[4093], 0));
    all = fnv(all, h);
  }
  static const struct op stores[] = {
    { "sb", 0 }, { "sh", 1 }, { "sw", 2 }, { "sd", 3 },
  };
  for (unsigned k = 0; k < 4; k++) {
    uint64_t h = FNV_INIT;
    for (int o = 0; o < NOFF; o++) {
      for (int v = 0; v < 4; v++) {
        fill_data();
        int32_t imm = v == 3 ? -7 : 0;
        uint64_t base = (uint64_t)&data[offsets[o]] - (uint64_t)(int64_t)imm;
        run1(enc_s(imm, A1, A0, stores[k].enc, 0x23), base, ops[NOPS - 1 - v] ^ ops[v + 5]);
        for (int b = -8; b < 16; b += 8) {
          uint64_t w = 0;
          for (int q = 0; q < 8; q++) w |= (uint64_t)data[offsets[o] + 8 + b + q] << (8 * q);
          h = fnv(h, w);
        }
        for (int q = -8; q < 0; q++) h = fnv(h, data[offsets[o] + 8 + q]);
      }
    }
    uint64_t sample;
    fill_data();
    run1(enc_s(0, A1, A0, stores[k].enc, 0x23), (uint64_t)&data[4093], 0x0102030405060708ull);
    sample = 0;
    for (int q = 0; q < 8; q++) sample |= (uint64_t)data[4092 + q] << (8 * q);
    line(stores[k].name, h, sample);
    all = fnv(all, h);
  }
  line("group-mem", all, 0);
}

static void test_ctrl(void) {
  static const char *names[] = { "beq", "bne", "?", "?", "blt", "bge", "bltu", "bgeu" };
  uint64_t all = FNV_INIT;
  for (uint32_t f3 = 0; f3 < 8; f3++) {
    if (f3 == 2 || f3 == 3) continue;
    uint64_t h = FNV_INIT, bits = 0;
    for (int i = 0; i < NOPS; i++)
      for (int j = 0; j < NOPS; j++) {
        uint32_t fwd[5] = { enc_b(12, A1, A0, f3), enc_i(0, 0, 0, A0, 0x13), INSN_RET, enc_i(1, 0, 0, A0, 0x13), INSN_RET };
        uint32_t back[6] = { enc_j(12, 0), enc_i(1, 0, 0, A0, 0x13), INSN_RET, enc_b(-8, A1, A0, f3), enc_i(0, 0, 0, A0, 0x13), INSN_RET };
        uint64_t r1 = run32(fwd, 5, ops[i], ops[j], 0), r2 = run32(back, 6, ops[i], ops[j], 0);
        if (r1 != r2) { puts_("branch direction mismatch\n"); finish(3); }
        h = fnv(h, r1);
        if (i < 8 && j < 8) bits = (bits << 1) | r1;
      }
    line(names[f3], h, bits);
    all = fnv(all, h);
  }
  // jal / jalr link values relative to the buffer.
  uint32_t jal[4] = { enc_j(8, A1), INSN_NOP, enc_r(0x20, A0, A1, 0, A0, 0x33), INSN_RET };
  line("jal-link", run32(jal, 4, (uint64_t)code_buf, 0, 0), 0);
  uint32_t jalr[6] = { (A2 << 7) | 0x17, enc_i(16, A2, 0, A1, 0x67), INSN_NOP, INSN_NOP, enc_r(0x20, A0, A1, 0, A0, 0x33), INSN_RET };
  line("jalr-link", run32(jalr, 6, (uint64_t)code_buf, 0, 0), 0);
  jalr[1] = enc_i(17, A2, 0, A1, 0x67); // odd target: bit 0 is cleared
  line("jalr-odd", run32(jalr, 6, (uint64_t)code_buf, 0, 0), 0);
  uint32_t same[6] = { (A2 << 7) | 0x17, enc_i(16, A2, 0, A2, 0x67), INSN_NOP, INSN_NOP, enc_r(0x20, A0, A2, 0, A0, 0x33), INSN_RET };
  line("jalr-rd=rs1", run32(same, 6, (uint64_t)code_buf, 0, 0), 0);
  uint32_t jneg[5] = { enc_j(12, 0), enc_r(0x20, A0, A1, 0, A0, 0x33), INSN_RET, enc_j(-8, A1), INSN_RET };
  line("jal-back", run32(jneg, 5, (uint64_t)code_buf, 0, 0), 0);
  line("group-ctrl", all, 0);
}

int main(void) {
  puts_("isa-int\n");
  init_ops();
  test_rr();
  test_imm();
  test_mem();
  test_ctrl();
  puts_("DONE\n");
  return 0;
}
