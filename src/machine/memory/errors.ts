import { FerryError } from '../../errors.js';

export class GuestMemoryError extends FerryError {
  constructor(message: string) { super('GUEST_MEMORY_RANGE', message); }
}

/** Guest pages that are not in RAM could not be fetched (their only copy is gone, or the
 * fetch failed): the machine cannot go on. */
export class GuestMemoryLostError extends FerryError {
  constructor(message: string) { super('GUEST_MEMORY_LOST', message); }
}
