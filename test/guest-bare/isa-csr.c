// Differential test: Zicsr instructions and the machine-mode CSRs' WARL behaviour, traps
// (ecall from each mode, ebreak, illegal instructions, bad CSR accesses) and the FP CSR
// aliases. Values the spec leaves to the implementation are printed on "~" lines, which
// the differential test does not compare with QEMU.
#include "bare.h"

static void nl(void) { putc_('\n'); }

static void csr_ops(void) {
  uint64_t a, b, c, d, e, f;
  __asm__ volatile(
    "li t0, 0x1234\n\tcsrrw %0, mscratch, t0\n\t"   // a = old
    "li t0, 0xf0f0\n\tcsrrs %1, mscratch, t0\n\t"   // b = 0x1234
    "li t0, 0x0230\n\tcsrrc %2, mscratch, t0\n\t"   // c = 0xf2f4
    "csrrwi %3, mscratch, 0x1f\n\t"                 // d = 0xf0c4
    "csrrsi %4, mscratch, 0x0c0 & 0x1f\n\t"
    "csrrci %5, mscratch, 3\n\t"
    : "=&r"(a), "=&r"(b), "=&r"(c), "=&r"(d), "=&r"(e), "=&r"(f) :: "t0");
  (void)a;
  putkv("csrrw/s/c", b); puthex(c); putc_(' '); puthex(d); putc_(' '); puthex(e); putc_(' '); puthex(f); putc_(' '); puthex(CSRR(mscratch)); nl();
  // rd = x0 and rs1 = x0 forms.
  __asm__ volatile("li t0, -1\n\tcsrw mscratch, t0\n\tcsrrs x0, mscratch, x0\n\tcsrrc %0, mscratch, x0\n\tcsrrsi %1, mscratch, 0" : "=r"(a), "=r"(b) :: "t0");
  putkv("csr-x0", a); puthex(b); nl();
}

// UXL is left out: QEMU 7.2 lets it be written to 3 (RV128), which is not a legal value here.
#define MSTATUS_PINNED 0x8000000c007e19aaull // SD, SXL, TSR..MPRV, FS, MPP, MPIE, SPP, SPIE, MIE, SIE
static void warl(void) {
  uint64_t saved = CSRR(mstatus);
  CSRW(mstatus, (uint64_t)-1 & ~(1ull << 3)); // all ones except MIE
  uint64_t ones = CSRR(mstatus);
  CSRW(mstatus, 0);
  uint64_t zeros = CSRR(mstatus);
  CSRW(mstatus, saved);
  putkv("mstatus-ones", ones & MSTATUS_PINNED); putkv("mstatus-zeros", zeros & MSTATUS_PINNED); nl();
  putc_('~'); putkv("mstatus-ones-full", ones); putkv("zeros-full", zeros); nl();
  // MPP: 0, 1, 3 are legal; 2 is reserved and must read back as some legal value.
  uint64_t mpp[4];
  for (uint64_t m = 0; m < 4; m++) {
    CSRC(mstatus, 3ull << 11); CSRS(mstatus, m << 11);
    mpp[m] = (CSRR(mstatus) >> 11) & 3;
  }
  CSRW(mstatus, saved);
  putkv("mpp", mpp[0] | mpp[1] << 4 | mpp[3] << 12); nl();
  putc_('~'); putkv("mpp-2", mpp[2]); nl();
  uint64_t misa = CSRR(misa);
  // MXL = 64 and I M A F D C S U must be present; other bits (e.g. H) are implementation choices.
  const uint64_t need = (3ull << 62) | (1 << 0) | (1 << 2) | (1 << 3) | (1 << 5) | (1 << 8) | (1 << 12) | (1 << 18) | (1 << 20);
  putkv("misa", misa & need); nl();
  putc_('~'); putkv("misa-full", misa); nl();
  // Delegation registers: medeleg[11] (ecall from M) is read-only zero; the S-level
  // interrupts are delegable; M-level interrupt bits never are.
  CSRW(medeleg, -1);
  uint64_t med = CSRR(medeleg);
  CSRW(medeleg, 0);
  CSRW(mideleg, -1);
  uint64_t mid = CSRR(mideleg);
  CSRW(mideleg, 0);
  putkv("medeleg-common", med & 0xb1ff); putkv("mideleg", mid & 0xaaa); nl();
  putc_('~'); putkv("medeleg-11", med & (1 << 11)); putkv("medeleg-full", med); putkv("mideleg-full", mid); nl();
  // mtvec: direct and vectored are legal; modes 2 and 3 are reserved (WARL).
  uint64_t saved_tvec = CSRR(mtvec);
  CSRW(mtvec, 0x80001000ull | 1);
  uint64_t vec = CSRR(mtvec);
  CSRW(mtvec, 0x80001000ull);
  uint64_t dir = CSRR(mtvec);
  CSRW(mtvec, 0x80002000ull | 2);
  uint64_t m2 = CSRR(mtvec);
  CSRW(mtvec, 0x80003000ull | 3);
  uint64_t m3 = CSRR(mtvec);
  CSRW(mtvec, saved_tvec);
  putkv("mtvec-vec", vec); putkv("mtvec-direct", dir); nl();
  putc_('~'); putkv("mtvec-mode2", m2); putkv("mtvec-mode3", m3); nl();
  // mepc: bit 0 is always zero (IALIGN = 16 with C).
  uint64_t saved_epc = CSRR(mepc);
  CSRW(mepc, 0x80000007ull);
  putc_('~'); putkv("mepc-odd", CSRR(mepc)); nl();
  CSRW(mepc, saved_epc);
  // mie: the six standard interrupt enables are writable.
  CSRW(mie, -1); uint64_t mie = CSRR(mie); CSRW(mie, 0);
  putkv("mie", mie & 0xaaa); nl();
  putc_('~'); putkv("mie-full", mie); nl();
}

static void fcsr(void) {
  uint64_t a, b, c, d, e, f, g;
  __asm__ volatile(
    "li t0, 0xff\n\tcsrw fcsr, t0\n\tcsrr %0, frm\n\tcsrr %1, fflags\n\t"
    "csrwi frm, 3\n\tcsrr %2, fcsr\n\tcsrwi fflags, 0\n\tcsrr %3, fcsr\n\t"
    "li t0, -1\n\tcsrw fcsr, t0\n\tcsrr %4, fcsr\n\tcsrrci %5, fflags, 0x15\n\tcsrr %6, fcsr\n\tcsrwi fcsr, 0"
    : "=&r"(a), "=&r"(b), "=&r"(c), "=&r"(d), "=&r"(e), "=&r"(f), "=&r"(g) :: "t0");
  putkv("frm/fflags", a); puthex(b); putc_(' '); puthex(c); putc_(' '); puthex(d); putc_(' '); puthex(e); putc_(' '); puthex(f); putc_(' '); puthex(g); nl();
  putkv("fs-after-write", (CSRR(mstatus) >> 13) & 3); putkv("sd", CSRR(mstatus) >> 63); nl();
  // With FS = off, FP CSRs and instructions are illegal.
  uint64_t saved = CSRR(mstatus);
  CSRC(mstatus, 3ull << 13);
  trap_reset();
  __asm__ volatile(TRAP_ARM "csrr t0, fcsr\n1:" ::: "t0", "t5", "t6", "memory");
  puts_("fcsr-fs-off "); put_trap(); nl();
  trap_reset();
  __asm__ volatile(TRAP_ARM "fadd.d ft0, ft1, ft2\n1:" ::: "t5", "t6", "memory");
  puts_("fadd-fs-off "); put_trap(); nl();
  CSRW(mstatus, saved);
}

// ---- traps ------------------------------------------------------------------------------
static volatile uint64_t rec[16][3];
static volatile int nrec;
static void record(void) {
  rec[nrec][0] = trap_cause; rec[nrec][1] = trap_tval; rec[nrec][2] = trap_mpp; nrec++;
}
#define EXPECT(asm_text) do { trap_reset(); __asm__ volatile(TRAP_ARM asm_text TRAP_END ::: "t0", "t5", "t6", "memory"); record(); } while (0)

static void lower_body(void) {
  EXPECT("ecall");
  EXPECT("csrr t0, mstatus");        // M-level CSR from a lower mode
  EXPECT("mret");
  EXPECT(".word 0x0000000b");        // custom-0
  EXPECT("csrr t0, sstatus");        // legal in S, illegal in U
  EXPECT("sfence.vma");              // legal in S (TVM = 0), illegal in U
  EXPECT("wfi");                     // TW = 1 below: illegal in S and U
  EXPECT("sret");                    // from S returns to SPP = U... only run from U
}
static void print_recs(const char *mode, int n) {
  static const char *names[] = { "ecall", "csrr-mstatus", "mret", "custom0", "csrr-sstatus", "sfence.vma", "wfi-tw", "sret" };
  for (int i = 0; i < n; i++) {
    puts_(mode); putc_(' '); puts_(names[i]); putc_(' ');
    putkv("cause", rec[i][0]); putkv("tval", rec[i][1]); putkv("from", rec[i][2]); nl();
  }
}
static void s_body(void) {
  // Same as lower_body without sret (which would leave S-mode).
  EXPECT("ecall");
  EXPECT("csrr t0, mstatus");
  EXPECT("mret");
  EXPECT(".word 0x0000000b");
  EXPECT("csrr t0, sstatus");
  EXPECT("sfence.vma");
  EXPECT("wfi");
}

static void traps(void) {
  // From M.
  nrec = 0;
  EXPECT("ecall");
  EXPECT(".word 0x0000000b");
  EXPECT(".word 0xfe000033");        // OP with funct7 = 0x7f
  EXPECT(".word 0x302000f3");        // mret with rd != 0
  EXPECT("csrr t0, 0x7c0");          // nonexistent CSR
  EXPECT("csrr t0, 0x800");
  EXPECT("csrw mhartid, zero");      // read-only CSR
  EXPECT("csrrs t0, mvendorid, t0"); // set with rs1 != x0 writes: illegal on read-only
  EXPECT("csrrwi zero, cycle, 1");
  static const char *mnames[] = { "ecall", "custom0", "op-f7", "mret-rd", "csr-7c0", "csr-800", "w-mhartid", "s-mvendorid", "w-cycle" };
  for (int i = 0; i < nrec; i++) {
    puts_("M "); puts_(mnames[i]); putc_(' '); putkv("cause", rec[i][0]); putkv("tval", rec[i][1]); putkv("from", rec[i][2]); nl();
  }
  // Reading a read-only CSR (rs1 = x0 / uimm = 0) does not trap.
  nrec = 0;
  EXPECT("csrrs t0, mhartid, zero\n\tcsrrsi t0, mvendorid, 0\n\tcsrrc t0, mimpid, x0");
  putkv("ro-reads", rec[0][0]); nl();
  // ebreak: cause 3 at the ebreak; mtval may be 0 or the pc.
  trap_reset();
  __asm__ volatile(TRAP_ARM "ebreak\n1:" ::: "t5", "t6", "memory");
  putkv("ebreak", trap_cause); nl();
  putc_('~'); putkv("ebreak-tval-is-pc", trap_tval == trap_epc); nl();

  CSRS(mstatus, 1ull << 21); // TW
  nrec = 0;
  run_lower(PRV_S, s_body);
  print_recs("S", nrec);
  nrec = 0;
  run_lower(PRV_U, lower_body);
  print_recs("U", nrec);
  CSRC(mstatus, 1ull << 21);
  // After returning to M through mret, MPP reads back as U (the least-privileged mode).
  putkv("mpp-after-mret", (CSRR(mstatus) >> 11) & 3); nl();
}

// ---- vectored interrupts ----------------------------------------------------------------
volatile uint64_t vec_hit = 0xdead, vec_cause;
__asm__(
  ".section .text\n"
  ".balign 256\n"
  "vec_table:\n"
  ".option push\n.option norvc\n"
  "  j vec_exc\n  j vec_1\n  j vec_2\n  j vec_3\n  j vec_4\n  j vec_5\n  j vec_6\n  j vec_7\n"
  ".option pop\n"
  "vec_1: csrw mscratch, t0\n li t0, 1\n j vec_common\n"
  "vec_2: csrw mscratch, t0\n li t0, 2\n j vec_common\n"
  "vec_3: csrw mscratch, t0\n li t0, 3\n j vec_common\n"
  "vec_4: csrw mscratch, t0\n li t0, 4\n j vec_common\n"
  "vec_5: csrw mscratch, t0\n li t0, 5\n j vec_common\n"
  "vec_6: csrw mscratch, t0\n li t0, 6\n j vec_common\n"
  "vec_7: csrw mscratch, t0\n li t0, 7\n j vec_common\n"
  "vec_exc: csrw mscratch, t0\n li t0, 0\n j vec_common\n"
  "vec_common:\n"
  "  sd t0, vec_hit, t1\n"       // t1 is clobbered: the interrupted code saves it
  "  csrr t0, mcause\n"
  "  sd t0, vec_cause, t1\n"
  "  li t0, 0x2000000\n"          // CLINT msip = 0
  "  sw zero, 0(t0)\n"
  "  csrr t0, mscratch\n"
  "  mret\n"
  ".section .text\n");
extern char vec_table[];

static void vectored(void) {
  uint64_t saved = CSRR(mtvec);
  CSRW(mtvec, (uint64_t)vec_table | 1);
  CSRW(mie, 1 << 3);        // MSIE
  __asm__ volatile(
    "li t0, 0x2000000\n\tli t1, 1\n\tsw t1, 0(t0)\n\t"   // raise MSIP
    "csrsi mstatus, 8\n\t"                               // MIE: taken here
    "1: lw t1, 0(t0)\n\tbnez t1, 1b\n\t"
    "csrci mstatus, 8" ::: "t0", "t1", "memory");
  CSRW(mie, 0);
  CSRW(mtvec, saved);
  putkv("vectored-entry", vec_hit); putkv("mcause", vec_cause); nl();
}

int main(void) {
  puts_("isa-csr\n");
  csr_ops();
  warl();
  fcsr();
  traps();
  vectored();
  puts_("DONE\n");
  return 0;
}
