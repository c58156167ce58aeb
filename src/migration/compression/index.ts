// Page-batch compressions both ends register (FrameEncoder/FrameDecoder `compressions`), and
// the sender's per-batch choice of whether compressing is worth it.

import type { FrameEncoder, PageCompression } from '../protocol/codec.js';
import { Compression } from '../protocol/messages.js';
import { ZSTD, type NamedPageCompression } from './zstd.js';

export { ZSTD, ZSTD_LEVEL, type NamedPageCompression } from './zstd.js';

/** Pass as `compressions` to FrameEncoder and FrameDecoder on both ends. */
export const PAGE_COMPRESSIONS: readonly NamedPageCompression[] = [ZSTD];

export const DEFAULT_PAGE_COMPRESSION: NamedPageCompression = ZSTD;

/** Below this saving the receiver's decompression and the frame's extra bytes are not worth it;
 * it also guarantees a compressed batch is never larger than the raw one the frame bound allows. */
export const PAYS_OFF_RATIO = 0.9;

export interface PackedBatch {
  /** The id to put in the PagesMessage: the codec's, or Compression.None. */
  readonly compression: number;
  /** The bytes as they travel; `raw` itself when sent uncompressed. Pass as PagesMessage.packed
   * so the encoder does not compress the batch a second time. */
  readonly packed: Buffer;
}

/** Compresses one batch (n × 4096 bytes) and keeps the result only where it pays off. */
export function packBatch(raw: Buffer, codec: PageCompression | null = DEFAULT_PAGE_COMPRESSION): PackedBatch {
  if (codec === null) return { compression: Compression.None, packed: raw };
  const packed = codec.compress(raw);
  if (packed.length > raw.length * PAYS_OFF_RATIO) return { compression: Compression.None, packed: raw };
  return { compression: codec.id, packed };
}

/** The Pages frame for `pages` (strictly increasing) whose contents are `raw`, page i at i × 4096;
 * the frame is encoded at once, so the caller may reuse both buffers afterwards. */
export function encodePages(encoder: FrameEncoder, round: number, pages: readonly number[], raw: Buffer, codec: PageCompression | null): Buffer {
  const { compression, packed } = packBatch(raw, codec);
  return encoder.encode({ type: 'Pages', round, compression, pages, data: raw, packed });
}
