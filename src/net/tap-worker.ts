// The thread that owns a TAP device's receive side (see DESIGN.md).
//
// It runs in its own OS thread for two reasons: setns(CLONE_NEWNET) changes the namespace of the
// calling thread only, so entering the host's namespace here leaves the VMM's main thread where
// it was; and waiting for frames in poll() must block something, which must not be the thread
// that runs the vCPU and the event loop.
import { closeSync, constants as fsc, openSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import koffi from 'koffi';
import { CONTROL_BACKLOG, CONTROL_STOP, type TapSetup, type ToTapWorker, type TapWorkerMessage } from './tap-protocol.js';

// <linux/if_tun.h>, <linux/sockios.h>, <linux/if.h>, <sched.h>, <poll.h>, <sys/eventfd.h>
const TUNSETIFF = 0x400454ca;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;
const SIOCGIFINDEX = 0x8933;
const SIOCBRADDIF = 0x89a2;
const IFF_UP = 0x1;
const IFNAMSIZ = 16;
const IFREQ_SIZE = 40;
const CLONE_NEWNET = 0x40000000;
const AF_INET = 2;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const O_CLOEXEC = 0o2000000;
const EFD_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;
const POLLIN = 0x1;
const POLLERR = 0x8;
const POLLHUP = 0x10;
const POLLNVAL = 0x20;
const EAGAIN = 11;
const EINTR = 4;

/** A TAP read shorter than the frame truncates it, so every read offers room for the largest
 * frame a TAP can carry (64 KiB MTU plus the Ethernet header). */
const MAX_FRAME = 65536 + 14;
/** Frames are read into this scratch area back to back and copied out once per batch, so one
 * postMessage carries many small frames without allocating a big buffer for every wake-up. */
const SCRATCH_SIZE = 512 * 1024;
const MAX_BATCH_FRAMES = 256;

interface Libc {
  open(path: string, flags: number): number;
  setns(fd: number, nstype: number): number;
  ioctl(fd: number, request: number, arg: Uint8Array): number;
  socket(domain: number, type: number, protocol: number): number;
  eventfd(initval: number, flags: number): number;
  poll(fds: Uint8Array, nfds: number, timeout: number): number;
  read(fd: number, buf: Uint8Array, count: number): number;
  close(fd: number): number;
  errno(): number;
}

function loadLibc(): Libc {
  const lib = koffi.load('libc.so.6');
  const open = lib.func('int open(const char *path, int flags)') as (p: string, f: number) => number;
  const setns = lib.func('int setns(int fd, int nstype)') as (fd: number, t: number) => number;
  const ioctl = lib.func('int ioctl(int fd, unsigned long request, void *arg)') as (fd: number, r: number, a: Uint8Array) => number;
  const socket = lib.func('int socket(int domain, int type, int protocol)') as (d: number, t: number, p: number) => number;
  const eventfd = lib.func('int eventfd(unsigned int initval, int flags)') as (i: number, f: number) => number;
  const poll = lib.func('int poll(void *fds, unsigned long nfds, int timeout)') as (f: Uint8Array, n: number, t: number) => number;
  // read() returns ssize_t; koffi hands back a JS number for 'long' within safe-integer range.
  const read = lib.func('long read(int fd, void *buf, unsigned long count)') as (fd: number, b: Uint8Array, c: number) => number | bigint;
  const close = lib.func('int close(int fd)') as (fd: number) => number;
  return {
    open, setns, ioctl, socket, eventfd, poll, close,
    read: (fd, buf, count) => Number(read(fd, buf, count)),
    errno: () => koffi.errno(),
  };
}

class SetupError extends Error {
  constructor(readonly code: string, message: string, readonly errno?: number) {
    super(message);
  }
}

function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(koffi.os.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}

function nodeErrCode(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string' ? e.code : undefined;
}

const NEEDS_PRIVILEGE = 'creating a TAP device needs root (CAP_NET_ADMIN)';

function enterNamespace(libc: Libc, path: string): void {
  let nsfd: number;
  try {
    nsfd = openSync(path, fsc.O_RDONLY);
  } catch (e) {
    const code = nodeErrCode(e);
    if (code === 'ENOENT') throw new SetupError('TAP_NAMESPACE_MISSING', `network namespace ${path} does not exist`);
    if (code === 'EACCES' || code === 'EPERM') throw new SetupError('TAP_UNAVAILABLE', `cannot open ${path}: ${code}; ${NEEDS_PRIVILEGE}`);
    throw new SetupError('TAP_OPEN_FAILED', `cannot open ${path}: ${String(e)}`);
  }
  try {
    if (libc.setns(nsfd, CLONE_NEWNET) !== 0) {
      const errno = libc.errno();
      if (errno === koffi.os.errno.EPERM) {
        throw new SetupError('TAP_UNAVAILABLE', `setns(${path}) failed: EPERM; ${NEEDS_PRIVILEGE}`, errno);
      }
      throw new SetupError('TAP_NAMESPACE_MISSING', `${path} is not a usable network namespace: setns failed with ${errnoName(errno)}`, errno);
    }
  } finally {
    closeSync(nsfd);
  }
}

function openTap(libc: Libc, name: string): { fd: number; name: string } {
  // Opened through libc, not fs.openSync: Node closes a worker's fs-opened descriptors when the
  // worker exits, and the main thread must decide when the device goes away. O_CLOEXEC matters
  // too: a copy inherited by a child process (e.g. the `ip` we spawn) would keep the device
  // alive after close().
  const fd = libc.open('/dev/net/tun', fsc.O_RDWR | fsc.O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const errno = libc.errno();
    const e = koffi.os.errno;
    if (errno === e.ENOENT || errno === e.ENXIO || errno === e.ENODEV) {
      throw new SetupError('TAP_UNAVAILABLE', `/dev/net/tun is not available (${errnoName(errno)}); load the tun module or run where /dev/net/tun exists`, errno);
    }
    if (errno === e.EACCES || errno === e.EPERM) {
      throw new SetupError('TAP_UNAVAILABLE', `cannot open /dev/net/tun: ${errnoName(errno)}; ${NEEDS_PRIVILEGE}`, errno);
    }
    throw new SetupError('TAP_OPEN_FAILED', `cannot open /dev/net/tun: ${errnoName(errno)}`, errno);
  }
  const ifr = new Uint8Array(IFREQ_SIZE);
  new TextEncoder().encodeInto(name, ifr.subarray(0, IFNAMSIZ - 1));
  new DataView(ifr.buffer).setUint16(IFNAMSIZ, IFF_TAP | IFF_NO_PI, true);
  if (libc.ioctl(fd, TUNSETIFF, ifr) !== 0) {
    const errno = libc.errno();
    libc.close(fd);
    if (errno === koffi.os.errno.EPERM) throw new SetupError('TAP_UNAVAILABLE', `TUNSETIFF failed: EPERM; ${NEEDS_PRIVILEGE}`, errno);
    throw new SetupError('TAP_OPEN_FAILED', `TUNSETIFF ${name || '(kernel-chosen name)'} failed: ${errnoName(errno)}${errno === koffi.os.errno.EBUSY || errno === koffi.os.errno.EINVAL ? ' (is the name taken by another device?)' : ''}`, errno);
  }
  const end = ifr.indexOf(0);
  return { fd, name: new TextDecoder().decode(ifr.subarray(0, end < 0 ? IFNAMSIZ : end)) };
}

/** The VM's NIC is "plugged in" as soon as the backend exists, as with QEMU's TAP netdev. */
function bringUp(libc: Libc, name: string): void {
  const sock = libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) throw new SetupError('TAP_OPEN_FAILED', `socket() for SIOCSIFFLAGS failed: ${errnoName(libc.errno())}`);
  try {
    const ifr = new Uint8Array(IFREQ_SIZE);
    new TextEncoder().encodeInto(name, ifr.subarray(0, IFNAMSIZ - 1));
    const view = new DataView(ifr.buffer);
    if (libc.ioctl(sock, SIOCGIFFLAGS, ifr) !== 0) throw new SetupError('TAP_OPEN_FAILED', `SIOCGIFFLAGS ${name}: ${errnoName(libc.errno())}`);
    view.setUint16(IFNAMSIZ, view.getUint16(IFNAMSIZ, true) | IFF_UP, true);
    if (libc.ioctl(sock, SIOCSIFFLAGS, ifr) !== 0) throw new SetupError('TAP_OPEN_FAILED', `SIOCSIFFLAGS ${name} up: ${errnoName(libc.errno())}`);
  } finally {
    libc.close(sock);
  }
}

/** `ip link set <tap> master <bridge>` without starting a process: the bridge's own ioctl. */
function enslave(libc: Libc, name: string, bridge: string): void {
  const sock = libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) throw new SetupError('TAP_OPEN_FAILED', `socket() for SIOCBRADDIF failed: ${errnoName(libc.errno())}`);
  try {
    const ifr = new Uint8Array(IFREQ_SIZE);
    new TextEncoder().encodeInto(name, ifr.subarray(0, IFNAMSIZ - 1));
    if (libc.ioctl(sock, SIOCGIFINDEX, ifr) !== 0) throw new SetupError('TAP_OPEN_FAILED', `SIOCGIFINDEX ${name}: ${errnoName(libc.errno())}`);
    const index = new DataView(ifr.buffer).getInt32(IFNAMSIZ, true);
    const req = new Uint8Array(IFREQ_SIZE);
    new TextEncoder().encodeInto(bridge, req.subarray(0, IFNAMSIZ - 1));
    new DataView(req.buffer).setInt32(IFNAMSIZ, index, true);
    if (libc.ioctl(sock, SIOCBRADDIF, req) !== 0) {
      const errno = libc.errno();
      const hint = errno === koffi.os.errno.ENODEV ? ' (no such device)' : errno === koffi.os.errno.EOPNOTSUPP || errno === koffi.os.errno.EINVAL ? ' (not a bridge?)' : '';
      throw new SetupError('TAP_CONFIG_FAILED', `adding ${name} to bridge ${bridge} failed: ${errnoName(errno)}${hint}`, errno);
    }
  } finally {
    libc.close(sock);
  }
}

function post(msg: TapWorkerMessage, transfer: ArrayBuffer[] = []): void {
  parentPort?.postMessage(msg, transfer);
}

function receiveLoop(libc: Libc, fd: number, wakeFd: number, control: Int32Array, backlogLimit: number): void {
  const pfds = new Uint8Array(16);
  const pv = new DataView(pfds.buffer);
  pv.setInt32(0, fd, true);
  pv.setInt16(4, POLLIN, true);
  pv.setInt32(8, wakeFd, true);
  pv.setInt16(12, POLLIN, true);
  const scratch = new Uint8Array(SCRATCH_SIZE);
  const lengths: number[] = [];

  while (Atomics.load(control, CONTROL_STOP) === 0) {
    // A main thread that falls behind (a busy vCPU) makes us stop reading; the TAP's queue then
    // fills and the kernel drops, which is what a real NIC's full ring does. Memory stays bounded.
    const backlog = Atomics.load(control, CONTROL_BACKLOG);
    if (backlog > backlogLimit) {
      Atomics.wait(control, CONTROL_BACKLOG, backlog, 100);
      continue;
    }
    pv.setInt16(6, 0, true);
    pv.setInt16(14, 0, true);
    const n = libc.poll(pfds, 2, -1);
    if (n < 0) {
      const errno = libc.errno();
      if (errno === EINTR) continue;
      post({ type: 'lost', message: `poll on the TAP failed: ${errnoName(errno)}` });
      return;
    }
    if (pv.getInt16(14, true) !== 0) return; // close() asked us to stop
    const revents = pv.getInt16(6, true);
    if ((revents & POLLIN) === 0 && (revents & (POLLERR | POLLHUP | POLLNVAL)) !== 0) {
      post({ type: 'lost', message: 'the TAP device went away (deleted from outside?)' });
      return;
    }
    let used = 0;
    lengths.length = 0;
    for (;;) {
      if (SCRATCH_SIZE - used < MAX_FRAME || lengths.length >= MAX_BATCH_FRAMES) break;
      const r = libc.read(fd, scratch.subarray(used), MAX_FRAME);
      if (r < 0) {
        const errno = libc.errno();
        if (errno === EAGAIN || errno === EINTR) break;
        if (lengths.length > 0) flush(scratch, used, lengths, control);
        post({ type: 'lost', message: `read from the TAP failed: ${errnoName(errno)}` });
        return;
      }
      if (r === 0) continue;
      lengths.push(r);
      used += r;
    }
    if (lengths.length > 0) flush(scratch, used, lengths, control);
  }
}

function flush(scratch: Uint8Array, used: number, lengths: number[], control: Int32Array): void {
  const data = scratch.slice(0, used).buffer;
  const lens = Uint32Array.from(lengths);
  Atomics.add(control, CONTROL_BACKLOG, used);
  post({ type: 'frames', data, lengths: lens, bytes: used }, [data, lens.buffer]);
}

// Loaded before the setup arrives: a thread started ahead of need (startTapThread) has it ready.
let libc: Libc | undefined;
let libcError: string | undefined;
try {
  libc = loadLibc();
} catch (e) {
  libcError = `cannot load libc through koffi: ${String(e)}`;
}

function main(setup: TapSetup): void {
  const control = new Int32Array(setup.control);
  if (!libc) {
    post({ type: 'error', code: 'TAP_UNAVAILABLE', message: libcError ?? 'libc is not loaded' });
    return;
  }
  let fd = -1;
  let wakeFd = -1;
  try {
    if (setup.namespacePath !== null) enterNamespace(libc, setup.namespacePath);
    const tap = openTap(libc, setup.name);
    fd = tap.fd;
    if (setup.bridge !== null) enslave(libc, tap.name, setup.bridge);
    bringUp(libc, tap.name);
    wakeFd = libc.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wakeFd < 0) throw new SetupError('TAP_OPEN_FAILED', `eventfd failed: ${errnoName(libc.errno())}`);
    post({ type: 'ready', fd, wakeFd, name: tap.name });
  } catch (e) {
    if (fd >= 0) libc.close(fd);
    if (e instanceof SetupError) post({ type: 'error', code: e.code, message: e.message, ...(e.errno !== undefined ? { errno: e.errno } : {}) });
    else post({ type: 'error', code: 'TAP_OPEN_FAILED', message: String(e) });
    return;
  }
  // Both fds stay open when this thread ends: the main thread writes frames to `fd` and closes
  // both once this thread has exited, so a late read can never hit a reused descriptor number.
  receiveLoop(libc, fd, wakeFd, control, setup.backlogLimit);
}

parentPort?.once('message', (msg: ToTapWorker) => main(msg.setup));
