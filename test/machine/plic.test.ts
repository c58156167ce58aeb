import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Plic } from '../../src/machine/devices/plic.js';
import { FakeHartSink } from './fakes.js';

const prio = (n: number) => 4 * n;
const enable = (ctx: number, word = 0) => 0x2000 + 0x80 * ctx + 4 * word;
const threshold = (ctx: number) => 0x200000 + 0x1000 * ctx;
const claim = (ctx: number) => threshold(ctx) + 4;

function setup() {
  const hart = new FakeHartSink();
  const plic = new Plic([hart]);
  return { hart, plic, w: (o: number, v: number) => plic.write(o, 4, v), r: (o: number) => plic.read(o, 4) };
}

test('a level source reaches the S context only when enabled and above threshold', () => {
  const { hart, plic, w, r } = setup();
  const uart = plic.irqLine(10);
  uart.set(true);
  assert.equal(r(0x1000) & (1 << 10), 1 << 10, 'pending bit visible');
  assert.equal(hart.S, false, 'priority 0 never interrupts');
  w(prio(10), 1);
  assert.equal(hart.S, false, 'not enabled');
  w(enable(1), 1 << 10);
  assert.equal(hart.S, true);
  assert.equal(hart.M, false, 'context 0 (M) not enabled');
  w(threshold(1), 1);
  assert.equal(hart.S, false, 'priority must exceed threshold');
  w(threshold(1), 0);
  assert.equal(hart.S, true);
});

test('claim/complete: claim clears pending, gateway holds until complete, re-pends if still high', () => {
  const { hart, plic, w, r } = setup();
  const line = plic.irqLine(10);
  w(prio(10), 1);
  w(enable(1), 1 << 10);
  line.set(true);
  assert.equal(r(claim(1)), 10);
  assert.equal(hart.S, false, 'claimed source no longer pending');
  assert.equal(r(claim(1)), 0, 'nothing else to claim');
  line.set(false);
  line.set(true);
  assert.equal(hart.S, false, 'in flight: gateway closed');
  w(claim(1), 10);
  assert.equal(hart.S, true, 'line still high: pending again after completion');
  assert.equal(r(claim(1)), 10);
  line.set(false);
  w(claim(1), 10);
  assert.equal(hart.S, false);
  assert.equal(r(0x1000), 0);
});

test('highest priority wins, ties go to the lowest id', () => {
  const { plic, w, r } = setup();
  for (const n of [3, 5, 7]) { plic.irqLine(n).set(true); }
  w(enable(1), (1 << 3) | (1 << 5) | (1 << 7));
  w(prio(3), 2); w(prio(5), 7); w(prio(7), 7);
  assert.equal(r(claim(1)), 5);
  assert.equal(r(claim(1)), 7);
  assert.equal(r(claim(1)), 3);
  assert.equal(r(claim(1)), 0);
});

test('completion for a source not enabled on the context is ignored', () => {
  const { plic, w, r } = setup();
  const line = plic.irqLine(4);
  w(prio(4), 1);
  w(enable(1), 1 << 4);
  line.set(true);
  assert.equal(r(claim(1)), 4);
  w(enable(1), 0);
  w(claim(1), 4);
  w(enable(1), 1 << 4);
  assert.equal(r(claim(1)), 0, 'still in flight');
  w(claim(1), 4);
  assert.equal(r(claim(1)), 4);
});

test('register WARL behaviour: priority bits, source 0, read-only pending, out-of-range ids', () => {
  const { plic, w, r } = setup();
  w(prio(1), 0xff);
  assert.equal(r(prio(1)), 7);
  w(prio(0), 5);
  assert.equal(r(prio(0)), 0);
  w(enable(0), 0xffffffff);
  assert.equal(r(enable(0)), 0xfffffffe, 'source 0 cannot be enabled');
  w(enable(0, 2), 0xffffffff);
  assert.equal(r(enable(0, 2)), 0xffffffff, 'sources 64..95');
  w(0x1000, 0xffffffff);
  assert.equal(r(0x1000), 0);
  assert.throws(() => plic.irqLine(0), { code: 'DEVICE_INVALID_CONFIG' });
  assert.throws(() => plic.irqLine(96), { code: 'DEVICE_INVALID_CONFIG' });
  assert.equal(r(threshold(5)), 0, 'nonexistent context reads zero');
});

test('context 0 drives M-mode', () => {
  const { hart, plic, w } = setup();
  w(prio(2), 1);
  w(enable(0), 1 << 2);
  plic.irqLine(2).set(true);
  assert.equal(hart.M, true);
  assert.equal(hart.S, false);
});

test('save/restore round-trips (including in-flight state) and re-drives outputs', () => {
  const a = setup();
  const line = a.plic.irqLine(10);
  a.w(prio(10), 3);
  a.w(enable(1), 1 << 10);
  line.set(true);
  assert.equal(a.r(claim(1)), 10);
  a.plic.irqLine(11).set(true);
  a.w(prio(11), 1);
  a.w(enable(1), (1 << 10) | (1 << 11));
  const state = JSON.parse(JSON.stringify(a.plic.save())) as ReturnType<Plic['save']>;
  const b = setup();
  b.plic.restore(state);
  assert.deepEqual(b.plic.save(), a.plic.save());
  assert.equal(b.hart.S, true);
  assert.equal(b.r(claim(1)), 11);
  b.w(claim(1), 10);
  assert.equal(b.r(claim(1)), 10, 'line 10 still high after restore');
  assert.throws(() => b.plic.restore({ ...state, sourceCount: 3 }), { code: 'DEVICE_STATE_INVALID' });
});
