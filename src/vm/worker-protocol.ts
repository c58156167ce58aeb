// Messages between a Vm (main thread) and its worker (worker.ts). Kept apart from the worker so
// importing the types does not start a VM.

import type { MemoryLayout } from '../machine/memory/guest-memory.js';
import type { Eviction, MachineState } from '../machine/boot/machine.js';
import type { ThrottleStats, VcpuThrottle } from '../machine/boot/throttle.js';
import type { ActivationTimes, CarriedFrames, VmConfig } from './types.js';

/** workerData. A standby (worker-pool.ts) also starts its NIC's TAP thread while it waits. */
export interface VmWorkerData {
  readonly standby: boolean;
}

/** What to build, the worker's first message. `incoming` builds an empty machine for a
 * migration to fill. A message rather than workerData, because the thread may be started before
 * the VM it will run is known (worker-pool.ts). */
export interface WorkerInit {
  readonly config: VmConfig;
  readonly incoming: boolean;
  /** An Int32Array cell the main thread sets after posting: the busy vCPU loop then yields to
   * the worker's event loop at its next slice boundary (see MachineOptions.attention). */
  readonly attention: SharedArrayBuffer;
}
//
// Requests carry an id and get exactly one reply with that id. Everything else the worker says
// is unsolicited: console output, machine status, guest exit, progress, a crash.

/** What the worker is doing with its machine (for diagnostics; the lifecycle state is the
 * main thread's). */
export type WorkerStatus = 'starting' | 'ready' | 'running' | 'paused' | 'stopped';

export type WorkerRequest =
  /** Boots the freshly built machine. */
  | { readonly type: 'boot'; readonly id: number }
  | { readonly type: 'pause'; readonly id: number }
  | { readonly type: 'resume'; readonly id: number }
  /** Stops the machine (if running) and closes the device backends; the worker may then be
   * terminated without leaking host resources. */
  | { readonly type: 'stop'; readonly id: number }
  /** Writes a snapshot of the paused machine. */
  | { readonly type: 'snapshot'; readonly id: number; readonly file: string }
  /** Loads a snapshot into the freshly built, never run machine; it stays paused. */
  | { readonly type: 'restore'; readonly id: number; readonly file: string }
  /** Shares guest RAM and the dirty log (one SharedArrayBuffer) with the main thread. */
  | { readonly type: 'memory'; readonly id: number }
  /** Copies and clears the dirty log between two slices. */
  | { readonly type: 'harvest-dirty'; readonly id: number }
  /** Source, as a migration begins: runs save() and its checks once, unused, so the freeze
   * runs compiled code (Machine.rehearseSwitch). */
  | { readonly type: 'rehearse-switch'; readonly id: number }
  /** Pauses, drains in-flight I/O, flushes disks, holds NIC input, then harvests the dirty log
   * and saves the machine state in one step: RAM stays still until `thaw`. */
  | { readonly type: 'freeze'; readonly id: number }
  /** Undoes freeze (releases held NIC input) and resumes the guest if `resume`. */
  | { readonly type: 'thaw'; readonly id: number; readonly resume: boolean }
  /** Loads a migrated MachineState into the incoming machine (RAM already written); it stays paused. */
  | { readonly type: 'load-state'; readonly id: number; readonly state: MachineState }
  /** Runs the incoming machine after its state loaded: releases the NICs' held input and
   * announces the VM's new place on the LAN. */
  | { readonly type: 'activate'; readonly id: number }
  /** Source, after the commit point: the NIC frames that arrived since freeze (not in its state). */
  | { readonly type: 'take-frames'; readonly id: number }
  /** Destination: frames carried from the source, delivered to NIC `nic`. */
  | { readonly type: 'inject-frames'; readonly id: number; readonly nic: number; readonly frames: readonly Uint8Array[] }
  /** Destination: when the activated guest first sent a frame and the VMM first announced it. */
  | { readonly type: 'switch-times'; readonly id: number }
  /** Copies and clears the access log between two slices (working-set tracking). */
  | { readonly type: 'harvest-access'; readonly id: number }
  /** Takes pages out of RAM between two slices, marked absent with `mark` (see src/vm/paging). */
  | { readonly type: 'evict'; readonly id: number; readonly pages: readonly number[]; readonly mark: number }
  /** Counts pages dirtied per interval (the writable working set over time). */
  | { readonly type: 'wws'; readonly id: number; readonly intervalMs: number; readonly samples: number }
  /** Slows the vCPU (a non-converging migration) or, with null, lets it run freely. */
  | { readonly type: 'throttle'; readonly id: number; readonly setting: VcpuThrottle | null };

export type WorkerRequestType = WorkerRequest['type'];

export type ToWorker =
  | { readonly type: 'init'; readonly init: WorkerInit }
  | WorkerRequest
  | { readonly type: 'console-input'; readonly bytes: Uint8Array }
  /** Answers an asynchronous page-fault: the pages are in RAM (ok) or cannot be had. */
  | { readonly type: 'page-ready'; readonly id: number; readonly ok: boolean; readonly error?: string };

export interface WireError {
  readonly code: string;
  readonly message: string;
}

/** What a successful reply carries, by request type. */
export interface ReplyResults {
  boot: undefined;
  pause: undefined;
  resume: undefined;
  stop: undefined;
  snapshot: { readonly bytes: number; readonly ms: number };
  restore: { readonly bytes: number; readonly ms: number };
  /** `pagerControl`: an Int32Array cell the main thread sets to answer a synchronous fault
   * (PAGER_DONE or PAGER_FAILED) while the worker waits on it. */
  memory: { readonly buffer: SharedArrayBuffer; readonly layout: MemoryLayout; readonly pagerControl: SharedArrayBuffer };
  'harvest-dirty': { readonly log: Uint8Array };
  'harvest-access': { readonly log: Uint8Array };
  'rehearse-switch': undefined;
  evict: Eviction;
  /** `pausedAtMs`: wall clock (epoch ms) when the vCPU stopped. */
  freeze: { readonly log: Uint8Array; readonly accessLog: Uint8Array; readonly state: MachineState; readonly wasRunning: boolean; readonly quiesceMs: number; readonly pausedAtMs: number };
  thaw: undefined;
  'load-state': undefined;
  /** `resumedAtMs`: wall clock when the vCPU loop started again. */
  activate: { readonly resumedAtMs: number };
  'take-frames': CarriedFrames;
  'inject-frames': { readonly delivered: number; readonly dropped: number };
  'switch-times': ActivationTimes;
  wws: { readonly dirtyPages: readonly number[]; readonly intervalMs: readonly number[] };
  throttle: ThrottleStats;
}

export type WorkerReply =
  | { readonly type: 'reply'; readonly id: number; readonly ok: true; readonly result?: ReplyResults[WorkerRequestType] }
  | { readonly type: 'reply'; readonly id: number; readonly ok: false; readonly error: WireError };

/** How the guest ended on its own (not by a stop request). */
export type GuestExit =
  | { readonly kind: 'poweroff' }
  | { readonly kind: 'reboot' }
  | { readonly kind: 'fail'; readonly code: number }
  | { readonly kind: 'fatal'; readonly cause: string; readonly pc: string }
  | { readonly kind: 'memory-lost'; readonly reason: string };

export type FromWorker =
  | WorkerReply
  | { readonly type: 'status'; readonly status: WorkerStatus }
  /** Guest console output, coalesced (the buffer is transferred). */
  | { readonly type: 'console'; readonly bytes: Uint8Array }
  /** Sent after the worker has closed its device backends. */
  | { readonly type: 'guest-exit'; readonly exit: GuestExit; readonly reason: string }
  | { readonly type: 'progress'; readonly operation: string; readonly done: number; readonly total: number }
  /** Pages first..first+count-1 are absent and something waits for them: the vCPU (`sync`
   * false: answer with page-ready) or a device access (`sync` true: answer through the pager
   * control cell; the worker is blocked until then). */
  | { readonly type: 'page-fault'; readonly id: number; readonly first: number; readonly count: number; readonly sync: boolean }
  /** The worker hit an error it cannot recover from; it closes its backends and exits. */
  | { readonly type: 'crash'; readonly error: WireError };

export function toWireError(e: unknown): WireError {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return { code: typeof code === 'string' ? code : 'VM_WORKER_ERROR', message: e.message };
  }
  return { code: 'VM_WORKER_ERROR', message: String(e) };
}

/** The pager control cell's values (Int32Array index 0). */
export const PAGER_WAITING = 1;
export const PAGER_DONE = 2;
export const PAGER_FAILED = 3;
