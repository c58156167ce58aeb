#include "bare.h"
int main(void) {
  puts_("hello from bare metal\n");
  uint64_t a = 12345678901ull, b = 987654321ull;
  puthex(a * b); puts_(" "); putdec(a / b); puts_(" "); putdec(a % b); puts_("\n");
  return 0;
}
