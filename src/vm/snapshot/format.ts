// The snapshot file format (layout byte by byte in DESIGN.md). Its version is its own, not
// the package's: a ferry release reads the format versions it knows and refuses the others
// with SNAPSHOT_VERSION, whatever release wrote them.
//
// This module knows the bytes; file.ts knows files and machines. Parsing is written against a
// small reader interface so the same code verifies a file (asynchronously, nothing touched)
// and then applies it (from a synchronous reader, so no I/O callback can run in between).

import { FerryError } from '../../errors.js';
import { crc32 } from './crc32.js';
import { ZeroPages } from '../../machine/memory/zero-pages.js';

export const SNAPSHOT_MAGIC = new TextEncoder().encode('FERRYSNP');
export const SNAPSHOT_FORMAT_VERSION = 1;
/** Magic (8), format version (u32), flags (u32, zero in version 1). */
export const HEADER_SIZE = 16;
export const PAGE_SIZE = 4096;

/** Section kinds: four ASCII bytes, read as a little-endian u32 (so they show in a hex dump). */
export const TAG_META = tag('META');
export const TAG_STATE = tag('STAT');
export const TAG_RAM = tag('RAM ');
export const TAG_END = tag('END ');

/** Longest section name a reader accepts: names are short labels, a huge one is corruption. */
export const MAX_NAME = 64;
/** meta and state are read whole; anything this large is not one of ours. */
export const MAX_JSON_SECTION = 64 << 20;
/** The end section: tag, name length, "end", payload length, payload (offset u64 + CRC u32), CRC. */
export const END_SECTION_SIZE = 4 + 4 + 3 + 8 + 12 + 4;
/** RAM payload header: page size u32, reserved u32, RAM bytes u64. */
export const RAM_HEADER_SIZE = 16;
export const RAM_RUN_HEADER_SIZE = 8;
/** Page data moves in pieces of at most this much, however long a run is. */
export const RAM_CHUNK = 1 << 20;

export type SnapshotErrorCode =
  | 'SNAPSHOT_MAGIC' | 'SNAPSHOT_VERSION' | 'SNAPSHOT_CORRUPT' | 'SNAPSHOT_TRUNCATED' | 'SNAPSHOT_IO';

export class SnapshotError extends FerryError {
  constructor(code: SnapshotErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

function tag(s: string): number {
  const b = new TextEncoder().encode(s);
  return (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
}

export function tagName(t: number): string {
  const chars = [t & 0xff, (t >>> 8) & 0xff, (t >>> 16) & 0xff, t >>> 24];
  return chars.every((c) => c >= 0x20 && c < 0x7f) ? String.fromCharCode(...chars) : `0x${t.toString(16)}`;
}

/** What `meta` holds: enough to tell what a file is without restoring it. */
export interface SnapshotMeta {
  formatVersion: number;
  ferryVersion: string;
  /** ISO 8601. */
  createdAt: string;
  ramBytes: number;
  machine: {
    ramBytes: number;
    sbiInMachine: boolean;
    virtio: { slot: number; kind: string; deviceId: number }[];
  };
  /** Free-form, from the caller (a VM name, the device configuration, ...). */
  label?: string;
  extra?: Record<string, unknown>;
}

// ---- encoding ----

export function encodeHeader(version = SNAPSHOT_FORMAT_VERSION): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE);
  b.set(SNAPSHOT_MAGIC, 0);
  const v = new DataView(b.buffer);
  v.setUint32(8, version, true);
  v.setUint32(12, 0, true);
  return b;
}

/** Everything of a section before its payload. */
export function encodeSectionHeader(kind: number, name: string, payloadLength: number): Uint8Array {
  const nameBytes = new TextEncoder().encode(name);
  if (nameBytes.length === 0 || nameBytes.length > MAX_NAME) throw new RangeError(`section name '${name}' must be 1..${MAX_NAME} bytes`);
  const b = new Uint8Array(16 + nameBytes.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, kind, true);
  v.setUint32(4, nameBytes.length, true);
  b.set(nameBytes, 8);
  v.setBigUint64(8 + nameBytes.length, BigInt(payloadLength), true);
  return b;
}

export function u32le(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0, true);
  return b;
}

export function encodeRamHeader(ramBytes: number): Uint8Array {
  const b = new Uint8Array(RAM_HEADER_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, PAGE_SIZE, true);
  v.setUint32(4, 0, true);
  v.setBigUint64(8, BigInt(ramBytes), true);
  return b;
}

export function encodeRunHeader(firstPage: number, pageCount: number): Uint8Array {
  const b = new Uint8Array(RAM_RUN_HEADER_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, firstPage, true);
  v.setUint32(4, pageCount, true);
  return b;
}

/** The end section's payload: where it starts, and the CRC of every byte before that. */
export function encodeEndPayload(offset: number, fileCrc: number): Uint8Array {
  const b = new Uint8Array(12);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(offset), true);
  v.setUint32(8, fileCrc, true);
  return b;
}

/** A run of consecutive non-zero pages. */
export interface RamRun { readonly first: number; readonly count: number }

/**
 * The non-zero pages of `ram` as runs. A freshly booted guest leaves most of its RAM
 * untouched, so this is what keeps a snapshot small. Word-wise test: one non-zero word ends
 * a page's check, and zero pages are the ones read in full.
 */
export function planRamRuns(ram: Uint8Array): RamRun[] {
  const pages = Math.floor(ram.length / PAGE_SIZE);
  const zeroPages = new ZeroPages(ram);
  const zero = (p: number): boolean => zeroPages.isZero(p);
  const runs: RamRun[] = [];
  for (let p = 0; p < pages;) {
    if (zero(p)) { p++; continue; }
    const first = p;
    while (p < pages && !zero(p)) p++;
    runs.push({ first, count: p - first });
  }
  return runs;
}

export function ramPayloadLength(runs: readonly RamRun[]): number {
  return runs.reduce((n, r) => n + RAM_RUN_HEADER_SIZE + r.count * PAGE_SIZE, RAM_HEADER_SIZE);
}

// ---- decoding ----

/** A snapshot file opened for reading. Returned bytes may alias an internal buffer: they are
 * valid until the next call. */
export interface ByteReader {
  readonly size: number;
  /** Reads exactly `length` bytes at `position` (callers stay inside the file). */
  readAt(position: number, length: number): Promise<Uint8Array>;
}

/** What the parser hands out as it goes. RAM data arrives in pieces of at most RAM_CHUNK. */
export interface SnapshotSink {
  ramBegin?(ramBytes: number): void;
  /** `bytes` are the pages starting at guest page `page`; may alias a reader buffer. */
  ramData?(page: number, bytes: Uint8Array): void;
  /** Every run has been delivered. */
  ramEnd?(): void;
}

export interface ParsedSnapshot {
  meta: SnapshotMeta;
  /** The machine state as parsed JSON: the machine validates it (Machine.checkState). */
  state: unknown;
  ram: { ramBytes: number; runs: number; pages: number };
  fileBytes: number;
}

const corrupt = (m: string) => new SnapshotError('SNAPSHOT_CORRUPT', m);
const truncated = (m: string) => new SnapshotError('SNAPSHOT_TRUNCATED', m);

/** Sequential reading with a running CRC of everything read (the end section checks it). */
class Cursor {
  position: number;
  fileCrc = 0;
  constructor(private readonly reader: ByteReader, start: number, private readonly limit: number) {
    this.position = start;
  }

  async take(length: number, what: string): Promise<Uint8Array> {
    if (length > this.limit - this.position) throw corrupt(`${what} runs past the end section (at byte ${this.position}, ${length} bytes)`);
    const b = await this.reader.readAt(this.position, length);
    this.position += length;
    this.fileCrc = crc32(b, this.fileCrc);
    return b;
  }
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function safeLength(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(`${what} length ${v} is impossible`);
  return Number(v);
}

/** Checks magic and version: the first things a reader must refuse, before any layout. */
export async function readHeader(reader: ByteReader): Promise<number> {
  const have = Math.min(reader.size, HEADER_SIZE);
  const head = await reader.readAt(0, have);
  const magicPart = head.subarray(0, Math.min(have, SNAPSHOT_MAGIC.length));
  if (!magicPart.every((b, i) => b === SNAPSHOT_MAGIC[i])) throw new SnapshotError('SNAPSHOT_MAGIC', 'not a ferry snapshot (bad magic)');
  if (have < HEADER_SIZE) throw truncated(`the file is ${reader.size} bytes, shorter than the snapshot header`);
  const version = view(head).getUint32(8, true);
  if (version !== SNAPSHOT_FORMAT_VERSION) {
    throw new SnapshotError('SNAPSHOT_VERSION', `snapshot format version ${version} is not supported (this ferry reads version ${SNAPSHOT_FORMAT_VERSION})`);
  }
  const flags = view(head).getUint32(12, true);
  if (flags !== 0) throw corrupt(`header flags 0x${flags.toString(16)} are not defined in format version ${version}`);
  return version;
}

interface EndTrailer { offset: number; fileCrc: number }

/** The end section at the very end of the file, if it is intact there. */
async function readTrailer(reader: ByteReader): Promise<EndTrailer | undefined> {
  const at = reader.size - END_SECTION_SIZE;
  if (at < HEADER_SIZE) return undefined;
  const b = await reader.readAt(at, END_SECTION_SIZE);
  const v = view(b);
  if (v.getUint32(0, true) !== TAG_END || v.getUint32(4, true) !== 3 || v.getBigUint64(11, true) !== 12n) return undefined;
  if (new TextDecoder().decode(b.subarray(8, 11)) !== 'end') return undefined;
  const payload = b.subarray(19, 31);
  if (crc32(payload) !== v.getUint32(31, true)) return undefined;
  const pv = view(payload);
  const offset = safeLength(pv.getBigUint64(0, true), 'end offset');
  if (offset !== at) return undefined;
  return { offset, fileCrc: pv.getUint32(8, true) };
}

/**
 * Without an intact end section at EOF, tells truncation from damage by following the section
 * lengths from the start: a chain that runs off the end of the file, or stops at EOF without
 * an end section, was cut short; one that arrives exactly where the end section belongs, and
 * finds it there but damaged (its tag or its name still says so: one damaged byte cannot hit
 * both), is a complete file that is corrupt.
 */
async function diagnoseMissingEnd(reader: ByteReader): Promise<never> {
  let pos = HEADER_SIZE;
  for (;;) {
    if (pos === reader.size) throw truncated(`the file ends after ${pos} bytes without its end section`);
    if (pos === reader.size - END_SECTION_SIZE) {
      const b = await reader.readAt(pos, 11);
      const name = new TextDecoder().decode(b.subarray(8, 11));
      if (view(b).getUint32(0, true) === TAG_END || name === 'end') throw corrupt('the end section is damaged');
    }
    if (pos + 8 > reader.size) throw truncated(`the file ends inside a section header at byte ${pos}`);
    const h = view(await reader.readAt(pos, 8));
    const kind = h.getUint32(0, true);
    const nameLength = h.getUint32(4, true);
    if (nameLength === 0 || nameLength > MAX_NAME) throw corrupt(`section at byte ${pos} has a name length of ${nameLength}`);
    if (pos + 16 + nameLength > reader.size) throw truncated(`the file ends inside a section header at byte ${pos}`);
    const len = view(await reader.readAt(pos + 8 + nameLength, 8)).getBigUint64(0, true);
    const end = BigInt(pos) + 16n + BigInt(nameLength) + len + 4n;
    if (end > BigInt(reader.size)) throw truncated(`section '${tagName(kind)}' at byte ${pos} runs past the end of the file (${reader.size} bytes)`);
    if (end === BigInt(reader.size)) throw truncated(`the file ends after section '${tagName(kind)}' without its end section`);
    pos = Number(end);
  }
}

/**
 * Verifies and parses a whole snapshot: header, every section's CRC, the whole-file CRC, the
 * meta, the RAM layout. RAM pages go to `sink` as they are read (a verifying pass passes none).
 */
export async function parseSnapshot(reader: ByteReader, sink: SnapshotSink = {}): Promise<ParsedSnapshot> {
  await readHeader(reader);
  const trailer = await readTrailer(reader);
  if (!trailer) await diagnoseMissingEnd(reader);
  const { offset: endAt, fileCrc } = trailer!;

  const cur = new Cursor(reader, 0, endAt);
  await cur.take(HEADER_SIZE, 'header');
  let meta: SnapshotMeta | undefined;
  let state: unknown;
  let stateSeen = false;
  let ram: ParsedSnapshot['ram'] | undefined;
  while (cur.position < endAt) {
    const at = cur.position;
    const h = view(await cur.take(8, 'section header'));
    const kind = h.getUint32(0, true);
    const nameLength = h.getUint32(4, true);
    if (nameLength === 0 || nameLength > MAX_NAME) throw corrupt(`section at byte ${at} has a name length of ${nameLength}`);
    const name = new TextDecoder().decode(await cur.take(nameLength, 'section name'));
    const length = safeLength(view(await cur.take(8, 'section length')).getBigUint64(0, true), `section '${name}'`);
    const label = `section '${name}' (${tagName(kind)}) at byte ${at}`;
    if (length + 4 > endAt - cur.position) throw corrupt(`${label}: its length ${length} runs past the end section`);
    let payloadCrc = 0;
    const take = async (n: number, what: string): Promise<Uint8Array> => {
      const b = await cur.take(n, what);
      payloadCrc = crc32(b, payloadCrc);
      return b;
    };
    const start = cur.position;
    if (kind === TAG_META || kind === TAG_STATE) {
      if (length > MAX_JSON_SECTION) throw corrupt(`${label} is ${length} bytes, more than a ${name} section can be`);
      const text = new TextDecoder().decode(await take(length, label));
      await checkCrc(cur, payloadCrc, label);
      let parsed: unknown;
      try { parsed = JSON.parse(text); } catch (e) { throw corrupt(`${label} is not valid JSON: ${(e as Error).message}`); }
      if (kind === TAG_META) {
        if (meta) throw corrupt('two meta sections');
        if (at !== HEADER_SIZE) throw corrupt('the meta section must come first');
        meta = checkMeta(parsed);
      } else {
        if (stateSeen) throw corrupt('two state sections');
        state = parsed;
        stateSeen = true;
      }
    } else if (kind === TAG_RAM) {
      if (ram) throw corrupt('two ram sections');
      if (!meta) throw corrupt('the ram section comes before meta');
      ram = await parseRam(take, length, meta.ramBytes, label, sink);
      await checkCrc(cur, payloadCrc, label);
    } else if (kind === TAG_END) {
      throw corrupt(`${label}: an end section before the end of the file`);
    } else {
      // A section this version does not know: later writers may add optional ones. Its CRC
      // still has to hold, so a damaged tag is not mistaken for an unknown section silently.
      for (let left = length; left > 0;) {
        const n = Math.min(left, RAM_CHUNK);
        await take(n, label);
        left -= n;
      }
      await checkCrc(cur, payloadCrc, label);
    }
    if (cur.position - start !== length + 4) throw corrupt(`${label}: payload length does not match its contents`);
  }
  if (cur.fileCrc !== fileCrc) throw corrupt('the whole-file checksum does not match');
  if (!meta) throw corrupt('no meta section');
  if (!stateSeen) throw corrupt('no state section');
  if (!ram) throw corrupt('no ram section');
  return { meta, state, ram, fileBytes: reader.size };
}

async function checkCrc(cur: Cursor, computed: number, label: string): Promise<void> {
  const stored = view(await cur.take(4, `${label} checksum`)).getUint32(0, true);
  if (stored !== computed) throw corrupt(`${label}: checksum mismatch (stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)})`);
}

async function parseRam(take: (n: number, what: string) => Promise<Uint8Array>, length: number, metaRamBytes: number,
  label: string, sink: SnapshotSink): Promise<ParsedSnapshot['ram']> {
  if (length < RAM_HEADER_SIZE) throw corrupt(`${label} is too short for its header`);
  const h = view(await take(RAM_HEADER_SIZE, label));
  const pageSize = h.getUint32(0, true);
  const ramBytes = safeLength(h.getBigUint64(8, true), 'RAM');
  if (pageSize !== PAGE_SIZE) throw corrupt(`${label}: page size ${pageSize}, expected ${PAGE_SIZE}`);
  if (h.getUint32(4, true) !== 0) throw corrupt(`${label}: reserved field is not zero`);
  if (ramBytes !== metaRamBytes) throw corrupt(`${label}: ${ramBytes} bytes of RAM, but meta says ${metaRamBytes}`);
  const pageCount = ramBytes / PAGE_SIZE;
  sink.ramBegin?.(ramBytes);
  let left = length - RAM_HEADER_SIZE;
  let next = 0;
  let runs = 0;
  let pages = 0;
  while (left > 0) {
    if (left < RAM_RUN_HEADER_SIZE) throw corrupt(`${label}: a run header is cut by the section's end`);
    const r = view(await take(RAM_RUN_HEADER_SIZE, label));
    left -= RAM_RUN_HEADER_SIZE;
    const first = r.getUint32(0, true);
    const count = r.getUint32(4, true);
    if (count === 0 || first < next || first + count > pageCount) {
      throw corrupt(`${label}: run of ${count} pages at page ${first} is out of order or outside ${pageCount} pages`);
    }
    if (count * PAGE_SIZE > left) throw corrupt(`${label}: run at page ${first} is cut by the section's end`);
    for (let p = first; p < first + count;) {
      const n = Math.min(first + count - p, RAM_CHUNK / PAGE_SIZE);
      const bytes = await take(n * PAGE_SIZE, label);
      sink.ramData?.(p, bytes);
      p += n;
    }
    left -= count * PAGE_SIZE;
    next = first + count;
    runs++;
    pages += count;
  }
  sink.ramEnd?.();
  return { ramBytes, runs, pages };
}

function checkMeta(v: unknown): SnapshotMeta {
  if (typeof v !== 'object' || v === null) throw corrupt('meta is not an object');
  const m = v as Partial<SnapshotMeta>;
  if (m.formatVersion !== SNAPSHOT_FORMAT_VERSION) throw corrupt(`meta says format version ${String(m.formatVersion)}, the header ${SNAPSHOT_FORMAT_VERSION}`);
  if (typeof m.ramBytes !== 'number' || !Number.isSafeInteger(m.ramBytes) || m.ramBytes <= 0 || m.ramBytes % PAGE_SIZE !== 0) {
    throw corrupt(`meta ramBytes ${String(m.ramBytes)} is not a positive multiple of ${PAGE_SIZE}`);
  }
  if (typeof m.ferryVersion !== 'string' || typeof m.createdAt !== 'string') throw corrupt('meta lacks ferryVersion or createdAt');
  if (typeof m.machine !== 'object' || m.machine === null || !Array.isArray(m.machine.virtio)) throw corrupt('meta lacks the machine summary');
  return m as SnapshotMeta;
}
