// Page-batch compression: batches survive the codec compressed where it pays and raw where it
// does not; whatever a peer puts in a zstd batch, the receiver refuses it as BAD_COMPRESSION
// without decoding more than the batch's size.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as zstdWasm from '@bokuweb/zstd-wasm';
import { FrameEncoder, decodeAll, frame, type PageCompression } from '../../src/migration/protocol/codec.js';
import { MigrationProtocolError, type ProtocolErrorCode } from '../../src/migration/protocol/errors.js';
import { Compression, FRAME_HEADER_BYTES, MAX_BATCH_PAGES, MessageType, PAGE_SIZE, type ProtocolMessage } from '../../src/migration/protocol/messages.js';
import { DEFAULT_PAGE_COMPRESSION, PAGE_COMPRESSIONS, ZSTD, packBatch } from '../../src/migration/compression/index.js';

const compressions = PAGE_COMPRESSIONS;
const enc = new FrameEncoder({ compressions });

function textPages(n: number): Buffer {
  const line = 'Jan  1 00:00:01 ferry kernel: virtio_net virtio1 eth0: link up, 1000Mbps\n';
  return Buffer.from(line.repeat(Math.ceil((n * PAGE_SIZE) / line.length))).subarray(0, n * PAGE_SIZE);
}

function pagesFrame(count: number, compression: number, packed: Buffer): Buffer {
  const head = Buffer.alloc(12 + 4 * count);
  head.writeUInt8(compression, 4);
  head.writeUInt32LE(count, 8);
  for (let i = 0; i < count; i++) head.writeUInt32LE(i, 12 + 4 * i);
  return frame(MessageType.Pages, Buffer.concat([head, packed]));
}

function refuses(code: ProtocolErrorCode, bytes: Buffer): void {
  assert.throws(() => decodeAll(bytes, { compressions }), (e: unknown) => {
    assert.ok(e instanceof MigrationProtocolError, `expected MigrationProtocolError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

function roundTrip(data: Buffer): { compression: number; frameBytes: number } {
  const n = data.length / PAGE_SIZE;
  const batch = packBatch(data);
  const pages = Array.from({ length: n }, (_, i) => i * 3);
  const bytes = enc.encode({ type: 'Pages', round: 2, pages, data, ...batch });
  const [m] = decodeAll(bytes, { compressions }) as [ProtocolMessage];
  assert.deepEqual(m, { type: 'Pages', round: 2, compression: batch.compression, pages, data });
  return { compression: batch.compression, frameBytes: bytes.length };
}

test('zero, text and random batches round-trip, compressed only where it pays off', () => {
  assert.equal(DEFAULT_PAGE_COMPRESSION.id, Compression.Zstd);
  for (const n of [1, 17, MAX_BATCH_PAGES]) {
    const zero = roundTrip(Buffer.alloc(n * PAGE_SIZE));
    assert.equal(zero.compression, Compression.Zstd);
    assert.ok(zero.frameBytes < 200 + 4 * n, `${n} zero pages took ${zero.frameBytes} bytes`);
    const text = roundTrip(textPages(n));
    assert.equal(text.compression, Compression.Zstd);
    assert.ok(text.frameBytes < (n * PAGE_SIZE) / 4);
    const random = roundTrip(randomBytes(n * PAGE_SIZE));
    assert.equal(random.compression, Compression.None);
  }
});

test('the pays-off rule sends random data raw and can be switched off', () => {
  const raw = randomBytes(MAX_BATCH_PAGES * PAGE_SIZE);
  const b = packBatch(raw);
  assert.equal(b.compression, Compression.None);
  assert.equal(b.packed, raw);
  const zeros = Buffer.alloc(PAGE_SIZE);
  assert.deepEqual(packBatch(zeros, null), { compression: Compression.None, packed: zeros });
  // Mostly random with a little repetition: compresses, but by less than 10%.
  const mostly = Buffer.concat([randomBytes(15 * PAGE_SIZE), Buffer.alloc(PAGE_SIZE, 1)]);
  assert.equal(packBatch(mostly).compression, Compression.None);
});

test('corrupt and truncated zstd batches are BAD_COMPRESSION', () => {
  const data = textPages(4);
  const packed = ZSTD.compress(data);
  const cases: Buffer[] = [
    packed.subarray(0, packed.length - 1),
    packed.subarray(0, 3),
    Buffer.alloc(0),
    Buffer.concat([Buffer.from([0x29]), packed.subarray(1)]), // magic
    randomBytes(packed.length),
  ];
  const fhd = packed[4]!;
  const single = (fhd & 0x20) !== 0;
  const blockAt = 5 + (single ? 0 : 1) + ([single ? 1 : 0, 2, 4, 8] as const)[fhd >> 6]!;
  const badBlock = Buffer.from(packed);
  badBlock[blockAt] = badBlock[blockAt]! | 0x06; // first block header: reserved block type 3
  cases.push(badBlock);
  const badHeader = Buffer.from(packed);
  badHeader[4] = badHeader[4]! | 0x08; // frame header reserved bit
  cases.push(badHeader);
  for (const c of cases) refuses('BAD_COMPRESSION', pagesFrame(4, Compression.Zstd, c));
  refuses('BAD_COMPRESSION', pagesFrame(4, 9, packed));
});

test('a batch claiming or holding more than its size is refused before it is decoded', () => {
  const onePage = PAGE_SIZE;
  // Declared sizes (frames made by the wasm build carry one): larger, smaller, absurd.
  const twoPages = Buffer.from(zstdWasm.compress(Buffer.alloc(2 * PAGE_SIZE), 1));
  refuses('BAD_COMPRESSION', pagesFrame(1, Compression.Zstd, twoPages));
  refuses('BAD_COMPRESSION', pagesFrame(4, Compression.Zstd, twoPages));
  const huge = Buffer.from(zstdWasm.compress(Buffer.alloc(MAX_BATCH_PAGES * PAGE_SIZE), 1));
  assert.equal(huge[4]! >> 6, 2, 'a 4-byte content size field');
  huge.writeUInt32LE(0xffffffff, 5 + ((huge[4]! & 0x20) !== 0 ? 0 : 1));
  assert.throws(() => ZSTD.decompress(huge, onePage), /declares 4294967295/);
  refuses('BAD_COMPRESSION', pagesFrame(1, Compression.Zstd, huge));
  // No declared size (the native encoder's frames): 64 MiB of zeros in a few KiB, sent as one
  // page, and two frames back to back: the decoder stops at the batch's size.
  const bomb = ZSTD.compress(Buffer.alloc(64 << 20));
  assert.ok(bomb.length < 64 << 10);
  assert.throws(() => ZSTD.decompress(bomb, onePage));
  refuses('BAD_COMPRESSION', pagesFrame(1, Compression.Zstd, bomb));
  const one = ZSTD.compress(Buffer.alloc(onePage, 7));
  refuses('BAD_COMPRESSION', pagesFrame(1, Compression.Zstd, Buffer.concat([one, one])));
  assert.throws(() => ZSTD.decompress(one, (MAX_BATCH_PAGES + 1) * PAGE_SIZE), /bad batch size/);
});

test('the encoder uses a batch packed by the sender, and refuses one that grew past a batch', () => {
  const data = textPages(2);
  const packed = ZSTD.compress(data);
  const bytes = enc.encode({ type: 'Pages', round: 0, compression: Compression.Zstd, pages: [0, 1], data, packed });
  assert.ok(bytes.subarray(FRAME_HEADER_BYTES + 12 + 8).equals(packed));
  const grows: PageCompression = { id: 9, compress: (raw) => Buffer.concat([raw, Buffer.alloc(1)]), decompress: (p) => p };
  const full = Buffer.alloc(MAX_BATCH_PAGES * PAGE_SIZE);
  const pages = Array.from({ length: MAX_BATCH_PAGES }, (_, i) => i);
  assert.throws(() => new FrameEncoder({ compressions: [grows] }).encode({ type: 'Pages', round: 0, compression: 9, pages, data: full }),
    (e: unknown) => e instanceof MigrationProtocolError && e.code === 'FRAME_TOO_LARGE');
});
