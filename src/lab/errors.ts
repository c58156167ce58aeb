import { FerryError } from '../errors.js';

/** The lab creates network namespaces, which only root may do. */
export class LabNeedsRootError extends FerryError {
  constructor(uid: number) {
    super(
      'LAB_NEEDS_ROOT',
      `the lab creates network namespaces and must run as root (running as uid ${uid}); ` +
        'run it as root, e.g. `sudo ferry lab up`',
    );
  }
}

/** A program the lab runs is not installed; the message names the Debian package. */
export class LabToolMissingError extends FerryError {
  constructor(readonly tool: string, readonly debianPackage: string) {
    super(
      'LAB_TOOL_MISSING',
      `'${tool}' was not found; install the Debian package ${debianPackage} ` +
        `(apt-get install ${debianPackage}, or scripts/install-deps.sh)`,
    );
  }
}

/** An ip/tc/... command exited non-zero; carries its argv and stderr for the report. */
export class LabCommandError extends FerryError {
  constructor(readonly argv: readonly string[], readonly stderr: string, readonly exitCode: number | null) {
    super('LAB_COMMAND_FAILED', `'${argv.join(' ')}' failed (exit ${exitCode ?? 'signal'}): ${stderr.trim() || '(no output)'}`);
  }
}

/** Bad lab options (prefix, subnet, shaping numbers, host names). */
export class LabConfigError extends FerryError {
  constructor(message: string) { super('LAB_BAD_CONFIG', message); }
}

/** A lab that is expected to exist does not (or only partly). */
export class LabNotFoundError extends FerryError {
  constructor(message: string) { super('LAB_NOT_FOUND', message); }
}

/** nbdkit did not come up (bad arguments, port in use, timeout). */
export class LabNbdError extends FerryError {
  constructor(message: string) { super('LAB_NBD_FAILED', message); }
}

/** The kernel lacks a feature a requested link shaping needs (e.g. netem for delay). */
export class LabShapingUnsupportedError extends FerryError {
  constructor(message: string) { super('LAB_SHAPING_UNSUPPORTED', message); }
}
