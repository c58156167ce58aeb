// The real image build: downloads Debian packages the first time (~115 MB), then uses the cache.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, openSync, readFileSync, readSync, closeSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { gunzip, parseCpio } from '../../src/guest/cpio.js';
import { debFileName } from '../../src/guest/debian.js';
import { type GuestImage, defaultCacheDir, ensureGuestImage, guestImageStatus, isRiscvImage, readManifest } from '../../src/guest/image.js';
import { requireHostTool, withTempDir } from './helpers.js';

const REQUIRED_MODULES = ['virtio_mmio', 'virtio_net', 'virtio_blk', 'virtio_balloon', 'failover', 'net_failover'];
let image: GuestImage | undefined;

async function theImage(): Promise<GuestImage> {
  image ??= await ensureGuestImage({ log: (m) => console.log(`# ${m}`) });
  return image;
}

test('ensureGuestImage builds a bootable kernel + initramfs', { timeout: 20 * 60_000 }, async () => {
  for (const t of ['apt-get', 'apt-cache', 'dpkg-deb', 'xz', 'riscv64-linux-gnu-gcc', 'cpio']) requireHostTool(t);
  const img = await theImage();

  const head = Buffer.alloc(64);
  const fd = openSync(img.kernel, 'r');
  readSync(fd, head, 0, 64, 0);
  closeSync(fd);
  assert.ok(isRiscvImage(head), 'kernel has the RISC-V Image magic "RSC\\x05" at 0x38');
  assert.equal(head.toString('latin1', 0x38, 0x3c), 'RSC\x05');
  assert.match(img.kernelVersion, /^6\.12\.\d+.*riscv64$/);
  for (const m of REQUIRED_MODULES) assert.ok(img.modules.includes(m), `module ${m} shipped`);
  assert.ok(img.modules.indexOf('failover') < img.modules.indexOf('net_failover'));
  assert.ok(img.modules.indexOf('net_failover') < img.modules.indexOf('virtio_net'));

  // The listing as the system cpio sees it.
  const listing = new Set(execFileSync('sh', ['-c', 'gzip -dc "$1" | cpio -t --quiet', 'sh', img.initramfs]).toString().trim().split('\n'));
  for (const p of ['init', 'bin/busybox', 'bin/sh', 'bin/cttyhack', 'dev/console', 'usr/bin/heartbeat', 'usr/bin/memwriter', 'etc/ferry/modules']) {
    assert.ok(listing.has(p), `${p} in initramfs`);
  }
  const modDir = `lib/modules/${img.kernelVersion}`;
  assert.ok(listing.has(`${modDir}/modules.dep`));
  for (const ko of ['drivers/virtio/virtio_mmio.ko', 'drivers/net/virtio_net.ko', 'drivers/block/virtio_blk.ko',
    'drivers/virtio/virtio_balloon.ko', 'net/core/failover.ko', 'drivers/net/net_failover.ko']) {
    assert.ok(listing.has(`${modDir}/kernel/${ko}`), `${ko} in initramfs`);
  }

  const members = parseCpio(gunzip(readFileSync(img.initramfs)));
  const byName = new Map(members.map((m) => [m.name, m]));
  for (const m of members.filter((x) => x.name.endsWith('.ko'))) {
    assert.equal(m.data.readUInt32BE(0), 0x7f454c46, `${m.name} is an uncompressed ELF`);
  }
  assert.equal(byName.get('bin/busybox')?.data.readUInt32BE(0), 0x7f454c46);
  // /init loads the virtio modules; ext4 and its dependencies ship for modprobe only.
  const loadList = byName.get('etc/ferry/modules')?.data.toString().trim().split('\n') ?? [];
  assert.deepEqual(loadList.map((rel) => rel.replace(/^.*\//, '').replace(/\.ko$/, '').replace(/-/g, '_')).sort(),
    img.modules.filter((m) => !['ext4', 'jbd2', 'mbcache', 'crc16', 'crc32c_generic'].includes(m)).sort());
  for (const rel of loadList) assert.ok(byName.has(`${modDir}/${rel}`), `${rel} listed and shipped`);
  assert.ok(listing.has(`${modDir}/kernel/fs/ext4/ext4.ko`), 'ext4 ships for modprobe');

  const st = guestImageStatus();
  assert.equal(st.current, true);
});

test('a current cache is returned at once, without building', async () => {
  await theImage();
  const logs: string[] = [];
  const t0 = Date.now();
  const again = await ensureGuestImage({ log: (m) => logs.push(m) });
  assert.ok(Date.now() - t0 < 2000);
  assert.deepEqual(logs, []);
  assert.deepEqual(again, await theImage());
});

test('changed inputs rebuild from cached .debs without network access', { timeout: 10 * 60_000 }, async () => {
  const img = await theImage();
  const src = readManifest(defaultCacheDir());
  assert.ok(src);
  await withTempDir(async (cacheDir) => {
    mkdirSync(join(cacheDir, 'debs'));
    for (const ref of [src.packages.kernel, src.packages.busybox]) {
      copyFileSync(join(defaultCacheDir(), 'debs', debFileName(ref)), join(cacheDir, 'debs', debFileName(ref)));
    }
    // A stale hash forces a rebuild; an unreachable mirror proves apt is never consulted.
    writeFileSync(join(cacheDir, 'manifest.json'), JSON.stringify({ ...src, hash: 'stale', mirror: 'http://127.0.0.1:9/debian' }));
    const logs: string[] = [];
    const rebuilt = await ensureGuestImage({ cacheDir, log: (m) => logs.push(m) });
    assert.ok(!logs.some((l) => l.startsWith('apt:')), logs.join('\n'));
    assert.ok(logs.some((l) => l.startsWith('built ')), logs.join('\n'));
    assert.equal(rebuilt.kernelVersion, img.kernelVersion);
    assert.deepEqual(rebuilt.modules, img.modules);
    // Same inputs, same bytes: the initramfs build is reproducible.
    assert.deepEqual(readFileSync(rebuilt.initramfs), readFileSync(img.initramfs));
    assert.equal(readManifest(cacheDir)?.hash, src.hash);
  });
});

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const mod = fileURLToPath(new URL('../../src/cli/image.js', import.meta.url));
  const script = `import { imageCommand } from ${JSON.stringify(mod)}; process.exitCode = await imageCommand(JSON.parse(process.argv[1]));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, JSON.stringify(args)], { timeout: 10 * 60_000 });
  return { status: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

test('ferry image build --json / info', async () => {
  const img = await theImage();
  const b = cli(['build', '--json']);
  assert.equal(b.status, 0, b.stderr);
  const parsed = JSON.parse(b.stdout) as GuestImage;
  assert.equal(parsed.kernel, img.kernel);
  assert.equal(parsed.initramfs, img.initramfs);
  assert.ok(existsSync(parsed.kernel));
  const plain = cli(['build']);
  assert.equal(plain.status, 0);
  assert.match(plain.stdout, /^kernel\s+\S+vmlinux-/m);
  const info = cli(['info', '--json']);
  assert.equal(info.status, 0);
  assert.equal((JSON.parse(info.stdout) as { current: boolean }).current, true);
  assert.match(cli(['info']).stdout, /^status\s+current$/m);
});

test('ferry image: usage errors exit 2 with a message', () => {
  for (const args of [[], ['frobnicate'], ['build', '--nope'], ['build', 'extra'], ['info', '--force'], ['build', '--json=1']]) {
    const r = cli(args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^ferry image: .+\nusage: ferry image build/);
    assert.equal(r.stdout, '');
  }
  const empty = withTempDir((d) => cli(['info', '--cache-dir', d]));
  assert.equal(empty.status, 1);
  assert.match(empty.stdout, /no guest image/);
});
