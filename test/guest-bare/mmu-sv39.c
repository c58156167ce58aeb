// Sv39 translation and protection, run from S and U mode (entered with mret) under page
// tables built in M-mode. Deterministic, so it is also a differential test against QEMU;
// test/machine/mmu.test.ts checks the expected values on ferry.
//
// Virtual layout (root index = va[38:30]):
//   0x0000_0000 1G   invalid
//   0x4000_0000 4K   pages below (pt_l0), 0x4020_0000 2M superpage, 0x4040_0000 misaligned 2M
//   0x8000_0000 1G   identity map of RAM (U bit toggled for U-mode probes)
//   0xc000_0000 1G   alias of RAM without U (S-mode trap entry for delegated traps)
#include "bare.h"

#define PTE_V 1ull
#define PTE_R 2ull
#define PTE_W 4ull
#define PTE_X 8ull
#define PTE_U 16ull
#define PTE_A 64ull
#define PTE_D 128ull
#define PTE(pa, fl) ((((uint64_t)(pa)) >> 12 << 10) | (fl))
#define MSTATUS_MPRV (1ull << 17)
#define MSTATUS_SUM (1ull << 18)
#define MSTATUS_MXR (1ull << 19)

static uint64_t pt_root[512] __attribute__((aligned(4096)));
static uint64_t pt_l1[512] __attribute__((aligned(4096)));
static uint64_t pt_l0[512] __attribute__((aligned(4096)));
static uint64_t pages[8][512] __attribute__((aligned(4096)));
#define SUPER_PA 0x80400000ull    /* 2M-aligned physical region for the 2M superpage */
#define VA4K(i) (0x40000000ull + (uint64_t)(i) * 4096)
#define VA2M 0x40200000ull
#define VA2M_BAD 0x40400000ull
#define ALIAS_OFF 0x40000000ull   /* 0xc000_0000 - 0x8000_0000 */

static void set_identity_user(int user) {
  pt_root[2] = PTE(0x80000000ull, PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D | (user ? PTE_U : 0));
  __asm__ volatile("sfence.vma" ::: "memory");
}

static void build_tables(void) {
  for (int k = 0; k < 8; k++)
    for (int i = 0; i < 512; i++) pages[k][i] = 0x1000000000000000ull * (uint64_t)(k + 1) + (uint64_t)i;
  pt_root[1] = PTE(pt_l1, PTE_V);
  pt_root[3] = PTE(0x80000000ull, PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D);
  pt_l1[0] = PTE(pt_l0, PTE_V);
  pt_l1[1] = PTE(SUPER_PA, PTE_V | PTE_R | PTE_W);                   // A and D clear
  pt_l1[2] = PTE(SUPER_PA + 0x1000, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D); // misaligned
  pt_l0[0] = PTE(pages[0], PTE_V | PTE_R | PTE_W);                   // A and D clear
  pt_l0[1] = PTE(pages[1], PTE_V | PTE_R | PTE_A);                   // read-only
  pt_l0[2] = PTE(pages[2], PTE_R | PTE_W | PTE_A | PTE_D);           // V clear
  pt_l0[3] = PTE(pages[2], PTE_V | PTE_X | PTE_A);                   // execute-only
  pt_l0[4] = PTE(pages[3], PTE_V | PTE_R | PTE_W | PTE_U | PTE_A | PTE_D); // user
  pt_l0[5] = PTE(pages[4], PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);   // supervisor
  pt_l0[6] = PTE(0x90000000ull, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D); // outside RAM
  pt_l0[7] = PTE(pages[2], PTE_V | PTE_W | PTE_A | PTE_D);           // W without R: reserved
  pt_l0[8] = PTE(pages[5], PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);   // remapped by sfence test
  pt_l0[9] = PTE(pages[7], PTE_V | PTE_R | PTE_X | PTE_A);           // code
  pt_l0[10] = PTE(pages[3], PTE_V | PTE_R | PTE_X | PTE_U | PTE_A);  // user code
  ((volatile uint64_t *)SUPER_PA)[0x200] = 0x2222222222222222ull;
  // pages[7]: li a0, 42; ret.  pages[3] (user page) + 0x800: li a0, 43; ret.
  pages[7][0] = 0x0000806702a00513ull;
  pages[3][256] = 0x0000806702b00513ull;
  __asm__ volatile("fence.i" ::: "memory");
  set_identity_user(0);
  CSRW(satp, (8ull << 60) | ((uint64_t)pt_root >> 12));
  __asm__ volatile("sfence.vma" ::: "memory");
}

// ---- probes: one access at a lower privilege, recorded for M-mode to print ---------------
enum { LOAD, STORE, EXEC, LOAD_MISALIGNED, STORE_MISALIGNED, LOAD_W };
static volatile uint64_t probe_va, probe_kind, probe_val, probe_cause, probe_tval;

static void probe_body(void) {
  uint64_t va = probe_va, v = 0xbadbad;
  trap_reset();
  switch (probe_kind) {
    case LOAD: __asm__ volatile(TRAP_ARM "ld %0, 0(%1)\n1:" : "+r"(v) : "r"(va) : "t5", "t6", "memory"); break;
    case LOAD_W: __asm__ volatile(TRAP_ARM "lw %0, 0(%1)\n1:" : "+r"(v) : "r"(va) : "t5", "t6", "memory"); break;
    case STORE: __asm__ volatile(TRAP_ARM "sd %1, 0(%2)\n1:" : "+r"(v) : "r"(0x7777ull), "r"(va) : "t5", "t6", "memory"); break;
    case EXEC: __asm__ volatile(TRAP_ARM "mv a0, %0\n\tjalr %1\n\tmv %0, a0\n1:" : "+r"(v) : "r"(va) : "ra", "a0", "t5", "t6", "memory"); break;
    case LOAD_MISALIGNED: __asm__ volatile(TRAP_ARM "ld %0, 0(%1)\n1:" : "+r"(v) : "r"(va) : "t5", "t6", "memory"); break;
    case STORE_MISALIGNED: __asm__ volatile(TRAP_ARM "sd %1, 0(%2)\n1:" : "+r"(v) : "r"(0x0807060504030201ull), "r"(va) : "t5", "t6", "memory"); break;
  }
  trap_resume = 0;
  probe_val = v; probe_cause = trap_cause; probe_tval = trap_tval;
}

static void probe(const char *name, int mode, uint64_t mstatus_bits, int kind, uint64_t va) {
  probe_va = va; probe_kind = (uint64_t)kind;
  CSRC(mstatus, MSTATUS_SUM | MSTATUS_MXR);
  CSRS(mstatus, mstatus_bits);
  set_identity_user(mode == PRV_U);
  run_lower((uint64_t)mode, probe_body);
  set_identity_user(0);
  CSRC(mstatus, MSTATUS_SUM | MSTATUS_MXR);
  puts_(mode == PRV_U ? "U " : "S "); puts_(name); putc_(' ');
  putkv("cause", probe_cause); putkv("tval", probe_tval); putkv("val", probe_val); putc_('\n');
}

static void pte_flags(const char *name, uint64_t pte) { puts_(name); putc_(' '); putkv("flags", pte & 0xff); putc_('\n'); }

// S-mode: remap a page, then sfence.vma makes the new mapping visible.
static volatile uint64_t sf_before, sf_after, sf_page;
static void sfence_body(void) {
  sf_before = *(volatile uint64_t *)VA4K(8);
  // Remap (the tables are identity-mapped and writable from S).
  pt_l0[8] = PTE(pages[6], PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);
  __asm__ volatile("sfence.vma" ::: "memory");
  sf_after = *(volatile uint64_t *)VA4K(8);
  pt_l0[8] = PTE(pages[5], PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);
  __asm__ volatile("sfence.vma %0, zero" :: "r"(VA4K(8)) : "memory");
  sf_page = *(volatile uint64_t *)VA4K(8);
}

// U-mode access to a supervisor page with the page fault delegated to S-mode.
static volatile uint64_t deleg_val;
static void deleg_body(void) {
  uint64_t v = 0xbadbad;
  __asm__ volatile("la t6, 1f\n\tla t5, s_trap_rec\n\tsd t6, 32(t5)\n\tld %0, 0(%1)\n1:" : "+r"(v) : "r"(VA4K(5)) : "t5", "t6", "memory");
  deleg_val = v;
}

static void mprv(void) {
  // M-mode loads with MPRV = 1 and MPP = S translate like S-mode loads.
  uint64_t v, saved = CSRR(mstatus);
  CSRC(mstatus, 3ull << 11); CSRS(mstatus, 1ull << 11);
  __asm__ volatile("li t0, 1 << 17\n\tcsrs mstatus, t0\n\tld %0, 0(%1)\n\tcsrc mstatus, t0" : "=r"(v) : "r"(VA4K(5) + 16) : "t0", "memory");
  putkv("mprv-s-load", v); putc_('\n');
  __asm__ volatile("li t0, 1 << 17\n\tcsrs mstatus, t0\n\tsd %0, 24(%1)\n\tcsrc mstatus, t0" :: "r"(0x4242ull), "r"(VA4K(5)) : "t0", "memory");
  putkv("mprv-s-store", pages[4][3]); putc_('\n');
  // MPP = U: the supervisor page faults (in M-mode, mcause 13, mtval = the virtual address).
  CSRC(mstatus, 3ull << 11);
  trap_reset();
  v = 0xbadbad;
  __asm__ volatile(TRAP_ARM "li t0, 1 << 17\n\tcsrs mstatus, t0\n\tld %0, 0(%1)\n1:\tli t0, 1 << 17\n\tcsrc mstatus, t0"
                   : "+r"(v) : "r"(VA4K(5)) : "t0", "t5", "t6", "memory");
  putkv("mprv-u-load", v); put_trap(); putc_('\n');
  // Instruction fetch is not affected by MPRV: this code keeps running from physical addresses.
  CSRW(mstatus, saved);
}

int main(void) {
  puts_("mmu-sv39\n");
  build_tables();
  // Translation through 4K, 2M and 1G pages; hardware A/D updates.
  pte_flags("pte0-before", pt_l0[0]);
  probe("load-4k", PRV_S, 0, LOAD, VA4K(0) + 8);
  pte_flags("pte0-after-load", pt_l0[0]);
  probe("store-4k", PRV_S, 0, STORE, VA4K(0) + 16);
  pte_flags("pte0-after-store", pt_l0[0]);
  putkv("pages0[2]", pages[0][2]); putc_('\n');
  pte_flags("pte2m-before", pt_l1[1]);
  probe("load-2m", PRV_S, 0, LOAD, VA2M + 0x1000);
  pte_flags("pte2m-after-load", pt_l1[1]);
  probe("store-2m", PRV_S, 0, STORE, VA2M + 0x1008);
  pte_flags("pte2m-after-store", pt_l1[1]);
  probe("load-1g-alias", PRV_S, 0, LOAD, (uint64_t)&pages[6][5] + ALIAS_OFF);
  probe("load-1g-identity", PRV_U, 0, LOAD, (uint64_t)&pages[6][6]);
  // Faults.
  probe("load-invalid", PRV_S, 0, LOAD, VA4K(2) + 8);
  probe("store-invalid", PRV_S, 0, STORE, VA4K(2) + 8);
  probe("exec-invalid", PRV_S, 0, EXEC, VA4K(2));
  probe("load-unmapped-1g", PRV_S, 0, LOAD, 0x1000);
  probe("load-noncanonical", PRV_S, 0, LOAD, 0x0000008000000000ull);
  probe("load-reserved-w", PRV_S, 0, LOAD, VA4K(7));
  probe("store-readonly", PRV_S, 0, STORE, VA4K(1) + 24);
  probe("load-readonly", PRV_S, 0, LOAD, VA4K(1) + 24);
  probe("exec-nonx", PRV_S, 0, EXEC, VA4K(0));
  probe("exec-code", PRV_S, 0, EXEC, VA4K(9));
  probe("load-xonly", PRV_S, 0, LOAD, VA4K(3) + 32);
  probe("load-xonly-mxr", PRV_S, MSTATUS_MXR, LOAD, VA4K(3) + 32);
  probe("load-upage", PRV_S, 0, LOAD, VA4K(4) + 40);
  probe("load-upage-sum", PRV_S, MSTATUS_SUM, LOAD, VA4K(4) + 40);
  probe("store-upage-sum", PRV_S, MSTATUS_SUM, STORE, VA4K(4) + 48);
  probe("exec-upage-sum", PRV_S, MSTATUS_SUM, EXEC, VA4K(10) + 0x800);
  probe("load-upage", PRV_U, 0, LOAD, VA4K(4) + 40);
  probe("exec-upage", PRV_U, 0, EXEC, VA4K(10) + 0x800);
  probe("load-spage", PRV_U, 0, LOAD, VA4K(5) + 8);
  probe("store-spage", PRV_U, 0, STORE, VA4K(5) + 8);
  probe("exec-spage", PRV_U, 0, EXEC, VA4K(9));
  probe("load-misaligned-superpage", PRV_S, 0, LOAD, VA2M_BAD + 8);
  probe("load-outside-ram", PRV_S, 0, LOAD, VA4K(6) + 8);
  probe("store-outside-ram", PRV_S, 0, STORE, VA4K(6) + 8);
  // Misaligned accesses are performed, also across a page boundary; a store whose second
  // page is read-only faults without writing the first.
  probe("load-misaligned-cross", PRV_S, 0, LOAD_MISALIGNED, VA4K(1) - 3);
  probe("store-misaligned", PRV_S, 0, STORE_MISALIGNED, VA4K(0) + 0x103);
  putkv("pages0[32..33]", pages[0][32]); puthex(pages[0][33]); putc_('\n');
  probe("store-misaligned-cross-ro", PRV_S, 0, STORE_MISALIGNED, VA4K(1) - 4);
  putkv("pages0[511]", pages[0][511]); putc_('\n');
  // M-mode physical accesses outside RAM raise access faults.
  trap_reset();
  uint64_t v = 0xbadbad;
  __asm__ volatile(TRAP_ARM "ld %0, 0(%1)\n1:" : "+r"(v) : "r"(0x90000000ull) : "t5", "t6", "memory");
  puts_("M load-outside-ram "); put_trap(); putc_('\n');
  trap_reset();
  __asm__ volatile(TRAP_ARM "sw zero, 0(%0)\n1:" :: "r"(0x90000010ull) : "t5", "t6", "memory");
  puts_("M store-outside-ram "); put_trap(); putc_('\n');
  // sfence.vma.
  run_lower(PRV_S, sfence_body);
  putkv("sfence-before", sf_before); putkv("after", sf_after); putkv("page", sf_page); putc_('\n');
  mprv();
  // Delegation: a U-mode page fault with medeleg[13] set goes to stvec in S-mode.
  CSRW(stvec, (uint64_t)s_trap_entry + ALIAS_OFF);
  CSRW(medeleg, (1 << 12) | (1 << 13) | (1 << 15));
  trap_reset();
  set_identity_user(1);
  run_lower(PRV_U, deleg_body);
  set_identity_user(0);
  CSRW(medeleg, 0);
  puts_("deleg "); putkv("scause", s_trap_rec.scause); putkv("stval", s_trap_rec.stval);
  putkv("sepc-ok", s_trap_rec.sepc > (uint64_t)deleg_body && s_trap_rec.sepc < (uint64_t)deleg_body + 64);
  putkv("count", s_trap_rec.count); putkv("val", deleg_val); putkv("mcause-untouched", trap_cause == NO_TRAP);
  putkv("spp", (CSRR(sstatus) >> 8) & 1); putc_('\n');
  CSRW(satp, 0);
  puts_("DONE\n");
  return 0;
}
