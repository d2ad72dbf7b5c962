import { describe, expect, it } from "vitest";
import { StorageError } from "../volume/errors.js";
import { CapacityRules, type PoolCapacity, type ThresholdEvent } from "./capacity.js";
import { arbiterPolicy } from "./policy.js";

const GiB = 2 ** 30;

/** A pool of `total` bytes whose usage the test sets by hand. */
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
    { name: "a", capacity: { limit: 10 * GiB } },
    { name: "b", capacity: { reserved: 30 * GiB } },
    { name: "c" },
  ],
  volumes: [],
  pool: { softThreshold: 0.85 },
});

describe("CapacityRules: check", () => {
  it("refuses an agent's allocation over its limit, and allows overwrites and what fits", () => {
    const pool = fakePool(100 * GiB);
    const rules = new CapacityRules(pool, policy);
    pool.used.set("a", 10 * GiB - 4096);
    expect(rules.check("a", 4096)).toEqual({ allowed: true });
    const refused = rules.check("a", 8192);
    expect(refused).toMatchObject({ allowed: false, code: "QUOTA_EXCEEDED" });
    expect(rules.check("a", 0)).toEqual({ allowed: true }); // an overwrite allocates nothing
    expect(() => rules.admit("a", 8192)).toThrow(StorageError);
    // After an UNMAP the agent holds less and may write again.
    pool.used.set("a", 5 * GiB);
    expect(rules.check("a", 8192).allowed).toBe(true);
  });

  it("keeps another agent's unused reservation out of reach, but not its owner's", () => {
    // 100 GiB pool; b reserves 30 GiB and holds 10 GiB: 20 GiB are held back from others.
    const pool = fakePool(100 * GiB);
    const rules = new CapacityRules(pool, policy);
    pool.used.set("b", 10 * GiB);
    pool.used.set("c", 65 * GiB); // free: 25 GiB, of which 20 reserved for b
    expect(rules.check("c", 5 * GiB).allowed).toBe(true);
    const refused = rules.check("c", 5 * GiB + 1);
    expect(refused).toMatchObject({ allowed: false, code: "POOL_FULL" });
    if (!refused.allowed) expect(refused.message).toMatch(/reserved for other agents/);
    expect(rules.check("b", 25 * GiB).allowed).toBe(true); // b may use its own reservation
    expect(rules.check("b", 25 * GiB + 1)).toMatchObject({ code: "POOL_FULL" });
    // Once b has used its reservation, nothing is held back.
    pool.used.set("b", 30 * GiB);
    pool.used.set("c", 60 * GiB);
    expect(rules.unusedReservations("c")).toBe(0);
    expect(rules.check("c", 10 * GiB).allowed).toBe(true);
  });

  it("answers QuotaExceeded before PoolFull, and knows unknown agents only by the pool", () => {
    const pool = fakePool(10 * GiB);
    const rules = new CapacityRules(pool, policy);
    pool.used.set("c", 10 * GiB);
    expect(rules.check("a", 11 * GiB)).toMatchObject({ code: "QUOTA_EXCEEDED" });
    expect(rules.check("zzz", 1)).toMatchObject({ code: "POOL_FULL" });
  });

  it("reports reservations larger than the pool", () => {
    expect(new CapacityRules(fakePool(20 * GiB), policy).reservationProblems()).toEqual([
      `agents reserve ${30 * GiB} bytes in all, more than the pool's ${20 * GiB} bytes`,
    ]);
    expect(new CapacityRules(fakePool(40 * GiB), policy).reservationProblems()).toEqual([]);
  });
});

describe("CapacityRules: soft thresholds", () => {
  it("fires once per upward crossing, re-arming below the threshold less 1%", () => {
    const pool = fakePool(1000 * GiB);
    const events: ThresholdEvent[] = [];
    const rules = new CapacityRules(pool, policy, { onThreshold: (e) => events.push(e) });
    const at = (fraction: number) => {
      pool.used.set("a", Math.round(fraction * 10 * GiB));
      return rules.evaluate("a").length;
    };
    expect(at(0.5)).toBe(0);
    expect(at(0.8)).toBe(1); // 80% of the limit: crossing
    expect(at(0.85)).toBe(0);
    expect(at(0.795)).toBe(0); // below, but within the hysteresis: not re-armed
    expect(at(0.81)).toBe(0);
    expect(at(0.789)).toBe(0); // re-armed
    expect(at(0.8)).toBe(1);
    expect(events).toHaveLength(2);
    expect(events[0]).toEqual({
      scope: "agent",
      agent: "a",
      usedBytes: 8 * GiB,
      limitBytes: 10 * GiB,
      threshold: 0.8,
    });
    expect(rules.agentStatus().find((s) => s.agent === "a")?.aboveSoftThreshold).toBe(true);
  });

  it("watches the pool at its own threshold", () => {
    const pool = fakePool(100 * GiB);
    const rules = new CapacityRules(pool, policy);
    pool.used.set("c", 84 * GiB);
    expect(rules.evaluate()).toEqual([]);
    pool.used.set("c", 86 * GiB);
    expect(rules.evaluate()).toEqual([
      { scope: "pool", usedBytes: 86 * GiB, limitBytes: 100 * GiB, threshold: 0.85 },
    ]);
    expect(rules.evaluate()).toEqual([]);
    expect(rules.poolStatus()).toMatchObject({
      totalBytes: 100 * GiB,
      freeBytes: 14 * GiB,
      reservedBytes: 30 * GiB,
      unusedReservedBytes: 30 * GiB,
      aboveSoftThreshold: true,
    });
    pool.used.set("c", 80 * GiB);
    expect(rules.evaluate()).toEqual([]);
    pool.used.set("c", 90 * GiB);
    expect(rules.evaluate()).toHaveLength(1);
  });

  it("keeps an agent's alarm state across a reload that does not change its rule", () => {
    const pool = fakePool(1000 * GiB);
    const rules = new CapacityRules(pool, policy);
    pool.used.set("a", 9 * GiB);
    expect(rules.evaluate("a")).toHaveLength(1);
    rules.configure(policy);
    expect(rules.evaluate("a")).toHaveLength(0);
    rules.configure(
      arbiterPolicy({
        agents: [{ name: "a", capacity: { limit: 10 * GiB, softThreshold: 0.95 } }],
        volumes: [],
      }),
    );
    expect(rules.evaluate("a")).toHaveLength(0); // 95% of 10 GiB not reached: a new alarm
    pool.used.set("a", 9.5 * GiB);
    expect(rules.evaluate("a")).toHaveLength(1);
  });
});
