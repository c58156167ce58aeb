// PageSet (runs of pages) behaves as a plain set of pages under any sequence of operations.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { PageSet } from '../../src/machine/memory/page-set.js';

const op = fc.record({ add: fc.boolean(), first: fc.integer({ min: 0, max: 200 }), count: fc.integer({ min: 0, max: 40 }) });

test('add, delete, has, size and runs agree with a Set of pages', () => {
  fc.assert(fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
    const set = new PageSet();
    const want = new Set<number>();
    for (const { add, first, count } of ops) {
      let changed = 0;
      for (let p = first; p < first + count; p++) {
        if (add && !want.has(p)) { want.add(p); changed++; }
        if (!add && want.has(p)) { want.delete(p); changed++; }
      }
      assert.equal(add ? set.add(first, count) : set.delete(first, count), changed);
      assert.equal(set.size, want.size);
    }
    for (let p = 0; p < 250; p++) assert.equal(set.has(p), want.has(p), `page ${p}`);
    // Runs are maximal, ascending and disjoint, and hold exactly the set.
    const runs = set.runs();
    const pages: number[] = [];
    for (let i = 0; i < runs.length; i += 2) {
      assert.ok(runs[i + 1]! > 0);
      if (i > 0) assert.ok(runs[i]! > runs[i - 2]! + runs[i - 1]!, 'runs never touch');
      for (let p = runs[i]!; p < runs[i]! + runs[i + 1]!; p++) pages.push(p);
    }
    assert.deepEqual(pages, [...want].sort((a, b) => a - b));
    const copy = new PageSet();
    copy.assign(runs);
    assert.deepEqual(copy.runs(), runs);
    assert.equal(copy.size, set.size);
  }), { numRuns: 500 });
});
