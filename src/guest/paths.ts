import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GuestImageError } from './errors.js';

/**
 * The repository root, found by walking up from this file to ferry's package.json. Walking up
 * (rather than a fixed "../../..") works both from dist/src/guest/ and from the sources.
 */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        const parsed: unknown = JSON.parse(readFileSync(pkg, 'utf8'));
        if (typeof parsed === 'object' && parsed !== null && (parsed as { name?: unknown }).name === 'ferry') return dir;
      } catch {
        // not ours; keep walking
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new GuestImageError('GUEST_NO_REPO', 'cannot find the ferry repository root above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

/** Sources of the guest image that live in the repository (not compiled by tsc). */
export function guestSourceDir(): string {
  return join(repoRoot(), 'src', 'guest');
}
