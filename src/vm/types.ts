// The contract between the host daemon and a VM it owns. A VM runs in its own worker thread
// (vCPU, devices and their backends); the daemon holds a VmHandle on the main thread and never
// touches the machine directly.

import type { VmState } from './lifecycle.js';
import type { GuestMemory } from '../machine/memory/guest-memory.js';
import type { MachineState } from '../machine/boot/machine.js';
import type { ThrottleStats, VcpuThrottle } from '../machine/boot/throttle.js';
import type { FaultStats, PageSupplier, StallPercentiles } from './paging/page-server.js';
import type { VmMemoryStats } from './paging/vm-paging.js';

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
  /** The VM's swap device for Agile memory management (`nbd://HOST:PORT[/EXPORT]`, at least
   * RAM-sized, page N at offset N x 4096): cold pages live there, and both hosts of a migration
   * reach it. Absent: every page stays in host memory. */
  readonly swap?: string;
  /** Guest eth0 address `ADDR/PREFIX[,GATEWAY]`, passed on the kernel command line. */
  readonly ip?: string;
}

export type VmEvent =
  | { readonly type: 'state'; readonly vm: string; readonly state: VmState }
  | { readonly type: 'progress'; readonly vm: string; readonly operation: string; readonly done: number; readonly total: number }
  | { readonly type: 'guest-exit'; readonly vm: string; readonly reason: string }
  /** A migration of this VM moved on (stage, round, progress) or ended (with its report). */
  | { readonly type: 'migration'; readonly vm: string; readonly migration: MigrationEventView };

/** What a migration event carries (src/host/migrations.ts MigrationView); kept structural here
 * so the VM layer does not depend on the host layer. */
export interface MigrationEventView {
  readonly id: string;
  readonly vm: string;
  readonly direction: 'out' | 'in';
  readonly stage: string;
}

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
  /** Resident, swapped and working-set sizes, when the VM tracks them. */
  memoryStats?(): VmMemoryStats | undefined;
}

/** What a freeze leaves: the pages dirtied since the last harvest and the machine's state, taken
 * in one step with the guest paused and its devices still; RAM holds until the VM thaws. */
export interface FrozenVm {
  readonly dirtyLog: Uint8Array;
  /** Pages the guest touched (read, wrote or ran) since the last access-log harvest. */
  readonly accessLog: Uint8Array;
  readonly state: MachineState;
  /** How long pausing and draining in-flight I/O took. */
  readonly quiesceMs: number;
  /** Wall clock (epoch ms) when the vCPU stopped. */
  readonly pausedAtMs: number;
}

/** NIC frames that reached a frozen source after its state was taken, by NIC slot, and the
 * frames its full held backlogs dropped meanwhile. */
export interface CarriedFrames {
  readonly nics: readonly { readonly nic: number; readonly frames: readonly Uint8Array[] }[];
  readonly dropped: number;
}

/** An activated destination's first outward signs (wall clock, epoch ms; null: not yet), and
 * the frames its held NICs dropped before it ran. */
export interface ActivationTimes {
  readonly firstFrameOutMs: number | null;
  readonly announceSentMs: number | null;
  readonly framesDropped: number;
}


/** What an Agile swap-out before a migration left (Vm.swapOutCold). The pages are out of RAM;
 * their writes go on, and the device holds them once `swapDurable` resolves. */
export interface SwapOut {
  readonly evictedPages: number;
  /** Pages on the swap device now: the destination faults them from there. */
  readonly swappedPages: number;
  readonly workingSetPages: number;
  /** The device's identity (its nbd:// URL), which the destination attaches. */
  readonly swapDevice: string;
}

/** Dirty pages per interval (Clark et al.'s writable working set), from `ferry wws`. */
export interface WwsTrace {
  readonly intervalMs: number;
  readonly pageSize: number;
  readonly dirtyPages: readonly number[];
  /** The intervals as they really fell (the vCPU yields to timers between slices). */
  readonly measuredIntervalMs: readonly number[];
}

/**
 * A VM that can be migrated. Source: beginMigrationOut, then memory() and harvestDirtyLog()
 * for the pre-copy rounds, freeze() for stop-and-copy, endMigrationOut() with the outcome.
 * Destination: Vm.incoming(), memory() to write RAM, loadMigratedState(), activate().
 */
export interface MigratableVm extends VmHandle {
  memory(): Promise<GuestMemory>;
  beginMigrationOut(to: string): Promise<void>;
  harvestDirtyLog(): Promise<Uint8Array>;
  /** Starts a new access log (pages touched); freeze() hands over the one running then. */
  harvestAccessLog(): Promise<Uint8Array>;
  freeze(): Promise<FrozenVm>;
  /** Slows the vCPU while a migration's rounds do not converge (null: full speed again). */
  throttle(setting: VcpuThrottle | null): Promise<ThrottleStats>;
  endMigrationOut(outcome: { committed: true } | { committed: false; error: string; frozen: boolean }): Promise<void>;
  /** Source, after the commit point: NIC frames that arrived since freeze. */
  takeCarriedFrames(): Promise<CarriedFrames>;
  loadMigratedState(state: MachineState): Promise<void>;
  /** Runs the loaded incoming VM; resolves with the wall clock of its resume. */
  activate(): Promise<{ readonly resumedAtMs: number }>;
  /** Destination: frames carried from the source, for NIC `nic`. */
  injectFrames(nic: number, frames: readonly Uint8Array[]): Promise<{ readonly delivered: number; readonly dropped: number }>;
  activationTimes(): Promise<ActivationTimes>;
  traceWorkingSet(intervalMs: number, samples: number): Promise<WwsTrace>;
  /** Agile: evicts pages outside the working set to the swap device before a migration. */
  swapOutCold(): Promise<SwapOut>;
  /** Resolves once every page on the swap device is durable there (see SwapStore.settle). */
  swapDurable(): Promise<void>;
  /** Destination of a post-copy: who supplies pages still at the source. */
  attachPeerPages(supplier: PageSupplier | undefined): void;
  faultStats(): FaultStats;
  stallPercentiles(): StallPercentiles | null;
  /** Stops the VM for good and marks it failed (its memory was lost with a post-copy source). */
  abandon(reason: string): Promise<void>;
}
