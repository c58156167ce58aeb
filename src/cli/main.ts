// `ferry` command dispatcher. Each subcommand parses its own flags; a bad flag is a usage
// error (exit 2) with a message that names it, never a stack trace.

import { runCommand } from './run.js';
import { imageCommand } from './image.js';
import { demoCommand } from './demo.js';
import { labCommand } from './lab.js';
import { FerryError } from '../errors.js';
import { UsageError } from './errors.js';

const USAGE = `usage: ferry <command> [options]

commands:
  run      boot a VM with its console on this terminal (Ctrl-A X quits), or run one command (--exec)
  image    build or inspect the guest image (kernel + initramfs)
  demo     boot the guest and run ferry's workload programs in it
  lab      build, remove or show the network-namespace lab of hosts (root)
  help     show this help

ferry <command> --help shows a command's options.`;

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'run': return await runCommand(rest);
      case 'image': return await imageCommand(rest);
      case 'demo': return await demoCommand(rest);
      case 'lab': return await labCommand(rest);
      case undefined: case 'help': case '--help': case '-h':
        console.log(USAGE);
        return cmd === undefined ? 2 : 0;
      default:
        console.error(`ferry: unknown command '${cmd}'\n\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`ferry ${cmd}: ${err.message}`);
      return 2;
    }
    if (err instanceof FerryError) {
      console.error(`ferry ${cmd}: ${err.message} [${err.code}]`);
      return 1;
    }
    throw err;
  }
}
