// Sends N bytes over one TCP connection and prints {"bytes","seconds"} once the receiver has
// read them all and closed: a client-to-guest throughput probe, run inside a lab host.
// Usage: node tcp-send.js HOST PORT BYTES

import { connect } from 'node:net';

const [host, portText, bytesText] = process.argv.slice(2);
const total = Number(bytesText);
const chunk = Buffer.alloc(64 * 1024, 0x5a);
const socket = connect({ host: host!, port: Number(portText) });
let t0 = 0;
socket.once('connect', () => {
  t0 = performance.now();
  let sent = 0;
  const pump = (): void => {
    while (sent < total) {
      const n = Math.min(chunk.length, total - sent);
      sent += n;
      if (!socket.write(n === chunk.length ? chunk : chunk.subarray(0, n))) { socket.once('drain', pump); return; }
    }
    socket.end();
  };
  pump();
});
socket.on('data', () => {});
socket.once('close', (hadError) => {
  if (hadError) process.exit(1);
  console.log(JSON.stringify({ bytes: total, seconds: (performance.now() - t0) / 1000 }));
});
socket.once('error', (e) => { console.error(e.message); process.exit(1); });
