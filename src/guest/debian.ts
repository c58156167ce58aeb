// Fetches Debian trixie riscv64 packages with a private apt state directory, so the host's apt
// configuration, package lists and caches are never modified (the host may be any Debian release
// and any architecture). The mirror is taken from the host's own sources so that networks which
// only reach a local mirror or proxy keep working; no mirror host is written in this repository.
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GuestImageError } from './errors.js';
import { run } from './exec.js';

export const DEBIAN_SUITE = 'trixie';
export const DEBIAN_ARCH = 'riscv64';
export const DEBIAN_KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';
export const KERNEL_METAPACKAGE = 'linux-image-riscv64';
export const BUSYBOX_PACKAGE = 'busybox-static';

export interface PackageRef {
  name: string;
  version: string;
}

/** First deb822 URI of a stanza that is not a security suite (security mirrors carry no kernels). */
export function mirrorFromDeb822(text: string): string | undefined {
  const fallback: string[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    let last = '';
    for (const line of stanza.split('\n')) {
      if (line.startsWith('#')) continue;
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line);
      if (m) {
        last = m[1]!.toLowerCase();
        fields.set(last, m[2]!.trim());
      } else if (/^\s/.test(line) && last !== '') {
        fields.set(last, `${fields.get(last) ?? ''} ${line.trim()}`.trim());
      }
    }
    const types = (fields.get('types') ?? 'deb').split(/\s+/);
    const uri = (fields.get('uris') ?? '').split(/\s+/).find((u) => u !== '');
    if (!uri || !types.includes('deb') || fields.get('enabled')?.toLowerCase() === 'no') continue;
    const suites = (fields.get('suites') ?? '').split(/\s+/);
    if (suites.some((s) => s.endsWith('-security')) || /security/.test(uri)) fallback.push(uri);
    else return uri;
  }
  return fallback[0];
}

/** Same rule for a one-line-style sources.list. */
export function mirrorFromSourcesList(text: string): string | undefined {
  let fallback: string | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*$/, '').trim();
    const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line);
    if (!m) continue;
    const [, uri, suite] = m;
    if (suite!.endsWith('-security') || /security/.test(uri!)) fallback ??= uri;
    else return uri;
  }
  return fallback;
}

/**
 * The Debian mirror to use. FERRY_DEBIAN_MIRROR overrides (for hosts whose sources do not point
 * at a Debian mirror, e.g. Ubuntu).
 */
export function hostDebianMirror(): string {
  const env = process.env['FERRY_DEBIAN_MIRROR'];
  if (env) return env.replace(/\/+$/, '');
  const deb822 = '/etc/apt/sources.list.d/debian.sources';
  const classic = '/etc/apt/sources.list';
  let uri: string | undefined;
  if (existsSync(deb822)) uri = mirrorFromDeb822(readFileSync(deb822, 'utf8'));
  if (!uri && existsSync(classic)) uri = mirrorFromSourcesList(readFileSync(classic, 'utf8'));
  if (!uri) {
    throw new GuestImageError('GUEST_NO_MIRROR',
      `could not find a Debian mirror in ${deb822} (URIs:) or ${classic}; set FERRY_DEBIAN_MIRROR=<url of a Debian archive>`);
  }
  return uri.replace(/\/+$/, '');
}

/** apt-get / apt-cache confined to `stateDir`. */
export class PrivateApt {
  private readonly sourcesFile: string;
  private updated = false;

  constructor(private readonly stateDir: string, readonly mirror: string, private readonly log: (msg: string) => void = () => {}) {
    this.sourcesFile = join(stateDir, 'sources.list');
  }

  private options(): string[] {
    const d = this.stateDir;
    return [
      '-o', `Dir::Etc::SourceList=${this.sourcesFile}`,
      '-o', 'Dir::Etc::SourceParts=/dev/null',
      // Host pins and the host's installed-package database are about another distribution and
      // architecture; reading them would only produce noise or wrong candidates.
      '-o', 'Dir::Etc::Preferences=/dev/null',
      '-o', 'Dir::Etc::PreferencesParts=/dev/null',
      '-o', `Dir::State::status=${join(d, 'status')}`,
      '-o', `Dir::State::Lists=${join(d, 'lists')}`,
      '-o', `Dir::Cache=${join(d, 'cache')}`,
      '-o', 'APT::Architectures::=riscv64',
      '-o', 'APT::Architecture=riscv64',
      // Downloads land in our own cache directory, which the _apt sandbox user cannot write to.
      '-o', 'APT::Sandbox::User=root',
    ];
  }

  private prepare(): void {
    if (!existsSync(DEBIAN_KEYRING)) {
      throw new GuestImageError('GUEST_NO_KEYRING', `${DEBIAN_KEYRING} is missing; install the debian-archive-keyring package`);
    }
    for (const sub of ['lists/partial', 'cache/archives/partial']) mkdirSync(join(this.stateDir, sub), { recursive: true });
    if (!existsSync(join(this.stateDir, 'status'))) writeFileSync(join(this.stateDir, 'status'), '');
    writeFileSync(this.sourcesFile,
      `deb [arch=${DEBIAN_ARCH} signed-by=${DEBIAN_KEYRING}] ${this.mirror} ${DEBIAN_SUITE} main\n`);
  }

  /** Runs `apt-get update` once per instance; callers only create an instance when they must download. */
  async update(): Promise<void> {
    if (this.updated) return;
    this.prepare();
    this.log(`apt: updating ${DEBIAN_SUITE}/${DEBIAN_ARCH} package lists from ${this.mirror}`);
    await run('apt-get', [...this.options(), '-q', 'update']);
    this.updated = true;
  }

  async candidateVersion(pkg: string): Promise<string> {
    await this.update();
    const { stdout } = await run('apt-cache', [...this.options(), 'show', '--no-all-versions', pkg]);
    const m = /^Version:\s*(\S+)/m.exec(stdout.toString('utf8'));
    if (!m) throw new GuestImageError('GUEST_APT_RESOLVE', `apt-cache show ${pkg}: no Version field`);
    return m[1]!;
  }

  /** The versioned kernel package (e.g. linux-image-6.12.107+deb13-riscv64) the metapackage selects. */
  async resolveKernelPackage(): Promise<PackageRef> {
    await this.update();
    const { stdout } = await run('apt-cache', [...this.options(), 'depends', KERNEL_METAPACKAGE]);
    const text = stdout.toString('utf8');
    const m = /^\s*\|?Depends:\s*(linux-image-\d\S*)/m.exec(text);
    if (!m) {
      throw new GuestImageError('GUEST_APT_RESOLVE', `could not find the versioned kernel package ${KERNEL_METAPACKAGE} depends on:\n${text}`);
    }
    const name = m[1]!;
    return { name, version: await this.candidateVersion(name) };
  }

  async resolve(pkg: string): Promise<PackageRef> {
    return { name: pkg, version: await this.candidateVersion(pkg) };
  }

  /** Downloads exactly `ref` and moves it to `dest`. */
  async download(ref: PackageRef, dest: string): Promise<void> {
    await this.update();
    const tmp = join(this.stateDir, 'download');
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    this.log(`apt: downloading ${ref.name} ${ref.version}`);
    await run('apt-get', [...this.options(), '-q', 'download', `${ref.name}=${ref.version}`], { cwd: tmp });
    const debs = readdirSync(tmp).filter((f) => f.endsWith('.deb'));
    if (debs.length !== 1) {
      throw new GuestImageError('GUEST_APT_DOWNLOAD', `apt-get download ${ref.name}=${ref.version} produced ${debs.length} .deb files`);
    }
    renameSync(join(tmp, debs[0]!), dest);
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Cache file name for a package: epochs contain ':' which some filesystems and tools dislike. */
export function debFileName(ref: PackageRef): string {
  return `${ref.name}_${ref.version.replace(/:/g, '%3a')}_${DEBIAN_ARCH}.deb`;
}

export async function extractDeb(deb: string, dest: string): Promise<void> {
  mkdirSync(dest, { recursive: true });
  await run('dpkg-deb', ['-x', deb, dest]);
}

/** Reads `Package`/`Version` from a .deb, to check that a cached file is what its name says. */
export async function debIdentity(deb: string): Promise<PackageRef> {
  const { stdout } = await run('dpkg-deb', ['-f', deb, 'Package', 'Version']);
  const text = stdout.toString('utf8');
  const name = /^Package:\s*(\S+)/m.exec(text)?.[1];
  const version = /^Version:\s*(\S+)/m.exec(text)?.[1];
  if (!name || !version) throw new GuestImageError('GUEST_BAD_DEB', `${deb}: not a valid .deb`);
  return { name, version };
}
