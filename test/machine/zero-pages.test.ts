// The zero-page test every snapshot, migration round and Agile eviction pass relies on: a page
// is zero only if every one of its bytes is, on a view that starts inside shared memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PAGE_SIZE } from '../../src/machine/memory/guest-memory.js';
import { ZeroPages } from '../../src/machine/memory/zero-pages.js';

test('zero pages: any one non-zero byte, at either end or inside, makes a page non-zero', () => {
  const shared = new SharedArrayBuffer(PAGE_SIZE * 9);
  const ram = new Uint8Array(shared, PAGE_SIZE, PAGE_SIZE * 8); // page 0 of the view is page 1 of the buffer
  new Uint8Array(shared)[PAGE_SIZE - 1] = 0xff; // just before the view: not part of page 0
  ram[1 * PAGE_SIZE] = 1;
  ram[2 * PAGE_SIZE + PAGE_SIZE - 1] = 0x80;
  ram[3 * PAGE_SIZE + 1234] = 7;
  ram[7 * PAGE_SIZE] = 0; // the last page stays zero up to the view's end
  const z = new ZeroPages(ram);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map((p) => z.isZero(p)), [true, false, false, false, true, true, true, true]);
  ram[4 * PAGE_SIZE + 2048] = 1;
  assert.equal(z.isZero(4), false, 'the test reads RAM live, not a copy');
});

test('zero pages: a view that ends inside a page tests only its own bytes', () => {
  const bytes = new Uint8Array(PAGE_SIZE + 100);
  const z = new ZeroPages(bytes);
  assert.equal(z.isZero(1), true);
  bytes[PAGE_SIZE + 99] = 1;
  assert.equal(z.isZero(1), false);
});
