// Snapshot files: a whole machine (state and RAM) written to one file and read back.
//
// Writing is synchronous from machine.save() to the last RAM byte: device completions arrive
// from the event loop (a virtio-blk read landing in guest RAM, a frame from the TAP), and one
// landing between the state and the RAM would make the file describe a machine that never
// existed (a request recorded in flight whose completion is already in RAM would complete
// twice). The file appears under its final name only once complete and on disk (temp file,
// fsync, rename), so a crash leaves the old snapshot or none, never half of one.
//
// Restoring reads the file twice: first to verify all of it (magic, version, every CRC, the
// layout, that the state fits the machine) without touching the machine, then to apply it.
// The applying pass reads synchronously, so again no I/O callback runs between loading RAM and
// restoring the state. RAM goes first: a virtio-blk request in flight at save time is replayed
// during the state restore, and the replay reads the request's descriptors from guest RAM.

import { closeSync, fstatSync, fsyncSync, openSync, readFileSync, readSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Machine, MachineState } from '../../machine/boot/machine.js';
import { MachineStateError } from '../../machine/boot/machine.js';
import { FerryError } from '../../errors.js';
import { repoRoot } from '../../guest/paths.js';
import { crc32 } from './crc32.js';
import {
  PAGE_SIZE, RAM_CHUNK, SNAPSHOT_FORMAT_VERSION, SnapshotError, TAG_END, TAG_META, TAG_RAM, TAG_STATE,
  encodeEndPayload, encodeHeader, encodeRamHeader, encodeRunHeader, encodeSectionHeader, parseSnapshot, planRamRuns,
  ramPayloadLength, u32le, type ByteReader, type ParsedSnapshot, type SnapshotMeta,
} from './format.js';

export { SnapshotError, SNAPSHOT_FORMAT_VERSION, type SnapshotMeta } from './format.js';

/** What the caller adds to a snapshot's meta. */
export interface SnapshotMetaInput {
  label?: string;
  extra?: Record<string, unknown>;
  /** Defaults to the version in ferry's package.json. */
  ferryVersion?: string;
}

export interface SnapshotInfo {
  path: string;
  bytes: number;
  ramRuns: number;
  ramPages: number;
  meta: SnapshotMeta;
}

/** A verified snapshot: meta, state and a summary of its RAM (which stays in the file). */
export type Snapshot = ParsedSnapshot & { path: string };

const BUFFER = RAM_CHUNK;

let cachedVersion: string | undefined;
function ferryVersion(): string {
  if (cachedVersion === undefined) {
    try {
      const pkg = JSON.parse(readFileSync(join(repoRoot(), 'package.json'), 'utf8')) as { version?: unknown };
      cachedVersion = typeof pkg.version === 'string' ? pkg.version : 'unknown';
    } catch {
      cachedVersion = 'unknown';
    }
  }
  return cachedVersion;
}

/** File system failures become SNAPSHOT_IO; ferry's own errors pass through. */
function ioError(what: string, path: string, e: unknown): Error {
  if (e instanceof FerryError || !(e instanceof Error)) return e instanceof Error ? e : new Error(String(e));
  const code = (e as NodeJS.ErrnoException).code;
  return new SnapshotError('SNAPSHOT_IO', `cannot ${what} snapshot ${path}${code ? ` (${code})` : ''}: ${(e as Error).message}`, { cause: e });
}

/** Buffered, synchronous, with the CRCs the format needs kept as bytes go out. */
class SyncWriter {
  private readonly buf = Buffer.allocUnsafe(BUFFER);
  private used = 0;
  position = 0;
  fileCrc = 0;
  sectionCrc = 0;

  constructor(private readonly fd: number) {}

  /** Copies `bytes` out before checksumming them, so the CRC is of exactly what is written
   * even when `bytes` is guest RAM. */
  write(bytes: Uint8Array): void {
    for (let at = 0; at < bytes.length;) {
      if (this.used === BUFFER) this.flush();
      const n = Math.min(BUFFER - this.used, bytes.length - at);
      this.buf.set(bytes.subarray(at, at + n), this.used);
      const copy = this.buf.subarray(this.used, this.used + n);
      this.fileCrc = crc32(copy, this.fileCrc);
      this.sectionCrc = crc32(copy, this.sectionCrc);
      this.used += n;
      this.position += n;
      at += n;
    }
  }

  section(kind: number, name: string, length: number, payload: () => void): void {
    this.write(encodeSectionHeader(kind, name, length));
    this.sectionCrc = 0;
    const start = this.position;
    payload();
    if (this.position - start !== length) throw new Error(`snapshot writer: section ${name} wrote ${this.position - start} bytes, declared ${length}`);
    this.write(u32le(this.sectionCrc));
  }

  flush(): void {
    for (let at = 0; at < this.used;) at += writeSync(this.fd, this.buf, at, this.used - at);
    this.used = 0;
  }
}

function jsonBytes(v: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(v));
}

/**
 * Writes `machine` (which must not be running: pause it and let run() return) to `path`,
 * replacing any file there only once the new one is complete and synced.
 */
export async function writeSnapshot(path: string, machine: Machine, input: SnapshotMetaInput = {}): Promise<SnapshotInfo> {
  // Everything from here to the last RAM byte is synchronous (see the top of the file).
  const state: MachineState = machine.save();
  const ram = machine.memory.bytes;
  const runs = planRamRuns(ram);
  const meta: SnapshotMeta = {
    formatVersion: SNAPSHOT_FORMAT_VERSION,
    ferryVersion: input.ferryVersion ?? ferryVersion(),
    createdAt: new Date().toISOString(),
    ramBytes: machine.memory.ramSize,
    machine: {
      ramBytes: state.config.ramBytes,
      sbiInMachine: state.config.sbiInMachine,
      virtio: state.virtio.map((v) => ({ slot: v.slot, kind: v.kind, deviceId: v.deviceId })),
    },
    ...(input.label !== undefined ? { label: input.label } : {}),
    ...(input.extra !== undefined ? { extra: input.extra } : {}),
  };
  const metaBytes = jsonBytes(meta);
  const stateBytes = jsonBytes(state);

  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'wx', 0o600);
    const w = new SyncWriter(fd);
    w.write(encodeHeader());
    w.section(TAG_META, 'meta', metaBytes.length, () => w.write(metaBytes));
    w.section(TAG_STATE, 'state', stateBytes.length, () => w.write(stateBytes));
    w.section(TAG_RAM, 'ram', ramPayloadLength(runs), () => {
      w.write(encodeRamHeader(ram.length));
      for (const r of runs) {
        w.write(encodeRunHeader(r.first, r.count));
        const end = (r.first + r.count) * PAGE_SIZE;
        for (let at = r.first * PAGE_SIZE; at < end; at += RAM_CHUNK) w.write(ram.subarray(at, Math.min(end, at + RAM_CHUNK)));
      }
    });
    const endAt = w.position;
    const fileCrc = w.fileCrc;
    w.section(TAG_END, 'end', 12, () => w.write(encodeEndPayload(endAt, fileCrc)));
    w.flush();
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
    syncDirectory(dirname(path));
    return { path, bytes: w.position, ramRuns: runs.length, ramPages: runs.reduce((n, r) => n + r.count, 0), meta };
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    try { unlinkSync(tmp); } catch { /* never created, or already renamed */ }
    throw ioError('write', path, e);
  }
}

/** Makes the rename durable; some filesystems refuse fsync on a directory, which is fine. */
function syncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // best effort
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Read-ahead over a descriptor, synchronously: its promises are settled when returned, so a
 * parse driven by it never yields to the event loop (only to already-queued microtasks). Both
 * passes use it; they run in the VM's worker, where blocking reads stall no one else. */
class SyncFileReader implements ByteReader {
  private readonly buf = Buffer.allocUnsafe(BUFFER);
  private bufStart = 0;
  private bufLength = 0;

  constructor(private readonly fd: number, readonly size: number) {}

  readAt(position: number, length: number): Promise<Uint8Array> {
    try {
      return Promise.resolve(this.readSync(position, length));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private readSync(position: number, length: number): Uint8Array {
    if (position >= this.bufStart && position + length <= this.bufStart + this.bufLength) {
      return this.buf.subarray(position - this.bufStart, position - this.bufStart + length);
    }
    const big = length > BUFFER;
    const target = big ? Buffer.allocUnsafe(length) : this.buf;
    const want = big ? length : Math.min(BUFFER, this.size - position);
    let got = 0;
    while (got < want) {
      const n = readSync(this.fd, target, got, want - got, position + got);
      if (n === 0) break;
      got += n;
    }
    if (got < length) throw new SnapshotError('SNAPSHOT_TRUNCATED', `the file ended at byte ${position + got} while being read (it shrank?)`);
    if (big) return target;
    this.bufStart = position;
    this.bufLength = got;
    return this.buf.subarray(0, length);
  }
}

function assertIdle(machine: Machine): void {
  if (machine.isRunning) throw new MachineStateError('MACHINE_RUNNING', 'cannot restore into a running machine: pause() it and wait for run() to return first');
}

/** Reads and verifies a whole snapshot file (every CRC); RAM is checked, not loaded. */
export async function readSnapshot(path: string): Promise<Snapshot> {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const parsed = await parseSnapshot(new SyncFileReader(fd, fstatSync(fd).size));
    return { ...parsed, path };
  } catch (e) {
    throw ioError('read', path, e);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Restores the snapshot at `path` into `machine`, which must not be running and must be built
 * like the saved one (RAM size, boot mode, the same virtio device kinds in the same slots).
 * Every refusal (SnapshotError, MachineStateError, DeviceStateError) happens before the
 * machine is touched. The machine's guest time is left frozen at the saved value; run()
 * continues it.
 */
export async function restoreSnapshot(path: string, machine: Machine): Promise<Snapshot> {
  assertIdle(machine);
  const verified = await readSnapshot(path);
  // Again: run() may have been started while the file was being verified.
  assertIdle(machine);
  if (verified.meta.ramBytes !== machine.memory.ramSize) {
    throw new MachineStateError('MACHINE_STATE_MISMATCH', `snapshot ${path} is of a machine with ${verified.meta.ramBytes} bytes of RAM, this one has ${machine.memory.ramSize}`);
  }
  machine.checkState(verified.state);

  // From here on the machine changes. The file was verified a moment ago; if it changes under
  // us now the CRCs catch it, but RAM may be partly loaded by then: the error says so.
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const size = fstatSync(fd).size;
    const mem = machine.memory;
    const pageCount = mem.pageCount;
    let next = 0;
    const zeroUpTo = (page: number) => {
      if (page > next) mem.fill(mem.ramBase + BigInt(next * PAGE_SIZE), (page - next) * PAGE_SIZE);
    };
    const applied = await parseSnapshot(new SyncFileReader(fd, size), {
      ramData: (page, bytes) => {
        zeroUpTo(page);
        mem.write(mem.ramBase + BigInt(page * PAGE_SIZE), bytes);
        next = page + bytes.length / PAGE_SIZE;
      },
      ramEnd: () => zeroUpTo(pageCount),
    });
    // The state read alongside the RAM just loaded (identical to the verified one unless the
    // file changed, in which case a CRC has already failed).
    machine.restore(applied.state as MachineState);
    return { ...applied, path };
  } catch (e) {
    const err = ioError('restore', path, e);
    err.message += ' (after verification passed: the file changed meanwhile or a device refused its state; this machine\'s RAM is already overwritten, discard it)';
    throw err;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
