import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildVirtDeviceTree, canonicalExtensions, isaString } from '../../src/machine/fdt/virt.js';
import { DTC_MISSING, dtcAvailable, decompile, fdtget, strList } from './dtc.js';

const EXTS = ['i', 'm', 'a', 'f', 'd', 'c', 'zicsr', 'zifencei', 'zicntr', 'zihpm', 'zba', 'sstc', 'svadu'];

type Cfg = Parameters<typeof buildVirtDeviceTree>[0];

function blob(extra: Partial<Cfg> = {}): Uint8Array {
  return buildVirtDeviceTree({
    ramBase: 0x8000_0000n, ramSize: 0x1_0000_0000n, hartCount: 1, isaExtensions: EXTS,
    bootargs: 'console=ttyS0 earlycon root=/dev/vda1',
    initrd: { start: 0x8800_0000n, end: 0x8880_0000n },
    virtio: [{ index: 1 }, { index: 0 }],
    ...extra,
  });
}

function build(extra: Partial<Cfg> = {}): string {
  assert.ok(dtcAvailable(), DTC_MISSING);
  const { dts, warnings } = decompile(blob(extra));
  assert.equal(warnings.trim(), '', `dtc warnings:\n${warnings}`);
  return dts;
}

/** The body of the node whose header matches `header` (first match, braces balanced). */
function nodeBody(dts: string, header: string): string {
  const start = dts.indexOf(`${header} {`);
  assert.notEqual(start, -1, `node ${header} missing in:\n${dts}`);
  let depth = 0;
  for (let i = dts.indexOf('{', start); i < dts.length; i++) {
    if (dts[i] === '{') depth++;
    else if (dts[i] === '}' && --depth === 0) return dts.slice(start, i + 1);
  }
  throw new Error(`unbalanced node ${header}`);
}

test('ISA string: canonical order, g expanded, deduplicated', () => {
  const c = canonicalExtensions(['c', 'zifencei', 'd', 'zba', 'svadu', 'm', 'a', 'f', 'zicsr', 'sstc', 'zicsr', 'x_vendor'.replace('_', '')]);
  assert.deepEqual(c, ['i', 'm', 'a', 'f', 'd', 'c', 'zicsr', 'zifencei', 'zba', 'sstc', 'svadu', 'xvendor']);
  assert.equal(isaString(c), 'rv64imafdc_zicsr_zifencei_zba_sstc_svadu_xvendor');
  assert.deepEqual(canonicalExtensions(['g', 'c']), ['i', 'm', 'a', 'f', 'd', 'c', 'zicsr', 'zifencei']);
  assert.throws(() => canonicalExtensions(['y']), { code: 'FDT_INVALID' });
  assert.throws(() => canonicalExtensions(['foo']), { code: 'FDT_INVALID' });
});

test('cpus: what Linux needs to bring up hart 0', () => {
  const dts = build();
  const cpus = nodeBody(dts, 'cpus');
  assert.match(cpus, /timebase-frequency = <0x989680>;/);
  assert.match(cpus, /#address-cells = <0x01>;/);
  assert.match(cpus, /#size-cells = <0x00>;/);
  const cpu = nodeBody(cpus, 'cpu@0');
  assert.match(cpu, /device_type = "cpu";/);
  assert.match(cpu, /reg = <0x00>;/);
  assert.match(cpu, /status = "okay";/);
  assert.match(cpu, /compatible = "riscv";/);
  assert.match(cpu, /riscv,isa = "rv64imafdc_zicntr_zicsr_zifencei_zihpm_zba_sstc_svadu";/);
  assert.match(cpu, /riscv,isa-base = "rv64i";/);
  assert.match(cpu, new RegExp(`riscv,isa-extensions = ${strList('i', 'm', 'a', 'f', 'd', 'c', 'zicntr', 'zicsr', 'zifencei', 'zihpm', 'zba', 'sstc', 'svadu')};`));
  assert.match(cpu, /mmu-type = "riscv,sv39";/);
  const intc = nodeBody(cpu, 'interrupt-controller');
  assert.match(intc, /#interrupt-cells = <0x01>;/);
  assert.match(intc, /interrupt-controller;/);
  assert.match(intc, /compatible = "riscv,cpu-intc";/);
  assert.match(intc, /phandle = <0x02>;/);
  assert.match(nodeBody(cpus, 'core0'), /cpu = <0x01>;/);
});

test('memory, chosen and aliases', () => {
  const dts = build();
  assert.match(dts, /#address-cells = <0x02>;\s*#size-cells = <0x02>;/);
  const mem = nodeBody(dts, 'memory@80000000');
  assert.match(mem, /device_type = "memory";/);
  assert.match(mem, /reg = <0x00 0x80000000 0x01 0x00>;/);
  const chosen = nodeBody(dts, 'chosen');
  assert.match(chosen, /bootargs = "console=ttyS0 earlycon root=\/dev\/vda1";/);
  assert.match(chosen, /stdout-path = "\/soc\/serial@10000000";/);
  assert.match(chosen, /linux,initrd-start = <0x00 0x88000000>;/);
  assert.match(chosen, /linux,initrd-end = <0x00 0x88800000>;/);
  assert.match(nodeBody(dts, 'aliases'), /serial0 = "\/soc\/serial@10000000";/);
  assert.doesNotMatch(build({ initrd: undefined }), /initrd/);
});

test('soc devices at the QEMU virt addresses, wired to the PLIC', () => {
  const dts = build();
  const soc = nodeBody(dts, 'soc');
  assert.match(soc, /compatible = "simple-bus";/);
  assert.match(soc, /ranges;/);
  assert.match(soc, /#address-cells = <0x02>;/);
  const plic = nodeBody(soc, 'plic@c000000');
  assert.match(plic, new RegExp(`compatible = ${strList('sifive,plic-1.0.0', 'riscv,plic0')};`));
  assert.match(plic, /riscv,ndev = <0x5f>;/);
  assert.match(plic, /reg = <0x00 0xc000000 0x00 0x600000>;/);
  assert.match(plic, /interrupts-extended = <0x02 0x0b 0x02 0x09>;/);
  assert.match(plic, /interrupt-controller;/);
  assert.match(plic, /#interrupt-cells = <0x01>;/);
  const plicPhandle = /phandle = <(0x[0-9a-f]+)>;/.exec(plic)![1]!;
  const clint = nodeBody(soc, 'clint@2000000');
  assert.match(clint, new RegExp(`compatible = ${strList('sifive,clint0', 'riscv,clint0')};`));
  assert.match(clint, /reg = <0x00 0x2000000 0x00 0x10000>;/);
  assert.match(clint, /interrupts-extended = <0x02 0x03 0x02 0x07>;/);
  const uart = nodeBody(soc, 'serial@10000000');
  assert.match(uart, /compatible = "ns16550a";/);
  assert.equal(fdtget(blob(), '/soc/serial@10000000', 'clock-frequency', 'u'), '3686400');
  assert.match(uart, /reg = <0x00 0x10000000 0x00 0x100>;/);
  assert.match(uart, /interrupts = <0x0a>;/);
  assert.match(uart, new RegExp(`interrupt-parent = <${plicPhandle}>;`));
  const rtc = nodeBody(soc, 'rtc@101000');
  assert.match(rtc, /compatible = "google,goldfish-rtc";/);
  assert.match(rtc, /interrupts = <0x0b>;/);
  const testDev = nodeBody(soc, 'test@100000');
  assert.match(testDev, new RegExp(`compatible = ${strList('sifive,test1', 'sifive,test0', 'syscon')};`));
  const testPhandle = /phandle = <(0x[0-9a-f]+)>;/.exec(testDev)![1]!;
  const poweroff = nodeBody(dts, 'poweroff');
  assert.match(poweroff, /compatible = "syscon-poweroff";/);
  assert.match(poweroff, new RegExp(`regmap = <${testPhandle}>;`));
  assert.match(poweroff, /offset = <0x00>;/);
  assert.match(poweroff, /value = <0x5555>;/);
  const reboot = nodeBody(dts, 'reboot');
  assert.match(reboot, /compatible = "syscon-reboot";/);
  assert.match(reboot, /value = <0x7777>;/);
  const v0 = nodeBody(soc, 'virtio_mmio@10001000');
  assert.match(v0, /compatible = "virtio,mmio";/);
  assert.match(v0, /reg = <0x00 0x10001000 0x00 0x1000>;/);
  assert.match(v0, /interrupts = <0x01>;/);
  assert.match(nodeBody(soc, 'virtio_mmio@10002000'), /interrupts = <0x02>;/);
  assert.ok(soc.indexOf('virtio_mmio@10001000') < soc.indexOf('virtio_mmio@10002000'), 'slot order');
  assert.doesNotMatch(soc, /virtio_mmio@10003000/);
});

test('two harts: one cpu-intc each, PLIC contexts M/S per hart in order', () => {
  const dts = build({ hartCount: 2 });
  const cpus = nodeBody(dts, 'cpus');
  const p0 = /phandle = <(0x[0-9a-f]+)>;/.exec(nodeBody(nodeBody(cpus, 'cpu@0'), 'interrupt-controller'))![1]!;
  const p1 = /phandle = <(0x[0-9a-f]+)>;/.exec(nodeBody(nodeBody(cpus, 'cpu@1'), 'interrupt-controller'))![1]!;
  assert.notEqual(p0, p1);
  assert.match(nodeBody(dts, 'plic@c000000'),
    new RegExp(`interrupts-extended = <${p0} 0x0b ${p0} 0x09 ${p1} 0x0b ${p1} 0x09>;`));
});

test('configuration errors are FDT_INVALID', () => {
  const base = { ramBase: 0x8000_0000n, ramSize: 0x1000_0000n, hartCount: 1, isaExtensions: ['i'], bootargs: '' };
  assert.throws(() => buildVirtDeviceTree({ ...base, virtio: [{ index: 8 }] }), { code: 'FDT_INVALID' });
  assert.throws(() => buildVirtDeviceTree({ ...base, virtio: [{ index: 2 }, { index: 2 }] }), { code: 'FDT_INVALID' });
  assert.throws(() => buildVirtDeviceTree({ ...base, hartCount: 0 }), { code: 'FDT_INVALID' });
  assert.throws(() => buildVirtDeviceTree({ ...base, initrd: { start: 2n, end: 1n } }), { code: 'FDT_INVALID' });
});
