// Restore paths (devices and the CPU) validate their input: a snapshot may come from another ferry version or a
// corrupt stream, and a half-restored device is worse than a refused migration.
import { DeviceStateError } from './devices/errors.js';

export function checkUint(device: string, field: string, v: unknown, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
    throw new DeviceStateError(device, `field ${field} must be an integer in [0, ${max}], got ${String(v)}`);
  }
  return v;
}

export function checkBool(device: string, field: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw new DeviceStateError(device, `field ${field} must be a boolean`);
  return v;
}

/** 64-bit values travel as decimal strings so state objects stay JSON-safe. */
export function checkU64(device: string, field: string, v: unknown): bigint {
  if (typeof v !== 'string' || !/^[0-9]+$/.test(v)) {
    throw new DeviceStateError(device, `field ${field} must be a decimal u64 string`);
  }
  const n = BigInt(v);
  if (n >= 1n << 64n) throw new DeviceStateError(device, `field ${field} exceeds 64 bits`);
  return n;
}

/** Signed 64-bit (offsets between clocks). */
export function checkI64(device: string, field: string, v: unknown): bigint {
  if (typeof v !== 'string' || !/^-?[0-9]+$/.test(v)) {
    throw new DeviceStateError(device, `field ${field} must be a decimal i64 string`);
  }
  const n = BigInt(v);
  if (n !== BigInt.asIntN(64, n)) throw new DeviceStateError(device, `field ${field} exceeds 64 bits`);
  return n;
}

export function checkArray(device: string, field: string, v: unknown, length?: number): unknown[] {
  if (!Array.isArray(v) || (length !== undefined && v.length !== length)) {
    throw new DeviceStateError(device, `field ${field} must be an array${length === undefined ? '' : ` of length ${length}`}`);
  }
  return v;
}
