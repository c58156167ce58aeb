// The migration modes and what each asks of the engine. Pre-copy (Clark et al.) moves RAM in
// rounds while the VM runs and switches once what is left fits the downtime; post-copy switches
// at once and pulls what is missing; hybrid does a few rounds first and falls back to
// post-copy only if they do not converge; Agile (Deshpande et al.) first moves cold pages to
// the VM's swap device, then migrates the resident working set as hybrid does.

export const MIGRATION_MODES = ['precopy', 'postcopy', 'hybrid', 'agile'] as const;
export type MigrationMode = (typeof MIGRATION_MODES)[number];

/** Pre-copy rounds hybrid and Agile spend before they give up converging. */
export const HYBRID_ROUND_BUDGET = 5;

export interface ModeNeeds {
  readonly precopyRounds: boolean;
  /** Whether the switch leaves pages for post-copy. */
  readonly postcopy: 'never' | 'always' | 'unless-converged';
  /** Round budget when the operator gave none. */
  readonly roundBudget: number | undefined;
  /** Swaps out cold pages before the first round. */
  readonly swap: boolean;
}

export function modeNeeds(mode: MigrationMode): ModeNeeds {
  switch (mode) {
    case 'precopy': return { precopyRounds: true, postcopy: 'never', roundBudget: undefined, swap: false };
    case 'postcopy': return { precopyRounds: false, postcopy: 'always', roundBudget: undefined, swap: false };
    case 'hybrid': return { precopyRounds: true, postcopy: 'unless-converged', roundBudget: HYBRID_ROUND_BUDGET, swap: false };
    case 'agile': return { precopyRounds: true, postcopy: 'unless-converged', roundBudget: HYBRID_ROUND_BUDGET, swap: true };
  }
}

export function isMigrationMode(v: unknown): v is MigrationMode {
  return typeof v === 'string' && (MIGRATION_MODES as readonly string[]).includes(v);
}
