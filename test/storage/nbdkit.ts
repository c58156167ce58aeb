// Starts real nbdkit servers for the NBD client tests. nbdkit is required: when it is missing
// the tests fail with an explanation rather than silently skipping, so CI cannot go green
// without having exercised a real server.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function requireNbdkit(): void {
  const r = spawnSync('nbdkit', ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error('nbdkit is required for the NBD tests but could not be run ' +
      `(${r.error?.message ?? `exit status ${r.status}`}); install the Debian package "nbdkit" (apt-get install nbdkit)`);
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export interface Nbdkit {
  port: number;
  proc: ChildProcess;
  /** SIGKILL, then waits for the process to be gone. */
  kill(): Promise<void>;
  /** SIGTERM, then waits. Idempotent. */
  stop(): Promise<void>;
}

/**
 * args: everything after the common options, e.g. ['memory', '64M'] or
 * ['--filter=error', 'memory', '1M', 'error-pwrite=EIO'].
 */
export async function startNbdkit(args: string[], options: { port?: number; readOnly?: boolean } = {}): Promise<Nbdkit> {
  requireNbdkit();
  const port = options.port ?? await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'ferry-nbdkit-'));
  const pidfile = join(dir, 'pid');
  const full = ['--foreground', '--exit-with-parent', '-p', String(port), '-i', '127.0.0.1', '-P', pidfile,
    ...(options.readOnly ? ['-r'] : []), ...args];
  const proc = spawn('nbdkit', full, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  let hasExited = false;
  void exited.then(() => { hasExited = true; });

  // nbdkit writes the pidfile once it is listening.
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (hasExited) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`nbdkit ${full.join(' ')} exited during startup: ${stderr.trim()}`);
    }
    try {
      if (readFileSync(pidfile, 'utf8').trim() !== '') break;
    } catch { /* not yet */ }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`nbdkit ${full.join(' ')} did not start within 10 s: ${stderr.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  rmSync(dir, { recursive: true, force: true });

  const end = async (signal: NodeJS.Signals): Promise<void> => {
    if (!hasExited) proc.kill(signal);
    await exited;
  };
  return { port, proc, kill: () => end('SIGKILL'), stop: () => end('SIGTERM') };
}
