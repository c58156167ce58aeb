// `ferry demo` (npm run demo): the project's main job so far. Boots the Debian guest, runs
// ferry's guest programs in it, and reports what it saw. Later milestones grow this into the
// live-migration demo.

import { parseFlags } from './args.js';
import { Machine } from '../machine/boot/machine.js';
import { ConsoleDriver, GUEST_PROMPT, GUEST_READY } from '../machine/console/shell.js';
import { ensureGuestImage } from '../guest/image.js';
import { guestBoot } from '../guest/boot.js';

export async function demoCommand(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, { json: { type: 'boolean' } });
  const say = (s: string) => { if (!values.json) console.log(s); };
  const image = await ensureGuestImage({ log: (m) => process.stderr.write(`ferry: ${m}\n`) });
  const driver = new ConsoleDriver();
  const t0 = performance.now();
  const machine = new Machine({
    ramBytes: 256 << 20, console: driver,
    boot: guestBoot(image),
  });
  const running = machine.run();
  try {
    const ready = await driver.waitFor(GUEST_READY, 300_000);
    await driver.waitFor(GUEST_PROMPT, 60_000, ready.index);
    const bootS = (performance.now() - t0) / 1000;
    say(`booted Debian ${image.kernelVersion} to a shell in ${bootS.toFixed(1)} s`);
    const steps: Record<string, { output: string; status: number }> = {};
    for (const [name, cmd] of [
      ['uname', 'uname -a'],
      ['heartbeat', 'heartbeat -i 200 -n 3'],
      ['memwriter', 'memwriter --wss-mib 16 --once'],
    ] as const) {
      steps[name] = await driver.exec(cmd, 120_000);
      say(`$ ${cmd}\n${steps[name]!.output.trimEnd()}`);
    }
    driver.send('poweroff\n');
    const exit = await running;
    const ok = Object.values(steps).every((s) => s.status === 0) && exit.kind === 'poweroff';
    const result = {
      boot_s: Math.round(bootS * 100) / 100,
      instructions: Number(machine.vcpu.instret),
      memory_verified: /verify ok/.test(steps.memwriter!.output),
      guest_exit: exit.kind,
      ok,
    };
    if (values.json) console.log(JSON.stringify(result));
    else say(ok ? 'demo ok' : 'demo FAILED');
    return ok ? 0 : 1;
  } catch (err) {
    machine.stop();
    await running;
    throw err;
  }
}
