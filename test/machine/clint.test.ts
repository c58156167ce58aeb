import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Clint, type ClintHart } from '../../src/machine/devices/clint.js';

class FakeHart implements ClintHart {
  time = 0x1_2345_6789n;
  mtimecmp = 0n;
  msip = false;
  cmpWrites: bigint[] = [];
  readTime(): bigint { return this.time; }
  writeTime(v: bigint): void { this.time = v; }
  setMtimecmp(v: bigint): void { this.mtimecmp = v; this.cmpWrites.push(v); }
  setMsip(level: boolean): void { this.msip = level; }
}

test('mtimecmp resets to all-ones and is pushed to the hart', () => {
  const h = new FakeHart();
  const c = new Clint([h]);
  assert.equal(h.mtimecmp, (1n << 64n) - 1n);
  assert.equal(c.read(0x4000, 4), 0xffffffff);
  assert.equal(c.read(0x4004, 4), 0xffffffff);
});

test('64-bit mtimecmp written as two 32-bit halves, low first: each half merges', () => {
  const h = new FakeHart();
  const c = new Clint([h]);
  h.cmpWrites = [];
  c.write(0x4000, 4, 0x89abcdef);
  assert.equal(h.mtimecmp, 0xffffffff_89abcdefn, 'low half replaced, high kept');
  c.write(0x4004, 4, 0x01234567);
  assert.equal(h.mtimecmp, 0x01234567_89abcdefn);
  assert.deepEqual(h.cmpWrites, [0xffffffff_89abcdefn, 0x01234567_89abcdefn]);
  assert.equal(c.read(0x4000, 4), 0x89abcdef);
  assert.equal(c.read(0x4004, 4), 0x01234567);
  c.write(0x4004, 4, 0);
  assert.equal(h.mtimecmp, 0x89abcdefn);
});

test('mtime reads in halves and writes through writeTime', () => {
  const h = new FakeHart();
  const c = new Clint([h]);
  assert.equal(c.read(0xbff8, 4), 0x23456789);
  assert.equal(c.read(0xbffc, 4), 1);
  c.write(0xbff8, 4, 5);
  assert.equal(h.time, 0x1_0000_0005n);
  c.write(0xbffc, 4, 7);
  assert.equal(h.time, 0x7_0000_0005n);
});

test('msip: only bit 0, per hart; sub-word access works', () => {
  const h0 = new FakeHart();
  const h1 = new FakeHart();
  const c = new Clint([h0, h1]);
  c.write(4, 4, 0xffffffff);
  assert.equal(h1.msip, true);
  assert.equal(h0.msip, false);
  assert.equal(c.read(4, 4), 1);
  c.write(4, 1, 0);
  assert.equal(h1.msip, false);
  c.write(0x4008, 4, 0x10);
  c.write(0x400c, 4, 0);
  assert.equal(h1.mtimecmp, 0x10n);
  assert.equal(c.read(0x4008, 1), 0x10);
  c.write(0x4009, 1, 0x02);
  assert.equal(h1.mtimecmp, 0x0210n);
  assert.equal(c.read(8, 4), 0, 'msip of a nonexistent hart');
});

test('save/restore pushes values to the harts', () => {
  const a = new Clint([new FakeHart()]);
  a.write(0, 4, 1);
  a.write(0x4000, 4, 1234);
  a.write(0x4004, 4, 0);
  const state = JSON.parse(JSON.stringify(a.save())) as ReturnType<Clint['save']>;
  assert.deepEqual(state, { harts: [{ msip: true, mtimecmp: '1234' }] });
  const h = new FakeHart();
  const b = new Clint([h]);
  b.restore(state);
  assert.equal(h.msip, true);
  assert.equal(h.mtimecmp, 1234n);
  assert.throws(() => b.restore({ harts: [{ msip: true, mtimecmp: '-1' }] }), { code: 'DEVICE_STATE_INVALID' });
});
