// Differential ISA tests: bare-metal programs (test/guest-bare) run on QEMU's virt board
// and on ferry; their console output must be identical and end with DONE.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildBare, runOnFerry, runOnQemu } from '../support/bare.js';

/** Programs whose output is fully determined by the ISA (and the spec-pinned CSR bits). */
export const DIFF_PROGRAMS = ['isa-int', 'isa-rvc', 'isa-amo', 'isa-csr', 'mmu-sv39'];

function firstDifference(a: string, b: string): string {
  const la = a.split('\n'), lb = b.split('\n');
  for (let i = 0; i < Math.max(la.length, lb.length); i++) {
    if (la[i] !== lb[i]) return `line ${i + 1}:\n  qemu:  ${la[i] ?? '<missing>'}\n  ferry: ${lb[i] ?? '<missing>'}`;
  }
  return 'no difference';
}

for (const name of DIFF_PROGRAMS) {
  test(`${name}: ferry matches QEMU`, async () => {
    const elf = buildBare([`${name}.c`], name);
    const qemu = runOnQemu(elf);
    const ferry = await runOnFerry(elf);
    assert.match(qemu, /\nDONE\n$/, `QEMU did not finish ${name}:\n${qemu}`);
    assert.deepEqual(ferry.exit, { kind: 'poweroff' }, `ferry exit for ${name}; output:\n${ferry.output}`);
    assert.ok(qemu.split('\n').length > 5, `${name} printed too little`);
    assert.equal(ferry.output, qemu, `${name} differs from QEMU at ${firstDifference(qemu, ferry.output)}`);
  });
}
