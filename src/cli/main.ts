// `ferry` command dispatcher. Each subcommand parses its own flags; a bad flag is a usage
// error (exit 2) with a message that names it, never a stack trace.

import { runCommand } from './run.js';
import { imageCommand } from './image.js';
import { demoCommand } from './demo.js';
import { labCommand } from './lab.js';
import { daemonCommand } from './daemon.js';
import { vmCommand, GlobalOptions } from './vm.js';
import { migrateCommand } from './migrate.js';
import { wwsCommand } from './wws.js';
import { FerryError } from '../errors.js';
import { UsageError } from './errors.js';

const USAGE = `usage: ferry <command> [options]

commands:
  run      boot a VM with its console on this terminal (Ctrl-A X quits), or run one command (--exec)
  image    build or inspect the guest image (kernel + initramfs)
  demo     boot the guest and run ferry's workload programs in it
  lab      build, remove or show the network-namespace lab of hosts (root)
  daemon   run ferryd, the host daemon that owns this host's VMs
  vm       manage VMs through ferryd: list, show, create, start, stop, console, snapshot, ...
  migrate  live-migrate a VM to another ferryd (--to URL); list, show or cancel migrations
  wws      measure a VM's writable working set: pages its guest dirties per interval
  help     show this help

global options (before the command):
  --host URL     ferryd to talk to (default http://127.0.0.1:7480)
  --token T      its API token (default $FERRY_TOKEN, or read from --state DIR/token)
  --state DIR    the daemon's state directory

ferry <command> --help shows a command's options.`;

const GLOBAL_FLAGS = new Set(['host', 'token', 'state']);

/** Splits `--host URL` and friends off the front of argv: they come before the command. */
function globalOptions(argv: string[]): { globals: GlobalOptions; rest: string[] } {
  const globals: GlobalOptions = {};
  let i = 0;
  while (i < argv.length) {
    const m = /^--([a-z]+)(?:=(.*))?$/s.exec(argv[i]!);
    if (!m || !GLOBAL_FLAGS.has(m[1]!)) break;
    const value = m[2] ?? argv[i + 1];
    if (value === undefined) throw new UsageError(`option '--${m[1]}' needs a value`);
    globals[m[1] as keyof GlobalOptions] = value;
    i += m[2] !== undefined ? 1 : 2;
  }
  return { globals, rest: argv.slice(i) };
}

export async function main(argv: string[]): Promise<number> {
  let cmd: string | undefined;
  try {
    const { globals, rest: args } = globalOptions(argv);
    const [first, ...rest] = args;
    cmd = first;
    switch (cmd) {
      case 'run': return await runCommand(rest);
      case 'image': return await imageCommand(rest);
      case 'demo': return await demoCommand(rest);
      case 'lab': return await labCommand(rest);
      case 'daemon': return await daemonCommand(rest, globals);
      case 'vm': return await vmCommand(rest, globals);
      case 'migrate': return await migrateCommand(rest, globals);
      case 'wws': return await wwsCommand(rest, globals);
      case undefined: case 'help': case '--help': case '-h':
        console.log(USAGE);
        return cmd === undefined ? 2 : 0;
      default:
        console.error(`ferry: unknown command '${cmd}'\n\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(cmd === undefined ? `ferry: ${err.message}` : `ferry ${cmd}: ${err.message}`);
      return 2;
    }
    if (err instanceof FerryError) {
      console.error(`ferry ${cmd}: ${err.message} [${err.code}]`);
      return 1;
    }
    throw err;
  }
}
