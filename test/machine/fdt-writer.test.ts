import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceTree } from '../../src/machine/fdt/writer.js';
import { DTC_MISSING, dtcAvailable, decompile, strList } from './dtc.js';

test('dtc is installed (required, never skipped)', () => {
  assert.ok(dtcAvailable(), DTC_MISSING);
});

function sample(): DeviceTree {
  const dt = new DeviceTree();
  dt.reserve(0x8000_0000n, 0x20_0000n);
  dt.root.setU32('#address-cells', 2).setU32('#size-cells', 2).setString('model', 'test');
  const a = dt.root.addNode('intc');
  a.setEmpty('interrupt-controller').setU32('#interrupt-cells', 1);
  const h = a.phandle();
  const dev = dt.root.addNode('dev@1000');
  dev.setU64Array('reg', [0x1000n, 0x100n])
    .setStringList('compatible', ['acme,one', 'acme,two'])
    .setU32('interrupt-parent', h)
    .setU32Array('interrupts', [1, 2, 3])
    .setU64('big', 0x1234_5678_9abc_def0n)
    .setBytes('blob', Uint8Array.of(1, 2, 3))
    .setString('model', 'x'); // same name as root's: stored once in the strings block
  dev.addNode('child').setString('status', 'okay');
  return dt;
}

test('header, alignment and string dedup', () => {
  const blob = sample().toBytes(0);
  const dv = new DataView(blob.buffer, blob.byteOffset);
  assert.equal(dv.getUint32(0), 0xd00dfeed);
  assert.equal(dv.getUint32(4), blob.length);
  const structOff = dv.getUint32(8);
  const stringsOff = dv.getUint32(12);
  const rsvOff = dv.getUint32(16);
  assert.equal(dv.getUint32(20), 17);
  assert.equal(dv.getUint32(24), 16);
  assert.equal(rsvOff % 8, 0);
  assert.equal(structOff % 4, 0);
  assert.equal(dv.getBigUint64(rsvOff), 0x8000_0000n);
  assert.equal(dv.getBigUint64(rsvOff + 8), 0x20_0000n);
  assert.equal(dv.getBigUint64(rsvOff + 16), 0n, 'reservation block terminator');
  assert.equal(dv.getUint32(32), blob.length - stringsOff - (blob.length - stringsOff - dv.getUint32(32)));
  const strings = new TextDecoder().decode(blob.subarray(stringsOff, stringsOff + dv.getUint32(32)));
  assert.equal(strings.split('\0').filter((s) => s === 'model').length, 1);
  assert.equal(dv.getUint32(structOff + dv.getUint32(36) - 4), 9, 'struct block ends with FDT_END');
});

test('dtc decompiles every property kind', () => {
  const { dts } = decompile(sample().toBytes());
  assert.match(dts, /\/memreserve\/\s+0x0*80000000 0x0*200000;/);
  assert.match(dts, /model = "test";/);
  assert.match(dts, /intc \{[^}]*interrupt-controller;/s);
  assert.match(dts, /#interrupt-cells = <0x01>;/);
  assert.match(dts, /phandle = <0x01>;/);
  assert.match(dts, /dev@1000 \{/);
  assert.match(dts, /reg = <0x00 0x1000 0x00 0x100>;/);
  assert.match(dts, new RegExp(`compatible = ${strList('acme,one', 'acme,two')};`));
  assert.match(dts, /interrupt-parent = <0x01>;/);
  assert.match(dts, /interrupts = <0x01 0x02 0x03>;/);
  assert.match(dts, /big = <0x12345678 0x9abcdef0>;/);
  assert.match(dts, /blob = \[01 02 03\];/);
  assert.match(dts, /child \{\s*status = "okay";\s*\};/);
});

test('invalid input is refused with FDT_INVALID', () => {
  const dt = new DeviceTree();
  dt.root.addNode('a');
  assert.throws(() => dt.root.addNode('a'), { code: 'FDT_INVALID' });
  assert.throws(() => dt.root.addNode('bad name'), { code: 'FDT_INVALID' });
  assert.throws(() => dt.root.setU32('x', -1), { code: 'FDT_INVALID' });
  assert.throws(() => dt.root.setU32('x', 2 ** 32), { code: 'FDT_INVALID' });
  assert.throws(() => dt.root.setU64('x', 1n << 64n), { code: 'FDT_INVALID' });
  assert.throws(() => dt.root.setString('x', 'a\0b'), { code: 'FDT_INVALID' });
  assert.throws(() => dt.root.setEmpty('bad name'), { code: 'FDT_INVALID' });
  assert.throws(() => dt.reserve(0n, 0n), { code: 'FDT_INVALID' });
});

test('phandles are unique and stable per node', () => {
  const dt = new DeviceTree();
  const a = dt.root.addNode('a');
  const b = dt.root.addNode('b');
  assert.equal(a.phandle(), 1);
  assert.equal(b.phandle(), 2);
  assert.equal(a.phandle(), 1);
  assert.equal(dt.node('/b'), b);
});
