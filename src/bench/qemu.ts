// The peer: qemu-system-riscv64 running the same kernel and initramfs, timed from process
// start to a console pattern.

import { spawn } from 'node:child_process';
import { FerryError } from '../errors.js';

export interface QemuBootResult {
  seconds: number;
  output: string;
}

export function qemuBoot(kernel: string, initramfs: string, opts: { memoryMiB: number; cmdline: string; until: string; timeoutMs: number }): Promise<QemuBootResult> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn('qemu-system-riscv64', [
      '-M', 'virt', '-m', `${opts.memoryMiB}M`, '-nographic', '-no-reboot',
      '-kernel', kernel, '-initrd', initramfs, '-append', opts.cmdline,
    ], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let done = false;
    const finish = (err: Error | undefined, seconds = 0) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      if (err) reject(err); else resolve({ seconds, output: out });
    };
    const timer = setTimeout(() => finish(new FerryError('BENCH_TIMEOUT', `qemu did not print '${opts.until}' within ${opts.timeoutMs} ms`)), opts.timeoutMs);
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString('latin1');
      if (out.includes(opts.until)) finish(undefined, (performance.now() - t0) / 1000);
    });
    child.on('error', (e) => finish(new FerryError('BENCH_PEER_MISSING', `cannot start qemu-system-riscv64: ${e.message} (run scripts/install-deps.sh)`)));
    child.on('exit', (code) => finish(new FerryError('BENCH_PEER_FAILED', `qemu exited with ${code} before '${opts.until}'`)));
  });
}
