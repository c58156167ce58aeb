// Whether a guest page holds only zeros: what a snapshot leaves out, what a migration never
// sends, what a balloon free-page report is checked against. One test serves all three.

import { PAGE_SIZE } from './guest-memory.js';

const WORDS_PER_PAGE = PAGE_SIZE / 4;

/** Tests the pages of one RAM view (page 0 at its start). Made once per view: the word view
 * it keeps costs an allocation, which a per-page test run over all of RAM should not pay. */
export class ZeroPages {
  private readonly words: Int32Array | undefined;

  constructor(private readonly bytes: Uint8Array) {
    // Guest RAM is always 4-byte aligned; anything else is tested byte by byte.
    this.words = bytes.byteOffset % 4 === 0 ? new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2) : undefined;
  }

  /** Eight words per step: most non-zero pages are told apart in the first step, zero pages
   * cost one pass. */
  isZero(page: number): boolean {
    const w = this.words;
    if (!w) {
      const end = (page + 1) * PAGE_SIZE;
      for (let i = page * PAGE_SIZE; i < end; i++) if (this.bytes[i] !== 0) return false;
      return true;
    }
    const end = (page + 1) * WORDS_PER_PAGE;
    for (let i = page * WORDS_PER_PAGE; i < end; i += 8) {
      if ((w[i]! | w[i + 1]! | w[i + 2]! | w[i + 3]! | w[i + 4]! | w[i + 5]! | w[i + 6]! | w[i + 7]!) !== 0) return false;
    }
    return true;
  }
}
