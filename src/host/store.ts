// The daemon's state directory: DIR/token (the API secret, 0600) and DIR/vms/<name>/config.json
// (each VM's config and the state it was last seen in). Writes go through a temp file and a
// rename so a crash leaves the old record or the new one, never half of one.

import { chmodSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { VmConfig } from '../vm/types.js';
import type { VmStateKind } from '../vm/lifecycle.js';
import { validateConfig } from './config.js';

export interface VmRecord {
  readonly config: VmConfig;
  /** The state kind last reported; `running` means the VM is booted again on daemon start. */
  readonly lastState: VmStateKind;
}

export class StateDir {
  readonly vmsDir: string;

  constructor(readonly dir: string) {
    this.vmsDir = join(dir, 'vms');
    mkdirSync(this.vmsDir, { recursive: true, mode: 0o700 });
  }

  /** The daemon token: created once, then reused so clients keep working across restarts. */
  token(): string {
    const path = join(this.dir, 'token');
    try {
      const existing = readFileSync(path, 'utf8').trim();
      // Someone may have copied the file around with a looser mode; the token is a password.
      if ((statSync(path).mode & 0o077) !== 0) chmodSync(path, 0o600);
      if (existing.length >= 16) return existing;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const token = randomBytes(32).toString('hex');
    writeAtomic(path, `${token}\n`, 0o600);
    return token;
  }

  load(log: (message: string) => void): VmRecord[] {
    const out: VmRecord[] = [];
    for (const name of readdirSync(this.vmsDir).sort()) {
      const file = join(this.vmsDir, name, 'config.json');
      try {
        const raw = JSON.parse(readFileSync(file, 'utf8')) as { config?: unknown; lastState?: unknown };
        const config = validateConfig(raw.config);
        if (config.name !== name) throw new Error(`config names '${config.name}'`);
        const lastState = typeof raw.lastState === 'string' ? raw.lastState as VmStateKind : 'stopped';
        out.push({ config, lastState });
      } catch (err) {
        // One unreadable record must not keep the daemon (and every other VM) down.
        log(`skipping ${file}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    return out;
  }

  save(record: VmRecord): void {
    const dir = join(this.vmsDir, record.config.name);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeAtomic(join(dir, 'config.json'), `${JSON.stringify(record, null, 2)}\n`, 0o600);
  }

  remove(name: string): void {
    rmSync(join(this.vmsDir, name), { recursive: true, force: true });
  }
}

function writeAtomic(path: string, text: string, mode: number): void {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, text, { mode, flag: 'wx' });
  renameSync(tmp, path);
}
