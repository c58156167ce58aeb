// A long mixed integer/FP computation that prints its progress: the vCPU save/restore test
// snapshots it mid-run and checks a restored copy prints exactly what the original does.
#include "bare.h"

int main(void) {
  double acc = 1.0;
  float accf = 0.5f;
  uint64_t h = FNV_INIT;
  uint64_t *buf = (uint64_t *)0x80400000;
  CSRW(frm, 3); // round up: the dynamic rounding mode is part of the saved state
  for (uint64_t i = 1; i <= 4000; i++) {
    acc = acc * 1.0000001 + (double)i / 7.0;
    accf = accf / 1.5f + (float)i;
    buf[i & 1023] ^= h;
    h = fnv(h, (uint64_t)acc ^ ((uint64_t)accf << 20) ^ buf[(i * 7) & 1023]);
    if (i % 500 == 0) { putdec(i); putc_(' '); puthex(h); putc_(' '); puthex(CSRR(fflags)); putc_('\n'); }
  }
  puts_("DONE\n");
  return 0;
}
