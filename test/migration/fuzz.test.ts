// Fuzzing the frame decoder: whatever arrives from the network — noise, or valid frames with
// bits flipped, cut short, lengths blown up, duplicated — cut into random chunks, the decoder
// yields only messages that re-encode to themselves or throws a MigrationProtocolError (never
// INTERNAL, never anything else), finishes, and never holds more than one frame's worth of bytes.
// Reproduce a failure with FERRY_FUZZ_SEED=<seed printed below>.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FrameDecoder, FrameEncoder } from '../../src/migration/protocol/codec.js';
import { MigrationProtocolError } from '../../src/migration/protocol/errors.js';
import { FRAME_HEADER_BYTES, MessageType, type ProtocolMessage } from '../../src/migration/protocol/messages.js';
import { RAM_BYTES, sampleMessages } from './samples.js';

const SEED = Number(process.env['FERRY_FUZZ_SEED'] ?? 0x5eed_f00d) >>> 0;
const INPUTS = 60_000;
const TIME_BUDGET_MS = 10_000;

/** mulberry32: tiny, fast, and the same sequence on every platform for a given seed. */
function prng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const TYPES = Object.values(MessageType);

test(`fuzz: the decoder yields valid messages or a MigrationProtocolError (seed ${SEED})`, () => {
  console.log(`fuzz seed ${SEED} (set FERRY_FUZZ_SEED to reproduce)`);
  const rnd = prng(SEED);
  const int = (n: number) => Math.floor(rnd() * n);
  const encoder = new FrameEncoder();
  const samples = sampleMessages();
  assert.deepEqual([...new Set(samples.map((m) => m.type))].sort(), Object.keys(MessageType).sort(), 'the corpus has every frame type, v2 post-copy frames included');
  const frames = samples.map((m) => encoder.encode(m));
  const pick = () => frames[int(frames.length)]!;
  const randomBytes = (n: number) => {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = int(256);
    return b;
  };

  function input(): Buffer {
    const kind = int(9);
    if (kind === 0) return randomBytes(int(64));
    if (kind === 1) {
      // Plausible header (known type, clean flags) over noise: gets past the first checks.
      const h = Buffer.alloc(FRAME_HEADER_BYTES);
      h[0] = TYPES[int(TYPES.length)]!;
      h.writeUInt32LE(int(2) ? int(200) : int(2 ** 32), 4);
      return Buffer.concat([h, randomBytes(int(200))]);
    }
    const parts: Buffer[] = [];
    for (let i = 1 + int(4); i > 0; i--) parts.push(Buffer.from(pick()));
    const target = parts[int(parts.length)]!;
    switch (kind) {
      case 2: // bit flips anywhere in the stream
        for (let i = 1 + int(8); i > 0; i--) {
          const p = parts[int(parts.length)]!;
          const at = int(Math.min(p.length, int(2) ? 64 : p.length));
          p[at]! ^= 1 << int(8);
        }
        break;
      case 3: // truncated frame
        parts[parts.indexOf(target)] = target.subarray(0, int(target.length));
        break;
      case 4: // length field blown up or shrunk
        target.writeUInt32LE([0xffffffff, 0x80000000, (4 << 20) + 1, int(2 ** 32), target.readUInt32LE(4) + 1 + int(10), int(target.readUInt32LE(4) + 1)][int(6)]!, 4);
        break;
      case 5: // duplicated frames
        parts.splice(int(parts.length), 0, target, target);
        break;
      case 6: // a payload byte set at random (lengths, counts, UTF-8, JSON)
        if (target.length > FRAME_HEADER_BYTES) target[FRAME_HEADER_BYTES + int(Math.min(64, target.length - FRAME_HEADER_BYTES))] = int(256);
        break;
      case 7: // one aligned u32 of the payload copied over another: equal or reordered page numbers,
        // overlapping or descending runs, repeated requests, counts that disagree with the payload
        if (target.length >= FRAME_HEADER_BYTES + 8) {
          const words = (target.length - FRAME_HEADER_BYTES) >> 2;
          const from = FRAME_HEADER_BYTES + 4 * int(Math.min(words, 64));
          const to = FRAME_HEADER_BYTES + 4 * int(Math.min(words, 64));
          target.writeUInt32LE(target.readUInt32LE(from), to);
        }
        break;
      default: // noise spliced between valid frames
        parts.splice(int(parts.length + 1), 0, randomBytes(1 + int(16)));
    }
    return Buffer.concat(parts);
  }

  const start = Date.now();
  const outcomes = new Map<string, number>();
  const yielded = new Set<string>();
  for (let n = 0; n < INPUTS; n++) {
    const bytes = input();
    const maxFramePayload = int(2) ? undefined : 64 << 10;
    const decoder = new FrameDecoder({ maxFramePayload, ramBytes: int(2) ? RAM_BYTES : undefined });
    const limit = FRAME_HEADER_BYTES + (maxFramePayload ?? 4 << 20);
    const got: ProtocolMessage[] = [];
    let outcome = 'ok';
    try {
      for (let off = 0; off < bytes.length; ) {
        const len = 1 + int(int(4) ? 64 : 8192);
        decoder.push(bytes.subarray(off, off + len), (m) => got.push(m));
        off += len;
        assert.ok(decoder.bufferedBytes <= limit, `input ${n}: decoder holds ${decoder.bufferedBytes} bytes`);
      }
      decoder.end();
    } catch (e) {
      if (!(e instanceof MigrationProtocolError) || e.code === 'INTERNAL') {
        assert.fail(`seed ${SEED} input ${n}: unexpected ${e instanceof Error ? e.stack : String(e)}`);
      }
      outcome = e.code;
    }
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    for (const m of got) {
      yielded.add(m.type);
      // A yielded message must be one the encoder accepts and that decodes to itself.
      const again = new FrameDecoder().decode(encoder.encode(m));
      assert.deepEqual(again, [m], `seed ${SEED} input ${n}: ${m.type} does not round-trip`);
    }
    assert.ok(Date.now() - start < TIME_BUDGET_MS, `seed ${SEED}: fuzzing exceeded ${TIME_BUDGET_MS} ms at input ${n}`);
  }
  console.log(`fuzz: ${INPUTS} inputs in ${Date.now() - start} ms`, Object.fromEntries([...outcomes].sort((a, b) => b[1] - a[1])));
  assert.ok((outcomes.get('ok') ?? 0) > 0, 'some inputs survive intact');
  assert.ok(outcomes.size > 8, 'the inputs reach many different refusals');
  for (const t of ['Absent', 'PageRequest', 'PostcopyEnd', 'PostcopyComplete', 'PostcopyAck']) assert.ok(yielded.has(t), `some ${t} frames get through`);
});
