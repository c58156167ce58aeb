// A snapshot restored while a client holds a TCP connection to the guest: the VM is
// snapshotted, stopped, and restored from the file into a new VM on the same host (its NIC on
// a new TAP on the same bridge). The client's connection carries on, and the guest's
// heartbeat continues without a reset or a repeat.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Vm } from '../../src/vm/vm.js';
import type { VmConfig } from '../../src/vm/types.js';
import { ensureGuestImage } from '../../src/guest/image.js';
import { GUEST_PROMPT } from '../../src/machine/console/shell.js';
import { attach } from '../support/console.js';

const BRIDGE = `fbr${process.pid % 100000}`;
const HOST_IP = '10.78.0.1';
const GUEST_IP = '10.78.0.2';

function ip(...args: string[]): void { execFileSync('ip', args, { stdio: 'ignore' }); }


/** Sends `text` on the connection and resolves with the echoed bytes. */
function echo(sock: Socket, text: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const timer = setTimeout(() => { sock.off('data', on); reject(new Error(`no echo of '${text}' within ${timeoutMs} ms (got '${got}')`)); }, timeoutMs);
    const on = (b: Buffer) => {
      got += b.toString();
      if (got.length >= text.length) { clearTimeout(timer); sock.off('data', on); resolve(got); }
    };
    sock.on('data', on);
    sock.write(text);
  });
}

test('a client TCP connection and the heartbeat survive snapshot, stop and restore', { timeout: 900_000 }, async () => {
  await ensureGuestImage();
  const dir = mkdtempSync(join(tmpdir(), 'ferry-tcp-'));
  ip('link', 'add', BRIDGE, 'type', 'bridge');
  const vms: Vm[] = [];
  let sock: Socket | undefined;
  try {
    ip('addr', 'add', `${HOST_IP}/24`, 'dev', BRIDGE);
    ip('link', 'set', BRIDGE, 'up');
    const config: VmConfig = {
      name: 'tcp', memoryMiB: 256, nets: [{ mac: '02:00:0a:4e:00:02', bridge: BRIDGE }], disks: [], ip: `${GUEST_IP}/24`,
    };
    const first = Vm.create(config);
    vms.push(first);
    const console1 = attach(first);
    await first.start();
    await console1.waitFor(GUEST_PROMPT, 300_000);
    console1.send('netserver --echo 7 & heartbeat -i 200 &\n');
    await console1.waitFor(/heartbeat 3 /, 60_000);

    sock = connect({ host: GUEST_IP, port: 7 });
    await new Promise<void>((resolve, reject) => { sock!.once('connect', resolve); sock!.once('error', reject); });
    assert.equal(await echo(sock, 'before-snapshot', 30_000), 'before-snapshot');

    const file = join(dir, 'tcp.snap');
    await first.pause();
    const beatsBefore = [...console1.output.matchAll(/heartbeat (\d+) /g)].map((m) => Number(m[1]));
    await first.snapshot(file);
    await first.stop();

    const second = await Vm.restore(config, file);
    vms.push(second);
    const console2 = attach(second);
    await second.resume();
    const last = beatsBefore[beatsBefore.length - 1]!;
    const next = await console2.waitFor(/heartbeat (\d+) /, 60_000);
    assert.equal(Number(next[1]), last + 1, `heartbeat continues from ${last} (no reset, no repeat)`);

    assert.equal(await echo(sock, 'after-restore', 60_000), 'after-restore');
    assert.equal(sock.destroyed, false);
  } finally {
    sock?.destroy();
    for (const vm of vms) await vm.dispose();
    try { ip('link', 'del', BRIDGE); } catch { /* already gone */ }
    rmSync(dir, { recursive: true, force: true });
  }
});
