// The migrate request's convergence and deadline fields, parsed once at the daemon's edge: good
// values reach the engine's options, bad ones are a 400 naming the field.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMigrateRequest } from '../../src/host/migrate-request.js';
import { HostError } from '../../src/host/errors.js';

const BASE = { destination: '10.0.0.2:7481', token: 't' };

test('throttle, timeoutMs and onTimeout reach the request', () => {
  assert.equal(parseMigrateRequest(BASE).throttle, undefined, 'absent: the engine default');
  assert.equal(parseMigrateRequest(BASE).timeout, undefined);
  assert.equal(parseMigrateRequest({ ...BASE, throttle: 'off' }).throttle, 'off');
  assert.equal(parseMigrateRequest({ ...BASE, throttle: 'auto-converge' }).throttle, 'auto-converge');
  assert.deepEqual(parseMigrateRequest({ ...BASE, timeoutMs: 30_000 }).timeout, { afterMs: 30_000, strategy: 'cancel' });
  assert.deepEqual(parseMigrateRequest({ ...BASE, timeoutMs: 5000, onTimeout: 'postcopy' }).timeout, { afterMs: 5000, strategy: 'postcopy' });
});

test('bad throttle and deadline values are 400s naming the field', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ throttle: 'hard' }, /'throttle' must be one of dirty-limit, auto-converge, off/],
    [{ throttle: true }, /'throttle' must be one of/],
    [{ timeoutMs: 0 }, /'timeoutMs' must be an integer in 1\.\.86400000/],
    [{ timeoutMs: 1.5 }, /'timeoutMs' must be an integer/],
    [{ timeoutMs: '30' }, /'timeoutMs' must be an integer/],
    [{ onTimeout: 'force' }, /'onTimeout' needs 'timeoutMs'/],
    [{ timeoutMs: 1000, onTimeout: 'abort' }, /'onTimeout' must be one of cancel, postcopy, force/],
  ];
  for (const [extra, message] of cases) {
    assert.throws(() => parseMigrateRequest({ ...BASE, ...extra }), (e: unknown) => e instanceof HostError && e.code === 'BAD_REQUEST' && message.test(e.message), JSON.stringify(extra));
  }
});
