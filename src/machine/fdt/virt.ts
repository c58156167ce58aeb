// The device tree handed to Linux in a1 at boot, shaped like the one QEMU generates for its
// riscv `virt` board so the stock Debian kernel finds every device with its usual drivers.

import { DeviceTree, type FdtNode } from './writer.js';
import { FdtError } from './errors.js';
import {
  VIRT_CLINT, VIRT_PLIC, VIRT_RTC, VIRT_TEST, VIRT_TIMEBASE_FREQUENCY, VIRT_UART0, VIRT_VIRTIO, virtioSlot,
} from '../devices/virt-map.js';

export interface VirtConfig {
  ramBase: bigint;
  ramSize: bigint;
  hartCount: number;
  /** ISA extensions, lower case: single letters ("i", "m", ...) and multi-letter ("zicsr"). */
  isaExtensions: string[];
  bootargs: string;
  initrd?: { start: bigint; end: bigint };
  /** Populated virtio-mmio slots (0..7). */
  virtio?: { index: number }[];
}

const IRQ_M_SOFT = 3;
const IRQ_M_TIMER = 7;
const IRQ_S_EXT = 9;
const IRQ_M_EXT = 11;
/** Canonical order of single-letter extensions in an ISA string (unprivileged spec §28). */
const SINGLE_ORDER = 'imafdqlcbkjtpvh';
const CACHE_BLOCK_PROPS: Record<string, string> = {
  zicbom: 'riscv,cbom-block-size', zicboz: 'riscv,cboz-block-size', zicbop: 'riscv,cbop-block-size',
};

export const VIRT_STDOUT_PATH = `/soc/serial@${VIRT_UART0.base.toString(16)}`;

export function buildVirtDeviceTree(cfg: VirtConfig): Uint8Array {
  validate(cfg);
  const extensions = canonicalExtensions(cfg.isaExtensions);
  const dt = new DeviceTree();
  const root = dt.root;
  root.setU32('#address-cells', 2).setU32('#size-cells', 2)
    .setString('compatible', 'riscv-virtio').setString('model', 'riscv-virtio,ferry');

  const intcs = addCpus(root.addNode('cpus'), cfg.hartCount, extensions);

  root.addNode(`memory@${cfg.ramBase.toString(16)}`)
    .setString('device_type', 'memory')
    .setU64Array('reg', [cfg.ramBase, cfg.ramSize]);

  const soc = root.addNode('soc');
  soc.setU32('#address-cells', 2).setU32('#size-cells', 2)
    .setString('compatible', 'simple-bus').setEmpty('ranges');

  const plic = soc.addNode(`plic@${hex(VIRT_PLIC.base)}`);
  plic.setU32('#address-cells', 0).setU32('#interrupt-cells', 1).setEmpty('interrupt-controller')
    .setStringList('compatible', ['sifive,plic-1.0.0', 'riscv,plic0'])
    .setU32('riscv,ndev', VIRT_PLIC.sourceCount)
    .setU64Array('reg', [BigInt(VIRT_PLIC.base), BigInt(VIRT_PLIC.size)])
    // Context order 2h (M) then 2h+1 (S) per hart: the Plic device numbers them the same way.
    .setU32Array('interrupts-extended', intcs.flatMap((p) => [p, IRQ_M_EXT, p, IRQ_S_EXT]));
  const plicHandle = plic.phandle();

  soc.addNode(`clint@${hex(VIRT_CLINT.base)}`)
    .setStringList('compatible', ['sifive,clint0', 'riscv,clint0'])
    .setU64Array('reg', [BigInt(VIRT_CLINT.base), BigInt(VIRT_CLINT.size)])
    .setU32Array('interrupts-extended', intcs.flatMap((p) => [p, IRQ_M_SOFT, p, IRQ_M_TIMER]));

  const test = soc.addNode(`test@${hex(VIRT_TEST.base)}`)
    .setStringList('compatible', ['sifive,test1', 'sifive,test0', 'syscon'])
    .setU64Array('reg', [BigInt(VIRT_TEST.base), BigInt(VIRT_TEST.size)]);
  const testHandle = test.phandle();

  soc.addNode(`rtc@${hex(VIRT_RTC.base)}`)
    .setString('compatible', 'google,goldfish-rtc')
    .setU64Array('reg', [BigInt(VIRT_RTC.base), BigInt(VIRT_RTC.size)])
    .setU32('interrupt-parent', plicHandle).setU32('interrupts', VIRT_RTC.irq);

  soc.addNode(`serial@${hex(VIRT_UART0.base)}`)
    .setString('compatible', 'ns16550a')
    .setU64Array('reg', [BigInt(VIRT_UART0.base), BigInt(VIRT_UART0.size)])
    .setU32('clock-frequency', VIRT_UART0.clockFrequency)
    .setU32('interrupt-parent', plicHandle).setU32('interrupts', VIRT_UART0.irq);

  // Ascending slot order: Linux probes in tree order, so slot 0 becomes the first disk (vda).
  for (const { index } of [...(cfg.virtio ?? [])].sort((a, b) => a.index - b.index)) {
    const slot = virtioSlot(index);
    soc.addNode(`virtio_mmio@${hex(slot.base)}`)
      .setString('compatible', 'virtio,mmio')
      .setU64Array('reg', [BigInt(slot.base), BigInt(slot.size)])
      .setU32('interrupt-parent', plicHandle).setU32('interrupts', slot.irq);
  }

  root.addNode('poweroff').setString('compatible', 'syscon-poweroff')
    .setU32('regmap', testHandle).setU32('offset', 0).setU32('value', 0x5555);
  root.addNode('reboot').setString('compatible', 'syscon-reboot')
    .setU32('regmap', testHandle).setU32('offset', 0).setU32('value', 0x7777);

  const chosen = root.addNode('chosen');
  chosen.setString('bootargs', cfg.bootargs).setString('stdout-path', VIRT_STDOUT_PATH);
  if (cfg.initrd) {
    chosen.setU64('linux,initrd-start', cfg.initrd.start).setU64('linux,initrd-end', cfg.initrd.end);
  }
  root.addNode('aliases').setString('serial0', VIRT_STDOUT_PATH);

  return dt.toBytes(0);
}

/** Adds cpu@N nodes; returns each hart's interrupt-controller phandle. */
function addCpus(cpus: FdtNode, hartCount: number, extensions: string[]): number[] {
  cpus.setU32('#address-cells', 1).setU32('#size-cells', 0)
    .setU32('timebase-frequency', VIRT_TIMEBASE_FREQUENCY);
  const intcs: number[] = [];
  const cpuHandles: number[] = [];
  for (let h = 0; h < hartCount; h++) {
    const cpu = cpus.addNode(`cpu@${h}`);
    cpuHandles.push(cpu.phandle());
    cpu.setString('device_type', 'cpu').setU32('reg', h).setString('status', 'okay')
      .setString('compatible', 'riscv')
      .setString('riscv,isa', isaString(extensions))
      .setString('riscv,isa-base', 'rv64i')
      .setStringList('riscv,isa-extensions', extensions)
      .setString('mmu-type', 'riscv,sv39');
    for (const ext of extensions) {
      const prop = CACHE_BLOCK_PROPS[ext];
      if (prop) cpu.setU32(prop, 64);
    }
    const intc = cpu.addNode('interrupt-controller');
    // #address-cells 0 is what the binding allows and keeps dtc's interrupt_provider check quiet.
    intc.setU32('#address-cells', 0).setU32('#interrupt-cells', 1).setEmpty('interrupt-controller')
      .setString('compatible', 'riscv,cpu-intc');
    intcs.push(intc.phandle());
  }
  const cluster = cpus.addNode('cpu-map').addNode('cluster0');
  cpuHandles.forEach((p, h) => cluster.addNode(`core${h}`).setU32('cpu', p));
  return intcs;
}

/** Deduplicated, "g" expanded, in canonical order: single letters, then Z (by category
 * letter, then name), then S, then X extensions. */
export function canonicalExtensions(list: readonly string[]): string[] {
  const set = new Set<string>(['i']);
  for (const raw of list) {
    const e = raw.toLowerCase();
    if (!/^[a-z][a-z0-9]*$/.test(e)) throw new FdtError(`invalid ISA extension "${raw}"`);
    if (e === 'g') {
      for (const x of ['i', 'm', 'a', 'f', 'd', 'zicsr', 'zifencei']) set.add(x);
    } else if (e.length === 1) {
      if (!SINGLE_ORDER.includes(e)) throw new FdtError(`unknown single-letter ISA extension "${raw}"`);
      set.add(e);
    } else if (/^[zsx]/.test(e)) {
      set.add(e);
    } else {
      throw new FdtError(`multi-letter ISA extension "${raw}" must start with z, s or x`);
    }
  }
  const rank = (e: string): number[] => {
    if (e.length === 1) return [0, SINGLE_ORDER.indexOf(e)];
    const cls = 'zsx'.indexOf(e[0]!) + 1;
    const category = e[0] === 'z' ? SINGLE_ORDER.indexOf(e[1]!) : 0;
    return [cls, category < 0 ? SINGLE_ORDER.length : category];
  };
  return [...set].sort((a, b) => {
    const ra = rank(a);
    const rb = rank(b);
    return ra[0]! - rb[0]! || ra[1]! - rb[1]! || (a < b ? -1 : a > b ? 1 : 0);
  });
}

export function isaString(canonical: readonly string[]): string {
  const singles = canonical.filter((e) => e.length === 1).join('');
  const multis = canonical.filter((e) => e.length > 1);
  return ['rv64' + singles, ...multis].join('_');
}

function validate(cfg: VirtConfig): void {
  if (!Number.isInteger(cfg.hartCount) || cfg.hartCount < 1 || cfg.hartCount > 512) {
    throw new FdtError(`hart count ${cfg.hartCount} not in 1..512`);
  }
  if (cfg.ramSize <= 0n || cfg.ramBase < 0n) throw new FdtError('RAM base/size invalid');
  if (cfg.initrd && (cfg.initrd.start < 0n || cfg.initrd.end < cfg.initrd.start)) {
    throw new FdtError('initrd end precedes start');
  }
  const seen = new Set<number>();
  for (const { index } of cfg.virtio ?? []) {
    if (!Number.isInteger(index) || index < 0 || index >= VIRT_VIRTIO.count) {
      throw new FdtError(`virtio slot ${index} not in 0..${VIRT_VIRTIO.count - 1}`);
    }
    if (seen.has(index)) throw new FdtError(`virtio slot ${index} listed twice`);
    seen.add(index);
  }
}

function hex(n: number): string {
  return n.toString(16);
}
