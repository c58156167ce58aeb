// Picks the kernel modules the guest needs out of an extracted Debian kernel package. The package
// ships no modules.dep (depmod runs at install time), so dependencies are read from each module's
// own .modinfo section instead of requiring depmod on the host.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { GuestImageError } from './errors.js';
import { run } from './exec.js';

/** Modules the guest loads at boot, in preferred load order (dependencies are pulled in first). */
export const WANTED_MODULES: readonly string[] = [
  'virtio_mmio', 'failover', 'net_failover', 'virtio_net', 'virtio_blk', 'virtio_balloon', 'virtio_rng',
];

/** Modules shipped in the initramfs but loaded only when used (`modprobe ext4`): loading a
 * module costs the interpreted guest its signature check and relocation, and ext4 alone would
 * double the boot time. ext4 asks the crypto API for crc32c at mount time, which no symbol
 * dependency pulls in, hence crc32c_generic. */
export const ON_DEMAND_MODULES: readonly string[] = ['crc32c_generic', 'ext4'];

/** The kernel treats '-' and '_' in module names as the same character. */
export function canonicalModuleName(name: string): string {
  return name.replace(/-/g, '_');
}

export interface ModuleFile {
  name: string;
  /** Path relative to the modules directory, without compression suffix: kernel/drivers/net/virtio_net.ko */
  relPath: string;
  /** The (possibly compressed) file inside the extracted package. */
  source: string;
}

export interface ResolvedModule extends ModuleFile {
  data: Buffer;
  depends: string[];
}

export interface ModuleSelection {
  /** Modules to ship, dependencies before dependents. */
  modules: ResolvedModule[];
  /** Wanted modules the kernel has built in. */
  builtin: string[];
  /** Wanted modules that are neither built in nor shipped. */
  missing: string[];
}

/** Index of every module file under `modulesDir` (…/lib/modules/<version>). */
export function indexModules(modulesDir: string): Map<string, ModuleFile> {
  const index = new Map<string, ModuleFile>();
  const walk = (dir: string): void => {
    for (const ent of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, ent.name);
      if (ent.isDirectory()) walk(p);
      else {
        const m = /^(.*)\.ko(\.xz|\.zst|\.gz)?$/.exec(ent.name);
        if (!m) continue;
        const rel = relative(modulesDir, p).replace(/\.(xz|zst|gz)$/, '');
        index.set(canonicalModuleName(m[1]!), { name: canonicalModuleName(m[1]!), relPath: rel, source: p });
      }
    }
  };
  const kernelDir = join(modulesDir, 'kernel');
  if (!existsSync(kernelDir)) throw new GuestImageError('GUEST_NO_MODULES', `no kernel/ directory under ${modulesDir}`);
  walk(kernelDir);
  return index;
}

export function builtinModules(modulesDir: string): Set<string> {
  const f = join(modulesDir, 'modules.builtin');
  const out = new Set<string>();
  if (!existsSync(f)) return out;
  for (const line of readFileSync(f, 'utf8').split('\n')) {
    const m = /([^/]+)\.ko$/.exec(line.trim());
    if (m) out.add(canonicalModuleName(m[1]!));
  }
  return out;
}

/** Returns the strings of a kernel module's .modinfo ELF section ("depends=a,b", "vermagic=…"). */
export function readModinfo(ko: Uint8Array): Map<string, string[]> {
  const b = Buffer.from(ko.buffer, ko.byteOffset, ko.byteLength);
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46) throw new GuestImageError('GUEST_BAD_MODULE', 'not an ELF file');
  if (b[4] !== 2 || b[5] !== 1) throw new GuestImageError('GUEST_BAD_MODULE', 'expected a little-endian ELF64 module');
  const shoff = Number(b.readBigUInt64LE(0x28));
  const shentsize = b.readUInt16LE(0x3a);
  const shnum = b.readUInt16LE(0x3c);
  const shstrndx = b.readUInt16LE(0x3e);
  const sect = (i: number): { name: number; offset: number; size: number } => {
    const o = shoff + i * shentsize;
    if (o + 64 > b.length) throw new GuestImageError('GUEST_BAD_MODULE', 'section header out of range');
    return { name: b.readUInt32LE(o), offset: Number(b.readBigUInt64LE(o + 0x18)), size: Number(b.readBigUInt64LE(o + 0x20)) };
  };
  const strtab = sect(shstrndx);
  const info = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = sect(i);
    const nameStart = strtab.offset + s.name;
    const nameEnd = b.indexOf(0, nameStart);
    if (b.toString('latin1', nameStart, nameEnd) !== '.modinfo') continue;
    for (const entry of b.toString('utf8', s.offset, s.offset + s.size).split('\0')) {
      const eq = entry.indexOf('=');
      if (eq <= 0) continue;
      const key = entry.slice(0, eq);
      info.set(key, [...(info.get(key) ?? []), entry.slice(eq + 1)]);
    }
    return info;
  }
  throw new GuestImageError('GUEST_BAD_MODULE', 'module has no .modinfo section');
}

async function loadModuleFile(f: ModuleFile): Promise<Buffer> {
  if (f.source.endsWith('.xz')) return (await run('xz', ['-dc', f.source])).stdout;
  if (f.source.endsWith('.zst')) return (await run('zstd', ['-dcq', f.source])).stdout;
  if (f.source.endsWith('.gz')) return (await run('gzip', ['-dc', f.source])).stdout;
  return readFileSync(f.source);
}

/** Resolves `wanted` plus their transitive dependencies and returns them decompressed, in load order. */
export async function selectModules(modulesDir: string, wanted: readonly string[] = WANTED_MODULES): Promise<ModuleSelection> {
  const index = indexModules(modulesDir);
  const builtin = builtinModules(modulesDir);
  const loaded = new Map<string, ResolvedModule>();
  const order: ResolvedModule[] = [];
  const builtinHit: string[] = [];
  const missing: string[] = [];
  const visiting = new Set<string>();

  const visit = async (raw: string, requiredBy: string | undefined): Promise<void> => {
    const name = canonicalModuleName(raw);
    if (loaded.has(name)) return;
    if (visiting.has(name)) throw new GuestImageError('GUEST_MODULE_CYCLE', `module dependency cycle through ${name}`);
    const file = index.get(name);
    if (!file) {
      if (builtin.has(name)) { if (!requiredBy) builtinHit.push(name); return; }
      if (requiredBy) {
        throw new GuestImageError('GUEST_MODULE_MISSING', `module ${requiredBy} depends on ${name}, which is neither built in nor shipped`);
      }
      missing.push(name);
      return;
    }
    visiting.add(name);
    const data = await loadModuleFile(file);
    const depends = (readModinfo(data).get('depends')?.[0] ?? '').split(',').filter((d) => d !== '').map(canonicalModuleName);
    for (const dep of depends) await visit(dep, name);
    visiting.delete(name);
    const mod: ResolvedModule = { ...file, data, depends };
    loaded.set(name, mod);
    order.push(mod);
  };
  for (const w of wanted) await visit(w, undefined);
  return { modules: order, builtin: builtinHit, missing };
}

/** modules.dep in the format busybox modprobe reads, so `modprobe` works in the guest shell. */
export function modulesDep(mods: readonly ResolvedModule[]): string {
  const byName = new Map(mods.map((m) => [m.name, m]));
  const closure = (m: ResolvedModule, acc: string[]): string[] => {
    for (const d of m.depends) {
      const dm = byName.get(d);
      if (dm && !acc.includes(dm.relPath)) { acc.push(dm.relPath); closure(dm, acc); }
    }
    return acc;
  };
  return mods.map((m) => `${m.relPath}:${closure(m, []).map((p) => ` ${p}`).join('')}\n`).join('');
}
