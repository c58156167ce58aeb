// A VM's worker thread takes tens of milliseconds to start (the thread, then the machine's
// modules) before it can build anything: measured 55-65 ms on an idle host, 85-115 ms beside a
// busy guest. A daemon keeps one started ahead of need, so a VM it creates, and above all the
// reservation of an incoming migration, which the source waits on, takes a thread that is
// already up. Only the thread is warm: it learns which VM to build from its first message.

import { Worker } from 'node:worker_threads';
import type { VmWorkerData } from './worker-protocol.js';

const WORKER_URL = new URL('./worker.js', import.meta.url);

/** Where a Vm gets its worker threads. */
export interface VmWorkerSource {
  /** A started worker that has not been told what to build yet. */
  take(): Worker;
}

/** A worker thread for one VM; it waits for its WorkerInit message. */
export function spawnVmWorker(name = 'ferry-vm', standby = false): Worker {
  // Workers inherit execArgv, and `node --input-type=module -e ...` would make the worker refuse
  // to start from a file. trackUnmanagedFds off: a TAP's fd is opened by the TAP's own thread
  // and closed by this worker, which Node would warn about on every close. Backends are closed
  // explicitly on every way out but a terminate() of a wedged worker, where the TAP leaks
  // regardless.
  const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'));
  return new Worker(WORKER_URL, { execArgv, name, trackUnmanagedFds: false, workerData: { standby } satisfies VmWorkerData });
}

/** How long after a take the next standby starts: not while the VM that took one is being built
 * (a migration's first round is the busiest time for both cores). */
const REFILL_DELAY_MS = 2_000;

/** Keeps one worker started and idle. A standby that fails or exits is replaced on the next take. */
export class StandbyWorkers implements VmWorkerSource {
  private standby: { readonly worker: Worker; readonly drop: () => void } | undefined;
  private refill: NodeJS.Timeout | undefined;
  private closed = false;

  constructor() {
    this.start();
  }

  take(): Worker {
    const s = this.standby;
    this.standby = undefined;
    if (!this.closed && !this.refill) {
      this.refill = setTimeout(() => { this.refill = undefined; this.start(); }, REFILL_DELAY_MS);
      this.refill.unref();
    }
    if (!s) return spawnVmWorker();
    s.worker.off('error', s.drop);
    s.worker.off('exit', s.drop);
    s.worker.ref();
    return s.worker;
  }

  /** Ends the standby thread; later takes spawn workers on demand. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.refill);
    this.refill = undefined;
    const s = this.standby;
    this.standby = undefined;
    if (s) await s.worker.terminate();
  }

  private start(): void {
    if (this.closed || this.standby) return;
    const worker = spawnVmWorker('ferry-vm', true);
    // An idle standby must not keep the process alive.
    worker.unref();
    const drop = (): void => { if (this.standby?.worker === worker) this.standby = undefined; };
    worker.on('error', drop);
    worker.once('exit', drop);
    this.standby = { worker, drop };
  }
}
