import { FerryError } from '../../errors.js';

/** The VMM asked for a device tree that cannot be encoded (bad name, value or config). */
export class FdtError extends FerryError {
  constructor(message: string) { super('FDT_INVALID', message); }
}
