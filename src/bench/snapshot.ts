// npm run bench:snapshot -- [--json]
// Stop-and-copy, the first strawman of Clark et al., with ferry's daemons in the lab: a 256 MiB
// guest serving the UDP game stream on host-a is paused, snapshotted to shared storage,
// stopped, and restored on host-b. Reports the snapshot's save and restore times and size,
// the gap the client host saw in the game stream, and whether the guest lives on after.

import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Lab, type HostName } from '../lab/lab.js';
import { ensureGuestImage } from '../guest/image.js';
import { repoRoot } from '../guest/paths.js';

const FERRY = join(repoRoot(), 'bin/ferry.js');
const API = 'http://127.0.0.1:7480';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { json: { type: 'boolean' } } });
  const log = (s: string) => (values.json ? process.stderr : process.stdout).write(s + '\n');
  await ensureGuestImage({ log });
  const work = mkdtempSync(join(tmpdir(), 'ferry-bench-snap-'));
  const lab = await Lab.up({ prefix: `fs${process.pid % 10000}-` });
  try {
    const state: Record<'host-a' | 'host-b', string> = { 'host-a': join(work, 'a'), 'host-b': join(work, 'b') };
    for (const host of ['host-a', 'host-b'] as const) {
      lab.spawn(host, process.execPath, [FERRY, 'daemon', '--state', state[host], '--listen', '127.0.0.1:7480'], { stdio: 'ignore' });
    }
    const vm = async (host: 'host-a' | 'host-b', ...args: string[]): Promise<unknown> => {
      const r = await lab.exec(host, process.execPath, [FERRY, '--state', state[host], 'vm', ...args, '--json'], { timeoutMs: 600_000 });
      return JSON.parse(r.stdout.trim() || 'null') as unknown;
    };
    for (const host of ['host-a', 'host-b'] as const) await waitFor(() => existsSync(join(state[host], 'token')), 30_000, `${host}'s daemon`);
    await sleep(500);

    const address = lab.vmAddress(0);
    const create = ['create', 'g', '--memory', '256', '--net', 'tap:br0', '--mac', lab.vmMac(0)];
    await vm('host-a', ...create, '--ip', `${address}/${lab.prefixLength},${lab.address('host-a')}`);
    await vm('host-b', ...create, '--ip', `${address}/${lab.prefixLength},${lab.address('host-b')}`);
    await vm('host-a', 'start', 'g');
    await waitFor(async () => (await lab.ping('client', address, { timeoutS: 1 })) !== null, 300_000, 'the guest on the LAN');
    await typeOnConsole(lab, 'host-a', state['host-a'], 'gameserver >/dev/null 2>&1 &\n');

    const probe = lab.spawn('client', process.execPath, [join(repoRoot(), 'dist/src/bench/game-probe.js'), address, '30'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let probeOut = '';
    probe.stdout!.on('data', (b: Buffer) => { probeOut += b.toString(); });
    const probeDone = new Promise<void>((r) => probe.once('exit', () => r()));
    await sleep(5000);

    const file = join(work, 'g.snap');
    const t0 = performance.now();
    await vm('host-a', 'pause', 'g');
    const saved = await vm('host-a', 'snapshot', 'g', file) as { bytes: number; ms: number };
    await vm('host-a', 'stop', 'g');
    const r0 = performance.now();
    await vm('host-b', 'restore', file, '--name', 'g');
    const restoreMs = performance.now() - r0;
    const totalMs = performance.now() - t0;
    log(`stop-and-copy: ${totalMs.toFixed(0)} ms (save ${saved.ms} ms, restore ${restoreMs.toFixed(0)} ms, ${(saved.bytes / 1048576).toFixed(1)} MiB)`);

    await probeDone;
    const game = JSON.parse(probeOut.trim()) as { received: number; lost: number; maxGapMs: number; lastSeq: number };
    const page = await lab.exec('client', 'curl', ['-s', '-m', '20', `http://${address}/`], { allowFailure: true });
    const alive = /ferry guest/.test(page.stdout) && game.received > 0;
    log(`client: ${JSON.stringify(game)}; page after restore: ${alive ? 'served' : 'NOT served'}`);
    await vm('host-b', 'stop', 'g');
    console.log(JSON.stringify({
      save_ms: saved.ms,
      restore_ms: Math.round(restoreMs),
      file_bytes: saved.bytes,
      memory_mib: 256,
      guest_alive_after: alive,
      stop_and_copy_downtime_ms: Math.round(game.maxGapMs),
      stop_and_copy_total_ms: Math.round(totalMs),
      client_packets_received: game.received,
      client_packets_lost: game.lost,
    }));
  } finally {
    await lab.down();
    rmSync(work, { recursive: true, force: true });
  }
}

/** Types into a VM's console through the daemon's API (the console's POST route). */
async function typeOnConsole(lab: Lab, host: HostName, stateDir: string, text: string): Promise<void> {
  const token = readFileSync(join(stateDir, 'token'), 'utf8').trim();
  await lab.exec(host, 'curl', ['-sf', '-H', `Authorization: Bearer ${token}`, '-H', 'content-type: application/json',
    '-d', JSON.stringify({ text }), `${API}/v1/vms/g/console`]);
}

async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

function sleep(ms: number): Promise<void> { return new Promise((r) => setTimeout(r, ms)); }

await main();
