// Finding and removing a lab by its prefix, whether or not the process that built it is alive.
// Everything the lab creates lives in its namespaces (bridges, veths, TAPs, processes), plus
// a scratch directory under the OS temp dir, so that is all there is to remove.

import { readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ALL_ROLES, checkPrefix, netnsName } from './topology.js';
import { ipBatch, run } from './run.js';

export interface CleanupReport {
  namespaces: string[];
  killed: number[];
  scratchDirs: string[];
}

/** Names of the lab's namespaces that currently exist. Only exact role names match, so a short
 * prefix can never sweep up someone else's namespaces. */
export async function listLabNamespaces(prefix: string): Promise<string[]> {
  checkPrefix(prefix);
  const wanted = new Set<string>(ALL_ROLES.map((r) => netnsName(prefix, r)));
  return (await listNamespaces()).filter((n) => wanted.has(n));
}

export async function listNamespaces(): Promise<string[]> {
  const { stdout } = await run('ip', ['-j', 'netns', 'list']);
  if (stdout.trim() === '') return [];
  const parsed: unknown = JSON.parse(stdout);
  if (!Array.isArray(parsed)) return [];
  return parsed.flatMap((e: unknown) =>
    e !== null && typeof e === 'object' && 'name' in e && typeof e.name === 'string' ? [e.name] : []);
}

/** Processes whose network namespace is `netns`. */
export async function namespacePids(netns: string): Promise<number[]> {
  const { stdout } = await run('ip', ['netns', 'pids', netns], { allowFailure: true });
  return stdout.split(/\s+/).filter((s) => /^\d+$/.test(s)).map(Number);
}

async function isGone(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // A zombie no longer holds its namespaces; its parent may just not have reaped it yet.
    return /^\d+ \(.*\) Z /s.test(stat);
  } catch {
    return true;
  }
}

/** SIGKILLs every process in the given namespaces and waits until they are gone. */
export async function killNamespaceProcesses(namespaces: readonly string[], timeoutMs = 5000): Promise<number[]> {
  const pids = (await Promise.all(namespaces.map(namespacePids))).flat();
  for (const pid of pids) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* already exited */ }
  }
  const deadline = Date.now() + timeoutMs;
  for (const pid of pids) {
    while (!(await isGone(pid)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  }
  return pids;
}

/** Scratch directories of labs with this prefix (nbdkit pid files live there). */
export function scratchDirPrefix(prefix: string): string {
  return `${prefix}lab-`;
}

async function listScratchDirs(prefix: string): Promise<string[]> {
  const start = scratchDirPrefix(prefix);
  const names = await readdir(tmpdir()).catch(() => [] as string[]);
  return names.filter((n) => n.startsWith(start) && /^[A-Za-z0-9]{6}$/.test(n.slice(start.length))).map((n) => join(tmpdir(), n));
}

/**
 * Removes every trace of the lab with this prefix: kills the processes in its namespaces,
 * deletes the namespaces (which destroys their bridges, veths and TAPs with them) and its
 * scratch directories. Idempotent: cleaning an absent lab does nothing.
 */
export async function cleanupLab(prefix: string): Promise<CleanupReport> {
  checkPrefix(prefix);
  const namespaces = await listLabNamespaces(prefix);
  const killed = await killNamespaceProcesses(namespaces);
  if (namespaces.length > 0) await ipBatch(namespaces.map((n) => `netns delete ${n}`), { force: true });
  const left = await listLabNamespaces(prefix);
  if (left.length > 0) {
    // A concurrent `ip netns add` could race with the delete; one more pass settles it.
    await ipBatch(left.map((n) => `netns delete ${n}`), { force: true });
  }
  const scratchDirs = await listScratchDirs(prefix);
  await Promise.all(scratchDirs.map((d) => rm(d, { recursive: true, force: true })));
  return { namespaces, killed, scratchDirs };
}
