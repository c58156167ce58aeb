// Failures of a migration as a whole (the protocol layer has its own, MigrationProtocolError).
// Each carries a stable code; `abortCode` maps it to the wire Abort code the peer is told.

import { FerryError } from '../errors.js';
import { AbortCode } from './protocol/messages.js';

export type MigrationErrorCode =
  /** The peer sent Abort; `peerCode` holds its wire code. */
  | 'MIGRATION_PEER_ABORTED'
  /** Cancelled by an operator on either side. */
  | 'MIGRATION_CANCELLED'
  /** The peer or the link went quiet for longer than the stage allows. */
  | 'MIGRATION_TIMEOUT'
  /** The connection closed or failed. */
  | 'MIGRATION_CONNECTION_LOST'
  /** The peer broke the protocol (bad frame, message out of order). */
  | 'MIGRATION_PROTOCOL'
  /** The destination cannot host the VM (memory, ISA, devices, name, storage). */
  | 'MIGRATION_CANNOT_HOST'
  /** The destination refused or failed to load the machine state. */
  | 'MIGRATION_STATE_REJECTED'
  /** Something on this side failed (the VM's worker, a device). */
  | 'MIGRATION_SOURCE_FAILED'
  /** The mode needs something the peer or the VM lacks (protocol v2, a swap device). */
  | 'MIGRATION_UNSUPPORTED'
  /** Post-copy: the source went away while the destination still lacked pages; the VM is lost. */
  | 'MIGRATION_POSTCOPY_SOURCE_LOST'
  /** Post-copy: the destination went away after running the VM; the source copy is stale. */
  | 'MIGRATION_POSTCOPY_DESTINATION_LOST'
  | 'MIGRATION_INTERNAL';

export class MigrationError extends FerryError {
  declare readonly code: MigrationErrorCode;
  constructor(code: MigrationErrorCode, message: string, options?: { cause?: unknown; peerCode?: number }) {
    super(code, message, options);
    this.peerCode = options?.peerCode;
  }
  readonly peerCode: number | undefined;
}

/** The stable code of whatever ended a migration: a FerryError's own, else MIGRATION_INTERNAL. */
export function failureCode(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'MIGRATION_INTERNAL';
}

/** The Abort code to send the peer when this side fails with `error`. */
export function abortCodeFor(error: unknown): number {
  if (!(error instanceof FerryError)) return AbortCode.Internal;
  switch (error.code) {
    case 'MIGRATION_CANCELLED': return AbortCode.Cancelled;
    case 'MIGRATION_TIMEOUT': return AbortCode.Timeout;
    case 'MIGRATION_CANNOT_HOST': return AbortCode.CannotHost;
    case 'MIGRATION_STATE_REJECTED': return AbortCode.DeviceStateRejected;
    case 'MIGRATION_SOURCE_FAILED': return AbortCode.SourceFailed;
    case 'AUTH_FAILED': case 'AUTH_REPLAY': return AbortCode.AuthFailed;
    case 'VERSION_UNSUPPORTED': return AbortCode.VersionUnsupported;
    case 'MIGRATION_PROTOCOL': return AbortCode.Protocol;
    default:
      return error.code.startsWith('MIGRATION_') ? AbortCode.Internal : AbortCode.Protocol;
  }
}

const ABORT_NAMES = new Map<number, string>(Object.entries(AbortCode).map(([name, code]) => [code, name]));

/** A readable name for a wire Abort code, also for codes a newer peer may send. */
export function abortName(code: number): string {
  return ABORT_NAMES.get(code) ?? `code ${code}`;
}
