// Live migration between two daemons in the lab, with a real guest whose memwriter checks its
// memory: a migration that is cancelled, whose destination daemon is killed, or whose link is
// cut during pre-copy leaves the VM running on the source with its memory intact and frees the
// destination's reservation; a clean one moves it and the memory holds. Needs root (the lab).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Lab } from '../../src/lab/lab.js';
import { spawnOnClient, startLabDaemon, startLabDaemons } from '../../src/lab/ferry-lab.js';
import { ensureGuestImage } from '../../src/guest/image.js';

const CLIENT = join(import.meta.dirname, '../support/migration-client.js');

interface Result {
  scenario: string; outcome: string; error: { code: string; message: string } | null; host: string;
  sourceState: string | null; alive: boolean; memory: boolean; destinationFreed?: boolean;
}

test('migration failures before commit leave the VM running on the source, memory intact; a clean migration moves it', { timeout: 900_000 }, async (t) => {
  await ensureGuestImage({ log: () => undefined });
  const work = mkdtempSync(join(tmpdir(), 'ferry-migfail-'));
  const lab = await Lab.up({ prefix: `mf${process.pid % 10000}-` });
  try {
    const daemons = await startLabDaemons(lab, work);
    const client = spawnOnClient(lab, daemons.spec, [CLIENT]);
    let stderr = '';
    client.stderr!.on('data', (b: Buffer) => { stderr += b.toString(); });
    const out = createInterface({ input: client.stdout! })[Symbol.asyncIterator]();
    const read = async (): Promise<Record<string, unknown>> => {
      const { value, done } = await out.next();
      if (done) throw new Error(`the client script ended: ${stderr.slice(-3000)}`);
      return JSON.parse(value as string) as Record<string, unknown>;
    };
    const send = (line: string) => client.stdin!.write(`${line}\n`);
    assert.deepEqual(await read(), { ready: true });

    const check = (r: Result, code: string) => {
      assert.equal(r.outcome, 'failed', JSON.stringify(r));
      assert.equal(r.error?.code, code, JSON.stringify(r));
      assert.equal(r.host, 'host-a');
      assert.equal(r.sourceState, 'running', 'the VM runs on the source again');
      assert.equal(r.alive, true, 'the guest answers on the source');
      assert.equal(r.memory, true, "memwriter's checksum holds");
      assert.equal(r.destinationFreed, true, "the destination's reservation is freed");
    };

    await t.test('cancel during pre-copy', async () => {
      send('cancel');
      check(await read() as unknown as Result, 'MIGRATION_CANCELLED');
    });

    await t.test('destination daemon killed during pre-copy', async () => {
      send('kill');
      assert.ok((await read())['precopy']);
      daemons.processes['host-b'].kill('SIGKILL');
      send('go');
      assert.equal((await read())['injected'], 'kill');
      daemons.processes['host-b'] = await startLabDaemon(lab, 'host-b', work);
      send('go');
      const r = await read() as unknown as Result;
      assert.ok(['MIGRATION_CONNECTION_LOST', 'MIGRATION_TIMEOUT'].includes(r.error?.code ?? ''), JSON.stringify(r));
      check(r, r.error!.code);
    });

    await t.test('link cut (every frame dropped) during pre-copy', async () => {
      send('cut');
      assert.ok((await read())['precopy']);
      await lab.cut('host-b', 'drop');
      send('go');
      assert.equal((await read())['injected'], 'cut');
      await lab.restore('host-b');
      send('go');
      check(await read() as unknown as Result, 'MIGRATION_TIMEOUT');
    });

    await t.test('a clean migration moves the VM with its memory', async () => {
      send('success');
      const r = await read() as unknown as Result;
      assert.equal(r.outcome, 'completed', JSON.stringify(r));
      assert.equal(r.host, 'host-b');
      assert.equal(r.sourceState, null, 'the source released its copy');
      assert.equal(r.alive, true);
      assert.equal(r.memory, true);
    });
    send('quit');
    client.stdin!.end();
    await new Promise((r) => client.once('exit', r));
  } finally {
    await lab.down();
    rmSync(work, { recursive: true, force: true });
  }
});
