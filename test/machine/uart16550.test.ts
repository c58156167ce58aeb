import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Uart16550, UART_RX_CAPACITY } from '../../src/machine/devices/uart16550.js';
import { FakeConsole, FakeIrq } from './fakes.js';

const RBR = 0, THR = 0, IER = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7, DLL = 0, DLM = 1;

function make(): { uart: Uart16550; con: FakeConsole; irq: FakeIrq } {
  const con = new FakeConsole();
  const irq = new FakeIrq();
  return { uart: new Uart16550(con, irq), con, irq };
}

test('Linux 8250 autoconfig identifies a 16550A', () => {
  const { uart: u } = make();
  const r = (o: number) => u.read(o, 1);
  const w = (o: number, v: number) => u.write(o, 1, v);
  // Scratch/IER test.
  w(IER, 0);
  assert.equal(r(IER) & 0x0f, 0);
  w(IER, 0x0f);
  assert.equal(r(IER) & 0x0f, 0x0f);
  w(IER, 0);
  // Loopback test: RTS|OUT2 must come back as CTS|DCD.
  w(MCR, 0x10 | 0x0a);
  assert.equal(r(MSR) & 0xf0, 0x90);
  w(MCR, 0);
  // EFR is absent: LCR=0xBF makes offset 2 plain FCR/IIR.
  w(LCR, 0xbf);
  w(2, 0);
  w(LCR, 0);
  w(FCR, 0x01);
  assert.equal(r(IIR) >> 6, 3, 'IIR reports FIFOs enabled');
  w(LCR, 0x80);
  assert.notEqual(r(2), 0, 'no EFR behind DLAB (not a ST16C650V1)');
  w(LCR, 0xbf);
  assert.notEqual(r(2), 0, 'no EFR behind 0xBF (not a 16650V2)');
  // Not a 16750: 64-byte FIFO bit never appears.
  w(LCR, 0);
  w(FCR, 0x21);
  assert.equal(r(IIR) & 0xe0, 0xc0);
  w(LCR, 0x80);
  w(FCR, 0x21);
  assert.equal(r(IIR) & 0xe0, 0xc0);
  w(LCR, 0);
  // Not an XScale: IER bit 6 is not writable.
  w(IER, 0x40);
  assert.equal(r(IER) & 0x40, 0);
  // Scratch register.
  w(SCR, 0xa5);
  assert.equal(r(SCR), 0xa5);
});

test('divisor latch is reached through DLAB and does not disturb IER/THR', () => {
  const { uart: u, con } = make();
  u.write(IER, 1, 0x05);
  u.write(LCR, 1, 0x83);
  u.write(DLL, 1, 0x01);
  u.write(DLM, 1, 0x02);
  assert.equal(u.read(DLL, 1), 0x01);
  assert.equal(u.read(DLM, 1), 0x02);
  u.write(LCR, 1, 0x03);
  assert.equal(u.read(IER, 1), 0x05);
  assert.equal(u.read(LCR, 1), 0x03);
  assert.deepEqual(con.output, [], 'DLL write is not a transmit');
});

test('THR writes go to the backend; LSR always shows THRE|TEMT', () => {
  const { uart: u, con } = make();
  for (const c of 'hi\n') u.write(THR, 1, c.charCodeAt(0));
  assert.equal(con.text(), 'hi\n');
  assert.equal(u.read(LSR, 1) & 0x60, 0x60);
});

test('THRE interrupt: set on enabling while empty, cleared by reading IIR, re-set by THR write', () => {
  const { uart: u, irq } = make();
  u.write(FCR, 1, 0x01);
  assert.equal(u.read(IIR, 1), 0xc1);
  u.write(IER, 1, 0x02);
  assert.equal(irq.level, true);
  assert.equal(u.read(IIR, 1), 0xc2);
  assert.equal(irq.level, false, 'reading IIR acknowledged THRE');
  assert.equal(u.read(IIR, 1), 0xc1);
  u.write(THR, 1, 0x41);
  assert.equal(irq.level, true, 'THR emptied again');
  u.write(IER, 1, 0x00);
  assert.equal(irq.level, false);
  // Linux's startup THRE re-assert test: disable, re-enable must raise again.
  u.write(IER, 1, 0x02);
  assert.equal(u.read(IIR, 1) & 0x0f, 0x02);
  u.write(IER, 1, 0);
  u.write(IER, 1, 0x02);
  assert.equal(u.read(IIR, 1) & 0x0f, 0x02);
});

test('RX data: timeout below trigger, data-available at trigger, LSR.DR, draining clears the IRQ', () => {
  const { uart: u, con, irq } = make();
  u.write(FCR, 1, 0x81); // FIFO on, trigger 8
  u.write(IER, 1, 0x01);
  assert.equal(irq.level, false);
  con.type('abc');
  assert.equal(irq.level, true);
  assert.equal(u.read(IIR, 1), 0xcc, 'character timeout below trigger');
  con.type('defgh');
  assert.equal(u.read(IIR, 1), 0xc4, 'data available at trigger');
  assert.equal(u.read(LSR, 1) & 0x01, 1);
  let s = '';
  while (u.read(LSR, 1) & 0x01) s += String.fromCharCode(u.read(RBR, 1));
  assert.equal(s, 'abcdefgh');
  assert.equal(irq.level, false);
  assert.equal(u.read(IIR, 1), 0xc1);
});

test('RX has priority over THRE and FCR clears the RX FIFO', () => {
  const { uart: u, con } = make();
  u.write(FCR, 1, 0x01);
  u.write(IER, 1, 0x03);
  con.type('x');
  assert.equal(u.read(IIR, 1) & 0x0f, 0x04, 'trigger level 1 reached');
  u.write(FCR, 1, 0x03);
  assert.equal(u.read(LSR, 1) & 0x01, 0);
  assert.equal(u.read(IIR, 1) & 0x0f, 0x02);
});

test('overrun beyond capacity sets OE and a line-status interrupt, cleared by reading LSR', () => {
  const { uart: u, con, irq } = make();
  u.write(FCR, 1, 0x01);
  u.write(IER, 1, 0x04);
  con.type(new Uint8Array(UART_RX_CAPACITY + 5).fill(0x61));
  assert.equal(irq.level, true);
  assert.equal(u.read(IIR, 1) & 0x0f, 0x06);
  assert.equal(u.read(LSR, 1) & 0x02, 0x02);
  assert.equal(u.read(LSR, 1) & 0x02, 0);
  assert.equal(irq.level, false);
  let n = 0;
  while (u.read(LSR, 1) & 1) { u.read(RBR, 1); n++; }
  assert.equal(n, UART_RX_CAPACITY);
});

test('loopback sends THR to RBR, not the backend; modem deltas are reported', () => {
  const { uart: u, con } = make();
  u.write(MCR, 1, 0x10);
  u.write(THR, 1, 0x5a);
  assert.deepEqual(con.output, []);
  assert.equal(u.read(RBR, 1), 0x5a);
  u.read(MSR, 1);
  u.write(MCR, 1, 0x12); // RTS -> CTS
  assert.equal(u.read(MSR, 1), 0x11);
  assert.equal(u.read(MSR, 1), 0x10, 'deltas clear on read');
  u.write(MCR, 1, 0);
  assert.equal(u.read(MSR, 1) & 0xf0, 0xb0, 'outside loopback the line looks connected');
});

test('save/restore round-trips and re-drives the IRQ line', () => {
  const a = make();
  a.uart.write(FCR, 1, 0x41);
  a.uart.write(IER, 1, 0x01);
  a.uart.write(LCR, 1, 0x03);
  a.uart.write(SCR, 1, 0x77);
  a.con.type('zz');
  const state = a.uart.save();
  const copy = JSON.parse(JSON.stringify(state)) as typeof state;
  const b = make();
  b.uart.restore(copy);
  assert.deepEqual(b.uart.save(), state);
  assert.equal(b.irq.level, true);
  assert.equal(b.uart.read(RBR, 1), 0x7a);
  assert.throws(() => b.uart.restore({ ...state, ier: 0x100 }), { code: 'DEVICE_STATE_INVALID' });
});
