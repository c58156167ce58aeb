// Tiny runtime for bare-metal test programs (bare.c, crt.S): UART output, hex printing,
// the finisher, expected-trap recording and running code at a lower privilege.
#ifndef FERRY_BARE_H
#define FERRY_BARE_H
#include <stdint.h>

#define UART0 ((volatile uint8_t *)0x10000000)
#define FINISHER ((volatile uint32_t *)0x100000)

static inline void putc_(char c) {
  while ((UART0[5] & 0x20) == 0) { }
  UART0[0] = (uint8_t)c;
}
static inline void puts_(const char *s) { while (*s) putc_(*s++); }
static inline void puthex(uint64_t v) {
  for (int i = 60; i >= 0; i -= 4) putc_("0123456789abcdef"[(v >> i) & 15]);
}
static inline void putdec(uint64_t v) {
  char b[24]; int n = 0;
  do { b[n++] = (char)('0' + v % 10); v /= 10; } while (v);
  while (n) putc_(b[--n]);
}
/** Prints "label=<hex>" followed by a space. */
static inline void putkv(const char *label, uint64_t v) { puts_(label); putc_('='); puthex(v); putc_(' '); }

#define CSRR(name) ({ uint64_t v_; __asm__ volatile("csrr %0, " #name : "=r"(v_)); v_; })
#define CSRW(name, v) __asm__ volatile("csrw " #name ", %0" :: "r"((uint64_t)(v)) : "memory")
#define CSRS(name, v) __asm__ volatile("csrs " #name ", %0" :: "r"((uint64_t)(v)) : "memory")
#define CSRC(name, v) __asm__ volatile("csrc " #name ", %0" :: "r"((uint64_t)(v)) : "memory")
static inline uint64_t csr_mcause(void) { return CSRR(mcause); }

/** FNV-1a over the 8 bytes of v. */
static inline uint64_t fnv(uint64_t h, uint64_t v) {
  for (int i = 0; i < 8; i++) { h ^= (v >> (8 * i)) & 0xff; h *= 0x100000001b3ull; }
  return h;
}
#define FNV_INIT 0xcbf29ce484222325ull

/** Reports main()'s status: 0 powers off, anything else exits with that code. */
void finish(int code) __attribute__((noreturn));

// ---- expected traps ---------------------------------------------------------------------
// Code that expects a trap stores a resume address in trap_resume (TRAP_ARM below) before
// the faulting instruction; the default handler records cause, tval, epc and privilege and
// continues there, at the privilege the trap came from. trap_cause is NO_TRAP otherwise.
#define NO_TRAP 0xdeadull
extern volatile uint64_t trap_resume, trap_cause, trap_tval, trap_epc, trap_mpp, trap_count;
/** Inline-asm prefix: resume at local label "1:" if the next instructions trap.
 * Clobbers t5, t6. */
#define TRAP_ARM "la t6, 1f\n\tsd t6, trap_resume, t5\n\t"
/** Optional suffix instead of a bare "1:": disarms the resume address if nothing trapped. */
#define TRAP_END "\n1:\tsd zero, trap_resume, t5\n\t"
static inline void trap_reset(void) { trap_cause = NO_TRAP; trap_tval = NO_TRAP; trap_epc = NO_TRAP; trap_resume = 0; }
/** Prints "cause=.. tval=.." of the last expected trap (or cause=dead when none). */
static inline void put_trap(void) { putkv("cause", trap_cause); putkv("tval", trap_tval); }

/** The default M-mode trap handler (weak: programs may supply their own). */
uint64_t trap_handler(uint64_t *frame);
/** Handles the run_lower return ecall and expected traps; returns 1 if it did. */
int bare_trap_common(uint64_t *frame);

// ---- lower privilege --------------------------------------------------------------------
#define PRV_U 0
#define PRV_S 1
/** Calls fn at privilege mode (PRV_U / PRV_S) and returns in M-mode. */
void run_lower(uint64_t mode, void (*fn)(void));
/** S-mode delegated-trap record, filled by s_trap_entry (crt.S). */
struct s_trap_rec { uint64_t t1, scause, stval, sepc, resume, count; };
extern volatile struct s_trap_rec s_trap_rec;
void s_trap_entry(void);
#endif
