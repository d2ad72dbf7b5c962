import { describe, expect, it } from "vitest";
import { Pacer, type PacerClock } from "./pacer.js";

/** A clock whose time moves only when a sleep is taken (and records the sleeps). */
function fakeClock() {
  let now = 1000;
  const sleeps: number[] = [];
  const clock: PacerClock = {
    now: () => now,
    sleep: async (ms) => {
      sleeps.push(ms);
      now += ms;
    },
  };
  return {
    clock,
    sleeps,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

describe("Pacer", () => {
  it("lets the first piece through and spaces the next ones by bytes / rate", async () => {
    const c = fakeClock();
    const pacer = new Pacer(1000, c.clock); // 1000 bytes per second
    await pacer.take(500);
    await pacer.take(500);
    await pacer.take(2000);
    await pacer.take(1);
    expect(c.sleeps).toEqual([500, 500, 2000]);
  });

  it("saves up no burst while idle", async () => {
    const c = fakeClock();
    const pacer = new Pacer(1000, c.clock);
    await pacer.take(1000);
    c.advance(60_000);
    await pacer.take(1000);
    await pacer.take(1000);
    expect(c.sleeps).toEqual([1000]);
  });

  it("counts the time spent since the last piece", async () => {
    const c = fakeClock();
    const pacer = new Pacer(1000, c.clock);
    await pacer.take(1000);
    c.advance(400);
    await pacer.take(1000);
    expect(c.sleeps).toEqual([600]);
  });

  it("shares the rate between callers, in the order they asked", async () => {
    // Three callers ask at the same instant (time does not move while they ask): each waits
    // for the shares of those before it.
    const sleeps: number[] = [];
    const pacer = new Pacer(1000, {
      now: () => 0,
      sleep: async (ms) => {
        sleeps.push(ms);
      },
    });
    await Promise.all([pacer.take(1000), pacer.take(1000), pacer.take(1000)]);
    expect(sleeps).toEqual([1000, 2000]);
  });

  it("never waits when unpaced (0 or Infinity), and refuses a negative or NaN rate", async () => {
    for (const rate of [0, Number.POSITIVE_INFINITY]) {
      const c = fakeClock();
      const pacer = new Pacer(rate, c.clock);
      expect(pacer.unpaced).toBe(true);
      await pacer.take(1e12);
      await pacer.take(1e12);
      expect(c.sleeps).toEqual([]);
    }
    expect(() => new Pacer(-1)).toThrow(RangeError);
    expect(() => new Pacer(Number.NaN)).toThrow(RangeError);
  });
});
