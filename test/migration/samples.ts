// One valid instance of every message type, shared by the protocol and fuzz tests.

import { AbortCode, PAGE_SIZE, type ProtocolMessage } from '../../src/migration/protocol/messages.js';

export const RAM_BYTES = 64 << 20;

function pageData(pages: number, seed: number): Buffer {
  const b = Buffer.alloc(pages * PAGE_SIZE);
  for (let i = 0; i < b.length; i += 97) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

export function sampleMessages(): ProtocolMessage[] {
  return [
    { type: 'Hello', versions: { min: 1, max: 3 }, tokenId: Buffer.alloc(16, 0xa1), sourceNonce: Buffer.alloc(32, 0xb2) },
    { type: 'Challenge', versions: { min: 1, max: 1 }, version: 1, destinationNonce: Buffer.alloc(32, 0xc3) },
    { type: 'Auth', proof: Buffer.alloc(32, 0xd4) },
    { type: 'AuthOk', proof: Buffer.alloc(32, 0xe5) },
    {
      type: 'Config',
      ramBytes: RAM_BYTES,
      pageSize: PAGE_SIZE,
      isa: 'rv64imafdc_zicsr_zifencei',
      name: 'web-1 ✓',
      devices: ['uart16550', 'virtio-blk', 'virtio-net'],
      config: { name: 'web-1', memoryMiB: 64, disks: [{ path: '/var/lib/ferry/web-1.img' }] },
    },
    { type: 'Reserved', vmId: 'vm-7f3a' },
    { type: 'Pages', round: 0, compression: 0, pages: [0, 1, 7, 16383], data: pageData(4, 1) },
    { type: 'Pages', round: 3, compression: 0, pages: [42], data: pageData(1, 9) },
    { type: 'ZeroRun', round: 2, firstPage: 100, count: 28 },
    { type: 'RoundEnd', round: 2, pagesSent: 12345, pagesZeroed: 28 },
    { type: 'RoundAck', round: 2, pagesReceived: 12373 },
    // Version 2 (post-copy): runs may touch (adjacent) but not overlap; the last ends at the last page.
    { type: 'Absent', origin: 'peer', runs: [{ first: 0, count: 1 }, { first: 1, count: 30 }, { first: 4096, count: 512 }, { first: 16000, count: 384 }] },
    { type: 'Absent', origin: 'swap', runs: [{ first: 8192, count: 2048 }] },
    { type: 'PageRequest', pages: [4100, 17, 16383, 0] },
    { type: 'PageRequest', pages: [4097] },
    { type: 'PostcopyEnd', pagesPushed: 927 },
    { type: 'PostcopyAck', pagesReceived: 300 },
    { type: 'PostcopyComplete', pagesReceived: 927, faults: 41, stallUsTotal: 2 ** 40 + 12345, stallUsMax: 73_512, duplicates: 0 },
    { type: 'DeviceState', state: { config: { ramBytes: RAM_BYTES, sbiInMachine: true }, cpu: { pc: '0x80200000' }, virtio: [], clock: { ticks: '123456789' } } },
    { type: 'CommitRequest', finalRound: 5 },
    { type: 'Committed' },
    { type: 'Activate' },
    { type: 'Done' },
    // Version 3 (the switch's tail): a minimum-size frame and a full-size one.
    { type: 'Frames', nic: 0, frames: [Buffer.alloc(14, 0x5a), Buffer.alloc(65_550, 0x17)] },
    { type: 'Frames', nic: 3, frames: [Buffer.from('ffffffffffff020000000064080600010800060400010200', 'hex')] },
    { type: 'SwitchEnd' },
    { type: 'PostcopyStats', p50Us: 812, p99Us: 41_377, maxUs: 2 ** 40 },
    { type: 'SwitchTimes', events: [{ event: 'state-loaded', atMs: 1_780_000_000_123.25 }, { event: 'first-frame-out', atMs: 1_780_000_000_130.5 }], framesDelivered: 7, framesDropped: 0 },
    { type: 'SwitchTimes', events: [], framesDelivered: 0, framesDropped: 3 },
    { type: 'Cancel', reason: 'operator cancelled' },
    { type: 'Abort', code: AbortCode.CannotHost, message: 'not enough memory: 64 MiB wanted, 12 MiB free' },
    { type: 'Abort', code: 999, message: '' },
  ];
}
