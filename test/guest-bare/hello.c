#include "bare.h"
void finish(int code) {
  *FINISHER = code == 0 ? 0x5555 : (((uint32_t)code << 16) | 0x3333);
  for (;;) { }
}
uint64_t trap_handler(uint64_t *frame) { (void)frame; puts_("trap "); puthex(csr_mcause()); puts_("\n"); finish(99); }
int main(void) {
  puts_("hello from bare metal\n");
  uint64_t a = 12345678901ull, b = 987654321ull;
  puthex(a * b); puts_(" "); putdec(a / b); puts_(" "); putdec(a % b); puts_("\n");
  return 0;
}
