// Guest-physical MMIO dispatch. An access that no device fully covers is reported, not
// thrown: read() returns undefined and write() returns false, and the CPU turns that into a
// load/store access fault. Exceptions stay reserved for VMM bugs.

import type { AccessSize, MmioDevice } from './types.js';
import { DeviceConfigError } from './errors.js';

export interface MmioRegion {
  readonly base: number;
  readonly size: number;
  readonly device: MmioDevice;
}

export class MmioBus {
  /** Sorted by base, non-overlapping. */
  private readonly regions: MmioRegion[] = [];
  /** Devices are hit in runs (a UART driver loops on LSR), so remember the last region. */
  private last: MmioRegion | undefined;

  map(base: number, size: number, device: MmioDevice): void {
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(size) || base < 0 || size <= 0 ||
        !Number.isSafeInteger(base + size)) {
      throw new DeviceConfigError('BUS_INVALID_RANGE', `invalid MMIO range base=${base} size=${size} for ${device.name}`);
    }
    const i = this.regions.findIndex((r) => r.base >= base);
    const at = i === -1 ? this.regions.length : i;
    const prev = this.regions[at - 1];
    const next = this.regions[at];
    const clash = (prev && prev.base + prev.size > base) ? prev : (next && base + size > next.base) ? next : undefined;
    if (clash) {
      throw new DeviceConfigError('BUS_OVERLAP',
        `${device.name} [${hex(base)}, ${hex(base + size)}) overlaps ${clash.device.name} [${hex(clash.base)}, ${hex(clash.base + clash.size)})`);
    }
    this.regions.splice(at, 0, { base, size, device });
  }

  /** The region that contains the whole access [paddr, paddr+size), if any. */
  find(paddr: number, size: AccessSize = 1): MmioRegion | undefined {
    const l = this.last;
    if (l && paddr >= l.base && paddr + size <= l.base + l.size) return l;
    let lo = 0;
    let hi = this.regions.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = this.regions[mid]!;
      if (paddr < r.base) hi = mid - 1;
      else if (paddr >= r.base + r.size) lo = mid + 1;
      else {
        if (paddr + size > r.base + r.size) return undefined;
        this.last = r;
        return r;
      }
    }
    return undefined;
  }

  /** undefined = no device: the caller raises a load access fault. */
  read(paddr: number, size: AccessSize): number | undefined {
    const r = this.find(paddr, size);
    return r ? r.device.read(paddr - r.base, size) : undefined;
  }

  /** false = no device: the caller raises a store/AMO access fault. */
  write(paddr: number, size: AccessSize, value: number): boolean {
    const r = this.find(paddr, size);
    if (!r) return false;
    r.device.write(paddr - r.base, size, value);
    return true;
  }

  get mappings(): readonly MmioRegion[] {
    return this.regions;
  }
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
