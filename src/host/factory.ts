// How the daemon gets VMs. Tests inject fakes; the default loads src/vm/vm.ts lazily, so
// `ferry vm ...` (a client that shares the CLI's module graph) never pulls in the machine and
// its worker code.

import type { MigratableVm, VmConfig, VmHandle } from '../vm/types.js';

export interface VmFactory {
  create(config: VmConfig): Promise<VmHandle>;
  restore(config: VmConfig, file: string): Promise<VmHandle>;
  /** An empty, paused VM for an incoming migration; absent if this factory cannot receive one. */
  incoming?(config: VmConfig, from: string): Promise<MigratableVm>;
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
