import { FerryError } from '../errors.js';

/** Everything that goes wrong while building or inspecting the guest image. */
export class GuestImageError extends FerryError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
