// Sv39 MMU and trap behaviour on ferry: test/guest-bare/mmu-sv39.c builds page tables in
// M-mode and probes translation, A/D updates, permission faults (mcause/mtval), MXR, SUM,
// superpages, sfence.vma, MPRV and delegation from S and U mode. The expected output was
// checked line by line against the privileged spec (and matches QEMU 7.2: the program is
// also in the differential list of isa-diff.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildBare, CPU_MODES, runOnFerry } from '../support/bare.js';

const EXPECTED = [
  "mmu-sv39",
  "pte0-before flags=0000000000000007 ",
  "S load-4k cause=000000000000dead tval=000000000000dead val=1000000000000001 ",
  "pte0-after-load flags=0000000000000047 ",
  "S store-4k cause=000000000000dead tval=000000000000dead val=0000000000badbad ",
  "pte0-after-store flags=00000000000000c7 ",
  "pages0[2]=0000000000007777 ",
  "pte2m-before flags=0000000000000007 ",
  "S load-2m cause=000000000000dead tval=000000000000dead val=2222222222222222 ",
  "pte2m-after-load flags=0000000000000047 ",
  "S store-2m cause=000000000000dead tval=000000000000dead val=0000000000badbad ",
  "pte2m-after-store flags=00000000000000c7 ",
  "S load-1g-alias cause=000000000000dead tval=000000000000dead val=7000000000000005 ",
  "U load-1g-identity cause=000000000000dead tval=000000000000dead val=7000000000000006 ",
  "S load-invalid cause=000000000000000d tval=0000000040002008 val=0000000000badbad ",
  "S store-invalid cause=000000000000000f tval=0000000040002008 val=0000000000badbad ",
  "S exec-invalid cause=000000000000000c tval=0000000040002000 val=0000000000badbad ",
  "S load-unmapped-1g cause=000000000000000d tval=0000000000001000 val=0000000000badbad ",
  "S load-noncanonical cause=000000000000000d tval=0000008000000000 val=0000000000badbad ",
  "S load-reserved-w cause=000000000000000d tval=0000000040007000 val=0000000000badbad ",
  "S store-readonly cause=000000000000000f tval=0000000040001018 val=0000000000badbad ",
  "S load-readonly cause=000000000000dead tval=000000000000dead val=2000000000000003 ",
  "S exec-nonx cause=000000000000000c tval=0000000040000000 val=0000000000badbad ",
  "S exec-code cause=000000000000dead tval=000000000000dead val=000000000000002a ",
  "S load-xonly cause=000000000000000d tval=0000000040003020 val=0000000000badbad ",
  "S load-xonly-mxr cause=000000000000dead tval=000000000000dead val=3000000000000004 ",
  "S load-upage cause=000000000000000d tval=0000000040004028 val=0000000000badbad ",
  "S load-upage-sum cause=000000000000dead tval=000000000000dead val=4000000000000005 ",
  "S store-upage-sum cause=000000000000dead tval=000000000000dead val=0000000000badbad ",
  "S exec-upage-sum cause=000000000000000c tval=000000004000a800 val=0000000000badbad ",
  "U load-upage cause=000000000000dead tval=000000000000dead val=4000000000000005 ",
  "U exec-upage cause=000000000000dead tval=000000000000dead val=000000000000002b ",
  "U load-spage cause=000000000000000d tval=0000000040005008 val=0000000000badbad ",
  "U store-spage cause=000000000000000f tval=0000000040005008 val=0000000000badbad ",
  "U exec-spage cause=000000000000000c tval=0000000040009000 val=0000000000badbad ",
  "S load-misaligned-superpage cause=000000000000000d tval=0000000040400008 val=0000000000badbad ",
  "S load-outside-ram cause=0000000000000005 tval=0000000040006008 val=0000000000badbad ",
  "S store-outside-ram cause=0000000000000007 tval=0000000040006008 val=0000000000badbad ",
  "S load-misaligned-cross cause=000000000000dead tval=000000000000dead val=0000000000100000 ",
  "S store-misaligned cause=000000000000dead tval=000000000000dead val=0000000000badbad ",
  "pages0[32..33]=0504030201000020 1000000000080706",
  "S store-misaligned-cross-ro cause=000000000000000f tval=0000000040001000 val=0000000000badbad ",
  "pages0[511]=10000000000001ff ",
  "M load-outside-ram cause=0000000000000005 tval=0000000090000000 ",
  "M store-outside-ram cause=0000000000000007 tval=0000000090000010 ",
  "sfence-before=6000000000000000 after=7000000000000000 page=6000000000000000 ",
  "mprv-s-load=5000000000000002 ",
  "mprv-s-store=0000000000004242 ",
  "mprv-u-load=0000000000badbad cause=000000000000000d tval=0000000040005000 ",
  "deleg scause=000000000000000d stval=0000000040005000 sepc-ok=0000000000000001 count=0000000000000001 val=0000000000badbad mcause-untouched=0000000000000001 spp=0000000000000000 ",
  "DONE",
];

for (const mode of CPU_MODES) {
  test(`mmu-sv39: translation, A/D bits, page faults, sfence, MPRV and delegation (${mode.name})`, async () => {
    const elf = buildBare(['mmu-sv39.c'], 'mmu-sv39');
    const r = await runOnFerry(elf, { jit: mode.jit });
    assert.deepEqual(r.exit, { kind: 'poweroff' }, r.output);
    const got = r.output.split('\n').map((l) => l.trimEnd()).filter((l) => l.length > 0);
    assert.deepEqual(got, EXPECTED.map((l) => l.trimEnd()));
    if (mode.jit && mode.jit.threshold === 1) assert.ok(r.machine.vcpu.jitStats().instructions > 0n, 'the JIT ran no instructions');
  });
}
