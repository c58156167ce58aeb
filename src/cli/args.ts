// Flag parsing on top of node:util parseArgs, turning its errors into UsageError.

import { parseArgs, ParseArgsConfig } from 'node:util';
import { UsageError } from './errors.js';

export type Options = NonNullable<ParseArgsConfig['options']>;

export function parseFlags<T extends Options>(argv: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
}

/** Parses a memory size: plain MiB ("256"), or with a unit ("256M", "1G"). Returns bytes. */
export function parseMemory(text: string): number {
  const m = /^(\d+)([MmGg](?:i?B)?)?$/.exec(text.trim());
  if (!m) throw new UsageError(`invalid memory size '${text}' (examples: 256, 256M, 1G)`);
  const n = Number(m[1]);
  const bytes = m[2] && /^[Gg]/.test(m[2]) ? n * 1024 * 1024 * 1024 : n * 1024 * 1024;
  if (bytes < 64 << 20 || bytes > 3 * 1024 * 1024 * 1024) {
    throw new UsageError(`memory size '${text}' out of range (64 MiB .. 3 GiB)`);
  }
  return bytes;
}
