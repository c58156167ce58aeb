// Wire constants and encoders of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md).
// Everything on the wire is big-endian. 64-bit fields are split into two 32-bit halves so
// offsets stay plain numbers (exact up to 2^53, far beyond any disk we will see).

export const NBDMAGIC_HI = 0x4e42444d; // "NBDM"
export const NBDMAGIC_LO = 0x41474943; // "AGIC"
export const IHAVEOPT_HI = 0x49484156; // "IHAV"
export const IHAVEOPT_LO = 0x454f5054; // "EOPT"
/** The oldstyle handshake's second magic; we only speak newstyle. */
export const OLDSTYLE_MAGIC_HI = 0x00004202;
export const OLDSTYLE_MAGIC_LO = 0x81861253;
export const OPT_REPLY_MAGIC_HI = 0x0003e889;
export const OPT_REPLY_MAGIC_LO = 0x045565a9;

export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// Handshake flags (server) and client flags.
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

// Options.
export const OPT_EXPORT_NAME = 1;
export const OPT_ABORT = 2;
export const OPT_GO = 7;

// Option reply types; errors have bit 31 set.
export const REP_ACK = 1;
export const REP_INFO = 3;
export const REP_FLAG_ERROR = 0x80000000;
export const REP_ERR_NAMES: ReadonlyMap<number, string> = new Map([
  [REP_FLAG_ERROR + 1, 'NBD_REP_ERR_UNSUP'],
  [REP_FLAG_ERROR + 2, 'NBD_REP_ERR_POLICY'],
  [REP_FLAG_ERROR + 3, 'NBD_REP_ERR_INVALID'],
  [REP_FLAG_ERROR + 4, 'NBD_REP_ERR_PLATFORM'],
  [REP_FLAG_ERROR + 5, 'NBD_REP_ERR_TLS_REQD'],
  [REP_FLAG_ERROR + 6, 'NBD_REP_ERR_UNKNOWN'],
  [REP_FLAG_ERROR + 7, 'NBD_REP_ERR_SHUTDOWN'],
  [REP_FLAG_ERROR + 8, 'NBD_REP_ERR_BLOCK_SIZE_REQD'],
  [REP_FLAG_ERROR + 9, 'NBD_REP_ERR_TOO_BIG'],
]);
export const REP_ERR_UNSUP = REP_FLAG_ERROR + 1;

// NBD_INFO types inside NBD_REP_INFO.
export const INFO_EXPORT = 0;
export const INFO_BLOCK_SIZE = 3;

// Transmission flags.
export const TFLAG_HAS_FLAGS = 1 << 0;
export const TFLAG_READ_ONLY = 1 << 1;
export const TFLAG_SEND_FLUSH = 1 << 2;
export const TFLAG_SEND_FUA = 1 << 3;
export const TFLAG_SEND_TRIM = 1 << 5;

// Commands.
export const CMD_READ = 0;
export const CMD_WRITE = 1;
export const CMD_DISC = 2;
export const CMD_FLUSH = 3;
export const CMD_TRIM = 4;

export const CMD_NAMES: Readonly<Record<number, string>> = {
  [CMD_READ]: 'READ', [CMD_WRITE]: 'WRITE', [CMD_DISC]: 'DISC', [CMD_FLUSH]: 'FLUSH', [CMD_TRIM]: 'TRIM',
};

export const ESHUTDOWN = 108;

export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_BYTES = 16;

/**
 * The spec's advice for a client that has no block size constraints from the server: requests
 * up to 32 MiB are safe everywhere (nbdkit itself refuses more than 64 MiB).
 */
export const DEFAULT_MAX_BLOCK = 32 * 1024 * 1024;

/** Option replies are small (export info, error text); anything huge is a broken server. */
export const MAX_OPTION_REPLY = 64 * 1024;

const TWO_32 = 0x1_0000_0000;

export function writeU64(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32BE(Math.floor(value / TWO_32), at);
  buf.writeUInt32BE(value % TWO_32, at + 4);
}

/** Returns undefined when the value does not fit a JS number exactly. */
export function readU64(buf: Buffer, at: number): number | undefined {
  const hi = buf.readUInt32BE(at);
  if (hi >= 0x200000) return undefined;
  return hi * TWO_32 + buf.readUInt32BE(at + 4);
}

export function encodeRequest(flags: number, type: number, cookie: number, offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(REQUEST_HEADER_BYTES);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  writeU64(b, cookie, 8);
  writeU64(b, offset, 16);
  b.writeUInt32BE(length, 24);
  return b;
}

export function encodeOption(option: number, data: Buffer): Buffer {
  const b = Buffer.allocUnsafe(16 + data.length);
  b.writeUInt32BE(IHAVEOPT_HI, 0);
  b.writeUInt32BE(IHAVEOPT_LO, 4);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(data.length, 12);
  data.copy(b, 16);
  return b;
}

/** NBD_OPT_GO payload: the export name and the info types we want besides NBD_INFO_EXPORT. */
export function encodeGo(exportName: string, infos: readonly number[]): Buffer {
  const name = Buffer.from(exportName, 'utf8');
  const b = Buffer.allocUnsafe(4 + name.length + 2 + 2 * infos.length);
  b.writeUInt32BE(name.length, 0);
  name.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + name.length);
  infos.forEach((t, i) => b.writeUInt16BE(t, 6 + name.length + 2 * i));
  return b;
}

export function hex32(n: number): string {
  return '0x' + (n >>> 0).toString(16).padStart(8, '0');
}
