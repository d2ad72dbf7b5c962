import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  snAdd,
  snDistance,
  snGreaterOrEqual,
  snGreaterThan,
  snLessOrEqual,
  snLessThan,
} from "./serial.js";

const MAX = 0xffffffff;
const uint32 = fc.integer({ min: 0, max: MAX });
/** RFC 1982 3.1: addition is defined for 0 <= n <= 2**31 - 1. */
const increment = fc.integer({ min: 0, max: 0x7fffffff });

describe("serial number arithmetic (RFC 1982, SERIAL_BITS = 32)", () => {
  it("orders plain numbers as usual away from the wrap", () => {
    expect(snLessThan(1, 2)).toBe(true);
    expect(snLessThan(2, 1)).toBe(false);
    expect(snGreaterThan(2, 1)).toBe(true);
    expect(snLessThan(5, 5)).toBe(false);
    expect(snGreaterThan(5, 5)).toBe(false);
    expect(snLessOrEqual(5, 5)).toBe(true);
    expect(snGreaterOrEqual(5, 5)).toBe(true);
  });

  it("orders across the wrap", () => {
    expect(snLessThan(MAX, 0)).toBe(true);
    expect(snGreaterThan(0, MAX)).toBe(true);
    expect(snLessThan(0xfffffff0, 0x10)).toBe(true);
    expect(snGreaterThan(0x10, 0xfffffff0)).toBe(true);
    expect(snLessThan(0x10, 0xfffffff0)).toBe(false);
  });

  it("boundary table around 2**31", () => {
    const table: readonly [number, number, boolean, boolean][] = [
      // a, b, a < b, a > b
      [0, 0x7fffffff, true, false],
      [0, 0x80000000, false, false], // exactly half-way: undefined, neither
      [0, 0x80000001, false, true],
      [0x80000000, 0, false, false],
      [0x7fffffff, 0, false, true],
      [MAX, 0x7ffffffe, true, false],
      [MAX, 0x7fffffff, false, false],
    ];
    for (const [a, b, lt, gt] of table) {
      expect([a, b, snLessThan(a, b)]).toEqual([a, b, lt]);
      expect([a, b, snGreaterThan(a, b)]).toEqual([a, b, gt]);
    }
  });

  it("adds modulo 2**32", () => {
    expect(snAdd(MAX, 1)).toBe(0);
    expect(snAdd(MAX, 2)).toBe(1);
    expect(snAdd(0x80000000, 0x7fffffff)).toBe(MAX);
    expect(snAdd(7, 0)).toBe(7);
  });

  it("a + n is greater than a for 0 < n < 2**31 (RFC 1982 3.2)", () => {
    fc.assert(
      fc.property(uint32, increment, (a, n) => {
        const b = snAdd(a, n);
        expect(b).toBeGreaterThanOrEqual(0);
        expect(b).toBeLessThanOrEqual(MAX);
        expect(snGreaterThan(b, a)).toBe(n !== 0);
        expect(snLessThan(a, b)).toBe(n !== 0);
        expect(snLessOrEqual(a, b)).toBe(true);
        expect(snGreaterOrEqual(b, a)).toBe(true);
        expect(snDistance(a, b)).toBe(n);
        expect(snDistance(b, a)).toBe(0 - n);
      }),
    );
  });

  it("less and greater are mirror images and never both hold", () => {
    fc.assert(
      fc.property(uint32, uint32, (a, b) => {
        expect(snLessThan(a, b)).toBe(snGreaterThan(b, a));
        expect(snLessThan(a, b) && snGreaterThan(a, b)).toBe(false);
        expect(snLessOrEqual(a, b)).toBe(a === b || snLessThan(a, b));
        expect(snGreaterOrEqual(a, b)).toBe(a === b || snGreaterThan(a, b));
      }),
    );
  });
});
