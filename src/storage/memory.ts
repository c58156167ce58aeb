// A BlockBackend held in memory: for tests, and as a scratch disk.

import type { BlockBackend } from './backend.js';

export class MemoryBlockBackend implements BlockBackend {
  readonly canDiscard = true;
  readonly data: Uint8Array;
  flushes = 0;

  constructor(readonly size: number, readonly readOnly = false) {
    this.data = new Uint8Array(size);
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    return this.data.slice(offset, offset + length);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.data.set(data, offset);
  }

  async flush(): Promise<void> {
    this.flushes++;
  }

  async discard(offset: number, length: number): Promise<void> {
    this.data.fill(0, offset, offset + length);
  }

  async close(): Promise<void> {}
}
