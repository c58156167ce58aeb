// The contract between the host daemon and a VM it owns. A VM runs in its own worker thread
// (vCPU, devices and their backends); the daemon holds a VmHandle on the main thread and never
// touches the machine directly.

import type { VmState } from './lifecycle.js';

/** What a VM is made of; persisted by the daemon under its state directory as JSON. */
export interface VmConfig {
  readonly name: string;
  readonly memoryMiB: number;
  /** Guest kernel and initramfs paths; default: the built guest image. */
  readonly kernel?: string;
  readonly initramfs?: string;
  /** Kernel command line; default GUEST_CMDLINE (src/guest/cmdline.ts). */
  readonly cmdline?: string;
  /** NICs: a TAP in the daemon's network namespace, joined to `bridge` when given. */
  readonly nets: readonly { readonly mac: string; readonly bridge?: string }[];
  /** Disk specs as `ferry run --disk` takes them (FILE[,ro], nbd://HOST:PORT[/EXPORT]). */
  readonly disks: readonly string[];
  /** Guest eth0 address `ADDR/PREFIX[,GATEWAY]`, passed on the kernel command line. */
  readonly ip?: string;
}

export type VmEvent =
  | { readonly type: 'state'; readonly vm: string; readonly state: VmState }
  | { readonly type: 'progress'; readonly vm: string; readonly operation: string; readonly done: number; readonly total: number }
  | { readonly type: 'guest-exit'; readonly vm: string; readonly reason: string };

export interface SnapshotResult {
  readonly file: string;
  readonly bytes: number;
  readonly ms: number;
}

export interface VmHandle {
  readonly name: string;
  readonly config: VmConfig;
  readonly state: VmState;
  /** Boots the guest (created/stopped -> running). */
  start(): Promise<void>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Stops the guest and its worker (running/paused -> stopped). */
  stop(): Promise<void>;
  /** Pauses if running, writes a snapshot file, returns to the previous state. */
  snapshot(file: string): Promise<SnapshotResult>;
  /** Console: bytes typed to the guest, and a subscription to what it prints. */
  consoleWrite(bytes: Uint8Array): void;
  onConsole(listener: (bytes: Uint8Array) => void): () => void;
  onEvent(listener: (event: VmEvent) => void): () => void;
  /** Ends the worker and releases the VM's host resources. */
  dispose(): Promise<void>;
}
