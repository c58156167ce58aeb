// Shared runtime for the bare-metal test programs: the finisher and the default trap
// handler (expected-trap recording, return from run_lower).
#include "bare.h"

volatile uint64_t trap_resume, trap_cause = NO_TRAP, trap_tval, trap_epc, trap_mpp, trap_count;
extern char lower_return[];

void finish(int code) {
  *FINISHER = code == 0 ? 0x5555 : (((uint32_t)code << 16) | 0x3333);
  for (;;) { }
}

int bare_trap_common(uint64_t *frame) {
  uint64_t cause = CSRR(mcause);
  uint64_t mpp = (CSRR(mstatus) >> 11) & 3;
  // The return ecall of run_lower comes first: an armed trap_resume that did not fire must
  // not swallow it.
  if ((cause == 8 || cause == 9) && frame[11] == 0x5eed) {
    CSRW(mepc, (uint64_t)lower_return);
    CSRS(mstatus, 3ull << 11);
    return 1;
  }
  if (trap_resume != 0) {
    trap_cause = cause;
    trap_tval = CSRR(mtval);
    trap_epc = CSRR(mepc);
    trap_mpp = mpp;
    trap_count++;
    CSRW(mepc, trap_resume);
    trap_resume = 0;
    return 1;
  }
  return 0;
}

__attribute__((weak)) uint64_t trap_handler(uint64_t *frame) {
  if (bare_trap_common(frame)) return 0;
  puts_("unexpected trap ");
  putkv("mcause", CSRR(mcause));
  putkv("mepc", CSRR(mepc));
  putkv("mtval", CSRR(mtval));
  puts_("\n");
  finish(99);
}
