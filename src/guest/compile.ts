// Cross-compiles ferry's guest programs (src/guest/programs/*.c). Static linking means the
// initramfs needs no libc and the binaries run unchanged under qemu-riscv64 for tests.
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { run } from './exec.js';
import { guestSourceDir } from './paths.js';

export const GUEST_PROGRAMS: readonly string[] = ['heartbeat', 'memwriter', 'netserver', 'gameserver'];
export const GUEST_CC = 'riscv64-linux-gnu-gcc';
/** -s: symbols are dead weight in an initramfs the emulator has to load on every boot. */
export const GUEST_CFLAGS: readonly string[] = ['-O2', '-static', '-s', '-Wall', '-Wextra', '-std=gnu11'];

export function programSource(name: string): string {
  return join(guestSourceDir(), 'programs', `${name}.c`);
}

export async function compileGuestProgram(name: string, out: string): Promise<void> {
  mkdirSync(dirname(out), { recursive: true });
  await run(GUEST_CC, [...GUEST_CFLAGS, '-o', out, programSource(name)]);
}
