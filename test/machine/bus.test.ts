import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MmioBus } from '../../src/machine/devices/bus.js';
import type { AccessSize, MmioDevice } from '../../src/machine/devices/types.js';

class Recorder implements MmioDevice {
  readonly log: string[] = [];
  constructor(readonly name: string) {}
  read(offset: number, size: AccessSize): number { this.log.push(`r${offset}/${size}`); return 0xab; }
  write(offset: number, size: AccessSize, value: number): void { this.log.push(`w${offset}/${size}=${value}`); }
}

test('dispatches with device-relative offsets', () => {
  const bus = new MmioBus();
  const a = new Recorder('a');
  const b = new Recorder('b');
  bus.map(0x1000_0000, 0x100, a);
  bus.map(0x0010_0000, 0x1000, b);
  assert.equal(bus.read(0x1000_0005, 1), 0xab);
  assert.equal(bus.write(0x0010_0000, 4, 0x5555), true);
  assert.equal(bus.read(0x0010_0ffc, 4), 0xab);
  assert.deepEqual(a.log, ['r5/1']);
  assert.deepEqual(b.log, ['w0/4=21845', 'r4092/4']);
  assert.equal(bus.find(0x1000_00ff)?.device, a);
});

test('unmapped and straddling accesses are faults, not exceptions', () => {
  const bus = new MmioBus();
  const a = new Recorder('a');
  bus.map(0x1000, 0x100, a);
  assert.equal(bus.read(0x0fff, 1), undefined);
  assert.equal(bus.read(0x1100, 1), undefined);
  assert.equal(bus.read(0x10fe, 4), undefined, 'crosses the end of the region');
  assert.equal(bus.write(0x2000, 4, 1), false);
  assert.deepEqual(a.log, []);
});

test('overlapping and invalid ranges are rejected at registration', () => {
  const bus = new MmioBus();
  bus.map(0x1000, 0x1000, new Recorder('a'));
  bus.map(0x3000, 0x1000, new Recorder('c'));
  assert.throws(() => bus.map(0x1fff, 2, new Recorder('x')), { code: 'BUS_OVERLAP', message: /x .*overlaps a/ });
  assert.throws(() => bus.map(0x0800, 0x1000, new Recorder('y')), { code: 'BUS_OVERLAP' });
  assert.throws(() => bus.map(0x2800, 0x1000, new Recorder('z')), { code: 'BUS_OVERLAP', message: /overlaps c/ });
  assert.throws(() => bus.map(0x0, 0x10000, new Recorder('w')), { code: 'BUS_OVERLAP' });
  assert.throws(() => bus.map(0x9000, 0, new Recorder('v')), { code: 'BUS_INVALID_RANGE' });
  bus.map(0x2000, 0x1000, new Recorder('b')); // exactly fills the gap
  assert.deepEqual(bus.mappings.map((r) => r.device.name), ['a', 'b', 'c']);
});
