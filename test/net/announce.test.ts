import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FerryError } from '../../src/errors.js';
import { buildAnnouncement, buildGratuitousArp, buildRarpAnnounce, formatMac, parseIpv4, parseMac } from '../../src/net/announce.js';
import { hex } from './frames.js';

const MAC = '52:54:00:12:34:56';

test('RARP announce: QEMU announce-self layout, 60 bytes', () => {
  const f = buildRarpAnnounce(MAC);
  assert.equal(f.length, 60);
  assert.equal(hex(f),
    'ffffffffffff' + '525400123456' + '8035' + // broadcast from the VM, ethertype RARP
    '0001' + '0800' + '06' + '04' + '0003' + // Ethernet/IPv4, reverse request
    '525400123456' + '00000000' + '525400123456' + '00000000' + // sender = target = VM MAC, no IPs
    '00'.repeat(18)); // pad to the Ethernet minimum
});

test('gratuitous ARP request: sender and target IP are the VM\'s, target MAC zero', () => {
  const f = buildGratuitousArp(MAC, '10.0.0.7');
  assert.equal(hex(f),
    'ffffffffffff' + '525400123456' + '0806' +
    '0001' + '0800' + '06' + '04' + '0001' +
    '525400123456' + '0a000007' + '000000000000' + '0a000007' +
    '00'.repeat(18));
});

test('gratuitous ARP reply variant', () => {
  const f = buildGratuitousArp(parseMac(MAC), parseIpv4('192.168.1.254'), { op: 'reply' });
  assert.equal(hex(f.subarray(20, 42)), '0002' + '525400123456' + 'c0a801fe' + '525400123456' + 'c0a801fe');
});

test('announcement round: RARP first, then one GARP per address', () => {
  const frames = buildAnnouncement({ mac: MAC, ipv4: ['10.0.0.7', '10.0.1.7'] });
  assert.deepEqual(frames.map((f) => hex(f.subarray(12, 14))), ['8035', '0806', '0806']);
  assert.equal(hex(frames[2]!.subarray(38, 42)), '0a000107');
  assert.equal(buildAnnouncement({ mac: MAC }).length, 1);
});

test('address parsing', () => {
  assert.equal(formatMac(parseMac('52-54-00-AB-cd-0E')), '52:54:00:ab:cd:0e');
  for (const bad of ['52:54:00:12:34', '52:54:00:12:34:567', 'zz:54:00:12:34:56']) {
    assert.throws(() => parseMac(bad), (e: unknown) => e instanceof FerryError && e.code === 'NET_BAD_ADDRESS');
  }
  for (const bad of ['10.0.0', '10.0.0.256', '10.0.0.x']) {
    assert.throws(() => parseIpv4(bad), (e: unknown) => e instanceof FerryError && e.code === 'NET_BAD_ADDRESS');
  }
});
