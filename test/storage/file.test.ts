import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawFileBackend } from '../../src/storage/file.js';
import { firstDifference, pattern } from './util.js';

function tempImage(bytes: number | Uint8Array): { path: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-raw-'));
  const path = join(dir, 'disk.img');
  writeFileSync(path, typeof bytes === 'number' ? new Uint8Array(bytes) : bytes);
  return { path, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

test('raw file: size, round trips (unaligned and concurrent), flush, data lands in the file', async () => {
  const img = tempImage(4 * 1024 * 1024);
  const b = await RawFileBackend.open(img.path);
  try {
    assert.equal(b.size, 4 * 1024 * 1024);
    assert.equal(b.readOnly, false);
    assert.equal(b.canDiscard, false);
    const regions = Array.from({ length: 80 }, (_, i) => ({ off: i * 40_000 + (i % 5), len: 1 + i * 411, seed: i + 1 }));
    await Promise.all(regions.map((r) => b.write(r.off, pattern(r.len, r.seed))));
    const got = await Promise.all(regions.map((r) => b.read(r.off, r.len)));
    regions.forEach((r, i) => assert.equal(firstDifference(got[i]!, pattern(r.len, r.seed)), -1, `region ${i}`));
    await b.write(b.size - 3, Uint8Array.of(7, 8, 9));
    await b.flush();
    assert.deepEqual([...(await b.read(b.size - 4, 4))], [0, 7, 8, 9]);
    const onDisk = readFileSync(img.path);
    assert.equal(firstDifference(onDisk.subarray(regions[3]!.off, regions[3]!.off + regions[3]!.len), pattern(regions[3]!.len, 4)), -1);
    await b.discard(0, 512); // no-op, but allowed
    await assert.rejects(b.read(b.size - 1, 2), { code: 'BLOCK_OUT_OF_RANGE' });
    await assert.rejects(b.write(-512, new Uint8Array(1)), { code: 'BLOCK_OUT_OF_RANGE' });
  } finally {
    await b.close();
    img.cleanup();
  }
});

test('raw file: read-only refuses writes and discards, reads work, file untouched', async () => {
  const img = tempImage(pattern(8192, 5));
  const b = await RawFileBackend.open(img.path, { readOnly: true });
  try {
    assert.equal(b.readOnly, true);
    assert.equal(firstDifference(await b.read(100, 1000), pattern(8192, 5).subarray(100, 1100)), -1);
    await assert.rejects(b.write(0, new Uint8Array(512)), { code: 'BLOCK_READ_ONLY' });
    await assert.rejects(b.discard(0, 512), { code: 'BLOCK_READ_ONLY' });
    await b.flush();
    assert.equal(firstDifference(readFileSync(img.path), pattern(8192, 5)), -1);
  } finally {
    await b.close();
    img.cleanup();
  }
});

test('raw file: a size that is not a multiple of 512 is refused clearly', async () => {
  const img = tempImage(1000);
  try {
    await assert.rejects(RawFileBackend.open(img.path), { code: 'BLOCK_BAD_IMAGE', message: /1000 bytes.*multiple of 512/ });
  } finally { img.cleanup(); }
});

test('raw file: a missing image fails with BLOCK_FILE_IO naming the path', async () => {
  await assert.rejects(RawFileBackend.open('/nonexistent/ferry/disk.img'), { code: 'BLOCK_FILE_IO', message: /\/nonexistent\/ferry\/disk\.img.*ENOENT/ });
});

test('raw file: close is idempotent and later calls fail with BLOCK_CLOSED', async () => {
  const img = tempImage(4096);
  const b = await RawFileBackend.open(img.path);
  try {
    await Promise.all([b.close(), b.close()]);
    await b.close();
    await assert.rejects(b.read(0, 512), { code: 'BLOCK_CLOSED' });
    await assert.rejects(b.flush(), { code: 'BLOCK_CLOSED' });
  } finally { img.cleanup(); }
});
