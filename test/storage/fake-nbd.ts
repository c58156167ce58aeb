// A scriptable NBD server over node:net, independent of the client's code, for behaviour a
// real server will not produce on demand: protocol violations, odd chunking, reordering,
// refusals and silence.
import { createServer, type Server, type Socket } from 'node:net';

export interface FakeRequest {
  type: number;
  flags: number;
  /** The raw 8-byte cookie, echoed back in replies. */
  cookie: Buffer;
  offset: number;
  length: number;
  data: Buffer | undefined;
}

export interface FakeServerOptions {
  size?: number;
  transmissionFlags?: number;
  /** How NBD_OPT_GO is answered: normally, as unsupported (client falls back), or refused. */
  go?: 'ok' | 'unsupported' | { error: number; message: string };
  /** Accept TCP but never speak. */
  silent?: boolean;
  /** Called per request in the transmission phase; default is a memory disk. */
  onRequest?: (req: FakeRequest, conn: FakeConnection) => void;
}

export class FakeConnection {
  constructor(readonly socket: Socket, readonly disk: Uint8Array) {}

  reply(cookie: Buffer, errno = 0, data?: Uint8Array): Buffer {
    const h = Buffer.alloc(16);
    h.writeUInt32BE(0x67446698, 0);
    h.writeUInt32BE(errno, 4);
    cookie.copy(h, 8);
    return data ? Buffer.concat([h, data]) : h;
  }

  /** The reply a correct memory disk would give. */
  serve(req: FakeRequest): Buffer {
    if (req.type === 0) return this.reply(req.cookie, 0, this.disk.subarray(req.offset, req.offset + req.length));
    if (req.type === 1) this.disk.set(req.data!, req.offset);
    if (req.type === 4) this.disk.fill(0, req.offset, req.offset + req.length);
    return this.reply(req.cookie);
  }
}

export interface FakeServer {
  port: number;
  connections: number;
  requests: FakeRequest[];
  close(): Promise<void>;
}

const u64 = (b: Buffer, at: number): number => b.readUInt32BE(at) * 2 ** 32 + b.readUInt32BE(at + 4);

export async function startFakeServer(o: FakeServerOptions = {}): Promise<FakeServer> {
  const size = o.size ?? 1024 * 1024;
  const disk = new Uint8Array(size);
  const sockets = new Set<Socket>();
  const state: FakeServer = { port: 0, connections: 0, requests: [], close: () => Promise.resolve() };

  const server: Server = createServer((socket) => {
    state.connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    if (o.silent) return;
    const conn = new FakeConnection(socket, disk);
    let buf = Buffer.alloc(0);
    let phase: 'flags' | 'options' | 'transmission' = 'flags';

    const hello = Buffer.alloc(18);
    hello.write('NBDMAGIC', 0, 'latin1');
    hello.write('IHAVEOPT', 8, 'latin1');
    hello.writeUInt16BE(0x3, 16); // fixed newstyle, no zeroes
    socket.write(hello);

    const optReply = (option: number, type: number, data: Buffer): Buffer => {
      const h = Buffer.alloc(20);
      h.writeUInt32BE(0x0003e889, 0);
      h.writeUInt32BE(0x045565a9, 4);
      h.writeUInt32BE(option, 8);
      h.writeUInt32BE(type, 12);
      h.writeUInt32BE(data.length, 16);
      return Buffer.concat([h, data]);
    };
    const exportInfo = (): Buffer => {
      const d = Buffer.alloc(12);
      d.writeUInt16BE(0, 0);
      d.writeUInt32BE(Math.floor(size / 2 ** 32), 2);
      d.writeUInt32BE(size % 2 ** 32, 6);
      d.writeUInt16BE(o.transmissionFlags ?? (1 | 4 | 32), 10); // has flags, flush, trim
      return d;
    };

    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (phase === 'flags') {
          if (buf.length < 4) return;
          buf = buf.subarray(4);
          phase = 'options';
        } else if (phase === 'options') {
          if (buf.length < 16) return;
          const option = buf.readUInt32BE(8);
          const len = buf.readUInt32BE(12);
          if (buf.length < 16 + len) return;
          const data = buf.subarray(16, 16 + len);
          buf = buf.subarray(16 + len);
          if (option === 7) {
            const go = o.go ?? 'ok';
            if (go === 'ok') {
              socket.write(optReply(7, 3, exportInfo()));
              socket.write(optReply(7, 1, Buffer.alloc(0)));
              phase = 'transmission';
            } else if (go === 'unsupported') {
              socket.write(optReply(7, 0x80000001, Buffer.alloc(0)));
            } else {
              socket.write(optReply(7, go.error, Buffer.from(go.message)));
            }
          } else if (option === 1) {
            const d = exportInfo();
            socket.write(d.subarray(2)); // size + flags, no zeroes (negotiated)
            void data;
            phase = 'transmission';
          } else {
            socket.write(optReply(option, 0x80000001, Buffer.alloc(0)));
          }
        } else {
          if (buf.length < 28) return;
          const type = buf.readUInt16BE(6);
          const length = buf.readUInt32BE(24);
          const hasData = type === 1;
          if (hasData && buf.length < 28 + length) return;
          const req: FakeRequest = {
            flags: buf.readUInt16BE(4), type, cookie: Buffer.from(buf.subarray(8, 16)), offset: u64(buf, 16), length,
            data: hasData ? Buffer.from(buf.subarray(28, 28 + length)) : undefined,
          };
          buf = buf.subarray(28 + (hasData ? length : 0));
          state.requests.push(req);
          if (type === 2) { socket.end(); return; }
          if (o.onRequest) o.onRequest(req, conn);
          else socket.write(conn.serve(req));
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  state.port = typeof addr === 'object' && addr ? addr.port : 0;
  state.close = () => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  });
  return state;
}
