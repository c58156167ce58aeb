import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Syscon, type SysconEvent } from '../../src/machine/devices/syscon.js';

test('syscon decodes pass, reset and fail(code)', () => {
  const events: SysconEvent[] = [];
  const s = new Syscon((e) => events.push(e));
  s.write(0, 4, 0x5555);
  s.write(0, 4, 0x7777);
  s.write(0, 4, (42 << 16) | 0x3333);
  s.write(0, 4, 0x1234); // unknown: ignored
  s.write(4, 4, 0x5555); // other offsets: ignored
  assert.deepEqual(events, [{ kind: 'poweroff' }, { kind: 'reboot' }, { kind: 'fail', code: 42 }]);
  assert.equal(s.read(0, 4), 0);
  assert.deepEqual(s.save(), {});
});

test('syscon fail code uses the full upper half', () => {
  const events: SysconEvent[] = [];
  const s = new Syscon((e) => events.push(e));
  s.write(0, 4, 0xffff3333 | 0);
  assert.deepEqual(events, [{ kind: 'fail', code: 0xffff }]);
});
