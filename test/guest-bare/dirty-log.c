// Guest side of test/machine/dirty-log.test.ts (ferry only). After "ready" the program
// serves commands from a mailbox page the host writes between slices, without touching any
// other RAM: an inline-asm loop with no stack use, so the dirty log shows exactly the pages
// a command stores to. Completion is signalled through the UART ('!'), not through RAM.
//
// Mailbox (physical MBOX): +0 seq (a new value starts a command), +8 op (0 = store through
// physical addresses, 1 = store through the Sv39 alias using MPRV with MPP = S, 2 = load),
// +16 base address, +24 count, +32 stride.
#include "bare.h"

#define MBOX 0x80700000ull
#define PTE_V 1ull
#define PTE_R 2ull
#define PTE_W 4ull
#define PTE_A 64ull
#define PTE_D 128ull

static uint64_t pt_root[512] __attribute__((aligned(4096)));
static uint64_t pt_l1[512] __attribute__((aligned(4096)));
static uint64_t pt_l0[512] __attribute__((aligned(4096)));

int main(void) {
  // Alias: VA 0x4000_0000 + i * 4K -> PA 0x8080_0000 + ((i * 5) % 16) * 4K, A and D preset
  // so the walk itself never writes.
  pt_root[1] = ((uint64_t)pt_l1 >> 12 << 10) | PTE_V;
  pt_l1[0] = ((uint64_t)pt_l0 >> 12 << 10) | PTE_V;
  for (int i = 0; i < 16; i++)
    pt_l0[i] = ((0x80800000ull + (uint64_t)((i * 5) % 16) * 4096) >> 12 << 10) | PTE_V | PTE_R | PTE_W | PTE_A | PTE_D;
  CSRW(satp, (8ull << 60) | ((uint64_t)pt_root >> 12));
  __asm__ volatile("sfence.vma" ::: "memory");
  CSRC(mstatus, 3ull << 11);
  CSRS(mstatus, 1ull << 11); // MPP = S for the MPRV stores
  puts_("ready\n");
  __asm__ volatile(
    "  li s0, %0\n"
    "  li s1, 0\n"
    "  li s2, 0x10000000\n"
    "  li s3, 1 << 17\n"
    "wait:\n"
    "  ld t0, 0(s0)\n"
    "  beq t0, s1, wait\n"
    "  mv s1, t0\n"
    "  ld t1, 8(s0)\n"
    "  ld t2, 16(s0)\n"
    "  ld t3, 24(s0)\n"
    "  ld t4, 32(s0)\n"
    "  li t5, 1\n"
    "  bne t1, t5, 1f\n"
    "  csrs mstatus, s3\n"
    "1:li t5, 2\n"
    "  beqz t3, 4f\n"
    "2:beq t1, t5, 3f\n"
    "  sd s1, 0(t2)\n"
    "  j 5f\n"
    "3:ld t6, 0(t2)\n"
    "5:add t2, t2, t4\n"
    "  addi t3, t3, -1\n"
    "  bnez t3, 2b\n"
    "4:csrc mstatus, s3\n"
    "6:lbu t6, 5(s2)\n"
    "  andi t6, t6, 0x20\n"
    "  beqz t6, 6b\n"
    "  li t6, '!'\n"
    "  sb t6, 0(s2)\n"
    "  j wait\n"
    :: "i"(MBOX) : "memory");
  return 0;
}
