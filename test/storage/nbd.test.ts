// NBD client against a real nbdkit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NbdBackend } from '../../src/storage/nbd/index.js';
import { BlockIoError } from '../../src/storage/errors.js';
import { startNbdkit, type Nbdkit } from './nbdkit.js';
import { firstDifference, pattern, sleep, within } from './util.js';

const MiB = 1024 * 1024;

async function withServer(args: string[], body: (b: NbdBackend, s: Nbdkit) => Promise<void>, opts: { readOnly?: boolean } = {}): Promise<void> {
  const server = await startNbdkit(args, opts);
  let backend: NbdBackend | undefined;
  try {
    backend = await NbdBackend.connect({ host: '127.0.0.1', port: server.port, timeoutMs: 5000 });
    await body(backend, server);
  } finally {
    await backend?.close();
    await server.stop();
  }
}

function assertSame(actual: Uint8Array, expected: Uint8Array, what: string): void {
  const d = firstDifference(actual, expected);
  assert.equal(d, -1, `${what}: first difference at byte ${d} (lengths ${actual.length}/${expected.length})`);
}

test('nbdkit memory: size and flags', async () => {
  await withServer(['memory', '64M'], async (b) => {
    assert.equal(b.size, 64 * MiB);
    assert.equal(b.readOnly, false);
    assert.equal(b.canDiscard, true);
    assert.equal(b.connectionState, 'connected');
  });
});

test('nbdkit memory: round trips at assorted offsets and sizes, neighbours untouched', async () => {
  await withServer(['memory', '64M'], async (b) => {
    const model = new Uint8Array(b.size);
    const cases: Array<[number, number]> = [
      [0, 512], [1, 1], [511, 3], [4095, 4099], [b.size - 1, 1], [b.size - 4096, 4096],
      [12345, 100_000], [3 * MiB + 7, 2 * MiB + 13], [0, 0],
    ];
    let seed = 1;
    for (const [off, len] of cases) {
      const data = pattern(len, seed++);
      await b.write(off, data);
      model.set(data, off);
      assertSame(await b.read(off, len), data, `read back ${len}@${off}`);
    }
    // Re-read wider windows to catch writes that spilled over their range.
    for (const [off, len] of cases) {
      const lo = Math.max(0, off - 100);
      const hi = Math.min(b.size, off + len + 100);
      assertSame(await b.read(lo, hi - lo), model.subarray(lo, hi), `window around ${len}@${off}`);
    }
  });
});

test('nbdkit memory: a 40 MiB write and read are split at the 32 MiB default and round-trip', async () => {
  await withServer(['memory', '64M'], async (b) => {
    assert.equal(b.maxRequestBytes, 32 * MiB);
    const data = pattern(40 * MiB + 5, 7);
    await b.write(1000, data);
    assertSame(await b.read(1000, data.length), data, '40 MiB round trip');
  });
});

test('nbdkit with a 64 KiB maximum block size: requests are split to honour it', async () => {
  // error policy: the server refuses any request above its advertised maximum, so a round trip
  // only works if the client split correctly.
  await withServer(['--filter=blocksize-policy', 'memory', '16M', 'blocksize-maximum=64K', 'blocksize-error-policy=error'], async (b) => {
    assert.equal(b.maxRequestBytes, 64 * 1024);
    const data = pattern(5 * MiB + 123, 9);
    await b.write(777, data);
    assertSame(await b.read(777, data.length), data, 'split round trip');
  });
});

test('nbdkit memory: 128 concurrent writes then 128 concurrent reads, contents verified', async () => {
  await withServer(['memory', '64M'], async (b) => {
    const n = 128;
    const regions = Array.from({ length: n }, (_, i) => ({ off: i * 256 * 1024 + (i % 7) * 3, len: 1 + ((i * 7919) % (200 * 1024)), seed: 100 + i }));
    await Promise.all(regions.map((r) => b.write(r.off, pattern(r.len, r.seed))));
    const got = await Promise.all(regions.map((r) => b.read(r.off, r.len)));
    regions.forEach((r, i) => assertSame(got[i]!, pattern(r.len, r.seed), `region ${i}`));
    // Mixed reads and writes in flight together on disjoint ranges.
    const mixed = await Promise.all(regions.map((r, i) => i % 2 === 0
      ? b.write(r.off, pattern(r.len, r.seed + 1000)).then(() => undefined)
      : b.read(r.off, r.len)));
    regions.forEach((r, i) => { if (i % 2 === 1) assertSame(mixed[i]!, pattern(r.len, r.seed), `mixed read ${i}`); });
    for (const [i, r] of regions.entries()) {
      if (i % 2 === 0) assertSame(await b.read(r.off, r.len), pattern(r.len, r.seed + 1000), `mixed write ${i}`);
    }
  });
});

test('nbdkit memory: flush resolves; trim then read returns zeros', async () => {
  await withServer(['memory', '64M'], async (b) => {
    assert.equal(b.flushNeeded, true);
    await b.write(0, pattern(2 * MiB, 3));
    await b.flush();
    await b.discard(4096, MiB);
    const after = await b.read(0, 2 * MiB);
    assertSame(after.subarray(4096, 4096 + MiB), new Uint8Array(MiB), 'trimmed range');
    assertSame(after.subarray(0, 4096), pattern(2 * MiB, 3).subarray(0, 4096), 'before trimmed range');
    assertSame(after.subarray(4096 + MiB), pattern(2 * MiB, 3).subarray(4096 + MiB), 'after trimmed range');
    await b.flush();
  });
});

test('nbdkit -r: read-only export rejects writes and discards with BLOCK_READ_ONLY', async () => {
  await withServer(['memory', '1M'], async (b) => {
    assert.equal(b.readOnly, true);
    assert.equal(b.canDiscard, false);
    assert.equal((await b.read(0, 512)).length, 512);
    await assert.rejects(b.write(0, new Uint8Array(512)), { code: 'BLOCK_READ_ONLY', message: /read-only/ });
    await assert.rejects(b.discard(0, 512), { code: 'BLOCK_READ_ONLY' });
  }, { readOnly: true });
});

test('nbdkit error filter: a server EIO fails that request with NBD_EIO and the connection stays usable', async () => {
  await withServer(['--filter=error', 'memory', '1M', 'error-pwrite=EIO', 'error-pwrite-rate=100%'], async (b) => {
    await assert.rejects(b.write(0, new Uint8Array(512)), (e: unknown) => {
      assert.ok(e instanceof BlockIoError);
      assert.equal(e.code, 'NBD_EIO');
      assert.match(e.message, /WRITE of 512 bytes at offset 0/);
      return true;
    });
    assert.equal((await b.read(0, 512)).length, 512);
    assert.equal(b.connectionState, 'connected');
  });
});

test('out-of-range requests and use after close fail with stable codes', async () => {
  await withServer(['memory', '1M'], async (b) => {
    await assert.rejects(b.read(b.size - 1, 2), { code: 'BLOCK_OUT_OF_RANGE' });
    await assert.rejects(b.write(-1, new Uint8Array(1)), { code: 'BLOCK_OUT_OF_RANGE' });
    await assert.rejects(b.read(0.5, 1), { code: 'BLOCK_OUT_OF_RANGE' });
    await b.close();
    await b.close();
    await assert.rejects(b.read(0, 1), { code: 'BLOCK_CLOSED' });
    await assert.rejects(b.flush(), { code: 'BLOCK_CLOSED' });
  });
});

test('nbdkit killed mid-write: pending writes reject promptly, reconnect after restart, acknowledged data survives', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-nbd-kill-'));
  const image = join(dir, 'disk.img');
  writeFileSync(image, new Uint8Array(64 * MiB));
  // Each write takes 100 ms on the server, so the batch below is certainly still in flight when the kill lands
  // (without the delay a fast machine acknowledged all 32 MiB before the kill).
  let server = await startNbdkit(['--filter=delay', 'file', image, 'delay-write=100ms']);
  const port = server.port;
  const b = await NbdBackend.connect({ host: '127.0.0.1', port, timeoutMs: 5000, reconnectDelayMs: 50, maxReconnectDelayMs: 400 });
  const states: string[] = [];
  b.onStateChange((s) => states.push(s));
  try {
    const before = pattern(MiB, 1);
    await b.write(0, before);

    const batch = Array.from({ length: 64 }, (_, i) => ({ off: MiB + i * 512 * 1024, data: pattern(512 * 1024, 50 + i) }));
    const outcomes = batch.map((w) => b.write(w.off, w.data).then(() => 'ok' as const, (e: unknown) => e));
    await Promise.race(outcomes); // at least one reply (or failure) seen: the batch is on the wire
    await server.kill();
    const settled = await within(Promise.all(outcomes), 5000, 'writes in flight when nbdkit was killed');

    const failures = settled.filter((s) => s !== 'ok');
    assert.ok(failures.length > 0, 'expected some writes to be in flight at the kill');
    for (const f of failures) {
      assert.ok(f instanceof BlockIoError, `not a BlockIoError: ${String(f)}`);
      assert.equal(f.code, 'NBD_DISCONNECTED', f.message);
    }
    // While the server is down, new requests fail fast instead of queueing forever.
    await within(assert.rejects(b.read(0, 512), { code: 'NBD_DISCONNECTED' }), 1000, 'read while server down');
    assert.equal(b.connectionState, 'reconnecting');

    await sleep(300); // let a few reconnect attempts fail
    server = await startNbdkit(['file', image], { port });
    await within(b.whenConnected(5000), 6000, 'reconnect');

    assertSame(await b.read(0, MiB), before, 'write acknowledged before the batch');
    for (const [i, w] of batch.entries()) {
      if (settled[i] === 'ok') assertSame(await b.read(w.off, w.data.length), w.data, `acknowledged batch write ${i}`);
    }
    // Writes acknowledged on the dead connection were never flushed: the first flush says so.
    await assert.rejects(b.flush(), { code: 'NBD_WRITES_MAYBE_LOST' });
    const after = pattern(64 * 1024, 999);
    await b.write(40 * MiB, after);
    await b.flush();
    assertSame(await b.read(40 * MiB, after.length), after, 'write after reconnect');
    assert.deepEqual(states.slice(0, 1), ['reconnecting']);
    assert.ok(states.includes('connected'));
  } finally {
    await b.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('initial connect to a port with no server fails fast with NBD_DISCONNECTED', async () => {
  const { freePort } = await import('./nbdkit.js');
  const port = await freePort();
  await within(assert.rejects(NbdBackend.connect({ host: '127.0.0.1', port, timeoutMs: 2000 }), { code: 'NBD_DISCONNECTED', message: /ECONNREFUSED/ }), 3000, 'connect');
});
