// Scans of per-page byte maps (the dirty log, the absent map, the balloon's maps) a 32-bit word
// at a time. The maps are mostly uniform, and at 2 GiB a byte loop over one costs milliseconds
// that a switch, which pays for several of them, cannot spare.

/** Calls it takes V8 to optimize a scan of a 2 GiB map: measured, one costs 2-3 ms on each of
 * its first three calls and 0.15 ms from the fourth. Code on a switch's path is run this many
 * times ahead of it (Machine.rehearseSwitch, the sender's rehearsal). */
export const WARM_UP_CALLS = 4;

/** The map's whole words, or undefined when its offset is not word-aligned. */
function wordsOf(map: Uint8Array, pages: number): Uint32Array | undefined {
  return map.byteOffset % 4 === 0 ? new Uint32Array(map.buffer, map.byteOffset, pages >>> 2) : undefined;
}

function allWords(maps: readonly Uint8Array[], pages: number): Uint32Array[] | undefined {
  const out: Uint32Array[] = [];
  for (const m of maps) {
    const w = wordsOf(m, pages);
    if (w === undefined) return undefined;
    out.push(w);
  }
  return out;
}

/** Calls `fn` for each page below `pages`, ascending, at which any of the maps is non-zero. */
export function forEachNonZero(maps: readonly Uint8Array[], pages: number, fn: (page: number) => void): void {
  for (const m of maps) if (m.length < pages) throw new RangeError(`page map covers ${m.length} pages, need ${pages}`);
  const words = allWords(maps, pages);
  let p = 0;
  if (words !== undefined) {
    const n = pages >>> 2;
    for (let w = 0; w < n; w++) {
      let v = 0;
      for (let i = 0; i < words.length; i++) v |= words[i]![w]!;
      if (v === 0) continue;
      for (let b = w << 2, e = b + 4; b < e; b++) if (anyAt(maps, b)) fn(b);
    }
    p = n << 2;
  }
  for (; p < pages; p++) if (anyAt(maps, p)) fn(p);
}

function anyAt(maps: readonly Uint8Array[], p: number): boolean {
  for (let i = 0; i < maps.length; i++) if (maps[i]![p] !== 0) return true;
  return false;
}

/** Pages below `pages`, ascending, at which any of the maps is non-zero. */
export function nonZeroPages(maps: readonly Uint8Array[], pages: number): Uint32Array {
  const out: number[] = [];
  forEachNonZero(maps, pages, (p) => out.push(p));
  return Uint32Array.from(out);
}

/** How many pages below `pages` have a non-zero byte in any of the maps. */
export function countNonZero(maps: readonly Uint8Array[], pages: number): number {
  let n = 0;
  forEachNonZero(maps, pages, () => n++);
  return n;
}

/** Calls `fn(first, count)` for each maximal ascending run of pages whose byte is `value` (1-255). */
export function forEachRun(map: Uint8Array, value: number, fn: (first: number, count: number) => void): void {
  if (!(Number.isInteger(value) && value >= 1 && value <= 255)) throw new RangeError(`run value must be 1-255, got ${value}`);
  const pages = map.length;
  const words = wordsOf(map, pages);
  const wordEnd = words === undefined ? 0 : (pages >>> 2) << 2;
  const full = (value * 0x0101_0101) >>> 0;
  let p = 0;
  while (p < pages) {
    if (words !== undefined) while (p < wordEnd && (p & 3) === 0 && !hasByte(words[p >>> 2]!, full)) p += 4;
    if (p >= pages) break;
    if (map[p] !== value) { p++; continue; }
    const first = p;
    while (p < pages && (p & 3) !== 0 && map[p] === value) p++;
    if (words !== undefined) while (p < wordEnd && (p & 3) === 0 && words[p >>> 2] === full) p += 4;
    while (p < pages && map[p] === value) p++;
    fn(first, p - first);
  }
}

/** Whether any byte of `word` equals the byte repeated in `full` (the classic zero-byte test on
 * their XOR). */
function hasByte(word: number, full: number): boolean {
  const x = word ^ full;
  return ((x - 0x0101_0101) & ~x & 0x8080_8080) !== 0;
}
