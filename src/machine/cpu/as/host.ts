// Functions the host (TypeScript) provides to the interpreter.

/** Guest time in timebase ticks (10 MHz), as a double: exact up to 2^53 ticks (28 years). */
@external("env", "hostTime") export declare function hostTime(): f64;

@inline export function now(): u64 {
  return <u64>hostTime();
}
