// `ferry run`: boot a VM with the console on this terminal, or run one command in the guest
// (--exec) and exit with its status.

import { readFileSync } from 'node:fs';
import { parseFlags, parseMemory } from './args.js';
import { UsageError } from './errors.js';
import { TerminalConsole } from './terminal.js';
import { Machine, MachineExit, MachineOptions } from '../machine/boot/machine.js';
import type { GuestMemory } from '../machine/memory/guest-memory.js';
import { ConsoleDriver, GUEST_PROMPT, GUEST_READY } from '../machine/console/shell.js';
import { ensureGuestImage } from '../guest/image.js';
import { GUEST_CMDLINE } from '../guest/cmdline.js';
import { DeviceSpec, DeviceSpecError, VmDevices, parseDiskSpec, parseMac, parseNetSpec, randomMac } from '../vm/devices.js';
import { kernelCmdline } from '../vm/config.js';

const HELP = `usage: ferry run [options]

  -m, --memory SIZE     guest RAM, MiB or with unit (default 256)
      --kernel FILE     RISC-V Linux Image (default: the built guest image)
      --initramfs FILE  initramfs (default: the built guest image)
      --append ARGS     kernel command line (default "${GUEST_CMDLINE}")
      --disk SPEC       add a virtio disk: FILE[,ro], file:FILE[,ro] or nbd://HOST:PORT[/EXPORT]
                        (repeatable; the first is /dev/vda)
      --net tap[:BRIDGE]  add a virtio NIC on a new TAP device, joined to BRIDGE if given
      --mac MAC         the NIC's MAC address (default: random, locally administered)
      --ip ADDR/PREFIX[,GATEWAY]  configure the guest's eth0 at boot
      --exec CMD        run CMD in the guest shell, print its output, power off, exit with its status
      --timeout SEC     with --exec: give up after SEC seconds (default 300)`;

const FLAGS = {
  memory: { type: 'string', short: 'm', default: '256' },
  kernel: { type: 'string' },
  initramfs: { type: 'string' },
  append: { type: 'string', default: GUEST_CMDLINE },
  exec: { type: 'string' },
  disk: { type: 'string', multiple: true },
  net: { type: 'string' },
  mac: { type: 'string' },
  ip: { type: 'string' },
  timeout: { type: 'string', default: '300' },
  help: { type: 'boolean', short: 'h' },
} as const;

export async function runCommand(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, FLAGS);
  if (values.help) { console.log(HELP); return 0; }
  const ramBytes = parseMemory(values.memory);
  const timeoutS = Number(values.timeout);
  if (!Number.isFinite(timeoutS) || timeoutS <= 0) throw new UsageError(`invalid --timeout '${values.timeout}'`);
  if ((values.kernel === undefined) !== (values.initramfs === undefined) && values.kernel === undefined) {
    throw new UsageError('--initramfs needs --kernel');
  }
  let kernelPath = values.kernel;
  let initrdPath = values.initramfs;
  if (kernelPath === undefined) {
    const image = await ensureGuestImage({ log: (m) => process.stderr.write(`ferry: ${m}\n`) });
    kernelPath = image.kernel;
    initrdPath ??= image.initramfs;
  }
  const kernel = readFileSync(kernelPath);
  const initrd = initrdPath !== undefined ? readFileSync(initrdPath) : undefined;
  const spec = deviceSpec(values);
  const cmdline = ipCmdline(values.append, values.ip);
  const boot = { kind: 'linux', kernel, cmdline, ...(initrd ? { initrd } : {}) } as const;
  await using devices = await VmDevices.open(spec);
  const base = { ramBytes, boot, virtio: (mem: GuestMemory) => devices.models(mem) };

  if (values.exec !== undefined) return await runExec(base, values.exec, timeoutS * 1000);

  let machine: Machine | undefined;
  const terminal = new TerminalConsole(() => machine?.stop());
  try {
    machine = new Machine({ ...base, console: terminal });
    const exit = await machine.run();
    return report(exit);
  } finally {
    terminal.dispose();
  }
}

async function runExec(base: Omit<MachineOptions, 'console'>, command: string, timeoutMs: number): Promise<number> {
  const driver = new ConsoleDriver();
  const machine = new Machine({ ...base, console: driver });
  const running = machine.run();
  const deadline = setTimeout(() => machine.stop(), timeoutMs);
  try {
    const ready = await Promise.race([driver.waitFor(GUEST_READY, timeoutMs), running.then(guestDied)]);
    await driver.waitFor(GUEST_PROMPT, timeoutMs, ready.index);
    const result = await Promise.race([driver.exec(command, timeoutMs), running.then(guestDied)]);
    process.stdout.write(result.output);
    driver.send('poweroff -f\n');
    const exit = await running;
    if (exit.kind !== 'poweroff') report(exit);
    return result.status;
  } catch (err) {
    machine.stop();
    await running;
    throw err;
  } finally {
    clearTimeout(deadline);
  }
}

function deviceSpec(values: { disk?: string[]; net?: string; mac?: string }): DeviceSpec {
  try {
    if (values.mac !== undefined && values.net === undefined) throw new UsageError('--mac needs --net');
    const mac = values.mac !== undefined ? parseMac(values.mac) : randomMac();
    return {
      nets: values.net !== undefined ? [parseNetSpec(values.net, mac)] : [],
      disks: (values.disk ?? []).map(parseDiskSpec),
      rng: true,
      balloon: true,
    };
  } catch (err) {
    if (err instanceof DeviceSpecError) throw new UsageError(err.message);
    throw err;
  }
}

/** The command line with `--ip` as the guest init's kernel parameters (src/guest/init.sh). */
function ipCmdline(append: string, ip: string | undefined): string {
  try {
    return kernelCmdline(append, ip || undefined);
  } catch (err) {
    if (err instanceof DeviceSpecError) throw new UsageError(`invalid --ip '${ip}' (expected ADDR/PREFIX[,GATEWAY])`);
    throw err;
  }
}

function guestDied(exit: MachineExit): never {
  throw new UsageError(`guest stopped before the command finished (${describe(exit)})`);
}

function describe(exit: MachineExit): string {
  switch (exit.kind) {
    case 'fatal': return `fatal trap cause=0x${exit.cause.toString(16)} at pc=0x${exit.pc.toString(16)}`;
    case 'fail': return `guest reported failure ${exit.code}`;
    default: return exit.kind;
  }
}

function report(exit: MachineExit): number {
  if (exit.kind === 'poweroff' || exit.kind === 'stopped' || exit.kind === 'reboot') return 0;
  console.error(`ferry: ${describe(exit)}`);
  return 1;
}
