// The translator's side in the interpreter: the block cache, hotness counting, and the slow
// paths translated code calls. Translation itself happens in TypeScript (src/machine/cpu/jit),
// which puts each block's function into the shared function table at its entry's slot.
//
// An entry is keyed by the block's virtual pc and the host address its first instruction was
// fetched from (through the fetch TLB, so privilege, satp and sfence.vma are already
// accounted for), and carries the code generation of that physical page when it was read.
// A store to a flagged page bumps the generation (mmu.ts markDirty, GuestMemory for DMA),
// which retires every block read from it.

import * as S from './state';
import { JIT_CACHE, JIT_COUNTS, JIT_LENS, JIT_ENTRIES, JIT_CELLS, CODE_MAP, RAM_HOST } from './layout';
import { loadSlow, storeSlow, flushTlbWrites, refillFetch } from './mmu';

/** Translates the block at pc (host address `host`) for table slot `slot`. Returns its most
 * instructions | its length in bytes << 8, | PENDING when the host installs it later (it
 * then fills in the length itself), or 0 when its first instruction is not translated. */
@external("env", "jitCompile") declare function jitCompile(pc: u64, host: u32, slot: u32): i32;

/** Table index of entry 0's function; the interpreter itself puts nothing in the table. */
export const JIT_SLOT_BASE: u32 = 64;
const PENDING: i32 = 1 << 30;
export const TOO_LONG: i32 = -2;

// A cache entry (16 bytes): pc u64, host u32, generation u32; its length (i32) is in JIT_LENS
// (-1 = nothing to translate at this pc). The cache is direct-mapped; a block start that
// misses counts in JIT_COUNTS (by the same hash, aliasing allowed) and replaces the entry
// only once it is hot, so code that runs once never pushes out code that runs often.
const E_HOST: i32 = 8;
const E_GEN: i32 = 12;

/** Where a block leaves its next pc (unless it trapped), and the slow paths their status:
 * 0 = go on, 1 = trapped (pc is set), 2 = completed, but the block must end after it. */
export const CELL_PC: usize = JIT_CELLS;
export const CELL_STATUS: usize = JIT_CELLS + 8;

export let jitRetired: u64 = 0;
export let jitCompiled: u32 = 0;
/** Translations replaced because their page was written, or by another hot block. */
export let jitStale: u32 = 0;
export let jitEvicted: u32 = 0;

export function jitFlush(): void {
  memory.fill(JIT_CACHE, 0, <usize>JIT_ENTRIES << 4);
  memory.fill(JIT_COUNTS, 0, <usize>JIT_ENTRIES << 1);
}

/** Runs the translated block at pc when there is one that fits in `allow` instructions.
 * Returns the instructions it counted (as the interpreter counts: a trapping one too), -1
 * when the interpreter must step, or TOO_LONG when there is a block but it does not fit. */
export function jitTry(allow: i32): i32 {
  const pc = S.pc;
  const vpn = pc >> 12;
  if (vpn != S.fetchVpn && !refillFetch(pc)) {
    // The fetch faulted (pc is at the handler) or found its page missing: counted as the
    // interpreter's step counts it.
    S.trapped = false;
    S.blockStart = true;
    return 1;
  }
  const host = <u32>(pc + S.fetchAddend);
  const page = <usize>((host - <u32>RAM_HOST) >> 12);
  const idx = <usize>(<u32>((pc >> 1) ^ (pc >> 17)) & (JIT_ENTRIES - 1));
  const ent = JIT_CACHE + (idx << 4);
  const gen = load<u32>(CODE_MAP + (page << 3));
  let len: i32;
  if (load<u64>(ent) == pc && load<u32>(ent, E_HOST) == host && load<u32>(ent, E_GEN) == gen) {
    len = load<i32>(JIT_LENS + (idx << 2));
  } else {
    const cnt = JIT_COUNTS + (idx << 1);
    const c = <u32>load<u16>(cnt) + 1;
    if (c < S.jitThreshold) { store<u16>(cnt, <u16>c); return -1; }
    store<u16>(cnt, 0);
    if (load<i32>(JIT_LENS + (idx << 2)) > 0) {
      if (load<u64>(ent) == pc && load<u32>(ent, E_HOST) == host) jitStale++; else jitEvicted++;
    }
    len = compile(ent, idx, pc, host, page, gen);
  }
  if (len <= 0) return -1;
  if (len > allow) return TOO_LONG;
  const n = call_indirect<i32>(JIT_SLOT_BASE + <u32>idx, <u32>S.dataTlb, allow, 0);
  if (S.trapped) S.trapped = false;
  else S.pc = load<u64>(CELL_PC);
  S.blockStart = true;
  jitRetired += <u64>n;
  return n;
}

function compile(ent: usize, idx: usize, pc: u64, host: u32, page: usize, gen: u32): i32 {
  const m = CODE_MAP + (page << 3);
  // Before the host runs: it may mask lines of this page itself (blocks it queues after this one).
  const was = load<u32>(m, 4);
  const r = jitCompile(pc, host, JIT_SLOT_BASE + <u32>idx);
  // A pending block matches its entry with length 0 (run by the interpreter) until installed.
  const len = r <= 0 ? -1 : (r & PENDING) != 0 ? 0 : r & 0xff;
  store<u64>(ent, pc);
  store<u32>(ent, host, E_HOST);
  store<u32>(ent, gen, E_GEN);
  store<i32>(JIT_LENS + (idx << 2), len);
  if (r <= 0) return len;
  jitCompiled++;
  // Mask the lines the block was read from; stores to them now retire it (mmu.ts markDirty).
  const first = (host & 0xfff) >> 7;
  const last = ((host & 0xfff) + ((<u32>r >> 8) & 0x3fff) - 1) >> 7;
  const bits = (((<u32>2 << last) - 1) >> first) << first;
  store<u32>(m, load<u32>(m, 4) | bits, 4);
  // The page's write TLB entries would bypass markDirty: a page entering the mask drops them.
  if (was == 0) flushTlbWrites();
  return len;
}

/** A translated load that missed the TLB fast path: the interpreter's slow path, with pc set
 * so a trap is precise. Returns the value zero-extended. */
export function jitLoad(va: u64, pc: u64, size: u32): u64 {
  S.pc = pc;
  S.codeWritten = false;
  const v = loadSlow(va, size);
  store<u32>(CELL_STATUS, S.trapped ? 1 : S.breakChunk || S.codeWritten ? 2 : 0);
  return v;
}

export function jitStore(va: u64, v: u64, pc: u64, size: u32): void {
  S.pc = pc;
  S.codeWritten = false;
  storeSlow(va, v, size);
  store<u32>(CELL_STATUS, S.trapped ? 1 : S.breakChunk || S.codeWritten ? 2 : 0);
}
