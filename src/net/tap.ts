// A NetBackend on a Linux TAP device, optionally created inside a network namespace (each lab
// "host" is one). Design and measurements: src/net/DESIGN.md.
import { execFile } from 'node:child_process';
import { closeSync, writeSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { FerryError } from '../errors.js';
import type { NetBackend } from './backend.js';
import { CONTROL_BACKLOG, CONTROL_STOP, type TapSetup, type TapWorkerMessage, type ToTapWorker } from './tap-protocol.js';

export interface TapOpenOptions {
  /** Interface name (at most 15 bytes). Omitted: the kernel picks tapN. */
  name?: string;
  /** Network namespace, as a name under /var/run/netns (what `ip netns add` creates) or an
   * absolute path to a namespace file. Omitted: the VMM's own namespace. */
  namespace?: string;
  /** Received-but-undelivered bytes above which the TAP stops being read (default 4 MiB). */
  backlogLimit?: number;
  /** Bridge (in the same namespace) the device joins before it comes up, as `ip link set
   * master`, but by ioctl in the TAP's thread rather than a process per VM. */
  bridge?: string;
  /** A thread from startTapThread() to use (and own) instead of starting one: starting a
   * thread is most of the cost of an open. */
  thread?: Worker;
}

/** Starts the thread a TAP open needs before the device is known (see TapOpenOptions.thread).
 * Unused, end it with terminate(). */
export function startTapThread(): Worker {
  // Workers inherit execArgv, and `node --input-type=module -e ...` would make the worker refuse
  // to start from a file.
  const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'));
  return new Worker(new URL('./tap-worker.js', import.meta.url), { execArgv });
}

export interface TapStats {
  rxFrames: number;
  rxBytes: number;
  /** Frames that arrived before a receiver was registered. */
  rxDropped: number;
  txFrames: number;
  txBytes: number;
  /** Frames the kernel refused (link down, queue full) or sent after close. */
  txDropped: number;
}

const NETNS_DIR = '/var/run/netns';
const IFNAME_RE = /^[A-Za-z0-9_.:-]{1,15}$/;
const NETNS_NAME_RE = /^[A-Za-z0-9_.-]+$/;

function runCommand(cmd: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, (err, _stdout, stderr) => {
      if (!err) {
        resolve();
        return;
      }
      const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
      reject(new FerryError(missing ? 'TAP_TOOL_MISSING' : 'TAP_CONFIG_FAILED',
        missing ? `"${cmd}" is not installed (iproute2 / util-linux)` : `${cmd} ${args.join(' ')} failed: ${stderr.trim() || err.message}`, { cause: err }));
    });
  });
}

function tapSetup(opts: TapOpenOptions): TapSetup {
  const name = opts.name ?? '';
  if (name !== '' && !IFNAME_RE.test(name)) {
    throw new FerryError('TAP_BAD_NAME', `invalid interface name ${JSON.stringify(name)}: 1-15 characters from [A-Za-z0-9_.:-]`);
  }
  if (opts.bridge !== undefined && !IFNAME_RE.test(opts.bridge)) throw new FerryError('TAP_BAD_NAME', `invalid bridge name ${JSON.stringify(opts.bridge)}`);
  let namespacePath: string | null = null;
  if (opts.namespace !== undefined) {
    if (opts.namespace.startsWith('/')) namespacePath = opts.namespace;
    else if (NETNS_NAME_RE.test(opts.namespace)) namespacePath = `${NETNS_DIR}/${opts.namespace}`;
    else throw new FerryError('TAP_NAMESPACE_MISSING', `invalid network namespace name ${JSON.stringify(opts.namespace)}`);
  }
  return { namespacePath, name, bridge: opts.bridge ?? null, control: new SharedArrayBuffer(8), backlogLimit: opts.backlogLimit ?? 4 * 1024 * 1024 };
}

export class TapBackend implements NetBackend {
  readonly stats: TapStats = { rxFrames: 0, rxBytes: 0, rxDropped: 0, txFrames: 0, txBytes: 0, txDropped: 0 };
  private listener: ((frame: Uint8Array) => void) | undefined;
  private lostListener: ((reason: string) => void) | undefined;
  private closing: Promise<void> | undefined;
  /** Set once receiving has stopped for a reason other than close(). */
  lostReason: string | undefined;
  private constructor(
    /** Interface name as the kernel knows it (resolved when the kernel picked it). */
    readonly name: string,
    /** Namespace name as given to open() (undefined: the VMM's own). */
    readonly namespace: string | undefined,
    private fd: number,
    private readonly wakeFd: number,
    worker: Worker,
    private readonly exited: Promise<number>,
    private readonly control: Int32Array,
  ) {
    worker.on('message', (msg: TapWorkerMessage) => this.onWorkerMessage(msg));
    // Without an 'error' listener an exception in the worker would take the VMM down with it.
    worker.on('error', (e) => this.lose(`TAP worker failed: ${e.message}`));
    void exited.then((code) => {
      if (this.fd >= 0) this.lose(`TAP worker exited unexpectedly (code ${code})`);
    });
  }

  /**
   * Creates the TAP device (non-persistent: it disappears when the backend closes or the
   * process dies), adds it to `bridge` if given, and brings its link up. Rejects with
   * FerryError TAP_UNAVAILABLE when the process may not create TAP devices or /dev/net/tun is
   * missing, TAP_NAMESPACE_MISSING for an unknown namespace, TAP_CONFIG_FAILED when the bridge
   * refuses the device, TAP_OPEN_FAILED otherwise.
   */
  static async open(opts: TapOpenOptions = {}): Promise<TapBackend> {
    let setup: TapSetup;
    try {
      setup = tapSetup(opts);
    } catch (e) {
      // A thread handed to us is ours to end, whatever happens.
      await opts.thread?.terminate();
      throw e;
    }
    const control = setup.control;
    const worker = opts.thread ?? startTapThread();
    worker.ref();
    // Listened for from the start: a worker that fails posts its error and exits at once, and
    // Node may emit both events before anything awaiting the first could listen for the second.
    const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
    worker.postMessage({ type: 'setup', setup } satisfies ToTapWorker);

    const first = await new Promise<TapWorkerMessage>((resolve, reject) => {
      worker.once('error', (e) => reject(new FerryError('TAP_OPEN_FAILED', `TAP worker failed: ${e.message}`, { cause: e })));
      void exited.then((code) => reject(new FerryError('TAP_OPEN_FAILED', `TAP worker exited (code ${code}) before opening the device`)));
      worker.once('message', resolve);
    });
    if (first.type !== 'ready') {
      await exited;
      if (first.type === 'error') throw new FerryError(first.code, first.message);
      throw new FerryError('TAP_OPEN_FAILED', `unexpected first message from the TAP worker: ${first.type}`);
    }
    return new TapBackend(first.name, opts.namespace, first.fd, first.wakeFd, worker, exited, new Int32Array(control));
  }

  send(frame: Uint8Array): void {
    if (this.fd < 0) {
      this.stats.txDropped++;
      return;
    }
    try {
      // The fd is O_NONBLOCK and a TAP write only hands an skb to the kernel, so this costs one
      // short syscall and never waits; a full queue shows up as EAGAIN and the frame is dropped.
      writeSync(this.fd, frame);
      this.stats.txFrames++;
      this.stats.txBytes += frame.length;
    } catch {
      this.stats.txDropped++;
    }
  }

  onReceive(listener: (frame: Uint8Array) => void): void {
    this.listener = listener;
  }

  /** Called once if the device disappears underneath us (e.g. `ip link del` from outside). */
  onLost(listener: (reason: string) => void): void {
    this.lostListener = listener;
  }

  /** `ip link set <tap> master <bridge> up`, run inside the TAP's namespace. */
  async attachToBridge(bridge: string): Promise<void> {
    if (!IFNAME_RE.test(bridge)) throw new FerryError('TAP_BAD_NAME', `invalid bridge name ${JSON.stringify(bridge)}`);
    if (this.fd < 0) throw new FerryError('TAP_CLOSED', `TAP ${this.name} is closed`);
    await this.ip(['link', 'set', 'dev', this.name, 'master', bridge, 'up']);
  }

  /** Runs `ip ARGS` in this TAP's namespace (for configuration the backend does not model). */
  ip(args: readonly string[]): Promise<void> {
    const ns = this.namespace;
    if (ns === undefined) return runCommand('ip', args);
    if (!ns.startsWith('/')) return runCommand('ip', ['-n', ns, ...args]);
    // `ip -n` only takes names of namespaces under /var/run/netns; other files are entered.
    return runCommand('nsenter', [`--net=${ns}`, 'ip', ...args]);
  }

  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const fd = this.fd;
    this.fd = -1;
    this.listener = undefined;
    Atomics.store(this.control, CONTROL_STOP, 1);
    Atomics.notify(this.control, CONTROL_BACKLOG);
    try {
      writeSync(this.wakeFd, new BigUint64Array([1n]));
    } catch {
      // The worker may already be gone (device lost); then nothing waits on the eventfd.
    }
    await this.exited;
    // Closing the last fd of a non-persistent TAP unregisters the device synchronously, so it
    // is gone from `ip link` when this promise resolves.
    closeSync(fd);
    closeSync(this.wakeFd);
  }

  private lose(reason: string): void {
    if (this.lostReason !== undefined) return;
    this.lostReason = reason;
    this.lostListener?.(reason);
  }

  private onWorkerMessage(msg: TapWorkerMessage): void {
    switch (msg.type) {
      case 'frames': {
        const bytes = new Uint8Array(msg.data);
        let off = 0;
        for (const len of msg.lengths) {
          const frame = bytes.subarray(off, off + len);
          off += len;
          if (this.fd < 0) break;
          if (this.listener) {
            this.stats.rxFrames++;
            this.stats.rxBytes += len;
            this.listener(frame);
          } else {
            this.stats.rxDropped++;
          }
        }
        Atomics.sub(this.control, CONTROL_BACKLOG, msg.bytes);
        Atomics.notify(this.control, CONTROL_BACKLOG);
        break;
      }
      case 'lost':
        this.lose(msg.message);
        break;
      default:
        break;
    }
  }
}
