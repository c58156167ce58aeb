// Page-level helpers shared by both ends.

import { PAGE_SIZE } from '../protocol/messages.js';

const WORDS_PER_PAGE = PAGE_SIZE / 4;

/** 32-bit words over guest RAM, for zero tests (RAM starts 4-byte aligned in the buffer). */
export function wordsOf(bytes: Uint8Array): Int32Array {
  return new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
}

/** Whether guest page `page` holds only zeros. Eight words per step: most non-zero pages are
 * told apart in the first step, zero pages cost one pass. */
export function isZeroPage(words: Int32Array, page: number): boolean {
  let i = page * WORDS_PER_PAGE;
  const end = i + WORDS_PER_PAGE;
  for (; i < end; i += 8) {
    if ((words[i]! | words[i + 1]! | words[i + 2]! | words[i + 3]! | words[i + 4]! | words[i + 5]! | words[i + 6]! | words[i + 7]!) !== 0) return false;
  }
  return true;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Lets the event loop run (API requests, incoming acks, a cancel) during long CPU-bound loops. */
export function yieldNow(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
