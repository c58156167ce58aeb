// What the SBI implementation needs from the hart. The machine implements SBI itself
// (no M-mode firmware): an `ecall` from S-mode exits the interpreter slice, the SBI handler
// runs in TypeScript and the hart resumes after the ecall.

export interface SbiHart {
  readonly hartId: number;
  /** Integer register x[i] as unsigned 64-bit. */
  getX(i: number): bigint;
  setX(i: number, value: bigint): void;
  /** Current guest mtime (ticks of the timebase). */
  readTime(): bigint;
  /** Programs the S-mode timer (what M-mode firmware would do with mtimecmp): STIP is
   * raised once time >= deadline, and cleared now. */
  setTimer(deadline: bigint): void;
  /** Raises a supervisor software interrupt (SSIP) on this hart. */
  raiseSoftwareInterrupt(): void;
  /** sfence.vma on this hart (all addresses, all ASIDs). */
  flushTlb(): void;
}

export type SbiOutcome =
  | { readonly kind: 'continue' }
  | { readonly kind: 'shutdown' }
  | { readonly kind: 'reboot' };
