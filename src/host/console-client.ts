// A VM's console through a daemon's API, as a ConsoleDriver: output from the console stream
// (SSE), input through POSTs. Lets a program script a guest wherever its daemon is, e.g. on
// both sides of a migration.

import { ConsoleDriver } from '../machine/console/shell.js';
import type { FerryClient } from './client.js';

export interface ApiConsole {
  readonly driver: ConsoleDriver;
  /** Ends the stream. */
  close(): void;
}

/** Attaches to `vm`'s console on the daemon behind `client`; resolves once the stream is open,
 * so nothing the guest prints after this is missed. */
export async function attachApiConsole(client: FerryClient, vm: string): Promise<ApiConsole> {
  const driver = new ConsoleDriver();
  const abort = new AbortController();
  const path = `/v1/vms/${encodeURIComponent(vm)}/console`;
  let opened: () => void = () => undefined;
  const open = new Promise<void>((resolve) => { opened = resolve; });
  // Keystrokes go out in order, one POST after another.
  let typing = Promise.resolve();
  driver.onInput((bytes) => {
    const data = Buffer.from(bytes).toString('base64');
    typing = typing.then(() => client.request('POST', path, { data })).then(() => undefined, () => undefined);
  });
  void (async () => {
    try {
      const stream = client.stream(path, abort.signal);
      opened();
      for await (const m of stream) {
        if (m.event === 'output') driver.write(Buffer.from(m.data, 'base64'));
      }
    } catch {
      // The VM went away (migrated, stopped): the driver's waits time out on their own.
    } finally {
      opened();
    }
  })();
  await open;
  // The generator opens the HTTP stream on its first pull; give the request a moment to land.
  await new Promise((r) => setTimeout(r, 200));
  return { driver, close: () => abort.abort() };
}
