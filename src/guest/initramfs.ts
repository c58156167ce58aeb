// Lays out the guest's root filesystem and packs it as a gzip'd newc initramfs. Pure: every input
// arrives as bytes, so this can be tested without downloading Debian packages.
import { posix } from 'node:path';
import { CpioWriter, type CpioEntry, gzip, normalizeCpioPath } from './cpio.js';

/**
 * Applets linked at build time. Linking instead of `busybox --install` at boot keeps boot short
 * (every syscall is emulated) and makes the image's command set visible in its listing.
 * poweroff/reboot/halt are deliberately absent: they are wrapper scripts (see below).
 */
export const BUSYBOX_APPLETS: readonly string[] = [
  '[', '[[', 'ash', 'awk', 'base64', 'basename', 'cat', 'chmod', 'chown', 'clear', 'cmp', 'cp', 'cpio',
  'cttyhack', 'cut', 'date', 'dd', 'df', 'diff', 'dirname', 'dmesg', 'du', 'echo', 'env', 'expr', 'false',
  'find', 'free', 'grep', 'gunzip', 'gzip', 'head', 'hexdump', 'hostname', 'httpd', 'id', 'ifconfig',
  'insmod', 'ip', 'kill', 'killall', 'less', 'ln', 'ls', 'lsmod', 'md5sum', 'mdev', 'mkdir', 'mke2fs',
  'mkfifo', 'mknod', 'mktemp', 'modinfo', 'modprobe', 'more', 'mount', 'mv', 'nc', 'netstat', 'nproc',
  'nslookup', 'od', 'pidof', 'ping', 'printf', 'ps', 'pwd', 'readlink', 'realpath', 'rm', 'rmdir',
  'rmmod', 'route', 'sed', 'seq', 'setsid', 'sh', 'sha256sum', 'sleep', 'sort', 'stat', 'stty', 'sync',
  'sysctl', 'tail', 'tar', 'tee', 'telnet', 'test', 'time', 'timeout', 'top', 'touch', 'tr', 'true',
  'truncate', 'tty', 'udhcpc', 'umount', 'uname', 'uniq', 'uptime', 'usleep', 'vi', 'watch', 'wc', 'wget',
  'which', 'xargs', 'xxd', 'yes', 'zcat',
];

/**
 * busybox poweroff/reboot/halt signal PID 1, but our /init is a shell waiting for the console
 * shell and cannot react; calling the reboot syscall (-f) after a sync does the job directly.
 * Wrapper scripts cover programs that exec them by name; interactive shells need functions too,
 * because Debian's busybox ash runs its own applets before searching PATH.
 */
const POWER_WRAPPERS: readonly string[] = ['poweroff', 'reboot', 'halt'];

/**
 * Served by busybox httpd when /init configures networking, so "is the VM reachable after the
 * move" is one `curl`. /init substitutes the hostname at boot.
 */
export const WWW_INDEX = `<!DOCTYPE html>
<html><head><title>ferry guest @HOSTNAME@</title></head>
<body><h1>ferry guest @HOSTNAME@</h1><p>Served by busybox httpd inside a ferry VM.</p></body></html>
`;

/** Read by every interactive shell through ENV (exported by /init). */
export const SHELL_RC = `# ferry guest: sourced by interactive shells via $ENV
PS1='ferry# '
${POWER_WRAPPERS.map((n) => `${n}() { sync; /bin/busybox ${n} -f "$@"; }`).join('\n')}
`;

export interface InitramfsModule {
  /** Path under /lib/modules/<version>/, e.g. kernel/drivers/net/virtio_net.ko */
  relPath: string;
  data: Uint8Array;
  /** Listed in /etc/ferry/modules for /init to load; the others wait for modprobe. */
  loadAtBoot: boolean;
}

export interface InitramfsInput {
  kernelVersion: string;
  init: string;
  busybox: Uint8Array;
  /** Already in load order (dependencies first). */
  modules: readonly InitramfsModule[];
  /** Contents of modules.dep for busybox modprobe. */
  modulesDep: string;
  /** ferry's guest programs, installed to /usr/bin. */
  programs: ReadonlyArray<{ name: string; data: Uint8Array }>;
  /** Free-form build description stored at /etc/ferry/image. */
  imageInfo: string;
}

export function initramfsEntries(input: InitramfsInput): CpioEntry[] {
  const entries = new Map<string, CpioEntry>();
  const ensureDir = (dir: string, mode = 0o755): void => {
    const d = normalizeCpioPath(dir);
    if (entries.has(d)) return;
    const parent = posix.dirname(d);
    if (parent !== '.') ensureDir(parent);
    entries.set(d, { type: 'dir', path: d, mode });
  };
  const put = (e: CpioEntry): void => {
    const p = normalizeCpioPath(e.path);
    const parent = posix.dirname(p);
    if (parent !== '.') ensureDir(parent);
    entries.set(p, { ...e, path: p });
  };
  const text = (s: string): Uint8Array => Buffer.from(s, 'utf8');

  for (const d of ['bin', 'dev', 'etc/ferry', 'lib/modules', 'mnt', 'proc', 'run', 'sys', 'usr/bin', 'var']) ensureDir(d);
  ensureDir('root', 0o700);
  ensureDir('tmp', 0o1777);
  put({ type: 'symlink', path: 'sbin', target: 'bin' });
  put({ type: 'symlink', path: 'usr/sbin', target: '../bin' });
  put({ type: 'symlink', path: 'var/run', target: '../run' });
  // The kernel opens /dev/console for init's stdio before /init can mount devtmpfs.
  put({ type: 'char', path: 'dev/console', major: 5, minor: 1, mode: 0o600 });
  put({ type: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 });

  put({ type: 'file', path: 'init', data: text(input.init), mode: 0o755 });
  put({ type: 'file', path: 'bin/busybox', data: input.busybox, mode: 0o755 });
  for (const applet of BUSYBOX_APPLETS) put({ type: 'symlink', path: `bin/${applet}`, target: 'busybox' });
  for (const name of POWER_WRAPPERS) {
    put({ type: 'file', path: `bin/${name}`, mode: 0o755, data: text(`#!/bin/sh\nsync\nexec /bin/busybox ${name} -f "$@"\n`) });
  }
  for (const prog of input.programs) put({ type: 'file', path: `usr/bin/${prog.name}`, data: prog.data, mode: 0o755 });

  const modDir = `lib/modules/${input.kernelVersion}`;
  ensureDir(modDir);
  for (const m of input.modules) put({ type: 'file', path: `${modDir}/${m.relPath}`, data: m.data, mode: 0o644 });
  put({ type: 'file', path: `${modDir}/modules.dep`, data: text(input.modulesDep) });
  put({ type: 'file', path: 'etc/ferry/modules', data: text(input.modules.filter((m) => m.loadAtBoot).map((m) => `${m.relPath}\n`).join('')) });
  put({ type: 'file', path: 'etc/ferry/image', data: text(input.imageInfo) });
  put({ type: 'file', path: 'etc/ferry/shrc', data: text(SHELL_RC) });

  put({ type: 'file', path: 'var/www/index.html', data: text(WWW_INDEX), mode: 0o644 });
  put({ type: 'file', path: 'etc/hostname', data: text('ferry\n') });
  // Enough for `id`, `ls -l` and `whoami` to print names instead of numbers.
  put({ type: 'file', path: 'etc/passwd', data: text('root:x:0:0:root:/root:/bin/sh\n') });
  put({ type: 'file', path: 'etc/group', data: text('root:x:0:\n') });

  // Sorted so parents precede children and identical inputs give identical archives.
  return [...entries.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** The initramfs as gzip'd cpio (the kernel's CONFIG_RD_GZIP is on in Debian's riscv64 kernel). */
export function buildInitramfs(input: InitramfsInput): Buffer {
  const w = new CpioWriter(0);
  for (const e of initramfsEntries(input)) w.add(e);
  return gzip(w.finish());
}
