// The boot spec for ferry's guest image: its kernel and initramfs read from the image cache,
// with the default command line unless told otherwise.

import { readFileSync } from 'node:fs';
import type { BootSpec } from '../machine/boot/machine.js';
import type { GuestImage } from './image.js';
import { GUEST_CMDLINE } from './cmdline.js';

export function guestBoot(image: Pick<GuestImage, 'kernel' | 'initramfs'>, cmdline: string = GUEST_CMDLINE): BootSpec {
  return { kind: 'linux', kernel: readFileSync(image.kernel), initrd: readFileSync(image.initramfs), cmdline };
}
