// Validation of a VmConfig arriving over the API (or read back from disk). Everything is
// checked here, before a worker is spawned, so a bad request is a 400 naming the field rather
// than a VM that fails while booting.

import type { VmConfig } from '../vm/types.js';
import { DeviceSpecError, parseDiskSpec, parseMac } from '../vm/devices.js';
import { FerryError } from '../errors.js';

export const NAME_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const MIN_MEMORY_MIB = 64;
export const MAX_MEMORY_MIB = 3072;
const BRIDGE_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const IP_RE = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})(?:,(\d{1,3}(?:\.\d{1,3}){3}))?$/;
const KEYS = new Set(['name', 'memoryMiB', 'kernel', 'initramfs', 'cmdline', 'nets', 'disks', 'swap', 'ip']);

export class ConfigError extends FerryError {
  constructor(message: string) { super('CONFIG_INVALID', message); }
}

export function validateName(name: unknown): string {
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw new ConfigError(`invalid VM name ${JSON.stringify(name)} (expected [a-z0-9][a-z0-9-]{0,62})`);
  }
  return name;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function optionalString(obj: Record<string, unknown>, key: string): string | undefined {
  const v = obj[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v === '' || v.includes('\0')) throw new ConfigError(`'${key}' must be a non-empty string`);
  return v;
}

function validIpv4(text: string): boolean {
  return text.split('.').every((o) => Number(o) <= 255);
}

/** A normalized copy of `input` (defaults filled in), or ConfigError naming what is wrong. */
export function validateConfig(input: unknown): VmConfig {
  if (!isRecord(input)) throw new ConfigError('VM config must be a JSON object');
  for (const key of Object.keys(input)) if (!KEYS.has(key)) throw new ConfigError(`unknown config field '${key}'`);
  const name = validateName(input['name']);
  const memoryMiB = input['memoryMiB'] ?? 256;
  if (typeof memoryMiB !== 'number' || !Number.isInteger(memoryMiB) || memoryMiB < MIN_MEMORY_MIB || memoryMiB > MAX_MEMORY_MIB) {
    throw new ConfigError(`memoryMiB must be an integer in ${MIN_MEMORY_MIB}..${MAX_MEMORY_MIB}, got ${JSON.stringify(memoryMiB)}`);
  }
  const kernel = optionalString(input, 'kernel');
  const initramfs = optionalString(input, 'initramfs');
  const cmdline = optionalString(input, 'cmdline');
  if (initramfs !== undefined && kernel === undefined) throw new ConfigError("'initramfs' needs 'kernel'");

  const netsIn = input['nets'] ?? [];
  if (!Array.isArray(netsIn)) throw new ConfigError("'nets' must be an array");
  const macs = new Set<string>();
  const nets = netsIn.map((n: unknown, i) => {
    if (!isRecord(n)) throw new ConfigError(`nets[${i}] must be an object`);
    for (const key of Object.keys(n)) if (key !== 'mac' && key !== 'bridge') throw new ConfigError(`unknown field 'nets[${i}].${key}'`);
    if (typeof n['mac'] !== 'string') throw new ConfigError(`nets[${i}].mac is required`);
    try { parseMac(n['mac']); } catch (err) { throw asConfigError(err); }
    const mac = n['mac'].toLowerCase();
    if (macs.has(mac)) throw new ConfigError(`duplicate MAC address '${mac}'`);
    macs.add(mac);
    const bridge = n['bridge'];
    if (bridge === undefined) return { mac };
    if (typeof bridge !== 'string' || !BRIDGE_RE.test(bridge)) throw new ConfigError(`invalid bridge name ${JSON.stringify(bridge)} in nets[${i}]`);
    return { mac, bridge };
  });

  const disksIn = input['disks'] ?? [];
  if (!Array.isArray(disksIn)) throw new ConfigError("'disks' must be an array");
  const disks = disksIn.map((d: unknown, i) => {
    if (typeof d !== 'string') throw new ConfigError(`disks[${i}] must be a string`);
    try { parseDiskSpec(d); } catch (err) { throw asConfigError(err); }
    return d;
  });

  const swap = optionalString(input, 'swap');
  if (swap !== undefined) {
    let kind: string;
    try { kind = parseDiskSpec(swap).kind; } catch (err) { throw asConfigError(err); }
    if (kind !== 'nbd') throw new ConfigError(`swap '${swap}' must be nbd://HOST:PORT[/EXPORT]: both hosts of a migration must reach it`);
  }

  const ip = optionalString(input, 'ip');
  if (ip !== undefined) {
    const m = IP_RE.exec(ip);
    if (!m || !validIpv4(m[1]!) || Number(m[2]) > 32 || (m[3] !== undefined && !validIpv4(m[3]))) {
      throw new ConfigError(`invalid ip '${ip}' (expected ADDR/PREFIX[,GATEWAY])`);
    }
    if (nets.length === 0) throw new ConfigError("'ip' needs a NIC in 'nets'");
  }

  return {
    name, memoryMiB, nets, disks,
    ...(kernel !== undefined ? { kernel } : {}),
    ...(initramfs !== undefined ? { initramfs } : {}),
    ...(cmdline !== undefined ? { cmdline } : {}),
    ...(swap !== undefined ? { swap } : {}),
    ...(ip !== undefined ? { ip } : {}),
  };
}

function asConfigError(err: unknown): unknown {
  return err instanceof DeviceSpecError ? new ConfigError(err.message) : err;
}
