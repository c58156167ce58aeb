// BlockBackend over a raw disk image. Positional I/O (pread/pwrite) lets any number of requests
// run concurrently on one descriptor without a shared file position.
import { open, type FileHandle } from 'node:fs/promises';
import type { BlockBackend } from './backend.js';
import {
  BlockClosedError, BlockFileError, BlockImageError, BlockIoError, BlockRangeError, BlockReadOnlyError,
} from './errors.js';

export interface RawFileOptions {
  readOnly?: boolean;
}

export class RawFileBackend implements BlockBackend {
  /** Hole punching is not portable from Node; discard() is a no-op. */
  readonly canDiscard = false;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly handle: FileHandle,
    readonly path: string,
    readonly size: number,
    readonly readOnly: boolean,
  ) {}

  static async open(path: string, options: RawFileOptions = {}): Promise<RawFileBackend> {
    const readOnly = options.readOnly ?? false;
    let handle: FileHandle;
    try {
      handle = await open(path, readOnly ? 'r' : 'r+');
    } catch (e) {
      throw new BlockFileError(`cannot open disk image ${path}: ${describe(e)}`, { cause: e });
    }
    try {
      const st = await handle.stat();
      if (!st.isFile()) throw new BlockImageError(`disk image ${path} is not a regular file`);
      const size = st.size;
      if (size === 0 || size % 512 !== 0) {
        throw new BlockImageError(`disk image ${path} is ${size} bytes, which is not a positive multiple of 512 (the sector size)`);
      }
      return new RawFileBackend(handle, path, size, readOnly);
    } catch (e) {
      await handle.close().catch(() => undefined);
      throw e instanceof BlockIoError ? e : new BlockFileError(`cannot use disk image ${path}: ${describe(e)}`, { cause: e });
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    this.check('read', offset, length);
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.io('read', () => this.handle.read(out, done, length - done, offset + done));
      // The size was checked at open; a short file now means someone truncated it under us.
      if (bytesRead === 0) throw new BlockFileError(`disk image ${this.path} ended at ${offset + done} bytes, expected ${this.size}`);
      done += bytesRead;
    }
    return out;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkWritable('write');
    this.check('write', offset, data.length);
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.io('write', () => this.handle.write(data, done, data.length - done, offset + done));
      done += bytesWritten;
    }
  }

  async flush(): Promise<void> {
    this.checkOpen();
    if (this.readOnly) return;
    await this.io('flush', () => this.handle.datasync());
  }

  async discard(offset: number, length: number): Promise<void> {
    this.checkWritable('discard');
    this.check('discard', offset, length);
  }

  close(): Promise<void> {
    // FileHandle.close waits for operations already running on the handle, so the descriptor
    // number cannot be reused under an in-flight pwrite.
    this.closing ??= this.handle.close().catch((e: unknown) => {
      throw new BlockFileError(`closing disk image ${this.path}: ${describe(e)}`, { cause: e });
    });
    return this.closing;
  }

  private async io<T>(op: string, f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (e) {
      throw new BlockFileError(`${op} on disk image ${this.path} failed: ${describe(e)}`, { cause: e });
    }
  }

  private checkOpen(): void {
    if (this.closing) throw new BlockClosedError(`disk image ${this.path} is closed`);
  }

  private checkWritable(op: string): void {
    this.checkOpen();
    if (this.readOnly) throw new BlockReadOnlyError(`${op} on read-only disk image ${this.path}`);
  }

  private check(op: string, offset: number, length: number): void {
    this.checkOpen();
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new BlockRangeError(`${op} of ${length} bytes at offset ${offset} is outside disk image ${this.path} (${this.size} bytes)`);
    }
  }
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
