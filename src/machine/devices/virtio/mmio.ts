// The virtio-mmio transport (virtio 1.2 §4.2, version 2 register layout). One instance per
// slot on the virt board; it hosts one device model.

import type { AccessSize, IrqLine, MmioDevice } from '../types.js';
import { GuestMemory } from '../../memory/guest-memory.js';
import { Virtqueue, QueueState } from './queue.js';
import type { VirtioDevice, VirtioDeviceContext } from './device.js';
import {
  Reg, VIRTIO_MAGIC, VIRTIO_MMIO_VERSION, VIRTIO_VENDOR_ID, F_VERSION_1, F_INDIRECT_DESC,
  STATUS_DRIVER_OK, STATUS_FEATURES_OK, STATUS_NEEDS_RESET, INT_USED_BUFFER, INT_CONFIG_CHANGE,
} from './constants.js';
import { checkArray, checkU64, checkUint } from '../../state-check.js';

export interface VirtioMmioState<D = unknown> {
  status: number;
  driverFeatures: string;
  deviceFeaturesSel: number;
  driverFeaturesSel: number;
  queueSel: number;
  interruptStatus: number;
  configGeneration: number;
  queues: QueueState[];
  device: D;
}

export type VirtioLogger = (message: string) => void;

const MASK32 = 0xffff_ffffn;

export class VirtioMmio implements MmioDevice {
  readonly name: string;
  private status = 0;
  private driverFeatures = 0n;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private queueSel = 0;
  private interruptStatus = 0;
  private configGeneration = 0;
  readonly queues: Virtqueue[];
  private readonly offered: bigint;
  private active = false;

  constructor(readonly device: VirtioDevice, private readonly memory: GuestMemory, private readonly irq: IrqLine,
    private readonly log: VirtioLogger = (m) => process.stderr.write(`ferry: ${m}\n`)) {
    this.name = `virtio-${device.name}`;
    this.offered = device.features | F_VERSION_1;
    this.queues = device.queueSizes.map((max) => new Virtqueue(max, memory, this.name, () => (this.driverFeatures & F_INDIRECT_DESC) !== 0n));
  }

  /** The context handed to the device; valid while the driver has it running. */
  readonly context: VirtioDeviceContext = {
    queues: [] as Virtqueue[],
    features: 0n,
    notifyUsed: (q) => this.notifyUsed(q),
    notifyConfigChange: () => this.raise(INT_CONFIG_CHANGE, true),
    fail: (e) => this.markBroken(e),
  };

  read(offset: number, size: AccessSize): number {
    if (offset >= Reg.Config) return this.device.readConfig(offset - Reg.Config, size);
    if (size !== 4) return 0;
    const q = this.queues[this.queueSel];
    switch (offset) {
      case Reg.MagicValue: return VIRTIO_MAGIC;
      case Reg.Version: return VIRTIO_MMIO_VERSION;
      case Reg.DeviceId: return this.device.deviceId;
      case Reg.VendorId: return VIRTIO_VENDOR_ID;
      case Reg.DeviceFeatures: return this.deviceFeaturesSel > 1 ? 0 : Number((this.offered >> BigInt(32 * this.deviceFeaturesSel)) & MASK32);
      case Reg.QueueNumMax: return q ? q.maxSize : 0;
      case Reg.QueueReady: return q?.ready ? 1 : 0;
      case Reg.InterruptStatus: return this.interruptStatus;
      case Reg.Status: return this.status;
      case Reg.ConfigGeneration: return this.configGeneration;
      default: return 0;
    }
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (offset >= Reg.Config) {
      this.device.writeConfig(offset - Reg.Config, size, value);
      return;
    }
    if (size !== 4) return;
    const v = value >>> 0;
    const q = this.queues[this.queueSel];
    switch (offset) {
      case Reg.DeviceFeaturesSel: this.deviceFeaturesSel = v; return;
      case Reg.DriverFeaturesSel: this.driverFeaturesSel = v; return;
      case Reg.DriverFeatures:
        if (this.driverFeaturesSel <= 1 && !(this.status & STATUS_FEATURES_OK)) {
          const shift = BigInt(32 * this.driverFeaturesSel);
          this.driverFeatures = (this.driverFeatures & ~(MASK32 << shift)) | (BigInt(v) << shift);
        }
        return;
      case Reg.QueueSel: this.queueSel = v; return;
      case Reg.QueueNum: if (q && !q.ready) q.size = v; return;
      case Reg.QueueReady: this.setQueueReady(v === 1); return;
      case Reg.QueueNotify: this.kick(v); return;
      case Reg.InterruptAck:
        this.interruptStatus &= ~v;
        if (this.interruptStatus === 0) this.irq.set(false);
        return;
      case Reg.Status: this.writeStatus(v & 0xff); return;
      case Reg.QueueDescLow: case Reg.QueueDescHigh:
      case Reg.QueueDriverLow: case Reg.QueueDriverHigh:
      case Reg.QueueDeviceLow: case Reg.QueueDeviceHigh:
        if (q && !q.ready) setAddressHalf(q, offset, v);
        return;
      default: return;
    }
  }

  private setQueueReady(ready: boolean): void {
    const q = this.queues[this.queueSel];
    if (!q) return;
    if (!ready) { q.ready = false; return; }
    try {
      q.validate();
      q.ready = true;
    } catch (e) {
      this.markBroken(e as Error);
    }
  }

  private writeStatus(v: number): void {
    if (v === 0) { this.reset(); return; }
    if ((v & STATUS_FEATURES_OK) && !(this.status & STATUS_FEATURES_OK)) {
      // The driver may only accept what was offered; otherwise FEATURES_OK does not stick.
      if ((this.driverFeatures & ~this.offered) !== 0n || !(this.driverFeatures & F_VERSION_1)) v &= ~STATUS_FEATURES_OK;
    }
    this.status = v | (this.status & STATUS_NEEDS_RESET);
    if ((v & STATUS_DRIVER_OK) && !this.active) this.activate();
  }

  private activate(): void {
    this.active = true;
    Object.assign(this.context, { queues: this.queues, features: this.driverFeatures });
    this.device.activate(this.context);
  }

  private reset(): void {
    this.device.reset();
    this.active = false;
    this.status = 0;
    this.driverFeatures = 0n;
    this.deviceFeaturesSel = 0;
    this.driverFeaturesSel = 0;
    this.queueSel = 0;
    this.interruptStatus = 0;
    this.irq.set(false);
    for (const q of this.queues) q.reset();
  }

  private kick(queue: number): void {
    if (!this.active || (this.status & STATUS_NEEDS_RESET) || queue >= this.queues.length) return;
    try {
      this.device.notify(queue);
    } catch (e) {
      this.markBroken(e as Error);
    }
  }

  private notifyUsed(queue: number): void {
    const q = this.queues[queue];
    if (q && q.ready && q.interruptSuppressed()) return;
    this.raise(INT_USED_BUFFER, false);
  }

  private raise(bit: number, configChange: boolean): void {
    if (configChange) this.configGeneration = (this.configGeneration + 1) >>> 0;
    this.interruptStatus |= bit;
    this.irq.set(true);
  }

  /** Guest error or unrecoverable device failure: log it, tell the driver the device needs a
   * reset (DEVICE_NEEDS_RESET + config interrupt), stop processing. The VMM carries on. */
  private markBroken(e: Error): void {
    this.log(`${this.name}: ${e.message}; device needs reset`);
    this.status |= STATUS_NEEDS_RESET;
    if (this.status & STATUS_DRIVER_OK) this.raise(INT_CONFIG_CHANGE, true);
  }

  get needsReset(): boolean { return (this.status & STATUS_NEEDS_RESET) !== 0; }

  save(): VirtioMmioState {
    return {
      status: this.status, driverFeatures: this.driverFeatures.toString(), deviceFeaturesSel: this.deviceFeaturesSel,
      driverFeaturesSel: this.driverFeaturesSel, queueSel: this.queueSel, interruptStatus: this.interruptStatus,
      configGeneration: this.configGeneration, queues: this.queues.map((q) => q.save()), device: this.device.save(),
    };
  }

  restore(s: VirtioMmioState): void {
    const n = this.name;
    const status = checkUint(n, 'status', s.status, 0xff);
    const driverFeatures = checkU64(n, 'driverFeatures', s.driverFeatures);
    const interruptStatus = checkUint(n, 'interruptStatus', s.interruptStatus, 3);
    const deviceFeaturesSel = checkUint(n, 'deviceFeaturesSel', s.deviceFeaturesSel, 0xffff_ffff);
    const driverFeaturesSel = checkUint(n, 'driverFeaturesSel', s.driverFeaturesSel, 0xffff_ffff);
    const queueSel = checkUint(n, 'queueSel', s.queueSel, 0xffff_ffff);
    const configGeneration = checkUint(n, 'configGeneration', s.configGeneration, 0xffff_ffff);
    const queues = checkArray(n, 'queues', s.queues, this.queues.length) as QueueState[];
    const scratch = queues.map((qs, i) => { const q = new Virtqueue(this.queues[i]!.maxSize, this.memory, n, () => false); q.restore(qs); return q; });
    // The device validates its own part; if it refuses, the transport must be left as it was.
    const previous = this.save();
    this.applyTransport(status, driverFeatures, deviceFeaturesSel, driverFeaturesSel, queueSel, configGeneration, interruptStatus, scratch.map((q) => q.save()));
    try {
      this.device.restore(s.device, this.active ? this.context : undefined);
    } catch (e) {
      this.applyTransport(previous.status, BigInt(previous.driverFeatures), previous.deviceFeaturesSel, previous.driverFeaturesSel,
        previous.queueSel, previous.configGeneration, previous.interruptStatus, previous.queues);
      throw e;
    }
    this.irq.set(this.interruptStatus !== 0);
  }

  private applyTransport(status: number, driverFeatures: bigint, deviceFeaturesSel: number, driverFeaturesSel: number,
    queueSel: number, configGeneration: number, interruptStatus: number, queues: readonly QueueState[]): void {
    Object.assign(this, { status, driverFeatures, deviceFeaturesSel, driverFeaturesSel, queueSel, configGeneration, interruptStatus });
    queues.forEach((q, i) => this.queues[i]!.restore(q));
    this.active = (status & STATUS_DRIVER_OK) !== 0;
    Object.assign(this.context, { queues: this.queues, features: this.driverFeatures });
  }
}

function setAddressHalf(q: Virtqueue, reg: number, v: number): void {
  const high = (reg & 4) !== 0;
  const key = reg < Reg.QueueDriverLow ? 'descAddr' : reg < Reg.QueueDeviceLow ? 'driverAddr' : 'deviceAddr';
  const old = q[key];
  q[key] = high ? (old & MASK32) | (BigInt(v) << 32n) : (old & ~MASK32) | BigInt(v);
}
