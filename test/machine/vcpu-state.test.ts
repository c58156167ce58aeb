// The hart's save()/restore(): a copy restored mid-computation continues exactly as the
// original does, and malformed state is refused before anything changes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { bareMachine, buildBare, runToEnd } from '../support/bare.js';
import type { VcpuState } from '../../src/machine/cpu/cpu-state.js';

const text = (chunks: Uint8Array[]) => Buffer.concat(chunks).toString('latin1');

test('a hart restored mid-run (mid-FP, custom frm) continues identically', () => {
  const elf = readFileSync(buildBare(['state-roundtrip.c'], 'state-roundtrip'));
  const reference: Uint8Array[] = [];
  const ref = bareMachine(elf, reference);
  runToEnd(ref);
  assert.match(text(reference), /DONE\n$/);

  const firstPart: Uint8Array[] = [];
  const a = bareMachine(elf, firstPart);
  a.vcpu.run(150_000); // somewhere in the middle of the loop
  const saved = JSON.parse(JSON.stringify(a.vcpu.save())) as VcpuState;
  assert.equal(saved.csr.fcsr, String(3 << 5 | Number(BigInt(saved.csr.fcsr) & 31n)), 'frm=RUP is in the saved fcsr');

  const secondPart: Uint8Array[] = [];
  const b = bareMachine(elf, secondPart);
  b.memory.write(b.memory.ramBase, a.memory.bytes);
  b.uart.restore(a.uart.save());
  b.vcpu.restore(saved);
  runToEnd(b);
  assert.ok(text(firstPart).length > 0 && text(secondPart).includes('\n'), 'the snapshot falls mid-output');
  assert.equal(text(firstPart) + text(secondPart), text(reference));
});

test('restore refuses malformed state and leaves the hart untouched', () => {
  const elf = readFileSync(buildBare(['state-roundtrip.c'], 'state-roundtrip'));
  const m = bareMachine(elf, []);
  m.vcpu.run(1000);
  const good = m.vcpu.save();
  const bad = [
    { ...good, x: good.x.slice(1) },
    { ...good, priv: 2 },
    { ...good, pc: '-1' },
    { ...good, csr: { ...good.csr, satp: 'zz' } },
    { ...good, f: [...good.f.slice(0, 31), String(1n << 64n)] },
  ];
  for (const s of bad) {
    assert.throws(() => m.vcpu.restore(s as VcpuState), /cpu: field/);
    assert.deepEqual(m.vcpu.save(), good);
  }
});
