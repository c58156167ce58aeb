// Flattened Device Tree (DTB) writer, format version 17 (last compatible 16) as in the
// Devicetree Specification ch. 5. The tree is built in memory first so properties can be set
// in any order and phandles allocated before the nodes that reference them are written.

import { FdtError } from './errors.js';

const FDT_MAGIC = 0xd00dfeed;
const FDT_BEGIN_NODE = 1;
const FDT_END_NODE = 2;
const FDT_PROP = 3;
const FDT_END = 9;
const HEADER_SIZE = 40;
const U64_MAX = (1n << 64n) - 1n;

const NODE_NAME = /^[A-Za-z0-9,._+-]{1,31}(@[A-Za-z0-9,._+-]+)?$/;
const PROP_NAME = /^[A-Za-z0-9,._+?#-]{1,31}$/;

export class FdtNode {
  private readonly props = new Map<string, Uint8Array>();
  private readonly kids = new Map<string, FdtNode>();
  private handle: number | undefined;

  constructor(readonly name: string, private readonly tree: DeviceTree) {}

  /** Adds a child; names must be unique among siblings. */
  addNode(name: string): FdtNode {
    if (!NODE_NAME.test(name)) throw new FdtError(`invalid node name "${name}"`);
    if (this.kids.has(name)) throw new FdtError(`duplicate node "${name}" under "${this.name || '/'}"`);
    const n = new FdtNode(name, this.tree);
    this.kids.set(name, n);
    return n;
  }

  child(name: string): FdtNode | undefined {
    return this.kids.get(name);
  }

  get children(): readonly FdtNode[] {
    return [...this.kids.values()];
  }

  get properties(): ReadonlyMap<string, Uint8Array> {
    return this.props;
  }

  /** This node's phandle, allocating one (and the "phandle" property) on first use. */
  phandle(): number {
    if (this.handle === undefined) {
      this.handle = this.tree.allocatePhandle();
      this.setU32('phandle', this.handle);
    }
    return this.handle;
  }

  /** A property with no value (a boolean such as "interrupt-controller" or "ranges"). */
  setEmpty(name: string): this { return this.setBytes(name, new Uint8Array(0)); }

  setU32(name: string, v: number): this { return this.setU32Array(name, [v]); }

  setU32Array(name: string, values: readonly number[]): this {
    const b = new Uint8Array(values.length * 4);
    const dv = new DataView(b.buffer);
    values.forEach((v, i) => {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new FdtError(`property ${name}: ${v} is not a u32`);
      dv.setUint32(i * 4, v);
    });
    return this.setBytes(name, b);
  }

  setU64(name: string, v: bigint): this { return this.setU64Array(name, [v]); }

  setU64Array(name: string, values: readonly bigint[]): this {
    const b = new Uint8Array(values.length * 8);
    const dv = new DataView(b.buffer);
    values.forEach((v, i) => {
      if (v < 0n || v > U64_MAX) throw new FdtError(`property ${name}: ${v} is not a u64`);
      dv.setBigUint64(i * 8, v);
    });
    return this.setBytes(name, b);
  }

  setString(name: string, v: string): this { return this.setStringList(name, [v]); }

  setStringList(name: string, values: readonly string[]): this {
    const parts = values.map((s) => {
      if (s.includes('\0')) throw new FdtError(`property ${name}: string contains NUL`);
      return new TextEncoder().encode(`${s}\0`);
    });
    const b = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) { b.set(p, o); o += p.length; }
    return this.setBytes(name, b);
  }

  /** Raw big-endian bytes; later sets of the same name replace the value in place. */
  setBytes(name: string, value: Uint8Array): this {
    if (!PROP_NAME.test(name)) throw new FdtError(`invalid property name "${name}"`);
    if (name === 'phandle' && this.handle !== undefined && this.props.has('phandle')) {
      throw new FdtError(`node "${this.name}" already has phandle ${this.handle}`);
    }
    this.props.set(name, value.slice());
    return this;
  }
}

export interface MemoryReservation {
  readonly address: bigint;
  readonly size: bigint;
}

export class DeviceTree {
  readonly root: FdtNode;
  private readonly reservations: MemoryReservation[] = [];
  private nextPhandle = 1;

  constructor() {
    this.root = new FdtNode('', this);
  }

  allocatePhandle(): number {
    return this.nextPhandle++;
  }

  /** An entry in the memory reservation block (kept out of the kernel's allocator). */
  reserve(address: bigint, size: bigint): void {
    if (address < 0n || size <= 0n || address + size - 1n > U64_MAX) {
      throw new FdtError(`invalid memory reservation 0x${address.toString(16)}+0x${size.toString(16)}`);
    }
    this.reservations.push({ address, size });
  }

  /** Looks a node up by absolute path, e.g. "/soc/serial@10000000". */
  node(path: string): FdtNode | undefined {
    if (path === '/') return this.root;
    let n: FdtNode | undefined = this.root;
    for (const part of path.split('/').slice(1)) n = n?.child(part);
    return n;
  }

  toBytes(bootCpuId = 0): Uint8Array {
    const strings = new StringTable();
    const struct = new ByteSink();
    emitNode(this.root, struct, strings);
    struct.u32(FDT_END);
    const structBytes = struct.bytes();
    const stringBytes = strings.bytes();

    const rsvOff = align(HEADER_SIZE, 8);
    const rsvSize = (this.reservations.length + 1) * 16;
    const structOff = align(rsvOff + rsvSize, 4);
    const stringsOff = structOff + structBytes.length;
    const total = align(stringsOff + stringBytes.length, 4);

    const out = new Uint8Array(total);
    const dv = new DataView(out.buffer);
    const header = [FDT_MAGIC, total, structOff, stringsOff, rsvOff, 17, 16, bootCpuId,
      stringBytes.length, structBytes.length];
    header.forEach((v, i) => dv.setUint32(i * 4, v));
    this.reservations.forEach((r, i) => {
      dv.setBigUint64(rsvOff + i * 16, r.address);
      dv.setBigUint64(rsvOff + i * 16 + 8, r.size);
    });
    out.set(structBytes, structOff);
    out.set(stringBytes, stringsOff);
    return out;
  }
}

function emitNode(n: FdtNode, out: ByteSink, strings: StringTable): void {
  out.u32(FDT_BEGIN_NODE);
  out.bytes0(new TextEncoder().encode(n.name));
  out.pad4();
  // The spec requires properties to precede subnodes.
  for (const [name, value] of n.properties) {
    out.u32(FDT_PROP);
    out.u32(value.length);
    out.u32(strings.offsetOf(name));
    out.raw(value);
    out.pad4();
  }
  for (const c of n.children) emitNode(c, out, strings);
  out.u32(FDT_END_NODE);
}

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Property names, each stored once. */
class StringTable {
  private readonly offsets = new Map<string, number>();
  private readonly sink = new ByteSink();

  offsetOf(name: string): number {
    let o = this.offsets.get(name);
    if (o === undefined) {
      o = this.sink.length;
      this.offsets.set(name, o);
      this.sink.bytes0(new TextEncoder().encode(name));
    }
    return o;
  }

  bytes(): Uint8Array { return this.sink.bytes(); }
}

class ByteSink {
  private buf = new Uint8Array(1024);
  length = 0;

  u32(v: number): void {
    this.ensure(4);
    new DataView(this.buf.buffer).setUint32(this.length, v);
    this.length += 4;
  }

  raw(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }

  /** Bytes then a NUL terminator. */
  bytes0(b: Uint8Array): void {
    this.raw(b);
    this.raw(new Uint8Array(1));
  }

  pad4(): void {
    this.raw(new Uint8Array(align(this.length, 4) - this.length));
  }

  bytes(): Uint8Array { return this.buf.slice(0, this.length); }

  private ensure(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }
}
