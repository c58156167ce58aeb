// Host tool invocation for the image builder. Failures carry the tool's stderr so an apt or gcc
// error is readable from `ferry image build` without rerunning anything by hand.
import { spawn } from 'node:child_process';
import { GuestImageError } from './errors.js';

export interface RunOptions {
  cwd?: string;
  /** Extra environment; the parent's environment is inherited (proxies, PATH). */
  env?: Record<string, string>;
  input?: Uint8Array;
}

export interface RunResult {
  stdout: Buffer;
  stderr: string;
}

const INSTALL_HINT = 'run scripts/install-deps.sh (as root) to install the host tools ferry needs';

export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: { ...process.env, LC_ALL: 'C', ...opts.env },
      stdio: [opts.input ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') {
        reject(new GuestImageError('GUEST_TOOL_MISSING', `required host tool "${cmd}" was not found in PATH; ${INSTALL_HINT}`, { cause: e }));
      } else {
        reject(new GuestImageError('GUEST_TOOL_FAILED', `${cmd}: ${e.message}`, { cause: e }));
      }
    });
    child.on('close', (code, signal) => {
      const stderr = Buffer.concat(err).toString('utf8');
      if (code === 0) {
        resolve({ stdout: Buffer.concat(out), stderr });
        return;
      }
      const tail = stderr.trim().split('\n').slice(-15).join('\n');
      const how = signal ? `killed by ${signal}` : `exit code ${code}`;
      reject(new GuestImageError('GUEST_TOOL_FAILED', `${cmd} ${args.join(' ')} failed (${how})${tail ? `:\n${tail}` : ''}`));
    });
    if (opts.input && child.stdin) child.stdin.end(opts.input);
  });
}

/** Fails early, naming every missing tool at once instead of one per attempt. */
export async function requireTools(tools: readonly string[]): Promise<void> {
  const missing: string[] = [];
  for (const t of tools) {
    try {
      await run('sh', ['-c', 'command -v "$1" >/dev/null', 'sh', t]);
    } catch {
      missing.push(t);
    }
  }
  if (missing.length > 0) {
    throw new GuestImageError('GUEST_TOOL_MISSING', `required host tool(s) not found in PATH: ${missing.join(', ')}; ${INSTALL_HINT}`);
  }
}
