// The handle on a blackout probe: starts probe-main.js in its own process on the lab's client
// host, waits until it sees the guest answer, and collects its report when told to stop.

import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { FerryError } from '../../errors.js';
import type { ProbeReport, ProbeTarget } from './report.js';

/** A probe that did not start, or ended without a report. */
export class ProbeError extends FerryError {
  constructor(message: string) {
    super('PROBE_FAILED', message);
  }
}

/** Runs `node args...` where the probe must run: by default this process's namespace (the
 * client host, when the caller already runs there); `lab.spawn('client', …)` from outside. */
export type ProbeSpawner = (nodeArgs: readonly string[]) => ChildProcess;

const MAIN = fileURLToPath(new URL('./probe-main.js', import.meta.url));
const localSpawner: ProbeSpawner = (args) => spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });

type Message = { kind: 'ready' } | { kind: 'report'; report: ProbeReport } | { kind: 'error'; message: string };

export class BlackoutProbe {
  private stderr = '';
  private readonly messages: Message[] = [];
  private readonly waiters: Array<() => void> = [];
  private exited = false;

  private constructor(private readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      try { this.messages.push(JSON.parse(l) as Message); } catch { return; }
      this.wake();
    });
    child.stderr!.on('data', (b: Buffer) => { this.stderr = (this.stderr + b.toString()).slice(-2000); });
    // 'close', not 'exit': the last stdout lines are read by then.
    child.once('close', () => { this.exited = true; this.wake(); });
  }

  /** Starts probing `target`; resolves once UDP, stream and connects have all been answered. */
  static async start(target: ProbeTarget, spawner: ProbeSpawner = localSpawner): Promise<BlackoutProbe> {
    const probe = new BlackoutProbe(spawner([MAIN, '--target', JSON.stringify(target)]));
    const m = await probe.next((x) => x.kind === 'ready' || x.kind === 'error');
    if (m?.kind !== 'ready') {
      probe.child.kill('SIGKILL');
      throw new ProbeError(m?.kind === 'error' ? m.message : `the probe exited before it was ready: ${probe.stderr.trim()}`);
    }
    return probe;
  }

  /** Stops sending, waits for the replies still on the way, and returns the report. */
  async stop(): Promise<ProbeReport> {
    if (!this.exited) this.child.stdin!.end('stop\n');
    const m = await this.next((x) => x.kind === 'report');
    if (m?.kind !== 'report') throw new ProbeError(`the probe ended without a report: ${this.stderr.trim()}`);
    return m.report;
  }

  /** Ends the probe without a report (after an error elsewhere). */
  kill(): void {
    if (!this.exited) this.child.kill('SIGKILL');
  }

  private async next(match: (m: Message) => boolean): Promise<Message | undefined> {
    for (;;) {
      const m = this.messages.find(match);
      if (m) return m;
      if (this.exited) return undefined;
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}
