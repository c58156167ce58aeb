// Minimal ELF64 loader for bare-metal test programs: copies PT_LOAD segments to their
// physical addresses and returns the entry point.

import { GuestMemory } from '../memory/guest-memory.js';
import { FerryError } from '../../errors.js';

const PT_LOAD = 1;
const EM_RISCV = 243;

export class ElfError extends FerryError {
  constructor(message: string) { super('ELF_INVALID', message); }
}

export function loadElf(image: Uint8Array, memory: GuestMemory): bigint {
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (image.length < 64 || dv.getUint32(0, false) !== 0x7f454c46) throw new ElfError('not an ELF file');
  if (image[4] !== 2 || image[5] !== 1) throw new ElfError('not a little-endian ELF64 file');
  if (dv.getUint16(18, true) !== EM_RISCV) throw new ElfError('not a RISC-V ELF file');
  const entry = dv.getBigUint64(24, true);
  const phoff = Number(dv.getBigUint64(32, true));
  const phentsize = dv.getUint16(54, true);
  const phnum = dv.getUint16(56, true);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > image.length) throw new ElfError('program header outside the file');
    if (dv.getUint32(ph, true) !== PT_LOAD) continue;
    const offset = Number(dv.getBigUint64(ph + 8, true));
    const paddr = dv.getBigUint64(ph + 24, true);
    const filesz = Number(dv.getBigUint64(ph + 32, true));
    const memsz = Number(dv.getBigUint64(ph + 40, true));
    if (offset + filesz > image.length) throw new ElfError('segment outside the file');
    if (!memory.contains(paddr, memsz)) throw new ElfError(`segment at 0x${paddr.toString(16)} is outside RAM`);
    memory.write(paddr, image.subarray(offset, offset + filesz));
    if (memsz > filesz) memory.fill(paddr + BigInt(filesz), memsz - filesz, 0);
  }
  return entry;
}
