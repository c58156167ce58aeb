// Working-set estimate from the access log (Deshpande et al.'s Agile tracks it per VM): each
// epoch the log is harvested and every page's idle age either resets (touched) or grows.
// A page idle for `windowEpochs` epochs is cold: outside the working set.

export class WorkingSetTracker {
  private readonly idle: Uint16Array;
  private epochs = 0;

  private window: number;

  constructor(readonly pageCount: number, windowEpochs: number) {
    this.window = checkWindow(windowEpochs);
    this.idle = new Uint16Array(pageCount);
  }

  get windowEpochs(): number { return this.window; }

  /** Widens or narrows the window (the Agile policy backs off when evicted pages come back). */
  set windowEpochs(epochs: number) { this.window = checkWindow(epochs); }

  /** Epochs observed so far: until `windowEpochs` have passed nothing is cold yet. */
  get observed(): number { return this.epochs; }

  /**
   * Ages every page by one epoch, resetting the touched ones. Returns the late reuses: pages
   * touched after idling at least half the window but not the whole of it, the pages a window
   * half as wide would have called cold just before the guest came back to them.
   */
  observe(accessLog: Uint8Array): number {
    const idle = this.idle;
    const half = this.window >> 1;
    let late = 0;
    for (let p = 0; p < idle.length; p++) {
      const age = idle[p]!;
      if (accessLog[p] !== 0) {
        if (age >= half && age < this.window) late++;
        idle[p] = 0;
      } else if (age < 0xffff) {
        idle[p] = age + 1;
      }
    }
    this.epochs++;
    return late;
  }

  isCold(page: number): boolean {
    return this.epochs >= this.windowEpochs && this.idle[page]! >= this.windowEpochs;
  }

  /** Pages touched within the window. */
  workingSetPages(): number {
    if (this.epochs < this.windowEpochs) return this.pageCount;
    let n = 0;
    for (let p = 0; p < this.idle.length; p++) if (this.idle[p]! < this.windowEpochs) n++;
    return n;
  }
}

function checkWindow(epochs: number): number {
  if (!Number.isInteger(epochs) || epochs < 1 || epochs > 0xfffe) throw new RangeError(`window must be 1..65534 epochs, got ${epochs}`);
  return epochs;
}
