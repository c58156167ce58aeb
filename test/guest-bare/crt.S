# Bare-metal start-up shared by ferry's differential ISA tests: the same ELF runs on
# qemu-system-riscv64 -M virt -bios none and on ferry's machine in bare mode (M-mode at
# 0x80000000, no firmware). main()'s return value is reported through the test finisher.
    .section .text.init
    .globl _start
_start:
    la sp, __stack_top
    la t0, trap_entry
    csrw mtvec, t0
    li t0, (1 << 13)        # mstatus.FS = initial: enable the FPU
    csrs mstatus, t0
    csrwi fcsr, 0
    call main
    call finish
1:  j 1b

    .align 4
trap_entry:
    # Save caller-saved state the C handler may clobber, hand it the frame.
    addi sp, sp, -256
    sd ra, 0(sp)
    sd t0, 8(sp)
    sd t1, 16(sp)
    sd t2, 24(sp)
    sd a0, 32(sp)
    sd a1, 40(sp)
    sd a2, 48(sp)
    sd a3, 56(sp)
    sd a4, 64(sp)
    sd a5, 72(sp)
    sd a6, 80(sp)
    sd a7, 88(sp)
    sd t3, 96(sp)
    sd t4, 104(sp)
    sd t5, 112(sp)
    sd t6, 120(sp)
    mv a0, sp
    call trap_handler
    ld ra, 0(sp)
    ld t0, 8(sp)
    ld t1, 16(sp)
    ld t2, 24(sp)
    ld a0, 32(sp)
    ld a1, 40(sp)
    ld a2, 48(sp)
    ld a3, 56(sp)
    ld a4, 64(sp)
    ld a5, 72(sp)
    ld a6, 80(sp)
    ld a7, 88(sp)
    ld t3, 96(sp)
    ld t4, 104(sp)
    ld t5, 112(sp)
    ld t6, 120(sp)
    addi sp, sp, 256
    mret
