// `ferry vm ...`: a client of ferryd. Tables for people, --json for scripts; long operations
// (snapshot, restore) show progress on stderr when it is a terminal.

import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, extname, join, resolve } from 'node:path';
import { parseFlags, parseMemory, Options } from './args.js';
import { UsageError } from './errors.js';
import { FerryClient } from '../host/client.js';
import type { VmView } from '../host/daemon.js';
import type { SnapshotResult, VmConfig } from '../vm/types.js';
import type { VmState } from '../vm/lifecycle.js';
import { DeviceSpecError, formatMac, parseDiskSpec, parseMac, parseNetSpec, randomMac } from '../vm/devices.js';

export const DEFAULT_HOST = 'http://127.0.0.1:7480';

export interface GlobalOptions {
  host?: string;
  token?: string;
  state?: string;
}

/** Where `ferry daemon` keeps its state unless told otherwise. */
export function defaultStateDir(): string {
  return process.env['FERRY_STATE'] ?? join(process.env['XDG_STATE_HOME'] ?? join(homedir(), '.local', 'state'), 'ferry');
}

const USAGE = `usage: ferry [--host URL] [--token T | --state DIR] vm <command> [options]

commands:
  list                      the daemon's VMs
  show NAME                 one VM: state, config, allowed commands
  create NAME [options]     define a VM (--start boots it too)
  start|stop|pause|resume NAME
  delete NAME               remove a stopped VM
  console NAME              attach the terminal to the VM's console (Ctrl-A X detaches)
  snapshot NAME FILE        write the VM's state to FILE
  restore FILE [--name N]   make a VM from a snapshot (N defaults to FILE's base name)

common options:
  --host URL     the daemon (default $FERRY_HOST or ${DEFAULT_HOST})
  --token T      the daemon's token (default $FERRY_TOKEN, else read from --state DIR/token)
  --state DIR    the daemon's state directory, to read its token
  --json         machine-readable output`;

const CREATE_HELP = `usage: ferry vm create NAME [options]

  -m, --memory SIZE     guest RAM, MiB or with unit (default 256)
      --net tap[:BRIDGE]  add a NIC on a new TAP, joined to BRIDGE (repeatable)
      --mac MAC         the NIC's MAC, one per --net in order (default: random)
      --ip ADDR/PREFIX[,GATEWAY]  the guest's eth0 address
      --disk SPEC       FILE[,ro], file:FILE[,ro] or nbd://HOST:PORT[/EXPORT] (repeatable)
      --swap NBD        per-VM swap device nbd://HOST:PORT[/EXPORT] (>= RAM) on shared storage:
                        cold pages live there (Agile); needed by \`ferry migrate --mode agile\`
      --kernel FILE, --initramfs FILE, --append ARGS   guest image and command line
      --start           boot it right away`;

const COMMON = {
  host: { type: 'string' },
  token: { type: 'string' },
  state: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export async function vmCommand(argv: string[], globals: GlobalOptions = {}): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'list': case 'ls': return list(rest, globals);
    case 'show': return show(rest, globals);
    case 'create': return create(rest, globals);
    case 'start': case 'stop': case 'pause': case 'resume': return lifecycle(sub, rest, globals);
    case 'delete': case 'rm': return remove(rest, globals);
    case 'console': return consoleAttach(rest, globals);
    case 'snapshot': return snapshot(rest, globals);
    case 'restore': return restore(rest, globals);
    case undefined: case 'help': case '--help': case '-h':
      console.log(USAGE);
      return sub === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown vm command '${sub}'\n\n${USAGE}`);
  }
}

export type Common = { host?: string; token?: string; state?: string; json?: boolean; help?: boolean };

export function parse<T extends Options>(argv: string[], extra: T, positionals: string[]) {
  const parsed = parseFlags(argv, { ...COMMON, ...extra }, true);
  const common = parsed.values as Common;
  if (!common.help && parsed.positionals.length !== positionals.length) {
    throw new UsageError(`expected ${positionals.length === 0 ? 'no arguments' : positionals.join(' ')}, got ${parsed.positionals.length === 0 ? 'none' : `'${parsed.positionals.join(' ')}'`}`);
  }
  return { values: parsed.values, common, args: parsed.positionals };
}

export function connect(common: Common, globals: GlobalOptions): FerryClient {
  const host = common.host ?? globals.host ?? process.env['FERRY_HOST'] ?? DEFAULT_HOST;
  if (!/^https?:\/\/[^/]+\/?$/.test(host)) throw new UsageError(`invalid --host '${host}' (expected http://HOST:PORT)`);
  let token = common.token ?? globals.token ?? process.env['FERRY_TOKEN'];
  if (token === undefined) {
    const dir = common.state ?? globals.state ?? defaultStateDir();
    try {
      token = readFileSync(join(dir, 'token'), 'utf8').trim();
    } catch {
      throw new UsageError(`no token: pass --token, set FERRY_TOKEN, or --state DIR of the daemon (${join(dir, 'token')} is not readable)`);
    }
  }
  return new FerryClient(host, token);
}

function print(common: Common, json: unknown, human: () => string): void {
  console.log(common.json ? JSON.stringify(json, null, 2) : human());
}

export function describeState(state: VmState): string {
  switch (state.kind) {
    case 'stopped': return state.reason && state.reason !== 'stopped' ? `stopped (${state.reason})` : 'stopped';
    case 'failed': return `failed (${state.error})`;
    case 'migrating-out': return `migrating-out (to ${state.to})`;
    case 'migrating-in': return `migrating-in (from ${state.from})`;
    default: return state.kind;
  }
}

export function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

async function list(argv: string[], globals: GlobalOptions): Promise<number> {
  const { common } = parse(argv, {}, []);
  if (common.help) { console.log('usage: ferry vm list [--json]'); return 0; }
  const { vms } = await connect(common, globals).list();
  print(common, vms, () => table([
    ['NAME', 'STATE', 'MEMORY', 'NICS', 'DISKS'],
    ...vms.map((v) => [v.name, describeState(v.state), `${v.config.memoryMiB} MiB`, String(v.config.nets.length), String(v.config.disks.length)]),
  ]));
  return 0;
}

function showText(v: VmView): string {
  const c = v.config;
  const lines: [string, string][] = [
    ['name', v.name],
    ['state', describeState(v.state)],
    ['memory', `${c.memoryMiB} MiB`],
    ...c.nets.map((n, i): [string, string] => [`net${i}`, `${n.mac}${n.bridge ? ` on ${n.bridge}` : ''}`]),
    ...c.disks.map((d, i): [string, string] => [`disk${i}`, d]),
  ];
  if (c.swap) lines.push(['swap', c.swap]);
  const m = v.memory;
  if (m) {
    const mib = (b: number): string => `${(b / (1 << 20)).toFixed(1)} MiB`;
    lines.push(['resident', mib(m.residentBytes)], ['swapped', mib(m.swappedBytes)]);
    if (m.workingSetBytes !== null) {
      const window = m.workingSetWindowMs !== null ? ` (untouched for ${m.workingSetWindowMs / 1000} s is cold)` : '';
      lines.push(['working set', `${mib(m.workingSetBytes)}${window}`]);
    }
    if (m.agileError !== undefined) lines.push(['agile', `failing: ${m.agileError}`]);
  }
  if (c.ip) lines.push(['ip', c.ip]);
  if (c.kernel) lines.push(['kernel', c.kernel]);
  if (c.initramfs) lines.push(['initramfs', c.initramfs]);
  if (c.cmdline) lines.push(['cmdline', c.cmdline]);
  lines.push(['commands', v.allowedCommands.join(', ') || '-']);
  return lines.map(([k, val]) => `${`${k}:`.padEnd(11)}${val}`).join('\n');
}

async function show(argv: string[], globals: GlobalOptions): Promise<number> {
  const { common, args } = parse(argv, {}, ['NAME']);
  if (common.help) { console.log('usage: ferry vm show NAME [--json]'); return 0; }
  const v = await connect(common, globals).show(args[0]!);
  print(common, v, () => showText(v));
  return 0;
}

async function create(argv: string[], globals: GlobalOptions): Promise<number> {
  const { values, common, args } = parse(argv, {
    memory: { type: 'string', short: 'm', default: '256' },
    net: { type: 'string', multiple: true },
    mac: { type: 'string', multiple: true },
    ip: { type: 'string' },
    disk: { type: 'string', multiple: true },
    swap: { type: 'string' },
    kernel: { type: 'string' },
    initramfs: { type: 'string' },
    append: { type: 'string' },
    start: { type: 'boolean' },
  } as const, ['NAME']);
  if (common.help) { console.log(CREATE_HELP); return 0; }
  const nets = values.net ?? [];
  const macs = values.mac ?? [];
  if (macs.length > nets.length) throw new UsageError('each --mac needs a --net');
  if (values.ip !== undefined && nets.length === 0) throw new UsageError('--ip needs --net');
  let config: VmConfig;
  try {
    config = {
      name: args[0]!,
      memoryMiB: parseMemory(values.memory) / (1024 * 1024),
      nets: nets.map((text, i) => {
        const spec = parseNetSpec(text, macs[i] !== undefined ? parseMac(macs[i]!) : randomMac());
        return { mac: formatMac(spec.mac), ...(spec.bridge ? { bridge: spec.bridge } : {}) };
      }),
      disks: (values.disk ?? []).map((d) => {
        const spec = parseDiskSpec(d);
        // The daemon's working directory is not ours: hand it absolute paths.
        if (spec.kind === 'file') return `${resolve(spec.path)}${spec.readOnly ? ',ro' : ''}`;
        return d;
      }),
      ...(values.ip !== undefined ? { ip: values.ip } : {}),
      ...(values.swap !== undefined ? { swap: values.swap } : {}),
      ...(values.kernel !== undefined ? { kernel: resolve(values.kernel) } : {}),
      ...(values.initramfs !== undefined ? { initramfs: resolve(values.initramfs) } : {}),
      ...(values.append !== undefined ? { cmdline: values.append } : {}),
    };
  } catch (err) {
    if (err instanceof DeviceSpecError) throw new UsageError(err.message);
    throw err;
  }
  const client = connect(common, globals);
  let v = await client.request<VmView>('POST', '/v1/vms', config);
  if (values.start) v = await client.request<VmView>('POST', `/v1/vms/${encodeURIComponent(v.name)}/start`);
  print(common, v, () => `${v.name}: ${describeState(v.state)}`);
  return 0;
}

async function lifecycle(action: string, argv: string[], globals: GlobalOptions): Promise<number> {
  const { common, args } = parse(argv, {}, ['NAME']);
  if (common.help) { console.log(`usage: ferry vm ${action} NAME [--json]`); return 0; }
  const v = await connect(common, globals).request<VmView>('POST', `/v1/vms/${encodeURIComponent(args[0]!)}/${action}`);
  print(common, v, () => `${v.name}: ${describeState(v.state)}`);
  return 0;
}

async function remove(argv: string[], globals: GlobalOptions): Promise<number> {
  const { common, args } = parse(argv, {}, ['NAME']);
  if (common.help) { console.log('usage: ferry vm delete NAME'); return 0; }
  await connect(common, globals).request('DELETE', `/v1/vms/${encodeURIComponent(args[0]!)}`);
  print(common, { deleted: args[0] }, () => `${args[0]}: deleted`);
  return 0;
}

/** Runs `op` while showing the VM's progress events on stderr (a bar, or a spinner until the first). */
async function withProgress<T>(client: FerryClient, vm: string, label: string, op: () => Promise<T>): Promise<T> {
  if (!process.stderr.isTTY) return op();
  const abort = new AbortController();
  const frames = ['|', '/', '-', '\\'];
  let tick = 0;
  let line = `${label} ${frames[0]}`;
  const draw = (): void => { process.stderr.write(`\r\x1b[K${line}`); };
  const spinner = setInterval(() => {
    if (!line.includes('[')) { line = `${label} ${frames[++tick % frames.length]}`; draw(); }
  }, 120);
  const watching = (async () => {
    for await (const ev of client.events(abort.signal)) {
      if (ev.vm !== vm || ev.type !== 'progress' || ev.total <= 0) continue;
      const frac = Math.min(1, ev.done / ev.total);
      const width = 30;
      const filled = Math.round(frac * width);
      line = `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${Math.round(frac * 100)}% ${ev.operation}`;
      draw();
    }
  })().catch(() => undefined);
  draw();
  try {
    return await op();
  } finally {
    clearInterval(spinner);
    abort.abort();
    await watching;
    process.stderr.write('\r\x1b[K');
  }
}

async function snapshot(argv: string[], globals: GlobalOptions): Promise<number> {
  const { common, args } = parse(argv, {}, ['NAME', 'FILE']);
  if (common.help) { console.log('usage: ferry vm snapshot NAME FILE [--json]'); return 0; }
  const [name, file] = args as [string, string];
  const client = connect(common, globals);
  const result = await withProgress(client, name, `snapshot ${name}`, () =>
    client.request<SnapshotResult>('POST', `/v1/vms/${encodeURIComponent(name)}/snapshot`, { file: resolve(file) }));
  print(common, result, () => `${name}: snapshot ${result.file} (${(result.bytes / (1024 * 1024)).toFixed(1)} MiB in ${result.ms} ms)`);
  return 0;
}

async function restore(argv: string[], globals: GlobalOptions): Promise<number> {
  const { values, common, args } = parse(argv, {
    name: { type: 'string' },
    from: { type: 'string' },
    paused: { type: 'boolean' },
  } as const, ['FILE']);
  if (common.help) {
    console.log(`usage: ferry vm restore FILE [--name N] [--from VM] [--paused]

  --name N    the VM to restore (default: FILE's base name); an existing one keeps its config
  --from VM   a new VM takes VM's config (devices, memory) under its own name
  --paused    leave it paused instead of running`);
    return 0;
  }
  const file = resolve(args[0]!);
  const name = values.name ?? basename(file, extname(file));
  const client = connect(common, globals);
  const body: Record<string, unknown> = { name, file, paused: values.paused ?? false };
  if (values.from !== undefined) body['config'] = { ...(await client.show(values.from)).config, name };
  const v = await withProgress(client, name, `restore ${name}`, () => client.request<VmView>('POST', '/v1/vms/restore', body));
  print(common, v, () => `${v.name}: ${describeState(v.state)}`);
  return 0;
}

const CTRL_A = 0x01;

async function consoleAttach(argv: string[], globals: GlobalOptions): Promise<number> {
  const { common, args } = parse(argv, {}, ['NAME']);
  if (common.help) { console.log('usage: ferry vm console NAME   (Ctrl-A X detaches, Ctrl-A Ctrl-A sends Ctrl-A)'); return 0; }
  const name = args[0]!;
  const client = connect(common, globals);
  await client.show(name); // a clear error for an unknown VM before the terminal goes raw
  const abort = new AbortController();
  const path = `/v1/vms/${encodeURIComponent(name)}/console`;
  // Keystrokes are posted in order, one request at a time.
  let sending: Promise<unknown> = Promise.resolve();
  let escaped = false;
  const send = (bytes: number[]): void => {
    const data = Buffer.from(bytes).toString('base64');
    sending = sending.then(() => client.request('POST', path, { data })).catch((err: unknown) => {
      process.stderr.write(`\r\nferry: ${err instanceof Error ? err.message : String(err)}\r\n`);
    });
  };
  const onData = (chunk: Buffer): void => {
    const out: number[] = [];
    for (const b of chunk) {
      if (escaped) {
        escaped = false;
        if (b === 0x78 || b === 0x58) { abort.abort(); return; }
        if (b === CTRL_A) out.push(CTRL_A);
        continue;
      }
      if (b === CTRL_A) { escaped = true; continue; }
      out.push(b);
    }
    if (out.length > 0) send(out);
  };
  process.stderr.write(`[attached to ${name}; Ctrl-A X detaches]\r\n`);
  if (process.stdin.isTTY) process.stdin.setRawMode(true);
  process.stdin.on('data', onData);
  process.stdin.on('end', () => abort.abort());
  process.stdin.resume();
  try {
    for await (const m of client.stream(path, abort.signal)) {
      if (m.event === 'output') process.stdout.write(Buffer.from(m.data, 'base64'));
    }
  } finally {
    process.stdin.off('data', onData);
    if (process.stdin.isTTY) process.stdin.setRawMode(false);
    process.stdin.pause();
    abort.abort();
    await sending;
  }
  process.stderr.write(`\r\n[detached from ${name}]\n`);
  return 0;
}
