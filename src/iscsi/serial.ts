/**
 * 32-bit serial number arithmetic (RFC 1982 with SERIAL_BITS = 32), which RFC 7143 4.2.2.1
 * requires for CmdSN, ExpCmdSN, MaxCmdSN, StatSN, DataSN and R2TSN: the numbers wrap at 2**32,
 * so `a < b` on plain integers gives the wrong answer across the wrap.
 *
 * Two numbers exactly 2**31 apart are unordered (RFC 1982 3.2): neither is less than or greater
 * than the other. Callers that check a window (ExpCmdSN <= CmdSN <= MaxCmdSN) therefore reject
 * such a CmdSN, which is what RFC 7143 wants.
 */

const HALF = 0x8000_0000;

/** RFC 1982 3.2: `a < b`. Inputs are uint32 values (0 .. 2**32-1). */
export function snLessThan(a: number, b: number): boolean {
  const d = (b - a) >>> 0;
  return d !== 0 && d < HALF;
}

/** RFC 1982 3.2: `a > b`. */
export function snGreaterThan(a: number, b: number): boolean {
  const d = (a - b) >>> 0;
  return d !== 0 && d < HALF;
}

/** `a <= b`: equal, or less than. */
export function snLessOrEqual(a: number, b: number): boolean {
  return (b - a) >>> 0 < HALF;
}

/** `a >= b`: equal, or greater than. */
export function snGreaterOrEqual(a: number, b: number): boolean {
  return (a - b) >>> 0 < HALF;
}

/**
 * RFC 1982 3.1: `a + n` modulo 2**32. RFC 1982 only defines it for 0 <= n <= 2**31 - 1; a
 * larger n would make the result compare as less than `a`.
 */
export function snAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}

/**
 * How far `b` is ahead of `a` (`b - a` modulo 2**32, as a signed 32-bit number): positive when
 * `b` is greater, negative when it is less. Handy for window sizes such as MaxCmdSN - ExpCmdSN + 1.
 */
export function snDistance(a: number, b: number): number {
  return (b - a) | 0;
}
