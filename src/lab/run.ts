// Runs the lab's system tools (ip, tc, nbdkit, ping) with execFile: argv arrays, never a shell.

import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { LabCommandError, LabToolMissingError } from './errors.js';

/** Debian package that provides each tool, for the "install X" message. */
export const TOOL_PACKAGES = {
  ip: 'iproute2',
  tc: 'iproute2',
  nft: 'nftables',
  nbdkit: 'nbdkit',
  ping: 'iputils-ping',
} as const;
export type Tool = keyof typeof TOOL_PACKAGES;

const found = new Map<Tool, string>();

/** Absolute path of a tool. sbin is searched even when PATH lacks it (sudo/su often drop it). */
export function toolPath(tool: Tool): string {
  const cached = found.get(tool);
  if (cached) return cached;
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const p = join(dir, tool);
    try {
      accessSync(p, constants.X_OK);
      found.set(tool, p);
      return p;
    } catch { /* keep looking */ }
  }
  throw new LabToolMissingError(tool, TOOL_PACKAGES[tool]);
}

export interface RunResult { code: number | null; stdout: string; stderr: string }
export interface RunOptions {
  /** Written to the command's stdin (ip -batch -). */
  input?: string;
  /** Resolve with the exit code instead of throwing LabCommandError. */
  allowFailure?: boolean;
  timeoutMs?: number;
}

/** Runs a program by absolute path or PATH lookup. */
export function runFile(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { encoding: 'utf8', timeout: opts.timeoutMs ?? 30_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        if (err && (err as NodeJS.ErrnoException).code === 'ENOENT' && typeof err.code === 'string') {
          reject(err);
          return;
        }
        const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
        if (code !== 0 && !opts.allowFailure) {
          reject(new LabCommandError([file, ...args], stderr, code));
          return;
        }
        resolve({ code, stdout, stderr });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

export function run(tool: Tool, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return runFile(toolPath(tool), args, opts);
}

/** `ip [-n NS] -batch -` with one command per line; -force keeps going past failing lines. */
export function ipBatch(lines: readonly string[], opts: { netns?: string; force?: boolean } = {}): Promise<RunResult> {
  const args = [...(opts.netns ? ['-n', opts.netns] : []), ...(opts.force ? ['-force'] : []), '-batch', '-'];
  return run('ip', args, { input: lines.join('\n') + '\n', allowFailure: opts.force ?? false });
}

export function tcBatch(lines: readonly string[], opts: { netns: string; force?: boolean }): Promise<RunResult> {
  const args = ['-n', opts.netns, ...(opts.force ? ['-force'] : []), '-batch', '-'];
  return run('tc', args, { input: lines.join('\n') + '\n', allowFailure: opts.force ?? false });
}
