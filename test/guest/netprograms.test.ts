// netserver and gameserver, cross-compiled as for the image and run under qemu-riscv64 on the
// host's loopback, with the host-side game client the migration demo uses.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { GUEST_CC, compileGuestProgram } from '../../src/guest/compile.js';
import { initScriptPath } from '../../src/guest/image.js';
import { WWW_INDEX, initramfsEntries } from '../../src/guest/initramfs.js';
import { GameClient } from '../../src/net/game-client.js';
import { requireHostTool } from './helpers.js';

let dir = '';
const bin = (name: string): string => join(dir, name);
const children = new Set<ChildProcess>();

before(async () => {
  requireHostTool(GUEST_CC);
  requireHostTool('qemu-riscv64');
  dir = mkdtempSync(join(tmpdir(), 'ferry-netprograms-'));
  await compileGuestProgram('netserver', bin('netserver'));
  await compileGuestProgram('gameserver', bin('gameserver'));
});
after(() => {
  for (const c of children) c.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function freePort(kind: 'tcp' | 'udp'): Promise<number> {
  if (kind === 'tcp') {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as AddressInfo).port;
    await new Promise<void>((r) => srv.close(() => r()));
    return port;
  }
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(r));
  return port;
}

interface Guest {
  child: ChildProcess;
  out: () => string;
  waitFor: (re: RegExp, timeoutMs?: number) => Promise<RegExpExecArray>;
  exited: Promise<number | null>;
}

function startGuest(name: string, args: string[]): Guest {
  const child = spawn('qemu-riscv64', [bin(name), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  child.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
  child.stderr!.on('data', (b: Buffer) => { out += b.toString(); });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => {
    children.delete(child);
    resolve(code);
  }));
  const waitFor = async (re: RegExp, timeoutMs = 20_000): Promise<RegExpExecArray> => {
    for (const deadline = Date.now() + timeoutMs; ;) {
      const m = re.exec(out);
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`timeout waiting for ${re}; output so far:\n${out}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { child, out: () => out, waitFor, exited };
}

async function stopGuest(g: Guest): Promise<number | null> {
  g.child.kill('SIGTERM');
  return g.exited;
}

function tcpConnect(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

async function echoRoundTrip(port: number, size: number): Promise<void> {
  const s = await tcpConnect(port);
  const data = randomBytes(size);
  const got: Buffer[] = [];
  let n = 0;
  const done = new Promise<void>((resolve, reject) => {
    s.on('data', (b: Buffer) => {
      got.push(b);
      n += b.length;
      if (n >= size) resolve();
    });
    s.on('error', reject);
    s.on('close', () => (n >= size ? resolve() : reject(new Error(`closed after ${n}/${size} bytes`))));
  });
  s.write(data);
  await done;
  s.destroy();
  assert.ok(Buffer.concat(got).equals(data), 'echoed bytes equal the sent bytes');
}

test('netserver: echo round trip, several clients at once', async () => {
  const [echo, stream, sink] = [await freePort('tcp'), await freePort('tcp'), await freePort('tcp')];
  const g = startGuest('netserver', ['--echo', String(echo), '--stream', String(stream), '--sink', String(sink)]);
  try {
    await g.waitFor(new RegExp(`^netserver: ready echo=${echo} stream=${stream} sink=${sink}$`, 'm'));
    await echoRoundTrip(echo, 11);
    // Larger than the server's buffer and the socket buffers, so partial writes and
    // back-pressure are exercised.
    await Promise.all([echoRoundTrip(echo, 3_000_000), echoRoundTrip(echo, 200_000), echoRoundTrip(echo, 1)]);
  } finally {
    assert.equal(await stopGuest(g), 0, g.out());
  }
});

test('netserver: stream sends the n % 251 pattern until the client leaves', async () => {
  const port = await freePort('tcp');
  const g = startGuest('netserver', ['--stream', String(port)]);
  try {
    await g.waitFor(/^netserver: ready stream=\d+$/m);
    const s = await tcpConnect(port);
    const want = 2_000_000;
    let offset = 0;
    let bad = -1;
    await new Promise<void>((resolve, reject) => {
      s.on('data', (b: Buffer) => {
        for (let i = 0; i < b.length && bad < 0; i++) if (b[i] !== (offset + i) % 251) bad = offset + i;
        offset += b.length;
        if (offset >= want || bad >= 0) {
          s.destroy();
          resolve();
        }
      });
      s.on('error', reject);
    });
    assert.equal(bad, -1, `pattern broken at byte ${bad}`);
    const m = await g.waitFor(/^netserver: stream bytes=(\d+)$/m);
    assert.ok(Number(m[1]) >= offset, `server sent ${m[1]}, client read ${offset}`);
  } finally {
    assert.equal(await stopGuest(g), 0, g.out());
  }
});

test('netserver: --udp-echo sends each datagram back; a paced stream writes one chunk per interval', async () => {
  const [udp, stream] = [await freePort('udp'), await freePort('tcp')];
  const g = startGuest('netserver', ['--udp-echo', String(udp), '--stream', String(stream), '--stream-interval-ms', '20', '--stream-chunk', '100']);
  const sock = createSocket('udp4');
  try {
    await g.waitFor(new RegExp(`^netserver: ready stream=${stream} udp-echo=${udp}$`, 'm'));
    const got = new Set<string>();
    sock.on('message', (m) => got.add(m.toString()));
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
    for (let i = 0; i < 50; i++) sock.send(`probe-${i}`, udp, '127.0.0.1');
    for (const deadline = Date.now() + 10_000; got.size < 50 && Date.now() < deadline;) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual([...got].sort(), Array.from({ length: 50 }, (_, i) => `probe-${i}`).sort());

    // Paced: the pattern continues across chunks of at most 100 bytes, about one per 20 ms.
    const s = await tcpConnect(stream);
    const chunks: Buffer[] = [];
    s.on('data', (b: Buffer) => chunks.push(b));
    await new Promise((r) => setTimeout(r, 1000));
    s.destroy();
    const all = Buffer.concat(chunks);
    assert.ok(all.every((b, i) => b === i % 251), 'the n % 251 pattern');
    // One chunk per 20 ms tick: far below what an unpaced stream sends in a second.
    assert.ok(all.length >= 100 && all.length <= 100 * 60, `${all.length} bytes in 1 s at 100 bytes per 20 ms`);
  } finally {
    sock.close();
    assert.equal(await stopGuest(g), 0, g.out());
  }
});

test('netserver: sink counts every byte and reports when the peer closes', async () => {
  const port = await freePort('tcp');
  const g = startGuest('netserver', ['--sink', String(port)]);
  try {
    await g.waitFor(/^netserver: ready sink=\d+$/m);
    const s = await tcpConnect(port);
    const size = 5 * 1024 * 1024 + 7;
    await new Promise<void>((resolve) => s.end(randomBytes(size), resolve));
    const m = await g.waitFor(/^netserver: sink bytes=(\d+) seconds=(\d+\.\d{3}) rate=(\d+)$/m);
    assert.equal(Number(m[1]), size);
    assert.ok(Number(m[3]) > 0);
    s.destroy();
  } finally {
    assert.equal(await stopGuest(g), 0, g.out());
  }
});

test('netserver: bad arguments exit 2 with usage', () => {
  for (const args of [[], ['--echo'], ['--echo', '0'], ['--bogus', '1']]) {
    const r = spawnSync('qemu-riscv64', [bin('netserver'), ...args], { encoding: 'utf8' });
    assert.equal(r.status, 2, `args ${args.join(' ')}`);
    assert.match(r.stderr, /usage: netserver/);
  }
});

test('gameserver: a registered client gets packets 1..N, one per tick', async () => {
  const port = await freePort('udp');
  const g = startGuest('gameserver', ['--port', String(port), '--count', '50']);
  try {
    await g.waitFor(/^gameserver: ready port=\d+ interval_ms=20$/m);
    const client = await GameClient.start({ host: '127.0.0.1', port, keepPackets: true });
    const t0 = performance.now();
    await client.waitForPackets(50, 20_000);
    const elapsed = performance.now() - t0;
    const report = await client.stop();
    assert.deepEqual(
      { received: report.received, lost: report.lost, duplicates: report.duplicates, reordered: report.reordered, firstSeq: report.firstSeq, lastSeq: report.lastSeq },
      { received: 50, lost: 0, duplicates: 0, reordered: 0, firstSeq: 1, lastSeq: 50 });
    assert.deepEqual(client.packets.map((p) => p.seq), Array.from({ length: 50 }, (_, i) => i + 1));
    // 49 intervals of 20 ms; generous bounds, this checks pacing exists, not its precision.
    assert.ok(elapsed > 49 * 20 * 0.7, `50 packets took ${elapsed.toFixed(0)} ms`);
    const ticks = client.packets.map((p) => p.tick);
    for (let i = 1; i < ticks.length; i++) assert.ok(ticks[i]! > ticks[i - 1]!, 'ticks increase');
    const mono = client.packets.map((p) => p.serverMonoNs);
    const span = Number(mono.at(-1)! - mono[0]!) / 1e6;
    assert.ok(span > 49 * 20 * 0.9 && span < 49 * 20 * 3, `server clock span ${span.toFixed(1)} ms for 49 ticks`);
    assert.ok(report.maxGapMs > 0);
    await g.waitFor(/^gameserver: client 127\.0\.0\.1:\d+ registered$/m);
    await g.waitFor(/^gameserver: client 127\.0\.0\.1:\d+ done sent=50$/m);
  } finally {
    assert.equal(await stopGuest(g), 0, g.out());
  }
});

test('gameserver: two clients each get their own sequence; bye unregisters', async () => {
  const port = await freePort('udp');
  const g = startGuest('gameserver', ['--port', String(port), '--interval-ms', '10']);
  try {
    await g.waitFor(/^gameserver: ready port=\d+ interval_ms=10$/m);
    const a = await GameClient.start({ host: '127.0.0.1', port });
    await a.waitForPackets(10, 20_000);
    const b = await GameClient.start({ host: '127.0.0.1', port });
    await b.waitForPackets(20, 20_000);
    const [ra, rb] = [await a.stop(), await b.stop()];
    assert.equal(rb.firstSeq, 1, 'the later client still starts at 1');
    assert.equal(ra.lost, 0);
    assert.equal(rb.lost, 0);
    assert.ok(ra.received >= 30, `a received ${ra.received}`);
    await g.waitFor(/left sent=\d+\n[\s\S]*left sent=\d+\n/);
    const left = [...g.out().matchAll(/^gameserver: client 127\.0\.0\.1:\d+ left sent=(\d+)$/gm)].map((m) => Number(m[1]));
    assert.equal(left.length, 2, g.out());
    // The server stops sending at "bye": its count is at least what the client saw.
    assert.ok(left[0]! >= ra.lastSeq && left[1]! >= rb.lastSeq, `${left.join(',')} vs ${ra.lastSeq},${rb.lastSeq}`);
  } finally {
    assert.equal(await stopGuest(g), 0, g.out());
  }
});

test('gameserver: --duration ends the server; bad arguments exit 2', async () => {
  const port = await freePort('udp');
  const g = startGuest('gameserver', ['--port', String(port), '--duration', '1']);
  const t0 = Date.now();
  assert.equal(await g.exited, 0, g.out());
  assert.ok(Date.now() - t0 >= 900);
  for (const args of [['--size', '10'], ['--port'], ['--interval-ms', '0'], ['-x', '1']]) {
    const r = spawnSync('qemu-riscv64', [bin('gameserver'), ...args], { encoding: 'utf8' });
    assert.equal(r.status, 2, `args ${args.join(' ')}`);
    assert.match(r.stderr, /usage: gameserver/);
  }
});

test('initramfs carries the web page and /init serves it once networking is up', () => {
  const entries = initramfsEntries({
    kernelVersion: '6.0.0', init: '#!/bin/sh\n', busybox: new Uint8Array(1), modules: [], modulesDep: '', programs: [], imageInfo: '',
  });
  const page = entries.find((e) => e.path === 'var/www/index.html');
  assert.ok(page && page.type === 'file', 'var/www/index.html is packed');
  assert.equal(Buffer.from(page.data).toString(), WWW_INDEX);
  assert.match(WWW_INDEX, /ferry guest @HOSTNAME@/);
  const init = readFileSync(initScriptPath(), 'utf8');
  const net = init.slice(init.indexOf('ip addr add "$ferry_ip" dev eth0'), init.indexOf('ferry.ip given but no eth0'));
  assert.match(net, /^\t\thttpd -p 80 -h \/var\/www$/m, 'httpd starts inside the networking branch');
  assert.match(net, /sed -i "s\/@HOSTNAME@\/\$\(hostname\)\/g" \/var\/www\/index\.html/);
  // The substitution, run by the host's sh on a copy of the page.
  const tmp = join(dir, 'index.html');
  writeFileSync(tmp, WWW_INDEX);
  const r = spawnSync('sh', ['-c', `hostname() { echo host-a; }; sed -i "s/@HOSTNAME@/$(hostname)/g" "$1"`, 'sh', tmp]);
  assert.equal(r.status, 0, r.stderr.toString());
  assert.match(readFileSync(tmp, 'utf8'), /<h1>ferry guest host-a<\/h1>/);
});
