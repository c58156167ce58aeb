// Boots the real Debian guest on ferry's machine and talks to its shell.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ensureGuestImage } from '../../src/guest/image.js';
import { Machine } from '../../src/machine/boot/machine.js';
import { ConsoleDriver, GUEST_PROMPT, GUEST_READY } from '../../src/machine/console/shell.js';
import { guestBoot } from '../../src/guest/boot.js';
import { DEFAULT_JIT_THRESHOLD } from '../../src/machine/cpu/jit/jit.js';

test('the Debian guest boots to a shell, runs commands and powers off (interpreter)', { timeout: 600_000 }, async () => {
  const image = await ensureGuestImage();
  const driver = new ConsoleDriver();
  const machine = new Machine({
    ramBytes: 256 << 20,
    console: driver,
    boot: guestBoot(image),
    jit: false,
  });
  const running = machine.run();
  try {
    const ready = await driver.waitFor(GUEST_READY, 300_000);
    await driver.waitFor(GUEST_PROMPT, 60_000, ready.index);

    const uname = await driver.exec('uname -m', 30_000);
    assert.equal(uname.status, 0);
    assert.equal(uname.output.trim(), 'riscv64');

    const isa = await driver.exec('grep -m1 ^isa /proc/cpuinfo', 30_000);
    assert.match(isa.output, /rv64imafdc/);

    const failing = await driver.exec('sh -c "exit 7"', 30_000);
    assert.equal(failing.status, 7);

    // User-mode rdtime (vDSO clock_gettime) and FP printf: the heartbeat exercises both.
    const hb = await driver.exec('heartbeat -i 100 -n 3', 60_000);
    assert.equal(hb.status, 0, hb.output);
    const beats = [...hb.output.matchAll(/^heartbeat (\d+) ([\d.]+) /gm)].map((m) => [Number(m[1]), Number(m[2])]);
    assert.deepEqual(beats.map((b) => b[0]), [1, 2, 3]);
    assert.ok(beats[2]![1]! > beats[0]![1]!, 'guest monotonic clock advances');

    const mw = await driver.exec('memwriter --wss-mib 8 --once', 120_000);
    assert.equal(mw.status, 0, mw.output);
    assert.match(mw.output, /memwriter: verify ok pages=2048/);

    // An idle guest sleeps in WFI: the host process must not spin. The bench reports the
    // exact figure; this bound only catches busy polling.
    await new Promise((r) => setTimeout(r, 1000));
    const c0 = process.cpuUsage();
    const w0 = performance.now();
    await new Promise((r) => setTimeout(r, 3000));
    const c = process.cpuUsage(c0);
    const fraction = (c.user + c.system) / 1000 / (performance.now() - w0);
    assert.ok(fraction < 0.25, `idle guest used ${(fraction * 100).toFixed(1)}% of a core`);

    driver.send('poweroff\n');
    const exit = await running;
    assert.deepEqual(exit, { kind: 'poweroff' });
  } finally {
    machine.stop();
    await running;
  }
});

test('the Debian guest boots and runs under the JIT, and powers off', { timeout: 600_000 }, async () => {
  const image = await ensureGuestImage();
  const driver = new ConsoleDriver();
  const machine = new Machine({ ramBytes: 256 << 20, console: driver, boot: guestBoot(image), jit: { threshold: DEFAULT_JIT_THRESHOLD } });
  const running = machine.run();
  try {
    const ready = await driver.waitFor(GUEST_READY, 300_000);
    await driver.waitFor(GUEST_PROMPT, 60_000, ready.index);
    const uname = await driver.exec('uname -m', 30_000);
    assert.equal(uname.output.trim(), 'riscv64');
    // User code, a fork and exec per line, FP printf, rdtime: hot code in user mode too.
    const sum = await driver.exec('i=0; s=0; while [ $i -lt 2000 ]; do s=$((s+i*i)); i=$((i+1)); done; echo $s', 120_000);
    assert.equal(sum.output.trim(), String(Array.from({ length: 2000 }, (_, i) => i * i).reduce((a, b) => a + b, 0)));
    const hb = await driver.exec('heartbeat -i 50 -n 3', 60_000);
    assert.equal(hb.status, 0, hb.output);
    const mw = await driver.exec('memwriter --wss-mib 8 --once', 120_000);
    assert.match(mw.output, /memwriter: verify ok pages=2048/);
    const stats = machine.vcpu.jitStats();
    assert.ok(stats.instructions * 2n > machine.vcpu.instret, `only ${stats.instructions} of ${machine.vcpu.instret} instructions ran translated`);
    driver.send('poweroff\n');
    assert.deepEqual(await running, { kind: 'poweroff' });
  } finally {
    machine.stop();
    await running;
  }
});
