import { describe, expect, it } from "vitest";
import { Arbiter } from "./arbiter.js";
import type { PoolCapacity, ThresholdEvent } from "./capacity.js";
import { ManualClock } from "./clock.js";
import { serveMetrics } from "./metrics.js";
import { arbiterPolicy } from "./policy.js";

const GiB = 2 ** 30;
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

function fakePool(total: number) {
  const used = new Map<string, number>();
  const pool: PoolCapacity & { used: Map<string, number> } = {
    used,
    agentLogicalBytes: (agent) => used.get(agent) ?? 0,
    poolTotalBytes: () => total,
    poolFreeBytes: () => total - [...used.values()].reduce((a, b) => a + b, 0),
  };
  return pool;
}

const policy = arbiterPolicy({
  agents: [
    {
      name: "backup1",
      weight: 3,
      capacity: { limit: 10 * GiB, reserved: 2 * GiB },
      limits: { readBps: 20e6, burst: 1 },
    },
    { name: "backup2" },
  ],
  volumes: [{ name: "vol1" }],
  pool: { balance: "auto" },
});

describe("ArbiterMetrics", () => {
  it("exposes agents, channels, pool and scheduler in Prometheus text format", async () => {
    const clock = new ManualClock(1000);
    const pool = fakePool(100 * GiB);
    const arbiter = new Arbiter({ policy, pool, clock, timers: clock });
    const h = arbiter.scheduler.channel("backup1", 7, "vol1");
    for (let i = 0; i < 10; i++) {
      const p = h.run("read", 65536, () => new Promise<void>((r) => clock.set(r, 2)));
      clock.advance(2);
      await p;
    }
    await h.run("other", 0, async () => undefined);
    pool.used.set("backup1", 9 * GiB);
    arbiter.sampleCapacity();
    clock.advance(1000); // now in second 2: the 1 s window is second 1, complete
    const text = await arbiter.metrics.metrics();
    expect(text).toContain('sanmux_agent_commands_total{agent="backup1",kind="read"} 10');
    expect(text).toContain('sanmux_agent_commands_total{agent="backup1",kind="other"} 1');
    expect(text).toContain(
      'sanmux_channel_bytes_total{channel="7",agent="backup1",volume="vol1",kind="read"} 655360',
    );
    expect(text).toContain(
      'sanmux_agent_rate_commands{agent="backup1",kind="read",window="1s"} 10',
    );
    expect(text).toContain(
      'sanmux_agent_latency_seconds_bucket{agent="backup1",le="0.001024"} 1\n',
    );
    expect(text).toContain(
      'sanmux_agent_latency_seconds_bucket{agent="backup1",le="0.002048"} 11\n',
    );
    expect(text).toContain('sanmux_agent_latency_seconds_count{agent="backup1"} 11');
    expect(text).toContain('sanmux_agent_latency_p50_seconds{agent="backup1",window="1s"}');
    expect(text).toContain('sanmux_agent_weight{agent="backup1"} 3');
    expect(text).toContain('sanmux_agent_limit{agent="backup1",limit="read_bps"} 20000000');
    expect(text).toContain(`sanmux_agent_logical_bytes{agent="backup1"} ${9 * GiB}`);
    expect(text).toContain('sanmux_agent_soft_threshold_reached{agent="backup1"} 1');
    expect(text).toContain(`sanmux_pool_free_bytes ${91 * GiB}`);
    expect(text).toContain("sanmux_pool_unused_reserved_bytes 0");
    expect(text).toContain("sanmux_scheduler_concurrency 64");
    expect(text).toContain("# TYPE sanmux_agent_latency_seconds histogram");
    expect(text).toContain('sanmux_agent_queue_depth{agent="backup2",state="in_flight"} 0');
    // Scraped twice: the same counters, not doubled.
    expect(await arbiter.metrics.metrics()).toContain(
      'sanmux_agent_commands_total{agent="backup1",kind="read"} 10',
    );
  });

  it("gives status JSON per agent, channel and pool, with forecasts", async () => {
    const clock = new ManualClock(0);
    const pool = fakePool(100 * GiB);
    const events: ThresholdEvent[] = [];
    const arbiter = new Arbiter({
      policy,
      pool,
      clock,
      timers: clock,
      onThreshold: (e) => events.push(e),
    });
    // backup1 grows 1 GiB per hour, sampled every 10 minutes by the arbiter's own timer.
    arbiter.startSampling(600_000);
    for (let m = 10; m <= 240; m += 10) {
      pool.used.set("backup1", (m / 60) * GiB);
      clock.advance(600_000);
    }
    const h = arbiter.scheduler.channel("backup2", 3, "vol1");
    await h.run("write", 4096, async () => undefined);
    await settle();
    const status = arbiter.statusJson();
    expect(status.scheduler).toEqual({
      concurrency: 64,
      inFlight: 0,
      sending: 0,
      queued: 0,
      throttled: 0,
      balance: "auto",
    });
    const b1 = status.agents.find((a) => a.name === "backup1")!;
    expect(b1.weight).toBe(3);
    expect(b1.capacity).toMatchObject({
      logicalBytes: 4 * GiB,
      limitBytes: 10 * GiB,
      reservedBytes: 2 * GiB,
      unusedReservedBytes: 0,
      aboveSoftThreshold: false,
    });
    expect(b1.forecast.growthBytesPerDay! / GiB).toBeCloseTo(24, 6);
    expect(b1.forecast.secondsUntilLimit! / 3600).toBeCloseTo(6, 6); // 6 GiB to go at 1 GiB/h
    expect(b1.forecast.limitReachedAt).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(b1.forecast.secondsUntilPoolFull! / 3600).toBeCloseTo(96, 6);
    expect(b1.windows["1s"]?.p50Ms).toBeNull();
    expect(status.channels).toHaveLength(1);
    expect(status.channels[0]).toMatchObject({
      channel: 3,
      agent: "backup2",
      volume: "vol1",
      totals: { writeOps: 1, writeBytes: 4096 },
    });
    expect(status.pool).toMatchObject({ totalBytes: 100 * GiB, freeBytes: 96 * GiB });
    expect(JSON.parse(JSON.stringify(status))).toEqual(status);
    expect(events).toEqual([]);
    // Crossing 80% of the limit shows up at the next sample.
    pool.used.set("backup1", 8 * GiB);
    clock.advance(600_000);
    expect(events).toMatchObject([{ scope: "agent", agent: "backup1" }]);
    arbiter.close();
    expect(clock.timerCount).toBe(0);
  });

  it("works without a pool (file volumes only): no capacity figures", async () => {
    const arbiter = new Arbiter({ policy });
    expect(arbiter.capacity).toBeUndefined();
    expect(arbiter.sampleCapacity()).toEqual([]);
    const status = arbiter.statusJson();
    expect(status.pool).toBeUndefined();
    expect(status.agents.map((a) => a.name)).toEqual(["backup1", "backup2"]);
    expect(await arbiter.metrics.metrics()).not.toMatch(/^sanmux_pool_free_bytes /m);
    arbiter.close();
  });
});

describe("serveMetrics", () => {
  it("serves the registry at /metrics, 404 elsewhere", async () => {
    const arbiter = new Arbiter({ policy });
    const server = await serveMetrics("127.0.0.1", 0, arbiter.metrics.registry);
    try {
      const base = `http://127.0.0.1:${server.address.port}`;
      const ok = await fetch(`${base}/metrics`);
      expect(ok.status).toBe(200);
      expect(ok.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
      expect(await ok.text()).toContain('sanmux_agent_weight{agent="backup1"} 3');
      expect((await fetch(`${base}/nope`)).status).toBe(404);
      expect((await fetch(`${base}/metrics`, { method: "POST" })).status).toBe(405);
    } finally {
      await server.close();
      arbiter.close();
    }
  });

  it("rejects when the port is taken", async () => {
    const arbiter = new Arbiter({ policy });
    const first = await serveMetrics("127.0.0.1", 0, arbiter.metrics.registry);
    try {
      await expect(
        serveMetrics("127.0.0.1", first.address.port, arbiter.metrics.registry),
      ).rejects.toMatchObject({ code: "EADDRINUSE" });
    } finally {
      await first.close();
    }
  });
});
