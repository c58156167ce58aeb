// The post-copy pusher's flow control: pushed pages stop at the acknowledgement window, a
// requested page goes out at once even with the window full, and acknowledgements that do not
// match what was sent are protocol errors. A real loopback socket; the test plays the
// destination with a bare encoder and decoder.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { MigrationChannel } from '../../src/migration/engine/channel.js';
import { PostcopyPusher, PUSH_BATCH_PAGES, WINDOW_BYTES, type PushReport } from '../../src/migration/postcopy/pusher.js';
import { FrameDecoder, FrameEncoder } from '../../src/migration/protocol/codec.js';
import { PAGE_SIZE, type PagesMessage, type ProtocolMessage } from '../../src/migration/protocol/messages.js';
import { MigrationError } from '../../src/migration/errors.js';

const PAGES = 4096;
const RAM_BYTES = PAGES * PAGE_SIZE;

/** Incompressible RAM, so frame bytes track page counts. */
function noise(): Uint8Array {
  const ram = new Uint8Array(RAM_BYTES);
  let x = 0x9e3779b9;
  for (let i = 0; i < ram.length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    ram[i] = x & 0xff;
  }
  return ram;
}

interface Pair {
  readonly ch: MigrationChannel;
  readonly peer: Socket;
  readonly received: ProtocolMessage[];
  send(m: ProtocolMessage): void;
  close(): void;
}

async function pair(): Promise<Pair> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const client = connect((server.address() as AddressInfo).port, '127.0.0.1');
  await new Promise<void>((resolve) => client.once('connect', () => resolve()));
  const peer = await accepted;
  server.close();
  const ch = new MigrationChannel(client, { codec: { ramBytes: RAM_BYTES } });
  const decoder = new FrameDecoder({ ramBytes: RAM_BYTES });
  const encoder = new FrameEncoder();
  const received: ProtocolMessage[] = [];
  peer.on('data', (chunk: Buffer) => decoder.push(chunk, (m) => received.push(m)));
  peer.on('error', () => undefined);
  return {
    ch, peer, received,
    send: (m) => { peer.write(encoder.encode(m)); },
    close: () => { ch.close(); peer.destroy(); },
  };
}

const pagesOf = (ms: readonly ProtocolMessage[]): PagesMessage[] => ms.filter((m): m is PagesMessage => m.type === 'Pages');
const pageCount = (ms: readonly ProtocolMessage[]): number => pagesOf(ms).reduce((n, m) => n + m.pages.length, 0);

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function pusher(p: Pair, ram: Uint8Array, ackTimeoutMs = 10_000): PostcopyPusher {
  const pages = Uint32Array.from({ length: PAGES }, (_, i) => i);
  return new PostcopyPusher({ ch: p.ch, ram, pages, round: 3, codec: null, rate: 1e12, ackTimeoutMs, onSent: () => undefined });
}

test('post-copy push: stops at the ack window, requested pages still go at once, acks open it again', async () => {
  const p = await pair();
  const ram = noise();
  try {
    const run = pusher(p, ram).run();
    run.catch(() => undefined);
    // No acks: the push stops once a window's worth of frames is out.
    const frameBytes = PUSH_BATCH_PAGES * PAGE_SIZE;
    const windowFrames = Math.ceil(WINDOW_BYTES / frameBytes);
    await until(() => pagesOf(p.received).length >= windowFrames, 'a window of frames');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(pagesOf(p.received).length, windowFrames, 'nothing past the window without an ack');
    // A request for a page far ahead of the push goes out with the window full.
    p.send({ type: 'PageRequest', pages: [4000, 3000] });
    await until(() => pagesOf(p.received).length === windowFrames + 1, 'the requested pages');
    const urgent = pagesOf(p.received)[windowFrames]!;
    assert.deepEqual(urgent.pages, [3000, 4000]);
    assert.equal(Buffer.compare(urgent.data.subarray(0, PAGE_SIZE), Buffer.from(ram.subarray(3000 * PAGE_SIZE, 3001 * PAGE_SIZE))), 0);
    // Acknowledge everything as it arrives: the push runs to the end.
    const acking = setInterval(() => p.send({ type: 'PostcopyAck', pagesReceived: pageCount(p.received) }), 2);
    let report: PushReport;
    try {
      report = await run;
    } finally {
      clearInterval(acking);
    }
    await until(() => p.received.some((m) => m.type === 'PostcopyEnd'), 'PostcopyEnd');
    assert.equal(report.pagesPushed, PAGES);
    assert.equal(report.pagesRequested, 2);
    const sent = pagesOf(p.received).flatMap((m) => [...m.pages]);
    assert.equal(sent.length, PAGES, 'every page once');
    assert.equal(new Set(sent).size, PAGES);
    for (const m of pagesOf(p.received)) {
      m.pages.forEach((pg, i) => {
        if (Buffer.compare(m.data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE), Buffer.from(ram.subarray(pg * PAGE_SIZE, (pg + 1) * PAGE_SIZE))) !== 0) assert.fail(`page ${pg} differs`);
      });
    }
  } finally {
    p.close();
  }
});

test('post-copy push: an ack for more pages than were sent is a protocol error; a full window with no ack times out', async () => {
  const p = await pair();
  try {
    const run = pusher(p, noise()).run();
    await until(() => pagesOf(p.received).length > 0, 'a frame');
    p.send({ type: 'PostcopyAck', pagesReceived: PAGES + 1 });
    await assert.rejects(run, (e: unknown) => e instanceof MigrationError && e.code === 'MIGRATION_PROTOCOL' && /PostcopyAck of 4097 pages/.test(e.message));
  } finally {
    p.close();
  }
  const q = await pair();
  try {
    await assert.rejects(pusher(q, noise(), 200).run(), (e: unknown) => e instanceof MigrationError && e.code === 'MIGRATION_TIMEOUT');
  } finally {
    q.close();
  }
});

test('post-copy push: the working set at the switch goes before the rest, each page still once', async () => {
  const p = await pair();
  const ram = noise();
  try {
    const pages = Uint32Array.from({ length: PAGES }, (_, i) => i);
    const hot = Uint32Array.from([4095, 2000, 2001, 3500]);
    const run = new PostcopyPusher({ ch: p.ch, ram, pages, hot, round: 3, codec: null, rate: 1e12, ackTimeoutMs: 10_000, onSent: () => undefined }).run();
    const acking = setInterval(() => p.send({ type: 'PostcopyAck', pagesReceived: pageCount(p.received) }), 2);
    try {
      await run;
    } finally {
      clearInterval(acking);
    }
    await until(() => p.received.some((m) => m.type === 'PostcopyEnd'), 'PostcopyEnd');
    const sent = pagesOf(p.received).flatMap((m) => [...m.pages]);
    assert.deepEqual([...pagesOf(p.received)[0]!.pages], [2000, 2001, 3500, 4095], 'the hot pages lead, in a frame of their own');
    assert.deepEqual(sent.slice(4, 8), [0, 1, 2, 3], 'then the rest in page order');
    assert.equal(sent.length, PAGES);
    assert.equal(new Set(sent).size, PAGES, 'every page once');
  } finally {
    p.close();
  }
});
