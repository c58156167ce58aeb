// The guest-physical memory map, mirroring QEMU's riscv `virt` board so bare-metal test
// programs and device trees are interchangeable between the two. Shared by the machine
// (bus wiring) and the device-tree builder so they cannot drift apart.

export const VIRT_TEST = { base: 0x0010_0000, size: 0x1000 } as const;
export const VIRT_RTC = { base: 0x0010_1000, size: 0x1000, irq: 11 } as const;
export const VIRT_CLINT = { base: 0x0200_0000, size: 0x10000 } as const;
export const VIRT_PLIC = { base: 0x0c00_0000, size: 0x60_0000, sourceCount: 95 } as const;
export const VIRT_UART0 = { base: 0x1000_0000, size: 0x100, irq: 10, clockFrequency: 3_686_400 } as const;
export const VIRT_VIRTIO = { base: 0x1000_1000, size: 0x1000, stride: 0x1000, count: 8, firstIrq: 1 } as const;
export const VIRT_DRAM_BASE = 0x8000_0000n;
export const VIRT_TIMEBASE_FREQUENCY = 10_000_000;

/** Base address and PLIC source of virtio-mmio slot `index` (0..7). */
export function virtioSlot(index: number): { base: number; size: number; irq: number } {
  return {
    base: VIRT_VIRTIO.base + index * VIRT_VIRTIO.stride,
    size: VIRT_VIRTIO.size,
    irq: VIRT_VIRTIO.firstIrq + index,
  };
}
