import { test } from 'node:test';
import assert from 'node:assert/strict';
import { transition, allowedCommands, InvalidTransitionError, TRANSITIONS, type VmState, type VmCommand } from '../../src/vm/lifecycle.js';

function run(state: VmState, ...commands: VmCommand[]): VmState {
  return commands.reduce(transition, state);
}

test('a VM is created, started, paused, resumed and stopped', () => {
  const s = run({ kind: 'created' }, { type: 'start' }, { type: 'pause' }, { type: 'resume' }, { type: 'stop', reason: 'user' });
  assert.deepEqual(s, { kind: 'stopped', reason: 'user' });
  assert.deepEqual(transition(s, { type: 'start' }), { kind: 'running' });
});

test('an aborted outgoing migration returns the VM to what it was doing', () => {
  for (const before of ['running', 'paused'] as const) {
    const out = transition({ kind: before }, { type: 'migrate-out', to: 'host-b' });
    assert.deepEqual(out, { kind: 'migrating-out', to: 'host-b', resumeAs: before });
    assert.deepEqual(transition(out, { type: 'migration-aborted', error: 'peer died' }), { kind: before });
  }
});

test('commitment stops the source and runs the destination', () => {
  const src = run({ kind: 'running' }, { type: 'migrate-out', to: 'host-b' }, { type: 'migration-committed' });
  assert.deepEqual(src, { kind: 'stopped', reason: 'migrated to host-b' });
  const dst = run({ kind: 'created' }, { type: 'migrate-in', from: 'host-a' }, { type: 'migration-committed' });
  assert.deepEqual(dst, { kind: 'running' });
  const aborted = run({ kind: 'created' }, { type: 'migrate-in', from: 'host-a' }, { type: 'migration-aborted', error: 'cancelled' });
  assert.equal(aborted.kind, 'stopped');
});

test('an invalid command names the state and the command', () => {
  assert.throws(() => transition({ kind: 'stopped', reason: 'x' }, { type: 'pause' }),
    (e: unknown) => e instanceof InvalidTransitionError && e.code === 'VM_INVALID_STATE' && e.message === 'cannot pause a VM that is stopped');
  assert.throws(() => transition({ kind: 'migrating-out', to: 'b', resumeAs: 'running' }, { type: 'start' }), /cannot start a VM that is migrating-out/);
  assert.throws(() => transition({ kind: 'failed', error: 'e' }, { type: 'start' }), InvalidTransitionError);
});

test('every state can fail except failed, and the table lists what each state allows', () => {
  for (const kind of Object.keys(TRANSITIONS) as VmState['kind'][]) {
    const allowed = Object.keys(TRANSITIONS[kind]);
    if (kind === 'failed') assert.deepEqual(allowed, []);
    else assert.ok(allowed.includes('fail'), kind);
  }
  assert.deepEqual(allowedCommands({ kind: 'paused' }).sort(), ['fail', 'migrate-out', 'resume', 'stop']);
});
