// Running ferryd as a process: the real VM factory, signal handling, and a clean exit.

import { Daemon, isLoopback, parseListen, DEFAULT_LISTEN } from './daemon.js';
import { standbyVmFactory, type VmFactory } from './factory.js';

export interface RunDaemonOptions {
  readonly stateDir: string;
  readonly listen?: string;
  readonly migrationListen?: string;
  readonly factory?: VmFactory;
}

/** Serves until SIGTERM or SIGINT, then shuts down (VMs disposed, server closed). Returns the exit status. */
export async function runDaemon(options: RunDaemonOptions): Promise<number> {
  const listen = options.listen ?? DEFAULT_LISTEN;
  const log = (m: string): void => { process.stderr.write(`ferryd: ${m}\n`); };
  if (!isLoopback(parseListen(listen).host)) log(`warning: listening on ${listen}, reachable from other hosts (token-protected, not encrypted)`);
  const factory = options.factory ?? standbyVmFactory();
  let daemon: Daemon;
  try {
    daemon = await Daemon.start({
      stateDir: options.stateDir, listen, factory, log,
      ...(options.migrationListen !== undefined ? { migrationListen: options.migrationListen } : {}),
    });
  } catch (e) {
    await factory.close?.();
    throw e;
  }
  // Tests and scripts read these lines to learn the ports when listening on :0.
  process.stdout.write(`ferryd listening on ${daemon.url}\n`);
  process.stdout.write(`ferryd migrations on ${daemon.migrations.address}:${daemon.migrations.port}\n`);
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    const on = (s: NodeJS.Signals): void => {
      process.off('SIGTERM', on);
      process.off('SIGINT', on);
      resolve(s);
    };
    process.on('SIGTERM', on);
    process.on('SIGINT', on);
  });
  log(`${signal}: shutting down`);
  await daemon.close();
  await factory.close?.();
  log('stopped');
  return 0;
}
