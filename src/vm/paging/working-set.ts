// Working-set estimate from the access log (Deshpande et al.'s Agile tracks it per VM): each
// epoch the log is harvested and every page's idle age either resets (touched) or grows.
// A page idle for `windowEpochs` epochs is cold: outside the working set.

export class WorkingSetTracker {
  private readonly idle: Uint16Array;
  private epochs = 0;

  constructor(readonly pageCount: number, readonly windowEpochs: number) {
    if (!Number.isInteger(windowEpochs) || windowEpochs < 1 || windowEpochs > 0xfffe) throw new RangeError(`window must be 1..65534 epochs, got ${windowEpochs}`);
    this.idle = new Uint16Array(pageCount);
  }

  /** Epochs observed so far: until `windowEpochs` have passed nothing is cold yet. */
  get observed(): number { return this.epochs; }

  observe(accessLog: Uint8Array): void {
    const idle = this.idle;
    for (let p = 0; p < idle.length; p++) {
      if (accessLog[p] !== 0) idle[p] = 0;
      else if (idle[p]! < 0xffff) idle[p]!++;
    }
    this.epochs++;
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
