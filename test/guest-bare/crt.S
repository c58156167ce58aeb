# Bare-metal start-up shared by ferry's differential ISA tests: the same ELF runs on
# qemu-system-riscv64 -M virt -bios none and on ferry's machine in bare mode (M-mode at
# 0x80000000, no firmware). main()'s return value is reported through the test finisher.
    .section .text.init
    .globl _start
_start:
    la sp, __stack_top
    la t0, trap_entry
    csrw mtvec, t0
    # One PMP entry covering everything with RWX, so S and U mode may touch memory on
    # QEMU (which denies lower modes when no PMP entry exists). ferry ignores PMP.
    li t0, -1
    srli t0, t0, 10
    csrw pmpaddr0, t0
    li t0, 0x1f
    csrw pmpcfg0, t0
    li t0, (1 << 13)        # mstatus.FS = initial: enable the FPU
    csrs mstatus, t0
    csrwi fcsr, 0
    la t0, __bss_start
    la t1, __bss_end
1:  bgeu t0, t1, 2f
    sd zero, 0(t0)
    addi t0, t0, 8
    j 1b
2:  call main
    call finish
3:  j 3b

    .align 4
    .globl trap_entry
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

# void run_lower(uint64_t mode, void (*fn)(void)): calls fn at privilege `mode` (0 = U,
# 1 = S) via mret; fn returns into lower_tramp, whose magic ecall (a7 = 0x5eed) the M-mode
# trap handler turns into a return to lower_return, back in M-mode.
    .globl run_lower
run_lower:
    la t0, lower_ctx
    sd sp, 0(t0)
    sd ra, 8(t0)
    sd s0, 16(t0)
    sd s1, 24(t0)
    sd s2, 32(t0)
    sd s3, 40(t0)
    sd s4, 48(t0)
    sd s5, 56(t0)
    sd s6, 64(t0)
    sd s7, 72(t0)
    sd s8, 80(t0)
    sd s9, 88(t0)
    sd s10, 96(t0)
    sd s11, 104(t0)
    li t1, (3 << 11)
    csrc mstatus, t1
    slli a0, a0, 11
    csrs mstatus, a0
    la t1, lower_tramp
    csrw mepc, t1
    mret
lower_tramp:
    jalr a1
    li a7, 0x5eed
    ecall
4:  j 4b

    .globl lower_return
lower_return:
    la t0, lower_ctx
    ld sp, 0(t0)
    ld ra, 8(t0)
    ld s0, 16(t0)
    ld s1, 24(t0)
    ld s2, 32(t0)
    ld s3, 40(t0)
    ld s4, 48(t0)
    ld s5, 56(t0)
    ld s6, 64(t0)
    ld s7, 72(t0)
    ld s8, 80(t0)
    ld s9, 88(t0)
    ld s10, 96(t0)
    ld s11, 104(t0)
    ret

# S-mode trap entry for delegated exceptions: records scause/stval/sepc in s_trap_rec and
# resumes at s_trap_rec.resume (pc-relative addressing, so it works through any alias).
    .align 4
    .globl s_trap_entry
s_trap_entry:
    csrw sscratch, t0
    la t0, s_trap_rec
    sd t1, 0(t0)
    csrr t1, scause
    sd t1, 8(t0)
    csrr t1, stval
    sd t1, 16(t0)
    csrr t1, sepc
    sd t1, 24(t0)
    ld t1, 40(t0)
    addi t1, t1, 1
    sd t1, 40(t0)
    ld t1, 32(t0)
    csrw sepc, t1
    ld t1, 0(t0)
    csrr t0, sscratch
    sret

    .section .bss
    .align 3
lower_ctx:
    .space 112
    .globl s_trap_rec
s_trap_rec:          # saved t1, scause, stval, sepc, resume, count
    .space 48
