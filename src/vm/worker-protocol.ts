// Messages between a Vm (main thread) and its worker (worker.ts). Kept apart from the worker so
// importing the types does not start a VM.
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
  | { readonly type: 'restore'; readonly id: number; readonly file: string };

export type WorkerRequestType = WorkerRequest['type'];

export type ToWorker =
  | WorkerRequest
  | { readonly type: 'console-input'; readonly bytes: Uint8Array };

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
}

export type WorkerReply =
  | { readonly type: 'reply'; readonly id: number; readonly ok: true; readonly result?: ReplyResults[WorkerRequestType] }
  | { readonly type: 'reply'; readonly id: number; readonly ok: false; readonly error: WireError };

/** How the guest ended on its own (not by a stop request). */
export type GuestExit =
  | { readonly kind: 'poweroff' }
  | { readonly kind: 'reboot' }
  | { readonly kind: 'fail'; readonly code: number }
  | { readonly kind: 'fatal'; readonly cause: string; readonly pc: string };

export type FromWorker =
  | WorkerReply
  | { readonly type: 'status'; readonly status: WorkerStatus }
  /** Guest console output, coalesced (the buffer is transferred). */
  | { readonly type: 'console'; readonly bytes: Uint8Array }
  /** Sent after the worker has closed its device backends. */
  | { readonly type: 'guest-exit'; readonly exit: GuestExit; readonly reason: string }
  | { readonly type: 'progress'; readonly operation: string; readonly done: number; readonly total: number }
  /** The worker hit an error it cannot recover from; it closes its backends and exits. */
  | { readonly type: 'crash'; readonly error: WireError };

export function toWireError(e: unknown): WireError {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return { code: typeof code === 'string' ? code : 'VM_WORKER_ERROR', message: e.message };
  }
  return { code: 'VM_WORKER_ERROR', message: String(e) };
}
