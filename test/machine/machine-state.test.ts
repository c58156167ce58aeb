// Machine.save()/restore(): a whole machine (hart, interrupt controllers, UART, RTC, virtio
// transports, guest time) restored into a fresh Machine continues as the original would;
// pause() stops run() without finishing the machine; bad or mismatched states are refused
// before anything changes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { bareMachine, buildBare, runToEnd } from '../support/bare.js';
import { Machine, type MachineOptions, type MachineState } from '../../src/machine/boot/machine.js';
import { VirtioRng } from '../../src/machine/devices/virtio/rng.js';
import { VirtioBlock } from '../../src/machine/devices/virtio/block.js';
import { MemoryBlockBackend } from '../../src/storage/memory.js';
import { FerryError } from '../../src/errors.js';

const text = (chunks: Uint8Array[]) => Buffer.concat(chunks).toString('latin1');
const elf = () => readFileSync(buildBare(['state-roundtrip.c'], 'state-roundtrip'));

const bare = (out: Uint8Array[], extra: Partial<MachineOptions> = {}): Machine => bareMachine(elf(), out, extra);


/** The state minus guest time, which moves while a stopped machine's clock is not frozen. */
function timeless(s: MachineState): Omit<MachineState, 'clock'> {
  const { clock: _clock, ...rest } = s;
  return rest;
}

function reference(): string {
  const out: Uint8Array[] = [];
  runToEnd(bare(out));
  return text(out);
}

function code(e: unknown): string {
  return e instanceof FerryError ? e.code : `not a FerryError: ${String(e)}`;
}

test('a machine restored mid-run into a fresh Machine continues identically', () => {
  const expected = reference();
  assert.match(expected, /DONE\n$/);
  const first: Uint8Array[] = [];
  const a = bare(first);
  for (let i = 0; i < 3; i++) a.vcpu.run(50_000);
  const saved = JSON.parse(JSON.stringify(a.save())) as MachineState;
  assert.deepEqual(Object.keys(saved).sort(), ['clint', 'clock', 'config', 'cpu', 'plic', 'rtc', 'uart', 'virtio']);

  const second: Uint8Array[] = [];
  const b = bare(second);
  b.memory.write(b.memory.ramBase, a.memory.bytes);
  b.restore(saved);
  assert.deepEqual(timeless(b.save()), timeless(saved));
  runToEnd(b);
  assert.ok(text(first).length > 0 && !text(first).includes('DONE'), 'the save falls mid-run');
  assert.equal(text(first) + text(second), expected);
});

test('pause() ends run() with a paused exit, freezes guest time, and run() continues', async () => {
  const expected = reference();
  const out: Uint8Array[] = [];
  let m: Machine | undefined;
  let refusedWhileRunning = '';
  // Asked from inside a slice (the UART's output callback), as a host event would be.
  const console = {
    write: (b: Uint8Array) => {
      out.push(b.slice());
      if (text(out).includes('1000 ') && !refusedWhileRunning) {
        assert.equal(m!.isRunning, true);
        try { m!.save(); } catch (e) { refusedWhileRunning = code(e); }
        m!.pause();
      }
    },
    onInput() {},
  };
  m = new Machine({ ramBytes: 64 << 20, console, boot: { kind: 'bare', elf: elf() } });
  assert.deepEqual(await m.run(), { kind: 'paused' });
  assert.equal(refusedWhileRunning, 'MACHINE_RUNNING');
  assert.equal(m.isRunning, false);
  assert.ok(!text(out).includes('DONE'), 'paused mid-run');

  const t0 = m.clock.ticks();
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(m.clock.ticks(), t0, 'guest time stands still while paused');
  assert.equal(m.save().clock.ticks, String(t0));

  assert.deepEqual(await m.run(), { kind: 'poweroff' });
  assert.equal(text(out), expected);
  assert.ok(m.clock.ticks() > t0, 'guest time runs again after run()');
});

test('restore sets guest time to the saved ticks and holds it until run()', async () => {
  const a = bare([]);
  a.vcpu.run(10_000);
  a.clock.set(123_456_789);
  a.pause();
  const s = a.save();
  assert.ok(Number(s.clock.ticks) - 123_456_789 < 10_000, s.clock.ticks);
  const b = bare([]);
  b.memory.write(b.memory.ramBase, a.memory.bytes);
  await new Promise((r) => setTimeout(r, 20));
  b.restore(s);
  const t = b.clock.ticks();
  assert.ok(t >= Number(s.clock.ticks) && t < Number(s.clock.ticks) + 10_000, `restored clock at ${t}`);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(b.clock.ticks(), t, 'frozen until run()');
});

test('restore refuses a state of a differently built machine, and changes nothing', () => {
  const a = bare([], { virtio: (mem) => [new VirtioRng(mem)] });
  a.vcpu.run(20_000);
  const s = JSON.parse(JSON.stringify(a.save())) as MachineState;
  assert.deepEqual(s.virtio.map((v) => [v.slot, v.kind, v.deviceId]), [[0, 'rng', 4]]);

  const target = bare([], { virtio: (mem) => [new VirtioBlock(mem, new MemoryBlockBackend(1 << 20))] });
  target.vcpu.run(5_000);
  target.pause();
  const before = target.save();
  const ram = Buffer.from(target.memory.bytes);
  const unchanged = () => {
    assert.deepEqual(target.save(), before);
    assert.ok(ram.equals(target.memory.bytes));
  };
  assert.throws(() => target.restore(s), (e) => code(e) === 'MACHINE_STATE_MISMATCH' && /slot 0 holds virtio-rng .* but virtio-blk/.test((e as Error).message));
  unchanged();

  const small = bare([], { ramBytes: 32 << 20 });
  assert.throws(() => small.restore(s), (e) => code(e) === 'MACHINE_STATE_MISMATCH' && /RAM/.test((e as Error).message));
  assert.throws(() => bare([]).restore(s), (e) => code(e) === 'MACHINE_STATE_MISMATCH' && /1 virtio device/.test((e as Error).message));

  // Well-formed but invalid values, in the last section restored and in the first: refused
  // whole, so the hart is not left restored while the PLIC refused.
  const same = bare([], { virtio: (mem) => [new VirtioBlock(mem, new MemoryBlockBackend(1 << 20))] });
  const good = JSON.parse(JSON.stringify(same.save())) as MachineState;
  same.vcpu.run(5_000);
  same.pause();
  const sameBefore = same.save();
  const bad: MachineState[] = [
    { ...good, plic: { ...good.plic, sources: good.plic.sources.map((x, i) => (i === 3 ? { ...x, priority: 9 } : x)) } },
    { ...good, virtio: [{ ...good.virtio[0]!, transport: { ...good.virtio[0]!.transport, interruptStatus: 99 } }] },
    { ...good, cpu: { ...good.cpu, pc: 'x' } },
    { ...good, uart: { ...good.uart, rxFifo: [300] } },
    { ...good, clock: { ticks: '-5' } },
    { ...good, rtc: undefined } as unknown as MachineState,
  ];
  for (const s2 of bad) {
    assert.throws(() => same.restore(s2), (e) => code(e) === 'DEVICE_STATE_INVALID', JSON.stringify(Object.keys(s2)));
    assert.deepEqual(same.save(), sameBefore);
  }
});
