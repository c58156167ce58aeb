import { FerryError } from '../../errors.js';

export class GuestMemoryError extends FerryError {
  constructor(message: string) { super('GUEST_MEMORY_RANGE', message); }
}
