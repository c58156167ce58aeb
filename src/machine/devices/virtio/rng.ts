// virtio-rng (virtio 1.2 §5.4): one queue of device-writable buffers, filled with entropy
// from the host's CSPRNG.

import { randomFillSync } from 'node:crypto';
import type { VirtioDevice, VirtioDeviceContext } from './device.js';
import { DEVICE_ID_RNG } from './constants.js';
import { writeChain } from './queue.js';
import { GuestMemory } from '../../memory/guest-memory.js';

/** Entropy handed out per request, at most: guests ask for small amounts. */
const MAX_REQUEST = 64 * 1024;

export type RngState = Record<string, never>;

export class VirtioRng implements VirtioDevice<RngState> {
  readonly name = 'rng';
  readonly deviceId = DEVICE_ID_RNG;
  readonly features = 0n;
  readonly queueSizes = [64];
  private ctx: VirtioDeviceContext | undefined;

  constructor(private readonly memory: GuestMemory) {}

  readConfig(): number { return 0; }
  writeConfig(): void {}
  activate(ctx: VirtioDeviceContext): void { this.ctx = ctx; }
  reset(): void { this.ctx = undefined; }

  notify(queue: number): void {
    const ctx = this.ctx;
    const q = ctx?.queues[queue];
    if (!ctx || !q) return;
    let used = false;
    for (let chain = q.pop(); chain; chain = q.pop()) {
      const want = Math.min(MAX_REQUEST, chain.writable.reduce((n, s) => n + s.len, 0));
      const bytes = randomFillSync(new Uint8Array(want));
      q.push(chain.head, writeChain(this.memory, chain.writable, bytes));
      used = true;
    }
    if (used) ctx.notifyUsed(queue);
  }

  save(): RngState { return {}; }
  restore(_s: RngState, ctx: VirtioDeviceContext | undefined): void { this.ctx = ctx; }
}
