// The contract between the virtio-mmio transport and a device model (net, block, rng,
// balloon). The transport owns feature negotiation, status, queues and interrupts; the device
// owns its configuration space and what it does with buffers.

import type { Virtqueue } from './queue.js';

export interface VirtioDeviceContext {
  /** The device's queues, configured by the driver (valid once activated). */
  readonly queues: readonly Virtqueue[];
  /** Features both sides agreed on. */
  readonly features: bigint;
  /** Tells the driver buffers were used on `queue` (unless it suppressed interrupts). */
  notifyUsed(queue: number): void;
  /** Tells the driver the configuration space changed. */
  notifyConfigChange(): void;
  /** The device cannot go on (guest error or backend failure it cannot report otherwise). */
  fail(error: Error): void;
}

export interface VirtioDevice<S = unknown> {
  readonly name: string;
  readonly deviceId: number;
  /** Feature bits offered (the transport adds VIRTIO_F_VERSION_1). */
  readonly features: bigint;
  /** Maximum size of each queue; the length is the number of queues. */
  readonly queueSizes: readonly number[];
  readConfig(offset: number, size: 1 | 2 | 4): number;
  writeConfig(offset: number, size: 1 | 2 | 4, value: number): void;
  /** The driver set DRIVER_OK: start processing. */
  activate(ctx: VirtioDeviceContext): void;
  /** The driver kicked `queue`. Malformed chains throw VirtioGuestError. */
  notify(queue: number): void;
  /** Device reset (status 0): drop in-flight work, forget the context. */
  reset(): void;
  save(): S;
  restore(state: S, ctx: VirtioDeviceContext | undefined): void;
  /**
   * Stop writing guest memory on your own: finish in-flight work, then hold anything that
   * arrives from the backend until `unquiesce`. With the vCPU paused this leaves RAM and
   * device state still, so a migration can read a consistent image at leisure.
   */
  quiesce?(): Promise<void>;
  unquiesce?(): void;
}
