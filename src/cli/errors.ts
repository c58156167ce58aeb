import { FerryError } from '../errors.js';

/** A bad command line: printed with the command's name, exit status 2. */
export class UsageError extends FerryError {
  constructor(message: string) { super('USAGE', message); }
}
