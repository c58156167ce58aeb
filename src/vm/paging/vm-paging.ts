// A VM's demand paging on the main thread: answers the worker's page faults through the page
// server, owns the VM's swap device and the Agile policy when the VM has one, and reports
// memory sizes for `ferry vm show`.

import type { GuestMemory } from '../../machine/memory/guest-memory.js';
import { NbdBackend } from '../../storage/nbd/client.js';
import { DeviceSpecError, parseDiskSpec } from '../devices.js';
import { PAGER_DONE, PAGER_FAILED } from '../worker-protocol.js';
import { PageServer } from './page-server.js';
import { ZeroPages } from '../../machine/memory/zero-pages.js';
import { SwapStore } from './swap.js';
import { AgileMemory, DEFAULT_AGILE_OPTIONS, type AgileOptions, type AgileWorkerPort } from './agile.js';
import { ABSENT_SWAP, PAGE_SIZE } from './marks.js';

export interface VmMemoryStats {
  readonly totalBytes: number;
  /** In host memory and holding data: neither absent nor all zero (a zero page costs the host
   * nothing until written, and a migration never sends it). */
  readonly residentBytes: number;
  /** On the swap device. */
  readonly swappedBytes: number;
  /** Touched within the Agile window; null without a swap device (not tracked). */
  readonly workingSetBytes: number | null;
  /** How long a page must go untouched to leave the working set (Agile widens it when evicted
   * pages come back soon); null without a swap device. */
  readonly workingSetWindowMs: number | null;
  /** Evicted pages whose write to the swap device is not yet durable. */
  readonly pendingSwapBytes: number;
  /** Why the Agile policy's last epoch failed, if it did (it retries every epoch). */
  readonly agileError?: string;
}

export interface PagingPort extends AgileWorkerPort {
  /** Answers an asynchronous (vCPU) fault. */
  answer(id: number, ok: boolean, error?: string): void;
}

export class VmPaging {
  readonly server: PageServer;
  readonly agile: AgileMemory | undefined;
  private readonly cell: Int32Array;

  private constructor(readonly mem: GuestMemory, control: SharedArrayBuffer, private readonly port: PagingPort, readonly swap: SwapStore | undefined, agile?: Partial<AgileOptions>) {
    this.server = new PageServer(mem);
    this.cell = new Int32Array(control);
    if (swap) {
      this.server.attach(ABSENT_SWAP, swap);
      this.agile = new AgileMemory(mem, swap, port, { ...DEFAULT_AGILE_OPTIONS, ...agile });
    }
  }

  /** Opens the swap device when the VM has one (`swap`: nbd://HOST:PORT[/EXPORT]). */
  static async open(mem: GuestMemory, control: SharedArrayBuffer, port: PagingPort, swapUrl: string | undefined, agile?: Partial<AgileOptions>): Promise<VmPaging> {
    let swap: SwapStore | undefined;
    if (swapUrl !== undefined) {
      const spec = parseDiskSpec(swapUrl);
      if (spec.kind !== 'nbd') throw new DeviceSpecError(`swap device '${swapUrl}' must be nbd://HOST:PORT[/EXPORT] (both hosts of a migration reach it)`);
      const device = await NbdBackend.connect({ host: spec.host, port: spec.port, exportName: spec.exportName });
      try {
        swap = new SwapStore(device, mem, swapUrl);
      } catch (e) {
        await device.close();
        throw e;
      }
    }
    return new VmPaging(mem, control, port, swap, agile);
  }

  /** A page-fault message from the worker. */
  onFault(id: number, first: number, count: number, sync: boolean): void {
    this.server.resolve(first, count).then(
      () => this.answer(id, sync, true),
      (e: unknown) => this.answer(id, sync, false, e instanceof Error ? e.message : String(e)),
    );
  }

  private answer(id: number, sync: boolean, ok: boolean, error?: string): void {
    if (!sync) {
      this.port.answer(id, ok, error);
      return;
    }
    Atomics.store(this.cell, 0, ok ? PAGER_DONE : PAGER_FAILED);
    Atomics.notify(this.cell, 0);
  }

  stats(): VmMemoryStats {
    const zero = new ZeroPages(this.mem.bytes);
    let resident = 0;
    let swapped = 0;
    for (let p = 0; p < this.mem.pageCount; p++) {
      const mark = this.mem.absent[p];
      if (mark === ABSENT_SWAP) swapped++;
      else if (mark === 0 && !zero.isZero(p)) resident++;
    }
    return {
      totalBytes: this.mem.ramSize,
      residentBytes: resident * PAGE_SIZE,
      swappedBytes: swapped * PAGE_SIZE,
      workingSetBytes: this.agile ? this.agile.tracker.workingSetPages() * PAGE_SIZE : null,
      workingSetWindowMs: this.agile ? this.agile.tracker.windowEpochs * this.agile.options.epochMs : null,
      pendingSwapBytes: (this.swap?.pendingPages ?? 0) * PAGE_SIZE,
      ...(this.agile?.error !== undefined ? { agileError: this.agile.error } : {}),
    };
  }

  async close(): Promise<void> {
    await this.agile?.stop();
    await this.swap?.drain().catch(() => undefined);
    await this.swap?.close();
  }
}
