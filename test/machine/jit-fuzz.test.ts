// Differential fuzzing of the JIT: random instruction streams (integer, M, loads and stores
// around a page boundary, branches, jumps, compressed parcels, faulting accesses) run as blocks
// on two harts, one interpreting and one translating every block start (threshold 1). After
// each block the whole architectural state, the data and code bytes and the dirty log must
// match. The generator is seeded, so a failure names a seed that replays it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Vcpu } from '../../src/machine/cpu/vcpu.js';
import { GuestMemory, takeMarks } from '../../src/machine/memory/guest-memory.js';
import type { JitOptions } from '../../src/machine/cpu/jit/jit.js';
import { bType, iType, jal, jalr, Prng, rType, sType, uType, WFI } from './jit-asm.js';

const BASE = 0x8000_0000;
const SLOT = 256;
const SLOTS = 64;
const HANDLER = BASE + 0x8000;
const DATA = BASE + 0x1_0000; // two pages; x31 points at the boundary between them
const RUNS_PER_BLOCK = 6;

function hart(jit: JitOptions | false): { v: Vcpu; mem: GuestMemory } {
  const v = new Vcpu({ ramBytes: 16 << 20, sbiInMachine: false, jit, host: { hostTime: () => 0, mmioRead: () => -1, mmioWrite: () => 1 } });
  v.exports.setCsr(0x305, BigInt(HANDLER));
  return { v, mem: new GuestMemory(v.memory.buffer, v.layout) };
}

const reg = (r: Prng): number => r.below(32);
const dst = (r: Prng): number => 1 + r.below(30); // x31 stays the data pointer

function randomInsn(r: Prng): number[] {
  const word = (w: number): number[] => [w & 0xffff, w >>> 16];
  const imm12 = (): number => r.below(4096) - 2048;
  const base = (): number => (r.below(5) === 0 ? reg(r) : 31);
  switch (r.below(12)) {
    case 0: case 1: {
      const f3 = r.below(8);
      const imm = f3 === 1 ? r.below(64) : f3 === 5 ? r.below(64) | (r.below(2) << 10) : imm12();
      return word(iType(0x13, dst(r), f3, reg(r), imm));
    }
    case 2: {
      const f3 = [0, 1, 5][r.below(3)]!;
      const imm = f3 === 0 ? imm12() : r.below(32) | (f3 === 5 && r.below(2) === 1 ? 0x400 : 0);
      return word(iType(0x1b, dst(r), f3, reg(r), imm));
    }
    case 3: case 4: {
      const f7 = [0, 0x20, 1][r.below(3)]!;
      const f3 = f7 === 0x20 ? [0, 5][r.below(2)]! : r.below(8);
      return word(rType(0x33, dst(r), f3, reg(r), reg(r), f7));
    }
    case 5: {
      const f7 = [0, 0x20, 1][r.below(3)]!;
      const f3 = f7 === 0 ? [0, 1, 5][r.below(3)]! : f7 === 0x20 ? [0, 5][r.below(2)]! : [0, 4, 5, 6, 7][r.below(5)]!;
      return word(rType(0x3b, dst(r), f3, reg(r), reg(r), f7));
    }
    case 6: return word(uType(r.below(2) === 0 ? 0x37 : 0x17, dst(r), r.next()));
    case 7: return word(iType(0x03, dst(r), r.below(7), base(), imm12()));
    case 8: return word(sType(r.below(4), base(), reg(r), imm12()));
    case 9: {
      const k = r.below(8);
      if (k === 0) return word(jal(dst(r), 2 + 2 * r.below(32)));
      if (k === 1) return word(jalr(dst(r), reg(r), imm12()));
      return word(bType([0, 1, 4, 5, 6, 7][r.below(6)]!, reg(r), reg(r), 2 + 2 * r.below(32)));
    }
    default: {
      // A compressed parcel: whatever the interpreter's expansion makes of it (illegal ones
      // and those the JIT leaves alone included).
      let p = r.next() & 0xffff;
      if ((p & 3) === 3) p &= ~1;
      return [p];
    }
  }
}

/** Slot i: random instructions, then WFI up to the slot's end (branches land there). */
function writeProgram(mems: GuestMemory[], r: Prng): void {
  const parcels = new Uint16Array(SLOTS * SLOT / 2);
  for (let s = 0; s < SLOTS; s++) {
    let at = s * SLOT / 2;
    const end = at + SLOT / 2;
    const n = 1 + r.below(24);
    for (let i = 0; i < n; i++) for (const p of randomInsn(r)) parcels[at++] = p;
    if (r.below(3) === 0) {
      // A loop: branch back to the slot's start (on random registers, so it may run until
      // the budget ends the slice, which the count must agree on too).
      const back = bType([0, 1, 4, 5, 6, 7][r.below(6)]!, reg(r), reg(r), -(at - s * SLOT / 2) * 2);
      parcels[at++] = back & 0xffff;
      parcels[at++] = back >>> 16;
    }
    while (at + 1 < end) { parcels[at++] = WFI & 0xffff; parcels[at++] = WFI >>> 16; }
  }
  const handler = new Uint8Array(new Uint32Array([WFI, WFI]).buffer);
  const data = new Uint8Array(0x2000);
  for (let i = 0; i < data.length; i++) data[i] = r.below(256);
  for (const m of mems) {
    m.write(BigInt(BASE), new Uint8Array(parcels.buffer));
    m.write(BigInt(HANDLER), handler);
    m.write(BigInt(DATA), data);
  }
}

const SPECIAL = [0n, 1n, 2n, 0xffff_ffff_ffff_ffffn, 0x8000_0000_0000_0000n, 0x7fff_ffff_ffff_ffffn,
  0xffff_ffff_8000_0000n, 0x8000_0000n, 0xffff_ffffn, 31n, 63n, BigInt(DATA + 0x1000), BigInt(BASE + 0x40)];

function randomRegs(r: Prng): bigint[] {
  const x = [0n];
  for (let i = 1; i < 31; i++) x.push(r.below(3) === 0 ? SPECIAL[r.below(SPECIAL.length)]! : r.below(2) === 0 ? BigInt(r.below(4096)) : r.u64());
  x.push(BigInt(DATA + 0x1000));
  return x;
}

function runBlock(h: { v: Vcpu; mem: GuestMemory }, pc: number, x: bigint[]) {
  takeMarks(h.mem.dirtyLog);
  h.v.exports.tlbDropWrites();
  for (let i = 1; i < 32; i++) h.v.setX(i, x[i]!);
  h.v.pc = BigInt(pc);
  h.v.exports.setPriv(3);
  const exit = h.v.run(2000);
  const window = (a: number, n: number): number[] => Array.from(h.mem.bytes.subarray(a - BASE, a - BASE + n));
  return {
    exit,
    state: h.v.save(),
    instret: h.v.instret,
    dirty: Array.from(takeMarks(h.mem.dirtyLog).subarray(0, 32)),
    data: window(DATA, 0x2000),
    code: window(BASE, SLOTS * SLOT),
  };
}

// Seeds 1 and 2 compile each block as it turns hot; 3 and 4 in batches, where blocks of one
// page continue into each other without returning to the interpreter.
for (const seed of [1, 2, 3, 4]) {
  test(`fuzz: random blocks agree between interpreter and JIT (seed ${seed})`, () => {
    const r = new Prng(seed);
    const interp = hart(false), jit = hart({ threshold: 1, batchWaitMs: seed <= 2 ? 0 : 60_000 });
    writeProgram([interp.mem, jit.mem], r);
    for (let s = 0; s < SLOTS; s++) {
      for (let k = 0; k < RUNS_PER_BLOCK; k++) {
        const x = randomRegs(r);
        const a = runBlock(interp, BASE + s * SLOT, x);
        const b = runBlock(jit, BASE + s * SLOT, x);
        // The batched seeds compile a slot's blocks together, after its first run.
        if (k === 0 && seed > 2) jit.v.jitCompilePending();
        assert.deepEqual(b, a, `seed ${seed}, slot ${s}, run ${k}`);
      }
    }
    // The first runs of a block interpret it (it turns hot, then waits for its batch).
    const ran = jit.v.jitStats().instructions;
    assert.ok(ran * 3n > jit.v.instret, `the JIT ran only ${ran} of ${jit.v.instret} instructions`);
    assert.equal(interp.v.jitStats().instructions, 0n);
  });
}
