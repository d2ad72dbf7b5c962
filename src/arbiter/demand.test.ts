import { describe, expect, it } from "vitest";
import {
  CapacityTrend,
  DemandSeries,
  DemandTracker,
  LATENCY_BUCKETS,
  latencyBucket,
  latencyBucketUpperMs,
  quantileMs,
} from "./demand.js";

describe("latency histogram", () => {
  it("puts latencies in log buckets, 4 per octave, clamped at both ends", () => {
    expect(latencyBucket(0)).toBe(0);
    expect(latencyBucket(0.0005)).toBe(0);
    expect(latencyBucket(1)).toBe(Math.floor(Math.log2(1000) * 4));
    expect(latencyBucket(1e9)).toBe(LATENCY_BUCKETS - 1);
    for (const ms of [0.01, 0.1, 1, 7.5, 100, 2500]) {
      const i = latencyBucket(ms);
      expect(latencyBucketUpperMs(i)).toBeGreaterThan(ms);
      expect(i === 0 || latencyBucketUpperMs(i - 1) <= ms).toBe(true);
    }
  });

  it("estimates quantiles within 9% (relative)", () => {
    const hist = new Float64Array(LATENCY_BUCKETS);
    // 1000 latencies spread evenly from 0.1 ms to 100 ms.
    const values = Array.from({ length: 1000 }, (_, i) => 0.1 + (i * 99.9) / 999);
    for (const v of values) hist[latencyBucket(v)]! += 1;
    for (const q of [0.5, 0.9, 0.99]) {
      const exact = values[Math.ceil(q * values.length) - 1]!;
      expect(Math.abs(quantileMs(hist, q) - exact) / exact).toBeLessThan(0.09);
    }
    expect(quantileMs(new Float64Array(LATENCY_BUCKETS), 0.5)).toBeNaN();
  });
});

describe("DemandSeries", () => {
  it("gives rates, queue depths and percentiles over 1 s, 10 s and 60 s", () => {
    const s = new DemandSeries({ agent: "a" });
    // 30 s of: 100 reads/s of 4 KiB taking 2 ms (1 ms queued + 1 ms in the volume), and
    // 10 writes/s of 64 KiB taking 20 ms in the volume.
    for (let sec = 0; sec < 30; sec++) {
      for (let i = 0; i < 100; i++) s.record("read", 4096, 1, 1, sec * 1000 + i * 10);
      for (let i = 0; i < 10; i++) s.record("write", 65536, 0, 20, sec * 1000 + i * 100 + 5);
    }
    const now = 30_000; // the slot of second 30 has just begun
    for (const seconds of [1, 10] as const) {
      const w = s.window(seconds, now);
      expect(w.readIops).toBe(100);
      expect(w.writeIops).toBe(10);
      expect(w.readBps).toBe(409600);
      expect(w.writeBps).toBe(655360);
      // Little's law: 100/s × 1 ms queued = 0.1; in flight 100/s × 1 ms + 10/s × 20 ms = 0.3.
      expect(w.avgQueued).toBeCloseTo(0.1, 9);
      expect(w.avgInFlight).toBeCloseTo(0.3, 9);
      expect(Math.abs(w.p50Ms - 2) / 2).toBeLessThan(0.09);
      expect(Math.abs(w.p99Ms - 20) / 20).toBeLessThan(0.09);
    }
    // Only 3 complete 10 s slots exist: the 60 s window counts them over 60 s.
    expect(s.window(60, now).readIops).toBe(50);
    expect(s.totals).toMatchObject({ readOps: 3000, writeOps: 300, writeBytes: 300 * 65536 });
    // Nothing recorded since: the windows empty out.
    const later = s.window(10, 100_000);
    expect(later.readIops).toBe(0);
    expect(later.p50Ms).toBeNaN();
  });

  it("keeps 'other' commands out of the byte rates", () => {
    const s = new DemandSeries({});
    s.record("other", 123, 0, 1, 500);
    const w = s.window(1, 1000);
    expect(w.otherIops).toBe(1);
    expect(w.readBps + w.writeBps).toBe(0);
    expect(s.totals.otherOps).toBe(1);
  });
});

describe("CapacityTrend", () => {
  const DAY = 86_400_000;
  it("fits growth per day and forecasts when a target is reached", () => {
    const t = new CapacityTrend();
    // 10 GiB/day, sampled every 5 minutes for 2 days, with noise of ±1 MiB.
    for (let m = 0; m <= 2 * 24 * 60; m += 5) {
      const at = m * 60_000;
      t.sample(at, 100 * 2 ** 30 + (at / DAY) * 10 * 2 ** 30 + ((m % 3) - 1) * 2 ** 20);
    }
    const now = 2 * DAY;
    const perDay = t.growthPerDay(now)!;
    expect(Math.abs(perDay - 10 * 2 ** 30) / (10 * 2 ** 30)).toBeLessThan(0.001);
    // At 120 GiB now, 200 GiB is 8 days away.
    expect(t.secondsUntil(200 * 2 ** 30, now)! / 86_400).toBeCloseTo(8, 1);
    expect(t.secondsUntil(1, now)).toBe(0);
  });

  it("needs two samples a minute apart, and says never when usage does not grow", () => {
    const t = new CapacityTrend();
    t.sample(0, 100);
    expect(t.growthPerDay(0)).toBeUndefined();
    t.sample(30_000, 100);
    expect(t.growthPerDay(30_000)).toBeUndefined();
    t.sample(600_000, 50);
    expect(t.growthPerDay(600_000)).toBeLessThan(0);
    expect(t.secondsUntil(1000, 600_000)).toBe(Number.POSITIVE_INFINITY);
  });

  it("stays bounded: close samples replace each other, old ones fall out", () => {
    const t = new CapacityTrend({ windowMs: 1000 * 60, maxSamples: 10 });
    for (let i = 0; i < 1000; i++) t.sample(i * 1000, i);
    expect(t.size).toBeLessThanOrEqual(10);
    expect(t.latest()).toEqual({ at: 999_000, bytes: 999 });
    for (let i = 0; i < 1000; i++) t.sample(1_000_000 + i, i); // 1 ms apart
    expect(t.size).toBeLessThanOrEqual(10);
  });
});

describe("DemandTracker", () => {
  it("keeps series per agent and channel, and forecasts agents and the pool", () => {
    const d = new DemandTracker();
    expect(d.agent("a")).toBe(d.agent("a"));
    const c = d.channel({ channel: 3, agent: "a", volume: "v" });
    expect(c.labels).toEqual({ channel: "3", agent: "a", volume: "v" });
    expect([...d.channels()].map(([l]) => l.channel)).toEqual([3]);
    const DAY = 86_400_000;
    for (let h = 0; h <= 48; h++) {
      d.sampleAgentBytes("a", 1000 + h * 10, h * 3_600_000); // 240 bytes/day
      d.samplePool(5000 + h * 100, 100_000, h * 3_600_000); // 2400 bytes/day
    }
    const f = d.agentForecast("a", 2440, 2 * DAY);
    expect(f.growthBytesPerDay).toBeCloseTo(240, 6);
    expect(f.secondsUntilLimit! / 86_400).toBeCloseTo(4, 6); // (2440 - 1480) / 240 bytes/day
    expect(f.secondsUntilPoolFull! / 86_400).toBeCloseTo((100_000 - 9800) / 2400, 6);
    expect(d.agentForecast("nobody", undefined, 2 * DAY)).toEqual({
      secondsUntilPoolFull: f.secondsUntilPoolFull,
    });
    d.dropChannel(3);
    expect([...d.channels()]).toEqual([]);
  });
});
