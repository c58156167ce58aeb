// Just enough of the WebAssembly binary format to emit one translated block per module:
// LEB128 immediates, a function body builder, and the module around it.

export const I32 = 0x7f;
export const I64 = 0x7e;
export const VOID = 0x40;

/** Opcodes the translator emits (names as in the spec, dots as underscores). */
export const Op = {
  block: 0x02, if: 0x04, else: 0x05, end: 0x0b, br: 0x0c, br_if: 0x0d, return: 0x0f, call: 0x10,
  select: 0x1b, local_get: 0x20, local_set: 0x21, local_tee: 0x22,
  i32_load: 0x28, i64_load: 0x29, i64_load8_s: 0x30, i64_load8_u: 0x31, i64_load16_s: 0x32,
  i64_load16_u: 0x33, i64_load32_s: 0x34, i64_load32_u: 0x35, i32_store: 0x36, i64_store: 0x37,
  i64_store8: 0x3c, i64_store16: 0x3d, i64_store32: 0x3e,
  i32_const: 0x41, i64_const: 0x42,
  i32_eqz: 0x45, i32_eq: 0x46, i32_ne: 0x47, i32_le_u: 0x4d,
  i64_eqz: 0x50, i64_eq: 0x51, i64_ne: 0x52, i64_lt_s: 0x53, i64_lt_u: 0x54, i64_ge_s: 0x59, i64_ge_u: 0x5a,
  i32_add: 0x6a, i32_sub: 0x6b, i32_mul: 0x6c, i32_div_s: 0x6d, i32_div_u: 0x6e, i32_rem_s: 0x6f,
  i32_rem_u: 0x70, i32_and: 0x71, i32_or: 0x72, i32_xor: 0x73, i32_shl: 0x74, i32_shr_s: 0x75, i32_shr_u: 0x76,
  i64_add: 0x7c, i64_sub: 0x7d, i64_mul: 0x7e, i64_div_s: 0x7f, i64_div_u: 0x80, i64_rem_s: 0x81,
  i64_rem_u: 0x82, i64_and: 0x83, i64_or: 0x84, i64_xor: 0x85, i64_shl: 0x86, i64_shr_s: 0x87, i64_shr_u: 0x88,
  i32_wrap_i64: 0xa7, i64_extend_i32_s: 0xac, i64_extend_i32_u: 0xad,
  i64_extend8_s: 0xc2, i64_extend16_s: 0xc3, i64_extend32_s: 0xc4,
} as const;

export class Bytes {
  private buf: Uint8Array<ArrayBuffer>;
  length = 0;

  constructor(capacity = 256) { this.buf = new Uint8Array(capacity); }
  /** Empties the buffer, keeping its storage (the translator reuses one per block). */
  reset(): this { this.length = 0; return this; }

  byte(b: number): this {
    if (this.length === this.buf.length) {
      const n = new Uint8Array(this.buf.length * 2);
      n.set(this.buf);
      this.buf = n;
    }
    this.buf[this.length++] = b;
    return this;
  }
  bytes(bs: ArrayLike<number>): this {
    if (this.length + bs.length > this.buf.length) {
      const n = new Uint8Array(Math.max(this.buf.length * 2, this.length + bs.length));
      n.set(this.buf);
      this.buf = n;
    }
    for (let i = 0; i < bs.length; i++) this.buf[this.length++] = bs[i]!;
    return this;
  }
  u32(v: number): this {
    let x = v >>> 0;
    do {
      const b = x & 0x7f;
      x >>>= 7;
      this.byte(x !== 0 ? b | 0x80 : b);
    } while (x !== 0);
    return this;
  }
  /** Signed LEB128 of a 32-bit value. */
  s32(v: number): this {
    let x = v | 0;
    for (;;) {
      const b = x & 0x7f;
      x >>= 7;
      if ((x === 0 && (b & 0x40) === 0) || (x === -1 && (b & 0x40) !== 0)) return this.byte(b);
      this.byte(b | 0x80);
    }
  }
  /** Signed LEB128 of a 64-bit value (taken modulo 2^64); small ones skip BigInt. */
  s64(v: bigint | number): this {
    if (typeof v === 'number') return this.s32(v);
    if (v >= -0x8000_0000n && v < 0x8000_0000n) return this.s32(Number(v));
    let x = BigInt.asIntN(64, v);
    for (;;) {
      const b = Number(x & 0x7fn);
      x >>= 7n;
      if ((x === 0n && (b & 0x40) === 0) || (x === -1n && (b & 0x40) !== 0)) return this.byte(b);
      this.byte(b | 0x80);
    }
  }
  /** Length-prefixed copy of another buffer (a section or a function body). */
  sized(inner: Bytes): this {
    this.u32(inner.length);
    return this.bytes(inner.view());
  }
  name(s: string): this {
    this.u32(s.length);
    for (let i = 0; i < s.length; i++) this.byte(s.charCodeAt(i));
    return this;
  }
  view(): Uint8Array<ArrayBuffer> { return this.buf.subarray(0, this.length); }
}

export interface FuncType { params: number[]; results: number[] }
export interface FuncImport { module: string; name: string; type: number }

/** The type and import sections of a module that imports the shared memory and `imports`
 * (functions, by type index). They are the same for every batch, so they are built once. */
export function moduleHead(types: FuncType[], imports: FuncImport[], memoryMaxPages: number): Uint8Array {
  const out = new Bytes().bytes([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
  const t = new Bytes().u32(types.length);
  for (const ty of types) t.byte(0x60).u32(ty.params.length).bytes(ty.params).u32(ty.results.length).bytes(ty.results);
  out.byte(1).sized(t);
  const im = new Bytes().u32(imports.length + 1);
  im.name('env').name('memory').byte(0x02).byte(0x03).u32(1).u32(memoryMaxPages); // shared, min 1
  for (const i of imports) im.name(i.module).name(i.name).byte(0x00).u32(i.type);
  out.byte(2).sized(im);
  return out.view().slice();
}

/** `head`, then functions of type `bodyType` exported as "0", "1", ...: each has `locals`
 * and one of `bodies` (without its final end). `imported` is how many functions `head` imports. */
export function encodeModule(head: Uint8Array, imported: number, bodyType: number,
  locals: Array<[count: number, type: number]>, bodies: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Bytes(head.length + 64 + bodies.reduce((a, b) => a + b.length + 16, 0));
  out.bytes(head);
  const fs = new Bytes().u32(bodies.length);
  for (let i = 0; i < bodies.length; i++) fs.u32(bodyType);
  out.byte(3).sized(fs);
  const ex = new Bytes().u32(bodies.length);
  for (let i = 0; i < bodies.length; i++) ex.name(String(i)).byte(0x00).u32(imported + i);
  out.byte(7).sized(ex);
  const lh = new Bytes().u32(locals.length);
  for (const [n, t] of locals) lh.u32(n).byte(t);
  const code = new Bytes(out.length).u32(bodies.length);
  for (const b of bodies) code.u32(lh.length + b.length + 1).bytes(lh.view()).bytes(b).byte(Op.end);
  out.byte(10).sized(code);
  return out.view();
}
