// Differential ISA tests: bare-metal programs (test/guest-bare) run on QEMU's virt board
// and on ferry; their console output must be identical and end with DONE. Lines starting
// with "~" print values the spec leaves to the implementation (or where QEMU 7.2 deviates
// from the spec): they are not compared with QEMU, but ferry's are pinned below.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildBare, CPU_MODES, runOnFerry, runOnQemu } from '../support/bare.js';

const FERRY_ONLY: Record<string, string[]> = {
  'isa-int': [],
  'isa-rvc': [],
  'isa-amo': [
    // AMOs and SC raise store/AMO exceptions (QEMU 7.2: cause 4 for AMOs, no trap for a
    // misaligned SC without a matching reservation).
    '~amoadd.w+2 cause=0000000000000006 tval-off=0000000000000002 mem=1010101010101010',
    '~amoadd.d+4 cause=0000000000000006 tval-off=0000000000000004 mem=1010101010101010',
    '~amoswap.w+1 cause=0000000000000006 tval-off=0000000000000001 mem=1010101010101010',
    '~sc.d+4-after-lr.d cause=0000000000000006 tval-off=0000000000000004 mem=1010101010101010',
  ],
  'isa-csr': [
    '~mstatus-ones-full=8000000a007e79a2 zeros-full=0000000a00000000',
    '~mpp-2=0000000000000000',
    '~misa-full=800000000014112d',
    '~medeleg-11=0000000000000000 medeleg-full=000000000000b3ff mideleg-full=0000000000000222',
    '~mtvec-mode2=0000000080002000 mtvec-mode3=0000000080003000',
    '~mepc-odd=0000000080000006',
    '~mie-full=0000000000000aaa',
    '~ebreak-tval-is-pc=0000000000000001',
  ],
  'mmu-sv39': [],
};

function lines(s: string): string[] {
  return s.split('\n').map((l) => l.trimEnd());
}
function firstDifference(a: string[], b: string[]): string {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i] !== b[i]) return `line ${i + 1}:\n  qemu:  ${a[i] ?? '<missing>'}\n  ferry: ${b[i] ?? '<missing>'}`;
  }
  return 'no difference';
}

const qemuOutput = new Map<string, string>();
function qemuOf(name: string, elf: string): string {
  let out = qemuOutput.get(name);
  if (out === undefined) { out = runOnQemu(elf); qemuOutput.set(name, out); }
  return out;
}

for (const mode of CPU_MODES) {
  for (const [name, ferryOnly] of Object.entries(FERRY_ONLY)) {
    test(`${name}: ferry matches QEMU (${mode.name})`, async () => {
      const elf = buildBare([`${name}.c`], name);
      const qemu = qemuOf(name, elf);
      const ferry = await runOnFerry(elf, { jit: mode.jit });
      assert.match(qemu, /\nDONE\n?$/, `QEMU did not finish ${name}:\n${qemu}`);
      assert.deepEqual(ferry.exit, { kind: 'poweroff' }, `ferry exit for ${name}; output:\n${ferry.output}`);
      const q = lines(qemu), f = lines(ferry.output);
      assert.ok(q.length > 10, `${name} printed too little`);
      const qc = q.filter((l) => !l.startsWith('~')), fc = f.filter((l) => !l.startsWith('~'));
      assert.deepEqual(fc, qc, `${name} differs from QEMU at ${firstDifference(qc, fc)}`);
      assert.equal(fc[fc.length - 1] === '' ? fc[fc.length - 2] : fc[fc.length - 1], 'DONE');
      assert.deepEqual(f.filter((l) => l.startsWith('~')), ferryOnly, `${name}: implementation-defined values changed`);
      const ran = ferry.machine.vcpu.jitStats().instructions;
      // At the default threshold a short program may finish before any block turns hot.
      if (mode.jit && mode.jit.threshold === 1) assert.ok(ran > 0n, `${name}: the JIT ran no instructions`);
      if (!mode.jit) assert.equal(ran, 0n);
    });
  }
}
