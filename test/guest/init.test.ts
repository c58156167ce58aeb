import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { gunzip, parseCpio } from '../../src/guest/cpio.js';
import { mirrorFromDeb822, mirrorFromSourcesList } from '../../src/guest/debian.js';
import { initScriptPath } from '../../src/guest/image.js';
import { BUSYBOX_APPLETS, SHELL_RC, buildInitramfs, initramfsEntries, type InitramfsInput } from '../../src/guest/initramfs.js';
import { canonicalModuleName, modulesDep, type ResolvedModule } from '../../src/guest/modules.js';
import { requireHostTool } from './helpers.js';

const init = readFileSync(initScriptPath(), 'utf8');

test('init script: shebang and valid sh syntax', () => {
  requireHostTool('sh');
  assert.ok(init.startsWith('#!/bin/sh\n'));
  const r = spawnSync('sh', ['-n', initScriptPath()]);
  assert.equal(r.status, 0, r.stderr.toString());
});

test('init script: mounts, modules, hostname, lo, marker, prompt, shell loop', () => {
  for (const re of [
    /^mount -t proc proc \/proc$/m,
    /^mount -t sysfs sysfs \/sys$/m,
    /^mount -t devtmpfs devtmpfs \/dev\b/m,
    /insmod "\/lib\/modules\/\$kver\/\$mod" 2>\/dev\/null/,
    /done < \/etc\/ferry\/modules/,
    /^hostname ferry$/m,
    /^ip link set lo up$/m,
    /^echo "ferry-guest: ready"$/m,
    /^export PS1='ferry# '$/m,
    /^export ENV=\/etc\/ferry\/shrc$/m,
    /^while :; do\n(?:\t#.*\n)*\tsetsid cttyhack sh\n/m,
    /ferry\.ip=\*\)/,
    /ferry\.gw=\*\)/,
  ]) {
    assert.match(init, re);
  }
  // The marker is printed exactly once, after module loading and network setup.
  assert.equal(init.split('echo "ferry-guest: ready"').length, 2);
  const marker = init.indexOf('echo "ferry-guest: ready"');
  assert.ok(marker > init.indexOf('ip addr add "$ferry_ip" dev eth0'));
  assert.ok(marker > init.indexOf('done < /etc/ferry/modules'));
  assert.ok(marker < init.indexOf('setsid cttyhack sh'));
});

test('init script: cmdline parsing picks up ferry.ip and ferry.gw', () => {
  requireHostTool('sh');
  // Run just the parsing loop from /init against a fake cmdline.
  const loop = /for arg in \$\(cat \/proc\/cmdline\); do[\s\S]*?\ndone\n/.exec(init)?.[0];
  assert.ok(loop, 'cmdline loop not found in init');
  const script = `ferry_ip=; ferry_gw=\n${loop.replace('$(cat /proc/cmdline)', '$CMDLINE')}echo "$ferry_ip|$ferry_gw"\n`;
  const r = spawnSync('sh', ['-c', script], { env: { CMDLINE: 'console=ttyS0 ferry.ip=10.0.0.2/24 quiet ferry.gw=10.0.0.1' } });
  assert.equal(r.stdout.toString().trim(), '10.0.0.2/24|10.0.0.1');
});

test('shell rc defines prompt and working power commands', () => {
  assert.match(SHELL_RC, /^PS1='ferry# '$/m);
  for (const n of ['poweroff', 'reboot', 'halt']) assert.match(SHELL_RC, new RegExp(`^${n}\\(\\) \\{ sync; /bin/busybox ${n} -f "\\$@"; \\}$`, 'm'));
});

const fakeModules: ResolvedModule[] = [
  { name: 'failover', relPath: 'kernel/net/core/failover.ko', source: '', data: Buffer.from('F'), depends: [] },
  { name: 'net_failover', relPath: 'kernel/drivers/net/net_failover.ko', source: '', data: Buffer.from('N'), depends: ['failover'] },
  { name: 'virtio_net', relPath: 'kernel/drivers/net/virtio_net.ko', source: '', data: Buffer.from('V'), depends: ['net_failover'] },
  { name: 'ext4', relPath: 'kernel/fs/ext4/ext4.ko', source: '', data: Buffer.from('E'), depends: [] },
];
const input: InitramfsInput = {
  kernelVersion: '6.12.0-test',
  init,
  busybox: Buffer.from('busybox'),
  // ext4 ships in the image but is left for modprobe.
  modules: fakeModules.map((m) => ({ ...m, loadAtBoot: m.name !== 'ext4' })),
  modulesDep: modulesDep(fakeModules),
  programs: [{ name: 'heartbeat', data: Buffer.from('hb') }],
  imageInfo: 'x=1\n',
};

test('initramfs layout', () => {
  const members = parseCpio(gunzip(buildInitramfs(input)));
  const byName = new Map(members.map((m) => [m.name, m]));
  const names = members.map((m) => m.name);
  assert.equal(byName.get('init')?.mode, 0o755);
  assert.equal(byName.get('init')?.data.toString(), init);
  assert.equal(byName.get('bin/busybox')?.mode, 0o755);
  for (const a of ['sh', 'mount', 'insmod', 'cttyhack', 'setsid', 'ip', 'udhcpc', 'httpd']) {
    assert.ok(BUSYBOX_APPLETS.includes(a), a);
    assert.equal(byName.get(`bin/${a}`)?.type, 'symlink', a);
    assert.equal(byName.get(`bin/${a}`)?.data.toString(), 'busybox');
  }
  assert.equal(byName.get('bin/poweroff')?.type, 'file');
  const console = byName.get('dev/console');
  assert.deepEqual([console?.type, console?.rdevmajor, console?.rdevminor], ['char', 5, 1]);
  assert.equal(byName.get('tmp')?.mode, 0o1777);
  assert.equal(byName.get('usr/bin/heartbeat')?.mode, 0o755);
  assert.equal(byName.get('etc/ferry/modules')?.data.toString(),
    'kernel/net/core/failover.ko\nkernel/drivers/net/net_failover.ko\nkernel/drivers/net/virtio_net.ko\n');
  assert.equal(byName.get('lib/modules/6.12.0-test/kernel/fs/ext4/ext4.ko')?.data.toString(), 'E');
  assert.equal(byName.get('lib/modules/6.12.0-test/modules.dep')?.data.toString(),
    'kernel/net/core/failover.ko:\n' +
    'kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n' +
    'kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n' +
    'kernel/fs/ext4/ext4.ko:\n');
  assert.ok(byName.has('lib/modules/6.12.0-test/kernel/drivers/net/virtio_net.ko'));
  // Every member's parent directory comes before it: the kernel's unpacker needs that.
  const seen = new Set<string>();
  for (const n of names) {
    const parent = n.includes('/') ? n.slice(0, n.lastIndexOf('/')) : '';
    if (parent !== '') assert.ok(seen.has(parent), `${n} precedes its directory`);
    seen.add(n);
  }
  assert.deepEqual(initramfsEntries(input).map((e) => e.path), names);
});

test('module names: dashes and underscores are the same', () => {
  assert.equal(canonicalModuleName('virtio-rng'), 'virtio_rng');
});

test('mirror discovery from host apt sources', () => {
  const deb822 = `Types: deb
# http://snapshot.example/archive/debian-security/20250520T000000Z
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
`;
  assert.equal(mirrorFromDeb822(deb822), 'http://mirror.example/debian/');
  assert.equal(mirrorFromDeb822('Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n'), undefined);
  const list = `# comment
deb http://security.example/debian-security bookworm-security main
deb [arch=amd64 signed-by=/x.gpg] http://mirror.example/debian bookworm main
`;
  assert.equal(mirrorFromSourcesList(list), 'http://mirror.example/debian');
  assert.equal(mirrorFromSourcesList('deb http://security.example/debian-security bookworm-security main\n'),
    'http://security.example/debian-security');
});
