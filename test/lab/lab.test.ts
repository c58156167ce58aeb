// The lab on the real kernel: namespaces, bridges, shaping, nbdkit, teardown and crash cleanup.
// Needs root (the CI machine runs as root). Every test has its own prefix and removes its lab.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Lab, HOSTS, vmAddress, type HostName } from '../../src/lab/lab.js';
import { listNamespaces } from '../../src/lab/cleanup.js';
import { FerryError } from '../../src/errors.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const labModule = pathToFileURL(join(root, 'dist/src/lab/lab.js')).href;
const cliModule = pathToFileURL(join(root, 'dist/src/cli/lab.js')).href;

function uniquePrefix(): string {
  return `fl${randomBytes(3).toString('hex')}-`;
}

async function labNamespaces(prefix: string): Promise<string[]> {
  return (await listNamespaces()).filter((n) => n.startsWith(prefix));
}

function rootLinks(): string[] {
  const r = spawnSync('ip', ['-j', 'link', 'show'], { encoding: 'utf8' });
  return (JSON.parse(r.stdout) as { ifname: string }[]).map((l) => l.ifname).sort();
}

// A zombie counts as dead: an orphan's new parent (whatever runs as pid 1 here) may be slow to
// reap it, or never do.
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z /s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** `ferry lab ...` through the CLI module (main.ts wiring is not needed for this). */
function cli(args: string[], wrap: string[] = []): { code: number | null; stdout: string; stderr: string } {
  const code = `const m = await import(${JSON.stringify(cliModule)}); process.exitCode = await m.labCommand(process.argv.slice(1));`;
  const argv = [...wrap, process.execPath, '--input-type=module', '-e', code, ...args];
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

// Connects from inside a namespace and prints the first 8 bytes the server sends.
const READ_MAGIC = `
const net = require('node:net');
const [host, port] = process.argv.slice(1);
const s = net.connect(Number(port), host);
let buf = Buffer.alloc(0);
s.on('data', (d) => { buf = Buffer.concat([buf, d]); if (buf.length >= 8) { process.stdout.write(buf.subarray(0, 8).toString('latin1')); s.destroy(); } });
s.on('error', (e) => { console.error(e.message); process.exit(1); });
setTimeout(() => { console.error('timeout'); process.exit(1); }, 5000).unref();
`;

// A sink that acknowledges with one byte once it has received N bytes.
const SINK = `
const net = require('node:net');
const [port, n] = process.argv.slice(1).map(Number);
net.createServer((s) => { let got = 0; s.on('data', (d) => { got += d.length; if (got >= n) { s.end('k'); got = -Infinity; } }); })
  .listen(port, () => console.log('listening'));
`;

// Sends N bytes and prints the milliseconds until the sink acknowledged all of them.
const SEND = `
const net = require('node:net');
const [host, port, n] = process.argv.slice(1);
const t0 = process.hrtime.bigint();
const s = net.connect(Number(port), host, () => s.end(Buffer.alloc(Number(n))));
s.on('data', () => { console.log(Number(process.hrtime.bigint() - t0) / 1e6); s.destroy(); });
s.on('error', (e) => { console.error(e.message); process.exit(1); });
`;

async function waitForLine(child: ChildProcess, pattern: RegExp, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`no ${pattern} in output: ${out}`)), timeoutMs);
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      out += d;
      const m = pattern.exec(out);
      if (m) { clearTimeout(timer); resolve(m[0]); }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`exited ${code} before ${pattern}: ${out}`)); });
  });
}

async function transferMs(lab: Lab, from: HostName, to: HostName, bytes: number, port: number): Promise<number> {
  const sink = lab.spawn(to, process.execPath, ['-e', SINK, String(port), String(bytes)], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await waitForLine(sink, /listening/);
    const r = await lab.exec(from, process.execPath, ['-e', SEND, lab.address(to), String(port), String(bytes)], { timeoutMs: 60_000 });
    return Number(r.stdout.trim());
  } finally {
    sink.kill('SIGKILL');
  }
}

async function pingCount(lab: Lab, from: HostName, to: HostName, count: number): Promise<number> {
  const r = await lab.exec(from, 'ping', ['-n', '-q', '-c', String(count), '-i', '0.01', '-W', '1', lab.address(to)], { allowFailure: true, timeoutMs: 60_000 });
  const m = /(\d+) received/.exec(r.stdout);
  assert.ok(m, `ping output: ${r.stdout}${r.stderr}`);
  return Number(m[1]);
}

test('up: every host reaches every other host, on the configured subnet', { timeout: 60_000 }, async () => {
  const prefix = uniquePrefix();
  const before = rootLinks();
  const lab = await Lab.up({ prefix, subnet: '10.77.5.0/24' });
  try {
    assert.deepEqual((await labNamespaces(prefix)).sort(),
      ['client', 'host-a', 'host-b', 'lan', 'storage'].map((r) => prefix + r).sort());
    assert.deepEqual(HOSTS.map((h) => lab.address(h)), ['10.77.5.1', '10.77.5.2', '10.77.5.3', '10.77.5.4']);
    assert.equal(lab.vmAddress(0), '10.77.5.100');
    assert.equal(vmAddress(3), '10.77.0.103');
    assert.equal(lab.vmMac(0), '02:00:0a:4d:05:64');
    const pairs = HOSTS.flatMap((a) => HOSTS.filter((b) => b !== a).map((b) => [a, b] as const));
    const rtts = await Promise.all(pairs.map(([a, b]) => lab.ping(a, b)));
    pairs.forEach(([a, b], i) => assert.notEqual(rtts[i], null, `${a} -> ${b} got no reply`));
    // The root namespace gets no devices: everything lives in the lab's namespaces.
    assert.deepEqual(rootLinks(), before);
    // VM hosts carry their address on br0 with the uplink enslaved, ready for VM TAPs.
    const br = await lab.exec('host-a', 'ip', ['-j', 'link', 'show', 'master', 'br0']);
    assert.deepEqual((JSON.parse(br.stdout) as { ifname: string }[]).map((l) => l.ifname), ['eth0']);
    const st = await Lab.status(prefix);
    assert.equal(st.state, 'up');
    assert.equal(st.subnet, '10.77.5.0/24');
    const attached = await Lab.attach({ prefix });
    assert.equal(attached.address('client'), '10.77.5.4');
    assert.notEqual(await attached.ping('client', 'host-b'), null);
  } finally {
    await lab.down();
  }
});

test('shaping: rate caps throughput, loss drops frames, both change while the lab is up', { timeout: 120_000 }, async () => {
  const prefix = uniquePrefix();
  const lab = await Lab.up({ prefix });
  try {
    const bytes = 2_000_000;
    const fast = await transferMs(lab, 'host-b', 'storage', bytes, 9000);
    await lab.shape('host-b', { rateMbit: 8 });
    const slow = await transferMs(lab, 'host-b', 'storage', bytes, 9001);
    // 2 MB at 8 Mbit/s takes 2 s; allow for the token bucket's initial burst.
    assert.ok(slow >= 1600, `2 MB over an 8 Mbit/s link took only ${slow} ms`);
    assert.ok(fast < slow / 2, `unshaped ${fast} ms vs shaped ${slow} ms`);
    // The other direction is shaped too.
    const back = await transferMs(lab, 'storage', 'host-b', bytes, 9002);
    assert.ok(back >= 1600, `2 MB towards host-b took only ${back} ms`);
    assert.match((await Lab.status(prefix)).hosts[1]!.qdisc ?? '', /^tbf rate 8Mbit/);

    // Resolve ARP first: a lossy link can lose the ARP exchange too, and then every ping with it.
    assert.notEqual(await lab.ping('host-a', 'host-b'), null);
    await lab.shape('host-b', { lossPercent: 50 });
    // Request and reply each cross the link once: a round trip survives with p = 0.25.
    const got = await pingCount(lab, 'host-a', 'host-b', 60);
    assert.ok(got > 0 && got < 60, `${got}/60 pings answered at 50% loss`);
    assert.equal((await Lab.status(prefix)).hosts[1]!.lossPercent, 50);

    await lab.shape('host-b', null);
    assert.equal(await pingCount(lab, 'host-a', 'host-b', 20), 20);
    const again = await transferMs(lab, 'host-b', 'storage', bytes, 9003);
    assert.ok(again < slow / 2, `after removing the shaping: ${again} ms`);
  } finally {
    await lab.down();
  }
});

test('shaping: delay adds round-trip time where the kernel has netem, else is refused clearly', { timeout: 60_000 }, async () => {
  const prefix = uniquePrefix();
  const lab = await Lab.up({ prefix });
  try {
    const base = await lab.ping('host-a', 'host-b');
    assert.ok(base !== null && base < 20, `unshaped RTT ${base} ms`);
    if (lab.supportsDelay) {
      await lab.shape('host-b', { delayMs: 50 });
      const rtt = await lab.ping('host-a', 'host-b');
      assert.ok(rtt !== null && rtt >= 100, `RTT with 50 ms each way: ${rtt} ms`);
      await lab.shape('host-b', null);
      const after = await lab.ping('host-a', 'host-b');
      assert.ok(after !== null && after < 20, `RTT after removing delay: ${after} ms`);
    } else {
      await lab.shape('host-b', { rateMbit: 8 });
      await assert.rejects(lab.shape('host-b', { delayMs: 50 }), (e: unknown) =>
        e instanceof FerryError && e.code === 'LAB_SHAPING_UNSUPPORTED' && /CONFIG_NET_SCH_NETEM/.test(e.message));
      // A refused request leaves the link as it was.
      assert.match((await Lab.status(prefix)).hosts[1]!.qdisc ?? '', /^tbf rate 8Mbit/);
      assert.notEqual(await lab.ping('host-a', 'host-b'), null);
    }
  } finally {
    await lab.down();
  }
});

test('cut severs a link (down or drop) and restore brings it back with its shaping', { timeout: 60_000 }, async () => {
  const prefix = uniquePrefix();
  const lab = await Lab.up({ prefix, shapes: { 'host-b': { rateMbit: 50 } } });
  try {
    for (const mode of ['down', 'drop'] as const) {
      assert.notEqual(await lab.ping('host-a', 'host-b'), null);
      await lab.cut('host-b', mode);
      assert.equal(await lab.ping('host-a', 'host-b', { timeoutS: 1 }), null, `ping through a cut (${mode}) link`);
      assert.equal(await lab.ping('storage', 'host-b', { timeoutS: 1 }), null);
      // Other links are unaffected.
      assert.notEqual(await lab.ping('host-a', 'storage'), null);
      const st = (await Lab.status(prefix)).hosts[1]!;
      assert.equal(mode === 'down' ? st.link === 'down' : st.dropping, true);
      await lab.restore('host-b');
      assert.notEqual(await lab.ping('host-a', 'host-b'), null, `after restoring from ${mode}`);
      const after = (await Lab.status(prefix)).hosts[1]!;
      assert.equal(after.link, 'up');
      assert.equal(after.dropping, false);
      assert.match(after.qdisc ?? '', /^tbf rate 50Mbit/);
    }
  } finally {
    await lab.down();
  }
});

test('nbdkit on the storage host is reachable from host-a', { timeout: 60_000 }, async () => {
  const prefix = uniquePrefix();
  const lab = await Lab.up({ prefix });
  const dir = await mkdtemp(join(tmpdir(), 'ferry-lab-test-'));
  try {
    const mem = await lab.startNbd('mem', { sizeBytes: 64 << 20, port: 10809 });
    const file = join(dir, 'disk.img');
    await writeFile(file, Buffer.alloc(1 << 20));
    const fil = await lab.startNbd('file', { file, port: 10810 });
    for (const s of [mem, fil]) {
      const r = await lab.exec('host-a', process.execPath, ['-e', READ_MAGIC, lab.address('storage'), String(s.port)]);
      assert.equal(r.stdout, 'NBDMAGIC');
    }
    assert.equal(mem.uri, `nbd://${lab.address('storage')}:10809`);
    // nbdkit runs inside the storage namespace, not next to us.
    const procs = (await Lab.status(prefix)).hosts.find((h) => h.name === 'storage')!.processes;
    assert.deepEqual(procs.map((p) => p.pid).sort(), [mem.pid, fil.pid].sort());
    await assert.rejects(lab.startNbd('clash', { sizeBytes: 1 << 20, port: 10809 }), (e: unknown) =>
      e instanceof FerryError && e.code === 'LAB_NBD_FAILED');
    await mem.stop();
    assert.equal(alive(mem.pid!), false);
    const pid = fil.pid!;
    await lab.down();
    assert.equal(alive(pid), false, 'nbdkit survived down()');
  } finally {
    await lab.down();
    await rm(dir, { recursive: true, force: true });
  }
});

test('down removes namespaces, bridges, veths, TAPs, processes and scratch files; twice is fine', { timeout: 60_000 }, async () => {
  const prefix = uniquePrefix();
  const before = rootLinks();
  const lab = await Lab.up({ prefix });
  try {
    // What later issues add: a VM TAP on host-a's bridge and a long-running process.
    await lab.exec('host-a', 'ip', ['tuntap', 'add', 'dev', 'tap0', 'mode', 'tap']);
    await lab.attachToBridge('host-a', 'tap0');
    const ports = await lab.exec('host-a', 'ip', ['-j', 'link', 'show', 'master', 'br0']);
    assert.deepEqual((JSON.parse(ports.stdout) as { ifname: string }[]).map((l) => l.ifname).sort(), ['eth0', 'tap0']);
    assert.equal(existsSync(lab.netnsPath('host-a')), true);
    const sleeper = lab.spawn('host-b', 'sleep', ['1000'], { stdio: 'ignore' });
    const nbd = await lab.startNbd('d', { sizeBytes: 1 << 20, port: 10809 });
    assert.equal((await labNamespaces(prefix)).length, 5);
    await lab.down();
    assert.deepEqual(await labNamespaces(prefix), []);
    assert.equal(alive(sleeper.pid!), false);
    assert.equal(alive(nbd.pid!), false);
    assert.deepEqual(rootLinks(), before);
    assert.equal(spawnSync('ls', [tmpdir()], { encoding: 'utf8' }).stdout.split('\n').some((n) => n.startsWith(prefix)), false);
    await lab.down();
    assert.equal((await Lab.status(prefix)).state, 'absent');
    assert.throws(() => lab.spawn('host-a', 'true'), (e: unknown) => e instanceof FerryError && e.code === 'LAB_NOT_FOUND');
  } finally {
    await Lab.cleanup(prefix);
  }
});

// A child process builds a lab, starts nbdkit and a sleeper, reports, and waits to be killed.
function crashingChild(prefix: string): Promise<{ child: ChildProcess; nbdPid: number; sleeperPid: number }> {
  const code = `
    const { Lab } = await import(${JSON.stringify(labModule)});
    const lab = await Lab.up({ prefix: ${JSON.stringify(prefix)} });
    const nbd = await lab.startNbd('d', { sizeBytes: 1 << 20, port: 10809 });
    const sleeper = lab.spawn('client', 'sleep', ['1000'], { stdio: 'ignore', detached: true });
    console.log(JSON.stringify({ nbdPid: nbd.pid, sleeperPid: sleeper.pid }));
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  return waitForLine(child, /\{.*\}/, 30_000).then((line) => ({ child, ...(JSON.parse(line) as { nbdPid: number; sleeperPid: number }) }));
}

async function kill9(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

test('a lab whose creator was SIGKILLed is removed by Lab.cleanup, `ferry lab down` and the next up', { timeout: 120_000 }, async () => {
  const prefix = uniquePrefix();
  try {
    // 1. Lab.cleanup
    let crashed = await crashingChild(prefix);
    await kill9(crashed.child);
    assert.equal((await labNamespaces(prefix)).length, 5, 'the killed process left its namespaces');
    assert.equal(alive(crashed.sleeperPid), true, 'the detached sleeper outlived its creator');
    const report = await Lab.cleanup(prefix);
    assert.equal(report.namespaces.length, 5);
    assert.deepEqual(await labNamespaces(prefix), []);
    assert.equal(alive(crashed.sleeperPid), false);
    assert.equal(alive(crashed.nbdPid), false);

    // 2. ferry lab down
    crashed = await crashingChild(prefix);
    await kill9(crashed.child);
    const r = cli(['down', '--prefix', prefix]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /removed lab .*5 namespaces/);
    assert.deepEqual(await labNamespaces(prefix), []);
    assert.equal(alive(crashed.sleeperPid), false);

    // 3. Lab.up over the leftovers
    crashed = await crashingChild(prefix);
    await kill9(crashed.child);
    const lab = await Lab.up({ prefix });
    assert.equal(alive(crashed.sleeperPid), false);
    assert.notEqual(await lab.ping('client', 'storage'), null);
    await lab.down();
    assert.deepEqual(await labNamespaces(prefix), []);
  } finally {
    await Lab.cleanup(prefix);
  }
});

test('ferry lab up leaves the lab running; status reports it; down removes it', { timeout: 60_000 }, async () => {
  const prefix = uniquePrefix();
  try {
    const up = cli(['up', '--prefix', prefix, '--subnet', '10.77.9.0/24', '--rate', '100']);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout, /host-b +10\.77\.9\.2 /);
    const st = cli(['status', '--prefix', prefix, '--json']);
    assert.equal(st.code, 0, st.stderr);
    const json = JSON.parse(st.stdout) as { state: string; subnet: string; hosts: { qdisc: string | null }[] };
    assert.equal(json.state, 'up');
    assert.equal(json.subnet, '10.77.9.0/24');
    assert.ok(json.hosts.every((h) => /^tbf rate 100Mbit/.test(h.qdisc ?? '')));
    const lab = await Lab.attach({ prefix });
    assert.notEqual(await lab.ping('host-a', 'host-b'), null);
    assert.equal(cli(['down', '--prefix', prefix]).code, 0);
    const gone = cli(['status', '--prefix', prefix]);
    assert.equal(gone.code, 1);
    assert.match(gone.stdout, /no lab/);
    assert.deepEqual(await labNamespaces(prefix), []);
  } finally {
    await Lab.cleanup(prefix);
  }
});

test('bad flags and options are usage or config errors', { timeout: 30_000 }, async () => {
  for (const args of [['up', '--bogus'], ['up', '--rate', 'fast'], ['up', '--rate', '0'], ['frob'], [], ['status', 'extra']]) {
    const r = cli(args);
    assert.equal(r.code, 2, `ferry lab ${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^ferry lab: /);
  }
  const bad = cli(['up', '--prefix', uniquePrefix(), '--subnet', '10.77.0.1/24']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /host bits are set .*LAB_BAD_CONFIG/);
  for (const opts of [{ prefix: '-rf' }, { prefix: 'a/b' }, { subnet: '10.77.0.0/25' }, { subnet: 'nope' }]) {
    await assert.rejects(Lab.up(opts), (e: unknown) => e instanceof FerryError && e.code === 'LAB_BAD_CONFIG');
  }
  await assert.rejects(Lab.up({ prefix: uniquePrefix(), shape: { lossPercent: 200 } }),
    (e: unknown) => e instanceof FerryError && e.code === 'LAB_BAD_CONFIG' && /lossPercent/.test(e.message));
});

test('without root the lab refuses with LAB_NEEDS_ROOT and touches nothing', { timeout: 30_000 }, async () => {
  const prefix = uniquePrefix();
  await assert.rejects(Lab.up({ prefix, uid: 1000 }), (e: unknown) =>
    e instanceof FerryError && e.code === 'LAB_NEEDS_ROOT' && /must run as root/.test(e.message) && /sudo/.test(e.message));
  await assert.rejects(Lab.cleanup(prefix, { uid: 1000 }), (e: unknown) => e instanceof FerryError && e.code === 'LAB_NEEDS_ROOT');
  assert.deepEqual(await labNamespaces(prefix), []);
  // The real thing: the CLI as user nobody.
  assert.ok(existsSync('/usr/bin/setpriv'), 'setpriv (util-linux) is needed for this test');
  const asNobody = ['setpriv', '--reuid', '65534', '--regid', '65534', '--clear-groups'];
  for (const sub of ['up', 'down', 'status']) {
    const r = cli([sub, '--prefix', prefix], asNobody);
    assert.equal(r.code, 1, `${sub}: ${r.stderr}`);
    assert.match(r.stderr, /must run as root \(running as uid 65534\).*\[LAB_NEEDS_ROOT\]/);
  }
  assert.deepEqual(await labNamespaces(prefix), []);
  // The scratch directory is not created either.
  assert.equal(await stat(join(tmpdir(), `${prefix}lab-`)).then(() => true, () => false), false);
});
