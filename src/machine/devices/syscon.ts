// The "sifive,test0" finisher at 0x100000: one write-only register whose low 16 bits select
// an action. Linux reaches it through syscon-poweroff / syscon-reboot (regmap writes of
// 0x5555 / 0x7777); bare-metal tests use the fail encoding to report an exit code.

import type { AccessSize, MmioDevice } from './types.js';

export const SYSCON_SIZE = 0x1000;
const FINISHER_FAIL = 0x3333;
const FINISHER_PASS = 0x5555;
const FINISHER_RESET = 0x7777;

export type SysconEvent =
  | { readonly kind: 'poweroff' }
  | { readonly kind: 'reboot' }
  | { readonly kind: 'fail'; readonly code: number };

/** The device holds no state; the type exists so every device snapshots uniformly. */
export type SysconState = Record<string, never>;

export class Syscon implements MmioDevice {
  readonly name = 'syscon';

  constructor(private readonly onEvent: (event: SysconEvent) => void) {}

  read(_offset: number, _size: AccessSize): number {
    return 0;
  }

  write(offset: number, size: AccessSize, value: number): void {
    // Only a full 32-bit store carries the code in bits 31:16; narrower stores still act.
    if (offset !== 0) return;
    const v = size === 4 ? value >>> 0 : value & (size === 2 ? 0xffff : 0xff);
    switch (v & 0xffff) {
      case FINISHER_PASS: this.onEvent({ kind: 'poweroff' }); break;
      case FINISHER_RESET: this.onEvent({ kind: 'reboot' }); break;
      case FINISHER_FAIL: this.onEvent({ kind: 'fail', code: v >>> 16 }); break;
      default: break; // unknown commands are ignored, as on QEMU
    }
  }

  save(): SysconState {
    return {};
  }

  restore(_state: SysconState): void {}
}
