// Absent pages at the machine level: the interpreter stops on an access to a page whose absent
// byte is set (data load, store, AMO, instruction fetch, a store or fetch straddling into such a
// page), before any side effect; Machine.run has the pager bring it in and runs the instruction
// again, exactly once. GuestMemory accesses (devices) ask their handler synchronously and fail
// with GUEST_MEMORY_LOST when the page cannot be had.

import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Machine, type MachinePager } from '../../src/machine/boot/machine.js';
import { ExitReason } from '../../src/machine/cpu/exports.js';
import { GuestMemory, type MemoryLayout } from '../../src/machine/memory/guest-memory.js';
import { GuestMemoryLostError } from '../../src/machine/memory/errors.js';
import { buildBareProgram } from '../../src/guest/bare/build.js';

const RAM_BASE = 0x8000_0000n;
const PAGE = 4096;
const gpa = (page: number, off = 0): bigint => RAM_BASE + BigInt(page * PAGE + off);

// Pages the program touches (index from RAM base).
const D = 0x400;   // loads
const C = 0x500;   // code the program calls (written by the host)
const S = 0x600;   // store, then load
const A = 0x700;   // amoadd.d
const X0 = 0x800;  // present: a misaligned store starts here...
const X1 = 0x801;  // ...and ends here (absent)
const F0 = 0x901;  // present: a 4-byte instruction starts at its last halfword...
const F1 = 0x902;  // ...and ends here (absent)

// No compressed instructions (.option norvc), so the first load's encoding is known.
const PROGRAM = `
    .section .text.init
    .option norvc
    .globl _start
_start:
    li s0, 0x80400000
    li s1, 0x80500000
    li s2, 0x80600000
    li s3, 0x80700000
    li s4, 0x80801000
    li s5, 0x80901ffe
    ld t0, 0(s0)
    ld t1, 8(s0)
    add a0, t0, t1
    jalr ra, 0(s1)
    sd a0, 16(s2)
    ld t2, 0(s2)
    add a0, a0, t2
    sd a0, 24(s2)
    li t3, 5
    amoadd.d t4, t3, (s3)
    add a0, a0, t4
    sd a0, -4(s4)
    jalr ra, 0(s5)
    sd a0, 32(s2)
    li t0, 0x100000
    li t1, 0x5555
    sw t1, 0(t0)
1:  j 1b
`;
/** ld t0, 0(s0) */
const LD_T0_S0 = 0x00043283;
const ADDI_A0_1 = 0x00150513;
const ADDI_A0_7 = 0x00750513;
const RET = 0x00008067;

const D0 = 0x1111n, D1 = 0x2222n, S0 = 0x10_0000n, A0 = 0x40n;
const AFTER_CALL = D0 + D1 + 1n;
const AFTER_S = AFTER_CALL + S0;
const AFTER_AMO = AFTER_S + A0;
const FINAL = AFTER_AMO + 7n;

let elf: Uint8Array;
before(() => {
  const dir = join(tmpdir(), 'ferry-absent-pages-test');
  mkdirSync(dir, { recursive: true });
  const src = join(dir, 'absent.S');
  writeFileSync(src, PROGRAM);
  elf = new Uint8Array(readFileSync(buildBareProgram('absent-pages', [src])));
});

function u64le(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}

function u32le(...words: number[]): Uint8Array {
  const b = new Uint8Array(words.length * 4);
  words.forEach((w, i) => new DataView(b.buffer).setUint32(i * 4, w >>> 0, true));
  return b;
}

/** Writes the data and code pages the program expects. */
function prepare(m: Machine): void {
  const mem = m.memory;
  mem.write(gpa(D), new Uint8Array([...u64le(D0), ...u64le(D1)]));
  mem.write(gpa(C), u32le(ADDI_A0_1, RET));
  mem.fill(gpa(S), PAGE, 0x5a);
  mem.writeU64(gpa(S), S0);
  mem.writeU64(gpa(A), A0);
  mem.fill(gpa(X0), PAGE, 0xaa);
  mem.fill(gpa(X1), PAGE, 0xbb);
  // addi a0, a0, 7 split over F0's last halfword and F1's first; then ret.
  mem.writeU16(gpa(F0, PAGE - 2), ADDI_A0_7 & 0xffff);
  mem.writeU16(gpa(F1), ADDI_A0_7 >>> 16);
  mem.write(gpa(F1, 2), u32le(RET));
}

/** Takes pages out of RAM: keeps their content, zeroes them, marks them absent. */
class TestPager implements MachinePager {
  readonly saved = new Map<number, Uint8Array>();
  readonly faults: number[] = [];
  readonly syncFaults: [number, number][] = [];
  /** Called inside fault(), before the page is restored (to look at RAM at that moment). */
  onFault: ((page: number) => void) | undefined;
  failWith: Error | undefined;

  /** Set once the machine exists (it is built with this pager). */
  m!: Machine;

  takeOut(...pages: number[]): void {
    const mem = this.m.memory;
    for (const p of pages) {
      this.saved.set(p, mem.bytes.slice(p * PAGE, (p + 1) * PAGE));
      mem.bytes.fill(0, p * PAGE, (p + 1) * PAGE);
      mem.absent[p] = 1;
    }
  }

  private bringIn(p: number): void {
    const data = this.saved.get(p);
    if (!data) throw new GuestMemoryLostError(`page ${p} was never taken out`);
    this.m.memory.bytes.set(data, p * PAGE);
    this.saved.delete(p);
    this.m.memory.absent[p] = 0;
  }

  async fault(page: number): Promise<void> {
    this.faults.push(page);
    this.onFault?.(page);
    await new Promise((r) => setTimeout(r, 1)); // a real fetch takes a while
    if (this.failWith) throw this.failWith;
    this.bringIn(page);
  }

  faultSync(first: number, last: number): void {
    this.syncFaults.push([first, last]);
    for (let p = first; p <= last; p++) if (this.m.memory.absent[p] !== 0) this.bringIn(p);
  }
}

function machine(pager?: MachinePager): Machine {
  return new Machine({
    ramBytes: 64 << 20, console: { write() {}, onInput() {} },
    boot: { kind: 'bare', elf }, ...(pager ? { pager } : {}),
  });
}

function withPager(): { m: Machine; pager: TestPager } {
  const pager = new TestPager();
  const m = machine(pager);
  pager.m = m;
  return { m, pager };
}

function assertResults(m: Machine): void {
  const mem = m.memory;
  assert.equal(mem.readU64(gpa(S, 16)), AFTER_CALL, 'load, load, call into the fetched page');
  assert.equal(mem.readU64(gpa(S, 24)), AFTER_S, 'store then load on the same page');
  assert.equal(mem.readU64(gpa(A)), A0 + 5n, 'amoadd.d applied once');
  assert.equal(mem.readU64(gpa(S, 32)), FINAL, 'the straddling instruction ran once');
  assert.equal(m.vcpu.getX(10), FINAL);
  // The straddling store: its 8 bytes across the boundary, nothing else changed.
  assert.deepEqual(mem.read(gpa(X0, PAGE - 4), 8), u64le(AFTER_AMO));
  assert.ok(mem.read(gpa(X0), PAGE - 4).every((b) => b === 0xaa));
  assert.ok(mem.read(gpa(X1, 4), PAGE - 4).every((b) => b === 0xbb));
  assert.equal(mem.readU64(gpa(S, 40)), 0x5a5a5a5a5a5a5a5an, 'the rest of the stored page is its old content');
}

test('Machine.run stalls on absent pages, the pager brings each in once, and the program ends right', async () => {
  // Reference: the same program with every page present.
  const ref = machine();
  prepare(ref);
  const refExit = await ref.run();
  assert.deepEqual(refExit, { kind: 'poweroff' });
  assertResults(ref);
  const refInstret = ref.vcpu.instret;

  const { m, pager } = withPager();
  prepare(m);
  pager.takeOut(D, C, S, A, X1, F1);
  const x0Before: Uint8Array[] = [];
  pager.onFault = (p) => { if (p === X1) x0Before.push(m.memory.bytes.slice(X0 * PAGE + PAGE - 4, X0 * PAGE + PAGE)); };
  const exit = await m.run();
  assert.deepEqual(exit, { kind: 'poweroff' });
  assert.deepEqual(pager.faults, [D, C, S, A, X1, F1], 'one fault per page, in program order');
  assert.deepEqual(pager.syncFaults, [], 'the vCPU never takes the synchronous path');
  assert.equal(pager.saved.size, 0);
  assert.ok(m.memory.absent.every((a) => a === 0));
  assertResults(m);
  assert.deepEqual(x0Before, [new Uint8Array(4).fill(0xaa)], 'the straddling store wrote nothing before its second page was in');
  // Each faulting instruction retired once: the count matches the run without absent pages.
  assert.equal(m.vcpu.instret, refInstret, 'instret as if no page had been absent');
  assert.equal(m.vcpu.pc, ref.vcpu.pc);
});

test('slice by slice: the faulting instruction neither retires nor advances pc until its page is in', () => {
  const { m, pager } = withPager();
  prepare(m);
  pager.takeOut(D);
  m.harvestAccessLog();
  const reason = m.vcpu.run(100_000);
  assert.equal(reason, ExitReason.PageMissing);
  assert.equal(Number(m.vcpu.exports.getMissingPage()), D);
  const pc = m.vcpu.pc;
  const instret = m.vcpu.instret;
  assert.equal(m.memory.bytes[Number(pc - RAM_BASE)] | (m.memory.bytes[Number(pc - RAM_BASE) + 1]! << 8) | (m.memory.bytes[Number(pc - RAM_BASE) + 2]! << 16) | (m.memory.bytes[Number(pc - RAM_BASE) + 3]! << 24), LD_T0_S0, 'pc is at the load');
  assert.ok(instret > 0n, 'the instructions before it retired');
  assert.equal(m.vcpu.getX(8), gpa(D), 's0 set up');
  m.vcpu.setX(5, 0xdeadn);
  // Still absent: the same exit again, nothing retired, no side effect.
  assert.equal(m.vcpu.run(100_000), ExitReason.PageMissing);
  assert.equal(m.vcpu.pc, pc);
  assert.equal(m.vcpu.instret, instret);
  assert.equal(m.vcpu.getX(5), 0xdeadn, 't0 not written');
  assert.equal(m.memory.accessLog[D], 0, 'the absent page was not marked accessed');
  // In RAM again: one instruction retires and it is the load.
  m.memory.absent[D] = 0;
  m.memory.write(gpa(D), u64le(D0));
  assert.equal(m.vcpu.run(1), ExitReason.Budget);
  assert.equal(m.vcpu.pc, pc + 4n);
  assert.equal(m.vcpu.instret, instret + 1n);
  assert.equal(m.vcpu.getX(5), D0);
  assert.equal(m.memory.accessLog[D], 1, 'now it is');
});

test('without a pager, or when the pager fails, the machine ends with memory-lost', async () => {
  const bare = machine();
  prepare(bare);
  bare.memory.absent[D] = 1;
  const exit = await bare.run();
  assert.equal(exit.kind, 'memory-lost');
  assert.match(exit.kind === 'memory-lost' ? exit.reason : '', new RegExp(`page ${D} is absent`));

  const { m, pager } = withPager();
  prepare(m);
  pager.takeOut(D);
  pager.failWith = new GuestMemoryLostError('post-copy source lost');
  const lost = await m.run();
  assert.deepEqual(lost, { kind: 'memory-lost', reason: 'post-copy source lost' });
  assert.deepEqual(pager.faults, [D]);
});

test('device accesses through the machine\'s GuestMemory fault synchronously through the pager', () => {
  const { m, pager } = withPager();
  prepare(m);
  pager.takeOut(D, S, S + 1);
  assert.equal(m.memory.readU64(gpa(D, 8)), D1);
  assert.deepEqual(pager.syncFaults, [[D, D]]);
  assert.equal(m.memory.absent[D], 0);
  m.memory.write(gpa(S, PAGE - 4), new Uint8Array(8).fill(0x77));
  assert.deepEqual(pager.syncFaults.at(-1), [S, S + 1], 'one call for the whole range');
  assert.equal(m.memory.absent[S], 0);
  assert.equal(m.memory.absent[S + 1], 0);
  assert.equal(m.memory.readU64(gpa(S)), S0, 'the rest of the page came back');
  assert.deepEqual(pager.faults, [], 'no asynchronous fault');
});

// --- GuestMemory on its own ---------------------------------------------------------------

function bareMemory(pages: number): GuestMemory {
  const layout: MemoryLayout = {
    ramHostOffset: 3 * pages,
    ramBase: RAM_BASE,
    ramSize: pages * PAGE,
    dirtyLogOffset: 0,
    accessLogOffset: pages,
    absentMapOffset: 2 * pages,
    codeMapOffset: 4 * pages + pages * PAGE,
  };
  return new GuestMemory(new ArrayBuffer(12 * pages + pages * PAGE), layout);
}

test('GuestMemory: an access to an absent page calls the handler synchronously, then goes on', () => {
  const mem = bareMemory(8);
  mem.writeU64(gpa(3, 16), 0x1234n);
  const saved = mem.bytes.slice(3 * PAGE, 4 * PAGE);
  mem.bytes.fill(0, 3 * PAGE, 4 * PAGE);
  mem.absent[3] = 2;
  const calls: [number, number][] = [];
  let inside = false;
  mem.onAbsent((first, last) => {
    calls.push([first, last]);
    inside = true;
    for (let p = first; p <= last; p++) {
      if (mem.absent[p] === 0) continue;
      mem.bytes.set(saved, p * PAGE);
      mem.absent[p] = 0;
    }
    inside = false;
  });
  mem.dirtyLog.fill(0);
  assert.equal(mem.readU64(gpa(3, 16)), 0x1234n);
  assert.deepEqual(calls, [[3, 3]]);
  assert.equal(inside, false);
  assert.equal(mem.dirtyLog[3], 0, 'a read marks nothing dirty');
  // Present now: no further call.
  mem.readU32(gpa(3, 0));
  assert.equal(calls.length, 1);
  // A write spanning a present and an absent page asks for the whole range, then writes.
  mem.absent[5] = 1;
  mem.write(gpa(4, PAGE - 2), Uint8Array.of(1, 2, 3, 4));
  assert.deepEqual(calls.at(-1), [4, 5]);
  assert.deepEqual(mem.read(gpa(4, PAGE - 2), 4), Uint8Array.of(1, 2, 3, 4));
  assert.equal(mem.dirtyLog[4], 1);
  assert.equal(mem.dirtyLog[5], 1);
  // Zero-length accesses touch nothing.
  mem.absent[6] = 1;
  assert.equal(mem.read(gpa(6), 0).length, 0);
  assert.equal(calls.length, 2);
});

test('GuestMemory: no handler, or a handler that leaves the page absent, throws GUEST_MEMORY_LOST', () => {
  const mem = bareMemory(4);
  mem.absent[1] = 1;
  const lost = (e: unknown) => e instanceof GuestMemoryLostError && e.code === 'GUEST_MEMORY_LOST';
  assert.throws(() => mem.read(gpa(1), 8), lost);
  assert.throws(() => mem.writeU32(gpa(1, 8), 1), lost);
  assert.ok(mem.bytes.subarray(PAGE, 2 * PAGE).every((b) => b === 0), 'the failed write wrote nothing');
  assert.equal(mem.dirtyLog[1], 0);
  let called = 0;
  mem.onAbsent(() => { called++; });
  assert.throws(() => mem.readU8(gpa(1, 5)), (e: unknown) => lost(e) && /still absent/.test((e as Error).message));
  assert.equal(called, 1);
  // A handler that throws: its error comes through as it is.
  mem.onAbsent(() => { throw new GuestMemoryLostError('swap device unreachable'); });
  assert.throws(() => mem.fill(gpa(0), 2 * PAGE, 1), /swap device unreachable/);
  assert.ok(mem.bytes.subarray(0, PAGE).every((b) => b === 0), 'the failed fill wrote nothing');
  // Pages that are present are read without asking.
  mem.onAbsent(undefined);
  assert.equal(mem.readU64(gpa(2)), 0n);
  assert.equal(mem.present(0, 0), true);
  assert.equal(mem.present(0, 1), false);
});
