// Fixed-newstyle negotiation up to the transmission phase: NBD_OPT_GO asking for the block size
// constraints, with a fallback to NBD_OPT_EXPORT_NAME for servers that predate NBD_OPT_GO.
import type { Socket } from 'node:net';
import { BlockIoError, NbdDisconnectedError, NbdHandshakeError, NbdProtocolError } from '../errors.js';
import {
  encodeGo, encodeOption, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, hex32,
  IHAVEOPT_HI, IHAVEOPT_LO, INFO_BLOCK_SIZE, INFO_EXPORT, MAX_OPTION_REPLY, NBDMAGIC_HI, NBDMAGIC_LO,
  OLDSTYLE_MAGIC_HI, OLDSTYLE_MAGIC_LO, OPT_EXPORT_NAME, OPT_GO, OPT_REPLY_MAGIC_HI, OPT_REPLY_MAGIC_LO,
  readU64, REP_ACK, REP_ERR_NAMES, REP_ERR_UNSUP, REP_FLAG_ERROR, REP_INFO,
} from './protocol.js';

export interface ExportInfo {
  size: number;
  /** Transmission flags (NBD_FLAG_*). */
  flags: number;
  minBlock: number;
  preferredBlock: number;
  /** Undefined when the server did not state one. */
  maxBlock: number | undefined;
}

/**
 * Turns a socket's chunked stream into exact-length reads for the request/response handshake.
 * Once negotiation is over it is detached and whatever arrived beyond the handshake is handed on.
 */
export class SocketReader {
  private chunks: Buffer[] = [];
  private available = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private socketError: Error | undefined;
  private ended: Error | undefined;

  constructor(private readonly socket: Socket, private readonly label: string) {
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
  }

  read(n: number): Promise<Buffer> {
    if (this.waiter) throw new Error('SocketReader: concurrent reads');
    if (this.available >= n) return Promise.resolve(this.take(n));
    if (this.ended) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => { this.waiter = { n, resolve, reject }; });
  }

  detach(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.off('error', this.onError);
    this.socket.off('close', this.onClose);
    return this.take(this.available);
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.available);
    this.chunks = n < all.length ? [all.subarray(n)] : [];
    this.available -= n;
    return all.subarray(0, n);
  }

  private readonly onData = (chunk: Buffer): void => {
    this.chunks.push(chunk);
    this.available += chunk.length;
    const w = this.waiter;
    if (w && this.available >= w.n) {
      this.waiter = undefined;
      w.resolve(this.take(w.n));
    }
  };

  private readonly onError = (err: Error): void => { this.socketError ??= err; };

  private readonly onClose = (): void => {
    const cause = this.socketError;
    this.ended = cause instanceof BlockIoError ? cause
      : cause ? new NbdDisconnectedError(`NBD ${this.label}: connection failed during negotiation: ${cause.message}`, { cause })
        : new NbdDisconnectedError(`NBD ${this.label}: server closed the connection during negotiation`);
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(this.ended);
  };
}

export async function negotiate(reader: SocketReader, socket: Socket, exportName: string, label: string): Promise<ExportInfo> {
  const greeting = await reader.read(18);
  if (greeting.readUInt32BE(0) !== NBDMAGIC_HI || greeting.readUInt32BE(4) !== NBDMAGIC_LO) {
    throw new NbdProtocolError(`NBD ${label}: not an NBD server (bad greeting magic ${hex32(greeting.readUInt32BE(0))}${hex32(greeting.readUInt32BE(4)).slice(2)})`);
  }
  const m2hi = greeting.readUInt32BE(8);
  const m2lo = greeting.readUInt32BE(12);
  if (m2hi === OLDSTYLE_MAGIC_HI && m2lo === OLDSTYLE_MAGIC_LO) {
    throw new NbdHandshakeError(`NBD ${label}: server uses oldstyle negotiation, which is not supported`);
  }
  if (m2hi !== IHAVEOPT_HI || m2lo !== IHAVEOPT_LO) {
    throw new NbdProtocolError(`NBD ${label}: bad newstyle magic ${hex32(m2hi)}${hex32(m2lo).slice(2)}`);
  }
  const serverFlags = greeting.readUInt16BE(16);
  const fixed = (serverFlags & FLAG_FIXED_NEWSTYLE) !== 0;
  const noZeroes = (serverFlags & FLAG_NO_ZEROES) !== 0;
  const clientFlags = Buffer.alloc(4);
  clientFlags.writeUInt32BE((fixed ? FLAG_C_FIXED_NEWSTYLE : 0) | (noZeroes ? FLAG_C_NO_ZEROES : 0));
  socket.write(clientFlags);

  // A non-fixed newstyle server drops the connection on any option it does not know, so only
  // NBD_OPT_EXPORT_NAME is safe there.
  if (fixed) {
    const info = await tryGo(reader, socket, exportName, label);
    if (info) return info;
  }
  return exportNameOption(reader, socket, exportName, noZeroes, label);
}

/** Undefined when the server does not know NBD_OPT_GO. */
async function tryGo(reader: SocketReader, socket: Socket, exportName: string, label: string): Promise<ExportInfo | undefined> {
  socket.write(encodeOption(OPT_GO, encodeGo(exportName, [INFO_BLOCK_SIZE])));
  let exportInfo: { size: number; flags: number } | undefined;
  let blocks: { minBlock: number; preferredBlock: number; maxBlock: number | undefined } = { minBlock: 1, preferredBlock: 4096, maxBlock: undefined };
  for (;;) {
    const head = await reader.read(20);
    if (head.readUInt32BE(0) !== OPT_REPLY_MAGIC_HI || head.readUInt32BE(4) !== OPT_REPLY_MAGIC_LO) {
      throw new NbdProtocolError(`NBD ${label}: bad option reply magic ${hex32(head.readUInt32BE(0))}${hex32(head.readUInt32BE(4)).slice(2)}`);
    }
    const option = head.readUInt32BE(8);
    const type = head.readUInt32BE(12);
    const length = head.readUInt32BE(16);
    if (option !== OPT_GO) throw new NbdProtocolError(`NBD ${label}: option reply for option ${option}, expected NBD_OPT_GO (${OPT_GO})`);
    if (length > MAX_OPTION_REPLY) throw new NbdProtocolError(`NBD ${label}: oversized option reply (${length} bytes)`);
    const data = await reader.read(length);

    if (type === REP_ACK) {
      if (!exportInfo) throw new NbdProtocolError(`NBD ${label}: server acknowledged NBD_OPT_GO without sending NBD_INFO_EXPORT`);
      return { ...exportInfo, ...blocks };
    }
    if (type === REP_INFO) {
      if (length < 2) throw new NbdProtocolError(`NBD ${label}: NBD_REP_INFO of ${length} bytes`);
      const infoType = data.readUInt16BE(0);
      if (infoType === INFO_EXPORT) {
        if (length !== 12) throw new NbdProtocolError(`NBD ${label}: NBD_INFO_EXPORT of ${length} bytes, expected 12`);
        const size = readU64(data, 2);
        if (size === undefined) throw new NbdHandshakeError(`NBD ${label}: export is too large for this client`);
        exportInfo = { size, flags: data.readUInt16BE(10) };
      } else if (infoType === INFO_BLOCK_SIZE) {
        if (length !== 14) throw new NbdProtocolError(`NBD ${label}: NBD_INFO_BLOCK_SIZE of ${length} bytes, expected 14`);
        const minBlock = data.readUInt32BE(2);
        const preferredBlock = data.readUInt32BE(6);
        const maxBlock = data.readUInt32BE(10);
        if (minBlock < 1 || minBlock > 65536 || (minBlock & (minBlock - 1)) !== 0 || maxBlock < minBlock) {
          throw new NbdProtocolError(`NBD ${label}: nonsensical block sizes min=${minBlock} preferred=${preferredBlock} max=${maxBlock}`);
        }
        blocks = { minBlock, preferredBlock, maxBlock };
      }
      // Other info types (name, description) are not needed.
      continue;
    }
    if ((type & REP_FLAG_ERROR) !== 0) {
      if (type === REP_ERR_UNSUP) return undefined;
      const name = REP_ERR_NAMES.get(type) ?? `error reply ${hex32(type)}`;
      const text = data.toString('utf8');
      throw new NbdHandshakeError(`NBD ${label}: server refused export "${exportName}": ${name}${text ? `: ${text}` : ''}`);
    }
    throw new NbdProtocolError(`NBD ${label}: unexpected option reply type ${hex32(type)} to NBD_OPT_GO`);
  }
}

async function exportNameOption(reader: SocketReader, socket: Socket, exportName: string, noZeroes: boolean, label: string): Promise<ExportInfo> {
  socket.write(encodeOption(OPT_EXPORT_NAME, Buffer.from(exportName, 'utf8')));
  // This option has no error reply: an unknown export makes the server hang up, which the
  // reader reports as a disconnect during negotiation.
  const data = await reader.read(noZeroes ? 10 : 134);
  const size = readU64(data, 0);
  if (size === undefined) throw new NbdHandshakeError(`NBD ${label}: export is too large for this client`);
  return { size, flags: data.readUInt16BE(8), minBlock: 1, preferredBlock: 4096, maxBlock: undefined };
}
