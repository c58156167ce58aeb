// The body of `POST /v1/vms/{name}/migrate`, checked field by field so a bad request is a 400
// naming the field before anything starts.

import { badRequest } from './errors.js';
import { isMigrationMode, MIGRATION_MODES, type MigrationMode } from '../migration/engine/modes.js';
import { dynamicRate, fixedRate, parseRate, RateParseError, type RateConfig } from '../migration/precopy/rate.js';
import { CONVERGE_METHODS, isConvergeMethod, type ConvergeMethod } from '../migration/precopy/converge.js';
import { TIMEOUT_STRATEGIES, type TimeoutStrategy } from '../migration/engine/report.js';
import type { MigrationTimeout } from '../migration/engine/precopy-control.js';

export interface MigrateRequest {
  readonly host: string;
  readonly port: number;
  readonly token: string;
  readonly rate?: RateConfig;
  readonly downtimeLimitMs?: number;
  readonly maxRounds?: number;
  readonly compression: 'zstd' | 'none';
  readonly mode: MigrationMode;
  /** How pre-copy slows a guest that outruns the link; absent: the default (dirty-limit). */
  readonly throttle?: ConvergeMethod;
  readonly timeout?: MigrationTimeout;
}

const KEYS = new Set(['destination', 'token', 'mode', 'bandwidth', 'rate', 'downtimeLimitMs', 'maxRounds', 'compression', 'throttle', 'timeoutMs', 'onTimeout']);
/** A day: longer deadlines are a typo for something else. */
const MAX_TIMEOUT_MS = 86_400_000;

function isTimeoutStrategy(v: unknown): v is TimeoutStrategy {
  return typeof v === 'string' && (TIMEOUT_STRATEGIES as readonly string[]).includes(v);
}

/** `timeoutMs` and `onTimeout` together: a deadline needs a length; the strategy defaults to cancel. */
function parseTimeout(ms: unknown, strategy: unknown): MigrationTimeout | undefined {
  if (strategy !== undefined && !isTimeoutStrategy(strategy)) throw badRequest(`'onTimeout' must be one of ${TIMEOUT_STRATEGIES.join(', ')}`);
  if (ms === undefined) {
    if (strategy !== undefined) throw badRequest("'onTimeout' needs 'timeoutMs' (the deadline it acts on)");
    return undefined;
  }
  if (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 1 || ms > MAX_TIMEOUT_MS) throw badRequest(`'timeoutMs' must be an integer in 1..${MAX_TIMEOUT_MS}`);
  return { afterMs: ms, strategy: strategy ?? 'cancel' };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function rate(field: string, v: unknown): number {
  if (typeof v !== 'string' && typeof v !== 'number') throw badRequest(`'${field}' must be a rate such as "1G" or "125MB/s"`);
  try {
    return parseRate(String(v));
  } catch (e) {
    throw badRequest(`'${field}': ${e instanceof RateParseError ? e.message : String(e)}`);
  }
}

/** `HOST:PORT` or `[V6]:PORT`. */
export function parseDestination(text: unknown): { host: string; port: number } {
  const m = typeof text === 'string' ? /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text) : null;
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) throw badRequest(`'destination' must be HOST:PORT (the destination daemon's migration address), got ${JSON.stringify(text)}`);
  return { host: m[1] ?? m[2]!, port };
}

export function parseMigrateRequest(body: unknown): MigrateRequest {
  if (!isRecord(body)) throw badRequest('body must be a JSON object');
  for (const key of Object.keys(body)) if (!KEYS.has(key)) throw badRequest(`unknown field '${key}'`);
  const { host, port } = parseDestination(body['destination']);
  const token = body['token'];
  if (typeof token !== 'string' || token === '') throw badRequest("'token' is required: ask the destination daemon (POST /v1/migrations/incoming)");
  let config: RateConfig | undefined;
  if (body['bandwidth'] !== undefined && body['rate'] !== undefined) throw badRequest("give either 'bandwidth' (a fixed cap) or 'rate' (the dynamic scheme), not both");
  if (body['bandwidth'] !== undefined) config = fixedRate(rate('bandwidth', body['bandwidth']));
  if (body['rate'] !== undefined) {
    const r = body['rate'];
    if (!isRecord(r)) throw badRequest("'rate' must be an object {start, margin, cap}");
    for (const key of Object.keys(r)) if (!['start', 'margin', 'cap'].includes(key)) throw badRequest(`unknown field 'rate.${key}'`);
    const overrides: { start?: number; margin?: number; cap?: number } = {};
    if (r['start'] !== undefined) overrides.start = rate('rate.start', r['start']);
    if (r['margin'] !== undefined) overrides.margin = rate('rate.margin', r['margin']);
    if (r['cap'] !== undefined) overrides.cap = rate('rate.cap', r['cap']);
    config = dynamicRate(overrides);
    if (config.cap < config.start) throw badRequest("'rate.cap' is below 'rate.start'");
  }
  const downtime = body['downtimeLimitMs'];
  if (downtime !== undefined && (typeof downtime !== 'number' || !Number.isInteger(downtime) || downtime < 1 || downtime > 600_000)) {
    throw badRequest("'downtimeLimitMs' must be an integer in 1..600000");
  }
  const rounds = body['maxRounds'];
  if (rounds !== undefined && (typeof rounds !== 'number' || !Number.isInteger(rounds) || rounds < 1 || rounds > 1000)) {
    throw badRequest("'maxRounds' must be an integer in 1..1000");
  }
  const compression = body['compression'] ?? 'zstd';
  if (compression !== 'zstd' && compression !== 'none') throw badRequest("'compression' must be 'zstd' or 'none'");
  const mode = body['mode'] ?? 'precopy';
  if (!isMigrationMode(mode)) throw badRequest(`'mode' must be one of ${MIGRATION_MODES.join(', ')}`);
  const throttle = body['throttle'];
  if (throttle !== undefined && !isConvergeMethod(throttle)) throw badRequest(`'throttle' must be one of ${CONVERGE_METHODS.join(', ')}`);
  const timeout = parseTimeout(body['timeoutMs'], body['onTimeout']);
  return {
    host, port, token, compression, mode,
    ...(config ? { rate: config } : {}),
    ...(downtime !== undefined ? { downtimeLimitMs: downtime } : {}),
    ...(rounds !== undefined ? { maxRounds: rounds } : {}),
    ...(throttle !== undefined ? { throttle } : {}),
    ...(timeout ? { timeout } : {}),
  };
}
