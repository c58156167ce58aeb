import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CpioWriter, type CpioEntry, buildCpio, gunzip, gzip, normalizeCpioPath, parseCpio } from '../../src/guest/cpio.js';
import { GuestImageError } from '../../src/guest/errors.js';
import { requireHostTool, withTempDir } from './helpers.js';

// Sizes 0..5 and a multi-KiB binary body exercise every padding remainder.
const binary = Buffer.alloc(5003);
for (let i = 0; i < binary.length; i++) binary[i] = (i * 131 + 7) & 0xff;
const sample: CpioEntry[] = [
  { type: 'dir', path: 'etc' },
  { type: 'dir', path: '/usr/' },
  { type: 'dir', path: 'usr/bin' },
  { type: 'file', path: 'etc/empty', data: new Uint8Array(0) },
  { type: 'file', path: 'etc/a', data: Buffer.from('a') },
  { type: 'file', path: 'etc/ab', data: Buffer.from('ab') },
  { type: 'file', path: 'etc/abc', data: Buffer.from('abc') },
  { type: 'file', path: 'etc/abcd', data: Buffer.from('abcd') },
  { type: 'file', path: './etc/abcde', data: Buffer.from('abcde') },
  { type: 'file', path: 'usr/bin/tool', data: binary, mode: 0o755 },
  { type: 'symlink', path: 'usr/bin/alias', target: 'tool' },
  { type: 'symlink', path: 'etc/abs-link', target: '/usr/bin/tool' },
  { type: 'dir', path: 'tmp', mode: 0o1777 },
];

test('archive extracts with the system cpio', () => {
  requireHostTool('cpio');
  withTempDir((dir) => {
    const archive = buildCpio(sample);
    const out = join(dir, 'out');
    mkdirSync(out);
    const r = spawnSync('cpio', ['-i', '--make-directories', '--no-absolute-filenames', '--quiet'], { cwd: out, input: archive });
    assert.equal(r.status, 0, `cpio -i failed: ${r.stderr.toString()}`);
    for (const e of sample) {
      const p = join(out, normalizeCpioPath(e.path));
      const st = lstatSync(p);
      if (e.type === 'file') {
        assert.ok(st.isFile(), p);
        assert.deepEqual(readFileSync(p), Buffer.from(e.data));
        assert.equal(st.mode & 0o7777, e.mode ?? 0o644);
      } else if (e.type === 'dir') {
        assert.ok(st.isDirectory(), p);
      } else if (e.type === 'symlink') {
        assert.ok(st.isSymbolicLink(), p);
        assert.equal(readlinkSync(p), e.target);
      }
    }
    assert.equal(lstatSync(join(out, 'tmp')).mode & 0o7777, 0o1777);
  });
});

test('system cpio lists every entry, including device nodes, in order', () => {
  requireHostTool('cpio');
  const entries: CpioEntry[] = [...sample, { type: 'dir', path: 'dev' }, { type: 'char', path: 'dev/console', major: 5, minor: 1 }];
  const listing = execFileSync('cpio', ['-t', '--quiet'], { input: buildCpio(entries) }).toString().trim().split('\n');
  assert.deepEqual(listing, entries.map((e) => normalizeCpioPath(e.path)));
  const verbose = execFileSync('cpio', ['-tv', '--quiet'], { input: buildCpio(entries) }).toString();
  assert.match(verbose, /^crw------- .*5,\s+1 .*dev\/console$/m);
  assert.match(verbose, /^lrwxrwxrwx .*usr\/bin\/alias -> tool$/m);
});

test('system cpio reads the gzip output', () => {
  requireHostTool('cpio');
  requireHostTool('gzip');
  withTempDir((dir) => {
    const gz = join(dir, 'a.cpio.gz');
    writeFileSync(gz, gzip(buildCpio(sample)));
    const listing = execFileSync('sh', ['-c', 'gzip -dc "$1" | cpio -t --quiet', 'sh', gz]).toString().trim().split('\n');
    assert.equal(listing.length, sample.length);
  });
});

test('structure: magic, 4-byte alignment, trailer, header fields', () => {
  const w = new CpioWriter(1234);
  w.add({ type: 'file', path: 'x', data: Buffer.from('hello') });
  const a = w.finish();
  assert.equal(a.length % 4, 0);
  assert.equal(a.toString('ascii', 0, 6), '070701');
  const field = (i: number): number => parseInt(a.toString('ascii', 6 + 8 * i, 14 + 8 * i), 16);
  assert.equal(field(1), 0o100644); // mode
  assert.equal(field(4), 1); // nlink
  assert.equal(field(5), 1234); // mtime
  assert.equal(field(6), 5); // filesize
  assert.equal(field(11), 2); // namesize includes the NUL
  // header 110 + "x\0" = 112, already aligned; body "hello" + 3 bytes of padding.
  assert.equal(a.toString('ascii', 110, 112), 'x\0');
  assert.equal(a.toString('ascii', 112, 117), 'hello');
  assert.deepEqual([...a.subarray(117, 120)], [0, 0, 0]);
  assert.equal(a.toString('ascii', 120, 126), '070701');
  assert.ok(a.includes(Buffer.from('TRAILER!!!\0')));
  assert.deepEqual(w.finish(), a, 'finish() is idempotent');
});

test('parseCpio round-trips the writer', () => {
  const members = parseCpio(gunzip(gzip(buildCpio([...sample, { type: 'block', path: 'sda', major: 8, minor: 0, mode: 0o660 }]))));
  assert.equal(members.length, sample.length + 1);
  const tool = members.find((m) => m.name === 'usr/bin/tool');
  assert.ok(tool);
  assert.equal(tool.type, 'file');
  assert.equal(tool.mode, 0o755);
  assert.deepEqual(tool.data, binary);
  const link = members.find((m) => m.name === 'usr/bin/alias');
  assert.equal(link?.type, 'symlink');
  assert.equal(link?.data.toString(), 'tool');
  const dev = members.find((m) => m.name === 'sda');
  assert.deepEqual([dev?.type, dev?.rdevmajor, dev?.rdevminor, dev?.mode], ['block', 8, 0, 0o660]);
});

test('identical input gives identical bytes', () => {
  assert.deepEqual(buildCpio(sample), buildCpio(sample));
});

test('rejects duplicates, escaping paths and bad modes', () => {
  const w = new CpioWriter();
  w.add({ type: 'dir', path: 'a' });
  assert.throws(() => w.add({ type: 'dir', path: '/a/' }), GuestImageError);
  assert.throws(() => w.add({ type: 'file', path: 'a/../../etc/passwd', data: new Uint8Array(1) }), GuestImageError);
  assert.throws(() => w.add({ type: 'file', path: '/', data: new Uint8Array(1) }), GuestImageError);
  assert.throws(() => w.add({ type: 'file', path: 'b', data: new Uint8Array(1), mode: 0o100644 }), GuestImageError);
  w.finish();
  assert.throws(() => w.add({ type: 'dir', path: 'c' }), GuestImageError);
  assert.throws(() => parseCpio(Buffer.from('not a cpio archive at all, definitely longer than one header'.repeat(3))), GuestImageError);
});
