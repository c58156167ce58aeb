// A VM's lifecycle as an explicit state machine: states are a discriminated union, and every
// allowed move is one entry in TRANSITIONS. Anything else is refused with a typed error that
// names the state, so an API client learns why (e.g. "cannot pause a VM that is stopped").

import { FerryError } from '../errors.js';

export type VmState =
  | { readonly kind: 'created' }
  | { readonly kind: 'running' }
  | { readonly kind: 'paused' }
  /** The source side of a migration; until commitment the VM can return to `resumeAs`. */
  | { readonly kind: 'migrating-out'; readonly to: string; readonly resumeAs: 'running' | 'paused' }
  /** The destination side: reserved and receiving, not yet the VM's home. */
  | { readonly kind: 'migrating-in'; readonly from: string }
  | { readonly kind: 'stopped'; readonly reason: string }
  | { readonly kind: 'failed'; readonly error: string };

export type VmStateKind = VmState['kind'];

export type VmCommand =
  | { readonly type: 'start' }
  | { readonly type: 'pause' }
  | { readonly type: 'resume' }
  | { readonly type: 'stop'; readonly reason?: string }
  | { readonly type: 'migrate-out'; readonly to: string }
  | { readonly type: 'migrate-in'; readonly from: string }
  /** The destination holds a complete image: the source lets go, the destination runs. */
  | { readonly type: 'migration-committed' }
  /** Before commitment: the source carries on, the destination frees its reservation. */
  | { readonly type: 'migration-aborted'; readonly error: string }
  | { readonly type: 'fail'; readonly error: string };

export type VmCommandType = VmCommand['type'];

type Transition<C extends VmCommandType> = (state: VmState, command: Extract<VmCommand, { type: C }>) => VmState;
type Table = { readonly [S in VmStateKind]: { readonly [C in VmCommandType]?: Transition<C> } };

const fail: Transition<'fail'> = (_s, c) => ({ kind: 'failed', error: c.error });
const stop: Transition<'stop'> = (_s, c) => ({ kind: 'stopped', reason: c.reason ?? 'stopped' });

export const TRANSITIONS: Table = {
  'created': {
    'start': () => ({ kind: 'running' }),
    'migrate-in': (_s, c) => ({ kind: 'migrating-in', from: c.from }),
    'fail': fail,
  },
  'running': {
    'pause': () => ({ kind: 'paused' }),
    'stop': stop,
    'migrate-out': (_s, c) => ({ kind: 'migrating-out', to: c.to, resumeAs: 'running' }),
    'fail': fail,
  },
  'paused': {
    'resume': () => ({ kind: 'running' }),
    'stop': stop,
    'migrate-out': (_s, c) => ({ kind: 'migrating-out', to: c.to, resumeAs: 'paused' }),
    'fail': fail,
  },
  'migrating-out': {
    'migration-committed': (s) => ({ kind: 'stopped', reason: `migrated to ${(s as Extract<VmState, { kind: 'migrating-out' }>).to}` }),
    'migration-aborted': (s) => ({ kind: (s as Extract<VmState, { kind: 'migrating-out' }>).resumeAs }),
    'fail': fail,
  },
  'migrating-in': {
    'migration-committed': () => ({ kind: 'running' }),
    'migration-aborted': (_s, c) => ({ kind: 'stopped', reason: `incoming migration aborted: ${c.error}` }),
    'fail': fail,
  },
  'stopped': {
    'start': () => ({ kind: 'running' }),
    'fail': fail,
  },
  'failed': {},
};

export class InvalidTransitionError extends FerryError {
  constructor(readonly state: VmStateKind, readonly command: VmCommandType) {
    super('VM_INVALID_STATE', `cannot ${command} a VM that is ${state}`);
  }
}

/** The state after `command`, or InvalidTransitionError. Pure: the caller applies it. */
export function transition(state: VmState, command: VmCommand): VmState {
  const t = TRANSITIONS[state.kind][command.type] as Transition<typeof command.type> | undefined;
  if (!t) throw new InvalidTransitionError(state.kind, command.type);
  return t(state, command as never);
}

/** Commands the state accepts (for API error messages and `ferry vm show`). */
export function allowedCommands(state: VmState): VmCommandType[] {
  return Object.keys(TRANSITIONS[state.kind]) as VmCommandType[];
}
