// The storage server dies under a running guest: the guest gets I/O errors (the VMM does not
// hang), and once the server is back ferry reconnects and the same disk works again.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startNbdkit } from './nbdkit.js';
import { NbdBackend } from '../../src/storage/nbd/client.js';
import { ensureGuestImage } from '../../src/guest/image.js';
import { Machine } from '../../src/machine/boot/machine.js';
import { VirtioBlock } from '../../src/machine/devices/virtio/block.js';
import { ConsoleDriver, GUEST_PROMPT } from '../../src/machine/console/shell.js';
import { guestBoot } from '../../src/guest/boot.js';

test('a guest survives its NBD server dying mid-I/O and uses the disk again after it returns', { timeout: 600_000 }, async () => {
  const image = await ensureGuestImage();
  const dir = mkdtempSync(join(tmpdir(), 'ferry-nbd-guest-'));
  const file = join(dir, 'disk.img');
  execFileSync('truncate', ['-s', '64M', file]);
  let server = await startNbdkit(['file', file]);
  const disk = await NbdBackend.connect({ host: '127.0.0.1', port: server.port });
  const driver = new ConsoleDriver();
  const m = new Machine({
    ramBytes: 256 << 20, console: driver,
    virtio: (mem) => [new VirtioBlock(mem, disk, { log: () => {} })],
    boot: guestBoot(image),
  });
  const running = m.run();
  try {
    await driver.waitFor(GUEST_PROMPT, 300_000);
    const before = await driver.exec('echo before-the-crash | dd of=/dev/vda bs=512 seek=8 oflag=direct conv=sync 2>/dev/null && echo ok', 60_000);
    assert.match(before.output, /ok/);

    // Kill the server while the guest streams writes: the writes fail, the shell comes back.
    // The loop only ends when a write fails.
    driver.send('n=0; while dd if=/dev/zero of=/dev/vda bs=64k count=100 seek=100 oflag=direct 2>/dev/null; do n=$((n+1)); done; echo "writes-failed-after=$n"\n');
    await new Promise((r) => setTimeout(r, 1500));
    await server.kill();
    const ended = await driver.waitFor(/writes-failed-after=(\d+)/, 120_000);
    assert.ok(Number(ended[1]) > 0, 'writes succeeded before the crash');

    server = await startNbdkit(['file', file], { port: server.port });
    await disk.whenConnected(30_000);
    const after = await driver.exec('dd if=/dev/vda bs=512 skip=8 count=1 iflag=direct 2>/dev/null | head -c 17', 60_000);
    assert.equal(after.output, 'before-the-crash\n');
    const again = await driver.exec('echo after-the-restart | dd of=/dev/vda bs=512 seek=9 oflag=direct conv=sync 2>/dev/null && echo ok', 60_000);
    assert.match(again.output, /ok/);
    assert.equal(readFileSync(file).subarray(9 * 512, 9 * 512 + 17).toString(), 'after-the-restart');
  } finally {
    m.stop();
    await running;
    await disk.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
