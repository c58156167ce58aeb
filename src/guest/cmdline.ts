// The kernel command line ferry gives its guest unless told otherwise.
//  - console=ttyS0: the virt board's 16550 UART is the console.
//  - quiet: boot messages cost an MMIO exit per character; keep them for errors.
//  - cryptomgr.notests: skip the crypto self-tests (RSA, ECDSA, SHA-3 vectors), about half of
//    an interpreted boot's instructions; the algorithms still run, just not their test vectors.
// Benchmarks give the peer (QEMU) the same line.
export const GUEST_CMDLINE = 'console=ttyS0 quiet cryptomgr.notests';
