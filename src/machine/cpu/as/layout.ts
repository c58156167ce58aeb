// Fixed layout of the shared WebAssembly.Memory. The TypeScript side learns these
// offsets from the exported `layout*` getters, so this file is the single source of truth.
//
//   0x0000_0000  AssemblyScript static data (memoryBase 64 KiB)
//   0x0010_0000  vCPU registers: x[32], f[32] (8 bytes each)
//   0x0011_0000  TLBs: 4 MMU contexts x {read, write, exec} x TLB_ENTRIES x 16 bytes
//   0x0020_0000  dirty log: one byte per guest page (1 = written since last clear)
//   0x0030_0000  access log: one byte per guest page (1 = touched since last clear)
//   0x0040_0000  RVC expansion table: u32 per 16-bit parcel (256 KiB)
//   0x0050_0000  absent map: one byte per guest page (0 = in RAM; else the host must fetch it)
//   0x0060_0000  JIT exit cells: next pc (u64), status (u32)
//   0x0061_0000  JIT hotness counters: u16 per hash of a block start (JIT_ENTRIES)
//   0x0064_0000  JIT block cache: JIT_ENTRIES x 16 bytes, then their lengths (i32 each)
//   0x0080_0000  code map: per guest page a generation (u32) and a mask of 128-byte lines
//                translated code was read from (u32); a store to a masked line bumps the
//                generation, which retires every translation read from the page
//   0x0100_0000  guest RAM, guest-physical RAM_BASE onwards
// Byte-per-page logs (not bits) let the vCPU and device threads mark pages with plain
// stores: no read-modify-write race on a shared word.

export const XREGS: usize = 0x10_0000;
export const FREGS: usize = 0x10_0100;
export const TLB_BASE: usize = 0x11_0000;
export const TLB_BITS: u32 = 10;
export const TLB_ENTRIES: u32 = 1 << TLB_BITS;
export const TLB_MASK: u32 = TLB_ENTRIES - 1;
export const TLB_BYTES: usize = <usize>TLB_ENTRIES << 4;
export const TLB_CTX_BYTES: usize = TLB_BYTES * 3;
export const TLB_CONTEXTS: u32 = 4;
export const DIRTY_LOG: usize = 0x20_0000;
export const ACCESS_LOG: usize = 0x30_0000;
export const RVC_TABLE: usize = 0x40_0000;
export const ABSENT_MAP: usize = 0x50_0000;
export const JIT_CELLS: usize = 0x60_0000;
export const JIT_COUNTS: usize = 0x61_0000;
export const JIT_CACHE: usize = 0x64_0000;
export const JIT_BITS: u32 = 16;
export const JIT_ENTRIES: u32 = 1 << JIT_BITS;
export const JIT_LENS: usize = JIT_CACHE + (<usize>JIT_ENTRIES << 4);
export const CODE_MAP: usize = 0x80_0000;
export const RAM_HOST: usize = 0x100_0000;
export const RAM_BASE: u64 = 0x8000_0000;
export const PAGE_SHIFT: u32 = 12;

@inline export function getX(r: u32): u64 {
  return load<u64>(XREGS + (<usize>r << 3));
}
@inline export function setX(r: u32, v: u64): void {
  // x0 is hard-wired to zero; writing it is a no-op, so callers need not test rd.
  if (r != 0) store<u64>(XREGS + (<usize>r << 3), v);
}
@inline export function getF(r: u32): u64 {
  return load<u64>(FREGS + (<usize>r << 3));
}
@inline export function setF(r: u32, v: u64): void {
  store<u64>(FREGS + (<usize>r << 3), v);
}
