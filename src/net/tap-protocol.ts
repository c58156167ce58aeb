// Messages and shared state between TapBackend (main thread) and its worker (tap-worker.ts).
// Kept apart from the worker so importing the types does not start a receive loop.

/** The TAP thread's first message: which device to create. A message rather than workerData,
 * so the thread can be started before the device is known (startTapThread). */
export interface TapSetup {
  /** Path of a network namespace file (/var/run/netns/<name>), or null for the caller's. */
  namespacePath: string | null;
  /** Requested interface name; '' lets the kernel pick tapN. */
  name: string;
  /** Bridge to enslave the device to (in its namespace) before it comes up, or null. */
  bridge: string | null;
  /** [0] bytes posted but not yet consumed by the main thread; [1] non-zero when asked to stop. */
  control: SharedArrayBuffer;
  /** Posted-but-unconsumed bytes above which the worker stops reading and lets the kernel drop. */
  backlogLimit: number;
}

export type ToTapWorker = { type: 'setup'; setup: TapSetup };

export type TapWorkerMessage =
  | { type: 'ready'; fd: number; wakeFd: number; name: string }
  | { type: 'error'; code: string; message: string; errno?: number }
  | { type: 'frames'; data: ArrayBuffer; lengths: Uint32Array; bytes: number }
  | { type: 'lost'; message: string };

export const CONTROL_BACKLOG = 0;
export const CONTROL_STOP = 1;
