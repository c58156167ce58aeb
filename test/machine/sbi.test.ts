import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Sbi, SBI_IMPL_ID, SBI_ERR_NOT_SUPPORTED, SBI_ERR_INVALID_PARAM, SBI_ERR_ALREADY_AVAILABLE, SBI_ERR_FAILED,
  type SbiConsoleInput,
} from '../../src/machine/sbi/sbi.js';
import type { SbiHart, SbiOutcome } from '../../src/machine/sbi/types.js';
import { GuestMemory } from '../../src/machine/memory/guest-memory.js';
import { FakeConsole } from './fakes.js';

const RAM_BASE = 0x8000_0000n;
const RAM_SIZE = 64 * 1024;

class FakeHart implements SbiHart {
  readonly x = new Array<bigint>(32).fill(0n);
  timer: bigint | undefined;
  ssip = 0;
  flushes = 0;
  constructor(readonly hartId = 0) {}
  getX(i: number): bigint { return this.x[i]!; }
  setX(i: number, v: bigint): void { if (i !== 0) this.x[i] = v; }
  readTime(): bigint { return 1000n; }
  setTimer(deadline: bigint): void { this.timer = deadline; }
  raiseSoftwareInterrupt(): void { this.ssip++; }
  flushTlb(): void { this.flushes++; }
}

function memory(): GuestMemory {
  const pages = RAM_SIZE / 4096;
  const buf = new ArrayBuffer(RAM_SIZE + 16 * pages);
  return new GuestMemory(buf, {
    ramHostOffset: 0, ramBase: RAM_BASE, ramSize: RAM_SIZE, dirtyLogOffset: RAM_SIZE, accessLogOffset: RAM_SIZE + pages, absentMapOffset: RAM_SIZE + 2 * pages,
    codeMapOffset: RAM_SIZE + 4 * pages,
  });
}

function setup(input?: SbiConsoleInput) {
  const hart = new FakeHart();
  const mem = memory();
  const con = new FakeConsole();
  const sbi = new Sbi(hart, mem, con, input ? { input } : {});
  const call = (eid: number, fid: number, ...args: (bigint | number)[]): { out: SbiOutcome; error: bigint; value: bigint } => {
    hart.x[17] = BigInt(eid);
    hart.x[16] = BigInt(fid);
    for (let i = 0; i < 6; i++) hart.x[10 + i] = BigInt.asUintN(64, BigInt(args[i] ?? 0));
    hart.x[11] = args[1] === undefined ? 0xdeadn : hart.x[11]!;
    const out = sbi.handleEcall();
    return { out, error: BigInt.asIntN(64, hart.x[10]!), value: hart.x[11]! };
  };
  return { hart, mem, con, sbi, call };
}

test('BASE: versions, ids and probe', () => {
  const { call } = setup();
  assert.deepEqual(call(0x10, 0), { out: { kind: 'continue' }, error: 0n, value: 0x0200_0000n });
  assert.equal(call(0x10, 1).value, BigInt(SBI_IMPL_ID));
  assert.equal(call(0x10, 2).error, 0n);
  for (const eid of [0x10, 0x54494d45, 0x735049, 0x52464e43, 0x48534d, 0x53525354, 0x4442434e, 0x01, 0x02, 0x08]) {
    assert.equal(call(0x10, 3, eid).value, 1n, `probe 0x${eid.toString(16)}`);
  }
  for (const eid of [0x504d55 /* PMU */, 0x53555350 /* SUSP */, 0x535441 /* STA */, 0x03, -1]) {
    assert.equal(call(0x10, 3, eid).value, 0n, `probe 0x${eid.toString(16)}`);
  }
  for (const fid of [4, 5, 6]) assert.deepEqual([call(0x10, fid).error, call(0x10, fid).value], [0n, 0n]);
  assert.equal(call(0x10, 7).error, BigInt(SBI_ERR_NOT_SUPPORTED));
});

test('unknown EID/FID: NOT_SUPPORTED, never an exception', () => {
  const { call } = setup();
  assert.equal(call(0x12345678, 0).error, -2n);
  assert.equal(call(0x54494d45, 1).error, -2n);
  assert.equal(call(0x10, 0x1_0000_0000).error, -2n);
  const r = call(0x7fff_ffff, 0);
  assert.equal(r.value, 0n);
});

test('TIME set_timer and legacy set_timer program the hart', () => {
  const { hart, call } = setup();
  assert.equal(call(0x54494d45, 0, 0x1234_5678_9abcn).error, 0n);
  assert.equal(hart.timer, 0x1234_5678_9abcn);
  call(0x00, 0, -1);
  assert.equal(hart.timer, (1n << 64n) - 1n);
  assert.equal(hart.x[10], 0n);
});

test('IPI: mask/base semantics and invalid harts', () => {
  const { hart, call } = setup();
  assert.equal(call(0x735049, 0, 1, 0).error, 0n);
  assert.equal(hart.ssip, 1);
  assert.equal(call(0x735049, 0, 0, -1).error, 0n, 'base -1: all harts, mask ignored');
  assert.equal(hart.ssip, 2);
  assert.equal(call(0x735049, 0, 0, 0).error, 0n, 'empty mask is fine');
  assert.equal(hart.ssip, 2);
  assert.equal(call(0x735049, 0, 2, 0).error, BigInt(SBI_ERR_INVALID_PARAM), 'hart 1 does not exist');
  assert.equal(call(0x735049, 0, 1, 1).error, BigInt(SBI_ERR_INVALID_PARAM));
  assert.equal(hart.ssip, 2);
});

test('IPI and RFENCE reach every hart of an SMP machine', () => {
  const h0 = new FakeHart(0);
  const h1 = new FakeHart(1);
  const sbi = new Sbi(h0, memory(), new FakeConsole(), { harts: [h0, h1] });
  h0.x[17] = 0x735049n; h0.x[16] = 0n; h0.x[10] = 1n; h0.x[11] = 1n;
  sbi.handleEcall();
  assert.deepEqual([h0.ssip, h1.ssip, h0.x[10]], [0, 1, 0n]);
  h0.x[17] = 0x52464e43n; h0.x[16] = 1n; h0.x[10] = 0n; h0.x[11] = (1n << 64n) - 1n;
  sbi.handleEcall();
  assert.deepEqual([h0.flushes, h1.flushes], [1, 1]);
});

test('RFENCE: fence.i, sfence.vma, sfence.vma.asid flush; hfence is not supported', () => {
  const { hart, call } = setup();
  assert.equal(call(0x52464e43, 0, 1, 0).error, 0n);
  assert.equal(call(0x52464e43, 1, 1, 0, 0x1000, 0x1000).error, 0n);
  assert.equal(call(0x52464e43, 2, 1, 0, 0, -1, 5).error, 0n);
  assert.equal(hart.flushes, 3);
  for (const fid of [3, 4, 5, 6]) assert.equal(call(0x52464e43, fid, 1, 0).error, -2n);
  assert.equal(call(0x52464e43, 1, 4, 0).error, BigInt(SBI_ERR_INVALID_PARAM));
  assert.equal(hart.flushes, 3);
});

test('HSM: start/stop/status/suspend', () => {
  const { call } = setup();
  assert.equal(call(0x48534d, 0, 0, 0x8020_0000, 0).error, BigInt(SBI_ERR_ALREADY_AVAILABLE));
  assert.equal(call(0x48534d, 0, 1, 0x8020_0000, 0).error, BigInt(SBI_ERR_INVALID_PARAM));
  assert.equal(call(0x48534d, 1).error, BigInt(SBI_ERR_FAILED));
  assert.deepEqual([call(0x48534d, 2, 0).error, call(0x48534d, 2, 0).value], [0n, 0n], 'STARTED');
  assert.equal(call(0x48534d, 2, 7).error, BigInt(SBI_ERR_INVALID_PARAM));
  assert.equal(call(0x48534d, 3, 0).error, 0n, 'default retentive suspend returns at once');
  assert.equal(call(0x48534d, 3, 0x1000_0000).error, 0n);
  assert.equal(call(0x48534d, 3, 0x8000_0000).error, -2n, 'non-retentive not supported');
  assert.equal(call(0x48534d, 3, 1).error, BigInt(SBI_ERR_INVALID_PARAM), 'reserved type');
  assert.equal(call(0x48534d, 9).error, -2n);
});

test('SRST: shutdown and reboots end the slice; bad parameters are errors', () => {
  const { call } = setup();
  assert.deepEqual(call(0x53525354, 0, 0, 0).out, { kind: 'shutdown' });
  assert.deepEqual(call(0x53525354, 0, 1, 0).out, { kind: 'reboot' });
  assert.deepEqual(call(0x53525354, 0, 2, 1).out, { kind: 'reboot' });
  assert.deepEqual(call(0x53525354, 0, 0, 0xe000_0000).out, { kind: 'shutdown' });
  const bad = call(0x53525354, 0, 3, 0);
  assert.deepEqual([bad.out.kind, bad.error], ['continue', BigInt(SBI_ERR_INVALID_PARAM)]);
  assert.equal(call(0x53525354, 0, 0, 2).error, BigInt(SBI_ERR_INVALID_PARAM), 'reserved reason');
  assert.equal(call(0x53525354, 0, 0xf000_0000, 0).error, -2n, 'vendor reset type');
  assert.equal(call(0x53525354, 1).error, -2n);
  assert.deepEqual(call(0x08, 0).out, { kind: 'shutdown' });
});

test('DBCN write/write_byte read guest memory; bad buffers are INVALID_PARAM', () => {
  const { mem, con, call } = setup();
  const msg = new TextEncoder().encode('hello, world\n');
  mem.write(RAM_BASE + 0x100n, msg);
  assert.deepEqual(call(0x4442434e, 0, msg.length, RAM_BASE + 0x100n, 0), { out: { kind: 'continue' }, error: 0n, value: 13n });
  assert.equal(call(0x4442434e, 2, 0x121).error, 0n);
  assert.equal(con.text(), 'hello, world\n!');
  assert.equal(call(0x4442434e, 0, 0, 0, 0).value, 0n, 'zero bytes: nothing to check');
  const bad = BigInt(SBI_ERR_INVALID_PARAM);
  assert.equal(call(0x4442434e, 0, 16, 0x1000, 0).error, bad, 'below RAM');
  assert.equal(call(0x4442434e, 0, 16, RAM_BASE + BigInt(RAM_SIZE) - 8n, 0).error, bad, 'runs off the end');
  assert.equal(call(0x4442434e, 0, 16, RAM_BASE, 1).error, bad, 'base_addr_hi set');
  assert.equal(call(0x4442434e, 0, -1, RAM_BASE, 0).error, bad, 'huge length');
  assert.equal(call(0x4442434e, 0, 8, -8, 0).error, bad, 'wraps the address space');
  assert.equal(call(0x4442434e, 3).error, -2n);
  assert.equal(con.text(), 'hello, world\n!');
});

test('DBCN console_read and legacy getchar: no input wired means nothing to read', () => {
  const { mem, call } = setup();
  assert.deepEqual([call(0x4442434e, 1, 16, RAM_BASE, 0).error, call(0x4442434e, 1, 16, RAM_BASE, 0).value], [0n, 0n]);
  assert.equal(call(0x4442434e, 1, 16, 0x10, 0).error, BigInt(SBI_ERR_INVALID_PARAM));
  assert.equal(call(0x02, 0).error, -1n);
  mem.dirtyLog.fill(0);
});

test('DBCN console_read and legacy getchar with input wired', () => {
  const pending = [...new TextEncoder().encode('abc')];
  const input: SbiConsoleInput = { read: (max) => Uint8Array.from(pending.splice(0, max)) };
  const { mem, call } = setup(input);
  assert.equal(call(0x02, 0).error, 0x61n);
  mem.dirtyLog.fill(0);
  const r = call(0x4442434e, 1, 16, RAM_BASE + 0x2000n, 0);
  assert.deepEqual([r.error, r.value], [0n, 2n]);
  assert.deepEqual([...mem.read(RAM_BASE + 0x2000n, 2)], [0x62, 0x63]);
  assert.equal(mem.dirtyLog[2], 1, 'SBI writes mark the dirty log');
  assert.equal(call(0x02, 0).error, -1n);
});

test('legacy putchar and a failing console backend', () => {
  const { con, call } = setup();
  call(0x01, 0, 0x41);
  assert.equal(con.text(), 'A');
  const hart = new FakeHart();
  const broken = new Sbi(hart, memory(), { write() { throw new Error('EPIPE'); }, onInput() {} });
  hart.x[17] = 0x4442434en; hart.x[16] = 2n; hart.x[10] = 0x41n;
  assert.deepEqual(broken.handleEcall(), { kind: 'continue' });
  assert.equal(BigInt.asIntN(64, hart.x[10]), BigInt(SBI_ERR_FAILED));
  hart.x[17] = 0x05n;
  broken.handleEcall();
  assert.equal(BigInt.asIntN(64, hart.x[10]), -2n, 'unimplemented legacy call');
});
