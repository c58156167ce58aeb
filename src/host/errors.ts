// Daemon errors and how FerryError codes become HTTP statuses. The code is the stable part
// for clients; the status only tells them which class of failure it is.

import { FerryError } from '../errors.js';

export class HostError extends FerryError {}

export const badRequest = (message: string): HostError => new HostError('BAD_REQUEST', message);
export const notFound = (name: string): HostError => new HostError('VM_NOT_FOUND', `no VM named '${name}'`);

const STATUS: Readonly<Record<string, number>> = {
  BAD_REQUEST: 400,
  CONFIG_INVALID: 400,
  DEVICE_SPEC_INVALID: 400,
  UNAUTHORIZED: 401,
  VM_NOT_FOUND: 404,
  MIGRATION_NOT_FOUND: 404,
  ROUTE_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  VM_EXISTS: 409,
  VM_INVALID_STATE: 409,
  MIGRATION_TOO_LATE: 409,
  MIGRATION_UNSUPPORTED: 409,
  PAYLOAD_TOO_LARGE: 413,
  SHUTTING_DOWN: 503,
};

export function httpStatus(code: string): number {
  return STATUS[code] ?? 500;
}

export interface ErrorBody {
  readonly error: { readonly code: string; readonly message: string };
}

export function errorBody(err: unknown): { status: number; body: ErrorBody } {
  if (err instanceof FerryError) return { status: httpStatus(err.code), body: { error: { code: err.code, message: err.message } } };
  const message = err instanceof Error ? err.message : String(err);
  return { status: 500, body: { error: { code: 'INTERNAL', message } } };
}
