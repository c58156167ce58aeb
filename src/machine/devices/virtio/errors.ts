import { FerryError } from '../../../errors.js';

/** The guest handed the device something it cannot process (a descriptor outside RAM, a
 * loop, a chain of the wrong shape). The device is marked as needing reset; the VMM goes on. */
export class VirtioGuestError extends FerryError {
  constructor(device: string, message: string) { super('VIRTIO_GUEST_ERROR', `${device}: ${message}`); }
}
