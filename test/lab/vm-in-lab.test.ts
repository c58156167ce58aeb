// A VM on a lab host, as Clark et al. assume it: on a switched LAN, its disk on network
// storage. A client host fetches the guest's web page over the bridge; the guest keeps an
// ext4 file system on an NBD disk served from the storage host across a fresh boot.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab } from '../../src/lab/lab.js';
import { LabVm } from '../../src/lab/vm-process.js';
import { ensureGuestImage } from '../../src/guest/image.js';

test('a lab VM serves HTTP to the client host and keeps its NBD ext4 disk across boots', { timeout: 900_000 }, async () => {
  await ensureGuestImage();
  const dir = mkdtempSync(join(tmpdir(), 'ferry-lab-vm-'));
  const image = join(dir, 'disk.img');
  execFileSync('truncate', ['-s', '64M', image]);
  execFileSync('mkfs.ext4', ['-q', '-F', image]);
  const lab = await Lab.up({ prefix: `fv${process.pid % 10000}-` });
  try {
    const nbd = await lab.startNbd('disk', { file: image, port: 10809 });

    const first = LabVm.start(lab, { host: 'host-a', index: 0, disks: [nbd.uri] });
    try {
      await first.ready();
      const page = await lab.exec('client', 'curl', ['-s', '-m', '20', `http://${first.address}/`]);
      assert.match(page.stdout, /ferry guest/);

      const write = await first.exec('modprobe crc32c_generic && modprobe ext4 && mount /dev/vda /mnt && echo kept-across-boots > /mnt/note && sync && umount /mnt && echo ok', 300_000);
      assert.equal(write.status, 0, write.output);
      assert.match(write.output, /ok/);
      assert.equal(await first.poweroff(), 0);
    } finally {
      await first.kill();
    }

    const second = LabVm.start(lab, { host: 'host-b', index: 0, disks: [nbd.uri] });
    try {
      await second.ready();
      const read = await second.exec('modprobe crc32c_generic && modprobe ext4 && mount -o ro /dev/vda /mnt && cat /mnt/note', 300_000);
      assert.equal(read.status, 0, read.output);
      assert.equal(read.output.trim(), 'kept-across-boots');
      assert.equal(await second.poweroff(), 0);
    } finally {
      await second.kill();
    }
  } finally {
    await lab.down();
    rmSync(dir, { recursive: true, force: true });
  }
});
