# The run-loop throttle tests' guest: runs until the host stops it. a0 (set by the host before
# the first slice) picks what it does:
#   0: counts in a register, never stores (a guest that computes);
#   1: stores one doubleword per iteration, pseudo-random, over a 2 MiB window (512 pages)
#      16 MiB into RAM (a guest that writes);
#   2: as 1 in batches of 64 stores, sleeping in WFI for 1 ms of guest time after each (a writer
#      that paces itself, as memwriter does: its slices end in WFI).
    .section .text.init
    .globl _start
_start:
    li t0, 0x81000000          # window base
    li t2, 88172645463325252   # xorshift64 state
    li t4, 511                 # page index mask
    beqz a0, 2f
    li t6, 2
    beq a0, t6, 3f
1:  jal ra, store
    j 1b
2:  addi t1, t1, 1
    j 2b
3:  li t5, 64
4:  jal ra, store
    addi t5, t5, -1
    bnez t5, 4b
    li a1, 0x0200bff8          # CLINT mtime
    ld a2, 0(a1)
    li a3, 10000               # 1 ms at 10 MHz
    add a2, a2, a3
    li a1, 0x02004000          # CLINT mtimecmp
    sd a2, 0(a1)
    li a1, 0x80                # mie.MTIE: WFI wakes on the timer (mstatus.MIE stays 0: no trap)
    csrs mie, a1
    wfi
    j 3b

# One pseudo-random doubleword store into the window.
store:
    slli t3, t2, 13
    xor t2, t2, t3
    srli t3, t2, 7
    xor t2, t2, t3
    slli t3, t2, 17
    xor t2, t2, t3
    and t3, t2, t4
    slli t3, t3, 12
    add t3, t3, t0
    sd t2, 0(t3)
    ret
