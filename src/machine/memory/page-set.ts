// A set of guest pages kept as sorted, disjoint, non-adjacent runs. What the balloon holds
// (inflated pages, reported free ranges) is a few long runs, and a switch saves it: kept as
// runs, saving costs O(runs), where a map of a byte per page costs a scan of all of RAM's pages
// on the pause (milliseconds at 2 GiB, more while V8 has not optimized the scan).

/** Runs as [first, count] pairs, ascending and disjoint. */
export type PageRuns = number[];

export class PageSet {
  /** Run i is [starts[i], ends[i]); runs are ascending and never touch. */
  private starts: number[] = [];
  private ends: number[] = [];
  private pages = 0;

  /** Pages in the set. */
  get size(): number { return this.pages; }

  has(page: number): boolean {
    const k = upperBound(this.starts, page) - 1;
    return k >= 0 && page < this.ends[k]!;
  }

  /** Adds [first, first + count); returns how many of them were not in the set. */
  add(first: number, count = 1): number {
    if (count <= 0) return 0;
    const end = first + count;
    const i = lowerBound(this.ends, first);
    const j = upperBound(this.starts, end) - 1;
    if (i > j) {
      this.starts.splice(i, 0, first);
      this.ends.splice(i, 0, end);
      this.pages += count;
      return count;
    }
    let covered = 0;
    for (let k = i; k <= j; k++) covered += this.ends[k]! - this.starts[k]!;
    const start = Math.min(this.starts[i]!, first);
    const stop = Math.max(this.ends[j]!, end);
    this.starts.splice(i, j - i + 1, start);
    this.ends.splice(i, j - i + 1, stop);
    const added = stop - start - covered;
    this.pages += added;
    return added;
  }

  /** Removes [first, first + count); returns how many of them were in the set. */
  delete(first: number, count = 1): number {
    if (count <= 0) return 0;
    const end = first + count;
    const i = upperBound(this.ends, first);
    const j = lowerBound(this.starts, end) - 1;
    if (i > j) return 0;
    let covered = 0;
    for (let k = i; k <= j; k++) covered += this.ends[k]! - this.starts[k]!;
    const keptStarts: number[] = [];
    const keptEnds: number[] = [];
    if (this.starts[i]! < first) { keptStarts.push(this.starts[i]!); keptEnds.push(first); }
    if (this.ends[j]! > end) { keptStarts.push(end); keptEnds.push(this.ends[j]!); }
    let kept = 0;
    for (let k = 0; k < keptStarts.length; k++) kept += keptEnds[k]! - keptStarts[k]!;
    this.starts.splice(i, j - i + 1, ...keptStarts);
    this.ends.splice(i, j - i + 1, ...keptEnds);
    const removed = covered - kept;
    this.pages -= removed;
    return removed;
  }

  clear(): void {
    this.starts = [];
    this.ends = [];
    this.pages = 0;
  }

  runs(): PageRuns {
    const out: number[] = [];
    for (let k = 0; k < this.starts.length; k++) out.push(this.starts[k]!, this.ends[k]! - this.starts[k]!);
    return out;
  }

  /** Replaces the contents with runs already checked to be ascending and disjoint (they may
   * touch: touching runs are merged). */
  assign(runs: readonly number[]): void {
    this.clear();
    for (let k = 0; k < runs.length; k += 2) this.add(runs[k]!, runs[k + 1]!);
  }
}

/** First index whose value is >= x. */
function lowerBound(a: readonly number[], x: number): number {
  let lo = 0, hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < x) lo = mid + 1; else hi = mid;
  }
  return lo;
}

/** First index whose value is > x. */
function upperBound(a: readonly number[], x: number): number {
  let lo = 0, hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! <= x) lo = mid + 1; else hi = mid;
  }
  return lo;
}
