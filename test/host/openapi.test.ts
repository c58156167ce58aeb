// docs/api/openapi.json must describe every route the daemon serves, and nothing it does not.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { ROUTES } from '../../src/host/daemon.js';
import { httpStatus } from '../../src/host/errors.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');

interface Operation { responses: Record<string, unknown>; operationId: string }
interface Doc {
  openapi: string;
  paths: Record<string, Record<string, Operation | unknown>>;
  components: { schemas: Record<string, unknown>; responses: Record<string, unknown> };
}

const doc = JSON.parse(readFileSync(join(root, 'docs/api/openapi.json'), 'utf8')) as Doc;
const METHODS = ['get', 'post', 'put', 'delete', 'patch'];

test('the document is OpenAPI 3.1', () => {
  assert.match(doc.openapi, /^3\.1\./);
});

test('every route the daemon serves is documented, with 401 and its error statuses', () => {
  for (const route of ROUTES) {
    const op = doc.paths[route.path]?.[route.method.toLowerCase()] as Operation | undefined;
    assert.ok(op, `${route.method} ${route.path} is not in openapi.json`);
    assert.ok(op.responses['401'], `${route.method} ${route.path} lacks 401`);
    assert.ok(Object.keys(op.responses).some((s) => s.startsWith('2')), `${route.method} ${route.path} lacks a success response`);
    if (route.path.includes('{name}')) assert.ok(op.responses['404'], `${route.method} ${route.path} lacks 404`);
  }
});

test('every documented operation is served', () => {
  const served = new Set(ROUTES.map((r) => `${r.method} ${r.path}`));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of Object.keys(item).filter((k) => METHODS.includes(k))) {
      assert.ok(served.has(`${method.toUpperCase()} ${path}`), `${method.toUpperCase()} ${path} is documented but not served`);
    }
  }
});

test('every $ref resolves', () => {
  const text = JSON.stringify(doc);
  for (const m of text.matchAll(/"\$ref":"#\/components\/(\w+)\/(\w+)"/g)) {
    const section = (doc.components as unknown as Record<string, Record<string, unknown>>)[m[1]!];
    assert.ok(section?.[m[2]!], `unresolved ${m[0]}`);
  }
});

test('the documented error statuses match the daemon', () => {
  const info = (doc as unknown as { info: { description: string } }).info.description;
  for (const [status, codes] of [[400, ['BAD_REQUEST', 'CONFIG_INVALID', 'DEVICE_SPEC_INVALID']], [401, ['UNAUTHORIZED']], [404, ['VM_NOT_FOUND']], [409, ['VM_EXISTS', 'VM_INVALID_STATE']]] as const) {
    for (const code of codes) {
      assert.equal(httpStatus(code), status, code);
      assert.ok(info.includes(code), `${code} not described`);
    }
  }
});
