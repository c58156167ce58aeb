// A VM running on a lab host: `ferry run` started inside the host's namespace (so its TAP joins
// that host's br0 and its NBD connection leaves from that host), with the guest console on the
// child's stdio and scripted through a ConsoleDriver.

import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { Lab, HostName } from './lab.js';
import { ConsoleDriver, GUEST_PROMPT } from '../machine/console/shell.js';
import { repoRoot } from '../guest/paths.js';
import { FerryError } from '../errors.js';

export interface LabVmOptions {
  readonly host: HostName;
  /** The VM's index in the lab's VM address range (its IP and MAC follow from it). */
  readonly index: number;
  readonly memoryMiB?: number;
  readonly disks?: readonly string[];
  /** Extra `ferry run` arguments (e.g. --append). */
  readonly args?: readonly string[];
}

export class LabVm {
  readonly driver = new ConsoleDriver();
  readonly address: string;
  readonly mac: string;
  /** What the VMM printed on stderr (its own errors, not the guest's). */
  stderr = '';
  private readonly exited: Promise<number | null>;

  private constructor(readonly child: ChildProcess, address: string, mac: string) {
    this.address = address;
    this.mac = mac;
    child.stdout!.on('data', (b: Buffer) => this.driver.write(b));
    this.driver.onInput((bytes) => { child.stdin!.write(bytes); });
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  /** ferry's VMM. */
  static start(lab: Lab, opts: LabVmOptions): LabVm {
    const { address, mac, gateway, cidr } = placement(lab, opts);
    const args = [
      join(repoRoot(), 'bin/ferry.js'), 'run',
      '--memory', String(opts.memoryMiB ?? 256),
      '--net', 'tap:br0', '--mac', mac, '--ip', `${cidr},${gateway}`,
      ...(opts.disks ?? []).flatMap((d) => ['--disk', d]),
      ...(opts.args ?? []),
    ];
    return LabVm.spawn(lab, opts.host, process.execPath, args, address, mac);
  }

  /**
   * The peer: qemu-system-riscv64 running the same guest with the same kinds of devices
   * (virtio-net on a TAP joined to the host's br0, virtio-blk disks, virtio-rng).
   * NBD disks are given as nbd:// URIs, which QEMU's block layer opens itself.
   * `qemuArgs` are appended to QEMU's command line (e.g. -qmp, -incoming).
   */
  static async startQemu(lab: Lab, opts: LabVmOptions & { kernel: string; initramfs: string; cmdline: string; qemuArgs?: readonly string[] }): Promise<LabVm> {
    const { address, mac, gateway, cidr } = placement(lab, opts);
    const tap = `qtap${opts.index}`;
    const args = [
      '-M', 'virt', '-m', `${opts.memoryMiB ?? 256}M`, '-nographic', '-no-reboot',
      '-kernel', opts.kernel, '-initrd', opts.initramfs,
      '-append', `${opts.cmdline} ferry.ip=${cidr} ferry.gw=${gateway}`,
      '-netdev', `tap,id=n0,ifname=${tap},script=no,downscript=no`,
      '-device', `virtio-net-device,netdev=n0,mac=${mac}`,
      '-device', 'virtio-rng-device',
      ...(opts.disks ?? []).flatMap((d, i) => ['-drive', `file=${d},if=none,id=d${i},format=raw,cache=none`, '-device', `virtio-blk-device,drive=d${i}`]),
      ...(opts.qemuArgs ?? []),
    ];
    const vm = LabVm.spawn(lab, opts.host, 'qemu-system-riscv64', args, address, mac);
    // QEMU creates the TAP as it starts; join it to the host's bridge as ferry does its own.
    for (let i = 0; ; i++) {
      try {
        await lab.attachToBridge(opts.host, tap);
        break;
      } catch (err) {
        if (i >= 100 || vm.child.exitCode !== null) throw new FerryError('VM_EXITED', `QEMU's ${tap} never appeared: ${vm.stderr || String(err)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    return vm;
  }

  private static spawn(lab: Lab, host: HostName, cmd: string, args: string[], address: string, mac: string): LabVm {
    const child = lab.spawn(host, cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const vm = new LabVm(child, address, mac);
    child.stderr!.on('data', (b: Buffer) => { vm.stderr += b.toString(); });
    return vm;
  }

  /** Waits for the guest's shell prompt. */
  async ready(timeoutMs = 300_000): Promise<void> {
    await Promise.race([
      this.driver.waitFor(GUEST_PROMPT, timeoutMs),
      this.exited.then((code) => { throw new FerryError('VM_EXITED', `VM exited (${code}) before its prompt: ${this.stderr}`); }),
    ]);
  }

  exec(command: string, timeoutMs = 120_000): Promise<{ output: string; status: number }> {
    return this.driver.exec(command, timeoutMs);
  }

  /** Powers the guest off and waits for the VMM to exit; returns its exit code. */
  async poweroff(timeoutMs = 60_000): Promise<number | null> {
    this.driver.send('poweroff\n');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }
}

/** Where a lab VM sits on the LAN: its address and MAC by index, its host as gateway. */
function placement(lab: Lab, opts: LabVmOptions) {
  const address = lab.vmAddress(opts.index);
  return { address, mac: lab.vmMac(opts.index), gateway: lab.address(opts.host), cidr: `${address}/${lab.prefixLength}` };
}
