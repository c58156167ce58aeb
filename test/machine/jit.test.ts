// The JIT's invalidation: code rewritten by a guest store (with fence.i) or by DMA runs as
// rewritten, a store elsewhere in a code page leaves its translations alone, and save() carries
// none of it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Vcpu } from '../../src/machine/cpu/vcpu.js';
import { ExitReason } from '../../src/machine/cpu/exports.js';
import { GuestMemory } from '../../src/machine/memory/guest-memory.js';
import { DEFAULT_JIT_THRESHOLD, jitFromEnv, type JitOptions } from '../../src/machine/cpu/jit/jit.js';
import { addi, bType, FENCE_I, jal, jalr, sType, WFI } from './jit-asm.js';

const BASE = 0x8000_0000;
const MAIN = BASE;
const FUNC = BASE + 0x1000;
const PATCH = BASE + 0x2000;
const RA = 1, T0 = 5, T1 = 6, T2 = 7, A0 = 10;

function hart(jit: JitOptions = { threshold: 1, batchWaitMs: 0 }): { v: Vcpu; mem: GuestMemory } {
  const v = new Vcpu({ ramBytes: 16 << 20, sbiInMachine: false, jit, host: { hostTime: () => 0, mmioRead: () => -1, mmioWrite: () => 1 } });
  const mem = new GuestMemory(v.memory.buffer, v.layout);
  const put = (at: number, words: number[]): void => mem.write(BigInt(at), new Uint8Array(new Uint32Array(words).buffer));
  // main: call FUNC 100 times, then WFI.
  put(MAIN, [addi(T0, 0, 100), jal(RA, FUNC - (MAIN + 4)), addi(T0, T0, -1), bType(1, T0, 0, -8), WFI]);
  // FUNC: a0 += 1; return.
  put(FUNC, [addi(A0, A0, 1), jalr(0, RA, 0)]);
  // PATCH: *(u32 *)t2 = t1; fence.i; WFI.
  put(PATCH, [sType(2, T2, T1, 0), FENCE_I, WFI]);
  return { v, mem };
}

function call(v: Vcpu, at: number, regs: Record<number, bigint> = {}): void {
  for (const [r, x] of Object.entries(regs)) v.setX(Number(r), x);
  v.pc = BigInt(at);
  assert.equal(v.run(100_000), ExitReason.Wfi);
}

function runMain(v: Vcpu): bigint {
  call(v, MAIN, { [A0]: 0n });
  return v.getX(A0);
}

test('a function rewritten by a guest store and fence.i runs its new code', () => {
  const { v } = hart();
  assert.equal(runMain(v), 100n);
  assert.equal(runMain(v), 100n);
  const before = v.jitStats().instructions;
  assert.ok(before > 0n, 'the loop ran translated');
  call(v, PATCH, { [T1]: BigInt(addi(A0, A0, 3)), [T2]: BigInt(FUNC) });
  assert.equal(runMain(v), 300n);
  assert.equal(runMain(v), 300n);
  assert.ok(v.jitStats().instructions > before, 'the rewritten function ran translated too');
});

test('blocks compiled in the background run once they land; until then the interpreter runs them', async () => {
  const { v } = hart({ threshold: 1 });
  assert.equal(runMain(v), 100n);
  assert.equal(v.jitStats().instructions, 0n, 'nothing is installed before the event loop turns');
  await v.jitSettle();
  assert.ok(v.jitStats().modules > 0);
  assert.equal(runMain(v), 100n);
  assert.ok(v.jitStats().instructions > 0n, 'the loop ran translated');
});

test('a block whose code is rewritten while its batch compiles in the background is not installed', async () => {
  const { v, mem } = hart({ threshold: 1 });
  assert.equal(runMain(v), 100n);
  // The batch is handed to the compiler at once; the rewrite lands before it does.
  const landed = v.jitSettle();
  mem.writeU32(BigInt(FUNC), addi(A0, A0, 5));
  await landed;
  assert.equal(runMain(v), 500n);
  await v.jitSettle();
  assert.equal(runMain(v), 500n);
  assert.ok(v.jitStats().instructions > 0n);
});

test('a function rewritten by DMA (GuestMemory) runs its new code', () => {
  const { v, mem } = hart();
  assert.equal(runMain(v), 100n);
  assert.equal(runMain(v), 100n);
  mem.writeU32(BigInt(FUNC), addi(A0, A0, 5));
  assert.equal(runMain(v), 500n);
});

test('a store to another line of a code page keeps its translations; one to the code retires them', () => {
  const { v } = hart();
  runMain(v);
  runMain(v);
  // A data word 2 KiB into FUNC's page: a different 128-byte line from the code.
  call(v, PATCH, { [T1]: 0x1234n, [T2]: BigInt(FUNC + 0x800) });
  const compiled = v.jitStats().blocks;
  assert.equal(runMain(v), 100n);
  assert.equal(v.jitStats().blocks, compiled, 'nothing was translated again');
  // The same value over FUNC's first instruction: the bytes are unchanged but the line was
  // written, so its block is translated again.
  call(v, PATCH, { [T1]: BigInt(addi(A0, A0, 1)), [T2]: BigInt(FUNC) });
  assert.equal(runMain(v), 100n);
  assert.ok(v.jitStats().blocks > compiled, 'FUNC was translated again');
});

test('save() carries no translation state: a restored hart, translating or not, runs on alike', () => {
  const a = hart();
  runMain(a.v);
  runMain(a.v);
  const state = a.v.save();
  assert.ok(!JSON.stringify(state).toLowerCase().includes('jit'));
  const b = hart(), c = hart();
  b.v.exports.jitSetThreshold(0);
  b.v.restore(state);
  c.v.restore(state);
  assert.equal(runMain(b.v), 100n);
  assert.equal(runMain(c.v), 100n);
  assert.equal(runMain(c.v), 100n);
  assert.deepEqual(c.v.save(), { ...b.v.save(), csr: { ...b.v.save().csr, minstret: c.v.save().csr.minstret } });
  assert.equal(b.v.jitStats().instructions, 0n);
  assert.ok(c.v.jitStats().instructions > 0n);
});

test('straight-line code past the block length limit is translated with the block it follows, and rewriting it retires it', () => {
  const LONG = BASE + 0x3000, CALLER = BASE + 0x4000, N = 200;
  const { v, mem } = hart({ threshold: 2, batchWaitMs: 0 });
  mem.write(BigInt(LONG), new Uint8Array(new Uint32Array([...Array<number>(N).fill(addi(A0, A0, 1)), jalr(0, RA, 0)]).buffer));
  mem.write(BigInt(CALLER), new Uint8Array(new Uint32Array([jal(RA, LONG - CALLER), WFI]).buffer));
  const once = (): bigint => { call(v, CALLER, { [A0]: 0n }); return v.getX(A0); };
  assert.equal(once(), BigInt(N));
  const before = v.jitStats().instructions;
  // The second call makes LONG's first block hot; the blocks after it come with it rather than
  // each waiting for its own count.
  assert.equal(once(), BigInt(N));
  assert.ok(v.jitStats().instructions - before >= BigInt(N), `only ${v.jitStats().instructions - before} instructions ran translated`);
  // A line of the fourth block, masked by the host when it queued that block.
  mem.writeU32(BigInt(LONG + 4 * 150), addi(A0, A0, 5));
  assert.equal(once(), BigInt(N + 4));
  assert.equal(once(), BigInt(N + 4));
});

test('FERRY_JIT: interprets unless it says on or gives a threshold, and refuses anything else', () => {
  assert.equal(jitFromEnv({}), undefined);
  for (const off of ['', '0', 'off']) assert.equal(jitFromEnv({ FERRY_JIT: off }), undefined, off);
  assert.deepEqual(jitFromEnv({ FERRY_JIT: 'on' }), { threshold: DEFAULT_JIT_THRESHOLD });
  assert.deepEqual(jitFromEnv({ FERRY_JIT: '8192' }), { threshold: 8192 });
  for (const bad of ['yes', '-1', '1.5', 'ON']) assert.throws(() => jitFromEnv({ FERRY_JIT: bad }), /FERRY_JIT must be on, off, 0 or a positive threshold/, bad);
});
