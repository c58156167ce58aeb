// What a block device front-end (virtio-blk) needs from storage. Implementations: a raw image
// file and an NBD export. Every call may be in flight concurrently with others; a write
// resolves once the backend has it, and flush() resolves once every write that resolved
// before it was called is durable on the backend (so an acknowledged guest flush is on the
// server).

export interface BlockBackend {
  /** Size in bytes (a multiple of 512). */
  readonly size: number;
  readonly readOnly: boolean;
  /** Whether discard() does anything (advertised to the guest as VIRTIO_BLK_F_DISCARD). */
  readonly canDiscard: boolean;
  read(offset: number, length: number): Promise<Uint8Array>;
  write(offset: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;
  discard(offset: number, length: number): Promise<void>;
  /** Releases the backend (fd, socket). Idempotent. */
  close(): Promise<void>;
}
