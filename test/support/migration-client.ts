// The client-host half of test/migration/failures.test.ts (run there with FERRY_LAB_SPEC set):
// boots the guest on host-a with memwriter, then runs the scenarios the test names on stdin,
// one line each, answering with JSON lines on stdout. For failures injected from outside (a
// killed daemon, a cut link) it says `precopy <id>` once the migration is copying and waits
// for the test to act.

import { createInterface } from 'node:readline';
import { labSpecFromEnv } from '../../src/lab/ferry-lab.js';
import { MigrationSession } from '../../src/lab/migration-session.js';

const session = new MigrationSession(labSpecFromEnv(), (s) => process.stderr.write(`client: ${s}\n`));
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const say = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
const next = async (): Promise<string> => (await lines.next()).value as string;

async function waitForPrecopy(id: string): Promise<void> {
  for (;;) {
    const v = await session.migration(id);
    // Past the first batches of round 1: the destination holds a reservation and some RAM.
    if (v.stage === 'precopy' && v.progress.pagesSent > 2000) return;
    if (v.report) throw new Error(`migration ended before pre-copy was under way: ${JSON.stringify(v.report.error)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function waitDestinationFreed(): Promise<boolean> {
  const end = Date.now() + 60_000;
  while (Date.now() < end) {
    if ((await session.vmState('host-b')) === null) return true;
    await new Promise((r) => setTimeout(r, 500));
  }
  return false;
}

try {
  await session.boot(256, { writer: { wssMib: 16, rate: 500 } });
  say({ ready: true });
  for (;;) {
    const scenario = await next();
    if (scenario === undefined || scenario === 'quit') break;
    if (scenario === 'success') {
      const m = await session.migrate({ bandwidth: '1G' });
      say({ scenario, outcome: m.report.outcome, error: m.report.error ?? null, host: session.host, sourceState: await session.vmState('host-a'), alive: m.guestAliveAfter, memory: m.memoryVerified });
      continue;
    }
    // A slow link keeps round 1 going for seconds, time enough to fail it.
    const m = await session.migrate({ bandwidth: '40Mbit' }, async (id) => {
      await waitForPrecopy(id);
      if (scenario === 'cancel') await session.cancel(id);
      else { say({ precopy: id }); await next(); }
    });
    // The test restores the link or the daemon before it lets us look at the destination.
    if (scenario !== 'cancel') { say({ injected: scenario }); await next(); }
    say({
      scenario, outcome: m.report.outcome, error: m.report.error ?? null, stage: m.report.stages.at(-1)?.stage ?? null,
      host: session.host, sourceState: await session.vmState('host-a'), alive: m.guestAliveAfter, memory: m.memoryVerified,
      destinationFreed: await waitDestinationFreed(),
    });
  }
} finally {
  await session.close();
  // stdin (the test's pipe) would keep the process alive.
  process.exit(0);
}
