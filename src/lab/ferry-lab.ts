// ferry's daemons in the lab: ferryd on host-a and host-b (API and migration port on each host's
// LAN address), and a way to run a program on the client host, which reaches both over the LAN.
// The demo and the migration benchmark run their operator side there, as a user on the LAN
// would, while this process (root namespace) only owns the lab.

import { mkdirSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { Lab } from './lab.js';
import { repoRoot } from '../guest/paths.js';
import { FerryError } from '../errors.js';

export const LAB_API_PORT = 7480;
export const LAB_MIGRATION_PORT = 7481;
export const FERRY_HOSTS = ['host-a', 'host-b'] as const;
export type FerryHost = typeof FERRY_HOSTS[number];

/** What a program on the client host needs to reach the daemons and place a VM. */
export interface LabFerrySpec {
  readonly prefix: string;
  readonly hosts: Record<FerryHost, { readonly url: string; readonly token: string; readonly address: string }>;
  readonly vm: { readonly address: string; readonly mac: string; readonly prefixLength: number };
  /** An NBD export on the storage host both daemons reach, `nbd://…`. */
  readonly disk?: string;
}

export const FERRY_BIN = join(repoRoot(), 'bin/ferry.js');

export interface LabDaemons {
  readonly spec: LabFerrySpec;
  /** The ferryd processes (killed by lab.down()); a test may kill one and start it again. */
  readonly processes: Record<FerryHost, ChildProcess>;
}

/** Starts ferryd on host-a and host-b; resolves once both answer. */
export async function startLabDaemons(lab: Lab, workDir: string, opts: { disk?: string; log?: (s: string) => void } = {}): Promise<LabDaemons> {
  const hosts = {} as Record<FerryHost, { url: string; token: string; address: string }>;
  const processes = {} as Record<FerryHost, ChildProcess>;
  for (const host of FERRY_HOSTS) {
    processes[host] = await startLabDaemon(lab, host, workDir, opts.log);
    const address = lab.address(host);
    hosts[host] = { url: `http://${address}:${LAB_API_PORT}`, token: readToken(join(workDir, host)), address };
  }
  const address = lab.vmAddress(0);
  const spec: LabFerrySpec = {
    prefix: lab.prefix,
    hosts,
    vm: { address, mac: lab.vmMac(0), prefixLength: lab.prefixLength },
    ...(opts.disk !== undefined ? { disk: opts.disk } : {}),
  };
  return { spec, processes };
}

/** ferryd on one host, its state in workDir/<host> (the same on a restart, so the token holds). */
export async function startLabDaemon(lab: Lab, host: FerryHost, workDir: string, log?: (s: string) => void): Promise<ChildProcess> {
  const state = join(workDir, host);
  mkdirSync(state, { recursive: true });
  const address = lab.address(host);
  const child = lab.spawn(host, process.execPath, [
    FERRY_BIN, 'daemon', '--state', state,
    '--listen', `${address}:${LAB_API_PORT}`, '--migration-listen', `${address}:${LAB_MIGRATION_PORT}`,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  await listening(child, host, log);
  return child;
}

function readToken(state: string): string {
  const file = join(state, 'token');
  if (!existsSync(file)) throw new FerryError('LAB_DAEMON', `ferryd wrote no token in ${state}`);
  return readFileSync(file, 'utf8').trim();
}

function listening(child: ChildProcess, host: string, log?: (s: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new FerryError('LAB_DAEMON', `ferryd on ${host} did not start within 30 s: ${err}`)), 30_000);
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      if (/ferryd migrations on /.test(out)) { clearTimeout(timer); resolve(); }
    });
    child.stderr!.on('data', (b: Buffer) => {
      err += b.toString();
      for (const line of b.toString().split('\n')) if (line.trim() !== '') log?.(`${host}: ${line}`);
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new FerryError('LAB_DAEMON', `ferryd on ${host} exited (${code}): ${err}`)); });
  });
}

/**
 * Runs a node script (`nodeArgs[0]`, e.g. FERRY_BIN) on the client host with the spec in the
 * environment and stdin closed; passes its stderr to `onStderr` and returns its exit status and
 * stdout, so a caller can show what a failed run printed.
 */
export function runOnClient(lab: Lab, spec: LabFerrySpec, nodeArgs: readonly string[], onStderr: (s: string) => void): Promise<{ code: number | null; stdout: string }> {
  const child = spawnOnClient(lab, spec, nodeArgs);
  child.stdin!.end();
  let stdout = '';
  child.stdout!.on('data', (b: Buffer) => { stdout += b.toString(); });
  child.stderr!.on('data', (b: Buffer) => onStderr(b.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout })));
}

/** A node script on the client host with the spec in its environment, all stdio piped. */
export function spawnOnClient(lab: Lab, spec: LabFerrySpec, nodeArgs: readonly string[]): ChildProcess {
  return lab.spawn('client', process.execPath, nodeArgs, {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, FERRY_LAB_SPEC: JSON.stringify(spec) },
  });
}

/** The spec a client-side program was started with. */
export function labSpecFromEnv(): LabFerrySpec {
  const text = process.env['FERRY_LAB_SPEC'];
  if (!text) throw new FerryError('LAB_CLIENT', 'FERRY_LAB_SPEC is not set: this runs on the lab\'s client host, started by `ferry demo` or `npm run bench:migrate`');
  return JSON.parse(text) as LabFerrySpec;
}
