// npm run bench:boot -- [--json] [--runs N]
// Boot time to the guest shell prompt, ferry (translating hot code, and interpreting only) vs
// qemu-system-riscv64 (same kernel, initramfs, memory and command line, same run), guest MIPS
// during boot, the JIT's compile-time share, host CPU use of an idle guest, and the slowdown of
// a write-heavy guest while the dirty log is cleared every 50 ms.

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
import { DEFAULT_JIT_THRESHOLD, type JitOptions } from '../machine/cpu/jit/jit.js';

const JIT: JitOptions = { threshold: DEFAULT_JIT_THRESHOLD };

const MEMORY_MIB = 256;


async function ferryBoot(kernel: Uint8Array, initrd: Uint8Array, idleSeconds: number, jit: JitOptions | false) {
  const driver = new ConsoleDriver();
  const t0 = performance.now();
  const m = new Machine({ ramBytes: MEMORY_MIB << 20, console: driver, boot: { kind: 'linux', kernel, initrd, cmdline: GUEST_CMDLINE }, jit });
  const running = m.run();
  const ready = await driver.waitFor(GUEST_READY, 300_000);
  await driver.waitFor(GUEST_PROMPT, 60_000, ready.index);
  const seconds = (performance.now() - t0) / 1000;
  const instructions = Number(m.vcpu.instret);
  const stats = m.vcpu.jitStats();
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
  return { seconds, instructions, idleCpu, compileMs: stats.compileMs, backgroundMs: stats.backgroundMs, translated: Number(stats.instructions) };
}

/** Runs the dirty-writer program to completion; with `clearMs`, reads and clears the dirty
 * log that often, as a migration's dirty-page rounds would. Returns wall seconds. It yields to
 * the event loop as often as the machine's own loop does, where compiled batches land. */
async function dirtyWriterRun(elf: Uint8Array, clearMs: number | undefined, jit: JitOptions | false): Promise<number> {
  const m = new Machine({ ramBytes: 64 << 20, console: { write() {}, onInput() {} }, boot: { kind: 'bare', elf }, jit });
  const pages = m.memory.pageCount;
  const t0 = performance.now();
  let nextClear = t0 + (clearMs ?? Infinity);
  let dirtySeen = 0;
  let lastYield = t0;
  for (;;) {
    const r = m.vcpu.run(100_000);
    if (performance.now() - lastYield >= 20) {
      await new Promise((resolve) => setImmediate(resolve));
      lastYield = performance.now();
    }
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
  const interpTimes: number[] = [];
  const qemuTimes: number[] = [];
  const mips: number[] = [];
  const mipsInterp: number[] = [];
  const compileShare: number[] = [];
  const backgroundMs: number[] = [];
  const translatedShare: number[] = [];
  let idleCpu = 0;
  for (let i = 0; i < runs; i++) {
    const f = await ferryBoot(kernel, initrd, i === 0 ? Number(values['idle-seconds']) : 0, JIT);
    ferryTimes.push(f.seconds);
    mips.push(f.instructions / f.seconds / 1e6);
    compileShare.push(f.compileMs / 1000 / f.seconds);
    backgroundMs.push(f.backgroundMs);
    translatedShare.push(f.translated / f.instructions);
    if (f.idleCpu !== undefined) idleCpu = f.idleCpu;
    log(`ferry boot (jit) ${f.seconds.toFixed(2)} s, ${(f.instructions / 1e9).toFixed(2)} G instructions, ${(100 * f.translated / f.instructions).toFixed(0)}% translated, compile ${(f.compileMs / 1000).toFixed(2)} s on the vCPU's thread, batches waited ${(f.backgroundMs / 1000).toFixed(2)} s in the background`);
    const n = await ferryBoot(kernel, initrd, 0, false);
    interpTimes.push(n.seconds);
    mipsInterp.push(n.instructions / n.seconds / 1e6);
    log(`ferry boot (interpreter) ${n.seconds.toFixed(2)} s`);
    const q = await qemuBoot(image.kernel, image.initramfs, { memoryMiB: MEMORY_MIB, cmdline: GUEST_CMDLINE, until: GUEST_PROMPT, timeoutMs: 300_000 });
    qemuTimes.push(q.seconds);
    log(`qemu  boot ${q.seconds.toFixed(2)} s`);
  }

  const elf = readFileSync(buildBareProgram('dirty-writer', [join(repoRoot(), 'src/bench/programs/dirty-writer.S')]));
  const off: number[] = [];
  const on: number[] = [];
  const offInterp: number[] = [];
  const onInterp: number[] = [];
  for (let i = 0; i < 3; i++) {
    off.push(await dirtyWriterRun(elf, undefined, JIT));
    on.push(await dirtyWriterRun(elf, 50, JIT));
    offInterp.push(await dirtyWriterRun(elf, undefined, false));
    onInterp.push(await dirtyWriterRun(elf, 50, false));
  }
  log(`dirty writer (jit): log untouched ${median(off).toFixed(3)} s, cleared every 50 ms ${median(on).toFixed(3)} s`);

  const result = {
    // With the JIT (the machine's fast path); the interpreter's figures beside them.
    ferry_boot_s: round(median(ferryTimes)),
    ferry_boot_interp_s: round(median(interpTimes)),
    qemu_boot_s: round(median(qemuTimes)),
    ratio: round(median(ferryTimes) / median(qemuTimes)),
    ratio_interp: round(median(interpTimes) / median(qemuTimes)),
    mips: round(median(mips)),
    mips_jit: round(median(mips)),
    mips_interp: round(median(mipsInterp)),
    jit_compile_share: round(median(compileShare), 4),
    // Summed wall time batches spent in V8's background compiler (blocks interpreted meanwhile).
    jit_background_ms: round(median(backgroundMs), 1),
    jit_translated_share: round(median(translatedShare), 4),
    jit_threshold: JIT.threshold,
    idle_cpu_fraction: round(idleCpu, 4),
    dirty_log_overhead: round(median(on) / median(off) - 1, 4),
    dirty_log_overhead_interp: round(median(onInterp) / median(offInterp) - 1, 4),
    dirty_writer_s: { log_off: round(median(off)), log_cleared_50ms: round(median(on)),
      interp_log_off: round(median(offInterp)), interp_log_cleared_50ms: round(median(onInterp)) },
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
