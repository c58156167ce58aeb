// Real VMs migrated between two Vm objects in one process, over loopback TCP: an nbdkit memory
// export for a swap device, and a destination that reserves incoming VMs as a daemon would.

import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer, type Server } from 'node:net';
import { Vm } from '../../src/vm/vm.js';
import { MigrationReceiver, type IncomingHost } from '../../src/migration/engine/receiver.js';
import type { MigrationReport } from '../../src/migration/engine/report.js';
import { TokenIssuer } from '../../src/migration/protocol/auth.js';
import { PAGE_COMPRESSIONS } from '../../src/migration/compression/index.js';
import type { VmConfig } from '../../src/vm/types.js';

/** nbdkit's memory plugin on 127.0.0.1:`port`, once it accepts connections. */
export async function startNbdkitMemory(port: number, size = '256M'): Promise<ChildProcess> {
  const child = spawn('nbdkit', ['-f', '-p', String(port), '-i', '127.0.0.1', 'memory', size], { stdio: ['ignore', 'ignore', 'pipe'] });
  for (let i = 0; i < 100; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (up) return child;
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  throw new Error('nbdkit did not start (apt-get install nbdkit)');
}

/** A destination: reserves incoming VMs, records the receiver's report and any loss. */
export class LoopbackDestination {
  readonly issuer = new TokenIssuer();
  readonly server: Server;
  vm: Vm | undefined;
  report: Promise<MigrationReport> | undefined;
  lostReason: string | undefined;
  port = 0;

  constructor() {
    const host: IncomingHost = {
      issuer: this.issuer,
      reserve: async (m) => { this.vm = await Vm.incoming(m.config as unknown as VmConfig, 'test'); return this.vm; },
      discard: async (t) => { await (t as Vm).dispose(); },
      adopt: () => undefined,
      inDoubt: () => undefined,
      lost: async (t, reason) => { this.lostReason = reason; await (t as Vm).abandon(reason); },
    };
    this.server = createServer((sock) => { this.report = new MigrationReceiver(sock, host, { compressions: PAGE_COMPRESSIONS }).run(); });
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
    return this.port;
  }
}
