// A VmHandle without a machine: it follows the lifecycle table, reports state events, echoes
// console input back as output, and records what the daemon asked of it.

import type { SnapshotResult, VmConfig, VmEvent, VmHandle } from '../../src/vm/types.js';
import { transition, VmCommand, VmState } from '../../src/vm/lifecycle.js';
import type { VmFactory } from '../../src/host/factory.js';

export class FakeVm implements VmHandle {
  state: VmState = { kind: 'created' };
  readonly calls: string[] = [];
  readonly typed: Uint8Array[] = [];
  disposed = false;
  private readonly events = new Set<(e: VmEvent) => void>();
  private readonly consoles = new Set<(b: Uint8Array) => void>();

  constructor(readonly config: VmConfig, readonly restoredFrom?: string) {
    if (restoredFrom !== undefined) this.state = { kind: 'paused' };
  }

  get name(): string { return this.config.name; }

  private apply(command: VmCommand): void {
    this.calls.push(command.type);
    this.state = transition(this.state, command);
    this.emit({ type: 'state', vm: this.name, state: this.state });
  }

  emit(event: VmEvent): void { for (const l of this.events) l(event); }

  async start(): Promise<void> { this.apply({ type: 'start' }); }
  async pause(): Promise<void> { this.apply({ type: 'pause' }); }
  async resume(): Promise<void> { this.apply({ type: 'resume' }); }
  async stop(): Promise<void> { this.apply({ type: 'stop' }); }

  async snapshot(file: string): Promise<SnapshotResult> {
    this.calls.push(`snapshot ${file}`);
    this.emit({ type: 'progress', vm: this.name, operation: 'snapshot', done: 1, total: 2 });
    this.emit({ type: 'progress', vm: this.name, operation: 'snapshot', done: 2, total: 2 });
    return { file, bytes: 4096, ms: 1 };
  }

  consoleWrite(bytes: Uint8Array): void {
    this.typed.push(bytes);
    for (const l of this.consoles) l(bytes);
  }

  onConsole(listener: (bytes: Uint8Array) => void): () => void {
    this.consoles.add(listener);
    return () => this.consoles.delete(listener);
  }

  onEvent(listener: (event: VmEvent) => void): () => void {
    this.events.add(listener);
    return () => this.events.delete(listener);
  }

  async dispose(): Promise<void> {
    this.calls.push('dispose');
    this.disposed = true;
    if (this.state.kind === 'running' || this.state.kind === 'paused') {
      this.state = { kind: 'stopped', reason: 'disposed' };
      this.emit({ type: 'state', vm: this.name, state: this.state });
    }
  }
}

export class FakeFactory implements VmFactory {
  readonly made: FakeVm[] = [];

  async create(config: VmConfig): Promise<FakeVm> {
    const vm = new FakeVm(config);
    this.made.push(vm);
    return vm;
  }

  async restore(config: VmConfig, file: string): Promise<FakeVm> {
    const vm = new FakeVm(config, file);
    this.made.push(vm);
    return vm;
  }

  latest(name: string): FakeVm {
    const vm = this.made.filter((v) => v.name === name).at(-1);
    if (!vm) throw new Error(`no fake VM ${name}`);
    return vm;
  }
}
