// Word-at-a-time page map scans agree with a byte loop, for any map, offset and length.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { countNonZero, forEachRun, nonZeroPages } from '../../src/machine/memory/page-maps.js';

/** A map of 0..3 bytes, mostly runs (as real maps are), at a random offset in its buffer. */
const mapArb = fc.record({
  offset: fc.integer({ min: 0, max: 7 }),
  runs: fc.array(fc.record({ v: fc.integer({ min: 0, max: 3 }), n: fc.integer({ min: 1, max: 37 }) }), { maxLength: 40 }),
}).map(({ offset, runs }) => {
  const bytes = runs.flatMap(({ v, n }) => Array.from({ length: n }, () => v));
  const map = new Uint8Array(new ArrayBuffer(offset + bytes.length + 8), offset, bytes.length);
  map.set(bytes);
  return map;
});

function naiveRuns(map: Uint8Array, value: number): [number, number][] {
  const out: [number, number][] = [];
  for (let p = 0; p < map.length; p++) {
    if (map[p] !== value) continue;
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === p) last[1]++;
    else out.push([p, 1]);
  }
  return out;
}

test('forEachRun finds exactly the maximal runs of a value', () => {
  fc.assert(fc.property(mapArb, fc.integer({ min: 1, max: 3 }), (map, value) => {
    const got: [number, number][] = [];
    forEachRun(map, value, (first, count) => got.push([first, count]));
    assert.deepEqual(got, naiveRuns(map, value));
  }), { numRuns: 500 });
});

test('nonZeroPages and countNonZero take the union of several maps', () => {
  fc.assert(fc.property(mapArb, mapArb, fc.integer({ min: 0, max: 1 }), (a, b, trim) => {
    const pages = Math.max(0, Math.min(a.length, b.length) - trim);
    const want: number[] = [];
    for (let p = 0; p < pages; p++) if (a[p] !== 0 || b[p] !== 0) want.push(p);
    assert.deepEqual([...nonZeroPages([a, b], pages)], want);
    assert.equal(countNonZero([a, b], pages), want.length);
  }), { numRuns: 500 });
});

test('a map shorter than the pages asked for, or a run value out of range, is refused', () => {
  assert.throws(() => nonZeroPages([new Uint8Array(3)], 4), /covers 3 pages, need 4/);
  assert.throws(() => forEachRun(new Uint8Array(4), 0, () => undefined), /1-255/);
});
