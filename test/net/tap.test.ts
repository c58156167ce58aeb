// TapBackend against the real kernel: each test makes its own network namespace, so the kernel
// on the far side of the TAP is a clean host that answers ARP and ping.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { FerryError } from '../../src/errors.js';
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, parseIpv4, parseMac } from '../../src/net/announce.js';
import { startTapThread, TapBackend } from '../../src/net/tap.js';
import {
  arpRequest, hex, icmpEcho, icmpEchoRequestFrame, inetChecksum, linkInfo, nextFrame, requireNetAdmin, sh, withNetns,
} from './frames.js';

const VM_MAC = '02:00:00:0f:e4:01';
const VM_IP = '10.77.0.2';
const HOST_IP = '10.77.0.1';

requireNetAdmin();

async function withTap<T>(ns: string, name: string, fn: (tap: TapBackend) => Promise<T>): Promise<T> {
  const tap = await TapBackend.open({ namespace: ns, name });
  try {
    return await fn(tap);
  } finally {
    await tap.close();
  }
}

test('open creates the TAP inside the namespace, up; close removes it', async () => {
  await withNetns(async (ns) => {
    const tap = await TapBackend.open({ namespace: ns, name: 'vm0' });
    try {
      assert.equal(tap.name, 'vm0');
      const info = linkInfo(ns, 'vm0');
      assert.ok(info, 'vm0 exists in the namespace');
      assert.ok(info.flags.includes('UP'), `link is up: ${info.flags.join(',')}`);
      assert.equal(linkInfo(undefined, 'vm0'), undefined, 'not in the test runner\'s namespace');
    } finally {
      await tap.close();
    }
    assert.equal(linkInfo(ns, 'vm0'), undefined, 'gone after close');
    await tap.close(); // idempotent
    tap.send(new Uint8Array(60));
    assert.equal(tap.stats.txDropped, 1, 'send after close is dropped, not thrown');
  });
});

test('kernel-chosen name is reported', async () => {
  await withNetns(async (ns) => {
    const tap = await TapBackend.open({ namespace: ns });
    try {
      assert.match(tap.name, /^tap\d+$/);
      assert.ok(linkInfo(ns, tap.name));
    } finally {
      await tap.close();
    }
    assert.equal(linkInfo(ns, tap.name), undefined);
  });
});

test('ARP request through the TAP gets the kernel\'s ARP reply, byte for byte', async () => {
  await withNetns(async (ns) => withTap(ns, 'vm0', async (tap) => {
    sh('ip', ['-n', ns, 'addr', 'add', `${HOST_IP}/24`, 'dev', 'vm0']);
    const hostMac = linkInfo(ns, 'vm0')!.address;
    const reply = nextFrame((l) => tap.onReceive(l), (f) => f[12] === 0x08 && f[13] === 0x06);
    tap.send(arpRequest(VM_MAC, VM_IP, HOST_IP));
    const f = await reply;
    const expected = new Uint8Array(42);
    expected.set(parseMac(VM_MAC), 0);
    expected.set(parseMac(hostMac), 6);
    new DataView(expected.buffer).setUint16(12, ETHERTYPE_ARP);
    expected.set([0, 1, 0x08, 0x00, 6, 4, 0, 2], 14);
    expected.set(parseMac(hostMac), 22);
    expected.set(parseIpv4(HOST_IP), 28);
    expected.set(parseMac(VM_MAC), 32);
    expected.set(parseIpv4(VM_IP), 38);
    // TAP frames are not padded to 60 bytes: the kernel hands over exactly the ARP packet.
    assert.equal(hex(f), hex(expected));
    assert.ok(tap.stats.rxFrames >= 1 && tap.stats.txFrames === 1);
  }));
});

test('ICMP echo request through the TAP gets an echo reply with our payload', async () => {
  await withNetns(async (ns) => withTap(ns, 'vm0', async (tap) => {
    sh('ip', ['-n', ns, 'addr', 'add', `${HOST_IP}/24`, 'dev', 'vm0']);
    const hostMac = linkInfo(ns, 'vm0')!.address;
    // Teach the kernel our MAC first, so its reply does not wait on an ARP round.
    sh('ip', ['-n', ns, 'neigh', 'replace', VM_IP, 'lladdr', VM_MAC, 'dev', 'vm0']);
    const data = new TextEncoder().encode('ferry over tap 0123456789abcdef');
    const isReply = (f: Uint8Array): boolean => f[12] === 0x08 && f[13] === 0x00 && f[23] === 1 && f[34] === 0;
    const reply = nextFrame((l) => tap.onReceive(l), isReply);
    tap.send(icmpEchoRequestFrame({ srcMac: VM_MAC, dstMac: hostMac, srcIp: VM_IP, dstIp: HOST_IP, id: 0xfe77, seq: 3, data }));
    const f = await reply;
    assert.equal(hex(f.subarray(0, 14)), hex(new Uint8Array([...parseMac(VM_MAC), ...parseMac(hostMac), ETHERTYPE_IPV4 >> 8, ETHERTYPE_IPV4 & 0xff])));
    const ip = f.subarray(14, 34);
    assert.equal(ip[0], 0x45);
    assert.equal(new DataView(ip.buffer, ip.byteOffset).getUint16(2), 20 + 8 + data.length);
    assert.equal(ip[9], 1, 'protocol ICMP');
    assert.equal(hex(ip.subarray(12, 16)), hex(parseIpv4(HOST_IP)));
    assert.equal(hex(ip.subarray(16, 20)), hex(parseIpv4(VM_IP)));
    assert.equal(inetChecksum(ip), 0, 'IPv4 header checksum');
    assert.equal(f.length, 34 + 8 + data.length);
    assert.equal(hex(f.subarray(34)), hex(icmpEcho(0, 0xfe77, 3, data)), 'ICMP echo reply, exact bytes');
  }));
});

test('attachToBridge enslaves the TAP to a bridge in its namespace', async () => {
  await withNetns(async (ns) => withTap(ns, 'vm0', async (tap) => {
    sh('ip', ['-n', ns, 'link', 'add', 'br0', 'type', 'bridge']);
    await tap.attachToBridge('br0');
    const info = linkInfo(ns, 'vm0');
    assert.equal(info?.master, 'br0');
    await assert.rejects(tap.attachToBridge('nosuchbr'), (e: unknown) => e instanceof FerryError && e.code === 'TAP_CONFIG_FAILED');
  }));
});

test('open with a bridge joins it before the link comes up, on a thread started ahead', async () => {
  await withNetns(async (ns) => {
    sh('ip', ['-n', ns, 'link', 'add', 'br0', 'type', 'bridge']);
    const thread = startTapThread();
    const tap = await TapBackend.open({ namespace: ns, name: 'vm0', bridge: 'br0', thread });
    try {
      const info = linkInfo(ns, 'vm0');
      assert.equal(info?.master, 'br0');
      assert.ok(info?.flags.includes('UP'), `link is up: ${info?.flags.join(',')}`);
    } finally {
      await tap.close();
    }
    assert.equal(linkInfo(ns, 'vm0'), undefined, 'gone after close');
    // A bridge that does not exist: the device is not left behind, and the handed-in thread ends.
    const spare = startTapThread();
    const ended = new Promise<void>((resolve) => spare.once('exit', () => resolve()));
    await assert.rejects(TapBackend.open({ namespace: ns, name: 'vm1', bridge: 'nosuchbr', thread: spare }),
      (e: unknown) => e instanceof FerryError && e.code === 'TAP_CONFIG_FAILED' && /nosuchbr/.test(e.message));
    await ended;
    assert.equal(linkInfo(ns, 'vm1'), undefined, 'no TAP left behind');
    await assert.rejects(TapBackend.open({ namespace: ns, bridge: 'bad/name', thread: startTapThread() }),
      (e: unknown) => e instanceof FerryError && e.code === 'TAP_BAD_NAME');
  });
});

test('two TAPs in two namespaces with the same name coexist', async () => {
  await withNetns(async (a) => withNetns(async (b) => {
    await withTap(a, 'vm0', async () => withTap(b, 'vm0', async () => {
      assert.ok(linkInfo(a, 'vm0'));
      assert.ok(linkInfo(b, 'vm0'));
    }));
    assert.equal(linkInfo(a, 'vm0'), undefined);
    assert.equal(linkInfo(b, 'vm0'), undefined);
  }));
});

test('error paths carry stable codes', async () => {
  await assert.rejects(TapBackend.open({ namespace: `ferry-no-such-ns-${process.pid}` }),
    (e: unknown) => e instanceof FerryError && e.code === 'TAP_NAMESPACE_MISSING');
  await assert.rejects(TapBackend.open({ name: 'a/b' }), (e: unknown) => e instanceof FerryError && e.code === 'TAP_BAD_NAME');
  await withNetns(async (ns) => {
    sh('ip', ['-n', ns, 'link', 'add', 'taken0', 'type', 'bridge']);
    await assert.rejects(TapBackend.open({ namespace: ns, name: 'taken0' }), (e: unknown) => e instanceof FerryError && e.code === 'TAP_OPEN_FAILED');
  });
});

test('non-root: TAP_UNAVAILABLE', () => {
  const tapModule = new URL('../../src/net/tap.js', import.meta.url).href;
  const script = `import { TapBackend } from ${JSON.stringify(tapModule)};
try { const t = await TapBackend.open(); console.log('OPENED ' + t.name); await t.close(); }
catch (e) { console.log('CODE ' + e.code); console.log(e.message); }`;
  const r = spawnSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script],
    { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.error, undefined, `setpriv could not run: ${String(r.error)}`);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^CODE TAP_UNAVAILABLE\n.*(root|CAP_NET_ADMIN)/, r.stdout + r.stderr);
});
