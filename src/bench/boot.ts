// npm run bench:boot -- [--json] [--runs N]
// Boot time to the guest shell prompt, ferry vs qemu-system-riscv64 (same kernel, initramfs,
// memory and command line, same run), guest MIPS during boot, host CPU use of an idle guest,
// and the slowdown of a write-heavy guest while the dirty log is cleared every 50 ms.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ensureGuestImage } from '../guest/image.js';
import { repoRoot } from '../guest/paths.js';
import { GUEST_CMDLINE } from '../guest/cmdline.js';
import { buildBareProgram } from '../guest/bare/build.js';
import { Machine } from '../machine/boot/machine.js';
import { ConsoleDriver, GUEST_PROMPT, GUEST_READY } from '../machine/console/shell.js';
import { ExitReason } from '../machine/cpu/exports.js';
import { qemuBoot } from './qemu.js';
import { median } from './stats.js';

const MEMORY_MIB = 256;


async function ferryBoot(kernel: Uint8Array, initrd: Uint8Array, idleSeconds: number) {
  const driver = new ConsoleDriver();
  const t0 = performance.now();
  const m = new Machine({ ramBytes: MEMORY_MIB << 20, console: driver, boot: { kind: 'linux', kernel, initrd, cmdline: GUEST_CMDLINE } });
  const running = m.run();
  const ready = await driver.waitFor(GUEST_READY, 300_000);
  await driver.waitFor(GUEST_PROMPT, 60_000, ready.index);
  const seconds = (performance.now() - t0) / 1000;
  const instructions = Number(m.vcpu.instret);
  let idleCpu: number | undefined;
  if (idleSeconds > 0) {
    // Let the shell settle, then measure this process's CPU time against wall time.
    await new Promise((r) => setTimeout(r, 2000));
    const c0 = process.cpuUsage();
    const w0 = performance.now();
    await new Promise((r) => setTimeout(r, idleSeconds * 1000));
    const c = process.cpuUsage(c0);
    idleCpu = (c.user + c.system) / 1000 / (performance.now() - w0);
  }
  m.stop();
  await running;
  return { seconds, instructions, idleCpu };
}

/** Runs the dirty-writer program to completion; with `clearMs`, reads and clears the dirty
 * log that often, as a migration's dirty-page rounds would. Returns wall seconds. */
function dirtyWriterRun(elf: Uint8Array, clearMs: number | undefined): number {
  const m = new Machine({ ramBytes: 64 << 20, console: { write() {}, onInput() {} }, boot: { kind: 'bare', elf } });
  const pages = m.memory.pageCount;
  const t0 = performance.now();
  let nextClear = t0 + (clearMs ?? Infinity);
  let dirtySeen = 0;
  for (;;) {
    const r = m.vcpu.run(100_000);
    if (r === ExitReason.Request || r === ExitReason.Fatal) break;
    if (clearMs !== undefined && performance.now() >= nextClear) {
      const log = m.harvestDirtyLog();
      for (let i = 0; i < pages; i++) dirtySeen += log[i]!;
      nextClear = performance.now() + clearMs;
    }
  }
  if (clearMs !== undefined && dirtySeen === 0) throw new Error('dirty log saw no writes');
  return (performance.now() - t0) / 1000;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { json: { type: 'boolean' }, runs: { type: 'string', default: '1' }, 'idle-seconds': { type: 'string', default: '10' } } });
  const runs = Math.max(1, Number(values.runs));
  const log = (s: string) => { if (!values.json) console.log(s); else process.stderr.write(s + '\n'); };
  const image = await ensureGuestImage({ log });
  const kernel = readFileSync(image.kernel);
  const initrd = readFileSync(image.initramfs);

  const ferryTimes: number[] = [];
  const qemuTimes: number[] = [];
  const mips: number[] = [];
  let idleCpu = 0;
  for (let i = 0; i < runs; i++) {
    const f = await ferryBoot(kernel, initrd, i === 0 ? Number(values['idle-seconds']) : 0);
    ferryTimes.push(f.seconds);
    mips.push(f.instructions / f.seconds / 1e6);
    if (f.idleCpu !== undefined) idleCpu = f.idleCpu;
    log(`ferry boot ${f.seconds.toFixed(2)} s, ${(f.instructions / 1e9).toFixed(2)} G instructions`);
    const q = await qemuBoot(image.kernel, image.initramfs, { memoryMiB: MEMORY_MIB, cmdline: GUEST_CMDLINE, until: GUEST_PROMPT, timeoutMs: 300_000 });
    qemuTimes.push(q.seconds);
    log(`qemu  boot ${q.seconds.toFixed(2)} s`);
  }

  const elf = readFileSync(buildBareProgram('dirty-writer', [join(repoRoot(), 'src/bench/programs/dirty-writer.S')]));
  const off: number[] = [];
  const on: number[] = [];
  for (let i = 0; i < 3; i++) {
    off.push(dirtyWriterRun(elf, undefined));
    on.push(dirtyWriterRun(elf, 50));
  }
  log(`dirty writer: log untouched ${median(off).toFixed(3)} s, cleared every 50 ms ${median(on).toFixed(3)} s`);

  const result = {
    ferry_boot_s: round(median(ferryTimes)),
    qemu_boot_s: round(median(qemuTimes)),
    ratio: round(median(ferryTimes) / median(qemuTimes)),
    mips: round(median(mips)),
    idle_cpu_fraction: round(idleCpu, 4),
    dirty_log_overhead: round(median(on) / median(off) - 1, 4),
    dirty_writer_s: { log_off: round(median(off)), log_cleared_50ms: round(median(on)) },
    runs,
    memory_mib: MEMORY_MIB,
    kernel: image.kernelVersion,
  };
  console.log(JSON.stringify(result));
}

function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

await main();
