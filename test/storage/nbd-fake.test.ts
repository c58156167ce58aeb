// NBD client against a scripted fake server: protocol violations, fragmentation, reordering,
// refusals, silence.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NbdBackend, type NbdBackendOptions } from '../../src/storage/nbd/index.js';
import { startFakeServer, type FakeRequest, type FakeServerOptions, type FakeConnection } from './fake-nbd.js';
import { firstDifference, pattern, sleep, within } from './util.js';

async function withFake(o: FakeServerOptions, body: (b: NbdBackend, srv: Awaited<ReturnType<typeof startFakeServer>>) => Promise<void>,
  extra: Partial<NbdBackendOptions> = {}): Promise<void> {
  const srv = await startFakeServer(o);
  let b: NbdBackend | undefined;
  try {
    b = await NbdBackend.connect({ host: '127.0.0.1', port: srv.port, timeoutMs: 2000, reconnectDelayMs: 50, maxReconnectDelayMs: 200, ...extra });
    await body(b, srv);
  } finally {
    await b?.close();
    await srv.close();
  }
}

test('bad reply magic tears the connection down with NBD_PROTOCOL naming the magic', async () => {
  await withFake({
    onRequest: (req, conn) => {
      const r = conn.reply(req.cookie);
      r.writeUInt32BE(0xdeadbeef, 0);
      conn.socket.write(r);
    },
  }, async (b) => {
    const p1 = b.read(0, 512);
    const p2 = b.write(512, new Uint8Array(512));
    await within(assert.rejects(p1, { code: 'NBD_PROTOCOL', message: /bad reply magic 0xdeadbeef/ }), 2000, 'read');
    await within(assert.rejects(p2, { code: 'NBD_PROTOCOL' }), 2000, 'write');
    assert.equal(b.connectionState, 'reconnecting');
  });
});

test('a reply with an unknown cookie tears the connection down with NBD_PROTOCOL', async () => {
  await withFake({
    onRequest: (req, conn) => {
      const bogus = Buffer.from('0123456789abcdef', 'hex');
      conn.socket.write(conn.reply(bogus));
      void req;
    },
  }, async (b) => {
    await within(assert.rejects(b.flush(), { code: 'NBD_PROTOCOL', message: /unknown cookie 0x0123456789abcdef/ }), 2000, 'flush');
  });
});

test('a structured reply that was never negotiated is a protocol violation', async () => {
  await withFake({
    onRequest: (req, conn) => {
      const r = conn.reply(req.cookie);
      r.writeUInt32BE(0x668e33ef, 0);
      conn.socket.write(r);
    },
  }, async (b) => {
    await within(assert.rejects(b.read(0, 512), { code: 'NBD_PROTOCOL', message: /structured reply/ }), 2000, 'read');
  });
});

test('replies fragmented into tiny chunks and sent in reverse order are matched correctly', async () => {
  const batch: Array<{ req: FakeRequest; conn: FakeConnection }> = [];
  const N = 70;
  await withFake({
    onRequest: (req, conn) => {
      batch.push({ req, conn });
      if (batch.length < N) return;
      // Everything the client sent is in; answer newest first, a few bytes at a time.
      const bytes = Buffer.concat(batch.splice(0).reverse().map(({ req: r, conn: c }) => c.serve(r)));
      let at = 0;
      const drip = (): void => {
        if (at >= bytes.length) return;
        const n = 1 + (at % 7);
        conn.socket.write(bytes.subarray(at, at + n));
        at += n;
        if (at % 97 < 7) setTimeout(drip, 0); else drip();
      };
      drip();
    },
  }, async (b) => {
    const regions = Array.from({ length: N }, (_, i) => ({ off: i * 4096 + (i % 3), len: 100 + i * 13, seed: i + 1 }));
    await within(Promise.all(regions.map((r) => b.write(r.off, pattern(r.len, r.seed)))), 5000, 'writes');
    const reads = await within(Promise.all(regions.map((r) => b.read(r.off, r.len))), 5000, 'reads');
    regions.forEach((r, i) => assert.equal(firstDifference(reads[i]!, pattern(r.len, r.seed)), -1, `region ${i}`));
  });
});

test('per-request server errors map to stable codes; a failed READ carries no payload', async () => {
  await withFake({
    onRequest: (req, conn) => {
      if (req.type === 0 && req.offset === 0) conn.socket.write(conn.reply(req.cookie, 5));
      else if (req.type === 1) conn.socket.write(conn.reply(req.cookie, 28));
      else if (req.type === 4) conn.socket.write(conn.reply(req.cookie, 4242));
      else conn.socket.write(conn.serve(req));
    },
  }, async (b) => {
    await assert.rejects(b.read(0, 512), { code: 'NBD_EIO', errno: 5 });
    await assert.rejects(b.write(0, new Uint8Array(8)), { code: 'NBD_ENOSPC', message: /WRITE of 8 bytes at offset 0: ENOSPC/ });
    await assert.rejects(b.discard(0, 512), { code: 'NBD_EUNKNOWN', message: /errno 4242/ });
    // The stream is still in sync after the failed READ.
    assert.equal((await b.read(512, 512)).length, 512);
    assert.equal(b.connectionState, 'connected');
  });
});

test('ESHUTDOWN makes the client disconnect softly and reconnect', async () => {
  let first = true;
  await withFake({
    onRequest: (req, conn) => {
      if (first) { first = false; conn.socket.write(conn.reply(req.cookie, 108)); return; }
      conn.socket.write(conn.serve(req));
    },
  }, async (b, srv) => {
    await assert.rejects(b.read(0, 512), { code: 'NBD_ESHUTDOWN' });
    const deadline = Date.now() + 3000;
    while (srv.connections < 2 && Date.now() < deadline) await sleep(10);
    assert.equal(srv.connections, 2, 'reconnected');
    await within(b.whenConnected(3000), 4000, 'reconnect after ESHUTDOWN');
    assert.ok(srv.requests.some((r) => r.type === 2), 'NBD_CMD_DISC sent');
    assert.equal((await b.read(0, 512)).length, 512);
  });
});

test('server hanging up with requests in flight rejects them with NBD_DISCONNECTED', async () => {
  await withFake({ onRequest: (_req, conn) => { conn.socket.destroy(); } }, async (b) => {
    const all = [b.read(0, 512), b.write(0, new Uint8Array(512)), b.flush()];
    for (const p of all) await within(assert.rejects(p, { code: 'NBD_DISCONNECTED' }), 2000, 'request');
  });
});

test('a server that stops answering trips the request timeout (NBD_TIMEOUT), never hangs', async () => {
  await withFake({ onRequest: () => undefined }, async (b) => {
    await within(assert.rejects(b.read(0, 512), { code: 'NBD_TIMEOUT', message: /no reply for 300 ms/ }), 3000, 'read');
  }, { requestTimeoutMs: 300 });
});

test('a silent server fails the handshake with NBD_TIMEOUT', async () => {
  const srv = await startFakeServer({ silent: true });
  try {
    await within(assert.rejects(NbdBackend.connect({ host: '127.0.0.1', port: srv.port, timeoutMs: 300 }), { code: 'NBD_TIMEOUT' }), 2000, 'connect');
  } finally { await srv.close(); }
});

test('a refused export name fails with NBD_HANDSHAKE naming the export and the reason', async () => {
  const srv = await startFakeServer({ go: { error: 0x80000006, message: 'no such export' } });
  try {
    await assert.rejects(NbdBackend.connect({ host: '127.0.0.1', port: srv.port, exportName: 'disk7' }),
      { code: 'NBD_HANDSHAKE', message: /"disk7".*NBD_REP_ERR_UNKNOWN: no such export/ });
  } finally { await srv.close(); }
});

test('a server without NBD_OPT_GO is used through NBD_OPT_EXPORT_NAME', async () => {
  await withFake({ go: 'unsupported', size: 2 * 1024 * 1024 }, async (b) => {
    assert.equal(b.size, 2 * 1024 * 1024);
    await b.write(100, pattern(1000, 4));
    assert.equal(firstDifference(await b.read(100, 1000), pattern(1000, 4)), -1);
  });
});

test('an export whose size is not a multiple of 512 is refused with BLOCK_BAD_IMAGE', async () => {
  const srv = await startFakeServer({ size: 1000 });
  try {
    await assert.rejects(NbdBackend.connect({ host: '127.0.0.1', port: srv.port }), { code: 'BLOCK_BAD_IMAGE', message: /1000/ });
  } finally { await srv.close(); }
});

test('flags: no SEND_TRIM means canDiscard=false and discard is a no-op; no SEND_FLUSH means flush sends nothing', async () => {
  await withFake({ transmissionFlags: 1 }, async (b, srv) => {
    assert.equal(b.canDiscard, false);
    await b.discard(0, 512);
    await b.flush();
    assert.deepEqual(srv.requests.map((r) => r.type), []);
  });
});

test('flush waits for the server acknowledgement', async () => {
  let release: (() => void) | undefined;
  await withFake({
    onRequest: (req, conn) => {
      if (req.type === 3) release = () => conn.socket.write(conn.reply(req.cookie));
      else conn.socket.write(conn.serve(req));
    },
  }, async (b) => {
    await b.write(0, new Uint8Array(512));
    let done = false;
    const f = b.flush().then(() => { done = true; });
    await sleep(100);
    assert.equal(done, false, 'flush resolved before the server acknowledged it');
    assert.ok(release);
    release();
    await within(f, 1000, 'flush');
  });
});

test('close() sends NBD_CMD_DISC, stops reconnecting and is idempotent', async () => {
  const srv = await startFakeServer();
  try {
    const b = await NbdBackend.connect({ host: '127.0.0.1', port: srv.port });
    await b.read(0, 512);
    await Promise.all([b.close(), b.close()]);
    await b.close();
    assert.equal(srv.requests.at(-1)?.type, 2);
    assert.equal(b.connectionState, 'closed');
    await sleep(200);
    assert.equal(srv.connections, 1, 'no reconnect after close');
  } finally { await srv.close(); }
});

test('close() while reconnecting stops the reconnect loop', async () => {
  const srv = await startFakeServer({ onRequest: (_r, conn) => conn.socket.destroy() });
  const b = await NbdBackend.connect({ host: '127.0.0.1', port: srv.port, reconnectDelayMs: 20, maxReconnectDelayMs: 40 });
  await assert.rejects(b.read(0, 512), { code: 'NBD_DISCONNECTED' });
  await srv.close();
  await sleep(100);
  await within(b.close(), 2000, 'close while reconnecting');
  assert.equal(b.connectionState, 'closed');
  await assert.rejects(b.whenConnected(100), { code: 'BLOCK_CLOSED' });
});
