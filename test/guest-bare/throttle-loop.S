# The run-loop throttle tests' guest: runs until the host stops it. With a0 = 0 at the start
# (the host leaves it so) it only counts in a register and never stores: a guest that computes.
# The host sets it to 1 with setX before the first slice for a guest that writes: one
# doubleword per iteration, pseudo-random, over a 2 MiB window (512 pages) 16 MiB into RAM.
    .section .text.init
    .globl _start
_start:
    li t0, 0x81000000          # window base
    li t2, 88172645463325252   # xorshift64 state
    li t4, 511                 # page index mask
    beqz a0, 2f
1:  slli t3, t2, 13
    xor t2, t2, t3
    srli t3, t2, 7
    xor t2, t2, t3
    slli t3, t2, 17
    xor t2, t2, t3
    and t3, t2, t4
    slli t3, t3, 12
    add t3, t3, t0
    sd t2, 0(t3)
    j 1b
2:  addi t1, t1, 1
    j 2b
