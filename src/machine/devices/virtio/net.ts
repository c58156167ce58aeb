// virtio-net (virtio 1.2 §5.1) over a NetBackend: one receive/transmit queue pair and a
// control queue. No checksum or segmentation offloads, so every frame the guest sends is a
// finished Ethernet frame and every frame it receives needs no fix-up beyond the header.

import { buildRarpAnnounce } from '../../../net/announce.js';
import type { VirtioDevice, VirtioDeviceContext } from './device.js';
import { DEVICE_ID_NET } from './constants.js';
import { readChain, writeChain, type DescriptorChain, type Virtqueue } from './queue.js';
import { VirtioGuestError } from './errors.js';
import { GuestMemory } from '../../memory/guest-memory.js';
import type { NetBackend } from '../../../net/backend.js';
import { checkArray, checkBool, checkUint } from '../../state-check.js';
import { DeviceStateError } from '../errors.js';

export const NET_F_MRG_RXBUF = 1n << 15n;
export const NET_F_MAC = 1n << 5n;
export const NET_F_STATUS = 1n << 16n;
export const NET_F_CTRL_VQ = 1n << 17n;
export const NET_F_GUEST_ANNOUNCE = 1n << 21n;

export const NET_S_LINK_UP = 1;
export const NET_S_ANNOUNCE = 2;

/** virtio_net_hdr_v1: VERSION_1 is always negotiated, so the header always has num_buffers. */
export const NET_HDR_SIZE = 12;
const HDR_NUM_BUFFERS = 10;

export const NET_CTRL_RX = 0;
export const NET_CTRL_MAC = 1;
export const NET_CTRL_ANNOUNCE = 3;
export const NET_CTRL_ANNOUNCE_ACK = 0;
export const NET_OK = 0;
export const NET_ERR = 1;

export const RX_QUEUE = 0;
export const TX_QUEUE = 1;
export const CTRL_QUEUE = 2;

const QUEUE_SIZE = 256;
/** Smallest frame worth delivering: an Ethernet header. */
const ETH_HLEN = 14;
/** Largest frame either way. No GSO is offered, so anything near this is already bogus; the cap
 * keeps a guest chain of many huge descriptors from making the host allocate gigabytes. */
export const MAX_FRAME = 65_550;
/** Control commands are a two-byte header plus a few bytes (a MAC table at most). */
const MAX_CTRL = 4096;
const DEFAULT_BACKLOG = 256;
/** Frames kept while the NIC is held (a switch: the source after its state was taken, the
 * destination until it runs). A switch lasts tens of ms; this holds a flood of minimum-size
 * frames at line rate for longer than that, and is bounded so a flood cannot grow it. */
export const HELD_BACKLOG = 4096;

export interface VirtioNetOptions {
  readonly backend: NetBackend;
  readonly mac: Uint8Array;
  /** Offer VIRTIO_NET_F_MRG_RXBUF (default true). */
  readonly mergeRxBuffers?: boolean;
  /** Frames held while the driver has no receive buffers posted; beyond this they are dropped. */
  readonly backlog?: number;
}

export interface VirtioNetStats {
  rxFrames: number;
  txFrames: number;
  /** Frames dropped because the backlog was full, the driver was not running, or they were
   * malformed (runt, oversized, or larger than the posted buffer). */
  rxDropped: number;
  txDropped: number;
}

export interface VirtioNetState {
  mac: string;
  status: number;
  broken: boolean;
  /** Frames received from the backend but not yet placed in guest buffers, base64. */
  backlog: string[];
  stats: VirtioNetStats;
}

export class VirtioNet implements VirtioDevice<VirtioNetState> {
  readonly name = 'net';
  readonly deviceId = DEVICE_ID_NET;
  readonly features: bigint;
  readonly queueSizes = [QUEUE_SIZE, QUEUE_SIZE, 64];
  readonly stats: VirtioNetStats = { rxFrames: 0, txFrames: 0, rxDropped: 0, txDropped: 0 };
  private mac: Uint8Array;
  private status = NET_S_LINK_UP;
  private readonly backend: NetBackend;
  private readonly backlogMax: number;
  private backlog: Uint8Array[] = [];
  private ctx: VirtioDeviceContext | undefined;
  /** Set once this device reported a guest error: the transport stops kicks, but frames from
   * the backend keep arriving and must not touch the rings until the driver resets us. */
  private broken = false;
  /** While set, received frames wait in the backlog instead of landing in guest buffers. */
  private held = false;
  /** Backlog frames from this index on arrived after the state was taken (markCarry). */
  private carryFrom: number | undefined;
  /** Frames dropped while held (a full backlog), since markCarry or the last takeCarried. */
  private heldDropped = 0;
  private nextTransmit: (() => void) | undefined;

  constructor(private readonly memory: GuestMemory, opts: VirtioNetOptions) {
    if (opts.mac.length !== 6) throw new RangeError('a MAC address has 6 bytes');
    this.mac = Uint8Array.from(opts.mac);
    this.backend = opts.backend;
    this.backlogMax = opts.backlog ?? DEFAULT_BACKLOG;
    this.features = NET_F_MAC | NET_F_STATUS | NET_F_CTRL_VQ | NET_F_GUEST_ANNOUNCE | ((opts.mergeRxBuffers ?? true) ? NET_F_MRG_RXBUF : 0n);
    this.backend.onReceive((frame) => this.receive(frame));
  }

  /** Frames waiting for receive buffers. */
  get pendingFrames(): number { return this.backlog.length; }
  get announcing(): boolean { return (this.status & NET_S_ANNOUNCE) !== 0; }

  private get merge(): boolean { return ((this.ctx?.features ?? 0n) & NET_F_MRG_RXBUF) !== 0n; }

  readConfig(offset: number, size: 1 | 2 | 4): number {
    // virtio_net_config: mac[6], status u16, max_virtqueue_pairs u16 (little-endian).
    const cfg = new Uint8Array(10);
    cfg.set(this.mac, 0);
    cfg[6] = this.status & 0xff;
    cfg[7] = this.status >> 8;
    cfg[8] = 1;
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = (v << 8) | (cfg[offset + i] ?? 0);
    return v >>> 0;
  }

  /** With VERSION_1 the whole configuration space is read-only for the driver. */
  writeConfig(): void {}

  activate(ctx: VirtioDeviceContext): void {
    this.ctx = ctx;
    this.broken = false;
  }

  reset(): void {
    this.ctx = undefined;
    this.broken = false;
    // A reset NIC has no receive buffers; what was queued for the old driver instance is stale.
    this.backlog = [];
    this.status &= ~NET_S_ANNOUNCE;
  }

  /**
   * Asks the guest to announce itself (gratuitous ARP / unsolicited NA) after a migration:
   * sets VIRTIO_NET_S_ANNOUNCE and raises a configuration change. The driver answers with
   * VIRTIO_NET_CTRL_ANNOUNCE_ACK, which clears the bit. Returns false if the driver did not
   * negotiate GUEST_ANNOUNCE (the VMM must then send RARPs on the guest's behalf).
   */
  /** The VMM's own announcement after a move (works whatever the guest driver does): a RARP
   * from the NIC's MAC, so the LAN's switches learn its new port. */
  sendRarp(): void {
    this.backend.send(buildRarpAnnounce(this.mac));
  }

  announce(): boolean {
    const ctx = this.ctx;
    if (!ctx || this.broken || !(ctx.features & NET_F_GUEST_ANNOUNCE)) return false;
    this.status |= NET_S_ANNOUNCE;
    ctx.notifyConfigChange();
    return true;
  }

  notify(queue: number): void {
    if (!this.ctx || this.broken) return;
    try {
      if (queue === RX_QUEUE) this.flush();
      else if (queue === TX_QUEUE) this.transmit();
      else if (queue === CTRL_QUEUE) this.control();
    } catch (e) {
      // The transport marks NEEDS_RESET; remember it so backend traffic stops touching rings.
      this.broken = true;
      throw e;
    }
  }

  /** Takes a frame from the backend (or carried from a migration's source); false if dropped. */
  private receive(frame: Uint8Array): boolean {
    // A held NIC keeps frames even before a driver exists: a migration's destination holds
    // what arrives for the guest until its state is loaded and it runs.
    if ((!this.ctx && !this.held) || this.broken || frame.length < ETH_HLEN || frame.length > MAX_FRAME) {
      this.stats.rxDropped++;
      return false;
    }
    if (this.backlog.length >= (this.held ? HELD_BACKLOG : this.backlogMax)) {
      this.stats.rxDropped++;
      if (this.held) this.heldDropped++;
      return false;
    }
    // Copied: the backend may reuse its buffer once we return.
    this.backlog.push(frame.slice());
    this.kickBacklog();
    return true;
  }

  /** Frames that arrive from now on are kept (up to HELD_BACKLOG) rather than written to guest
   * memory. Nothing else writes RAM without a kick, so the NIC is then still. */
  quiesce(): Promise<void> {
    this.held = true;
    return Promise.resolve();
  }

  unquiesce(): void {
    this.held = false;
    this.carryFrom = undefined;
    this.kickBacklog();
  }

  /** A migration's source took the NIC's state: frames from now on are not in it, and go to
   * the destination through takeCarried instead. */
  markCarry(): void {
    this.carryFrom = this.backlog.length;
    this.heldDropped = 0;
  }

  /** The frames that arrived since markCarry (removed from the backlog), and how many were
   * dropped meanwhile because the held backlog was full. */
  takeCarried(): { frames: Uint8Array[]; dropped: number } {
    const from = this.carryFrom ?? this.backlog.length;
    const frames = this.backlog.splice(from);
    const dropped = this.heldDropped;
    this.heldDropped = 0;
    return { frames, dropped };
  }

  /** Frames dropped while held since markCarry or the last takeCarried (a full backlog). */
  get heldDrops(): number { return this.heldDropped; }

  /** Frames carried from a migration's source, delivered as if they had arrived here. */
  inject(frames: readonly Uint8Array[]): { delivered: number; dropped: number } {
    let delivered = 0;
    for (const f of frames) if (this.receive(f)) delivered++;
    return { delivered, dropped: frames.length - delivered };
  }

  /** Calls `listener` once, when the guest next transmits a frame. */
  onNextTransmit(listener: () => void): void {
    this.nextTransmit = listener;
  }

  /** Moves backlog frames into posted receive buffers, in order, until either runs out. */
  private flush(): void {
    if (this.held) return;
    const ctx = this.ctx!;
    const q = ctx.queues[RX_QUEUE];
    if (!q?.ready || this.backlog.length === 0) return;
    let used = false;
    try {
      while (this.backlog.length > 0) {
        const r = this.merge ? this.placeMerged(q, this.backlog[0]!) : this.placeSingle(q, this.backlog[0]!);
        if (r === 'no-buffers') break;
        this.backlog.shift();
        used = true;
        if (r === 'placed') this.stats.rxFrames++;
        else this.stats.rxDropped++;
      }
    } finally {
      if (used) ctx.notifyUsed(RX_QUEUE);
    }
  }

  /** Without MRG_RXBUF each frame takes exactly one chain. */
  private placeSingle(q: Virtqueue, frame: Uint8Array): 'placed' | 'dropped' | 'no-buffers' {
    const chain = q.pop();
    if (!chain) return 'no-buffers';
    const room = rxRoom(chain);
    if (room < NET_HDR_SIZE + frame.length) {
      // Drivers post buffers sized for the MTU; a bigger frame is the host's problem, not the
      // guest's. Hand the buffer back empty (the driver counts a length error and reposts).
      q.push(chain.head, 0);
      return 'dropped';
    }
    q.push(chain.head, this.writeFrame(chain, frame, 1));
    return 'placed';
  }

  /** With MRG_RXBUF a frame may span several chains; num_buffers in the first header says how
   * many. All of them must be available, else the frame waits: chains already taken are put
   * back by rewinding the ring index (they were never returned, so the driver still sees them
   * as posted and has not reused their ring slots). */
  private placeMerged(q: Virtqueue, frame: Uint8Array): 'placed' | 'dropped' | 'no-buffers' {
    const start = q.lastAvailIdx;
    const chains: DescriptorChain[] = [];
    let room = 0;
    const need = NET_HDR_SIZE + frame.length;
    while (room < need) {
      const chain = q.pop();
      if (!chain) {
        q.lastAvailIdx = start;
        // A full ring that still cannot hold the frame never will: drop it rather than let it
        // block everything behind it.
        return chains.length >= q.size ? 'dropped' : 'no-buffers';
      }
      room += rxRoom(chain);
      chains.push(chain);
    }
    const data = new Uint8Array(need);
    data.set(frame, NET_HDR_SIZE);
    new DataView(data.buffer).setUint16(HDR_NUM_BUFFERS, chains.length, true);
    let at = 0;
    for (const chain of chains) {
      const n = writeChain(this.memory, chain.writable, data.subarray(at));
      at += n;
      q.push(chain.head, n);
    }
    return 'placed';
  }

  private writeFrame(chain: DescriptorChain, frame: Uint8Array, numBuffers: number): number {
    const data = new Uint8Array(NET_HDR_SIZE + frame.length);
    data.set(frame, NET_HDR_SIZE);
    new DataView(data.buffer).setUint16(HDR_NUM_BUFFERS, numBuffers, true);
    return writeChain(this.memory, chain.writable, data);
  }

  private transmit(): void {
    const ctx = this.ctx!;
    const q = ctx.queues[TX_QUEUE]!;
    let used = false;
    try {
      for (let chain = q.pop(); chain; chain = q.pop()) {
        if (chain.writable.length > 0) throw new VirtioGuestError('virtio-net', 'transmit chain has device-writable descriptors');
        const len = chain.readable.reduce((n, s) => n + s.len, 0);
        if (len < NET_HDR_SIZE) throw new VirtioGuestError('virtio-net', `transmit chain of ${len} bytes has no virtio-net header`);
        // Returned before the backend sees the frame: the backend copies or sends synchronously.
        if (len - NET_HDR_SIZE < ETH_HLEN || len - NET_HDR_SIZE > MAX_FRAME) {
          this.stats.txDropped++;
        } else {
          const bytes = readChain(this.memory, chain.readable);
          this.backend.send(bytes.subarray(NET_HDR_SIZE));
          this.stats.txFrames++;
          const listener = this.nextTransmit;
          this.nextTransmit = undefined;
          listener?.();
        }
        q.push(chain.head, 0);
        used = true;
      }
    } finally {
      if (used) ctx.notifyUsed(TX_QUEUE);
    }
  }

  private control(): void {
    const ctx = this.ctx!;
    const q = ctx.queues[CTRL_QUEUE]!;
    let used = false;
    try {
      for (let chain = q.pop(); chain; chain = q.pop()) {
        const inLen = chain.readable.reduce((n, s) => n + s.len, 0);
        const outLen = chain.writable.reduce((n, s) => n + s.len, 0);
        if (inLen < 2 || inLen > MAX_CTRL || outLen < 1) {
          throw new VirtioGuestError('virtio-net', `control chain with ${inLen} readable and ${outLen} writable bytes`);
        }
        const cmd = readChain(this.memory, chain.readable);
        const ack = this.command(cmd[0]!, cmd[1]!);
        q.push(chain.head, writeChain(this.memory, chain.writable, Uint8Array.of(ack)));
        used = true;
      }
    } finally {
      if (used) ctx.notifyUsed(CTRL_QUEUE);
    }
  }

  private command(cls: number, cmd: number): number {
    switch (cls) {
      // Receive filtering and MAC tables: we deliver everything the backend gives us, which
      // is a superset of any filter, so accepting is honest enough.
      case NET_CTRL_RX:
      case NET_CTRL_MAC:
        return NET_OK;
      case NET_CTRL_ANNOUNCE:
        if (cmd !== NET_CTRL_ANNOUNCE_ACK) return NET_ERR;
        this.status &= ~NET_S_ANNOUNCE;
        return NET_OK;
      default:
        return NET_ERR;
    }
  }

  save(): VirtioNetState {
    return {
      mac: [...this.mac].map((b) => b.toString(16).padStart(2, '0')).join(':'),
      status: this.status,
      broken: this.broken,
      backlog: this.backlog.map((f) => Buffer.from(f.buffer, f.byteOffset, f.length).toString('base64')),
      stats: { ...this.stats },
    };
  }

  restore(s: VirtioNetState, ctx: VirtioDeviceContext | undefined): void {
    const n = 'virtio-net';
    if (typeof s.mac !== 'string' || !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(s.mac)) throw new DeviceStateError(n, 'field mac must be aa:bb:cc:dd:ee:ff');
    const mac = Uint8Array.from(s.mac.split(':'), (p) => parseInt(p, 16));
    const status = checkUint(n, 'status', s.status, NET_S_LINK_UP | NET_S_ANNOUNCE);
    const broken = checkBool(n, 'broken', s.broken);
    const backlog = checkArray(n, 'backlog', s.backlog).map((f, i) => {
      if (typeof f !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(f)) throw new DeviceStateError(n, `field backlog[${i}] must be base64`);
      const bytes = new Uint8Array(Buffer.from(f, 'base64'));
      if (bytes.length < ETH_HLEN || bytes.length > MAX_FRAME) throw new DeviceStateError(n, `field backlog[${i}] is not a frame`);
      return bytes;
    });
    if (backlog.length > this.backlogMax) throw new DeviceStateError(n, `backlog of ${backlog.length} frames exceeds ${this.backlogMax}`);
    const st = s.stats as Partial<VirtioNetStats> | undefined;
    const stats = {
      rxFrames: checkUint(n, 'stats.rxFrames', st?.rxFrames, Number.MAX_SAFE_INTEGER),
      txFrames: checkUint(n, 'stats.txFrames', st?.txFrames, Number.MAX_SAFE_INTEGER),
      rxDropped: checkUint(n, 'stats.rxDropped', st?.rxDropped, Number.MAX_SAFE_INTEGER),
      txDropped: checkUint(n, 'stats.txDropped', st?.txDropped, Number.MAX_SAFE_INTEGER),
    };
    // The MAC travels with the guest: its driver read it at probe time and keeps using it.
    this.mac = mac;
    this.status = status;
    this.broken = broken;
    // A held NIC (a migration's destination) keeps what reached it before the state: those
    // frames arrived after the ones the state holds.
    const early = this.held ? this.backlog : [];
    const kept = early.slice(0, Math.max(0, HELD_BACKLOG - backlog.length));
    this.heldDropped += early.length - kept.length;
    this.backlog = [...backlog, ...kept];
    Object.assign(this.stats, stats);
    this.ctx = ctx;
    // Frames that arrived on the destination before restore were dropped (no driver yet); the
    // restored backlog goes out as soon as there is somewhere to put it.
    if (ctx && !broken) queueMicrotask(() => this.kickBacklog());
  }

  /** Delivers the backlog outside a driver kick: a guest error found here has nobody else to
   * report it, so the device fails itself. */
  private kickBacklog(): void {
    if (!this.ctx || this.broken) return;
    try {
      this.flush();
    } catch (e) {
      this.broken = true;
      this.ctx.fail(e as Error);
    }
  }
}

/** Writable bytes of a receive chain; a chain with readable parts or no room for the header is
 * not a receive buffer. */
function rxRoom(chain: DescriptorChain): number {
  if (chain.readable.length > 0) throw new VirtioGuestError('virtio-net', 'receive chain has device-readable descriptors');
  const room = chain.writable.reduce((n, s) => n + s.len, 0);
  if (room < NET_HDR_SIZE) throw new VirtioGuestError('virtio-net', `receive buffer of ${room} bytes cannot hold the header`);
  return room;
}
