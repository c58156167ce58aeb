// Differential test: src/guest/tests/fp-vectors.c runs every F/D instruction under QEMU's
// user-mode emulator and prints operands, result and flags; each line is replayed through
// the FPU and must match bit for bit.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildFpu, DYN, FMT_D, FMT_S, Fpu, opFp, r4, repoRoot } from './fpu-harness.js';

const F_A = 1, F_B = 2, F_C = 3, F_D = 4;
const X_A = 5, X_D = 6;
const GARBAGE = 0x5555aaaa5555aaaan;

type Dest = 'f' | 'x';
interface OpSpec {
  /** Encoding with the given rm field; sources f1..f3 or x5, destination f4 or x6. */
  encode(rm: number): number;
  src: 'f' | 'x';
  dest: Dest;
  /** True if funct3 is a rounding mode (otherwise it is part of the opcode). */
  rounds: boolean;
}

function arith(funct5: number, fmt: number): OpSpec {
  return { encode: (rm) => opFp(funct5, fmt, rm, F_D, F_A, F_B), src: 'f', dest: 'f', rounds: true };
}
function fixed(funct5: number, fmt: number, funct3: number, dest: Dest, rs2 = F_B): OpSpec {
  const rd = dest === 'f' ? F_D : X_D;
  return { encode: () => opFp(funct5, fmt, funct3, rd, F_A, rs2), src: 'f', dest, rounds: false };
}
function fused(opcode: number, fmt: number): OpSpec {
  return { encode: (rm) => r4(opcode, fmt, rm, F_D, F_A, F_B, F_C), src: 'f', dest: 'f', rounds: true };
}
function unary(funct5: number, fmt: number, rs2: number, src: 'f' | 'x', dest: Dest): OpSpec {
  const rd = dest === 'f' ? F_D : X_D;
  const rs1 = src === 'f' ? F_A : X_A;
  return { encode: (rm) => opFp(funct5, fmt, rm, rd, rs1, rs2), src, dest, rounds: true };
}
function move(funct5: number, fmt: number, src: 'f' | 'x', dest: Dest): OpSpec {
  const rd = dest === 'f' ? F_D : X_D;
  const rs1 = src === 'f' ? F_A : X_A;
  return { encode: () => opFp(funct5, fmt, 0, rd, rs1, 0), src, dest, rounds: false };
}

const ops = new Map<string, OpSpec>();
for (const [suffix, fmt] of [['s', FMT_S], ['d', FMT_D]] as const) {
  ops.set(`fadd.${suffix}`, arith(0x00, fmt));
  ops.set(`fsub.${suffix}`, arith(0x01, fmt));
  ops.set(`fmul.${suffix}`, arith(0x02, fmt));
  ops.set(`fdiv.${suffix}`, arith(0x03, fmt));
  ops.set(`fsqrt.${suffix}`, unary(0x0b, fmt, 0, 'f', 'f'));
  ops.set(`fsgnj.${suffix}`, fixed(0x04, fmt, 0, 'f'));
  ops.set(`fsgnjn.${suffix}`, fixed(0x04, fmt, 1, 'f'));
  ops.set(`fsgnjx.${suffix}`, fixed(0x04, fmt, 2, 'f'));
  ops.set(`fmin.${suffix}`, fixed(0x05, fmt, 0, 'f'));
  ops.set(`fmax.${suffix}`, fixed(0x05, fmt, 1, 'f'));
  ops.set(`fmadd.${suffix}`, fused(0x43, fmt));
  ops.set(`fmsub.${suffix}`, fused(0x47, fmt));
  ops.set(`fnmsub.${suffix}`, fused(0x4b, fmt));
  ops.set(`fnmadd.${suffix}`, fused(0x4f, fmt));
  ops.set(`feq.${suffix}`, fixed(0x14, fmt, 2, 'x'));
  ops.set(`flt.${suffix}`, fixed(0x14, fmt, 1, 'x'));
  ops.set(`fle.${suffix}`, fixed(0x14, fmt, 0, 'x'));
  ops.set(`fclass.${suffix}`, fixed(0x1c, fmt, 1, 'x', 0));
  ['w', 'wu', 'l', 'lu'].forEach((int, rs2) => {
    ops.set(`fcvt.${int}.${suffix}`, unary(0x18, fmt, rs2, 'f', 'x'));
    ops.set(`fcvt.${suffix}.${int}`, unary(0x1a, fmt, rs2, 'x', 'f'));
  });
}
ops.set('fcvt.s.d', unary(0x08, FMT_S, 1, 'f', 'f'));
ops.set('fcvt.d.s', unary(0x08, FMT_D, 0, 'f', 'f'));
ops.set('fmv.x.w', move(0x1c, FMT_S, 'f', 'x'));
ops.set('fmv.x.d', move(0x1c, FMT_D, 'f', 'x'));
ops.set('fmv.w.x', move(0x1e, FMT_S, 'x', 'f'));
ops.set('fmv.d.x', move(0x1e, FMT_D, 'x', 'f'));

function requireTool(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error !== undefined || r.status !== 0) {
    assert.fail(`${cmd} is required for the FPU differential test but could not be run: ${r.error?.message ?? r.stderr}`);
  }
}

let fpu: Fpu;
let lines: string[];

before(async () => {
  requireTool('riscv64-linux-gnu-gcc', ['--version']);
  requireTool('qemu-riscv64', ['--version']);
  const dir = mkdtempSync(join(tmpdir(), 'ferry-fpvec-'));
  try {
    const exe = join(dir, 'fp-vectors');
    const cc = spawnSync('riscv64-linux-gnu-gcc', ['-O2', '-static', '-o', exe, join(repoRoot, 'src/guest/tests/fp-vectors.c'), '-lm'], { encoding: 'utf8' });
    assert.equal(cc.status, 0, `compiling fp-vectors.c failed:\n${cc.stderr}`);
    const run = spawnSync('qemu-riscv64', [exe], { encoding: 'utf8', maxBuffer: 1 << 28 });
    assert.equal(run.status, 0, `fp-vectors under qemu-riscv64 failed:\n${run.stderr}`);
    lines = run.stdout.split('\n').filter((l) => l.length > 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  fpu = await buildFpu();
});

test('FPU matches QEMU on every generated vector', () => {
  assert.ok(lines.length >= 100_000, `expected a large vector set, got ${lines.length}`);
  const seen = new Set<string>();
  const mismatches: string[] = [];
  let mismatchCount = 0;
  lines.forEach((line, i) => {
    const [name, rmText, a, b, c, result, flags] = line.split(' ');
    const spec = ops.get(name);
    assert.ok(spec !== undefined && flags !== undefined, `unparseable vector line: ${line}`);
    seen.add(name);
    const rm = Number(rmText);
    // Exercise both encodings: the static rm field, and DYN with frm (static lines get a
    // different, wrong frm so a decoder that ignores the field is caught).
    const useDyn = !spec.rounds || i % 2 === 1;
    fpu.frm = useDyn ? rm : (rm + 1) % 5;
    fpu.fflags = 0;
    if (spec.src === 'f') {
      fpu.setF(F_A, BigInt(`0x${a}`));
      fpu.setF(F_B, BigInt(`0x${b}`));
      fpu.setF(F_C, BigInt(`0x${c}`));
    } else {
      fpu.setX(X_A, BigInt(`0x${a}`));
    }
    fpu.setF(F_D, GARBAGE);
    fpu.setX(X_D, GARBAGE);
    const ok = fpu.exec(spec.encode(spec.rounds ? (useDyn ? DYN : rm) : 0));
    const got = spec.dest === 'f' ? fpu.getF(F_D) : fpu.getX(X_D);
    const gotFlags = fpu.fflags;
    if (!ok || got !== BigInt(`0x${result}`) || gotFlags !== Number(`0x${flags}`)) {
      mismatchCount++;
      if (mismatches.length < 25) {
        mismatches.push(`${line}  ->  ${ok ? got.toString(16).padStart(16, '0') : 'ILLEGAL'} ${gotFlags.toString(16).padStart(2, '0')}`);
      }
    }
  });
  assert.deepEqual([...ops.keys()].filter((k) => !seen.has(k)), [], 'every instruction has vectors');
  assert.equal(mismatchCount, 0, `${mismatchCount} of ${lines.length} vectors differ from QEMU (op rm a b c qemu-result qemu-flags -> ours):\n${mismatches.join('\n')}`);
});
