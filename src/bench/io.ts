// npm run bench:io -- [--json]
// Guest-visible I/O in the lab, ferry vs qemu-system-riscv64 with the same guest and the same
// kinds of backends: TCP throughput from the client host into the guest (virtio-net on a TAP
// on the host's bridge), and sequential O_DIRECT reads and writes of an NBD disk served from
// the storage host (virtio-blk).

import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Lab } from '../lab/lab.js';
import { LabVm } from '../lab/vm-process.js';
import { ensureGuestImage } from '../guest/image.js';
import { GUEST_CMDLINE } from '../guest/cmdline.js';
import { repoRoot } from '../guest/paths.js';

const NET_BYTES = 48 << 20;
const BLK_MIB = 64;
const SINK_PORT = 9001;

interface IoFigures { net_mbps: number; blk_read_mbs: number; blk_write_mbs: number }

/** Times a guest command by the guest's own uptime clock (wall time, 10 ms resolution). */
async function timed(vm: LabVm, command: string): Promise<number> {
  const r = await vm.exec(`t0=$(cut -d' ' -f1 /proc/uptime); ${command} >/dev/null 2>&1; s=$?; t1=$(cut -d' ' -f1 /proc/uptime); echo "T $t0 $t1 $s"`, 600_000);
  const m = /T ([\d.]+) ([\d.]+) (\d+)/.exec(r.output);
  if (!m || m[3] !== '0') throw new Error(`guest command failed: ${command}\n${r.output}`);
  return Number(m[2]) - Number(m[1]);
}

async function measure(lab: Lab, vm: LabVm): Promise<IoFigures> {
  await vm.ready();
  const write = await timed(vm, `dd if=/dev/zero of=/dev/vda bs=1M count=${BLK_MIB} oflag=direct`);
  const read = await timed(vm, `dd if=/dev/vda of=/dev/null bs=1M count=${BLK_MIB} iflag=direct`);
  vm.driver.send(`netserver --sink ${SINK_PORT} &\n`);
  await vm.driver.waitFor(/ferry# /, 30_000, vm.driver.length);
  const sender = join(repoRoot(), 'dist/src/bench/tcp-send.js');
  const r = await lab.exec('client', process.execPath, [sender, vm.address, String(SINK_PORT), String(NET_BYTES)], { timeoutMs: 600_000 });
  const net = JSON.parse(r.stdout.trim().split('\n').pop()!) as { bytes: number; seconds: number };
  return {
    net_mbps: round(net.bytes * 8 / net.seconds / 1e6),
    blk_read_mbs: round(BLK_MIB * 1.048576 / read),
    blk_write_mbs: round(BLK_MIB * 1.048576 / write),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { json: { type: 'boolean' } } });
  const log = (s: string) => (values.json ? process.stderr : process.stdout).write(s + '\n');
  const image = await ensureGuestImage({ log });
  const lab = await Lab.up({ prefix: `fb${process.pid % 10000}-` });
  try {
    const ferryDisk = await lab.startNbd('ferry', { sizeBytes: 256 << 20, port: 10809 });
    const qemuDisk = await lab.startNbd('qemu', { sizeBytes: 256 << 20, port: 10810 });

    const fvm = LabVm.start(lab, { host: 'host-a', index: 0, disks: [ferryDisk.uri] });
    let ferry: IoFigures;
    try {
      ferry = await measure(lab, fvm);
      log(`ferry: ${JSON.stringify(ferry)}`);
    } finally {
      await fvm.kill();
    }
    const qvm = await LabVm.startQemu(lab, {
      host: 'host-b', index: 1, disks: [qemuDisk.uri], kernel: image.kernel, initramfs: image.initramfs, cmdline: GUEST_CMDLINE,
    });
    let qemu: IoFigures;
    try {
      qemu = await measure(lab, qvm);
      log(`qemu:  ${JSON.stringify(qemu)}`);
    } finally {
      await qvm.kill();
    }
    console.log(JSON.stringify({
      ...ferry,
      qemu_net_mbps: qemu.net_mbps,
      qemu_blk_read_mbs: qemu.blk_read_mbs,
      qemu_blk_write_mbs: qemu.blk_write_mbs,
      net_ratio: round(ferry.net_mbps / qemu.net_mbps),
      blk_read_ratio: round(ferry.blk_read_mbs / qemu.blk_read_mbs),
      blk_write_ratio: round(ferry.blk_write_mbs / qemu.blk_write_mbs),
      net_bytes: NET_BYTES,
      blk_bytes: BLK_MIB << 20,
    }));
  } finally {
    await lab.down();
  }
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

await main();
