import { FerryError } from '../../errors.js';

/** A device was wired or configured wrongly (by the VMM, never by the guest: guest mistakes
 * are modelled as hardware behaviour, e.g. ignored writes or bus faults). */
export class DeviceConfigError extends FerryError {
  constructor(code: 'BUS_OVERLAP' | 'BUS_INVALID_RANGE' | 'DEVICE_INVALID_CONFIG', message: string) {
    super(code, message);
  }
}

/** A saved device state does not fit the device it is restored into. */
export class DeviceStateError extends FerryError {
  constructor(device: string, message: string) {
    super('DEVICE_STATE_INVALID', `${device}: ${message}`);
  }
}
