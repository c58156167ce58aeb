// The end-to-end harness of the engine tests: one migration between fresh fake VMs over
// loopback TCP (optionally through a frame proxy), and the assertions the failure table asks for.

import { afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { PrecopySender, type SenderOptions } from '../../src/migration/engine/sender.js';
import type { MigrationReport } from '../../src/migration/engine/report.js';
import { fixedRate } from '../../src/migration/precopy/rate.js';
import {
  FakeSourceVm, FakeTargetHost, PAGE_SIZE, listenForMigrations, startFrameProxy, until,
  type FakeGuestOptions, type FakeTarget, type ListenOptions, type ProxyDirection, type ProxyVerdict,
} from './fake-vm.js';

export const MiB = 1 << 20;
/** Fake VMs of the current test: their guests stop when it ends, passed or not. */
export const live = new Set<FakeSourceVm>();
afterEach(() => {
  for (const vm of live) vm.dispose();
  live.clear();
});

export interface Run {
  readonly vm: FakeSourceVm;
  readonly host: FakeTargetHost;
  readonly report: MigrationReport;
  readonly received: MigrationReport;
  readonly target: FakeTarget | undefined;
  readonly sender: PrecopySender;
  readonly proxy: { count(direction: ProxyDirection, type: number): number } | undefined;
}

export interface Setup {
  readonly guest?: FakeGuestOptions;
  readonly sender?: Partial<Omit<SenderOptions, 'source' | 'host' | 'port' | 'token'>>;
  readonly listen?: ListenOptions;
  /** Put a frame proxy between the two ends. */
  readonly proxy?: (direction: ProxyDirection, type: number) => ProxyVerdict;
  readonly prepare?: (vm: FakeSourceVm, host: FakeTargetHost, sender: () => PrecopySender) => void;
  readonly afterSender?: (vm: FakeSourceVm, host: FakeTargetHost) => Promise<void> | void;
}

/** One migration from a fresh fake source to a fresh fake destination; tears everything down. */
export async function migrate(setup: Setup = {}): Promise<Run> {
  const vm = new FakeSourceVm(setup.guest);
  live.add(vm);
  const host = new FakeTargetHost();
  const rx = await listenForMigrations(host, setup.listen);
  const proxy = setup.proxy ? await startFrameProxy(rx.port, setup.proxy) : undefined;
  try {
    let sender: PrecopySender | undefined;
    const opts: SenderOptions = {
      source: vm, host: '127.0.0.1', port: proxy ? proxy.port : rx.port, token: host.issuer.issue(),
      rate: fixedRate(32 * MiB), ...setup.sender,
    };
    setup.prepare?.(vm, host, () => sender!);
    sender = new PrecopySender(opts);
    const report = await sender.run();
    await setup.afterSender?.(vm, host);
    const received = await withTimeout(rx.report(), 5000, 'the receiver report');
    return { vm, host, report, received, target: host.targets[0], sender, proxy };
  } finally {
    await proxy?.close();
    await rx.close();
  }
}

export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

export function describe(r: MigrationReport): string {
  return `${r.direction} ${r.outcome}${r.error ? ` ${r.error.code}: ${r.error.message}` : ''}`;
}

export type EndOutcome = { committed: true } | { committed: false; error: string; frozen: boolean };

export function endCalls(vm: FakeSourceVm): EndOutcome[] {
  return vm.callsOf('endMigrationOut').map((c) => c.arg as EndOutcome);
}

/** The source copy is the VM again: resumed once, running, RAM changed only by its guest. */
export async function assertSourceKeptVm(vm: FakeSourceVm, frozen: boolean, freezeCalls = frozen ? 1 : 0): Promise<void> {
  const ends = endCalls(vm);
  assert.equal(ends.length, 1, `endMigrationOut once, got ${JSON.stringify(ends)}`);
  const end = ends[0]!;
  assert.equal(end.committed, false);
  if (!end.committed) assert.equal(end.frozen, frozen, 'endMigrationOut tells whether the VM was frozen');
  assert.equal(vm.state, 'running');
  assert.ok(vm.guestRunning, 'the guest runs again');
  assert.equal(vm.callsOf('freeze').length, freezeCalls, frozen ? 'frozen once' : 'never paused');
  assert.ok(vm.ramIntact(), 'source RAM holds exactly what its guest wrote');
  const before = vm.checksum();
  const writes = vm.writes;
  await until(() => vm.writes > writes + 8, 2000, 'the guest to write again');
  vm.stopGuest();
  assert.notEqual(vm.checksum(), before, 'RAM keeps evolving by the guest');
  assert.ok(vm.ramIntact(), 'and still only by the guest');
  assert.deepEqual(vm.contractViolations, []);
}

export function assertTargetDiscarded(host: FakeTargetHost): void {
  assert.equal(host.adopted.length, 0, 'nothing adopted');
  assert.equal(host.inDoubtCalls.length, 0, 'nothing in doubt');
  for (const t of host.targets) {
    assert.equal(t.status, 'discarded', `reservation ${t.name} discarded`);
    assert.equal(t.activated, false);
  }
  assert.equal(host.discarded.length, host.targets.length);
}

/** Never two copies running: if the destination's ran, the source's is stopped or frozen for good. */
export function assertAtMostOneRuns(vm: FakeSourceVm, host: FakeTargetHost): void {
  const targetsRan = host.targets.filter((t) => t.activated).length;
  assert.ok(targetsRan <= 1, 'one destination copy at most');
  if (targetsRan === 1) {
    assert.equal(vm.guestRunning, false, 'source copy not running');
    assert.equal(vm.resumedAfterFreeze, false, 'source copy never resumed after the freeze');
  }
}

export function frozenImage(vm: FakeSourceVm): Uint8Array {
  assert.ok(vm.frozenRam, 'the source was frozen');
  return vm.frozenRam;
}

export function assertSameRam(actual: Uint8Array, expected: Uint8Array): void {
  assert.equal(actual.length, expected.length);
  if (Buffer.compare(actual, expected) === 0) return;
  const bad: number[] = [];
  for (let p = 0; p < actual.length / PAGE_SIZE && bad.length < 10; p++) {
    const a = actual.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
    const e = expected.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
    if (Buffer.compare(a, e) !== 0) bad.push(p);
  }
  assert.fail(`target RAM differs from the source's at freeze time, pages ${bad.join(', ')}…`);
}
