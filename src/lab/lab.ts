// The lab: a switched LAN with two VM hosts, a storage host and a client, built from network
// namespaces on this one machine (see DESIGN.md for the picture and the addresses).

import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { access, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanupLab, listLabNamespaces, namespacePids, scratchDirPrefix, type CleanupReport } from './cleanup.js';
import {
  LabConfigError, LabNbdError, LabNeedsRootError, LabNotFoundError, LabShapingUnsupportedError,
} from './errors.js';
import { ipBatch, run, runFile, tcBatch, toolPath, type RunResult } from './run.js';
import {
  ALL_ROLES, BRIDGE, DEFAULT_PREFIX, DEFAULT_SUBNET, HOSTS, LAN, UPLINK, VM_HOSTS,
  checkHost, checkPrefix, hostAddress, macFor, netnsName, parseSubnet, vmAddress, vmMac,
  type HostName, type Subnet,
} from './topology.js';

export { HOSTS, DEFAULT_PREFIX, DEFAULT_SUBNET, vmAddress, vmMac, type HostName };

/** Shaping of one host's uplink. Each value applies in both directions. */
export interface LinkShape {
  /** Bandwidth cap in Mbit/s (10^6 bit/s). */
  rateMbit?: number;
  /** One-way delay added in each direction, so a round trip over the link gains 2 x delayMs. */
  delayMs?: number;
  /** Fraction of frames dropped in each direction, 0..100. */
  lossPercent?: number;
}

export interface LabOptions {
  /** Namespace name prefix; the lab's namespaces are PREFIX + lan/host-a/host-b/storage/client. */
  prefix?: string;
  /** IPv4 network of the LAN, prefix length <= 24. */
  subnet?: string;
  /** Shaping for every host uplink; `shapes` overrides it per host. */
  shape?: LinkShape;
  shapes?: Partial<Record<HostName, LinkShape>>;
  /** Effective uid to check instead of the process's (tests of the refusal). */
  uid?: number;
}

/** How `cut` severs a link: `down` pulls the cable (carrier lost on both ends); `drop` keeps
 * the link up and silently discards every frame, as a partitioned switch would. */
export type CutMode = 'down' | 'drop';

export interface NbdOptions {
  /** Size of an in-memory disk (nbdkit memory plugin); sparse, so large sizes are cheap. */
  sizeBytes?: number;
  /** Serve this file instead (nbdkit file plugin); the path is seen from the storage host. */
  file?: string;
  port: number;
  readonly?: boolean;
  /** How long to wait for nbdkit to accept connections. */
  timeoutMs?: number;
}

export interface LabHost {
  name: HostName;
  netns: string;
  address: string;
  mac: string;
  /** The interface carrying the host's address: br0 on VM hosts, eth0 elsewhere. */
  device: string;
}

export interface LabHostStatus {
  name: HostName;
  netns: string;
  present: boolean;
  address: string | null;
  /** Administrative state of the LAN-side port of the host's uplink. */
  link: 'up' | 'down' | 'missing';
  /** True when the link drops everything (`cut(host, 'drop')`). */
  dropping: boolean;
  /** Root qdisc on the LAN side of the uplink, e.g. "tbf rate 100Mbit", or null if unshaped. */
  qdisc: string | null;
  lossPercent: number;
  processes: { pid: number; command: string }[];
}

export interface LabStatus {
  prefix: string;
  state: 'up' | 'partial' | 'absent';
  subnet: string | null;
  lanPresent: boolean;
  hosts: LabHostStatus[];
}

// Mirrors the uid check the kernel would do, but before any namespace is half-made.
export function assertRoot(uid: number | undefined = process.getuid?.()): void {
  if (uid !== undefined && uid !== 0) throw new LabNeedsRootError(uid);
}

function checkShape(shape: LinkShape, what: string): LinkShape {
  const num = (v: number | undefined, name: string, ok: (n: number) => boolean, range: string) => {
    if (v !== undefined && !(Number.isFinite(v) && ok(v))) {
      throw new LabConfigError(`${what}: ${name} must be ${range}, got ${v}`);
    }
  };
  num(shape.rateMbit, 'rateMbit', (n) => n > 0 && n <= 100_000, 'a number of Mbit/s in (0, 100000]');
  num(shape.delayMs, 'delayMs', (n) => n >= 0 && n <= 60_000, 'a number of milliseconds in [0, 60000]');
  num(shape.lossPercent, 'lossPercent', (n) => n >= 0 && n <= 100, 'a percentage in [0, 100]');
  return shape;
}

// The LAN switch filters in nftables' bridge family: one chain per host, entered for frames
// arriving from or leaving towards that host's port. Loss and `cut(.., 'drop')` are rules in it.
const NFT_TABLE = 'ferry_lab';
const nftChain = (host: HostName) => host.replace('-', '_');

function nftSetup(): string {
  const lines = [
    `table bridge ${NFT_TABLE} {`,
    '  chain forward {',
    '    type filter hook forward priority 0; policy accept;',
    ...HOSTS.flatMap((h) => [`    iifname "${h}" jump ${nftChain(h)}`, `    oifname "${h}" jump ${nftChain(h)}`]),
    '  }',
    ...HOSTS.map((h) => `  chain ${nftChain(h)} {\n  }`),
    '}',
  ];
  return lines.join('\n') + '\n';
}

function nftHostRules(host: HostName, lossPercent: number, dropping: boolean): string {
  const lines = [`flush chain bridge ${NFT_TABLE} ${nftChain(host)}`];
  if (dropping) lines.push(`add rule bridge ${NFT_TABLE} ${nftChain(host)} counter drop`);
  else if (lossPercent > 0) {
    // numgen draws per frame; parts per million keeps fractional percentages meaningful.
    const ppm = Math.round(lossPercent * 10_000);
    lines.push(`add rule bridge ${NFT_TABLE} ${nftChain(host)} numgen random mod 1000000 < ${ppm} counter drop`);
  }
  return lines.join('\n') + '\n';
}

let netemSupport: Promise<boolean> | undefined;

// Some kernels (e.g. minimal VM kernels) are built without sch_netem; rate and loss then use
// tbf and nftables, and only delay is unavailable. Probed once, in a throwaway namespace.
async function kernelHasNetem(probeNetns: string): Promise<boolean> {
  netemSupport ??= (async () => {
    const r = await run('tc', ['-n', probeNetns, 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '1ms'], { allowFailure: true });
    if (r.code !== 0) return false;
    await run('tc', ['-n', probeNetns, 'qdisc', 'del', 'dev', 'lo', 'root'], { allowFailure: true });
    return true;
  })();
  return netemSupport;
}

/** tc commands (batch lines) that put `shape`'s rate and delay on `dev`'s egress. */
function qdiscLines(dev: string, shape: LinkShape, netem: boolean): string[] {
  const del = `qdisc del dev ${dev} root`;
  const rateBytes = shape.rateMbit ? (shape.rateMbit * 1e6) / 8 : undefined;
  if (shape.delayMs) {
    if (!netem) {
      throw new LabShapingUnsupportedError(
        'link delay needs the netem queueing discipline, which this kernel lacks (CONFIG_NET_SCH_NETEM); ' +
          'rate and loss shaping still work',
      );
    }
    // netem's default queue of 1000 packets would drop a fast sender's frames while they wait
    // out the delay; size it for a full bandwidth-delay product (veths run at ~10 Gbit/s).
    const bdp = ((rateBytes ?? 10e9 / 8) * shape.delayMs) / 1000 / 1500;
    const limit = Math.min(1_000_000, Math.max(1000, Math.ceil(bdp * 2)));
    return [del, `qdisc add dev ${dev} root netem limit ${limit} delay ${shape.delayMs}ms` +
      (shape.rateMbit ? ` rate ${shape.rateMbit}mbit` : '')];
  }
  if (rateBytes) {
    // A bucket of ~5 ms of traffic (at least a few full frames) keeps the average at the rate
    // without the stalls a one-frame bucket causes at high rates.
    const burst = Math.max(4 * 1514, Math.ceil(rateBytes * 0.005));
    return [del, `qdisc add dev ${dev} root tbf rate ${shape.rateMbit}mbit burst ${burst} latency 200ms`];
  }
  return [del];
}

export class NbdServer {
  private exited: Promise<void>;

  constructor(
    readonly name: string,
    readonly address: string,
    readonly port: number,
    private readonly child: ChildProcess,
  ) {
    this.exited = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
  }

  get pid(): number | undefined { return this.child.pid; }
  get uri(): string { return `nbd://${this.address}:${this.port}`; }
  get running(): boolean { return this.child.exitCode === null && this.child.signalCode === null; }

  /** Stops nbdkit (SIGTERM, then SIGKILL after 3 s) and waits for it to exit. Idempotent. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await this.exited;
    clearTimeout(timer);
  }
}

export class Lab implements AsyncDisposable {
  private readonly nbd = new Map<string, NbdServer>();
  private readonly children = new Set<ChildProcess>();
  private readonly loss = new Map<HostName, number>();
  private readonly dropping = new Set<HostName>();
  private closed = false;

  private constructor(
    readonly prefix: string,
    readonly subnet: Subnet,
    private readonly netem: boolean,
    private scratch: string | undefined,
  ) {}

  /**
   * Builds the lab, first removing whatever a previous lab with the same prefix left behind.
   * On failure nothing is left.
   */
  static async up(opts: LabOptions = {}): Promise<Lab> {
    assertRoot(opts.uid);
    const prefix = checkPrefix(opts.prefix ?? DEFAULT_PREFIX);
    const subnet = parseSubnet(opts.subnet ?? DEFAULT_SUBNET);
    const shapes = new Map<HostName, LinkShape>();
    for (const h of HOSTS) {
      const s = opts.shapes?.[h] ?? opts.shape;
      if (s) shapes.set(h, checkShape(s, `shape of ${h}`));
    }
    toolPath('ip');
    toolPath('tc');
    toolPath('nft');
    await cleanupLab(prefix);
    try {
      await build(prefix, subnet);
      const netem = await kernelHasNetem(netnsName(prefix, LAN));
      const lab = new Lab(prefix, subnet, netem, await mkdtemp(join(tmpdir(), scratchDirPrefix(prefix))));
      for (const [h, s] of shapes) await lab.shape(h, s);
      return lab;
    } catch (err) {
      await cleanupLab(prefix).catch(() => undefined);
      throw err;
    }
  }

  /**
   * A handle on a lab that is already up (built by `ferry lab up` or another process). It reads
   * the links' loss and drop state back from the switch, so `shape`/`cut`/`restore` continue
   * from what the other process set.
   */
  static async attach(opts: { prefix?: string; uid?: number } = {}): Promise<Lab> {
    assertRoot(opts.uid);
    const prefix = checkPrefix(opts.prefix ?? DEFAULT_PREFIX);
    const present = await listLabNamespaces(prefix);
    if (present.length !== ALL_ROLES.length) {
      throw new LabNotFoundError(`no complete lab with prefix '${prefix}' (found ${present.length} of ${ALL_ROLES.length} namespaces); run \`ferry lab up --prefix ${prefix}\``);
    }
    const addr = await readAddress(netnsName(prefix, 'host-a'), BRIDGE);
    if (!addr) throw new LabNotFoundError(`lab '${prefix}': host-a has no address on ${BRIDGE}`);
    const subnet = parseSubnet(networkOf(addr.local, addr.prefixlen));
    const netem = await kernelHasNetem(netnsName(prefix, LAN));
    const lab = new Lab(prefix, subnet, netem, await mkdtemp(join(tmpdir(), scratchDirPrefix(prefix))));
    // Loss and drop rules are rewritten whole per host, so take over the current ones.
    for (const h of (await labStatus(prefix)).hosts) {
      lab.loss.set(h.name, h.lossPercent);
      if (h.dropping) lab.dropping.add(h.name);
    }
    return lab;
  }

  /** Removes every trace of the lab with this prefix (also one whose creator was killed). */
  static async cleanup(prefix: string = DEFAULT_PREFIX, opts: { uid?: number } = {}): Promise<CleanupReport> {
    assertRoot(opts.uid);
    return cleanupLab(prefix);
  }

  static async status(prefix: string = DEFAULT_PREFIX, opts: { uid?: number } = {}): Promise<LabStatus> {
    assertRoot(opts.uid);
    return labStatus(checkPrefix(prefix));
  }

  get supportsDelay(): boolean { return this.netem; }

  netns(host: HostName | typeof LAN): string {
    return netnsName(this.prefix, host === LAN ? LAN : checkHost(host));
  }

  /** The namespace's file, for setns(2) (the TAP backend opens a VM's TAP through it). */
  netnsPath(host: HostName | typeof LAN): string { return `/run/netns/${this.netns(host)}`; }

  /** Puts an existing TAP (or other device) in a VM host's namespace on its br0 and up. */
  async attachToBridge(host: HostName, dev: string): Promise<void> {
    this.assertOpen();
    if (!VM_HOSTS.includes(checkHost(host))) throw new LabConfigError(`${host} runs no VMs and has no ${BRIDGE}`);
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(dev)) throw new LabConfigError(`invalid device name '${dev}'`);
    await ipBatch([`link set ${dev} addrgenmode none`, `link set ${dev} master ${BRIDGE}`, `link set ${dev} up`], { netns: this.netns(host) });
  }

  address(host: HostName): string { return hostAddress(this.subnet, checkHost(host)); }
  vmAddress(index: number): string { return vmAddress(index, this.subnet); }
  vmMac(index: number): string { return vmMac(index, this.subnet); }
  /** Prefix length of the LAN, for `ip addr add ADDRESS/LEN` inside a VM. */
  get prefixLength(): number { return this.subnet.bits; }

  hosts(): LabHost[] {
    return HOSTS.map((name) => ({
      name,
      netns: this.netns(name),
      address: this.address(name),
      mac: macFor(this.address(name)),
      device: VM_HOSTS.includes(name) ? BRIDGE : UPLINK,
    }));
  }

  /**
   * Sets the shaping of `host`'s uplink (both directions), replacing what was there; `null` or
   * `{}` removes it. Works while traffic flows.
   */
  async shape(host: HostName, shape: LinkShape | null): Promise<void> {
    this.assertOpen();
    checkHost(host);
    const s = checkShape(shape ?? {}, `shape of ${host}`);
    // Delay is checked first, so an unsupported request changes nothing.
    const hostLines = qdiscLines(UPLINK, s, this.netem);
    const lanLines = qdiscLines(host, s, this.netem);
    // The del lines fail harmlessly when there is no qdisc yet, hence -force; the add lines are
    // then checked by reading the result back.
    await Promise.all([
      tcBatch(hostLines, { netns: this.netns(host), force: true }),
      tcBatch(lanLines, { netns: this.netns(LAN), force: true }),
    ]);
    const want = s.delayMs ? 'netem' : s.rateMbit ? 'tbf' : null;
    for (const [ns, dev] of [[this.netns(host), UPLINK], [this.netns(LAN), host]] as const) {
      const got = await rootQdisc(ns, dev);
      if (want && got?.kind !== want) {
        throw new LabConfigError(`could not shape ${host}: tc left '${got?.kind ?? 'none'}' on ${dev} in ${ns}`);
      }
    }
    this.loss.set(host, s.lossPercent ?? 0);
    await this.applyFilter(host);
  }

  /** Severs `host`'s link to the LAN until `restore(host)`. */
  async cut(host: HostName, mode: CutMode = 'down'): Promise<void> {
    this.assertOpen();
    checkHost(host);
    if (mode === 'down') {
      await ipBatch([`link set ${host} down`], { netns: this.netns(LAN) });
    } else {
      this.dropping.add(host);
      await this.applyFilter(host);
    }
  }

  /** Undoes `cut`: the link comes back with the shaping it had. */
  async restore(host: HostName): Promise<void> {
    this.assertOpen();
    checkHost(host);
    this.dropping.delete(host);
    await this.applyFilter(host);
    await ipBatch([`link set ${host} up`], { netns: this.netns(LAN) });
    await Promise.all([
      waitOperUp(this.netns(LAN), [host]),
      waitOperUp(this.netns(host), VM_HOSTS.includes(host) ? [UPLINK, BRIDGE] : [UPLINK]),
    ]);
  }

  private async applyFilter(host: HostName): Promise<void> {
    const rules = nftHostRules(host, this.loss.get(host) ?? 0, this.dropping.has(host));
    await this.nft(rules);
  }

  private async nft(script: string): Promise<void> {
    const ip = toolPath('ip');
    const nft = nftPath();
    await runFile(ip, ['netns', 'exec', this.netns(LAN), nft, '-f', '-'], { input: script });
  }

  /** Runs a command inside a host's namespace and collects its output. Throws LabCommandError
   * on a non-zero exit unless `allowFailure`. */
  exec(host: HostName | typeof LAN, cmd: string, args: readonly string[] = [],
    opts: { allowFailure?: boolean; timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
    this.assertOpen();
    return run('ip', ['netns', 'exec', this.netns(host), cmd, ...args], opts);
  }

  /**
   * Starts a long-running command inside a host's namespace. `ip netns exec` execs the command,
   * so the child's pid is the command's own. It is killed by `down()` if still running.
   */
  spawn(host: HostName | typeof LAN, cmd: string, args: readonly string[] = [], opts: SpawnOptions = {}): ChildProcess {
    this.assertOpen();
    const child = spawn(toolPath('ip'), ['netns', 'exec', this.netns(host), cmd, ...args], opts);
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** One ping from `from` to a host or address: the round-trip time in ms, or null if none
   * came back within `timeoutS`. */
  async ping(from: HostName, to: HostName | string, opts: { timeoutS?: number; sizeBytes?: number } = {}): Promise<number | null> {
    const target = (HOSTS as readonly string[]).includes(to) ? this.address(to as HostName) : to;
    const args = ['-n', '-c', '1', '-W', String(opts.timeoutS ?? 2)];
    if (opts.sizeBytes !== undefined) args.push('-s', String(opts.sizeBytes));
    const r = await this.exec(from, toolPath('ping'), [...args, target], { allowFailure: true, timeoutMs: ((opts.timeoutS ?? 2) + 5) * 1000 });
    if (r.code !== 0) return null;
    const m = /time[=<]([\d.]+) ms/.exec(r.stdout);
    return m ? Number(m[1]) : null;
  }

  /**
   * Serves a disk over NBD from the storage host at storage:port and resolves once nbdkit
   * accepts connections. nbdkit dies with this process (--exit-with-parent) and with `down()`.
   */
  async startNbd(name: string, opts: NbdOptions): Promise<NbdServer> {
    this.assertOpen();
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) throw new LabConfigError(`invalid NBD export name '${name}'`);
    if (this.nbd.has(name)) throw new LabConfigError(`NBD server '${name}' is already running`);
    if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) {
      throw new LabConfigError(`invalid NBD port ${opts.port}`);
    }
    if ((opts.sizeBytes === undefined) === (opts.file === undefined)) {
      throw new LabConfigError('startNbd needs exactly one of sizeBytes or file');
    }
    let plugin: string[];
    if (opts.file !== undefined) {
      await access(opts.file).catch(() => { throw new LabConfigError(`NBD backing file not found: ${opts.file}`); });
      plugin = ['file', `file=${opts.file}`];
    } else {
      if (!Number.isInteger(opts.sizeBytes) || opts.sizeBytes! <= 0) {
        throw new LabConfigError(`invalid NBD disk size ${opts.sizeBytes}`);
      }
      plugin = ['memory', `size=${opts.sizeBytes}`];
    }
    const nbdkit = toolPath('nbdkit');
    this.scratch ??= await mkdtemp(join(tmpdir(), scratchDirPrefix(this.prefix)));
    const pidfile = join(this.scratch, `nbd-${name}.pid`);
    await rm(pidfile, { force: true });
    const child = this.spawn('storage', nbdkit, [
      '--foreground', '--exit-with-parent', '--pidfile', pidfile,
      '--port', String(opts.port), ...(opts.readonly ? ['--readonly'] : []), ...plugin,
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (d: string) => { if (stderr.length < 65536) stderr += d; });
    const server = new NbdServer(name, this.address('storage'), opts.port, child);
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    // nbdkit writes the pid file only once its socket is listening, so its appearance is the
    // readiness signal; polling it avoids needing a process inside the namespace to probe.
    for (;;) {
      if (!server.running) {
        throw new LabNbdError(`nbdkit '${name}' exited before serving (exit ${child.exitCode ?? child.signalCode}): ${stderr.trim() || '(no output)'}`);
      }
      const pid = await readFile(pidfile, 'utf8').catch(() => '');
      if (/^\d+\s*$/.test(pid)) break;
      if (Date.now() > deadline) {
        await server.stop();
        throw new LabNbdError(`nbdkit '${name}' did not accept connections within ${opts.timeoutMs ?? 10_000} ms: ${stderr.trim() || '(no output)'}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    this.nbd.set(name, server);
    child.once('exit', () => { if (this.nbd.get(name) === server) this.nbd.delete(name); });
    return server;
  }

  nbdServers(): NbdServer[] { return [...this.nbd.values()]; }

  /** Tears the lab down completely: processes, namespaces (and with them every bridge, veth and
   * TAP), scratch files. Idempotent. */
  async down(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.nbd.values()].map((s) => s.stop()));
    for (const c of this.children) c.kill('SIGKILL');
    await cleanupLab(this.prefix);
    if (this.scratch) await rm(this.scratch, { recursive: true, force: true });
    this.scratch = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> { await this.down(); }

  private assertOpen(): void {
    if (this.closed) throw new LabNotFoundError(`lab '${this.prefix}' has been torn down`);
  }
}

function nftPath(): string { return toolPath('nft'); }

function networkOf(addr: string, bits: number): string {
  const n = addr.split('.').map(Number).reduce((a, b) => a * 256 + b, 0);
  const size = 2 ** (32 - bits);
  const base = n - (n % size);
  return `${[base >>> 24, (base >>> 16) & 255, (base >>> 8) & 255, base & 255].join('.')}/${bits}`;
}

async function build(prefix: string, subnet: Subnet): Promise<void> {
  const lan = netnsName(prefix, LAN);
  // The veths are created straight inside their namespaces, so the root namespace never sees
  // them; each LAN-side end is named after the host it leads to.
  await ipBatch([
    ...ALL_ROLES.map((r) => `netns add ${netnsName(prefix, r)}`),
    ...HOSTS.map((h) => `link add name ${h} netns ${lan} type veth peer name ${UPLINK} netns ${netnsName(prefix, h)}`),
  ]);
  // addrgenmode none: no IPv6 link-local addresses, so no DAD/router-solicitation chatter to
  // disturb loss and timing measurements.
  const lanLines = [
    'link set lo up',
    `link add ${BRIDGE} type bridge`,
    `link set ${BRIDGE} addrgenmode none`,
    `link set ${BRIDGE} up`,
    ...HOSTS.flatMap((h) => [`link set ${h} addrgenmode none`, `link set ${h} master ${BRIDGE}`, `link set ${h} up`]),
  ];
  const hostLines = (h: HostName): string[] => {
    const addr = `${hostAddress(subnet, h)}/${subnet.bits}`;
    const mac = macFor(hostAddress(subnet, h));
    if (VM_HOSTS.includes(h)) {
      // A fixed bridge MAC: otherwise br0 takes the lowest port MAC and changes it whenever a VM
      // TAP joins or leaves, invalidating every neighbour's ARP entry for the host.
      return [
        'link set lo up',
        `link add ${BRIDGE} type bridge`,
        `link set ${BRIDGE} address ${mac}`,
        `link set ${BRIDGE} addrgenmode none`,
        `link set ${UPLINK} addrgenmode none`,
        `link set ${UPLINK} master ${BRIDGE}`,
        `link set ${UPLINK} up`,
        `addr add ${addr} dev ${BRIDGE}`,
        `link set ${BRIDGE} up`,
      ];
    }
    return [
      'link set lo up',
      `link set ${UPLINK} address ${mac}`,
      `link set ${UPLINK} addrgenmode none`,
      `addr add ${addr} dev ${UPLINK}`,
      `link set ${UPLINK} up`,
    ];
  };
  await Promise.all([
    ipBatch(lanLines, { netns: lan }),
    ...HOSTS.map((h) => ipBatch(hostLines(h), { netns: netnsName(prefix, h) })),
  ]);
  await runFile(toolPath('ip'), ['netns', 'exec', lan, nftPath(), '-f', '-'], { input: nftSetup() });
  await Promise.all([
    waitOperUp(lan, [BRIDGE, ...HOSTS]),
    ...HOSTS.map((h) => waitOperUp(netnsName(prefix, h), VM_HOSTS.includes(h) ? [UPLINK, BRIDGE] : [UPLINK])),
  ]);
}

// The kernel applies carrier changes through linkwatch, which batches non-urgent events for up
// to a second; until then the device has no working qdisc and silently drops what is sent
// (the first ARP request, typically). Waiting for operstate UP makes "up" mean usable.
async function waitOperUp(netns: string, devs: readonly string[], timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await run('ip', ['-j', '-n', netns, 'link', 'show'], { allowFailure: true });
    const links = r.stdout.trim() ? JSON.parse(r.stdout) as { ifname: string; operstate?: string }[] : [];
    const notUp = devs.filter((d) => links.find((l) => l.ifname === d)?.operstate !== 'UP');
    if (notUp.length === 0) return;
    if (Date.now() > deadline) {
      throw new LabNotFoundError(`in ${netns}: ${notUp.join(', ')} did not come up within ${timeoutMs} ms`);
    }
    await new Promise((res) => setTimeout(res, 25));
  }
}

async function readAddress(netns: string, dev: string): Promise<{ local: string; prefixlen: number } | null> {
  const r = await run('ip', ['-j', '-n', netns, '-4', 'addr', 'show', 'dev', dev], { allowFailure: true });
  if (r.code !== 0 || !r.stdout.trim()) return null;
  const parsed = JSON.parse(r.stdout) as { addr_info?: { local?: string; prefixlen?: number }[] }[];
  const info = parsed[0]?.addr_info?.[0];
  return info?.local && info.prefixlen !== undefined ? { local: info.local, prefixlen: info.prefixlen } : null;
}

async function rootQdisc(netns: string, dev: string): Promise<{ kind: string; text: string } | null> {
  const r = await run('tc', ['-n', netns, 'qdisc', 'show', 'dev', dev, 'root'], { allowFailure: true });
  const line = r.stdout.split('\n').find((l) => l.startsWith('qdisc '));
  if (!line) return null;
  const kind = line.split(/\s+/)[1] ?? '';
  if (kind === 'noqueue' || kind === 'noop') return null;
  return { kind, text: line.replace(/^qdisc (\S+) \S+ root (refcnt \d+ )?/, '$1 ').trim() };
}

async function labStatus(prefix: string): Promise<LabStatus> {
  const present = new Set(await listLabNamespaces(prefix));
  const lan = netnsName(prefix, LAN);
  const lanPresent = present.has(lan);
  let rules = '';
  if (lanPresent) {
    const r = await runFile(toolPath('ip'), ['netns', 'exec', lan, nftPath(), 'list', 'table', 'bridge', NFT_TABLE], { allowFailure: true });
    rules = r.stdout;
  }
  const lanLinks = new Map<string, string[]>();
  if (lanPresent) {
    const r = await run('ip', ['-j', '-n', lan, 'link', 'show'], { allowFailure: true });
    const links = r.stdout.trim() ? JSON.parse(r.stdout) as { ifname: string; flags?: string[] }[] : [];
    for (const l of links) lanLinks.set(l.ifname, l.flags ?? []);
  }
  const hosts: LabHostStatus[] = [];
  let subnet: string | null = null;
  for (const name of HOSTS) {
    const netns = netnsName(prefix, name);
    const isPresent = present.has(netns);
    const addr = isPresent ? await readAddress(netns, VM_HOSTS.includes(name) ? BRIDGE : UPLINK) : null;
    if (addr && subnet === null) subnet = networkOf(addr.local, addr.prefixlen);
    const flags = lanLinks.get(name);
    const chain = new RegExp(`chain ${nftChain(name)} \\{([^}]*)\\}`).exec(rules)?.[1] ?? '';
    const ppm = /numgen random mod 1000000 < (\d+)/.exec(chain);
    const pids = isPresent ? await namespacePids(netns) : [];
    const processes = await Promise.all(pids.map(async (pid) => ({
      pid,
      command: (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '?')).trim(),
    })));
    hosts.push({
      name,
      netns,
      present: isPresent,
      address: addr?.local ?? null,
      link: flags === undefined ? 'missing' : flags.includes('UP') ? 'up' : 'down',
      dropping: /\bdrop\b/.test(chain) && !ppm,
      qdisc: lanPresent && flags ? (await rootQdisc(lan, name))?.text ?? null : null,
      lossPercent: ppm ? Number(ppm[1]) / 10_000 : 0,
      processes,
    });
  }
  const state = present.size === 0 ? 'absent' : present.size === ALL_ROLES.length ? 'up' : 'partial';
  return { prefix, state, subnet, lanPresent, hosts };
}
