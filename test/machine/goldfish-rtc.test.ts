import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GoldfishRtc } from '../../src/machine/devices/goldfish-rtc.js';
import { FakeIrq } from './fakes.js';

function setup(start: bigint) {
  const clock = { ns: start };
  const irq = new FakeIrq();
  const rtc = new GoldfishRtc(() => clock.ns, irq);
  return { clock, irq, rtc };
}

test('reading TIME_LOW latches TIME_HIGH', () => {
  const { clock, rtc } = setup(0x0000_0005_ffff_fff0n);
  assert.equal(rtc.read(0x00, 4), 0xfffffff0);
  clock.ns += 0x20n; // carries into the high word
  assert.equal(rtc.read(0x04, 4), 5, 'high word is the latched one');
  assert.equal(rtc.read(0x00, 4), 0x10);
  assert.equal(rtc.read(0x04, 4), 6);
});

test('guest sets the time (HIGH then LOW): an offset against the host clock', () => {
  const { clock, rtc } = setup(1_000n);
  rtc.write(0x04, 4, 2);
  rtc.write(0x00, 4, 100);
  assert.equal(rtc.now(), (2n << 32n) | 100n);
  clock.ns += 50n;
  assert.equal(rtc.read(0x00, 4), 150);
  assert.equal(rtc.read(0x04, 4), 2);
});

test('alarm fires at its time, raises the IRQ when enabled, and is cleared by CLEAR_INTERRUPT', () => {
  const { clock, rtc, irq } = setup(1_000n);
  rtc.write(0x0c, 4, 0);
  rtc.write(0x08, 4, 2_000);
  rtc.write(0x10, 4, 1);
  assert.equal(rtc.read(0x18, 4), 1, 'armed');
  assert.equal(rtc.nextDeadlineNs(), 2_000n);
  rtc.poll();
  assert.equal(irq.level, false);
  clock.ns = 2_000n;
  rtc.poll();
  assert.equal(irq.level, true);
  assert.equal(rtc.read(0x18, 4), 0, 'fired alarms disarm');
  rtc.write(0x1c, 4, 1);
  assert.equal(irq.level, false);
});

test('CLEAR_ALARM disarms; an alarm in the past fires at once; IRQ_ENABLED gates the line', () => {
  const { rtc, irq } = setup(5_000n);
  rtc.write(0x08, 4, 9_000);
  rtc.write(0x14, 4, 1);
  assert.equal(rtc.read(0x18, 4), 0);
  rtc.write(0x08, 4, 10);
  assert.equal(irq.level, false, 'pending but not enabled');
  rtc.write(0x10, 4, 1);
  assert.equal(irq.level, true);
});

test('save/restore keeps the guest-host offset and alarm', () => {
  const a = setup(1_000n);
  a.rtc.write(0x04, 4, 1);
  a.rtc.write(0x00, 4, 0);
  a.rtc.write(0x0c, 4, 1);
  a.rtc.write(0x08, 4, 500);
  const state = JSON.parse(JSON.stringify(a.rtc.save())) as ReturnType<GoldfishRtc['save']>;
  const b = setup(1_000n);
  b.rtc.restore(state);
  assert.equal(b.rtc.now(), 1n << 32n);
  assert.equal(b.rtc.read(0x18, 4), 1);
  b.clock.ns += 500n;
  b.rtc.write(0x10, 4, 1);
  assert.equal(b.irq.level, true);
  assert.throws(() => b.rtc.restore({ ...state, offsetNs: 'x' }), { code: 'DEVICE_STATE_INVALID' });
});
