import { describe, expect, it } from "vitest";
import { StorageError } from "../volume/errors.js";
import { ManualClock } from "./clock.js";
import { type ArbiterPolicy, arbiterPolicy } from "./policy.js";
import { ArbiterAbortError, type ChannelHandle, IoScheduler } from "./scheduler.js";

/** Let every pending promise reaction run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

function policy(p: Partial<Parameters<typeof arbiterPolicy>[0]>): ArbiterPolicy {
  return arbiterPolicy({ agents: [], volumes: [], ...p });
}

/** A volume command taking `ms` of (manual) time. */
function service(clock: ManualClock, ms: number): () => Promise<void> {
  return () => new Promise<void>((resolve) => clock.set(resolve, ms));
}

/**
 * A client keeping `depth` commands of `bytes` outstanding on `handle` until `stopAt`;
 * counts completed commands and bytes.
 */
function client(
  handle: ChannelHandle,
  depth: number,
  bytes: number,
  fn: () => Promise<void>,
  stopAt: () => number,
  clock: ManualClock,
  kind: "read" | "write" = "read",
) {
  const stats = { ops: 0, bytes: 0, errors: 0 };
  const loop = async () => {
    while (clock.now() < stopAt()) {
      try {
        await handle.run(kind, bytes, fn);
        if (clock.now() <= stopAt()) {
          stats.ops++;
          stats.bytes += bytes;
        }
      } catch {
        stats.errors++;
      }
    }
  };
  for (let i = 0; i < depth; i++) void loop();
  return stats;
}

/** Advance manual time to `until` in `step` ms steps, letting promises settle in between. */
async function runUntil(clock: ManualClock, until: number, step = 0.25): Promise<void> {
  while (clock.now() < until) {
    clock.advance(Math.min(step, until - clock.now()));
    await settle();
  }
}

describe("IoScheduler: fast path", () => {
  it("runs an unlimited command at once, synchronously, with no timer", async () => {
    const clock = new ManualClock();
    const s = new IoScheduler({ clock, timers: clock });
    const h = s.channel("a", 1, "v");
    let ran = false;
    const p = h.run("read", 4096, async () => {
      ran = true;
      return 42;
    });
    expect(ran).toBe(true);
    expect(s.inFlight).toBe(1);
    expect(clock.timerCount).toBe(0);
    expect(await p).toBe(42);
    expect(s.inFlight).toBe(0);
    expect(h.demand.totals.readOps).toBe(1);
    expect(h.demand.totals.readBytes).toBe(4096);
    expect(s.demand.agent("a").totals.readOps).toBe(1);
  });

  it("passes failures through, counting them, and a synchronous throw as a rejection", async () => {
    const clock = new ManualClock();
    const s = new IoScheduler({ clock, timers: clock });
    const h = s.channel("a", 1, "v");
    const boom = new Error("boom");
    await expect(h.run("write", 10, () => Promise.reject(boom))).rejects.toBe(boom);
    await expect(
      h.run("write", 10, () => {
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(h.demand.totals.errors).toBe(2);
    expect(s.inFlight).toBe(0);
  });

  it("still takes the fast path when a limit has tokens left", async () => {
    const clock = new ManualClock();
    const s = new IoScheduler({
      clock,
      timers: clock,
      policy: policy({ agents: [{ name: "a", limits: { readIops: 10 } }] }),
    });
    let ran = 0;
    const h = s.channel("a", 1, "v");
    for (let i = 0; i < 10; i++) void h.run("read", 512, async () => void ran++);
    expect(ran).toBe(10); // the burst: 10 commands (1 s of 10 IOPS)
    void h.run("read", 512, async () => void ran++);
    expect(ran).toBe(10);
    expect(s.throttledCount).toBe(1);
    clock.advance(100); // 1 / 10 IOPS = 100 ms
    await settle();
    expect(ran).toBe(11);
  });
});

describe("IoScheduler: speed limits", () => {
  it("holds an agent to 100 read IOPS over 10 s, never failing a command", async () => {
    // Limit 100 IOPS, burst 1 s: over 10 s at most 100 * 10 + 100 = 1100 commands complete.
    // Service time 1 ms, 8 outstanding: without the limit it would do 8000/s.
    const clock = new ManualClock();
    const s = new IoScheduler({
      clock,
      timers: clock,
      policy: policy({ agents: [{ name: "a", limits: { readIops: 100 } }] }),
    });
    const h = s.channel("a", 1, "v");
    let stop = 10_000;
    const stats = client(h, 8, 4096, service(clock, 1), () => stop, clock);
    await runUntil(clock, 10_000, 1);
    stop = 0;
    expect(stats.errors).toBe(0);
    expect(Math.abs(stats.ops - 1100) / 1100).toBeLessThan(0.01);
    // The demand series saw the same: 100/s in the last complete 10 s... minus the first burst.
    const w = h.demand.window(1, clock.now());
    expect(w.readIops).toBeGreaterThanOrEqual(99);
    expect(w.readIops).toBeLessThanOrEqual(101);
    expect(w.avgQueued).toBeGreaterThan(6); // 8 outstanding, ~1 in the volume at a time
  });

  it("holds 20 MB/s of writes within 1% over 10 s with a half-second burst", async () => {
    // 64 KiB writes, 4 outstanding, 0.2 ms each. 20e6 B/s * 10 s + burst 0.5 s * 20e6 = 210e6.
    const clock = new ManualClock();
    const s = new IoScheduler({
      clock,
      timers: clock,
      policy: policy({ agents: [{ name: "a", limits: { writeBps: 20e6, burst: 0.5 } }] }),
    });
    const h = s.channel("a", 1, "v");
    let stop = 10_000;
    const stats = client(h, 4, 65536, service(clock, 0.2), () => stop, clock, "write");
    await runUntil(clock, 10_000, 1);
    stop = 0;
    expect(Math.abs(stats.bytes - 210e6) / 210e6).toBeLessThan(0.01);
  });

  it("shares a volume limit between the agents that use it", async () => {
    // Volume v: 200 IOPS total. Two agents, 4 outstanding each: together at most 200/s.
    const clock = new ManualClock();
    const s = new IoScheduler({
      clock,
      timers: clock,
      policy: policy({ volumes: [{ name: "v", limits: { iops: 200 } }] }),
    });
    let stop = 5000;
    const a = client(s.channel("a", 1, "v"), 4, 512, service(clock, 1), () => stop, clock);
    const b = client(s.channel("b", 2, "v"), 4, 512, service(clock, 1), () => stop, clock);
    await runUntil(clock, 5000, 1);
    stop = 0;
    const total = a.ops + b.ops;
    expect(Math.abs(total - (200 * 5 + 200)) / 1200).toBeLessThan(0.02);
    expect(Math.abs(a.ops - b.ops) / total).toBeLessThan(0.05);
  });

  it("lets flush, unmap and block status through any limit", async () => {
    const clock = new ManualClock();
    const s = new IoScheduler({
      clock,
      timers: clock,
      policy: policy({ agents: [{ name: "a", limits: { iops: 1, readIops: 1, writeIops: 1 } }] }),
    });
    const h = s.channel("a", 1, "v");
    let ran = 0;
    for (let i = 0; i < 50; i++) void h.run("other", 0, async () => void ran++);
    expect(ran).toBe(50);
    expect(s.throttledCount).toBe(0);
  });

  it("applies a changed limit to later commands (live reload)", async () => {
    const clock = new ManualClock();
    const s = new IoScheduler({
      clock,
      timers: clock,
      policy: policy({ agents: [{ name: "a", limits: { readIops: 10, burst: 0.1 } }] }),
    });
    const h = s.channel("a", 1, "v");
    void h.run("read", 1, async () => undefined); // uses the 1-token burst
    let ran = 0;
    void h.run("read", 1, async () => void ran++);
    expect(ran).toBe(0); // waits 100 ms
    s.configure(policy({ agents: [{ name: "a" }] })); // limit removed
    void h.run("read", 1, async () => void ran++);
    expect(ran).toBe(1); // the new command runs at once; the waiting one keeps its due time
    clock.advance(100);
    await settle();
    expect(ran).toBe(2);
  });
});

describe("IoScheduler: fair shares", () => {
  async function twoAgents(weights: [number, number], opts: { balance?: "auto" | "off" } = {}) {
    // 4 commands in flight at most, 1 ms each: the server does 4000 commands/s. Both agents keep
    // 16 outstanding, so both are backlogged all the time.
    const clock = new ManualClock();
    const s = new IoScheduler({
      clock,
      timers: clock,
      concurrency: 4,
      policy: policy({
        agents: [
          { name: "heavy", weight: weights[0] },
          { name: "light", weight: weights[1] },
        ],
        pool: { balance: opts.balance ?? "off" },
      }),
    });
    return { clock, s };
  }

  it("divides a saturated server 3:1 by weight, then gives it all to the one left", async () => {
    const { clock, s } = await twoAgents([3, 1]);
    let stopHeavy = 5000;
    let stopLight = 10_000;
    const heavy = client(
      s.channel("heavy", 1, "v1"),
      16,
      65536,
      service(clock, 1),
      () => stopHeavy,
      clock,
    );
    const light = client(
      s.channel("light", 2, "v2"),
      16,
      65536,
      service(clock, 1),
      () => stopLight,
      clock,
    );
    await runUntil(clock, 5000, 1);
    const ratio = heavy.bytes / light.bytes;
    expect(Math.abs(ratio - 3) / 3).toBeLessThan(0.02);
    expect(heavy.ops + light.ops).toBeGreaterThan(0.99 * 4 * 5000);
    stopHeavy = 0;
    const before = light.ops;
    await runUntil(clock, 10_000, 1);
    stopLight = 0;
    // Alone, the light agent takes the whole server: ~4000 commands/s.
    expect((light.ops - before) / 5).toBeGreaterThan(0.98 * 4000);
    await runUntil(clock, 10_010, 1);
  });

  it("weighs cost in bytes: an agent of big commands does not crowd out one of small ones", async () => {
    const { clock, s } = await twoAgents([1, 1]);
    let stop = 5000;
    // "heavy" sends 1 MiB commands, "light" 4 KiB ones, equal weights: equal bytes + op cost.
    const big = client(
      s.channel("heavy", 1, "v1"),
      16,
      1 << 20,
      service(clock, 1),
      () => stop,
      clock,
    );
    const small = client(
      s.channel("light", 2, "v2"),
      16,
      4096,
      service(clock, 1),
      () => stop,
      clock,
    );
    await runUntil(clock, 5000, 1);
    stop = 0;
    const costBig = big.bytes + big.ops * 32 * 1024;
    const costSmall = small.bytes + small.ops * 32 * 1024;
    expect(Math.abs(costBig / costSmall - 1)).toBeLessThan(0.05);
    await runUntil(clock, 5010, 1);
  });

  it("does not queue below the budget: each agent gets what it asks", async () => {
    const { clock, s } = await twoAgents([3, 1]);
    let stop = 1000;
    const heavy = client(
      s.channel("heavy", 1, "v1"),
      1,
      4096,
      service(clock, 1),
      () => stop,
      clock,
    );
    const light = client(
      s.channel("light", 2, "v2"),
      2,
      4096,
      service(clock, 1),
      () => stop,
      clock,
    );
    await runUntil(clock, 1000, 1);
    stop = 0;
    expect(s.waiting).toBe(0);
    expect(light.ops / heavy.ops).toBeCloseTo(2, 1);
    await runUntil(clock, 1010, 1);
  });

  it("with balance: auto lends an idle agent's weight to the backed-up ones, within 4x", async () => {
    // Three agents of weight 1: "idle" sends nothing; "deep" keeps 32 outstanding, "shallow" 6.
    // Budget 4. Without balance both busy ones get 1/2 of the server. With balance, idle's
    // weight goes to them in proportion to weight x queue length, so deep gets more.
    const clock = new ManualClock();
    const s = new IoScheduler({
      clock,
      timers: clock,
      concurrency: 4,
      balanceIntervalMs: 500,
      policy: policy({
        agents: [{ name: "idle" }, { name: "deep" }, { name: "shallow" }],
        pool: { balance: "auto" },
      }),
    });
    let stop = 10_000;
    const deep = client(s.channel("deep", 1, "v"), 32, 4096, service(clock, 1), () => stop, clock);
    const shallow = client(
      s.channel("shallow", 2, "v"),
      6,
      4096,
      service(clock, 1),
      () => stop,
      clock,
    );
    await runUntil(clock, 10_000, 1);
    stop = 0;
    const weights = Object.fromEntries(s.agentSchedules().map((a) => [a.name, a.effectiveWeight]));
    expect(weights.idle).toBe(1);
    expect(weights.deep).toBeGreaterThan(1.5);
    expect(weights.deep).toBeLessThanOrEqual(4);
    expect(weights.shallow).toBeGreaterThanOrEqual(1);
    expect(weights.deep!).toBeGreaterThan(weights.shallow!);
    expect(deep.ops).toBeGreaterThan(shallow.ops * 1.2);
    await runUntil(clock, 10_010, 1);
  });

  it("counts responses being sent in the budget, so that weights hold when sending is the work", async () => {
    // The volume answers in 0.1 ms, then sending the response takes 1 ms, and only then does
    // the initiator send its next command (a fast volume, a busy socket). Budget 4. Without
    // `hold`, the volume part alone never fills the budget (at most 32 × 0.1 / 1.1 ≈ 3 in the
    // volume), nothing queues, and both agents get what they ask: 1:1. With it, commands being
    // sent count, the budget fills and the slots go 3:1.
    const { clock, s } = await twoAgents([3, 1]);
    let stop = 3000;
    const sender = (handle: ChannelHandle) => {
      const stats = { ops: 0 };
      const loop = async () => {
        while (clock.now() < stop) {
          await handle.run("read", 65536, service(clock, 0.1));
          // What the transport does once the volume answered: hold until the response is out.
          const release = handle.hold();
          await new Promise<void>((resolve) => clock.set(resolve, 1));
          release();
          if (clock.now() <= stop) stats.ops++;
        }
      };
      for (let i = 0; i < 16; i++) void loop();
      return stats;
    };
    const heavy = sender(s.channel("heavy", 1, "v1"));
    const light = sender(s.channel("light", 2, "v2"));
    let peak = 0;
    for (let t = 0.25; t <= 3000; t += 0.25) {
      clock.advance(0.25);
      await settle();
      peak = Math.max(peak, s.inFlight + s.sending);
    }
    stop = 0;
    // The budget, plus the commands whose volume part ended in the same step: between the
    // volume's answer and the hold their slot is free for an instant (in the server, each
    // completion's promise chain runs before the next completion, so that is one command).
    expect(peak).toBeLessThanOrEqual(4 + 4);
    expect(Math.abs(heavy.ops / light.ops - 3) / 3).toBeLessThan(0.05);
    // The server stays busy: 4 slots of 1.1 ms each, ~3600 commands/s.
    expect((heavy.ops + light.ops) / 3).toBeGreaterThan(0.9 * 3636);
    await runUntil(clock, 3010, 1);
    expect(s.sending).toBe(0);
  });

  it("hold never waits, counts in `sending`, and its release (once) lets a queued command go", async () => {
    const clock = new ManualClock();
    const s = new IoScheduler({ clock, timers: clock, concurrency: 1 });
    const h = s.channel("a", 1, "v");
    const release = h.hold();
    expect(s.sending).toBe(1);
    let ran = false;
    const p = h.run("read", 512, async () => {
      ran = true;
    });
    expect(ran).toBe(false);
    expect(s.waiting).toBe(1);
    release();
    release();
    expect(s.sending).toBe(0);
    expect(ran).toBe(true);
    await p;
    expect(s.inFlight).toBe(0);
    expect(s.hold(99)).toBeTypeOf("function"); // an unknown channel: counts nowhere
    expect(s.sending).toBe(0);
  });

  it("counts an agent's held responses only up to its weighted share while others queue", async () => {
    // A slow reader must not fill the budget with responses that only wait for its initiator.
    const { clock, s } = await twoAgents([3, 1]);
    const heavy = s.channel("heavy", 1, "v1");
    const light = s.channel("light", 2, "v2");
    // Nobody queues: holds count up to the whole budget (4).
    const releases = [light.hold(), light.hold(), light.hold(), light.hold()];
    expect(s.sending).toBe(4);
    const ran: string[] = [];
    const cmd = (who: string) => () => {
      ran.push(who);
      return new Promise<void>((resolve) => clock.set(resolve, 1));
    };
    const queued = [1, 2, 3, 4].map(() => heavy.run("read", 4096, cmd("heavy")));
    expect(s.waiting).toBe(4);
    // "heavy" queues: "light" (weight 1 of 4) counts at most 4 × 1/4 = 1 response from now on.
    const extra = light.hold();
    expect(s.sending).toBe(4);
    for (const r of releases) r();
    extra();
    expect(s.sending).toBe(0);
    expect(ran).toEqual(["heavy", "heavy", "heavy", "heavy"]);
    const again = [light.hold(), light.hold()];
    expect(s.sending).toBe(2); // nobody queues any more
    for (const r of again) r();
    clock.advance(1);
    await Promise.all(queued);
  });

  it("keeps weights as configured with balance off", async () => {
    const { clock, s } = await twoAgents([3, 1]);
    let stop = 3000;
    client(s.channel("heavy", 1, "v1"), 16, 4096, service(clock, 1), () => stop, clock);
    await runUntil(clock, 3000, 1);
    stop = 0;
    expect(s.agentSchedules().map((a) => a.effectiveWeight)).toEqual([3, 1]);
    await runUntil(clock, 3010, 1);
  });
});

describe("IoScheduler: aborts", () => {
  it("rejects a command whose signal was already aborted, without running it", async () => {
    const s = new IoScheduler();
    let ran = false;
    const ac = new AbortController();
    ac.abort("tmf");
    await expect(
      s.run(
        "a",
        1,
        "v",
        "read",
        1,
        async () => {
          ran = true;
        },
        ac.signal,
      ),
    ).rejects.toBeInstanceOf(ArbiterAbortError);
    expect(ran).toBe(false);
  });

  it("removes a command waiting for tokens, and gives its tokens back", async () => {
    // 10 IOPS, burst 0.1 s = 1 token. Command 1 takes it, command 2 is due at 100 ms, command 3
    // at 200 ms. Aborting 2 refunds its token: command 3 keeps its due time, and command 4,
    // which would have been due at 300 ms, is due at 200 ms too.
    const clock = new ManualClock();
    const s = new IoScheduler({
      clock,
      timers: clock,
      policy: policy({ agents: [{ name: "a", limits: { readIops: 10, burst: 0.1 } }] }),
    });
    const h = s.channel("a", 1, "v");
    const ran: number[] = [];
    await h.run("read", 1, async () => void ran.push(1));
    const ac = new AbortController();
    const second = h.run("read", 1, async () => void ran.push(2), ac.signal);
    const third = h.run("read", 1, async () => void ran.push(3));
    ac.abort(new Error("ABORT TASK"));
    const error = await second.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ArbiterAbortError);
    expect((error as Error).name).toBe("AbortError");
    expect(((error as Error).cause as Error).message).toBe("ABORT TASK");
    expect(s.throttledCount).toBe(1);
    expect(h.demand.totals.aborted).toBe(1);
    const fourth = h.run("read", 1, async () => void ran.push(4));
    clock.advance(199);
    await settle();
    expect(ran).toEqual([1]);
    clock.advance(1);
    await settle();
    expect(ran).toEqual([1, 3, 4]);
    await Promise.all([third, fourth]);
  });

  it("removes a command waiting for a share; abort after dispatch changes nothing", async () => {
    const clock = new ManualClock();
    const s = new IoScheduler({ clock, timers: clock, concurrency: 1 });
    const h = s.channel("a", 1, "v");
    const first = new AbortController();
    const running = h.run("read", 1, service(clock, 5), first.signal);
    const queued = new AbortController();
    let ran = false;
    const waiting = h.run(
      "read",
      1,
      async () => {
        ran = true;
      },
      queued.signal,
    );
    expect(s.waiting).toBe(1);
    queued.abort();
    first.abort();
    await expect(waiting).rejects.toBeInstanceOf(ArbiterAbortError);
    expect(s.waiting).toBe(0);
    clock.advance(5);
    await expect(running).resolves.toBeUndefined();
    expect(ran).toBe(false);
  });

  it("aborts by channel, tag or everything, and rejects with NotReady on close", async () => {
    const clock = new ManualClock();
    const s = new IoScheduler({ clock, timers: clock, concurrency: 1 });
    const h1 = s.channel("a", 1, "v");
    const h2 = s.channel("b", 2, "v");
    void h1.run("read", 1, service(clock, 10));
    const tagged = h1.run("read", 1, async () => 1, undefined, "nexus-1");
    const other = h1.run("read", 1, async () => 2, undefined, "nexus-2");
    const onTwo = h2.run("read", 1, async () => 3);
    const late = h2.run("read", 1, async () => 4);
    expect(h1.abortQueued("nexus-1")).toBe(1);
    await expect(tagged).rejects.toBeInstanceOf(ArbiterAbortError);
    expect(s.abortQueued({ channel: 1 })).toBe(1);
    await expect(other).rejects.toBeInstanceOf(ArbiterAbortError);
    expect(s.abortQueued({ agent: "b", volume: "v" }, "LUN RESET")).toBe(2);
    await expect(onTwo).rejects.toBeInstanceOf(ArbiterAbortError);
    await expect(late).rejects.toBeInstanceOf(ArbiterAbortError);

    const waiting = h2.run("read", 1, async () => 5);
    s.close();
    await expect(waiting).rejects.toBeInstanceOf(StorageError);
    await expect(h2.run("read", 1, async () => 6)).rejects.toMatchObject({ code: "NOT_READY" });
    expect(clock.timerCount).toBe(1); // only the running command's own service timer
  });
});

describe("IoScheduler: handles and status", () => {
  it("keeps one handle per channel, and reports configured agents", () => {
    const s = new IoScheduler({
      policy: policy({
        agents: [{ name: "b", weight: 2, limits: { readBps: 1000 } }, { name: "a" }],
      }),
    });
    const h = s.channel("a", 7, "v");
    expect(s.channel("a", 7, "v")).toBe(h);
    expect(s.channel("b", 7, "v")).not.toBe(h);
    expect(s.agentSchedules()).toEqual([
      { name: "a", weight: 1, effectiveWeight: 1, queued: 0, throttled: 0, inFlight: 0 },
      {
        name: "b",
        weight: 2,
        effectiveWeight: 2,
        limits: { readBps: 1000 },
        queued: 0,
        throttled: 0,
        inFlight: 0,
      },
    ]);
    s.dropChannel(7);
    expect([...s.demand.channels()]).toEqual([]);
    expect(() => new IoScheduler({ concurrency: 0 })).toThrow(RangeError);
  });

  it("takes its budget from the policy (pool.concurrency), and back when the policy drops it", async () => {
    const clock = new ManualClock();
    const s = new IoScheduler({ clock, timers: clock, concurrency: 3 });
    s.configure(policy({ pool: { concurrency: 1 } }));
    expect(s.budget).toBe(1);
    const h = s.channel("a", 1, "v");
    const started: number[] = [];
    const done = [1, 2, 3].map((i) =>
      h.run("read", 512, () => {
        started.push(i);
        return new Promise<void>((resolve) => clock.set(resolve, 1));
      }),
    );
    expect(started).toEqual([1]);
    // A reload without the key: the constructor's budget again, and the queued commands go.
    s.configure(policy({}));
    expect(s.budget).toBe(3);
    expect(started).toEqual([1, 2, 3]);
    clock.advance(1);
    await Promise.all(done);
  });
});

describe("IoScheduler: writes admitted before their data (ChannelHandle.admit)", () => {
  it("waits for a share, holds its place while the data comes, and the write goes within it", async () => {
    // Budget 1. A read runs for 5 ms; the write's admission waits behind it, then holds the
    // budget (a second read waits) until the write it admitted has run (3 ms).
    const clock = new ManualClock();
    const s = new IoScheduler({ clock, timers: clock, concurrency: 1 });
    const h = s.channel("a", 1, "v");
    const first = h.run("read", 512, service(clock, 5));
    const ac = new AbortController();
    let admitted = false;
    const admission = h.admit("write", 4096, ac.signal).then((release) => {
      admitted = true;
      return release;
    });
    await settle();
    expect(admitted).toBe(false);
    expect(s.waiting).toBe(1);
    clock.advance(5);
    await first;
    const release = await admission;
    expect(s.inFlight).toBe(1);
    // The data "arrives" for 10 ms: another command waits meanwhile.
    let readRan = false;
    const second = h.run("read", 512, async () => {
      readRan = true;
    });
    clock.advance(10);
    await settle();
    expect(readRan).toBe(false);
    // The write itself starts at once within the admitted place (no second wait).
    const write = h.run("write", 4096, service(clock, 3), ac.signal);
    await settle();
    expect(s.waiting).toBe(1);
    expect(s.inFlight).toBe(1);
    clock.advance(3);
    await write;
    await second;
    expect(readRan).toBe(true);
    release.release(); // after use: nothing
    expect(s.inFlight).toBe(0);
    // One write recorded, with its wait (5 ms) and its service from admission to the end.
    expect(h.demand.totals).toMatchObject({ writeOps: 1, writeBytes: 4096 });
  });

  it("takes the write's tokens once, at admission, and gives them back when not used", async () => {
    // write_iops 10, burst 0.1 s: one token. The admission takes it; the write it admits takes
    // none. A second admission is due at 100 ms; released unused (e.g. CHECK CONDITION before
    // the write), its token comes back: a write arriving then goes at once.
    const clock = new ManualClock();
    const s = new IoScheduler({
      clock,
      timers: clock,
      policy: policy({ agents: [{ name: "a", limits: { writeIops: 10, burst: 0.1 } }] }),
    });
    const h = s.channel("a", 1, "v");
    const a1 = new AbortController();
    const release1 = await h.admit("write", 512, a1.signal);
    await h.run("write", 512, async () => undefined, a1.signal);
    release1.release();
    expect(s.throttledCount).toBe(0);
    const a2 = new AbortController();
    const admission2 = h.admit("write", 512, a2.signal);
    expect(s.throttledCount).toBe(1);
    clock.advance(100);
    const release2 = await admission2;
    expect(s.inFlight).toBe(1);
    release2.release();
    expect(s.inFlight).toBe(0);
    let ran = false;
    await h.run("write", 512, async () => {
      ran = true;
    });
    expect(ran).toBe(true);
    expect(s.throttledCount).toBe(0);
  });

  it("an aborted signal removes a waiting admission, and gives back a granted one", async () => {
    const clock = new ManualClock();
    const s = new IoScheduler({ clock, timers: clock, concurrency: 1 });
    const h = s.channel("a", 1, "v");
    const granted = new AbortController();
    await h.admit("write", 512, granted.signal);
    expect(s.inFlight).toBe(1);
    const queued = new AbortController();
    const waiting = h.admit("write", 512, queued.signal);
    expect(s.waiting).toBe(1);
    queued.abort();
    await expect(waiting).rejects.toBeInstanceOf(ArbiterAbortError);
    expect(s.waiting).toBe(0);
    granted.abort();
    expect(s.inFlight).toBe(0);
    // The signal no longer admits anything: a run with it is rejected as aborted.
    await expect(h.run("write", 512, async () => undefined, granted.signal)).rejects.toBeInstanceOf(
      ArbiterAbortError,
    );
  });

  it("an admission is used only by a run of its channel and kind", async () => {
    const clock = new ManualClock();
    const s = new IoScheduler({ clock, timers: clock, concurrency: 1 });
    const h = s.channel("a", 1, "v");
    const other = s.channel("a", 2, "w");
    const ac = new AbortController();
    const release = await h.admit("write", 512, ac.signal);
    // A read with the same signal (COMPARE AND WRITE reads first) waits for a share as usual.
    let readRan = false;
    const read = h.run(
      "read",
      512,
      async () => {
        readRan = true;
      },
      ac.signal,
    );
    const elsewhere = other.run("write", 512, async () => 1, ac.signal);
    await settle();
    expect(readRan).toBe(false);
    expect(s.waiting).toBe(2);
    release.release();
    await read;
    await elsewhere;
    expect(readRan).toBe(true);
  });

  it("started() gives the place back to a write that has not come; it still goes at once", async () => {
    // Budget 1: the admitted write holds it. Its command was handed on but the write waits in
    // the SCSI layer (e.g. behind an overlapping COMPARE AND WRITE that needs a place itself):
    // started() frees the place, the queued read runs; the write then goes at once, no token.
    const clock = new ManualClock();
    const s = new IoScheduler({
      clock,
      timers: clock,
      concurrency: 1,
      policy: policy({ agents: [{ name: "a", limits: { writeIops: 10, burst: 0.1 } }] }),
    });
    const h = s.channel("a", 1, "v");
    const ac = new AbortController();
    const reservation = await h.admit("write", 512, ac.signal);
    let readRan = false;
    const read = h.run("read", 512, async () => {
      readRan = true;
    });
    await settle();
    expect(readRan).toBe(false);
    reservation.started();
    await read;
    expect(readRan).toBe(true);
    expect(s.inFlight).toBe(0);
    const write = h.run("write", 512, service(clock, 2), ac.signal);
    expect(s.inFlight).toBe(1);
    expect(s.throttledCount).toBe(0);
    clock.advance(2);
    await write;
    reservation.release();
    expect(s.inFlight).toBe(0);
    // Released after started() without use: the token comes back (the next write goes at once).
    const other = new AbortController();
    const admission = h.admit("write", 512, other.signal);
    clock.advance(100);
    const unused = await admission;
    unused.started();
    unused.release();
    let ran = false;
    await h.run("write", 512, async () => {
      ran = true;
    });
    expect(ran).toBe(true);
    expect(s.throttledCount).toBe(0);
  });
});
