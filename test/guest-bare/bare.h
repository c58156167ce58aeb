// Tiny runtime for bare-metal test programs: UART output, hex printing, the finisher.
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
static inline uint64_t csr_mcause(void) { uint64_t v; __asm__ volatile("csrr %0, mcause" : "=r"(v)); return v; }

/** Reports main()'s status: 0 powers off, anything else exits with that code. */
void finish(int code) __attribute__((noreturn));
#endif
