// Post-copy, hybrid and Agile with a real guest: one VM (memwriter checksumming 96 MiB, a hot
// 16 MiB of it written and touched) moves between two Vm objects over loopback in each mode,
// and its memory is verified on every destination. Its swap device is an nbdkit memory export.
// Then a post-copy whose source vanishes mid-way: the destination VM is failed cleanly, the
// source copy is never resumed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type Socket } from 'node:net';
import { Vm } from '../../src/vm/vm.js';
import { ConsoleDriver } from '../../src/machine/console/shell.js';
import { PrecopySender } from '../../src/migration/engine/sender.js';
import type { MigrationReport } from '../../src/migration/engine/report.js';
import { fixedRate, parseRate } from '../../src/migration/precopy/rate.js';
import { ensureGuestImage } from '../../src/guest/image.js';
import type { VmConfig } from '../../src/vm/types.js';
import type { MigrationMode } from '../../src/migration/engine/modes.js';
import { LoopbackDestination, startNbdkitMemory } from '../support/loopback-migration.js';

const NBD_PORT = 10000 + (process.pid % 5000);

function attach(vm: Vm): ConsoleDriver {
  const c = new ConsoleDriver();
  vm.onConsole((b) => c.write(b));
  c.onInput((b) => vm.consoleWrite(b));
  return c;
}

async function verify(vm: Vm): Promise<string> {
  const con = attach(vm);
  con.send('\n');
  const before = Number((await con.exec('grep -c verify /tmp/mw.log || true', 60_000)).output.trim().split('\n').pop());
  await con.exec('kill -USR1 $(pidof memwriter)', 60_000);
  for (const end = Date.now() + 120_000; ;) {
    const r = await con.exec(`grep verify /tmp/mw.log | tail -n +${before + 1} | head -1`, 60_000);
    if (/verify (ok|FAILED)/.test(r.output) || Date.now() > end) return r.output.trim();
    await new Promise((res) => setTimeout(res, 500));
  }
}

test('post-copy, hybrid and Agile move a real guest with its memory intact; a lost post-copy source fails the VM cleanly', { timeout: 900_000 }, async (t) => {
  await ensureGuestImage({ log: () => undefined });
  const nbd = await startNbdkitMemory(NBD_PORT);
  const vms: Vm[] = [];
  try {
    const config: VmConfig = { name: 'modes', memoryMiB: 256, nets: [], disks: [], swap: `nbd://127.0.0.1:${NBD_PORT}` };
    let vm = Vm.create(config, { agile: { epochMs: 500, coldEpochs: 4 } });
    vms.push(vm);
    await vm.start();
    const con = attach(vm);
    await con.waitFor('ferry# ', 180_000);
    await con.exec('memwriter --wss-mib 96 --hot-mib 16 --rate 1500 --touch-ms 200 >/tmp/mw.log 2>&1 & true', 10_000);
    await con.waitFor(/memwriter: ready/, 60_000).catch(async () => undefined);
    // Let the working-set tracker see several windows, so cold pages reach the swap device.
    await new Promise((r) => setTimeout(r, 6000));

    const move = async (mode: MigrationMode, bandwidth?: string): Promise<{ report: MigrationReport; receiver: MigrationReport }> => {
      const dst = new LoopbackDestination();
      await dst.listen();
      try {
        const sender = new PrecopySender({
          source: vm, host: '127.0.0.1', port: dst.port, token: dst.issuer.issue(), mode,
          ...(bandwidth ? { rate: fixedRate(parseRate(bandwidth)) } : {}),
        });
        const report = await sender.run();
        const receiver = await dst.report!;
        assert.equal(report.outcome, 'completed', JSON.stringify(report.error));
        assert.equal(receiver.outcome, 'completed', JSON.stringify(receiver.error));
        assert.equal(vm.state.kind, 'stopped', 'the source copy is released');
        vm = dst.vm!;
        vms.push(vm);
        assert.equal(vm.state.kind, 'running');
        assert.match(await verify(vm), /memwriter: verify ok/);
        return { report, receiver };
      } finally {
        dst.server.close();
      }
    };

    await t.test('agile moves the working set; cold pages come from the swap device', async () => {
      const before = vm.memoryStats()!;
      assert.ok(before.swappedBytes > 32 << 20, `cold pages were swapped out (${before.swappedBytes} bytes)`);
      const { report } = await move('agile');
      assert.ok(report.agile && report.agile.swappedPages > 8192, JSON.stringify(report.agile));
      assert.ok(report.bytes < before.swappedBytes, `moved ${report.bytes} bytes, less than what stayed on the swap device`);
      assert.ok(vm.faultStats().faults > 0, 'the destination faulted pages in from the swap device');
    });

    await t.test('post-copy: the VM runs at the destination at once; every page arrives once', async () => {
      const { report } = await move('postcopy');
      assert.equal(report.rounds.length, 1, 'no pre-copy round: only the switch');
      assert.ok(report.postcopy && report.postcopy.pagesPushed > 0, JSON.stringify(report.postcopy));
      assert.equal(report.postcopy!.duplicates, 0);
    });

    await t.test('hybrid on a writer faster than the link falls back to post-copy and converges', async () => {
      await attach(vm).exec('kill $(pidof memwriter); sleep 1; memwriter --wss-mib 48 --rate 4000 >/tmp/mw.log 2>&1 & true', 30_000);
      await new Promise((r) => setTimeout(r, 3000));
      const { report } = await move('hybrid', '40Mbit');
      assert.notEqual(report.stopRule, 'downtime', 'pre-copy did not converge');
      assert.ok(report.postcopy && report.postcopy.pagesPushed > 0, 'the rest went by post-copy');
      assert.equal(report.postcopy!.duplicates, 0);
    });

    await t.test('source lost during post-copy: the destination fails the VM cleanly; the source never resumes', async () => {
      const dst = new LoopbackDestination();
      await dst.listen();
      // A proxy we can cut, standing for the source host dying.
      const sockets: Socket[] = [];
      const proxy = createServer((inbound) => {
        const outbound = connect(dst.port, '127.0.0.1');
        sockets.push(inbound, outbound);
        inbound.pipe(outbound);
        outbound.pipe(inbound);
        inbound.on('error', () => outbound.destroy());
        outbound.on('error', () => inbound.destroy());
      });
      await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
      const source = vm;
      try {
        const sender = new PrecopySender({
          source, host: '127.0.0.1', port: (proxy.address() as { port: number }).port, token: dst.issuer.issue(), mode: 'postcopy',
          rate: fixedRate(parseRate('20Mbit')),
        });
        const running = sender.run();
        for (let i = 0; i < 600 && sender.stage.kind !== 'postcopy'; i++) await new Promise((r) => setTimeout(r, 50));
        assert.equal(sender.stage.kind, 'postcopy');
        await new Promise((r) => setTimeout(r, 300));
        for (const s of sockets) s.destroy();
        const report = await running;
        const receiver = await dst.report!;
        assert.equal(receiver.outcome, 'failed');
        assert.equal(receiver.error?.code, 'MIGRATION_POSTCOPY_SOURCE_LOST');
        assert.match(dst.lostReason ?? '', /\d+ guest pages existed only on the source/);
        assert.equal(dst.vm!.state.kind, 'failed', 'the destination VM is stopped as failed');
        assert.equal(report.outcome, 'failed');
        assert.equal(report.error?.code, 'MIGRATION_POSTCOPY_DESTINATION_LOST');
        assert.equal(source.state.kind, 'stopped', 'the stale source copy never runs again');
        vms.push(dst.vm!);
      } finally {
        proxy.close();
        dst.server.close();
      }
    });
  } finally {
    for (const v of vms) await v.dispose().catch(() => undefined);
    nbd.kill('SIGTERM');
  }
});
