// Migrations of a real guest that receives a flood of frames throughout its switches: ICMP
// echo requests every 2 ms from the host (5 s of them around each move), answered by the
// guest's kernel. The VM moves between
// two Vm objects whose TAPs sit on one bridge, five times in post-copy and five times in Agile
// (its swap device an nbdkit memory export), then once in pre-copy. Every move completes
// (no switch hangs on a frame that lands in an absent page), every echo request gets its reply
// (frames that reach the frozen source are carried to the destination), and the guest's
// memory is intact afterwards.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { wallClockMs } from '../../src/machine/clock.js';
import { fixedRate, parseRate } from '../../src/migration/precopy/rate.js';
import { Vm } from '../../src/vm/vm.js';
import { PrecopySender } from '../../src/migration/engine/sender.js';
import type { MigrationMode } from '../../src/migration/engine/modes.js';
import { ensureGuestImage } from '../../src/guest/image.js';
import { GUEST_PROMPT } from '../../src/machine/console/shell.js';
import type { VmConfig } from '../../src/vm/types.js';
import { attach } from '../support/console.js';
import { LoopbackDestination, startNbdkitMemory } from '../support/loopback-migration.js';

const BRIDGE = `fsw${process.pid % 100000}`;
/** Fixed, as the lab's: a bridge otherwise takes its lowest port's MAC, which changes as the
 * VMs' TAPs come and go, and the guest's replies to the cached one are dropped. */
const BRIDGE_MAC = '02:00:0a:51:00:01';
const HOST_IP = '10.81.0.1';
const GUEST_IP = '10.81.0.2';
const NBD_PORT = 15000 + (process.pid % 5000);
const PING_INTERVAL_S = 0.002;
/** 5 s of echo requests: longer than a move of this VM takes to reach its switch. */
const FLOOD_COUNT = 2500;

function ip(...args: string[]): void { execFileSync('ip', args, { stdio: 'ignore' }); }

/** `count` echo requests, one every PING_INTERVAL_S; resolves once ping has its last reply (or
 * gave up on it after 2 s) with what it counted, and when it started and ended. */
function flood(count: number): Promise<{ sent: number; received: number; startMs: number; endMs: number }> {
  const startMs = wallClockMs();
  return new Promise((resolve, reject) => {
    execFile('ping', ['-n', '-q', '-i', String(PING_INTERVAL_S), '-c', String(count), '-W', '2', GUEST_IP], (_err, stdout) => {
      // ping exits 1 when a reply is missing: the summary says how many.
      const m = /(\d+) packets transmitted, (\d+) received/.exec(stdout);
      if (!m) reject(new Error(`ping printed no summary: ${stdout}`));
      else resolve({ sent: Number(m[1]), received: Number(m[2]), startMs, endMs: wallClockMs() });
    });
  });
}

test('post-copy and Agile switches under a flood of frames: every move completes, every frame arrives', { timeout: 900_000 }, async () => {
  await ensureGuestImage({ log: () => undefined });
  const nbd = await startNbdkitMemory(NBD_PORT);
  ip('link', 'add', BRIDGE, 'type', 'bridge');
  const vms: Vm[] = [];
  try {
    ip('link', 'set', BRIDGE, 'address', BRIDGE_MAC);
    ip('addr', 'add', `${HOST_IP}/24`, 'dev', BRIDGE);
    ip('link', 'set', BRIDGE, 'up');
    const config: VmConfig = {
      name: 'flooded', memoryMiB: 256, nets: [{ mac: '02:00:0a:51:00:02', bridge: BRIDGE }], disks: [],
      ip: `${GUEST_IP}/24`, swap: `nbd://127.0.0.1:${NBD_PORT}`,
    };
    let vm = Vm.create(config, { agile: { epochMs: 500, coldEpochs: 4 } });
    vms.push(vm);
    const con = attach(vm);
    await vm.start();
    await con.waitFor(GUEST_PROMPT, 300_000);
    await con.exec('memwriter --wss-mib 32 --hot-mib 8 --rate 1000 --touch-ms 200 >/tmp/mw.log 2>&1 & true', 10_000);
    await con.waitFor(/memwriter: ready/, 60_000).catch(() => undefined);
    // Agile's tracker needs a few windows before anything is cold.
    await new Promise((r) => setTimeout(r, 4000));

    const move = async (mode: MigrationMode, i: number): Promise<void> => {
      const dst = new LoopbackDestination();
      const port = await dst.listen();
      try {
        // The flood starts before the migration and outlasts its switch (checked below).
        const ping = flood(FLOOD_COUNT);
        await new Promise((r) => setTimeout(r, 200));
        const report = await new PrecopySender({ source: vm, host: '127.0.0.1', port, token: dst.issuer.issue(), mode, rate: fixedRate(parseRate('1G')) }).run();
        const received = await dst.report!;
        const { sent, received: replies, startMs, endMs } = await ping;
        const what = `${mode} move ${i}`;
        assert.equal(report.outcome, 'completed', `${what}: ${JSON.stringify(report.error)}`);
        assert.equal(received.outcome, 'completed', `${what}: ${JSON.stringify(received.error)}`);
        assert.ok(report.switch, `${what}: the switch is reported`);
        const paused = report.switch.timeline.find((e) => e.event === 'paused')!.atMs;
        const done = report.switch.timeline.find((e) => e.event === 'done' && e.host === 'source')!.atMs;
        assert.ok(startMs < paused && done < endMs, `${what}: the flood ran through the switch`);
        assert.equal(sent, FLOOD_COUNT);
        const seen = (host: string, event: string) => report.switch!.timeline.find((e) => e.host === host && e.event === event)?.atMs;
        const t0 = seen('source', 'paused')!;
        const detail = JSON.stringify({ postcopy: report.postcopy, carried: report.switch.framesCarried, dropped: report.switch.framesDropped, downtimeMs: report.downtimeMs, timeline: report.switch.timeline.map((e) => `${e.host[0]}:${e.event}@${(e.atMs - t0).toFixed(1)}`), flood: [(startMs - t0).toFixed(0), (endMs - t0).toFixed(0)] });
        assert.equal(replies, sent, `${what}: every echo request through the switch got its reply (${sent - replies} lost): ${detail}`);
        assert.equal(report.switch.framesDropped, 0, `${what}: no frame dropped at the switch`);
        assert.equal(vm.state.kind, 'stopped', `${what}: the source copy is released`);
        vm = dst.vm!;
        vms.push(vm);
        assert.equal(vm.state.kind, 'running', `${what}: the VM runs at the destination`);
      } finally {
        dst.server.close();
      }
    };

    for (let i = 1; i <= 5; i++) await move('postcopy', i);
    for (let i = 1; i <= 5; i++) await move('agile', i);
    await move('precopy', 1);
    const after = attach(vm);
    after.send('\n');
    const before = Number(/(\d+)/.exec((await after.exec('grep -c verify /tmp/mw.log || true', 60_000)).output)?.[1] ?? 0);
    await after.exec('kill -USR1 $(pidof memwriter)', 60_000);
    // The check reads every page back (from the swap device, after Agile): wait for its new line.
    let verdict = '';
    for (let i = 0; i < 240 && !/verify (ok|FAILED)/.test(verdict); i++) {
      await new Promise((r) => setTimeout(r, 500));
      verdict = (await after.exec(`grep verify /tmp/mw.log | tail -n +${before + 1} | head -1`, 60_000)).output;
    }
    assert.match(verdict, /memwriter: verify ok/, 'the guest\'s memory is intact after eleven moves');
  } finally {
    for (const v of vms) await v.dispose().catch(() => undefined);
    try { ip('link', 'del', BRIDGE); } catch { /* already gone */ }
    nbd.kill('SIGTERM');
  }
});
