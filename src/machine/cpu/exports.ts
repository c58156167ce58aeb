// The typed surface of build/cpu.wasm (see src/machine/cpu/as/index.ts).

export interface CpuExports {
  layoutXRegs(): number;
  layoutFRegs(): number;
  layoutTlb(): number;
  layoutDirtyLog(): number;
  layoutAccessLog(): number;
  layoutAbsentMap(): number;
  layoutRamHost(): number;
  layoutRamBase(): bigint;
  init(ramBytes: bigint, hartId: bigint, sbiInMachine: number): void;
  enterSupervisor(entry: bigint, dtb: bigint): void;
  run(budget: number): number;
  getPc(): bigint;
  setPc(v: bigint): void;
  getPriv(): number;
  setPriv(p: number): void;
  getInstret(): bigint;
  getFatalCause(): bigint;
  getMissingPage(): bigint;
  getCsr(csr: number): bigint;
  setCsr(csr: number, v: bigint): void;
  getMtimecmp(): bigint;
  setMtimecmp(v: bigint): void;
  getSbiTimecmp(): bigint;
  setSbiTimecmp(v: bigint): void;
  getReservation(): bigint;
  setReservation(v: bigint): void;
  getMipHw(): bigint;
  getMipSw(): bigint;
  setMipSw(v: bigint): void;
  setMipHw(v: bigint): void;
  setIrqLine(bit: number, level: number): void;
  raiseSoftwareIrq(bit: number): void;
  requestExit(): void;
  nextTimerDeadline(): bigint;
  interruptPending(): number;
  tlbFlush(): void;
  tlbDropWrites(): void;
  /** Pages newly marked dirty by the hart since the last call; resets the count. */
  takeNewlyDirty(): number;
  fpExecute(insn: number): number;
  layoutRvcTable(): number;
  layoutCodeMap(): number;
  layoutJitCache(): number;
  layoutJitLens(): number;
  layoutJitCells(): number;
  layoutTlbMask(): number;
  layoutTlbBytes(): number;
  jitSlotBase(): number;
  jitEntries(): number;
  jitSetThreshold(t: number): void;
  jitThreshold(): number;
  jitGetRetired(): bigint;
  jitGetCompiled(): number;
  jitGetStale(): number;
  jitGetEvicted(): number;
  jitDropCache(): void;
  jitLoad(va: bigint, pc: bigint, size: number): bigint;
  jitStore(va: bigint, value: bigint, pc: bigint, size: number): void;
  jitMulh(a: bigint, b: bigint): bigint;
  jitMulhsu(a: bigint, b: bigint): bigint;
  jitMulhu(a: bigint, b: bigint): bigint;
}

/** Why run() returned (state.ts EXIT_*). */
export enum ExitReason {
  Budget = 0,
  Wfi = 1,
  Sbi = 2,
  Request = 3,
  Fatal = 4,
  /** The slice touched a page that is not in RAM (getMissingPage); fetch it and run again. */
  PageMissing = 5,
}

export interface CpuHostImports {
  hostTime(): number;
  mmioRead(pa: number, size: number): number;
  mmioWrite(pa: number, size: number, value: number): number;
}
