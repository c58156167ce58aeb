// How the daemon gets VMs. Tests inject fakes; the default loads src/vm/vm.ts lazily, so
// `ferry vm ...` (a client that shares the CLI's module graph) never pulls in the machine and
// its worker code.

import type { MigratableVm, VmConfig, VmHandle } from '../vm/types.js';
import { StandbyWorkers } from '../vm/worker-pool.js';

export interface VmFactory {
  create(config: VmConfig): Promise<VmHandle>;
  restore(config: VmConfig, file: string): Promise<VmHandle>;
  /** An empty, paused VM for an incoming migration; absent if this factory cannot receive one. */
  incoming?(config: VmConfig, from: string): Promise<MigratableVm>;
  /** Releases what the factory holds for VMs not yet made (a standby worker); after the daemon closes. */
  close?(): Promise<void>;
}

export const realVmFactory: VmFactory = {
  async create(config) {
    const { Vm } = await import('../vm/vm.js');
    return Vm.create(config);
  },
  async restore(config, file) {
    const { Vm } = await import('../vm/vm.js');
    return Vm.restore(config, file);
  },
  async incoming(config, from) {
    const { Vm } = await import('../vm/vm.js');
    return Vm.incoming(config, from);
  },
};

/** The real factory with a worker thread kept started for the next VM (worker-pool.ts): what a
 * daemon process uses, so an incoming migration's reservation does not wait for a thread. */
export function standbyVmFactory(): VmFactory & { close(): Promise<void> } {
  const workers = new StandbyWorkers();
  return {
    async create(config) {
      const { Vm } = await import('../vm/vm.js');
      return Vm.create(config, { workers });
    },
    async restore(config, file) {
      const { Vm } = await import('../vm/vm.js');
      return Vm.restore(config, file, { workers });
    },
    async incoming(config, from) {
      const { Vm } = await import('../vm/vm.js');
      return Vm.incoming(config, from, { workers });
    },
    close: () => workers.close(),
  };
}
