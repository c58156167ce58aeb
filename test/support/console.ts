// Scripts a VM's console from a test: a ConsoleDriver wired both ways to a VmHandle.

import { ConsoleDriver } from '../../src/machine/console/shell.js';
import type { VmHandle } from '../../src/vm/types.js';

export function attach(vm: Pick<VmHandle, 'onConsole' | 'consoleWrite'>): ConsoleDriver {
  const d = new ConsoleDriver();
  vm.onConsole((b) => d.write(b));
  d.onInput((b) => vm.consoleWrite(b));
  return d;
}
