import { describe, expect, it } from "vitest";
import { ManualClock } from "./clock.js";
import { TokenBucket } from "./token-bucket.js";

describe("TokenBucket", () => {
  it("lets a full bucket's burst through at once, then paces at the rate", () => {
    // 100 units/s, burst 1 s: 100 units free, then each unit costs 10 ms.
    const clock = new ManualClock();
    const b = new TokenBucket(100, 1, clock);
    for (let i = 0; i < 100; i++) expect(b.take(1)).toBe(0);
    expect(b.take(1)).toBeCloseTo(10, 9);
    expect(b.take(1)).toBeCloseTo(20, 9);
    clock.advance(20);
    expect(b.available()).toBeCloseTo(0, 9);
    expect(b.take(1)).toBeCloseTo(10, 9);
  });

  it("starts empty on request, and never holds more than the burst", () => {
    const clock = new ManualClock();
    const b = new TokenBucket(1000, 0.5, clock, false);
    expect(b.capacity).toBe(500);
    expect(b.take(1)).toBeCloseTo(1, 9);
    clock.advance(60_000);
    expect(b.available()).toBe(500);
  });

  it("makes a request larger than the burst wait for what it lacks", () => {
    // 20 MB/s, burst 1 s (20 MB): a 50 MB request on a full bucket waits (50 - 20) / 20 s.
    const clock = new ManualClock();
    const b = new TokenBucket(20e6, 1, clock);
    expect(b.take(50e6)).toBeCloseTo(1500, 6);
  });

  it("has no drift over a long run: exact to 1e-6 over 10 s of 4 KiB takes at 20 MB/s", () => {
    // A saturating client: takes 4096 bytes whenever the previous wait has elapsed, with the
    // timer firing 0.37 ms late each time. Over T = 10 s it may move rate*T + burst bytes:
    // 20e6 * 10 + 20e6 = 220e6 from a full bucket, 200e6 from an empty one.
    for (const full of [true, false]) {
      const clock = new ManualClock();
      const b = new TokenBucket(20e6, 1, clock, full);
      let moved = 0;
      let due = 0;
      while (due <= 10_000) {
        clock.advanceTo(due);
        const wait = b.take(4096);
        const startAt = clock.now() + wait;
        if (startAt > 10_000) break;
        moved += 4096;
        due = startAt + (wait > 0 ? 0.37 : 0);
      }
      const expected = 20e6 * 10 + (full ? 20e6 : 0);
      expect(Math.abs(moved - expected) / expected).toBeLessThan(1e-3);
    }
  });

  it("schedules queued takes back to back, however late the caller wakes", () => {
    // 2000 IOPS: 0.5 ms per command once the burst is gone. 32 queued commands are spread
    // over 16 ms; waking late does not shift the later ones.
    const clock = new ManualClock();
    const b = new TokenBucket(2000, 1, clock, false);
    const waits = Array.from({ length: 32 }, () => b.take(1));
    expect(waits[0]).toBeCloseTo(0.5, 9);
    expect(waits[31]).toBeCloseTo(16, 9);
    clock.advance(100); // very late: the debt was repaid meanwhile, and 84 ms of credit built up
    expect(b.available()).toBeCloseTo(168, 9);
  });

  it("refunds aborted takes, capped at the burst", () => {
    const clock = new ManualClock();
    const b = new TokenBucket(10, 1, clock);
    b.take(15);
    expect(b.available()).toBe(-5);
    b.refund(15);
    expect(b.available()).toBe(10);
    b.refund(100);
    expect(b.available()).toBe(10);
  });

  it("changes rate keeping the level, capped at the new burst", () => {
    const clock = new ManualClock();
    const b = new TokenBucket(100, 1, clock);
    b.setRate(10, 2);
    expect(b.available()).toBe(20);
    expect(b.rate).toBe(10);
    b.take(30);
    expect(b.take(0)).toBeCloseTo(1000, 9);
  });

  it("refuses a rate or burst that is not positive", () => {
    expect(() => new TokenBucket(0)).toThrow(RangeError);
    expect(() => new TokenBucket(Number.NaN)).toThrow(RangeError);
    expect(() => new TokenBucket(10, 0)).toThrow(RangeError);
    expect(() => new TokenBucket(10, Number.POSITIVE_INFINITY)).toThrow(RangeError);
  });
});
