// How many frames per second go through a TapBackend. Printed as test diagnostics (see
// DESIGN.md for recorded figures); the floors only catch a pathological regression.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { TapBackend } from '../../src/net/tap.js';
import { icmpEchoRequestFrame, linkInfo, requireNetAdmin, sh, udpFrame, withNetns } from './frames.js';

const VM_MAC = '02:00:00:0f:e4:01';
const VM_IP = '10.77.0.2';
const HOST_IP = '10.77.0.1';

requireNetAdmin();

async function setup(ns: string): Promise<{ tap: TapBackend; hostMac: string }> {
  const tap = await TapBackend.open({ namespace: ns, name: 'vm0' });
  sh('ip', ['-n', ns, 'addr', 'add', `${HOST_IP}/24`, 'dev', 'vm0']);
  sh('ip', ['-n', ns, 'neigh', 'replace', VM_IP, 'lladdr', VM_MAC, 'dev', 'vm0']);
  // Default txqueuelen is 1000; the flood below is meant to measure the backend, not qdisc drops.
  sh('ip', ['-n', ns, 'link', 'set', 'vm0', 'txqueuelen', '10000']);
  return { tap, hostMac: linkInfo(ns, 'vm0')!.address };
}

test('round trip: pipelined ICMP echo, backend -> kernel -> backend', async (t) => {
  await withNetns(async (ns) => {
    const { tap, hostMac } = await setup(ns);
    try {
      const window = 64;
      const durationMs = 2000;
      const data = new Uint8Array(56);
      let sent = 0;
      let replies = 0;
      const sendOne = (): void => {
        tap.send(icmpEchoRequestFrame({ srcMac: VM_MAC, dstMac: hostMac, srcIp: VM_IP, dstIp: HOST_IP, id: 1, seq: sent & 0xffff, data }));
        sent++;
      };
      const start = performance.now();
      await new Promise<void>((resolve) => {
        tap.onReceive((f) => {
          if (f[23] !== 1 || f[34] !== 0) return;
          replies++;
          if (performance.now() - start < durationMs) sendOne();
          else if (replies === sent) resolve();
        });
        for (let i = 0; i < window; i++) sendOne();
        // Replies can be lost (ICMP rate limits do not apply to echo, but be safe): stop anyway.
        setTimeout(resolve, durationMs + 2000);
      });
      const secs = (performance.now() - start) / 1000;
      const rate = Math.round(replies / secs);
      t.diagnostic(`ICMP round trips: ${replies} in ${secs.toFixed(2)} s = ${rate}/s (${rate * 2} frames/s through the TAP, window ${window})`);
      assert.ok(rate > 1000, `round-trip rate ${rate}/s`);
    } finally {
      await tap.close();
    }
  });
});

test('receive: kernel floods UDP out of the TAP, backend counts', async (t) => {
  await withNetns(async (ns) => {
    const { tap } = await setup(ns);
    try {
      let frames = 0;
      let first = 0;
      let last = 0;
      tap.onReceive((f) => {
        if (f[23] !== 17) return;
        if (frames === 0) first = performance.now();
        last = performance.now();
        frames++;
      });
      const count = 200_000;
      // A sender inside the namespace: its datagrams to VM_IP leave through vm0 (static neighbour).
      const sender = `const s=require('dgram').createSocket('udp4');const b=Buffer.alloc(64);let n=0;
function go(){for(let i=0;i<500&&n<${count};i++,n++)s.send(b,9,'${VM_IP}');if(n<${count})setImmediate(go);else setTimeout(()=>s.close(),200);}go();`;
      const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', sender], { stdio: 'inherit' });
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      assert.equal(code, 0);
      await new Promise((r) => setTimeout(r, 300));
      const secs = (last - first) / 1000;
      const rate = Math.round(frames / secs);
      t.diagnostic(`RX: ${frames}/${count} frames in ${secs.toFixed(2)} s = ${rate} frames/s (sender-limited if close to the sender's rate)`);
      assert.ok(frames > count / 2, `received ${frames} of ${count}`);
    } finally {
      await tap.close();
    }
  });
});

test('transmit: backend floods UDP into the kernel', async (t) => {
  await withNetns(async (ns) => {
    const { tap, hostMac } = await setup(ns);
    try {
      const frame = udpFrame({ srcMac: VM_MAC, dstMac: hostMac, srcIp: VM_IP, dstIp: HOST_IP, srcPort: 5000, dstPort: 9, data: new Uint8Array(18) });
      const count = 200_000;
      const start = performance.now();
      for (let i = 0; i < count; i++) tap.send(frame);
      const secs = (performance.now() - start) / 1000;
      const rate = Math.round(count / secs);
      t.diagnostic(`TX: ${tap.stats.txFrames} frames (${tap.stats.txDropped} dropped) in ${secs.toFixed(2)} s = ${rate} frames/s`);
      const stats = sh('ip', ['-n', ns, '-s', '-j', 'link', 'show', 'dev', 'vm0']);
      const rx = (JSON.parse(stats) as Array<{ stats64: { rx: { packets: number } } }>)[0]!.stats64.rx.packets;
      assert.ok(rx >= tap.stats.txFrames, `kernel saw ${rx} packets`);
      assert.ok(tap.stats.txFrames > count * 0.9);
    } finally {
      await tap.close();
    }
  });
});
