// The virtio-mmio transport driven register by register, with a trivial device, including the
// malformed rings a hostile or buggy guest can build.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { VirtioDevice, VirtioDeviceContext } from '../../src/machine/devices/virtio/device.js';
import { readChain, writeChain } from '../../src/machine/devices/virtio/queue.js';
import {
  Reg, VIRTIO_MAGIC, F_VERSION_1, F_INDIRECT_DESC, STATUS_DRIVER_OK, STATUS_FEATURES_OK, STATUS_NEEDS_RESET,
  INT_USED_BUFFER, INT_CONFIG_CHANGE, DESC_F_NEXT, DESC_F_WRITE, DESC_F_INDIRECT,
} from '../../src/machine/devices/virtio/constants.js';
import { GuestMemory } from '../../src/machine/memory/guest-memory.js';
import { VirtioMmio } from '../../src/machine/devices/virtio/mmio.js';
import { makeMemory, TestDriver } from './virtio-driver.js';

const F_TEST = 1n << 0n;

/** Reverses the readable bytes of each chain into its writable part. */
class EchoDevice implements VirtioDevice<{ served: number }> {
  readonly name = 'echo';
  readonly deviceId = 42;
  readonly features = F_TEST | F_INDIRECT_DESC;
  readonly queueSizes = [16];
  served = 0;
  ctx: VirtioDeviceContext | undefined;
  constructor(private readonly memory: GuestMemory) {}
  readConfig(offset: number): number { return offset === 0 ? 0xabcd : 0; }
  writeConfig(): void {}
  activate(ctx: VirtioDeviceContext): void { this.ctx = ctx; }
  reset(): void { this.ctx = undefined; }
  notify(queue: number): void {
    const q = this.ctx!.queues[queue]!;
    for (let c = q.pop(); c; c = q.pop()) {
      const data = readChain(this.memory, c.readable).reverse();
      q.push(c.head, writeChain(this.memory, c.writable, data));
      this.served++;
    }
    this.ctx!.notifyUsed(queue);
  }
  save(): { served: number } { return { served: this.served }; }
  restore(s: { served: number }, ctx: VirtioDeviceContext | undefined): void {
    if (!Number.isInteger(s.served) || s.served < 0) throw new Error('bad echo state');
    this.served = s.served;
    this.ctx = ctx;
  }
}

function setup(): { d: TestDriver; dev: EchoDevice } {
  const memory = makeMemory();
  const dev = new EchoDevice(memory);
  return { d: new TestDriver(dev, memory), dev };
}

test('identification registers and configuration space', () => {
  const { d } = setup();
  assert.equal(d.read(Reg.MagicValue), VIRTIO_MAGIC);
  assert.equal(d.read(Reg.Version), 2);
  assert.equal(d.read(Reg.DeviceId), 42);
  assert.equal(d.transport.read(Reg.Config, 4), 0xabcd);
  assert.equal(d.deviceFeatures(), F_TEST | F_INDIRECT_DESC | F_VERSION_1);
});

test('feature negotiation refuses unoffered bits and a driver without VERSION_1', () => {
  const { d } = setup();
  assert.equal(d.negotiate(F_VERSION_1 | (1n << 7n)), false, 'unoffered bit');
  assert.equal(d.negotiate(F_TEST), false, 'no VERSION_1');
  assert.equal(d.negotiate(F_VERSION_1 | F_TEST), true);
  // Once FEATURES_OK is set, the accepted set is frozen.
  d.write(Reg.DriverFeaturesSel, 0);
  d.write(Reg.DriverFeatures, 0);
  assert.equal((d.transport.save().driverFeatures), (F_VERSION_1 | F_TEST).toString());
});

test('notify fills the used ring, raises the line; InterruptACK lowers it; reset clears queues', () => {
  const { d, dev } = setup();
  d.bringUp(1);
  assert.equal(d.status & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
  const inb = d.buf(Uint8Array.of(1, 2, 3));
  const out = d.buf(8, true);
  const head = d.post(0, [inb, out]);
  assert.equal(d.irq.level, false);
  d.kick(0);
  assert.deepEqual(d.used(0), [{ id: head, len: 3 }]);
  assert.deepEqual([...d.memory.read(out.addr, 3)], [3, 2, 1]);
  assert.equal(d.read(Reg.InterruptStatus), INT_USED_BUFFER);
  assert.equal(d.irq.level, true);
  d.write(Reg.InterruptAck, INT_USED_BUFFER);
  assert.equal(d.irq.level, false);
  assert.equal(d.read(Reg.InterruptStatus), 0);
  assert.equal(dev.served, 1);

  d.write(Reg.Status, 0);
  assert.equal(d.status, 0);
  assert.equal(dev.ctx, undefined);
  d.write(Reg.QueueSel, 0);
  assert.equal(d.read(Reg.QueueReady), 0);
  assert.equal(d.transport.queues[0]!.descAddr, 0n);
});

test('interrupt suppression (VIRTQ_AVAIL_F_NO_INTERRUPT) and indirect descriptors', () => {
  const { d } = setup();
  d.bringUp(1);
  const q = d.q(0);
  d.memory.writeU16(q.avail, 1);
  const inb = d.buf(Uint8Array.of(9, 8));
  const out = d.buf(4, true);
  const table = d.alloc(32);
  const wr = (i: number, addr: bigint, len: number, flags: number, next: number): void => {
    const a = table + BigInt(16 * i);
    d.memory.writeU64(a, addr); d.memory.writeU32(a + 8n, len); d.memory.writeU16(a + 12n, flags); d.memory.writeU16(a + 14n, next);
  };
  wr(0, inb.addr, inb.len, DESC_F_NEXT, 1);
  wr(1, out.addr, out.len, DESC_F_WRITE, 0);
  d.writeDesc(0, 0, table, 32, DESC_F_INDIRECT, 0);
  d.publish(0, 0);
  d.kick(0);
  assert.deepEqual(d.used(0), [{ id: 0, len: 2 }]);
  assert.deepEqual([...d.memory.read(out.addr, 2)], [8, 9]);
  assert.equal(d.irq.level, false, 'suppressed');
  assert.equal(d.transport.needsReset, false);
});

interface Case {
  name: string;
  build(d: TestDriver): void;
}

const malformed: Case[] = [
  { name: 'buffer outside RAM', build: (d) => { d.writeDesc(0, 0, 0x1000n, 64, DESC_F_WRITE, 0); d.publish(0, 0); } },
  { name: 'buffer straddling the end of RAM', build: (d) => { d.writeDesc(0, 0, d.memory.ramBase + BigInt(d.memory.ramSize) - 8n, 64, 0, 0); d.publish(0, 0); } },
  {
    name: 'descriptor loop',
    build: (d) => { const b = d.buf(4, true); d.writeDesc(0, 0, b.addr, 4, DESC_F_WRITE | DESC_F_NEXT, 1); d.writeDesc(0, 1, b.addr, 4, DESC_F_WRITE | DESC_F_NEXT, 0); d.publish(0, 0); },
  },
  { name: 'next index out of range', build: (d) => { const b = d.buf(4, true); d.writeDesc(0, 0, b.addr, 4, DESC_F_WRITE | DESC_F_NEXT, 100); d.publish(0, 0); } },
  { name: 'head index out of range', build: (d) => { d.publish(0, 16); } },
  {
    name: 'readable after writable',
    build: (d) => { const b = d.buf(4, true); d.writeDesc(0, 0, b.addr, 4, DESC_F_WRITE | DESC_F_NEXT, 1); d.writeDesc(0, 1, b.addr, 4, 0, 0); d.publish(0, 0); },
  },
  { name: 'indirect table with bad length', build: (d) => { const t = d.alloc(32); d.writeDesc(0, 0, t, 20, DESC_F_INDIRECT, 0); d.publish(0, 0); } },
  {
    name: 'indirect table outside RAM',
    build: (d) => { d.writeDesc(0, 0, d.memory.ramBase + BigInt(d.memory.ramSize) - 16n, 32, DESC_F_INDIRECT, 0); d.publish(0, 0); },
  },
  {
    name: 'indirect descriptor loop',
    build: (d) => {
      const t = d.alloc(32);
      const b = d.buf(4, true);
      for (let i = 0; i < 2; i++) {
        const a = t + BigInt(16 * i);
        d.memory.writeU64(a, b.addr); d.memory.writeU32(a + 8n, 4); d.memory.writeU16(a + 12n, DESC_F_WRITE | DESC_F_NEXT); d.memory.writeU16(a + 14n, 1 - i);
      }
      d.writeDesc(0, 0, t, 32, DESC_F_INDIRECT, 0);
      d.publish(0, 0);
    },
  },
  { name: 'avail index jumping past the queue size', build: (d) => { d.memory.writeU16(d.q(0).avail + 2n, 17); } },
];

for (const c of malformed) {
  test(`malformed ring: ${c.name} → NEEDS_RESET, config interrupt, log, no throw`, () => {
    const { d, dev } = setup();
    d.bringUp(1);
    c.build(d);
    assert.doesNotThrow(() => d.kick(0));
    assert.equal(d.status & STATUS_NEEDS_RESET, STATUS_NEEDS_RESET);
    assert.equal(d.read(Reg.InterruptStatus) & INT_CONFIG_CHANGE, INT_CONFIG_CHANGE);
    assert.equal(d.irq.level, true);
    assert.equal(d.logs.length, 1);
    assert.match(d.logs[0]!, /virtio-echo: .*needs reset/);
    assert.equal(dev.served, 0);
    // Further kicks are ignored until the driver resets the device; the reset recovers it.
    assert.doesNotThrow(() => d.kick(0));
    assert.equal(d.logs.length, 1);
    d.write(Reg.Status, 0);
    assert.equal(d.status, 0);
    assert.equal(d.irq.level, false);
    d.bringUp(1);
    const head = d.post(0, [d.buf(Uint8Array.of(5)), d.buf(1, true)]);
    d.kick(0);
    assert.deepEqual(d.used(0), [{ id: head, len: 1 }]);
  });
}

test('queue size not a power of two → NEEDS_RESET at QueueReady, logged, no throw', () => {
  const { d } = setup();
  assert.ok(d.negotiate());
  d.write(Reg.QueueSel, 0);
  d.write(Reg.QueueNum, 3);
  assert.doesNotThrow(() => d.write(Reg.QueueReady, 1));
  assert.equal(d.read(Reg.QueueReady), 0);
  assert.equal(d.status & STATUS_NEEDS_RESET, STATUS_NEEDS_RESET);
  assert.equal(d.logs.length, 1);
  // Before DRIVER_OK the spec asks for no configuration-change notification (§2.1.2).
  assert.equal(d.irq.level, false);
  // Larger than QueueNumMax is refused the same way.
  d.write(Reg.Status, 0);
  assert.ok(d.negotiate());
  d.write(Reg.QueueNum, 32);
  d.write(Reg.QueueReady, 1);
  assert.equal(d.status & STATUS_NEEDS_RESET, STATUS_NEEDS_RESET);
  // A config-space access or an unknown register never throws either.
  assert.doesNotThrow(() => { d.transport.write(0x0ff, 1, 1); d.transport.read(0x05c, 2); d.kick(99); });
});

test('a guest error after DRIVER_OK bumps the configuration generation', () => {
  const { d } = setup();
  d.bringUp(1);
  assert.equal(d.status & STATUS_FEATURES_OK, STATUS_FEATURES_OK);
  d.memory.writeU16(d.q(0).avail + 2n, 40);
  d.kick(0);
  assert.equal(d.read(Reg.InterruptStatus), INT_CONFIG_CHANGE);
  const gen = d.read(Reg.ConfigGeneration);
  assert.ok(gen > 0, 'configuration generation moves with a config change');
});

test('save/restore mid-operation: posted but unprocessed buffers survive', () => {
  const { d, dev } = setup();
  d.bringUp(1);
  const first = d.post(0, [d.buf(Uint8Array.of(1, 2)), d.buf(2, true)]);
  d.kick(0);
  assert.equal(d.used(0).length, 1);
  void first;
  const out = d.buf(4, true);
  const head = d.post(0, [d.buf(Uint8Array.of(7, 6, 5, 4)), out]);
  // Not kicked yet: the snapshot is taken with the chain posted and unseen by the device.
  const state = JSON.parse(JSON.stringify(d.transport.save())) as ReturnType<VirtioMmio['save']>;

  const memory2 = makeMemory();
  memory2.bytes.set(d.memory.bytes);
  const dev2 = new EchoDevice(memory2);
  const d2 = d.cloneOnto(dev2, memory2);
  d2.transport.restore(state);
  assert.equal(dev2.served, 1);
  assert.equal(d2.status & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
  assert.equal(d2.irq.level, d.irq.level, 'line re-driven');
  d2.kick(0);
  assert.deepEqual(d2.used(0), [{ id: head, len: 4 }]);
  assert.deepEqual([...memory2.read(out.addr, 4)], [4, 5, 6, 7]);
  assert.equal(dev.served, 1, 'the source did not process it');

  // A corrupt snapshot is refused and leaves the transport as it was.
  const bad = { ...state, queues: [{ ...state.queues[0]!, size: 4096 }] };
  assert.throws(() => d2.transport.restore(bad), /queue\.size/);
  assert.equal(d2.status & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
  // So is one the device refuses: the transport's half must not stay applied.
  const before = JSON.stringify(d2.transport.save());
  assert.throws(() => d2.transport.restore({ ...state, status: 0, queueSel: 3, device: { served: -1 } }), /bad echo state/);
  assert.equal(JSON.stringify(d2.transport.save()), before);
});
