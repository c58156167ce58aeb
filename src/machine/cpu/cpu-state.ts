// The hart's saved state: every architectural register by name (never positional), so a
// snapshot stays readable and can evolve field by field.

/** 64-bit values are decimal strings: state objects stay JSON-safe. */
export type U64 = string;

export interface VcpuState {
  pc: U64;
  /** 0 = U, 1 = S, 3 = M. */
  priv: number;
  x: U64[];
  f: U64[];
  csr: CsrState;
  /** Bits of mip set by software and driven by devices; timer bits are derived. */
  mipSoftware: U64;
  mipLines: U64;
  /** CLINT compare value (M-mode timer). */
  mtimecmp: U64;
  /** Deadline programmed through SBI set_timer. */
  sbiTimecmp: U64;
  /** LR/SC reservation address, or 2^64-1 when none. */
  reservation: U64;
}

/** CSRs by name; stimecmp and menvcfg carry Sstc's state across a snapshot. */
export interface CsrState {
  mstatus: U64; medeleg: U64; mideleg: U64; mie: U64; mtvec: U64; mcounteren: U64;
  menvcfg: U64; mcountinhibit: U64; mscratch: U64; mepc: U64; mcause: U64; mtval: U64;
  stvec: U64; scounteren: U64; senvcfg: U64; sscratch: U64; sepc: U64; scause: U64; stval: U64;
  satp: U64; stimecmp: U64; fcsr: U64; minstret: U64;
}

/** CSR numbers, in the order they are restored: mstatus first (it gates the others' views),
 * satp after the trap registers, counters last. */
export const CSR_NUMBERS: { readonly [K in keyof CsrState]: number } = {
  mstatus: 0x300, medeleg: 0x302, mideleg: 0x303, mie: 0x304, mtvec: 0x305, mcounteren: 0x306,
  menvcfg: 0x30a, mcountinhibit: 0x320, mscratch: 0x340, mepc: 0x341, mcause: 0x342, mtval: 0x343,
  stvec: 0x105, scounteren: 0x106, senvcfg: 0x10a, sscratch: 0x140, sepc: 0x141, scause: 0x142,
  stval: 0x143, satp: 0x180, stimecmp: 0x14d, fcsr: 0x003, minstret: 0xb02,
};
