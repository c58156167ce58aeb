import { FerryError } from '../errors.js';

// Every storage failure is a BlockIoError, so a block front-end can turn any of them into a
// guest-visible I/O error with one instanceof check, while scripts match on the stable code.
export class BlockIoError extends FerryError {}

/** An offset/length outside the device, negative or not a safe integer. */
export class BlockRangeError extends BlockIoError {
  constructor(message: string) { super('BLOCK_OUT_OF_RANGE', message); }
}

/** A write or discard on a read-only backend. */
export class BlockReadOnlyError extends BlockIoError {
  constructor(message: string) { super('BLOCK_READ_ONLY', message); }
}

/** A request the backend's alignment rules forbid (e.g. an NBD server's minimum block size). */
export class BlockAlignmentError extends BlockIoError {
  constructor(message: string) { super('BLOCK_UNALIGNED', message); }
}

/** An image or export that cannot be used as a disk at all (e.g. size not a multiple of 512). */
export class BlockImageError extends BlockIoError {
  constructor(message: string, options?: { cause?: unknown }) { super('BLOCK_BAD_IMAGE', message, options); }
}

/** Any call after close(). */
export class BlockClosedError extends BlockIoError {
  constructor(message: string) { super('BLOCK_CLOSED', message); }
}

/** An OS-level failure of a file-backed disk (the errno code is in the message and cause). */
export class BlockFileError extends BlockIoError {
  constructor(message: string, options?: { cause?: unknown }) { super('BLOCK_FILE_IO', message, options); }
}

/** The NBD connection is gone (server died, network dropped, or it was torn down). */
export class NbdDisconnectedError extends BlockIoError {
  constructor(message: string, options?: { cause?: unknown }) { super('NBD_DISCONNECTED', message, options); }
}

/** The server broke the protocol; the connection is torn down. */
export class NbdProtocolError extends BlockIoError {
  constructor(message: string) { super('NBD_PROTOCOL', message); }
}

/** Option negotiation failed: unknown export, policy refusal, TLS required, old-style server... */
export class NbdHandshakeError extends BlockIoError {
  constructor(message: string, options?: { cause?: unknown }) { super('NBD_HANDSHAKE', message, options); }
}

/** Connecting, negotiating or waiting for replies took longer than allowed. */
export class NbdTimeoutError extends BlockIoError {
  constructor(message: string) { super('NBD_TIMEOUT', message); }
}

/**
 * A flush could not vouch for earlier writes: the connection they were acknowledged on was lost
 * before a flush covered them, so a server with a volatile cache may have dropped them.
 */
export class NbdWritesMaybeLostError extends BlockIoError {
  constructor(message: string) { super('NBD_WRITES_MAYBE_LOST', message); }
}

// The errno values the NBD protocol allows on the wire (they are Linux numbers by definition,
// whatever the server's own OS uses).
const NBD_ERRNO_CODES: ReadonlyMap<number, string> = new Map([
  [1, 'EPERM'],
  [5, 'EIO'],
  [12, 'ENOMEM'],
  [22, 'EINVAL'],
  [28, 'ENOSPC'],
  [75, 'EOVERFLOW'],
  [95, 'ENOTSUP'],
  [108, 'ESHUTDOWN'],
]);

/** The server answered a request with an error; code is NBD_<errno name>, e.g. NBD_EIO. */
export class NbdServerError extends BlockIoError {
  readonly errno: number;
  constructor(errno: number, what: string) {
    const name = NBD_ERRNO_CODES.get(errno);
    // Unknown values are not in the spec; the spec says to treat them like EINVAL, but keeping
    // them apart in the code makes a misbehaving server easier to spot.
    super(name === undefined ? 'NBD_EUNKNOWN' : `NBD_${name}`,
      `NBD server failed ${what}: ${name ?? 'unknown error'} (errno ${errno})`);
    this.errno = errno;
  }
}
