// virtio-blk with the real Debian guest: the guest sees the backend's bytes, its synced
// writes reach the backend, flushes reach the backend, and backend failures are I/O errors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ensureGuestImage } from '../../src/guest/image.js';
import { Machine } from '../../src/machine/boot/machine.js';
import { VirtioBlock } from '../../src/machine/devices/virtio/block.js';
import { MemoryBlockBackend } from '../../src/storage/memory.js';
import { ConsoleDriver, GUEST_PROMPT } from '../../src/machine/console/shell.js';
import { guestBoot } from '../../src/guest/boot.js';
import { makeMemory, TestDriver } from './virtio-driver.js';

/** A disk whose reads fail past a byte offset, as a dying server would. */
class FlakyDisk extends MemoryBlockBackend {
  failFrom = Infinity;
  override async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset + length > this.failFrom) throw new Error('backend read failed (test)');
    return super.read(offset, length);
  }
}

test('the guest reads, writes and flushes a virtio-blk disk', { timeout: 300_000 }, async () => {
  const image = await ensureGuestImage();
  const disk = new FlakyDisk(32 << 20);
  disk.data.set(new TextEncoder().encode('planted-by-host'), 8192);
  const logs: string[] = [];
  const driver = new ConsoleDriver();
  const m = new Machine({
    ramBytes: 256 << 20, console: driver,
    virtio: (mem) => [new VirtioBlock(mem, disk, { serial: 'test-serial', log: (l) => logs.push(l) })],
    boot: guestBoot(image),
  });
  const running = m.run();
  try {
    await driver.waitFor(GUEST_PROMPT, 300_000);
    const size = await driver.exec('cat /sys/block/vda/size', 30_000);
    assert.equal(size.output.trim(), String((32 << 20) / 512));

    const planted = await driver.exec('dd if=/dev/vda bs=4096 skip=2 count=1 2>/dev/null | head -c 15', 30_000);
    assert.equal(planted.output, 'planted-by-host');

    const flushesBefore = disk.flushes;
    const wrote = await driver.exec('echo written-by-guest | dd of=/dev/vda bs=512 seek=100 conv=fsync 2>/dev/null', 30_000);
    assert.equal(wrote.status, 0);
    assert.equal(new TextDecoder().decode(disk.data.subarray(100 * 512, 100 * 512 + 16)), 'written-by-guest');
    assert.ok(disk.flushes > flushesBefore, 'fsync reached the backend as a flush');

    const serial = await driver.exec('cat /sys/block/vda/serial', 30_000);
    assert.equal(serial.output.trim(), 'test-serial');

    disk.failFrom = 16 << 20;
    const failed = await driver.exec('dd if=/dev/vda of=/dev/null bs=1M skip=20 count=1 iflag=direct 2>&1', 60_000);
    assert.notEqual(failed.status, 0, 'a failed backend read is an I/O error in the guest');
    assert.ok(logs.some((l) => /backend read failed/.test(l)));
    const still = await driver.exec('dd if=/dev/vda bs=4096 skip=2 count=1 iflag=direct 2>/dev/null | head -c 15', 30_000);
    assert.equal(still.output, 'planted-by-host', 'the device keeps working after an I/O error');
  } finally {
    m.stop();
    await running;
  }
});

test('a restore into a quiesced device resubmits its in-flight requests only at unquiesce, since their descriptors are read from RAM', async () => {
  /** A disk that counts reads and never answers them: the request stays in flight. */
  class StalledDisk extends MemoryBlockBackend {
    reads = 0;
    override read(): Promise<Uint8Array> {
      this.reads++;
      return new Promise(() => undefined);
    }
  }
  const memA = makeMemory(4 << 20);
  const diskA = new StalledDisk(1 << 20);
  const blkA = new VirtioBlock(memA, diskA, { log: () => undefined });
  const dA = new TestDriver(blkA, memA);
  dA.bringUp(1, 16);
  // T_IN of one sector: the 16-byte header (type 0, sector 0), 512 data bytes, the status byte.
  dA.post(0, [dA.buf(new Uint8Array(16)), dA.buf(512, true), dA.buf(1, true)]);
  dA.kick(0);
  assert.equal(blkA.pending, 1);
  assert.equal(diskA.reads, 1);
  const state = JSON.parse(JSON.stringify(dA.transport.save())) as ReturnType<typeof dA.transport.save>;

  const memB = makeMemory(4 << 20);
  memB.bytes.set(memA.bytes);
  const diskB = new StalledDisk(1 << 20);
  const blkB = new VirtioBlock(memB, diskB, { log: () => undefined });
  const dB = dA.cloneOnto(blkB, memB);
  await blkB.quiesce();
  dB.transport.restore(state);
  assert.equal(diskB.reads, 0, 'nothing is submitted while the device is quiesced');
  assert.deepEqual(blkB.save(), blkA.save(), 'the held request still counts as in flight');
  blkB.unquiesce();
  assert.equal(diskB.reads, 1, 'unquiesce submits it');
  assert.equal(blkB.pending, 1);
});
