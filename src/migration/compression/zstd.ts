// zstd for page batches (measurements and the choice: DESIGN.md beside this file), from the
// wasm build of libzstd: one package for every platform, and its one-shot ZSTD_decompress writes
// into a buffer of exactly the size we allow, whatever the peer's frame claims. (The native
// binding measured ~1.7× faster to compress but publishes linux-x64 binaries only, which
// breaks `npm ci` from a lock made on any platform.)

import * as wasm from '@bokuweb/zstd-wasm';
import { Compression, MAX_BATCH_PAGES, PAGE_SIZE } from '../protocol/messages.js';
import type { PageCompression } from '../protocol/codec.js';

/** Level 1: on a booted guest's pages it gets 3.2× at ~280 MB/s, level 3 gets 3.5× at two
 * thirds of the speed; the link (125 MB/s) is the bottleneck at level 1 until ratio × link
 * exceeds what one core compresses. */
export const ZSTD_LEVEL = 1;

await wasm.init();

const asBuffer = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.byteLength);
const encode = (raw: Buffer): Buffer => asBuffer(wasm.compress(raw, ZSTD_LEVEL));

const MAGIC = 0xfd2fb528;
const FCS_BYTES = [0, 2, 4, 8] as const;
const DICT_ID_BYTES = [0, 1, 2, 4] as const;

/** The Frame_Content_Size a frame header declares (RFC 8878 §3.1.1.1), or undefined when it
 * declares none. Read here because the wasm wrapper would allocate whatever it says. */
function declaredSize(packed: Buffer): number | undefined {
  if (packed.length < 6 || packed.readUInt32LE(0) !== MAGIC) throw new Error('not a zstd frame');
  const fhd = packed[4]!;
  const singleSegment = (fhd & 0x20) !== 0;
  const fcsFlag = fhd >> 6;
  const fcsBytes = fcsFlag === 0 && singleSegment ? 1 : FCS_BYTES[fcsFlag as 0 | 1 | 2 | 3];
  if (fcsBytes === 0) return undefined;
  const at = 5 + (singleSegment ? 0 : 1) + DICT_ID_BYTES[(fhd & 3) as 0 | 1 | 2 | 3];
  if (packed.length < at + fcsBytes) throw new Error('zstd frame header is truncated');
  switch (fcsBytes) {
    case 1: return packed[at]!;
    case 2: return packed.readUInt16LE(at) + 256;
    case 4: return packed.readUInt32LE(at);
    default: {
      const v = packed.readBigUInt64LE(at);
      return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
    }
  }
}

function decompress(packed: Buffer, rawBytes: number): Buffer {
  if (!Number.isInteger(rawBytes) || rawBytes < 1 || rawBytes > MAX_BATCH_PAGES * PAGE_SIZE) throw new Error(`bad batch size ${rawBytes}`);
  const declared = declaredSize(packed);
  if (declared !== undefined && declared !== rawBytes) throw new Error(`zstd frame declares ${declared} bytes, the batch is ${rawBytes}`);
  // ZSTD_decompress stops with dstSize_tooSmall rather than write past rawBytes.
  const out = wasm.decompress(packed, { defaultHeapSize: rawBytes });
  if (out.byteLength !== rawBytes) throw new Error(`zstd data holds ${out.byteLength} bytes, the batch is ${rawBytes}`);
  return asBuffer(out);
}

/** A page compression with the name reports and the daemon's API use for it. */
export interface NamedPageCompression extends PageCompression {
  readonly name: string;
}

/** A standard zstd frame (RFC 8878), no dictionary. */
export const ZSTD: NamedPageCompression = { id: Compression.Zstd, name: 'zstd', compress: encode, decompress };