// Whether a guest page holds only zeros: what a snapshot leaves out, what a migration never
// sends, what a balloon free-page report is checked against. One test serves all three.

import { PAGE_SIZE } from './guest-memory.js';

const ZERO_PAGE = new Uint8Array(PAGE_SIZE);

/** Tests the pages of one RAM view (page 0 at its start). Made once per view: the Buffer over
 * it costs an allocation, which a per-page test run over all of RAM should not pay. */
export class ZeroPages {
  private readonly buf: Buffer;

  constructor(bytes: Uint8Array) {
    this.buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** A memcmp against a zero page: a few times faster than a word loop in JavaScript, which
   * matters because an idle VM's RAM is mostly zero pages, each read whole (an Agile swap-out
   * or a migration round over 512 MiB of them took ~150 ms with the loop). */
  isZero(page: number): boolean {
    const start = page * PAGE_SIZE;
    const end = Math.min(start + PAGE_SIZE, this.buf.length);
    return this.buf.compare(ZERO_PAGE, 0, end - start, start, end) === 0;
  }
}
