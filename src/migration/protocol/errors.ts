// Everything the protocol layer refuses surfaces as one error class with a stable code, so the
// daemons can map a failure to a wire Abort code (and tests can match on it) without parsing
// messages. Anything the decoder sees comes from the network: it must never escape as a
// RangeError or TypeError from Buffer internals.

import { FerryError } from '../../errors.js';

export type ProtocolErrorCode =
  /** A frame header announces a payload larger than the negotiated maximum. */
  | 'FRAME_TOO_LARGE'
  /** A frame type this protocol version does not define. */
  | 'UNKNOWN_TYPE'
  /** Flag bits set that the frame type does not define. */
  | 'BAD_FLAGS'
  /** The header's reserved field is not zero. */
  | 'BAD_RESERVED'
  /** A payload ends before its fields do, or the stream ends inside a frame. */
  | 'TRUNCATED'
  /** A payload has bytes after its last field. */
  | 'TRAILING_BYTES'
  /** A field's value is outside what the protocol allows. */
  | 'BAD_FIELD'
  /** A page number at or beyond the end of guest RAM. */
  | 'PAGE_OUT_OF_RANGE'
  /** A page batch names a compression this side does not know, or its data does not decompress. */
  | 'BAD_COMPRESSION'
  /** A string field is not valid UTF-8. */
  | 'BAD_UTF8'
  /** A JSON field does not parse, or is not an object. */
  | 'BAD_JSON'
  /** The two sides' version ranges do not overlap, or a range is malformed. */
  | 'VERSION_UNSUPPORTED'
  /** The source did not prove it holds the migration token (or the token is unknown or expired). */
  | 'AUTH_FAILED'
  /** An authentication challenge (a destination nonce) was answered a second time. */
  | 'AUTH_REPLAY'
  /** The decoder already failed; a framed stream cannot resynchronise after a bad frame. */
  | 'DECODER_FAILED'
  /** A bug in this layer rather than bad input; kept distinct so tests can insist it never happens. */
  | 'INTERNAL';

export class MigrationProtocolError extends FerryError {
  declare readonly code: ProtocolErrorCode;
  constructor(code: ProtocolErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
