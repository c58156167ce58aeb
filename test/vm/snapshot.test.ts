// Snapshot files: a machine written to a file and restored into a fresh Machine continues as
// the original would (bare metal, and the Debian guest with a heartbeat running and disk I/O in
// flight); damaged, truncated or foreign files are refused with a stable code and the target
// machine is left as it was; zero pages cost nothing in the file.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { bareMachine, buildBare, runToEnd } from '../support/bare.js';
import { Machine, type MachineOptions } from '../../src/machine/boot/machine.js';
import { FerryError } from '../../src/errors.js';
import { readSnapshot, restoreSnapshot, writeSnapshot } from '../../src/vm/snapshot/file.js';
import { crc32, crc32Table, hasNativeCrc32 } from '../../src/vm/snapshot/crc32.js';
import { END_SECTION_SIZE, HEADER_SIZE, TAG_RAM, encodeEndPayload, encodeSectionHeader, u32le } from '../../src/vm/snapshot/format.js';
import { ensureGuestImage } from '../../src/guest/image.js';
import { GUEST_CMDLINE } from '../../src/guest/cmdline.js';
import { ConsoleDriver, GUEST_PROMPT } from '../../src/machine/console/shell.js';
import { VirtioBlock } from '../../src/machine/devices/virtio/block.js';
import { MemoryBlockBackend } from '../../src/storage/memory.js';

const text = (chunks: Uint8Array[]) => Buffer.concat(chunks).toString('latin1');
const elf = () => readFileSync(buildBare(['state-roundtrip.c'], 'state-roundtrip'));
const dir = mkdtempSync(join(tmpdir(), 'ferry-snapshot-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

const bare = (out: Uint8Array[], extra: Partial<MachineOptions> = {}): Machine => bareMachine(elf(), out, extra);


function code(e: unknown): string {
  return e instanceof FerryError ? e.code : `not a FerryError: ${e instanceof Error ? e.stack : String(e)}`;
}

test('crc32: the standard check value, continuation, and agreement with node:zlib', () => {
  const check = new TextEncoder().encode('123456789');
  assert.equal(crc32Table(check), 0xcbf43926);
  assert.equal(crc32(check), 0xcbf43926);
  assert.equal(crc32Table(new Uint8Array(0)), 0);
  for (const n of [1, 7, 8, 9, 4096, 100_003]) {
    const data = randomBytes(n);
    const whole = crc32Table(data);
    const cut = Math.floor(n / 3);
    assert.equal(crc32Table(data.subarray(cut), crc32Table(data.subarray(0, cut))), whole);
    if (hasNativeCrc32) assert.equal(crc32(data), whole);
  }
});

test('bare metal: snapshot to a file mid-run, restore into a fresh Machine, same output', async () => {
  const reference: Uint8Array[] = [];
  runToEnd(bare(reference));
  assert.match(text(reference), /DONE\n$/);

  const first: Uint8Array[] = [];
  const a = bare(first);
  for (let i = 0; i < 3; i++) a.vcpu.run(50_000);
  a.pause();
  const path = join(dir, 'bare.snap');
  const info = await writeSnapshot(path, a, { label: 'bare', extra: { program: 'state-roundtrip' } });
  assert.equal(info.bytes, statSync(path).size);
  assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temp file left behind');
  assert.ok(info.bytes < (4 << 20), `a bare program's snapshot is small (${info.bytes} bytes)`);

  const read = await readSnapshot(path);
  assert.equal(read.meta.formatVersion, 1);
  assert.equal(read.meta.ramBytes, 64 << 20);
  assert.equal(read.meta.label, 'bare');
  assert.deepEqual(read.meta.extra, { program: 'state-roundtrip' });
  assert.match(read.meta.ferryVersion, /^\d+\.\d+\.\d+/);
  assert.equal(read.ram.pages, info.ramPages);

  const second: Uint8Array[] = [];
  const b = bare(second);
  // Pages that are zero in the snapshot must come back zero, whatever the target held there.
  b.memory.fill(b.memory.ramBase + BigInt(32 << 20), 4 << 20, 0xaa);
  await restoreSnapshot(path, b);
  assert.ok(Buffer.from(b.memory.bytes).equals(Buffer.from(a.memory.bytes)), 'RAM restored exactly, zero pages included');
  runToEnd(b);
  assert.ok(text(first).length > 0 && !text(first).includes('DONE'), 'the snapshot falls mid-run');
  assert.equal(text(first) + text(second), text(reference));
});

/** Section boundaries of a snapshot file, found by walking it as a reader would. */
function sections(file: Uint8Array): { tag: number; name: string; start: number; payload: number; length: number; end: number }[] {
  const v = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const out = [];
  for (let pos = HEADER_SIZE; pos < file.length;) {
    const nameLength = v.getUint32(pos + 4, true);
    const length = Number(v.getBigUint64(pos + 8 + nameLength, true));
    const payload = pos + 16 + nameLength;
    out.push({ tag: v.getUint32(pos, true), name: Buffer.from(file.subarray(pos + 8, pos + 8 + nameLength)).toString(), start: pos, payload, length, end: payload + length + 4 });
    pos = payload + length + 4;
  }
  return out;
}

test('damaged, truncated and foreign files are refused with a stable code; the target is untouched', async () => {
  const source = bare([]);
  source.vcpu.run(120_000);
  source.pause();
  const good = join(dir, 'good.snap');
  await writeSnapshot(good, source);
  const file = new Uint8Array(readFileSync(good));
  const secs = sections(file);
  assert.deepEqual(secs.map((s) => s.name), ['meta', 'state', 'ram', 'end']);
  assert.equal(secs[3]!.end, file.length);
  assert.equal(secs[3]!.start, file.length - END_SECTION_SIZE);

  // The target: a different program state, paused so its clock is still.
  const target = bare([]);
  target.vcpu.run(7_000);
  target.pause();
  const before = target.save();
  const ram = Buffer.from(target.memory.bytes);

  const attempt = async (name: string, bytes: Uint8Array, expected: string) => {
    const path = join(dir, `${name}.snap`);
    writeFileSync(path, bytes);
    await assert.rejects(restoreSnapshot(path, target), (e) => {
      assert.equal(code(e), expected, `${name}: ${(e as Error).message}`);
      return true;
    }, name);
    assert.deepEqual(target.save(), before, `${name}: machine state changed`);
    assert.ok(ram.equals(target.memory.bytes), `${name}: RAM changed`);
  };
  const flipped = (at: number, mask = 0x01) => { const c = file.slice(); c[at] ^= mask; return c; };

  await attempt('magic', flipped(0, 0x20), 'SNAPSHOT_MAGIC');
  await attempt('not-a-snapshot', new TextEncoder().encode('hello, this is not a snapshot at all'), 'SNAPSHOT_MAGIC');
  const v2 = file.slice(); new DataView(v2.buffer).setUint32(8, 2, true);
  await attempt('version-2', v2, 'SNAPSHOT_VERSION');
  await attempt('version-0', flipped(8), 'SNAPSHOT_VERSION');
  await attempt('flags', flipped(12), 'SNAPSHOT_CORRUPT');

  const ramSec = secs[2]!;
  for (const cut of [0, 5, HEADER_SIZE, HEADER_SIZE + 3, secs[0]!.payload + 10, secs[1]!.payload + 100, secs[1]!.end,
    ramSec.payload + 8, ramSec.payload + 20, ramSec.payload + Math.floor(ramSec.length / 2), ramSec.end - 2,
    file.length - END_SECTION_SIZE, file.length - 20, file.length - 1]) {
    await attempt(`truncated-${cut}`, file.subarray(0, cut), 'SNAPSHOT_TRUNCATED');
  }

  for (const s of secs) {
    const where: [string, number][] = [
      ['tag', s.start], ['name-length', s.start + 4], ['name', s.start + 8], ['length', s.payload - 8],
      ['payload-start', s.payload], ['payload-middle', s.payload + Math.floor(s.length / 2)],
      ['payload-end', s.payload + s.length - 1], ['crc', s.end - 2],
    ];
    for (const [what, at] of where) await attempt(`flip-${s.name}-${what}`, flipped(at), 'SNAPSHOT_CORRUPT');
  }
  // Inside RAM, the first run's header and a byte of its pages.
  await attempt('flip-ram-run-header', flipped(ramSec.payload + 16 + 2), 'SNAPSHOT_CORRUPT');
  await attempt('flip-ram-page', flipped(ramSec.payload + 16 + 8 + 100, 0x80), 'SNAPSHOT_CORRUPT');

  // Intact files that do not fit: another RAM size, other devices.
  await assert.rejects(restoreSnapshot(good, bare([], { ramBytes: 32 << 20 })), (e) => code(e) === 'MACHINE_STATE_MISMATCH');
  const withBlk = bare([], { virtio: (mem) => [new VirtioBlock(mem, new MemoryBlockBackend(1 << 20))] });
  withBlk.pause();
  const blkBefore = withBlk.save();
  await assert.rejects(restoreSnapshot(good, withBlk), (e) => code(e) === 'MACHINE_STATE_MISMATCH' && /virtio/.test((e as Error).message));
  assert.deepEqual(withBlk.save(), blkBefore);
  await assert.rejects(restoreSnapshot(join(dir, 'missing.snap'), target), (e) => code(e) === 'SNAPSHOT_IO');

  // A running machine is neither saved nor restored: asked from inside a slice (the UART's
  // output callback), when run() is certainly active.
  let asked: Promise<unknown>[] = [];
  const busy = new Machine({
    ramBytes: 64 << 20, boot: { kind: 'bare', elf: elf() },
    console: {
      write: () => {
        if (asked.length > 0) return;
        asked = [writeSnapshot(join(dir, 'busy.snap'), busy), restoreSnapshot(good, busy)];
        busy.pause();
      },
      onInput() {},
    },
  });
  const busyBefore = busy.save();
  assert.deepEqual(await busy.run(), { kind: 'paused' });
  assert.equal(asked.length, 2);
  for (const p of asked) await assert.rejects(p, (e) => code(e) === 'MACHINE_RUNNING');
  assert.notDeepEqual(busy.save().cpu, busyBefore.cpu, 'it ran');
  assert.ok(!readdirSync(dir).includes('busy.snap'));
});

test('a section this version does not know is skipped when intact', async () => {
  const m = bare([]);
  m.vcpu.run(30_000);
  m.pause();
  const path = join(dir, 'extra.snap');
  await writeSnapshot(path, m);
  const file = new Uint8Array(readFileSync(path));
  const secs = sections(file);
  const payload = new TextEncoder().encode('future data');
  const extra = Buffer.concat([encodeSectionHeader(0x58595a57, 'future', payload.length), payload, u32le(crc32(payload))]);
  const body = Buffer.concat([file.subarray(0, secs[2]!.start), extra, file.subarray(secs[2]!.start, secs[3]!.start)]);
  const end = Buffer.concat([encodeSectionHeader(0x20444e45, 'end', 12), encodeEndPayload(body.length, crc32(body))]);
  const rebuilt = Buffer.concat([body, end, u32le(crc32(end.subarray(end.length - 12)))]);
  writeFileSync(path, rebuilt);
  const target = bare([]);
  await restoreSnapshot(path, target);
  assert.deepEqual(target.save().cpu, m.save().cpu);
  assert.equal(sections(rebuilt).find((s) => s.tag === TAG_RAM)?.name, 'ram');
});

/** A disk whose reads take a while, so a request can be caught in flight. */
class SlowDisk extends MemoryBlockBackend {
  override async read(offset: number, length: number): Promise<Uint8Array> {
    await new Promise((r) => setTimeout(r, 40));
    return super.read(offset, length);
  }
}

interface Beat { n: number; mono: number }
function beats(output: string): Beat[] {
  return [...output.matchAll(/heartbeat (\d+) (\d+\.\d+) /g)].map((m) => ({ n: Number(m[1]), mono: Number(m[2]) }));
}

test('the Debian guest: snapshot while a heartbeat and disk reads run, restore into a new Machine, it carries on', { timeout: 900_000 }, async (t) => {
  const image = await ensureGuestImage();
  const kernel = readFileSync(image.kernel);
  const initrd = readFileSync(image.initramfs);
  const diskBytes = 16 << 20;
  const pattern = randomBytes(diskBytes);
  const newMachine = (driver: ConsoleDriver, disk: MemoryBlockBackend) => new Machine({
    ramBytes: 256 << 20, console: driver,
    virtio: (mem) => [new VirtioBlock(mem, disk)],
    boot: { kind: 'linux', kernel, initrd, cmdline: GUEST_CMDLINE },
  });

  const diskA = new SlowDisk(diskBytes);
  diskA.data.set(pattern);
  const driverA = new ConsoleDriver();
  const a = newMachine(driverA, diskA);
  let runningA = a.run();
  let b: Machine | undefined;
  let runningB: Promise<unknown> | undefined;
  try {
    await driverA.waitFor(GUEST_PROMPT, 600_000);

    // A freshly booted guest: most of its 256 MiB was never written.
    a.pause();
    assert.deepEqual(await runningA, { kind: 'paused' });
    const fresh = await writeSnapshot(join(dir, 'fresh.snap'), a);
    assert.ok(fresh.bytes < (128 << 20), `fresh guest snapshot is ${fresh.bytes} bytes, should be under half of 256 MiB`);
    runningA = a.run();

    const wrote = await driverA.exec('echo before-snapshot | dd of=/dev/vda bs=512 seek=4000 conv=fsync,sync 2>/dev/null && echo ok', 120_000);
    assert.match(wrote.output, /ok/);
    driverA.send('heartbeat -i 200 &\n');
    await driverA.waitFor(/heartbeat 5 /, 120_000);
    driverA.send('(dd if=/dev/vda bs=64k count=256 iflag=direct 2>/dev/null | md5sum > /tmp/sum; echo dd-finished) &\n');

    // Pause until the disk has a request in flight (the slow disk makes that the usual case).
    const blkA = a.virtio[0]!.device as VirtioBlock;
    let inFlight = 0;
    for (let i = 0; i < 50; i++) {
      await new Promise((r) => setTimeout(r, 30 + i));
      a.pause();
      assert.deepEqual(await runningA, { kind: 'paused' });
      inFlight = blkA.pending;
      if (inFlight > 0 && driverA.output.includes('heartbeat 7 ')) break;
      runningA = a.run();
    }
    assert.ok(inFlight > 0, 'a disk request was in flight at snapshot time');
    const path = join(dir, 'linux.snap');
    const info = await writeSnapshot(path, a, { label: 'linux' });
    const printedBefore = driverA.output;
    t.diagnostic(`fresh-boot snapshot ${fresh.bytes} bytes; running snapshot ${info.bytes} bytes with ${inFlight} disk request(s) in flight`);
    // The source stays paused for good (as a migrated-away VM would). Its pending reads still
    // complete into its own RAM; the shared disk is not written by them.
    const diskB = new MemoryBlockBackend(diskBytes);
    diskB.data.set(diskA.data);
    const expected = createHash('md5').update(diskB.data.subarray(0, 256 * 65536)).digest('hex');

    const driverB = new ConsoleDriver();
    b = newMachine(driverB, diskB);
    const restored = await restoreSnapshot(path, b);
    assert.equal(restored.ram.pages, info.ramPages);
    runningB = b.run();

    await driverB.waitFor(/heartbeat \d+ [\d.]+ [\d.]+\r?\n(.|\n)*heartbeat \d+ [\d.]+ [\d.]+\r?\n(.|\n)*heartbeat \d+ /, 120_000);
    const all = beats(printedBefore + driverB.output);
    const beforeCount = beats(printedBefore).length;
    assert.ok(beforeCount >= 7 && all.length >= beforeCount + 3, `beats before ${beforeCount}, in all ${all.length}`);
    for (let i = 1; i < all.length; i++) {
      assert.equal(all[i]!.n, all[i - 1]!.n + 1, `heartbeat counts on without reset or repeat: ${all[i - 1]!.n} then ${all[i]!.n}`);
      assert.ok(all[i]!.mono >= all[i - 1]!.mono, `monotonic clock went back: ${all[i - 1]!.mono} then ${all[i]!.mono}`);
    }
    // Guest time was frozen for the snapshot: the beat across it is an ordinary interval.
    const across = all[beforeCount]!.mono - all[beforeCount - 1]!.mono;
    assert.ok(across < 1.5, `the beat across the restore came ${across}s after the previous one`);
    t.diagnostic(`beats ${all[beforeCount - 1]!.n} -> ${all[beforeCount]!.n} across the restore, ${across.toFixed(3)}s apart in guest time`);

    await driverB.waitFor('dd-finished', 120_000);
    const sum = await driverB.exec('cat /tmp/sum', 60_000);
    assert.match(sum.output, new RegExp(expected), 'the read in flight at snapshot time was replayed correctly');

    const echo = await driverB.exec('echo restored-shell-works', 60_000);
    assert.equal(echo.status, 0);
    assert.match(echo.output, /restored-shell-works/);
    const disk = await driverB.exec('dd if=/dev/vda bs=512 skip=4000 count=1 iflag=direct 2>/dev/null | head -c 15; echo; echo after-restore | dd of=/dev/vda bs=512 seek=4001 conv=fsync,sync 2>/dev/null && echo wrote', 120_000);
    assert.match(disk.output, /before-snapshot/);
    assert.match(disk.output, /wrote/);
    assert.equal(Buffer.from(diskB.data.subarray(4001 * 512, 4001 * 512 + 13)).toString(), 'after-restore');
  } finally {
    a.stop();
    await runningA;
    b?.stop();
    await runningB;
  }
});
