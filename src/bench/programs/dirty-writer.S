# Write-heavy bare-metal workload for the dirty-log overhead benchmark: stores one
# doubleword per iteration at a pseudo-random place in an 8 MiB window (2048 pages, twice
# the TLB's reach), so both TLB refills and dirty-log re-arming are exercised. No stack,
# no data: every store it makes lands in the window. Powers off through the test finisher.
    .section .text.init
    .globl _start
_start:
    li t0, 0x81000000          # window base (16 MiB into RAM)
    li t1, 30000000            # iterations
    li t2, 88172645463325252   # xorshift64 state
    li t4, 2047                # page index mask
1:  slli t3, t2, 13
    xor t2, t2, t3
    srli t3, t2, 7
    xor t2, t2, t3
    slli t3, t2, 17
    xor t2, t2, t3
    and t3, t2, t4             # page
    slli t3, t3, 12
    srli t5, t2, 20
    andi t5, t5, 511           # doubleword within the page
    slli t5, t5, 3
    add t3, t3, t5
    add t3, t3, t0
    sd t2, 0(t3)
    addi t1, t1, -1
    bnez t1, 1b
    li t0, 0x100000
    li t1, 0x5555
    sw t1, 0(t0)
2:  j 2b
