// Test-only AssemblyScript entry for the FPU: exposes fpExecute and its state so the
// node tests can drive it without the rest of the interpreter core.
import { fflags, frm } from '../../src/machine/cpu/as/fpu';
import { FREGS, XREGS } from '../../src/machine/cpu/as/layout';

export { fpExecute, setFflags, setFrm } from '../../src/machine/cpu/as/fpu';

export function getFflags(): u32 {
  return fflags;
}

export function getFrm(): u32 {
  return frm;
}

export function xregsBase(): usize {
  return XREGS;
}

export function fregsBase(): usize {
  return FREGS;
}
