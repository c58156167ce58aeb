// What a network device front-end (virtio-net) needs from the host side. The front-end never
// touches a TAP or a socket itself; tests substitute an in-memory backend.

export interface NetBackend {
  /** Queues one Ethernet frame (no virtio header) for the host network. Never blocks. */
  send(frame: Uint8Array): void;
  /** Registers the receiver of frames from the host network. Frames may arrive at any time
   * the event loop runs; the device buffers or drops them as a NIC would. */
  onReceive(listener: (frame: Uint8Array) => void): void;
  /** Releases the host resource (closes the TAP fd, stops its reader). Idempotent. */
  close(): Promise<void>;
}
