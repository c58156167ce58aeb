// `ferry image build [--force] [--json]` and `ferry image info [--json]`.
// Progress goes to stderr so that stdout carries only the result (one JSON object with --json).
import { FerryError } from '../errors.js';
import { ensureGuestImage, guestImageStatus } from '../guest/image.js';

const USAGE = `usage: ferry image build [--force] [--json] [--cache-dir DIR]
       ferry image info [--json] [--cache-dir DIR]

  build   build the guest kernel + initramfs, or reuse the cached one if its inputs are unchanged
          --force  re-resolve Debian package versions and rebuild even if the cache is current
  info    describe the cached image without building or touching the network
  --json  print one JSON object on stdout
`;

class UsageError extends Error {}

interface Parsed {
  force: boolean;
  json: boolean;
  cacheDir: string | undefined;
}

function parseFlags(args: readonly string[], allowed: ReadonlySet<string>): Parsed {
  const out: Parsed = { force: false, json: false, cacheDir: undefined };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const [flag, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    if (!allowed.has(flag)) throw new UsageError(a.startsWith('-') ? `unknown option: ${a}` : `unexpected argument: ${a}`);
    if (flag === '--cache-dir') {
      const v = inline ?? args[++i];
      if (v === undefined || v === '') throw new UsageError('--cache-dir needs a directory');
      out.cacheDir = v;
    } else if (inline !== undefined) {
      throw new UsageError(`${flag} takes no value`);
    } else if (flag === '--force') out.force = true;
    else if (flag === '--json') out.json = true;
  }
  return out;
}

export async function imageCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  try {
    switch (sub) {
      case 'build':
        return await build(parseFlags(rest, new Set(['--force', '--json', '--cache-dir'])));
      case 'info':
        return info(parseFlags(rest, new Set(['--json', '--cache-dir'])));
      case undefined:
        throw new UsageError('missing subcommand');
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return 0;
      default:
        throw new UsageError(`unknown subcommand: ${sub}`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`ferry image: ${e.message}\n${USAGE}`);
      return 2;
    }
    if (e instanceof FerryError) {
      process.stderr.write(`ferry image: ${e.message} [${e.code}]\n`);
      return 1;
    }
    throw e;
  }
}

async function build(p: Parsed): Promise<number> {
  const started = Date.now();
  const img = await ensureGuestImage({
    force: p.force,
    log: (msg) => process.stderr.write(`ferry image: ${msg}\n`),
    ...(p.cacheDir !== undefined ? { cacheDir: p.cacheDir } : {}),
  });
  if (p.json) {
    process.stdout.write(JSON.stringify({ ...img, seconds: (Date.now() - started) / 1000 }) + '\n');
  } else {
    process.stdout.write(`kernel     ${img.kernel}\ninitramfs  ${img.initramfs}\nversion    ${img.kernelVersion}\nmodules    ${img.modules.join(' ')}\n`);
  }
  return 0;
}

function info(p: Parsed): number {
  const st = guestImageStatus(p.cacheDir !== undefined ? { cacheDir: p.cacheDir } : {});
  const m = st.manifest;
  if (p.json) {
    process.stdout.write(JSON.stringify({ cacheDir: st.cacheDir, built: m !== undefined, current: st.current, manifest: m ?? null }) + '\n');
    return m ? 0 : 1;
  }
  if (!m) {
    process.stdout.write(`no guest image in ${st.cacheDir}; run: ferry image build\n`);
    return 1;
  }
  const lines = [
    ['cache', st.cacheDir],
    ['status', st.current ? 'current' : 'stale (inputs changed; the next build will rebuild)'],
    ['built', m.builtAt],
    ['kernel', `${m.kernel} (${m.sizes.kernel} bytes)`],
    ['initramfs', `${m.initramfs} (${m.sizes.initramfs} bytes)`],
    ['version', m.kernelVersion],
    ['packages', `${m.packages.kernel.name} ${m.packages.kernel.version}, ${m.packages.busybox.name} ${m.packages.busybox.version} (${m.suite})`],
    ['mirror', m.mirror],
    ['modules', m.modules.join(' ')],
    ['built-in', m.builtinModules.join(' ') || '-'],
    ['missing', m.missingModules.join(' ') || '-'],
    ['programs', m.programs.join(' ')],
  ];
  for (const [k, v] of lines) process.stdout.write(`${k!.padEnd(10)} ${v}\n`);
  return 0;
}
