// Frames and their payloads (layouts in docs/migration-protocol.md). The decoder is fed straight
// from a socket owned by a peer we do not trust yet: every length is checked against a bound
// before anything is buffered or allocated for it, and every failure is a MigrationProtocolError.

import { MigrationProtocolError, type ProtocolErrorCode } from './errors.js';
import {
  Compression,
  FRAME_HEADER_BYTES,
  HELLO_MAGIC,
  MAX_ABSENT_RUNS,
  MAX_BATCH_PAGES,
  MAX_CARRIED_FRAME,
  MAX_CARRIED_FRAMES,
  MAX_DEVICES,
  MAX_SWITCH_EVENTS,
  MIN_CARRIED_FRAME,
  DESTINATION_SWITCH_EVENTS,
  type DestinationSwitchEvent,
  type FramesMessage,
  MAX_FRAME_PAYLOAD,
  MAX_SHORT_STRING,
  MAX_TEXT_STRING,
  MessageType,
  NONCE_BYTES,
  PAGE_SIZE,
  PROOF_BYTES,
  TOKEN_ID_BYTES,
  type AbsentMessage,
  type AbsentOrigin,
  type MessageTypeName,
  type PageRequestMessage,
  type PagesMessage,
  type ProtocolMessage,
  type SwitchTimesMessage,
} from './messages.js';

/** A page-batch compression, registered by id on both ends. Id 0 (none) is built in. */
export interface PageCompression {
  readonly id: number;
  compress(raw: Buffer): Buffer;
  /** Must return exactly `rawBytes` bytes or throw; `rawBytes` is at most MAX_BATCH_PAGES pages. */
  decompress(packed: Buffer, rawBytes: number): Buffer;
}

export interface CodecOptions {
  /** Largest payload accepted or produced; at most MAX_FRAME_PAYLOAD. */
  readonly maxFramePayload?: number;
  readonly compressions?: readonly PageCompression[];
}

export interface DecoderOptions extends CodecOptions {
  /** Guest RAM size, to refuse page numbers beyond it. Learned from the first Config frame if
   * not given here. Until known, page numbers are only checked to be u32. */
  readonly ramBytes?: number;
}

const fail = (code: ProtocolErrorCode, message: string): never => {
  throw new MigrationProtocolError(code, message);
};

const NAMES = new Map<number, MessageTypeName>(
  (Object.entries(MessageType) as [MessageTypeName, number][]).map(([name, code]) => [code, name]),
);

const PAGES_FIXED = 12; // round u32, compression u8, reserved u8×3, count u32
const PAGES_MAX_PAYLOAD = PAGES_FIXED + MAX_BATCH_PAGES * (4 + PAGE_SIZE);
const ABSENT_FIXED = 8; // origin u8, reserved u8×3, run count u32
const ABSENT_MAX_PAYLOAD = ABSENT_FIXED + MAX_ABSENT_RUNS * 8;
const PAGE_REQUEST_MAX_PAYLOAD = 4 + MAX_BATCH_PAGES * 4;
/** Absent origins on the wire; any other byte is BAD_FIELD. */
const ORIGIN_CODE: Record<AbsentOrigin, number> = { peer: 1, swap: 2 };
const ORIGIN_NAME = new Map<number, AbsentOrigin>([
  [1, 'peer'],
  [2, 'swap'],
]);

/** Types whose payload has one exact size: checked from the header, before any payload arrives. */
const FIXED_SIZE: Partial<Record<MessageTypeName, number>> = {
  Hello: HELLO_MAGIC.length + 4 + TOKEN_ID_BYTES + NONCE_BYTES,
  Challenge: 6 + NONCE_BYTES,
  Auth: PROOF_BYTES,
  AuthOk: PROOF_BYTES,
  ZeroRun: 12,
  RoundEnd: 12,
  RoundAck: 8,
  PostcopyEnd: 4,
  PostcopyComplete: 28,
  PostcopyAck: 4,
  PostcopyStats: 24,
  CommitRequest: 4,
  Committed: 0,
  Activate: 0,
  Done: 0,
  SwitchEnd: 0,
};

function checkMaxPayload(n: number | undefined): number {
  if (n === undefined) return MAX_FRAME_PAYLOAD;
  if (!Number.isInteger(n) || n < 64 || n > MAX_FRAME_PAYLOAD) fail('BAD_FIELD', `maxFramePayload must be an integer in 64..${MAX_FRAME_PAYLOAD}`);
  return n;
}

function compressionTable(list: readonly PageCompression[] | undefined): Map<number, PageCompression> {
  const table = new Map<number, PageCompression>();
  for (const c of list ?? []) {
    if (!Number.isInteger(c.id) || c.id < 1 || c.id > 255) fail('BAD_FIELD', `compression id ${c.id} must be 1..255 (0 is none)`);
    table.set(c.id, c);
  }
  return table;
}

function checkRamBytes(ramBytes: number): number {
  if (!Number.isSafeInteger(ramBytes) || ramBytes <= 0 || ramBytes % PAGE_SIZE !== 0 || ramBytes / PAGE_SIZE > 2 ** 32) {
    fail('BAD_FIELD', `RAM size ${ramBytes} must be a positive multiple of ${PAGE_SIZE} of at most 2^32 pages`);
  }
  return ramBytes / PAGE_SIZE;
}

// ---------------------------------------------------------------------------------------------
// Encoding

class Writer {
  private readonly parts: Buffer[] = [];
  length = 0;
  private push(b: Buffer): void {
    this.parts.push(b);
    this.length += b.length;
  }
  u8(v: number): void {
    const b = Buffer.alloc(1);
    b.writeUInt8(v);
    this.push(b);
  }
  u16(v: number): void {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(v);
    this.push(b);
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  u64(v: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  bytes(b: Uint8Array): void {
    this.push(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
  }
  str16(s: string, max: number, what: string): void {
    const b = Buffer.from(s, 'utf8');
    if (b.length > max) fail('BAD_FIELD', `${what} is ${b.length} bytes, at most ${max} allowed`);
    this.u16(b.length);
    this.push(b);
  }
  concat(): Buffer {
    return Buffer.concat(this.parts, this.length);
  }
}

function uint(v: number, bits: 16 | 32, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v >= 2 ** bits) fail('BAD_FIELD', `${what} ${v} is not a u${bits}`);
  return v;
}
/** A u64 field as a JS number: exact only up to 2^53, so that is the bound on both ends. */
function u53(v: number, what: string): number {
  if (!Number.isSafeInteger(v) || v < 0) fail('BAD_FIELD', `${what} ${v} is not an integer in 0..2^53`);
  return v;
}
function fixed(b: Buffer, n: number, what: string): Buffer {
  if (!Buffer.isBuffer(b) || b.length !== n) fail('BAD_FIELD', `${what} must be ${n} bytes`);
  return b;
}
function jsonObject(v: Record<string, unknown>, what: string): Buffer {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('BAD_FIELD', `${what} must be a JSON object`);
  let text: string | undefined;
  try {
    text = JSON.stringify(v);
  } catch (e) {
    throw new MigrationProtocolError('BAD_JSON', `${what} cannot be serialised: ${(e as Error).message}`, { cause: e });
  }
  return Buffer.from(text ?? '', 'utf8');
}

/** Builds one frame around a payload. Exported for tests that hand-craft malformed frames. */
export function frame(type: number, payload: Uint8Array, flags = 0, reserved = 0): Buffer {
  const out = Buffer.alloc(FRAME_HEADER_BYTES + payload.length);
  out.writeUInt8(type, 0);
  out.writeUInt8(flags, 1);
  out.writeUInt16LE(reserved, 2);
  out.writeUInt32LE(payload.length, 4);
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

function encodePages(w: Writer, m: PagesMessage, compressions: Map<number, PageCompression>): void {
  const n = m.pages.length;
  if (n < 1 || n > MAX_BATCH_PAGES) fail('BAD_FIELD', `a page batch holds 1..${MAX_BATCH_PAGES} pages, not ${n}`);
  if (!Buffer.isBuffer(m.data) || m.data.length !== n * PAGE_SIZE) fail('BAD_FIELD', `page data must be ${n} × ${PAGE_SIZE} bytes`);
  let packed = m.data;
  if (m.compression !== Compression.None) {
    const codec = compressions.get(m.compression) ?? fail('BAD_COMPRESSION', `no compression with id ${m.compression}`);
    packed = m.packed ?? codec.compress(m.data);
  }
  w.u32(uint(m.round, 32, 'round'));
  w.u8(m.compression);
  w.u8(0);
  w.u16(0);
  w.u32(n);
  let prev = -1;
  for (const p of m.pages) {
    uint(p, 32, 'page number');
    if (p <= prev) fail('BAD_FIELD', 'page numbers in a batch must be strictly increasing');
    prev = p;
    w.u32(p);
  }
  w.bytes(packed);
  // The decoder refuses such a frame from its header; only a batch that grew when compressed gets here.
  if (w.length > PAGES_MAX_PAYLOAD) fail('FRAME_TOO_LARGE', `Pages payload is ${w.length} bytes, a batch is at most ${PAGES_MAX_PAYLOAD}: send it uncompressed`);
}

function encodeAbsent(w: Writer, m: AbsentMessage): void {
  const origin = Object.hasOwn(ORIGIN_CODE, m.origin) ? ORIGIN_CODE[m.origin] : fail('BAD_FIELD', `absent origin ${String(m.origin)} is not peer or swap`);
  const n = m.runs.length;
  if (n < 1 || n > MAX_ABSENT_RUNS) fail('BAD_FIELD', `an Absent frame holds 1..${MAX_ABSENT_RUNS} runs, not ${n}`);
  w.u8(origin);
  w.u8(0);
  w.u16(0);
  w.u32(n);
  let end = 0;
  for (const run of m.runs) {
    uint(run.first, 32, 'run first page');
    uint(run.count, 32, 'run count');
    if (run.count < 1 || run.first + run.count > 2 ** 32) fail('BAD_FIELD', 'an absent run covers 1 or more pages below 2^32');
    if (run.first < end) fail('BAD_FIELD', 'absent runs must be ascending and must not overlap');
    end = run.first + run.count;
    w.u32(run.first);
    w.u32(run.count);
  }
}

function encodePageRequest(w: Writer, m: PageRequestMessage): void {
  const n = m.pages.length;
  if (n < 1 || n > MAX_BATCH_PAGES) fail('BAD_FIELD', `a page request names 1..${MAX_BATCH_PAGES} pages, not ${n}`);
  w.u32(n);
  const seen = new Set<number>();
  for (const p of m.pages) {
    uint(p, 32, 'page number');
    if (seen.has(p)) fail('BAD_FIELD', `page ${p} is requested twice`);
    seen.add(p);
    w.u32(p);
  }
}

function encodeFrames(w: Writer, m: FramesMessage): void {
  const n = m.frames.length;
  if (n < 1 || n > MAX_CARRIED_FRAMES) fail('BAD_FIELD', `a Frames message carries 1..${MAX_CARRIED_FRAMES} frames, not ${n}`);
  w.u16(uint(m.nic, 16, 'NIC index'));
  w.u16(0);
  w.u32(n);
  for (const f of m.frames) {
    if (!(f instanceof Uint8Array) || f.length < MIN_CARRIED_FRAME || f.length > MAX_CARRIED_FRAME) {
      fail('BAD_FIELD', `a carried frame is ${MIN_CARRIED_FRAME}..${MAX_CARRIED_FRAME} bytes`);
    }
    w.u32(f.length);
    w.bytes(f);
  }
}

const SWITCH_EVENT_NAMES: ReadonlySet<string> = new Set(DESTINATION_SWITCH_EVENTS);

/** SwitchTimes travels as JSON; its shape is checked here, on both ends, like a binary layout. */
function switchTimes(v: Record<string, unknown>, what: string): Pick<SwitchTimesMessage, 'events' | 'framesDelivered' | 'framesDropped'> {
  const events = v['events'];
  if (!Array.isArray(events) || events.length > MAX_SWITCH_EVENTS) fail('BAD_FIELD', `${what}: events must be an array of at most ${MAX_SWITCH_EVENTS}`);
  const out = (events as unknown[]).map((e) => {
    const r = e as { event?: unknown; atMs?: unknown } | null;
    if (typeof r !== 'object' || r === null || typeof r.event !== 'string' || !SWITCH_EVENT_NAMES.has(r.event)) fail('BAD_FIELD', `${what}: an event names no destination switch event`);
    if (typeof r!.atMs !== 'number' || !Number.isFinite(r!.atMs) || r!.atMs < 0) fail('BAD_FIELD', `${what}: an event's atMs must be a non-negative number`);
    return { event: r!.event as DestinationSwitchEvent, atMs: r!.atMs as number };
  });
  const count = (key: string): number => {
    const n = v[key];
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) fail('BAD_FIELD', `${what}: ${key} must be a non-negative integer`);
    return n as number;
  };
  return { events: out, framesDelivered: count('framesDelivered'), framesDropped: count('framesDropped') };
}

export class FrameEncoder {
  private readonly maxPayload: number;
  private readonly compressions: Map<number, PageCompression>;

  constructor(opts: CodecOptions = {}) {
    this.maxPayload = checkMaxPayload(opts.maxFramePayload);
    this.compressions = compressionTable(opts.compressions);
  }

  /** One complete frame; refuses a message the decoder on the other side would refuse. */
  encode(m: ProtocolMessage): Buffer {
    const w = new Writer();
    switch (m.type) {
      case 'Hello':
        w.bytes(HELLO_MAGIC);
        w.u16(uint(m.versions.min, 16, 'min version'));
        w.u16(uint(m.versions.max, 16, 'max version'));
        w.bytes(fixed(m.tokenId, TOKEN_ID_BYTES, 'token id'));
        w.bytes(fixed(m.sourceNonce, NONCE_BYTES, 'source nonce'));
        break;
      case 'Challenge':
        w.u16(uint(m.versions.min, 16, 'min version'));
        w.u16(uint(m.versions.max, 16, 'max version'));
        w.u16(uint(m.version, 16, 'version'));
        w.bytes(fixed(m.destinationNonce, NONCE_BYTES, 'destination nonce'));
        break;
      case 'Auth':
      case 'AuthOk':
        w.bytes(fixed(m.proof, PROOF_BYTES, 'proof'));
        break;
      case 'Config': {
        checkRamBytes(m.ramBytes);
        if (m.pageSize !== PAGE_SIZE) fail('BAD_FIELD', `page size must be ${PAGE_SIZE}`);
        if (m.devices.length > MAX_DEVICES) fail('BAD_FIELD', `at most ${MAX_DEVICES} devices`);
        w.u64(m.ramBytes);
        w.u32(m.pageSize);
        w.str16(m.isa, MAX_SHORT_STRING, 'ISA');
        w.str16(m.name, MAX_SHORT_STRING, 'name');
        w.u16(m.devices.length);
        for (const d of m.devices) w.str16(d, MAX_SHORT_STRING, 'device');
        const json = jsonObject(m.config, 'config');
        w.u32(json.length);
        w.bytes(json);
        break;
      }
      case 'Reserved':
        w.str16(m.vmId, MAX_SHORT_STRING, 'VM id');
        break;
      case 'Pages':
        encodePages(w, m, this.compressions);
        break;
      case 'ZeroRun':
        w.u32(uint(m.round, 32, 'round'));
        w.u32(uint(m.firstPage, 32, 'first page'));
        if (m.count < 1 || m.firstPage + m.count > 2 ** 32) fail('BAD_FIELD', 'a zero run covers 1 or more pages below 2^32');
        w.u32(uint(m.count, 32, 'count'));
        break;
      case 'RoundEnd':
        w.u32(uint(m.round, 32, 'round'));
        w.u32(uint(m.pagesSent, 32, 'pages sent'));
        w.u32(uint(m.pagesZeroed, 32, 'pages zeroed'));
        break;
      case 'RoundAck':
        w.u32(uint(m.round, 32, 'round'));
        w.u32(uint(m.pagesReceived, 32, 'pages received'));
        break;
      case 'Absent':
        encodeAbsent(w, m);
        break;
      case 'PageRequest':
        encodePageRequest(w, m);
        break;
      case 'PostcopyEnd':
        w.u32(uint(m.pagesPushed, 32, 'pages pushed'));
        break;
      case 'PostcopyAck':
        w.u32(uint(m.pagesReceived, 32, 'pages received'));
        break;
      case 'PostcopyComplete':
        w.u32(uint(m.pagesReceived, 32, 'pages received'));
        w.u32(uint(m.faults, 32, 'faults'));
        w.u64(u53(m.stallUsTotal, 'total stall µs'));
        w.u64(u53(m.stallUsMax, 'longest stall µs'));
        w.u32(uint(m.duplicates, 32, 'duplicates'));
        break;
      case 'DeviceState':
        w.bytes(jsonObject(m.state, 'device state'));
        break;
      case 'CommitRequest':
        w.u32(uint(m.finalRound, 32, 'final round'));
        break;
      case 'Committed':
      case 'Activate':
      case 'Done':
      case 'SwitchEnd':
        break;
      case 'Frames':
        encodeFrames(w, m);
        break;
      case 'PostcopyStats':
        w.u64(u53(m.p50Us, 'p50 µs'));
        w.u64(u53(m.p99Us, 'p99 µs'));
        w.u64(u53(m.maxUs, 'longest µs'));
        break;
      case 'SwitchTimes': {
        const body = { events: m.events, framesDelivered: m.framesDelivered, framesDropped: m.framesDropped };
        switchTimes(body, 'SwitchTimes');
        w.bytes(jsonObject(body, 'switch times'));
        break;
      }
      case 'Cancel':
        w.str16(m.reason, MAX_TEXT_STRING, 'reason');
        break;
      case 'Abort':
        w.u16(uint(m.code, 16, 'abort code'));
        w.str16(m.message, MAX_TEXT_STRING, 'message');
        break;
    }
    if (w.length > this.maxPayload) fail('FRAME_TOO_LARGE', `${m.type} payload is ${w.length} bytes, the limit is ${this.maxPayload}`);
    return frame(MessageType[m.type], w.concat());
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** `1e999` parses to Infinity, which no machine state holds and which would re-serialise as null. */
function finiteOnly(_key: string, v: unknown): unknown {
  if (typeof v === 'number' && !Number.isFinite(v)) throw new RangeError('non-finite number');
  return v;
}

class Reader {
  private pos = 0;
  constructor(private readonly b: Buffer, private readonly what: string) {}
  private need(n: number): number {
    if (this.b.length - this.pos < n) fail('TRUNCATED', `${this.what} payload ends inside a field`);
    const at = this.pos;
    this.pos += n;
    return at;
  }
  get remaining(): number {
    return this.b.length - this.pos;
  }
  u8(): number {
    return this.b.readUInt8(this.need(1));
  }
  u16(): number {
    return this.b.readUInt16LE(this.need(2));
  }
  u32(): number {
    return this.b.readUInt32LE(this.need(4));
  }
  u64(): number {
    const v = this.b.readBigUInt64LE(this.need(8));
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail('BAD_FIELD', `${this.what}: a u64 field exceeds 2^53`);
    return Number(v);
  }
  bytes(n: number): Buffer {
    const at = this.need(n);
    return this.b.subarray(at, at + n);
  }
  copy(n: number): Buffer {
    // Copied so a long-lived field (a nonce, a proof) does not pin the whole receive chunk.
    return Buffer.from(this.bytes(n));
  }
  text(n: number): string {
    const raw = this.bytes(n);
    try {
      return utf8.decode(raw);
    } catch {
      return fail('BAD_UTF8', `${this.what}: a string is not valid UTF-8`);
    }
  }
  str16(max: number, field: string): string {
    const n = this.u16();
    if (n > max) fail('BAD_FIELD', `${this.what}: ${field} is ${n} bytes, at most ${max} allowed`);
    return this.text(n);
  }
  json(n: number, field: string): Record<string, unknown> {
    const text = this.text(n);
    let v: unknown;
    try {
      v = JSON.parse(text, finiteOnly);
    } catch {
      return fail('BAD_JSON', `${this.what}: ${field} is not valid JSON (or has a number beyond float range)`);
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('BAD_JSON', `${this.what}: ${field} must be a JSON object`);
    return v as Record<string, unknown>;
  }
  end(): void {
    if (this.pos !== this.b.length) fail('TRAILING_BYTES', `${this.what} payload has ${this.b.length - this.pos} bytes after its last field`);
  }
}

type Deliver = (m: ProtocolMessage) => void;

/**
 * Turns a byte stream, cut anywhere, into messages. Buffers at most one incomplete frame
 * (header + a payload the header has already been checked to allow). After the first error
 * it refuses everything: a framed stream cannot be resynchronised, the connection is dead.
 * Messages may reference the pushed chunks (page data is not copied); do not reuse them.
 */
export class FrameDecoder {
  private readonly maxPayload: number;
  private readonly compressions: Map<number, PageCompression>;
  private ramPages: number | undefined;
  private readonly header = Buffer.alloc(FRAME_HEADER_BYTES);
  private headerBytes = 0;
  private type: MessageTypeName = 'Hello';
  private payloadLength = -1;
  private parts: Buffer[] = [];
  private partBytes = 0;
  private failure: MigrationProtocolError | undefined;

  constructor(opts: DecoderOptions = {}) {
    this.maxPayload = checkMaxPayload(opts.maxFramePayload);
    this.compressions = compressionTable(opts.compressions);
    if (opts.ramBytes !== undefined) this.ramPages = checkRamBytes(opts.ramBytes);
  }

  /** Bytes held for a frame not yet complete: never more than header + max payload. */
  get bufferedBytes(): number {
    return this.headerBytes + this.partBytes;
  }

  get ramBytes(): number | undefined {
    return this.ramPages === undefined ? undefined : this.ramPages * PAGE_SIZE;
  }

  get failed(): MigrationProtocolError | undefined {
    return this.failure;
  }

  /**
   * Feeds bytes; `deliver` gets each complete message in order, so messages before a bad frame
   * in the same chunk are not lost. Throws MigrationProtocolError only (an exception thrown by
   * `deliver` itself propagates as is, and also leaves the decoder failed).
   */
  push(chunk: Uint8Array, deliver: Deliver): void {
    if (this.failure) throw new MigrationProtocolError('DECODER_FAILED', `the stream already failed: ${this.failure.message}`, { cause: this.failure });
    let delivering = false;
    try {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      this.consume(buf, (m) => {
        delivering = true;
        deliver(m);
        delivering = false;
      });
    } catch (e) {
      if (delivering) {
        this.failure = new MigrationProtocolError('DECODER_FAILED', 'the message handler threw', { cause: e });
        throw e;
      }
      this.failure = e instanceof MigrationProtocolError ? e : new MigrationProtocolError('INTERNAL', `decoder bug: ${String(e)}`, { cause: e });
      throw this.failure;
    }
  }

  /** Convenience for callers (and tests) that want the messages of one chunk as an array. */
  decode(chunk: Uint8Array): ProtocolMessage[] {
    const out: ProtocolMessage[] = [];
    this.push(chunk, (m) => out.push(m));
    return out;
  }

  /** The peer closed the stream: refuses a close in the middle of a frame. */
  end(): void {
    if (this.failure) throw new MigrationProtocolError('DECODER_FAILED', `the stream already failed: ${this.failure.message}`, { cause: this.failure });
    if (this.bufferedBytes > 0) {
      this.failure = new MigrationProtocolError('TRUNCATED', `the stream ended inside a frame (${this.bufferedBytes} bytes pending)`);
      throw this.failure;
    }
  }

  private consume(chunk: Buffer, deliver: Deliver): void {
    let off = 0;
    while (off < chunk.length) {
      if (this.payloadLength < 0) {
        const take = Math.min(FRAME_HEADER_BYTES - this.headerBytes, chunk.length - off);
        chunk.copy(this.header, this.headerBytes, off, off + take);
        this.headerBytes += take;
        off += take;
        if (this.headerBytes < FRAME_HEADER_BYTES) return;
        this.startFrame();
        this.headerBytes = 0;
        if (this.payloadLength === 0) this.finishFrame(Buffer.alloc(0), deliver);
      } else {
        const take = Math.min(this.payloadLength - this.partBytes, chunk.length - off);
        this.parts.push(chunk.subarray(off, off + take));
        this.partBytes += take;
        off += take;
        if (this.partBytes === this.payloadLength) {
          const payload = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.partBytes);
          this.parts = [];
          this.partBytes = 0;
          this.finishFrame(payload, deliver);
        }
      }
    }
  }

  /** Everything knowable from the 8 header bytes is checked here, before any payload is held. */
  private startFrame(): void {
    const h = this.header;
    const code = h.readUInt8(0);
    const flags = h.readUInt8(1);
    const reserved = h.readUInt16LE(2);
    const length = h.readUInt32LE(4);
    const name = NAMES.get(code) ?? fail('UNKNOWN_TYPE', `unknown frame type 0x${code.toString(16).padStart(2, '0')}`);
    if (flags !== 0) fail('BAD_FLAGS', `${name} frame has undefined flags 0x${flags.toString(16)}`);
    if (reserved !== 0) fail('BAD_RESERVED', `${name} frame has a non-zero reserved field`);
    if (length > this.maxPayload) fail('FRAME_TOO_LARGE', `${name} frame announces ${length} bytes, the limit is ${this.maxPayload}`);
    const size = FIXED_SIZE[name];
    if (size !== undefined && length < size) fail('TRUNCATED', `${name} payload is ${length} bytes, it must be ${size}`);
    if (size !== undefined && length > size) fail('TRAILING_BYTES', `${name} payload is ${length} bytes, it must be ${size}`);
    if (name === 'Pages' && length > PAGES_MAX_PAYLOAD) fail('FRAME_TOO_LARGE', `Pages frame announces ${length} bytes, a batch is at most ${PAGES_MAX_PAYLOAD}`);
    if (name === 'Absent' && length > ABSENT_MAX_PAYLOAD) fail('FRAME_TOO_LARGE', `Absent frame announces ${length} bytes, ${MAX_ABSENT_RUNS} runs take at most ${ABSENT_MAX_PAYLOAD}`);
    if (name === 'PageRequest' && length > PAGE_REQUEST_MAX_PAYLOAD) fail('FRAME_TOO_LARGE', `PageRequest frame announces ${length} bytes, ${MAX_BATCH_PAGES} pages take at most ${PAGE_REQUEST_MAX_PAYLOAD}`);
    this.type = name;
    this.payloadLength = length;
  }

  private finishFrame(payload: Buffer, deliver: Deliver): void {
    this.payloadLength = -1;
    const m = this.parse(this.type, new Reader(payload, this.type));
    if (m.type === 'Config' && this.ramPages === undefined) this.ramPages = m.ramBytes / PAGE_SIZE;
    deliver(m);
  }

  private checkPage(first: number, count: number, what: string): void {
    if (this.ramPages !== undefined && first + count > this.ramPages) {
      fail('PAGE_OUT_OF_RANGE', `${what} reaches page ${first + count - 1}, guest RAM has ${this.ramPages} pages`);
    }
  }

  private parse(type: MessageTypeName, r: Reader): ProtocolMessage {
    let m: ProtocolMessage;
    switch (type) {
      case 'Hello': {
        if (!r.bytes(HELLO_MAGIC.length).equals(HELLO_MAGIC)) fail('BAD_FIELD', 'Hello does not start with the ferry magic: not a ferry migration stream');
        const versions = { min: r.u16(), max: r.u16() };
        m = { type, versions, tokenId: r.copy(TOKEN_ID_BYTES), sourceNonce: r.copy(NONCE_BYTES) };
        break;
      }
      case 'Challenge': {
        const versions = { min: r.u16(), max: r.u16() };
        m = { type, versions, version: r.u16(), destinationNonce: r.copy(NONCE_BYTES) };
        break;
      }
      case 'Auth':
      case 'AuthOk':
        m = { type, proof: r.copy(PROOF_BYTES) };
        break;
      case 'Config': {
        const ramBytes = r.u64();
        const pageSize = r.u32();
        if (pageSize !== PAGE_SIZE) fail('BAD_FIELD', `Config page size ${pageSize}, this version only has ${PAGE_SIZE}`);
        const pages = checkRamBytes(ramBytes);
        if (this.ramPages !== undefined && this.ramPages !== pages) fail('BAD_FIELD', `Config RAM size ${ramBytes} differs from the ${this.ramPages * PAGE_SIZE} already in force`);
        const isa = r.str16(MAX_SHORT_STRING, 'ISA');
        const name = r.str16(MAX_SHORT_STRING, 'name');
        const count = r.u16();
        if (count > MAX_DEVICES) fail('BAD_FIELD', `Config lists ${count} devices, at most ${MAX_DEVICES}`);
        const devices: string[] = [];
        for (let i = 0; i < count; i++) devices.push(r.str16(MAX_SHORT_STRING, 'device'));
        const jsonBytes = r.u32();
        if (jsonBytes > r.remaining) fail('TRUNCATED', 'Config JSON is longer than the payload');
        m = { type, ramBytes, pageSize, isa, name, devices, config: r.json(jsonBytes, 'config') };
        break;
      }
      case 'Reserved':
        m = { type, vmId: r.str16(MAX_SHORT_STRING, 'VM id') };
        break;
      case 'Pages': {
        const round = r.u32();
        const compression = r.u8();
        if (r.u8() !== 0 || r.u16() !== 0) fail('BAD_RESERVED', 'Pages reserved bytes are not zero');
        const count = r.u32();
        if (count < 1 || count > MAX_BATCH_PAGES) fail('BAD_FIELD', `Pages batch of ${count} pages, it must hold 1..${MAX_BATCH_PAGES}`);
        if (count * 4 > r.remaining) fail('TRUNCATED', 'Pages payload ends inside the page numbers');
        const pages: number[] = new Array<number>(count);
        let prev = -1;
        for (let i = 0; i < count; i++) {
          const p = r.u32();
          if (p <= prev) fail('BAD_FIELD', 'Pages page numbers are not strictly increasing');
          pages[i] = prev = p;
        }
        this.checkPage(prev, 1, 'Pages batch');
        const rawBytes = count * PAGE_SIZE;
        let data: Buffer;
        if (compression === Compression.None) {
          if (r.remaining < rawBytes) fail('TRUNCATED', `Pages payload holds ${r.remaining} bytes of data for ${count} pages`);
          data = r.bytes(rawBytes);
        } else {
          const codec = this.compressions.get(compression) ?? fail('BAD_COMPRESSION', `Pages batch uses unknown compression ${compression}`);
          const packed = r.bytes(r.remaining);
          let out: Buffer | undefined;
          try {
            out = codec.decompress(packed, rawBytes);
          } catch (e) {
            throw new MigrationProtocolError('BAD_COMPRESSION', `Pages batch does not decompress: ${String(e)}`, { cause: e });
          }
          if (!Buffer.isBuffer(out) || out.length !== rawBytes) fail('BAD_COMPRESSION', `Pages batch decompresses to the wrong size`);
          data = out;
        }
        m = { type, round, compression, pages, data };
        break;
      }
      case 'ZeroRun': {
        const round = r.u32();
        const firstPage = r.u32();
        const count = r.u32();
        if (count < 1 || firstPage + count > 2 ** 32) fail('BAD_FIELD', `ZeroRun of ${count} pages from ${firstPage} is empty or passes 2^32`);
        this.checkPage(firstPage, count, 'ZeroRun');
        m = { type, round, firstPage, count };
        break;
      }
      case 'RoundEnd':
        m = { type, round: r.u32(), pagesSent: r.u32(), pagesZeroed: r.u32() };
        break;
      case 'RoundAck':
        m = { type, round: r.u32(), pagesReceived: r.u32() };
        break;
      case 'Absent': {
        const code = r.u8();
        const origin = ORIGIN_NAME.get(code) ?? fail('BAD_FIELD', `Absent origin ${code} is not 1 (peer) or 2 (swap)`);
        if (r.u8() !== 0 || r.u16() !== 0) fail('BAD_RESERVED', 'Absent reserved bytes are not zero');
        const count = r.u32();
        if (count < 1 || count > MAX_ABSENT_RUNS) fail('BAD_FIELD', `Absent frame of ${count} runs, it must hold 1..${MAX_ABSENT_RUNS}`);
        if (count * 8 > r.remaining) fail('TRUNCATED', 'Absent payload ends inside the runs');
        const runs: { first: number; count: number }[] = new Array<{ first: number; count: number }>(count);
        let end = 0;
        for (let i = 0; i < count; i++) {
          const first = r.u32();
          const n = r.u32();
          if (n < 1 || first + n > 2 ** 32) fail('BAD_FIELD', `Absent run of ${n} pages from ${first} is empty or passes 2^32`);
          if (first < end) fail('BAD_FIELD', `Absent run from page ${first} is not after the previous run's end ${end}`);
          end = first + n;
          runs[i] = { first, count: n };
        }
        const last = runs[count - 1]!;
        this.checkPage(last.first, last.count, 'Absent run');
        m = { type, origin, runs };
        break;
      }
      case 'PageRequest': {
        const count = r.u32();
        if (count < 1 || count > MAX_BATCH_PAGES) fail('BAD_FIELD', `PageRequest of ${count} pages, it must name 1..${MAX_BATCH_PAGES}`);
        if (count * 4 > r.remaining) fail('TRUNCATED', 'PageRequest payload ends inside the page numbers');
        const pages: number[] = new Array<number>(count);
        const seen = new Set<number>();
        let top = 0;
        for (let i = 0; i < count; i++) {
          const p = r.u32();
          if (seen.has(p)) fail('BAD_FIELD', `PageRequest names page ${p} twice`);
          seen.add(p);
          pages[i] = p;
          if (p > top) top = p;
        }
        this.checkPage(top, 1, 'PageRequest');
        m = { type, pages };
        break;
      }
      case 'PostcopyEnd':
        m = { type, pagesPushed: r.u32() };
        break;
      case 'PostcopyAck':
        m = { type, pagesReceived: r.u32() };
        break;
      case 'PostcopyComplete': {
        const pagesReceived = r.u32();
        const faults = r.u32();
        const stallUsTotal = r.u64();
        const stallUsMax = r.u64();
        m = { type, pagesReceived, faults, stallUsTotal, stallUsMax, duplicates: r.u32() };
        break;
      }
      case 'DeviceState':
        m = { type, state: r.json(r.remaining, 'device state') };
        break;
      case 'CommitRequest':
        m = { type, finalRound: r.u32() };
        break;
      case 'Committed':
      case 'Activate':
      case 'Done':
      case 'SwitchEnd':
        m = { type };
        break;
      case 'Frames': {
        const nic = r.u16();
        if (r.u16() !== 0) fail('BAD_RESERVED', 'Frames has a non-zero reserved field');
        const n = r.u32();
        if (n < 1 || n > MAX_CARRIED_FRAMES) fail('BAD_FIELD', `Frames carries ${n} frames, 1..${MAX_CARRIED_FRAMES} allowed`);
        const frames: Uint8Array[] = [];
        for (let i = 0; i < n; i++) {
          const len = r.u32();
          if (len < MIN_CARRIED_FRAME || len > MAX_CARRIED_FRAME) fail('BAD_FIELD', `a carried frame of ${len} bytes, ${MIN_CARRIED_FRAME}..${MAX_CARRIED_FRAME} allowed`);
          frames.push(r.copy(len));
        }
        m = { type, nic, frames };
        break;
      }
      case 'SwitchTimes':
        m = { type, ...switchTimes(r.json(r.remaining, 'switch times'), 'SwitchTimes') };
        break;
      case 'PostcopyStats': {
        const p50Us = r.u64();
        const p99Us = r.u64();
        m = { type, p50Us, p99Us, maxUs: r.u64() };
        break;
      }
      case 'Cancel':
        m = { type, reason: r.str16(MAX_TEXT_STRING, 'reason') };
        break;
      case 'Abort': {
        const code = r.u16();
        m = { type, code, message: r.str16(MAX_TEXT_STRING, 'message') };
        break;
      }
    }
    r.end();
    return m;
  }
}

/** Decodes a buffer holding whole frames; refuses a partial frame at the end. */
export function decodeAll(bytes: Uint8Array, opts: DecoderOptions = {}): ProtocolMessage[] {
  const d = new FrameDecoder(opts);
  const out = d.decode(bytes);
  d.end();
  return out;
}
