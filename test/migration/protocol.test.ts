// The migration stream codec and authentication: every message survives a round trip however
// the stream is cut; each kind of malformed input is refused with its own stable code; the
// handshake accepts exactly the right proof once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FrameDecoder, FrameEncoder, decodeAll, frame, type PageCompression } from '../../src/migration/protocol/codec.js';
import { MigrationProtocolError, type ProtocolErrorCode } from '../../src/migration/protocol/errors.js';
import {
  FRAME_HEADER_BYTES,
  MAX_ABSENT_RUNS,
  MAX_BATCH_PAGES,
  MAX_FRAME_PAYLOAD,
  MessageType,
  PAGE_SIZE,
  POSTCOPY_VERSION,
  PROTOCOL_VERSION_MAX,
  SWITCH_VERSION,
  PROTOCOL_VERSION_MIN,
  negotiateVersion,
  type ProtocolMessage,
} from '../../src/migration/protocol/messages.js';
import {
  TokenIssuer,
  destinationProof,
  formatToken,
  newNonce,
  parseToken,
  sourceProof,
  verifyDestination,
  type AuthTranscript,
} from '../../src/migration/protocol/auth.js';
import { RAM_BYTES, sampleMessages } from './samples.js';

const enc = new FrameEncoder();
const stream = (ms: ProtocolMessage[]) => Buffer.concat(ms.map((m) => enc.encode(m)));

function refuses(code: ProtocolErrorCode, bytes: Buffer, opts: ConstructorParameters<typeof FrameDecoder>[0] = {}): void {
  assert.throws(() => decodeAll(bytes, opts), (e: unknown) => {
    assert.ok(e instanceof MigrationProtocolError, `expected MigrationProtocolError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

test('every message type survives a round trip', () => {
  const msgs = sampleMessages();
  const seen = new Set(msgs.map((m) => m.type));
  assert.deepEqual([...seen].sort(), Object.keys(MessageType).sort(), 'samples cover every type');
  for (const m of msgs) assert.deepEqual(decodeAll(enc.encode(m)), [m], m.type);
  assert.deepEqual(decodeAll(stream(msgs)), msgs);
});

test('the frame header is type, flags, reserved, little-endian length', () => {
  const f = enc.encode({ type: 'RoundAck', round: 0x01020304, pagesReceived: 5 });
  assert.deepEqual([...f.subarray(0, FRAME_HEADER_BYTES)], [0x23, 0, 0, 0, 8, 0, 0, 0]);
  assert.deepEqual([...f.subarray(8, 12)], [4, 3, 2, 1]);
});

test('byte-by-byte and random chunkings decode to the same messages', () => {
  const msgs = sampleMessages();
  const bytes = stream(msgs);
  const byByte = new FrameDecoder();
  const out: ProtocolMessage[] = [];
  for (let i = 0; i < bytes.length; i++) byByte.push(bytes.subarray(i, i + 1), (m) => out.push(m));
  byByte.end();
  assert.deepEqual(out, msgs);
  let seed = 12345;
  const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  for (let trial = 0; trial < 50; trial++) {
    const d = new FrameDecoder();
    const got: ProtocolMessage[] = [];
    for (let off = 0; off < bytes.length; ) {
      const n = 1 + Math.floor(rnd() * (trial % 2 ? 50 : 20000));
      d.push(bytes.subarray(off, off + n), (m) => got.push(m));
      off += n;
    }
    d.end();
    assert.deepEqual(got, msgs, `trial ${trial}`);
  }
});

test('a compression codec plugs in by id', () => {
  // A toy codec: run-length of whole pages being all zero, just to exercise the plumbing.
  const toy: PageCompression = {
    id: 7,
    compress: (raw) => Buffer.concat([Buffer.from([0x5a]), raw]),
    decompress: (packed, rawBytes) => {
      if (packed[0] !== 0x5a) throw new Error('bad tag');
      const out = packed.subarray(1);
      if (out.length !== rawBytes) throw new Error('bad length');
      return out;
    },
  };
  const m: ProtocolMessage = { type: 'Pages', round: 1, compression: 7, pages: [3, 4], data: Buffer.alloc(2 * PAGE_SIZE, 9) };
  const bytes = new FrameEncoder({ compressions: [toy] }).encode(m);
  assert.deepEqual(decodeAll(bytes, { compressions: [toy] }), [m]);
  refuses('BAD_COMPRESSION', bytes);
  const broken = Buffer.from(bytes);
  broken[FRAME_HEADER_BYTES + 12 + 8] = 0; // the toy tag
  refuses('BAD_COMPRESSION', broken, { compressions: [toy] });
});

/** Page batch payload, for hand-made malformed ones. */
function pagesPayload(pages: number[], dataPages = pages.length, count = pages.length): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt32LE(count, 8);
  const nums = Buffer.alloc(pages.length * 4);
  pages.forEach((p, i) => nums.writeUInt32LE(p, i * 4));
  return Buffer.concat([head, nums, Buffer.alloc(dataPages * PAGE_SIZE)]);
}

test('malformed frames are refused with stable codes', () => {
  const ack = enc.encode({ type: 'RoundAck', round: 1, pagesReceived: 2 });
  const mutate = (b: Buffer, at: number, v: number) => {
    const c = Buffer.from(b);
    c[at] = v;
    return c;
  };
  refuses('UNKNOWN_TYPE', mutate(ack, 0, 0x55));
  refuses('UNKNOWN_TYPE', mutate(ack, 0, 0));
  refuses('BAD_FLAGS', mutate(ack, 1, 0x80));
  refuses('BAD_RESERVED', mutate(ack, 3, 1));
  refuses('TRUNCATED', ack.subarray(0, ack.length - 1)); // the stream ends inside the frame
  refuses('TRUNCATED', ack.subarray(0, 5)); // … inside the header
  refuses('TRUNCATED', frame(MessageType.RoundAck, Buffer.alloc(7)));
  refuses('TRAILING_BYTES', frame(MessageType.RoundAck, Buffer.alloc(9)));
  refuses('TRAILING_BYTES', frame(MessageType.Done, Buffer.alloc(1)));
  refuses('TRAILING_BYTES', Buffer.concat([frame(MessageType.Reserved, Buffer.from([2, 0, 0x61, 0x62, 0x63]))]));
  refuses('TRUNCATED', frame(MessageType.Reserved, Buffer.from([9, 0, 0x61])));
  refuses('BAD_UTF8', frame(MessageType.Reserved, Buffer.from([2, 0, 0xc3, 0x28])));
  refuses('BAD_FIELD', frame(MessageType.Cancel, Buffer.concat([Buffer.from([0x01, 0x04]), Buffer.alloc(1025, 0x61)])));
  refuses('BAD_JSON', frame(MessageType.DeviceState, Buffer.from('{"cpu":')));
  refuses('BAD_JSON', frame(MessageType.DeviceState, Buffer.from('[1,2]')));
  refuses('BAD_JSON', frame(MessageType.DeviceState, Buffer.from('{"ticks":1e999}')));
  const hello = enc.encode(sampleMessages()[0]!);
  refuses('BAD_FIELD', mutate(hello, FRAME_HEADER_BYTES, 0x47)); // not the magic
});

test('oversized frames are refused from the header alone', () => {
  const huge = Buffer.alloc(FRAME_HEADER_BYTES);
  huge.writeUInt8(MessageType.DeviceState, 0);
  huge.writeUInt32LE(0xffffffff, 4);
  const d = new FrameDecoder();
  assert.throws(() => d.decode(huge), { code: 'FRAME_TOO_LARGE' });
  assert.equal(d.bufferedBytes, FRAME_HEADER_BYTES);
  huge.writeUInt32LE(MAX_FRAME_PAYLOAD + 1, 4);
  refuses('FRAME_TOO_LARGE', huge);
  huge.writeUInt32LE(2000, 4);
  refuses('FRAME_TOO_LARGE', huge, { maxFramePayload: 1024 });
  huge.writeUInt8(MessageType.Pages, 0);
  huge.writeUInt32LE(MAX_FRAME_PAYLOAD, 4);
  refuses('FRAME_TOO_LARGE', huge); // bigger than any page batch
  assert.throws(() => new FrameEncoder({ maxFramePayload: 100 }).encode({ type: 'Cancel', reason: 'x'.repeat(200) }), { code: 'FRAME_TOO_LARGE' });
});

test('page batches and zero runs are checked against the RAM size', () => {
  const ramPages = RAM_BYTES / PAGE_SIZE;
  const opts = { ramBytes: RAM_BYTES };
  assert.equal(decodeAll(frame(MessageType.Pages, pagesPayload([ramPages - 1])), opts).length, 1);
  refuses('PAGE_OUT_OF_RANGE', frame(MessageType.Pages, pagesPayload([0, ramPages])), opts);
  refuses('PAGE_OUT_OF_RANGE', enc.encode({ type: 'ZeroRun', round: 0, firstPage: ramPages - 2, count: 3 }), opts);
  refuses('BAD_FIELD', enc.encode({ type: 'ZeroRun', round: 0, firstPage: 0, count: 1 }).fill(0, 16), opts); // count 0
  refuses('BAD_FIELD', frame(MessageType.Pages, pagesPayload([5, 5])));
  refuses('BAD_FIELD', frame(MessageType.Pages, pagesPayload([], 0)));
  refuses('BAD_FIELD', frame(MessageType.Pages, pagesPayload([1], 1, 257)));
  refuses('TRUNCATED', frame(MessageType.Pages, pagesPayload([1], 0, 2))); // ends inside the page numbers
  refuses('TRUNCATED', frame(MessageType.Pages, pagesPayload([1, 2], 1)));
  refuses('TRAILING_BYTES', frame(MessageType.Pages, pagesPayload([1], 2)));
  refuses('BAD_COMPRESSION', frame(MessageType.Pages, mutateAt(pagesPayload([1]), 4, 3)));
  refuses('BAD_RESERVED', frame(MessageType.Pages, mutateAt(pagesPayload([1]), 6, 1)));
  // Without a RAM size given, the first Config sets it for the rest of the stream.
  const config = sampleMessages().find((m) => m.type === 'Config')!;
  refuses('PAGE_OUT_OF_RANGE', Buffer.concat([enc.encode(config), frame(MessageType.Pages, pagesPayload([ramPages]))]));
  refuses('BAD_FIELD', enc.encode(config), { ramBytes: RAM_BYTES * 2 });
});

function mutateAt(b: Buffer, at: number, v: number): Buffer {
  b[at] = v;
  return b;
}

test('messages before a bad frame are delivered; afterwards the decoder stays failed', () => {
  const d = new FrameDecoder();
  const got: ProtocolMessage[] = [];
  const bytes = Buffer.concat([enc.encode({ type: 'Done' }), Buffer.from([0xee, 0, 0, 0, 0, 0, 0, 0])]);
  assert.throws(() => d.push(bytes, (m) => got.push(m)), { code: 'UNKNOWN_TYPE' });
  assert.deepEqual(got, [{ type: 'Done' }]);
  assert.throws(() => d.push(enc.encode({ type: 'Done' }), () => {}), { code: 'DECODER_FAILED' });
  assert.throws(() => d.end(), { code: 'DECODER_FAILED' });
});

test('the encoder refuses messages the decoder would refuse', () => {
  const bad: ProtocolMessage[] = [
    { type: 'Pages', round: 0, compression: 0, pages: [2, 1], data: Buffer.alloc(2 * PAGE_SIZE) },
    { type: 'Pages', round: 0, compression: 0, pages: [1], data: Buffer.alloc(10) },
    { type: 'Auth', proof: Buffer.alloc(31) },
    { type: 'Config', ...{ ramBytes: 5000, pageSize: PAGE_SIZE, isa: 'rv64', name: 'x', devices: [], config: {} } },
    { type: 'RoundAck', round: -1, pagesReceived: 0 },
  ];
  for (const m of bad) assert.throws(() => enc.encode(m), (e: unknown) => e instanceof MigrationProtocolError && e.code === 'BAD_FIELD', m.type);
});

test('version negotiation picks the highest common version and refuses disjoint ranges', () => {
  assert.equal(negotiateVersion({ min: 1, max: 3 }, { min: 2, max: 5 }), 3);
  assert.equal(negotiateVersion({ min: 1, max: 1 }, { min: 1, max: 9 }), 1);
  assert.equal(negotiateVersion({ min: 4, max: 9 }, { min: 1, max: 6 }), 6);
  assert.throws(() => negotiateVersion({ min: 1, max: 2 }, { min: 3, max: 4 }), (e: unknown) => {
    assert.ok(e instanceof MigrationProtocolError);
    assert.equal(e.code, 'VERSION_UNSUPPORTED');
    assert.match(e.message, /1\.\.2.*3\.\.4/);
    return true;
  });
  assert.throws(() => negotiateVersion({ min: 1, max: 2 }, { min: 2, max: 1 }), { code: 'VERSION_UNSUPPORTED' });
  assert.throws(() => negotiateVersion({ min: 1, max: 2 }, { min: 0, max: 1 }), { code: 'VERSION_UNSUPPORTED' });
});

test('a version 3 daemon talks down to version 2 and 1 peers: no switch tail, no post-copy', () => {
  const ours = { min: PROTOCOL_VERSION_MIN, max: PROTOCOL_VERSION_MAX };
  assert.deepEqual(ours, { min: 1, max: 3 });
  assert.equal(POSTCOPY_VERSION, 2);
  assert.equal(SWITCH_VERSION, 3);
  const v1 = { min: 1, max: 1 };
  assert.equal(negotiateVersion(ours, v1), 1);
  assert.equal(negotiateVersion(v1, ours), 1);
  assert.ok(negotiateVersion(ours, v1) < POSTCOPY_VERSION, 'post-copy needs a version 2 peer');
  assert.equal(negotiateVersion(ours, { min: 1, max: 2 }), 2);
  assert.equal(negotiateVersion(ours, ours), 3);
  assert.equal(negotiateVersion(ours, { min: 2, max: 7 }), 3);
  assert.throws(() => negotiateVersion({ min: 2, max: 2 }, v1), { code: 'VERSION_UNSUPPORTED' });
});

/** Absent payload, for hand-made malformed ones: runs as [first, count] pairs. */
function absentPayload(runs: [number, number][], origin = 1, count = runs.length): Buffer {
  const b = Buffer.alloc(8 + runs.length * 8);
  b.writeUInt8(origin, 0);
  b.writeUInt32LE(count, 4);
  runs.forEach(([first, n], i) => {
    b.writeUInt32LE(first, 8 + i * 8);
    b.writeUInt32LE(n, 12 + i * 8);
  });
  return b;
}

/** PageRequest payload, for hand-made malformed ones. */
function requestPayload(pages: number[], count = pages.length): Buffer {
  const b = Buffer.alloc(4 + pages.length * 4);
  b.writeUInt32LE(count, 0);
  pages.forEach((p, i) => b.writeUInt32LE(p, 4 + i * 4));
  return b;
}

test('version 2 frames have the documented byte layouts', () => {
  const absent = enc.encode({ type: 'Absent', origin: 'swap', runs: [{ first: 3, count: 2 }, { first: 0x01020304, count: 1 }] });
  assert.deepEqual([...absent.subarray(0, 8)], [0x24, 0, 0, 0, 24, 0, 0, 0]);
  assert.deepEqual([...absent.subarray(8)], [2, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 4, 3, 2, 1, 1, 0, 0, 0]);
  assert.equal(enc.encode({ type: 'Absent', origin: 'peer', runs: [{ first: 0, count: 1 }] })[8], 1);
  const req = enc.encode({ type: 'PageRequest', pages: [9, 2] });
  assert.deepEqual([...req], [0x25, 0, 0, 0, 12, 0, 0, 0, 2, 0, 0, 0, 9, 0, 0, 0, 2, 0, 0, 0]);
  assert.deepEqual([...enc.encode({ type: 'PostcopyEnd', pagesPushed: 0x0a0b0c0d })], [0x26, 0, 0, 0, 4, 0, 0, 0, 0x0d, 0x0c, 0x0b, 0x0a]);
  assert.deepEqual([...enc.encode({ type: 'PostcopyAck', pagesReceived: 0x01020304 })], [0x28, 0, 0, 0, 4, 0, 0, 0, 4, 3, 2, 1]);
  const done = enc.encode({ type: 'PostcopyComplete', pagesReceived: 1, faults: 2, stallUsTotal: 2 ** 32 + 3, stallUsMax: 4, duplicates: 5 });
  assert.deepEqual([...done.subarray(0, 8)], [0x27, 0, 0, 0, 28, 0, 0, 0]);
  assert.deepEqual([...done.subarray(8)], [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0]);
});

test('version 2 frames round-trip at their limits', () => {
  const ramPages = RAM_BYTES / PAGE_SIZE;
  const opts = { ramBytes: RAM_BYTES };
  const most = Array.from({ length: MAX_ABSENT_RUNS }, (_, i) => ({ first: i * 2, count: 1 }));
  const manyPages = Array.from({ length: MAX_BATCH_PAGES }, (_, i) => (i * 7919) % ramPages);
  assert.equal(new Set(manyPages).size, MAX_BATCH_PAGES);
  const msgs: ProtocolMessage[] = [
    { type: 'Absent', origin: 'peer', runs: [{ first: 0, count: ramPages }] },
    { type: 'Absent', origin: 'swap', runs: [{ first: 5, count: 1 }, { first: 6, count: 1 }] }, // adjacent, not overlapping
    { type: 'Absent', origin: 'peer', runs: [{ first: 2 ** 32 - 2, count: 2 }] }, // RAM size unknown: only u32 bounds
    { type: 'Absent', origin: 'peer', runs: most },
    { type: 'PageRequest', pages: manyPages },
    { type: 'PageRequest', pages: [ramPages - 1, 0] },
    { type: 'PostcopyEnd', pagesPushed: 0 },
    { type: 'PostcopyEnd', pagesPushed: 2 ** 32 - 1 },
    { type: 'PostcopyComplete', pagesReceived: 0, faults: 0, stallUsTotal: 0, stallUsMax: 0, duplicates: 0 },
    { type: 'PostcopyComplete', pagesReceived: 2 ** 32 - 1, faults: 2 ** 32 - 1, stallUsTotal: Number.MAX_SAFE_INTEGER, stallUsMax: Number.MAX_SAFE_INTEGER, duplicates: 2 ** 32 - 1 },
  ];
  for (const m of msgs) assert.deepEqual(decodeAll(enc.encode(m)), [m], m.type);
  // Those that stay within RAM also pass a decoder that knows the RAM size.
  for (const m of [msgs[0]!, msgs[1]!, msgs[4]!, msgs[5]!]) assert.deepEqual(decodeAll(enc.encode(m), opts), [m], m.type);
});

test('malformed Absent frames are refused', () => {
  const ramPages = RAM_BYTES / PAGE_SIZE;
  const opts = { ramBytes: RAM_BYTES };
  const A = MessageType.Absent;
  assert.deepEqual(decodeAll(frame(A, absentPayload([[0, 1], [1, 1]])), opts), [{ type: 'Absent', origin: 'peer', runs: [{ first: 0, count: 1 }, { first: 1, count: 1 }] }]);
  refuses('BAD_FIELD', frame(A, absentPayload([])));  // no runs
  refuses('BAD_FIELD', frame(A, absentPayload([[0, 1]], 1, 0)));  // count 0 with a run after it
  refuses('BAD_FIELD', frame(A, absentPayload([[0, 1]], 1, MAX_ABSENT_RUNS + 1)));
  refuses('BAD_FIELD', frame(A, absentPayload([[4, 0]])));  // an empty run
  refuses('BAD_FIELD', frame(A, absentPayload([[1, 2], [5, 0]])));
  refuses('BAD_FIELD', frame(A, absentPayload([[10, 5], [12, 1]])));  // overlapping
  refuses('BAD_FIELD', frame(A, absentPayload([[10, 5], [14, 3]])));  // overlapping by one page
  refuses('BAD_FIELD', frame(A, absentPayload([[10, 1], [3, 1]])));  // descending
  refuses('BAD_FIELD', frame(A, absentPayload([[10, 1], [10, 1]])));  // the same run twice
  refuses('BAD_FIELD', frame(A, absentPayload([[2 ** 32 - 1, 2]])));  // passes 2^32
  refuses('BAD_FIELD', frame(A, absentPayload([[0, 1]], 0)));  // origin 0
  refuses('BAD_FIELD', frame(A, absentPayload([[0, 1]], 3)));  // origin 3
  refuses('BAD_FIELD', frame(A, absentPayload([[0, 1]], 0xff)));
  refuses('BAD_RESERVED', frame(A, mutateAt(absentPayload([[0, 1]]), 1, 1)));
  refuses('BAD_RESERVED', frame(A, mutateAt(absentPayload([[0, 1]]), 3, 0x80)));
  refuses('PAGE_OUT_OF_RANGE', frame(A, absentPayload([[0, 1], [ramPages - 1, 2]])), opts);  // run past RAM
  refuses('PAGE_OUT_OF_RANGE', frame(A, absentPayload([[ramPages, 1]])), opts);
  refuses('PAGE_OUT_OF_RANGE', frame(A, absentPayload([[0, ramPages + 1]])), opts);
  refuses('TRUNCATED', frame(A, absentPayload([[0, 1], [5, 1]]).subarray(0, 20)));  // ends inside a run
  refuses('TRUNCATED', frame(A, absentPayload([[0, 1]], 1, 2)));  // announces 2 runs, holds 1
  refuses('TRUNCATED', frame(A, absentPayload([]).subarray(0, 6)));  // ends inside the fixed fields
  refuses('TRUNCATED', frame(A, Buffer.alloc(0)));
  refuses('TRAILING_BYTES', frame(A, Buffer.concat([absentPayload([[0, 1]]), Buffer.alloc(8)])));  // a run more than announced
  refuses('TRAILING_BYTES', frame(A, Buffer.concat([absentPayload([[0, 1]]), Buffer.alloc(1)])));
  refuses('TRUNCATED', enc.encode({ type: 'Absent', origin: 'peer', runs: [{ first: 0, count: 1 }] }).subarray(0, 15));  // stream ends inside
  // Refused from the header: more than MAX_ABSENT_RUNS runs cannot fit.
  const huge = Buffer.alloc(FRAME_HEADER_BYTES);
  huge.writeUInt8(A, 0);
  huge.writeUInt32LE(8 + 8 * MAX_ABSENT_RUNS + 1, 4);
  const d = new FrameDecoder();
  assert.throws(() => d.decode(huge), { code: 'FRAME_TOO_LARGE' });
  assert.equal(d.bufferedBytes, FRAME_HEADER_BYTES);
});

test('malformed PageRequest, PostcopyEnd, PostcopyAck and PostcopyComplete frames are refused', () => {
  const ramPages = RAM_BYTES / PAGE_SIZE;
  const opts = { ramBytes: RAM_BYTES };
  const R = MessageType.PageRequest;
  refuses('BAD_FIELD', frame(R, requestPayload([])));  // empty
  refuses('BAD_FIELD', frame(R, requestPayload([1], 0)));
  refuses('BAD_FIELD', frame(R, requestPayload([5, 9, 5])));  // duplicate
  refuses('BAD_FIELD', frame(R, requestPayload([7, 7])));
  refuses('BAD_FIELD', frame(R, requestPayload([1], MAX_BATCH_PAGES + 1)));  // too many
  const tooMany = Array.from({ length: MAX_BATCH_PAGES + 1 }, (_, i) => i);
  refuses('FRAME_TOO_LARGE', frame(R, requestPayload(tooMany)));  // from the header
  refuses('PAGE_OUT_OF_RANGE', frame(R, requestPayload([3, ramPages, 4])), opts);
  assert.deepEqual(decodeAll(frame(R, requestPayload([3, ramPages, 4]))), [{ type: 'PageRequest', pages: [3, ramPages, 4] }]); // RAM size unknown
  refuses('TRUNCATED', frame(R, requestPayload([1, 2], 3)));
  refuses('TRUNCATED', frame(R, requestPayload([1, 2]).subarray(0, 10)));
  refuses('TRUNCATED', frame(R, Buffer.alloc(2)));
  refuses('TRAILING_BYTES', frame(R, requestPayload([1, 2], 1)));
  refuses('TRAILING_BYTES', frame(R, Buffer.concat([requestPayload([1]), Buffer.alloc(3)])));
  refuses('TRUNCATED', frame(MessageType.PostcopyEnd, Buffer.alloc(3)));
  refuses('TRAILING_BYTES', frame(MessageType.PostcopyEnd, Buffer.alloc(5)));
  refuses('TRUNCATED', frame(MessageType.PostcopyAck, Buffer.alloc(3)));
  refuses('TRAILING_BYTES', frame(MessageType.PostcopyAck, Buffer.alloc(5)));
  refuses('TRUNCATED', frame(MessageType.PostcopyComplete, Buffer.alloc(27)));
  refuses('TRAILING_BYTES', frame(MessageType.PostcopyComplete, Buffer.alloc(29)));
  const complete = enc.encode({ type: 'PostcopyComplete', pagesReceived: 1, faults: 1, stallUsTotal: 1, stallUsMax: 1, duplicates: 0 });
  refuses('BAD_FIELD', mutateAt(Buffer.from(complete), FRAME_HEADER_BYTES + 15, 0x01));  // total stall ≥ 2^56: beyond 2^53
  refuses('BAD_FIELD', mutateAt(Buffer.from(complete), FRAME_HEADER_BYTES + 23, 0x80));  // longest stall beyond 2^53
  refuses('TRUNCATED', complete.subarray(0, complete.length - 1));
});

test('the encoder refuses version 2 messages the decoder would refuse', () => {
  const run = (first: number, count: number) => ({ first, count });
  const bad: ProtocolMessage[] = [
    { type: 'Absent', origin: 'peer', runs: [] },
    { type: 'Absent', origin: 'peer', runs: [run(0, 0)] },
    { type: 'Absent', origin: 'peer', runs: [run(4, 4), run(7, 1)] },
    { type: 'Absent', origin: 'peer', runs: [run(4, 1), run(2, 1)] },
    { type: 'Absent', origin: 'peer', runs: [run(2 ** 32 - 1, 2)] },
    { type: 'Absent', origin: 'peer', runs: [run(-1, 2)] },
    { type: 'Absent', origin: 'peer', runs: [run(1.5, 2)] },
    { type: 'Absent', origin: 'peer', runs: Array.from({ length: MAX_ABSENT_RUNS + 1 }, (_, i) => run(i, 1)) },
    { type: 'Absent', origin: 'disk' as 'peer', runs: [run(0, 1)] },
    { type: 'Absent', origin: 'toString' as 'peer', runs: [run(0, 1)] },
    { type: 'PageRequest', pages: [] },
    { type: 'PageRequest', pages: [3, 1, 3] },
    { type: 'PageRequest', pages: [2 ** 32] },
    { type: 'PageRequest', pages: Array.from({ length: MAX_BATCH_PAGES + 1 }, (_, i) => i) },
    { type: 'PostcopyEnd', pagesPushed: -1 },
    { type: 'PostcopyEnd', pagesPushed: 2 ** 32 },
    { type: 'PostcopyComplete', pagesReceived: 0, faults: 0, stallUsTotal: 1.5, stallUsMax: 0, duplicates: 0 },
    { type: 'PostcopyComplete', pagesReceived: 0, faults: 0, stallUsTotal: 2 ** 53, stallUsMax: 0, duplicates: 0 },
    { type: 'PostcopyComplete', pagesReceived: 0, faults: 0, stallUsTotal: 0, stallUsMax: -1, duplicates: 0 },
    { type: 'PostcopyComplete', pagesReceived: 0, faults: 2 ** 32, stallUsTotal: 0, stallUsMax: 0, duplicates: 0 },
    { type: 'PostcopyComplete', pagesReceived: 0, faults: 0, stallUsTotal: 0, stallUsMax: 0, duplicates: NaN },
  ];
  for (const m of bad) assert.throws(() => enc.encode(m), (e: unknown) => e instanceof MigrationProtocolError && e.code === 'BAD_FIELD', JSON.stringify(m).slice(0, 120));
});

/** The whole handshake as the two daemons run it, minus the socket. */
function handshake(issuer: TokenIssuer, sourceToken: { id: Buffer; secret: Buffer }) {
  const sourceNonce = newNonce();
  const challenge = issuer.challenge(1, sourceToken.id, sourceNonce);
  const t: AuthTranscript = { version: 1, tokenId: sourceToken.id, sourceNonce, destinationNonce: challenge.transcript.destinationNonce };
  return { challenge, t, proof: sourceProof(sourceToken.secret, t) };
}

test('authentication accepts the right proof, once, and proves the destination back', () => {
  const issuer = new TokenIssuer();
  const token = issuer.issue();
  assert.deepEqual(parseToken(formatToken(token)), token);
  const { challenge, t, proof } = handshake(issuer, token);
  const back = issuer.verify(challenge, proof);
  assert.deepEqual(back, destinationProof(token.secret, t));
  verifyDestination(token.secret, t, back);
  assert.throws(() => verifyDestination(token.secret, t, sourceProof(token.secret, t)), { code: 'AUTH_FAILED' }); // a reflected source proof
  // One-time: the token is burnt, a fresh challenge with the same token fails.
  const again = handshake(issuer, token);
  assert.throws(() => issuer.verify(again.challenge, again.proof), { code: 'AUTH_FAILED' });
});

test('authentication refuses a wrong token, a replayed nonce, a truncated proof and an expired token', () => {
  let now = 1000;
  const issuer = new TokenIssuer({ ttlMs: 60_000, now: () => now });
  const token = issuer.issue();
  const wrong = { id: token.id, secret: Buffer.alloc(32, 1) };
  const a = handshake(issuer, wrong);
  assert.throws(() => issuer.verify(a.challenge, a.proof), { code: 'AUTH_FAILED' });
  const unknown = handshake(issuer, { id: Buffer.alloc(16, 7), secret: token.secret });
  assert.throws(() => issuer.verify(unknown.challenge, unknown.proof), { code: 'AUTH_FAILED' });

  const b = handshake(issuer, token);
  assert.throws(() => issuer.verify(b.challenge, b.proof.subarray(0, 31)), { code: 'AUTH_FAILED' });
  // That challenge is spent, even though the right proof now arrives.
  assert.throws(() => issuer.verify(b.challenge, b.proof), { code: 'AUTH_REPLAY' });
  // A new challenge object carrying a server nonce already used is a replay too.
  const reused = issuer.challenge(1, token.id, b.t.sourceNonce, b.t.destinationNonce);
  assert.throws(() => issuer.verify(reused, b.proof), { code: 'AUTH_REPLAY' });

  const c = handshake(issuer, token);
  now += 61_000;
  assert.throws(() => issuer.verify(c.challenge, c.proof), { code: 'AUTH_FAILED' });
  assert.throws(() => parseToken('abc'), { code: 'AUTH_FAILED' });
});

test('the proof binds the version and both nonces', () => {
  const secret = Buffer.alloc(32, 3);
  const t: AuthTranscript = { version: 1, tokenId: Buffer.alloc(16), sourceNonce: Buffer.alloc(32, 1), destinationNonce: Buffer.alloc(32, 2) };
  const p = sourceProof(secret, t);
  assert.notDeepEqual(sourceProof(secret, { ...t, version: 2 }), p);
  assert.notDeepEqual(sourceProof(secret, { ...t, sourceNonce: Buffer.alloc(32, 9) }), p);
  assert.notDeepEqual(sourceProof(secret, { ...t, destinationNonce: Buffer.alloc(32, 9) }), p);
  assert.notDeepEqual(destinationProof(secret, t), p);
});
