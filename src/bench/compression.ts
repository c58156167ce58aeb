// npm run bench:compression -- [--json] [--reps N]
// Page-batch compression candidates on 256-page (1 MiB) batches of two kinds of page:
//   guest  - the non-zero pages of a 256 MiB guest booted to its shell prompt and left idle
//   writer - memwriter's pages: 64-bit words seed + k × 0x9e3779b97f4a7c15, as good as random
// Reports per candidate the ratio (raw / packed) and compress and decompress MB/s (10^6 bytes
// of raw pages per second, best of --reps passes). lz4-napi, lz4js and native zstd
// (@toondepauw/node-zstd) are measured when installed (`npm install --no-save lz4-napi lz4js
// @toondepauw/node-zstd`), else listed as skipped: only the chosen codec is a dependency.

import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import * as zstdWasm from '@bokuweb/zstd-wasm';
import { ensureGuestImage } from '../guest/image.js';
import { guestBoot } from '../guest/boot.js';
import { Machine } from '../machine/boot/machine.js';
import { ConsoleDriver, GUEST_PROMPT, GUEST_READY } from '../machine/console/shell.js';
import { MAX_BATCH_PAGES, PAGE_SIZE } from '../migration/protocol/messages.js';
import { ZSTD } from '../migration/compression/index.js';

const BATCH = MAX_BATCH_PAGES * PAGE_SIZE;
const require = createRequire(import.meta.url);

interface Candidate {
  readonly compress: (raw: Buffer) => Uint8Array;
  readonly decompress: (packed: Buffer, rawBytes: number) => Uint8Array;
}

function optional<T>(name: string): T | undefined {
  try {
    return require(name) as T;
  } catch {
    return undefined;
  }
}

function candidates(): { found: Map<string, Candidate>; skipped: string[] } {
  const found = new Map<string, Candidate>();
  const skipped: string[] = [];
  const lz4 = optional<{ compressSync(b: Buffer): Buffer; uncompressSync(b: Buffer): Buffer }>('lz4-napi');
  if (lz4) found.set('lz4 (lz4-napi)', { compress: (b) => lz4.compressSync(b), decompress: (p) => lz4.uncompressSync(p) });
  else skipped.push('lz4 (lz4-napi)');
  const lz4js = optional<{ compress(b: Uint8Array): Uint8Array; decompress(b: Uint8Array): Uint8Array }>('lz4js');
  if (lz4js) found.set('lz4 (lz4js)', { compress: (b) => lz4js.compress(b), decompress: (p) => lz4js.decompress(p) });
  else skipped.push('lz4 (lz4js)');
  const native = optional<{ Encoder: new (l: number) => { encodeSync(b: Buffer): Buffer }; Decoder: new () => { decodeSync(b: Buffer): Buffer } }>('@toondepauw/node-zstd');
  for (const level of [1, 2, 3]) {
    if (native) {
      const enc = new native.Encoder(level);
      const dec = new native.Decoder();
      found.set(`zstd-${level} (native)`, { compress: (b) => enc.encodeSync(b), decompress: (p) => dec.decodeSync(p) });
    } else skipped.push(`zstd-${level} (native)`);
    found.set(`zstd-${level} (wasm)`, { compress: (b) => zstdWasm.compress(b, level), decompress: (p, n) => zstdWasm.decompress(p, { defaultHeapSize: n }) });
  }
  found.set('deflate-1 (node:zlib)', { compress: (b) => deflateRawSync(b, { level: 1 }), decompress: (p) => inflateRawSync(p) });
  found.set('ferry ZSTD codec', { compress: (b) => ZSTD.compress(b), decompress: (p, n) => ZSTD.decompress(p, n) });
  return { found, skipped };
}

async function guestPages(log: (s: string) => void): Promise<Buffer> {
  const image = await ensureGuestImage({ log });
  const driver = new ConsoleDriver();
  const machine = new Machine({ ramBytes: 256 << 20, console: driver, boot: guestBoot(image) });
  const running = machine.run();
  try {
    const ready = await driver.waitFor(GUEST_READY, 300_000);
    await driver.waitFor(GUEST_PROMPT, 60_000, ready.index);
    await new Promise((r) => setTimeout(r, 2000));
  } finally {
    machine.stop();
    await running;
  }
  const ram = machine.memory.bytes;
  const kept: Buffer[] = [];
  for (let off = 0; off < ram.length; off += PAGE_SIZE) {
    const page = ram.subarray(off, off + PAGE_SIZE);
    if (page.some((b) => b !== 0)) kept.push(Buffer.from(page));
  }
  return Buffer.concat(kept);
}

/** memwriter.c's stamp(): page_seed(page, 0) then + STEP per 64-bit word. */
function writerPages(pages: number): Buffer {
  const M = (1n << 64n) - 1n;
  const mix64 = (x: bigint): bigint => {
    x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
    x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & M;
    return x ^ (x >> 31n);
  };
  const words = new BigUint64Array(pages * (PAGE_SIZE / 8));
  for (let p = 0; p < pages; p++) {
    let v = mix64(BigInt(p) << 32n);
    for (let k = 0; k < PAGE_SIZE / 8; k++, v = (v + 0x9e3779b97f4a7c15n) & M) words[p * (PAGE_SIZE / 8) + k] = v;
  }
  return Buffer.from(words.buffer);
}

interface Result { ratio: number; compress_mb_s: number; decompress_mb_s: number }

function measure(c: Candidate, batches: Buffer[], reps: number): Result {
  let packed: Uint8Array[] = [];
  let compressS = Infinity;
  let decompressS = Infinity;
  for (let r = 0; r < reps; r++) {
    let t = performance.now();
    packed = batches.map((b) => c.compress(b));
    compressS = Math.min(compressS, (performance.now() - t) / 1000);
    t = performance.now();
    const back = packed.map((p) => c.decompress(Buffer.from(p.buffer, p.byteOffset, p.byteLength), BATCH));
    decompressS = Math.min(decompressS, (performance.now() - t) / 1000);
    back.forEach((b, i) => { if (!Buffer.from(b.buffer, b.byteOffset, b.byteLength).equals(batches[i]!)) throw new Error('round trip differs'); });
  }
  const raw = batches.length * BATCH;
  const out = packed.reduce((n, p) => n + p.byteLength, 0);
  return { ratio: round(raw / out), compress_mb_s: Math.round(raw / compressS / 1e6), decompress_mb_s: Math.round(raw / decompressS / 1e6) };
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { json: { type: 'boolean' }, reps: { type: 'string', default: '5' } } });
  const log = (s: string) => (values.json ? process.stderr : process.stdout).write(s + '\n');
  await zstdWasm.init();
  const { found, skipped } = candidates();
  const sets: Record<string, Buffer> = { guest: await guestPages(log), writer: writerPages(4096) };
  const result: Record<string, unknown> = { batch_pages: MAX_BATCH_PAGES, skipped };
  for (const [name, data] of Object.entries(sets)) {
    const batches: Buffer[] = [];
    for (let off = 0; off + BATCH <= data.length; off += BATCH) batches.push(data.subarray(off, off + BATCH));
    const rows: Record<string, Result> = {};
    for (const [cname, c] of found) {
      rows[cname] = measure(c, batches, Math.max(1, Number(values.reps)));
      log(`${name.padEnd(6)} ${cname.padEnd(44)} ratio ${rows[cname].ratio.toFixed(2).padStart(5)}  compress ${String(rows[cname].compress_mb_s).padStart(5)} MB/s  decompress ${String(rows[cname].decompress_mb_s).padStart(5)} MB/s`);
    }
    result[name] = { pages: batches.length * MAX_BATCH_PAGES, candidates: rows };
  }
  if (skipped.length > 0) log(`not installed, skipped: ${skipped.join(', ')}`);
  console.log(JSON.stringify(result));
}

await main();
