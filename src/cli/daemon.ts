// `ferry daemon`: run ferryd in the foreground until SIGTERM/SIGINT.

import { parseFlags } from './args.js';
import { defaultStateDir, GlobalOptions } from './vm.js';
import { DEFAULT_LISTEN, DEFAULT_MIGRATION_PORT, parseListen } from '../host/daemon.js';
import { runDaemon } from '../host/main.js';
import { FerryError } from '../errors.js';
import { UsageError } from './errors.js';

const HELP = `usage: ferry daemon [--state DIR] [--listen HOST:PORT] [--migration-listen HOST:PORT]

  --state DIR         where VM configs and the API token live (default $FERRY_STATE or
                      ~/.local/state/ferry); the token is DIR/token, created on first start
  --listen HOST:PORT  address to serve the API on (default ${DEFAULT_LISTEN}; anything but
                      loopback exposes the API to the network, guarded only by the token)
  --migration-listen HOST:PORT
                      where incoming migrations connect (default: the API's host, port
                      ${DEFAULT_MIGRATION_PORT}); each needs a one-time token from this daemon's API`;

export async function daemonCommand(argv: string[], globals: GlobalOptions = {}): Promise<number> {
  const { values } = parseFlags(argv, {
    state: { type: 'string' },
    listen: { type: 'string', default: DEFAULT_LISTEN },
    'migration-listen': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) { console.log(HELP); return 0; }
  try {
    parseListen(values.listen);
    if (values['migration-listen'] !== undefined) parseListen(values['migration-listen']);
  } catch (err) {
    if (err instanceof FerryError) throw new UsageError(err.message);
    throw err;
  }
  return runDaemon({
    stateDir: values.state ?? globals.state ?? defaultStateDir(), listen: values.listen,
    ...(values['migration-listen'] !== undefined ? { migrationListen: values['migration-listen'] } : {}),
  });
}
