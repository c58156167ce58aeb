// Builds (or finds in the cache) the guest image: a Debian riscv64 kernel plus ferry's initramfs.
//
// Caching rule: the manifest records the package versions of the last build and a hash over
// everything that shapes the output (those versions, /init, the guest programs' sources and
// flags, and this builder's own code). When the hash still matches and the files exist, the
// cached image is returned without touching the network. Package versions are only re-resolved
// (apt-get update) when a .deb has to be downloaded or when `force` is set, so a new Debian
// kernel never sneaks in between two test runs.
import { createHash } from 'node:crypto';
import {
  copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GUEST_CFLAGS, GUEST_PROGRAMS, compileGuestProgram, programSource } from './compile.js';
import {
  BUSYBOX_PACKAGE, DEBIAN_SUITE, type PackageRef, PrivateApt, debFileName, debIdentity, extractDeb, hostDebianMirror,
} from './debian.js';
import { GuestImageError } from './errors.js';
import { requireTools } from './exec.js';
import { buildInitramfs } from './initramfs.js';
import { ON_DEMAND_MODULES, WANTED_MODULES, modulesDep, selectModules } from './modules.js';
import { guestSourceDir, repoRoot } from './paths.js';

export interface GuestImage {
  /** Kernel image: a PE/EFI file that is also a RISC-V `Image`, loaded at RAM base + 2 MiB. */
  kernel: string;
  /** gzip'd newc cpio. */
  initramfs: string;
  kernelVersion: string;
  /** Modules shipped in the initramfs, in the order /init loads them. */
  modules: string[];
}

export interface GuestImageOptions {
  cacheDir?: string;
  log?: (msg: string) => void;
  /** Re-resolve package versions and rebuild even if the cache is current. */
  force?: boolean;
}

export interface GuestImageManifest {
  format: number;
  hash: string;
  builtAt: string;
  mirror: string;
  suite: string;
  packages: { kernel: PackageRef; busybox: PackageRef };
  kernelVersion: string;
  /** File names relative to the cache directory. */
  kernel: string;
  initramfs: string;
  modules: string[];
  builtinModules: string[];
  missingModules: string[];
  programs: string[];
  sizes: { kernel: number; initramfs: number };
}

const MANIFEST_FORMAT = 1;
const MANIFEST = 'manifest.json';
const INITRAMFS = 'initramfs.cpio.gz';
/** Builder modules whose code shapes the output; their compiled text is part of the input hash. */
const BUILDER_MODULES = ['image.js', 'initramfs.js', 'cpio.js', 'modules.js', 'compile.js'];
const BUILD_TOOLS = ['apt-get', 'apt-cache', 'dpkg-deb', 'xz', 'riscv64-linux-gnu-gcc'];

export function defaultCacheDir(): string {
  return join(repoRoot(), 'build', 'guest');
}

export function initScriptPath(): string {
  return join(guestSourceDir(), 'init.sh');
}

/** RISC-V `Image` header: "RSC\x05" at 0x38 (arch/riscv/include/asm/image.h). */
export function isRiscvImage(head: Uint8Array): boolean {
  return head.length >= 0x3c && head[0x38] === 0x52 && head[0x39] === 0x53 && head[0x3a] === 0x43 && head[0x3b] === 0x05;
}

export function inputHash(packages: GuestImageManifest['packages']): string {
  const h = createHash('sha256');
  const part = (label: string, data: string | Uint8Array): void => {
    h.update(`${label}\0${typeof data === 'string' ? Buffer.byteLength(data) : data.length}\0`);
    h.update(data);
  };
  part('format', String(MANIFEST_FORMAT));
  part('kernel', `${packages.kernel.name}=${packages.kernel.version}`);
  part('busybox', `${packages.busybox.name}=${packages.busybox.version}`);
  part('init', readFileSync(initScriptPath()));
  part('modules', WANTED_MODULES.join(','));
  part('on-demand modules', ON_DEMAND_MODULES.join(','));
  part('cflags', GUEST_CFLAGS.join(' '));
  for (const p of GUEST_PROGRAMS) part(`program:${p}`, readFileSync(programSource(p)));
  const here = dirname(fileURLToPath(import.meta.url));
  for (const m of BUILDER_MODULES) part(`builder:${m}`, readFileSync(join(here, m)));
  return h.digest('hex');
}

export function readManifest(cacheDir: string): GuestImageManifest | undefined {
  const f = join(cacheDir, MANIFEST);
  if (!existsSync(f)) return undefined;
  try {
    const m = JSON.parse(readFileSync(f, 'utf8')) as GuestImageManifest;
    return m.format === MANIFEST_FORMAT ? m : undefined;
  } catch {
    return undefined;
  }
}

function toImage(cacheDir: string, m: GuestImageManifest): GuestImage {
  return { kernel: join(cacheDir, m.kernel), initramfs: join(cacheDir, m.initramfs), kernelVersion: m.kernelVersion, modules: [...m.modules] };
}

function outputsExist(cacheDir: string, m: GuestImageManifest): boolean {
  return existsSync(join(cacheDir, m.kernel)) && existsSync(join(cacheDir, m.initramfs));
}

function debPath(cacheDir: string, ref: PackageRef): string {
  return join(cacheDir, 'debs', debFileName(ref));
}

export interface GuestImageStatus {
  cacheDir: string;
  manifest: GuestImageManifest | undefined;
  /** The cached image exists and matches the current sources (ensureGuestImage would not rebuild). */
  current: boolean;
}

/** What is in the cache, without building or touching the network. */
export function guestImageStatus(opts: { cacheDir?: string } = {}): GuestImageStatus {
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  const manifest = readManifest(cacheDir);
  const current = manifest !== undefined && outputsExist(cacheDir, manifest) && inputHash(manifest.packages) === manifest.hash;
  return { cacheDir, manifest, current };
}

export async function ensureGuestImage(opts: GuestImageOptions = {}): Promise<GuestImage> {
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  const log = opts.log ?? ((): void => {});
  mkdirSync(cacheDir, { recursive: true });

  // Fast path, lock-free: a finished build is only ever replaced by renames.
  if (!opts.force) {
    const st = guestImageStatus({ cacheDir });
    if (st.current && st.manifest) return toImage(cacheDir, st.manifest);
  }

  const release = await acquireLock(cacheDir, log);
  try {
    const manifest = readManifest(cacheDir);
    let packages = !opts.force && manifest ? manifest.packages : undefined;
    if (packages && ![packages.kernel, packages.busybox].every((p) => existsSync(debPath(cacheDir, p)))) packages = undefined;
    if (!opts.force && manifest && packages && manifest.hash === inputHash(packages) && outputsExist(cacheDir, manifest)) {
      return toImage(cacheDir, manifest); // another process finished the build while we waited
    }

    await requireTools(BUILD_TOOLS);
    const mirror = packages && manifest ? manifest.mirror : hostDebianMirror();
    let apt: PrivateApt | undefined;
    const getApt = (): PrivateApt => (apt ??= new PrivateApt(join(cacheDir, 'apt'), mirror, log));
    if (!packages) {
      const a = getApt();
      packages = { kernel: await a.resolveKernelPackage(), busybox: await a.resolve(BUSYBOX_PACKAGE) };
      log(`resolved ${packages.kernel.name} ${packages.kernel.version}, ${packages.busybox.name} ${packages.busybox.version}`);
    }
    mkdirSync(join(cacheDir, 'debs'), { recursive: true });
    for (const ref of [packages.kernel, packages.busybox]) {
      const dest = debPath(cacheDir, ref);
      if (!existsSync(dest)) await getApt().download(ref, dest);
    }
    return toImage(cacheDir, await build(cacheDir, mirror, packages, log));
  } finally {
    release();
  }
}

async function build(cacheDir: string, mirror: string, packages: GuestImageManifest['packages'], log: (msg: string) => void): Promise<GuestImageManifest> {
  const hash = inputHash(packages);
  const work = join(cacheDir, `work-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    const root = join(work, 'root');
    for (const ref of [packages.kernel, packages.busybox]) {
      const deb = debPath(cacheDir, ref);
      const id = await debIdentity(deb);
      if (id.name !== ref.name || id.version !== ref.version) {
        rmSync(deb, { force: true });
        throw new GuestImageError('GUEST_BAD_DEB', `${deb} contains ${id.name} ${id.version}, expected ${ref.name} ${ref.version}; removed it, run the build again`);
      }
      log(`extracting ${ref.name} ${ref.version}`);
      await extractDeb(deb, root);
    }

    const vmlinuxes = readdirSync(join(root, 'boot')).filter((f) => f.startsWith('vmlinux-') || f.startsWith('vmlinuz-'));
    if (vmlinuxes.length !== 1) {
      throw new GuestImageError('GUEST_NO_KERNEL', `expected one /boot/vmlinux-* in ${packages.kernel.name}, found ${vmlinuxes.join(', ') || 'none'}`);
    }
    const kernelFile = vmlinuxes[0]!;
    const kernelVersion = kernelFile.replace(/^vmlinu[xz]-/, '');
    const kernelSrc = join(root, 'boot', kernelFile);
    if (!isRiscvImage(readFileSync(kernelSrc).subarray(0, 0x40))) {
      throw new GuestImageError('GUEST_NO_KERNEL', `${kernelFile} has no RISC-V Image header (magic "RSC\\x05" at 0x38)`);
    }
    const modulesDir = [join(root, 'usr/lib/modules', kernelVersion), join(root, 'lib/modules', kernelVersion)].find((d) => existsSync(d));
    if (!modulesDir) throw new GuestImageError('GUEST_NO_MODULES', `no modules directory for ${kernelVersion} in ${packages.kernel.name}`);
    const busybox = [join(root, 'usr/bin/busybox'), join(root, 'bin/busybox')].find((f) => existsSync(f));
    if (!busybox) throw new GuestImageError('GUEST_NO_BUSYBOX', `no busybox binary in ${packages.busybox.name}`);

    const atBoot = new Set((await selectModules(modulesDir)).modules.map((m) => m.name));
    const sel = await selectModules(modulesDir, [...WANTED_MODULES, ...ON_DEMAND_MODULES]);
    log(`modules: ${sel.modules.map((m) => m.name).join(' ')}` +
      (sel.builtin.length ? `; built in: ${sel.builtin.join(' ')}` : '') +
      (sel.missing.length ? `; NOT AVAILABLE: ${sel.missing.join(' ')}` : ''));

    const programs: Array<{ name: string; data: Buffer }> = [];
    for (const name of GUEST_PROGRAMS) {
      log(`compiling ${name}`);
      const out = join(work, 'programs', name);
      await compileGuestProgram(name, out);
      programs.push({ name, data: readFileSync(out) });
    }

    const info = [
      `suite=${DEBIAN_SUITE}`,
      `kernel_package=${packages.kernel.name} ${packages.kernel.version}`,
      `busybox_package=${packages.busybox.name} ${packages.busybox.version}`,
      `kernel_version=${kernelVersion}`,
      `modules=${sel.modules.map((m) => m.name).join(' ')}`,
      `builtin_modules=${sel.builtin.join(' ')}`,
      `missing_modules=${sel.missing.join(' ')}`,
      `input_hash=${hash}`,
    ].join('\n') + '\n';
    const initramfs = buildInitramfs({
      kernelVersion,
      init: readFileSync(initScriptPath(), 'utf8'),
      busybox: readFileSync(busybox),
      modules: sel.modules.map((m) => ({ ...m, loadAtBoot: atBoot.has(m.name) })),
      modulesDep: modulesDep(sel.modules),
      programs,
      imageInfo: info,
    });

    // Publish by rename so a concurrent reader never sees a half-written file.
    const kernelName = `vmlinux-${kernelVersion}`;
    copyFileSync(kernelSrc, join(work, kernelName));
    renameSync(join(work, kernelName), join(cacheDir, kernelName));
    writeFileSync(join(work, INITRAMFS), initramfs);
    renameSync(join(work, INITRAMFS), join(cacheDir, INITRAMFS));

    const manifest: GuestImageManifest = {
      format: MANIFEST_FORMAT,
      hash,
      builtAt: new Date().toISOString(),
      mirror,
      suite: DEBIAN_SUITE,
      packages,
      kernelVersion,
      kernel: kernelName,
      initramfs: INITRAMFS,
      modules: sel.modules.map((m) => m.name),
      builtinModules: sel.builtin,
      missingModules: sel.missing,
      programs: [...GUEST_PROGRAMS],
      sizes: { kernel: statSync(join(cacheDir, kernelName)).size, initramfs: initramfs.length },
    };
    writeFileSync(join(work, MANIFEST), JSON.stringify(manifest, null, 2) + '\n');
    renameSync(join(work, MANIFEST), join(cacheDir, MANIFEST));
    pruneCache(cacheDir, manifest);
    log(`built ${join(cacheDir, kernelName)} and ${join(cacheDir, INITRAMFS)} (${initramfs.length} bytes)`);
    return manifest;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Drops kernels and .debs the current manifest no longer refers to (the kernel .deb is ~110 MB). */
function pruneCache(cacheDir: string, m: GuestImageManifest): void {
  for (const f of readdirSync(cacheDir)) {
    if (f.startsWith('vmlinux-') && f !== m.kernel) rmSync(join(cacheDir, f), { force: true });
  }
  const keep = new Set([debFileName(m.packages.kernel), debFileName(m.packages.busybox)]);
  for (const f of readdirSync(join(cacheDir, 'debs'))) {
    if (f.endsWith('.deb') && !keep.has(f)) rmSync(join(cacheDir, 'debs', f), { force: true });
  }
}

/** Modification time of the lock, or now if it vanished meanwhile. */
function lockMtime(lock: string): number {
  try {
    return statSync(lock).mtimeMs;
  } catch {
    return Date.now();
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A directory lock, because tests in several processes may ask for the image at once and two
 * builders must not interleave apt runs or renames. A lock left by a dead process is taken over.
 */
async function acquireLock(cacheDir: string, log: (msg: string) => void): Promise<() => void> {
  const lock = join(cacheDir, '.lock');
  const deadline = Date.now() + 30 * 60 * 1000;
  let announced = false;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(join(lock, 'pid'), String(process.pid));
      return () => rmSync(lock, { recursive: true, force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let owner = NaN;
    try {
      owner = Number(readFileSync(join(lock, 'pid'), 'utf8'));
    } catch {
      // the owner is between mkdir and writing its pid; wait
    }
    const stale = Number.isNaN(owner) && Date.now() - lockMtime(lock) > 10_000;
    if (stale || (Number.isInteger(owner) && owner > 0 && !processAlive(owner))) {
      rmSync(lock, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) throw new GuestImageError('GUEST_LOCKED', `timed out waiting for the guest image lock ${lock}`);
    if (!announced) {
      log(`waiting for another guest image build (lock ${lock})`);
      announced = true;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}
