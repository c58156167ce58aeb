// Placing a Linux kernel, its initramfs and the device tree in guest RAM, as a RISC-V boot
// loader would (Documentation/arch/riscv/boot.rst): Image at a 2 MiB-aligned address
// (text_offset from its header), DTB and initrd high in RAM, out of the kernel's way.

import { GuestMemory } from '../memory/guest-memory.js';
import { FerryError } from '../../errors.js';

const IMAGE_MAGIC2 = 0x05435352; // "RSC\x05" at offset 0x38

export class BootError extends FerryError {
  constructor(message: string) { super('BOOT_INVALID', message); }
}

export interface BootLayout {
  kernelEntry: bigint;
  kernelEnd: bigint;
  dtbAddr: bigint;
  initrd?: { start: bigint; end: bigint };
}

/** Checks the RISC-V Image header and returns its text offset and image size. */
export function parseImageHeader(image: Uint8Array): { textOffset: bigint; imageSize: bigint } {
  if (image.length < 64) throw new BootError('kernel image is too small');
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (dv.getUint32(0x38, true) !== IMAGE_MAGIC2) throw new BootError('kernel is not a RISC-V Image (no RSC\\x05 magic)');
  const textOffset = dv.getBigUint64(0x08, true);
  const imageSize = dv.getBigUint64(0x10, true);
  return { textOffset, imageSize: imageSize > 0n ? imageSize : BigInt(image.length) };
}

/** Plans where kernel, initrd and DTB go; throws if RAM is too small. */
export function planLinuxBoot(memory: GuestMemory, kernel: Uint8Array, initrdSize: number, dtbMax: number): BootLayout {
  const { textOffset, imageSize } = parseImageHeader(kernel);
  const entry = memory.ramBase + (textOffset === 0n ? 0x20_0000n : textOffset);
  const kernelEnd = entry + imageSize;
  const ramEnd = memory.ramBase + BigInt(memory.ramSize);
  const dtbAddr = (ramEnd - BigInt(dtbMax)) & ~0xfffn;
  let initrd: BootLayout['initrd'];
  if (initrdSize > 0) {
    const start = (dtbAddr - BigInt(initrdSize)) & ~0xfffn;
    initrd = { start, end: start + BigInt(initrdSize) };
  }
  const lowest = initrd ? initrd.start : dtbAddr;
  // Leave the kernel room for its BSS and early page tables beyond the file image.
  if (lowest < kernelEnd + 0x100_0000n) {
    throw new BootError(`RAM of ${memory.ramSize >> 20} MiB is too small for this kernel and initramfs`);
  }
  return { kernelEntry: entry, kernelEnd, dtbAddr, ...(initrd ? { initrd } : {}) };
}
