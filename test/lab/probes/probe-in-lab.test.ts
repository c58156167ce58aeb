// The real probe from the lab's client host against a real guest's echo (netserver in the
// Debian guest on host-a): it is answered, and a deliberate silent partition of host-a's link
// for a known time shows up as a blackout of about that length, on the wall clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Lab } from '../../../src/lab/lab.js';
import { LabVm } from '../../../src/lab/vm-process.js';
import { ensureGuestImage } from '../../../src/guest/image.js';
import { BlackoutProbe } from '../../../src/lab/probes/probe.js';
import { GUEST_PROBE_COMMAND, guestProbeTarget } from '../../../src/lab/probes/report.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const epoch = () => performance.timeOrigin + performance.now();
const CUT_MS = 1500;

test('the blackout probe sees the guest answer, and a 1.5 s cut of its host as a blackout of about that length', { timeout: 600_000 }, async (t) => {
  await ensureGuestImage();
  const lab = await Lab.up({ prefix: `fp${process.pid % 10000}-` });
  try {
    const vm = LabVm.start(lab, { host: 'host-a', index: 0 });
    let probe: BlackoutProbe | undefined;
    try {
      await vm.ready();
      const started = await vm.exec(GUEST_PROBE_COMMAND, 30_000);
      assert.equal(started.status, 0, started.output);
      probe = await BlackoutProbe.start(guestProbeTarget(vm.address), (args) => lab.spawn('client', process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] }));
      await sleep(1000);
      const cutAt = epoch();
      await lab.cut('host-a', 'drop');
      const cutDone = epoch();
      await sleep(CUT_MS);
      const restoreAt = epoch();
      await lab.restore('host-a');
      const restoredAt = epoch();
      // TCP's retransmission timer backs off during the cut: time for the stream to resume.
      await sleep(3000);
      const r = await probe.stop();
      t.diagnostic(JSON.stringify(r));

      assert.ok(r.udp.received > 1000, `replies: ${JSON.stringify(r.udp)}`);
      assert.ok(r.udp.lost >= CUT_MS / 3, `a 1.5 s cut loses hundreds of 1 ms probes: ${JSON.stringify(r.udp)}`);
      const gap = r.udp.maxGap;
      assert.ok(gap && !gap.open, `a closed blackout: ${JSON.stringify(gap)}`);
      // Generous bands: the cut and the restore take effect somewhere inside their commands.
      const what = `blackout ${JSON.stringify(gap)}; cut ${cutAt}..${cutDone}, restore ${restoreAt}..${restoredAt}`;
      assert.ok(gap.ms >= restoreAt - cutDone - 200 && gap.ms <= restoredAt - cutAt + 1500, what);
      assert.ok(gap.startMs >= cutAt - 500 && gap.startMs <= cutDone + 50, what);
      assert.ok(gap.endMs >= restoreAt && gap.endMs <= restoredAt + 1500, what);
      assert.ok(r.stream.bytes > 0 && r.stream.intact, `stream: ${JSON.stringify(r.stream)}`);
      assert.ok(r.stream.maxStall && r.stream.maxStall.ms >= CUT_MS - 200, `stream stall: ${JSON.stringify(r.stream.maxStall)}`);
      // A SYN lost in the cut waits for its retransmission, a second or more.
      assert.ok(r.connect.completed > 10 && r.connect.maxMs >= 900, `connects: ${JSON.stringify(r.connect)}`);
    } finally {
      probe?.kill();
      await vm.kill();
    }
  } finally {
    await lab.down();
  }
});
