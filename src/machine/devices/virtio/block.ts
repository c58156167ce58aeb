// virtio-blk (virtio 1.2 §5.2) over a BlockBackend. Requests run asynchronously on the
// backend; completions return to the guest from the event loop, between vCPU slices.
// Backend failures become VIRTIO_BLK_S_IOERR for that request, never a VMM failure.

import type { VirtioDevice, VirtioDeviceContext } from './device.js';
import type { DescriptorChain, Segment } from './queue.js';
import { readChain, writeChain } from './queue.js';
import { DEVICE_ID_BLOCK } from './constants.js';
import { VirtioGuestError } from './errors.js';
import { GuestMemory } from '../../memory/guest-memory.js';
import type { BlockBackend } from '../../../storage/backend.js';
import { checkArray, checkUint } from '../../state-check.js';

const SECTOR = 512;
const F_SEG_MAX = 1n << 2n;
const F_RO = 1n << 5n;
const F_FLUSH = 1n << 9n;
const F_DISCARD = 1n << 13n;

const T_IN = 0;
const T_OUT = 1;
const T_FLUSH = 4;
const T_GET_ID = 8;
const T_DISCARD = 11;

const S_OK = 0;
const S_IOERR = 1;
const S_UNSUPP = 2;

const QUEUE_SIZE = 256;
const SEG_MAX = QUEUE_SIZE - 2;
const MAX_DISCARD_SECTORS = 0x3fff_ffff;
const MAX_DISCARD_SEGMENTS = 32;

export interface BlockState {
  /** Descriptor heads of requests taken from the queue but not yet completed: replayed on
   * restore (reads and writes are idempotent; a replayed flush is harmless). */
  inFlight: number[];
}

/** A request's data segments: what the device reads (writes) and fills (reads). */
interface RequestData {
  readonly readable: readonly Segment[];
  readonly writable: readonly Segment[];
}

export interface VirtioBlockOptions {
  /** The serial the guest reads with GET_ID (at most 20 bytes). */
  serial?: string;
  log?: (message: string) => void;
}

export class VirtioBlock implements VirtioDevice<BlockState> {
  readonly name = 'blk';
  readonly deviceId = DEVICE_ID_BLOCK;
  readonly features: bigint;
  readonly queueSizes = [QUEUE_SIZE];
  private ctx: VirtioDeviceContext | undefined;
  /** Bumped on reset so completions of abandoned requests are dropped. */
  private generation = 0;
  private readonly inFlight = new Set<number>();
  private idleWaiters: (() => void)[] = [];
  /** Quiesced: requests a restore brings back wait for unquiesce, since resubmitting reads
   * guest RAM (a migration's destination loads the state before its last pages land). */
  private held = false;
  private deferred: number[] = [];
  private readonly config = new DataView(new ArrayBuffer(64));
  private readonly idBytes: Uint8Array;
  private readonly log: (message: string) => void;

  constructor(private readonly memory: GuestMemory, private backend: BlockBackend, opts: VirtioBlockOptions = {}) {
    this.features = F_SEG_MAX | F_FLUSH | (backend.readOnly ? F_RO : 0n) | (backend.canDiscard ? F_DISCARD : 0n);
    this.idBytes = new TextEncoder().encode((opts.serial ?? 'ferry-disk').slice(0, 20));
    this.log = opts.log ?? ((m) => process.stderr.write(`ferry: ${m}\n`));
    const c = this.config;
    c.setBigUint64(0, BigInt(Math.floor(backend.size / SECTOR)), true); // capacity
    c.setUint32(12, SEG_MAX, true);
    c.setUint32(36, MAX_DISCARD_SECTORS, true);
    c.setUint32(40, MAX_DISCARD_SEGMENTS, true);
    c.setUint32(44, 1, true); // discard_sector_alignment
  }

  /** Requests not completed yet (a migration waits for zero before handing the disk over). */
  get pending(): number { return this.inFlight.size; }

  /** Resolves once no request is in flight. The vCPU must be paused, or new ones may start. */
  quiesce(): Promise<void> {
    this.held = true;
    if (this.inFlight.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  unquiesce(): void {
    this.held = false;
    const heads = this.deferred;
    this.deferred = [];
    const q = this.ctx?.queues[0];
    if (q) for (const head of heads) this.submit(q.chainAt(head));
  }

  private settled(): void {
    if (this.inFlight.size !== 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** Switches to another backend (e.g. the same NBD export opened on the destination). */
  replaceBackend(backend: BlockBackend): void { this.backend = backend; }

  readConfig(offset: number, size: 1 | 2 | 4): number {
    if (offset + size > this.config.byteLength) return 0;
    return size === 1 ? this.config.getUint8(offset) : size === 2 ? this.config.getUint16(offset, true) : this.config.getUint32(offset, true);
  }

  writeConfig(): void {
    // writeback toggling (F_CONFIG_WCE) is not offered: the config space is read-only.
  }

  activate(ctx: VirtioDeviceContext): void { this.ctx = ctx; }

  reset(): void {
    this.ctx = undefined;
    this.generation++;
    this.inFlight.clear();
    this.deferred = [];
    this.settled();
  }

  notify(queue: number): void {
    const q = this.ctx?.queues[queue];
    if (!q) return;
    for (let chain = q.pop(); chain; chain = q.pop()) this.submit(chain);
  }

  private submit(chain: DescriptorChain): void {
    const { header, data, status } = this.split(chain);
    const type = this.memory.readU32(header.addr);
    const sector = this.memory.readU64(header.addr + 8n);
    this.inFlight.add(chain.head);
    const gen = this.generation;
    this.execute(type, sector, data).then(
      ({ code, written }) => this.complete(gen, chain.head, status, code, written),
      (err: unknown) => {
        this.log(`virtio-blk: ${err instanceof Error ? err.message : String(err)}`);
        this.complete(gen, chain.head, status, S_IOERR, 0);
      });
  }

  /** Header (16 readable bytes) first, status (1 writable byte) last, data in between. */
  private split(chain: DescriptorChain): { header: Segment; status: bigint; data: RequestData } {
    const first = chain.readable[0];
    const lastW = chain.writable[chain.writable.length - 1];
    if (!first || first.len < 16) throw new VirtioGuestError('blk', 'request without a 16-byte header');
    if (!lastW || lastW.len < 1) throw new VirtioGuestError('blk', 'request without a status byte');
    const header = { addr: first.addr, len: 16 };
    const status = lastW.addr + BigInt(lastW.len - 1);
    // Data: what follows the header in the readable part, what precedes the status byte in the writable part.
    const readable = [...(first.len > 16 ? [{ addr: first.addr + 16n, len: first.len - 16 }] : []), ...chain.readable.slice(1)];
    const writable = [...chain.writable.slice(0, -1), ...(lastW.len > 1 ? [{ addr: lastW.addr, len: lastW.len - 1 }] : [])];
    return { header, status, data: { readable, writable } };
  }

  private async execute(type: number, sector: bigint, data: RequestData): Promise<{ code: number; written: number }> {
    const be = this.backend;
    const offset = Number(sector) * SECTOR;
    const inRange = (len: number) => sector <= BigInt(Number.MAX_SAFE_INTEGER) && offset + len <= be.size;
    switch (type) {
      case T_IN: {
        const len = data.writable.reduce((n, s) => n + s.len, 0);
        if (len % SECTOR !== 0 || !inRange(len)) return { code: S_IOERR, written: 0 };
        const bytes = await be.read(offset, len);
        return { code: S_OK, written: writeChain(this.memory, data.writable, bytes) };
      }
      case T_OUT: {
        const bytes = readChain(this.memory, data.readable);
        if (be.readOnly || bytes.length % SECTOR !== 0 || !inRange(bytes.length)) return { code: S_IOERR, written: 0 };
        await be.write(offset, bytes);
        return { code: S_OK, written: 0 };
      }
      case T_FLUSH:
        await be.flush();
        return { code: S_OK, written: 0 };
      case T_GET_ID:
        return { code: S_OK, written: writeChain(this.memory, data.writable, this.idBytes) };
      case T_DISCARD: {
        if (!be.canDiscard) return { code: S_UNSUPP, written: 0 };
        const segs = readChain(this.memory, data.readable);
        const dv = new DataView(segs.buffer, segs.byteOffset, segs.byteLength);
        for (let at = 0; at + 16 <= segs.length; at += 16) {
          const start = Number(dv.getBigUint64(at, true)) * SECTOR;
          const len = dv.getUint32(at + 8, true) * SECTOR;
          if (start + len > be.size) return { code: S_IOERR, written: 0 };
          await be.discard(start, len);
        }
        return { code: S_OK, written: 0 };
      }
      default:
        return { code: S_UNSUPP, written: 0 };
    }
  }

  private complete(gen: number, head: number, status: bigint, code: number, written: number): void {
    const ctx = this.ctx;
    if (gen !== this.generation || !ctx) return; // the device was reset meanwhile
    this.inFlight.delete(head);
    this.memory.writeU8(status, code);
    ctx.queues[0]!.push(head, written + 1);
    ctx.notifyUsed(0);
    this.settled();
  }

  save(): BlockState {
    return { inFlight: [...this.inFlight, ...this.deferred] };
  }

  restore(s: BlockState, ctx: VirtioDeviceContext | undefined): void {
    const heads = checkArray('blk', 'inFlight', s.inFlight).map((h, i) => checkUint('blk', `inFlight[${i}]`, h, QUEUE_SIZE - 1));
    this.reset();
    this.ctx = ctx;
    const q = ctx?.queues[0];
    if (!q) return;
    if (this.held) this.deferred = heads;
    else for (const head of heads) this.submit(q.chainAt(head));
  }
}
