import { describe, expect, it } from "vitest";
import type { BlockStatus, Volume } from "../volume/volume.js";
import { Arbiter } from "./arbiter.js";
import { ManualClock } from "./clock.js";
import { arbiterPolicy } from "./policy.js";
import { ArbiterAbortError } from "./scheduler.js";

const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

const volume: Volume = {
  id: "id",
  name: "v",
  blockSize: 512,
  blockCount: () => 100,
  read: async (_lba, blocks) => Buffer.alloc(blocks * 512),
  write: async () => undefined,
  flush: async () => undefined,
  unmap: async () => undefined,
  blockStatus: async (): Promise<BlockStatus> => ({ mapped: false, blocks: 100 }),
  close: async () => undefined,
};

describe("Arbiter", () => {
  it("wraps channels' volumes, applies a reload live, and drops channels", async () => {
    const clock = new ManualClock();
    const arbiter = new Arbiter({
      policy: arbiterPolicy({ agents: [{ name: "a" }], volumes: [{ name: "v" }] }),
      clock,
      timers: clock,
      concurrency: 8,
    });
    const filter = arbiter.filter(volume, { agent: "a", channel: 1, volume: "v" });
    expect(arbiter.scheduler.budget).toBe(8);
    for (let i = 0; i < 20; i++) await filter.read(0, 1); // unlimited: all at once
    expect(clock.timerCount).toBe(0);

    // Reload: 10 reads/s with a 0.1 s burst. One read goes, the next waits 100 ms.
    arbiter.configure(
      arbiterPolicy({
        agents: [{ name: "a", limits: { readIops: 10, burst: 0.1 } }],
        volumes: [{ name: "v" }],
      }),
    );
    await filter.read(0, 1);
    let done = false;
    const waiting = filter.read(0, 1).then(() => {
      done = true;
    });
    await settle();
    expect(done).toBe(false);
    clock.advance(100);
    await waiting;
    expect(done).toBe(true);

    // Dropping the channel aborts what still waits on it, and forgets its series.
    const aborted = filter.read(0, 1);
    arbiter.dropChannel(1);
    await expect(aborted).rejects.toBeInstanceOf(ArbiterAbortError);
    expect(arbiter.statusJson().channels).toEqual([]);
    expect(arbiter.statusJson().agents[0]?.totals.readOps).toBe(22);
    arbiter.close();
    await expect(filter.read(0, 1)).rejects.toMatchObject({ code: "NOT_READY" });
  });
});
