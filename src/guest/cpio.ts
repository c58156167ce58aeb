// A writer (and a small reader) for the cpio "newc" format, the only archive format the Linux
// initramfs unpacker accepts. Written in TypeScript so building an image needs no root and no
// host cpio: device nodes such as /dev/console can be described without mknod.
import { gzipSync, gunzipSync } from 'node:zlib';
import { GuestImageError } from './errors.js';

export type CpioEntry =
  | { type: 'file'; path: string; data: Uint8Array; mode?: number; mtime?: number }
  | { type: 'dir'; path: string; mode?: number; mtime?: number }
  | { type: 'symlink'; path: string; target: string; mtime?: number }
  | { type: 'char' | 'block'; path: string; major: number; minor: number; mode?: number; mtime?: number };

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;

const MAGIC = '070701';
const HEADER_SIZE = 110;
const TRAILER = 'TRAILER!!!';

/** Archive paths are relative ("bin/sh"): that is what both the kernel and GNU cpio produce and expect. */
export function normalizeCpioPath(path: string): string {
  let p = path.replace(/^(\.\/|\/)+/, '').replace(/\/+$/, '');
  p = p.replace(/\/{2,}/g, '/');
  if (p === '' || p === '.') throw new GuestImageError('CPIO_BAD_PATH', `cpio: empty path ${JSON.stringify(path)}`);
  if (p.split('/').some((c) => c === '..' || c === '.')) {
    throw new GuestImageError('CPIO_BAD_PATH', `cpio: path must not contain "." or ".." components: ${path}`);
  }
  if (p.includes('\0')) throw new GuestImageError('CPIO_BAD_PATH', `cpio: path contains NUL: ${JSON.stringify(path)}`);
  return p;
}

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new GuestImageError('CPIO_FIELD_RANGE', `cpio: header field out of range: ${n}`);
  }
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

interface Header {
  ino: number; mode: number; nlink: number; mtime: number; size: number;
  rdevmajor: number; rdevminor: number; name: string;
}

export class CpioWriter {
  private readonly chunks: Buffer[] = [];
  private readonly seen = new Set<string>();
  private nextIno = 1;
  private finished = false;

  /** mtime used for entries that do not give one; fixed by default so builds are reproducible. */
  constructor(private readonly defaultMtime = 0) {}

  add(entry: CpioEntry): this {
    if (this.finished) throw new GuestImageError('CPIO_FINISHED', 'cpio: archive already finished');
    const name = normalizeCpioPath(entry.path);
    if (this.seen.has(name)) throw new GuestImageError('CPIO_DUPLICATE', `cpio: duplicate entry ${name}`);
    this.seen.add(name);
    const mtime = entry.mtime ?? this.defaultMtime;
    const ino = this.nextIno++;
    switch (entry.type) {
      case 'file':
        this.emit({ ino, mode: S_IFREG | perm(entry.mode, 0o644), nlink: 1, mtime, size: entry.data.length,
          rdevmajor: 0, rdevminor: 0, name }, entry.data);
        break;
      case 'dir':
        this.emit({ ino, mode: S_IFDIR | perm(entry.mode, 0o755), nlink: 2, mtime, size: 0,
          rdevmajor: 0, rdevminor: 0, name }, new Uint8Array(0));
        break;
      case 'symlink': {
        if (entry.target === '') throw new GuestImageError('CPIO_BAD_PATH', `cpio: empty symlink target for ${name}`);
        // newc stores the link target as the file body, without a terminating NUL.
        const data = Buffer.from(entry.target, 'utf8');
        this.emit({ ino, mode: S_IFLNK | 0o777, nlink: 1, mtime, size: data.length,
          rdevmajor: 0, rdevminor: 0, name }, data);
        break;
      }
      case 'char':
      case 'block':
        this.emit({ ino, mode: (entry.type === 'char' ? S_IFCHR : S_IFBLK) | perm(entry.mode, 0o600), nlink: 1,
          mtime, size: 0, rdevmajor: entry.major, rdevminor: entry.minor, name }, new Uint8Array(0));
        break;
    }
    return this;
  }

  /** Appends the trailer and returns the whole archive. */
  finish(): Buffer {
    if (!this.finished) {
      this.emit({ ino: 0, mode: 0, nlink: 1, mtime: 0, size: 0, rdevmajor: 0, rdevminor: 0, name: TRAILER },
        new Uint8Array(0));
      this.finished = true;
    }
    return Buffer.concat(this.chunks);
  }

  private emit(h: Header, data: Uint8Array): void {
    const nameBytes = Buffer.from(h.name + '\0', 'utf8');
    const fields = [h.ino, h.mode, 0, 0, h.nlink, h.mtime, h.size, 0, 0, h.rdevmajor, h.rdevminor, nameBytes.length, 0];
    const header = Buffer.from(MAGIC + fields.map(hex8).join(''), 'ascii');
    this.chunks.push(header, nameBytes, Buffer.alloc(pad4(HEADER_SIZE + nameBytes.length)));
    if (data.length > 0) {
      this.chunks.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength), Buffer.alloc(pad4(data.length)));
    }
  }
}

function perm(mode: number | undefined, dflt: number): number {
  const m = mode ?? dflt;
  if ((m & ~0o7777) !== 0) throw new GuestImageError('CPIO_BAD_MODE', `cpio: mode must be permission bits only: 0o${m.toString(8)}`);
  return m;
}

export function buildCpio(entries: Iterable<CpioEntry>, defaultMtime = 0): Buffer {
  const w = new CpioWriter(defaultMtime);
  for (const e of entries) w.add(e);
  return w.finish();
}

export function gzip(data: Uint8Array): Buffer {
  return gzipSync(data, { level: 9 });
}

export function gunzip(data: Uint8Array): Buffer {
  return gunzipSync(data);
}

export interface CpioMember {
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'other';
  mode: number;
  size: number;
  /** File body, or the link target for symlinks. */
  data: Buffer;
  rdevmajor: number;
  rdevminor: number;
}

/**
 * Reads a newc archive (stops at the trailer). Used by `ferry image info` and the tests to look
 * inside an initramfs without depending on host tools.
 */
export function parseCpio(archive: Uint8Array): CpioMember[] {
  const buf = Buffer.from(archive.buffer, archive.byteOffset, archive.byteLength);
  const out: CpioMember[] = [];
  let off = 0;
  for (;;) {
    if (off + HEADER_SIZE > buf.length) throw new GuestImageError('CPIO_TRUNCATED', `cpio: truncated header at ${off}`);
    const magic = buf.toString('ascii', off, off + 6);
    if (magic !== MAGIC && magic !== '070702') throw new GuestImageError('CPIO_BAD_MAGIC', `cpio: bad magic ${JSON.stringify(magic)} at ${off}`);
    const field = (i: number): number => {
      const s = buf.toString('ascii', off + 6 + i * 8, off + 14 + i * 8);
      if (!/^[0-9a-fA-F]{8}$/.test(s)) throw new GuestImageError('CPIO_BAD_HEADER', `cpio: bad header field at ${off}`);
      return parseInt(s, 16);
    };
    const mode = field(1);
    const size = field(6);
    const rdevmajor = field(9);
    const rdevminor = field(10);
    const namesize = field(11);
    const nameStart = off + HEADER_SIZE;
    const name = buf.toString('utf8', nameStart, nameStart + namesize - 1);
    const dataStart = nameStart + namesize + pad4(HEADER_SIZE + namesize);
    if (dataStart + size > buf.length) throw new GuestImageError('CPIO_TRUNCATED', `cpio: truncated body of ${name}`);
    if (name === TRAILER) return out;
    const fmt = mode & S_IFMT;
    const type = fmt === S_IFREG ? 'file' : fmt === S_IFDIR ? 'dir' : fmt === S_IFLNK ? 'symlink'
      : fmt === S_IFCHR ? 'char' : fmt === S_IFBLK ? 'block' : 'other';
    out.push({ name, type, mode: mode & 0o7777, size, data: buf.subarray(dataStart, dataStart + size), rdevmajor, rdevminor });
    off = dataStart + size + pad4(size);
  }
}
