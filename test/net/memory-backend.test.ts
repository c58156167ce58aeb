import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryNetBackend } from '../../src/net/memory-backend.js';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('what one end sends, the other receives, in order, as copies', async () => {
  const [a, b] = MemoryNetBackend.pair();
  const atB: number[][] = [];
  const atA: number[][] = [];
  b.onReceive((f) => atB.push([...f]));
  a.onReceive((f) => atA.push([...f]));
  const buf = new Uint8Array([1, 2, 3]);
  a.send(buf);
  buf[0] = 9; // the sender reusing its buffer must not change what was sent
  a.send(buf);
  b.send(new Uint8Array([7]));
  assert.equal(atB.length, 0, 'delivery is asynchronous');
  await tick();
  await tick();
  assert.deepEqual(atB, [[1, 2, 3], [9, 2, 3]]);
  assert.deepEqual(atA, [[7]]);
  assert.deepEqual(a.stats, { sent: 2, received: 1, dropped: 0 });
});

test('no receiver or closed end: frames are dropped, never thrown', async () => {
  const [a, b] = MemoryNetBackend.pair();
  a.send(new Uint8Array([1]));
  await tick();
  assert.equal(b.stats.dropped, 1);
  const got: Uint8Array[] = [];
  b.onReceive((f) => got.push(f));
  await b.close();
  await b.close();
  assert.equal(b.isClosed, true);
  a.send(new Uint8Array([2]));
  b.send(new Uint8Array([3]));
  await tick();
  assert.equal(got.length, 0);
  assert.equal(a.stats.dropped, 1);
  assert.equal(b.stats.dropped, 2);
});
