// What the source tells the destination about the VM in Config, and how the destination checks
// that it can host it (pre-migration). Both ends derive the ISA and device list the same way,
// so a daemon of another build with another machine model is refused before anything moves.

import { GUEST_ISA } from '../../machine/boot/machine.js';
import { resolveVmConfig } from '../../vm/config.js';
import type { VmConfig } from '../../vm/types.js';
import { PAGE_SIZE, type ConfigMessage } from '../protocol/messages.js';

/** "rv64imafdc_zicsr_…": the guest-visible ISA of this build's machine. */
export function machineIsa(): string {
  const single = GUEST_ISA.filter((e) => e.length === 1).join('');
  const multi = GUEST_ISA.filter((e) => e.length > 1);
  return ['rv64' + single, ...multi].join('_');
}

/** The virtio devices a config gives the machine, in slot order. */
export function deviceKinds(config: VmConfig): string[] {
  const d = resolveVmConfig(config).devices;
  return [...d.nets.map(() => 'net'), ...d.disks.map(() => 'blk'), ...(d.rng ? ['rng'] : []), ...(d.balloon ? ['balloon'] : [])];
}

export function configMessage(config: VmConfig): ConfigMessage {
  return {
    type: 'Config',
    ramBytes: resolveVmConfig(config).ramBytes,
    pageSize: PAGE_SIZE,
    isa: machineIsa(),
    name: config.name,
    devices: deviceKinds(config),
    config: config as unknown as Record<string, unknown>,
  };
}

/** Why this build cannot host the VM `m` describes, or undefined if it can. The config itself
 * is validated by the daemon (the same rules as a create request). */
export function hostingProblem(m: ConfigMessage, config: VmConfig): string | undefined {
  if (m.isa !== machineIsa()) return `the VM needs ISA ${m.isa}, this host's machine is ${machineIsa()}`;
  const ram = resolveVmConfig(config).ramBytes;
  if (ram !== m.ramBytes) return `the Config says ${m.ramBytes} bytes of RAM but its VM config gives ${ram}`;
  const kinds = deviceKinds(config);
  if (kinds.join(',') !== m.devices.join(',')) return `the VM's devices [${m.devices.join(', ')}] differ from what this host builds [${kinds.join(', ')}]`;
  return undefined;
}
