import { describe, expect, it } from "vitest";
import { StorageError, StorageErrorCode } from "../volume/errors.js";
import type { BlockStatus, Volume, WriteOptions } from "../volume/volume.js";
import { ManualClock } from "./clock.js";
import { ArbiterFilter } from "./filter.js";
import { arbiterPolicy } from "./policy.js";
import { ArbiterAbortError, IoScheduler } from "./scheduler.js";

const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/** A volume that records calls; optional members on request. */
class FakeVolume implements Volume {
  readonly id = "id-1";
  readonly name = "fake";
  readonly blockSize = 512;
  readonly calls: string[] = [];
  readonly physicalBlockSize?: number;
  readonly atomicWriteMaxBlocks?: number;
  readonly writeAtomic?: (lba: number, data: Buffer, options?: WriteOptions) => Promise<void>;
  readonly copyFrom?: (
    source: Volume,
    sourceLba: number,
    lba: number,
    blocks: number,
  ) => Promise<boolean>;
  failNext: StorageError | undefined;

  constructor(full = false) {
    if (full) {
      this.physicalBlockSize = 4096;
      this.atomicWriteMaxBlocks = 8;
      this.writeAtomic = async (lba, data) => this.outcome(`atomic ${lba} ${data.length}`);
      this.copyFrom = async (source, sourceLba, lba, blocks) => {
        this.outcome(`copy ${source.name} ${sourceLba} ${lba} ${blocks}`);
        return true;
      };
    }
  }
  blockCount(): number {
    return 64;
  }
  private outcome(call: string): void {
    this.calls.push(call);
    const failure = this.failNext;
    this.failNext = undefined;
    if (failure !== undefined) throw failure;
  }
  async read(lba: number, blocks: number): Promise<Buffer> {
    this.outcome(`read ${lba} ${blocks}`);
    return Buffer.alloc(blocks * 512, lba);
  }
  async write(lba: number, data: Buffer, options?: WriteOptions): Promise<void> {
    this.outcome(`write ${lba} ${data.length}${options?.fua ? " fua" : ""}`);
  }
  async flush(): Promise<void> {
    this.outcome("flush");
  }
  async unmap(lba: number, blocks: number): Promise<void> {
    this.outcome(`unmap ${lba} ${blocks}`);
  }
  async blockStatus(lba: number): Promise<BlockStatus> {
    this.outcome(`status ${lba}`);
    return { mapped: true, blocks: 64 - lba };
  }
  async close(): Promise<void> {
    this.outcome("close");
  }
}

function setup(full = false, policy = arbiterPolicy({ agents: [], volumes: [] })) {
  const clock = new ManualClock();
  const scheduler = new IoScheduler({ clock, timers: clock, policy });
  const inner = new FakeVolume(full);
  const filter = new ArbiterFilter(inner, scheduler.channel("a", 5, "fake"));
  return { clock, scheduler, inner, filter };
}

describe("ArbiterFilter", () => {
  it("forwards every call and its outcome, accounting each in the channel's demand", async () => {
    const { inner, filter, scheduler } = setup();
    expect(filter.id).toBe("id-1");
    expect(filter.blockCount()).toBe(64);
    expect((await filter.read(2, 3)).length).toBe(1536);
    await filter.write(1, Buffer.alloc(1024), { fua: true });
    await filter.flush();
    await filter.unmap(4, 2);
    expect(await filter.blockStatus(10)).toEqual({ mapped: true, blocks: 54 });
    expect(inner.calls).toEqual([
      "read 2 3",
      "write 1 1024 fua",
      "flush",
      "unmap 4 2",
      "status 10",
    ]);
    const t = filter.handle.demand.totals;
    expect(t).toMatchObject({
      readOps: 1,
      readBytes: 1536,
      writeOps: 1,
      writeBytes: 1024,
      otherOps: 3,
    });
    expect(scheduler.demand.agent("a").totals.readOps).toBe(1);
    inner.failNext = new StorageError(StorageErrorCode.MediumError, "bad", 2);
    await expect(filter.read(2, 1)).rejects.toMatchObject({ code: "MEDIUM_ERROR" });
    expect(t.errors).toBe(1);
  });

  it("has the optional members exactly when the inner volume has them", async () => {
    const plain = setup(false).filter;
    expect(plain.writeAtomic).toBeUndefined();
    expect(plain.copyFrom).toBeUndefined();
    expect(plain.atomicWriteMaxBlocks).toBeUndefined();
    expect(plain.physicalBlockSize).toBeUndefined();

    const { filter, inner } = setup(true);
    expect(filter.atomicWriteMaxBlocks).toBe(8);
    expect(filter.physicalBlockSize).toBe(4096);
    await filter.writeAtomic!(3, Buffer.alloc(2048));
    expect(await filter.copyFrom!(inner, 0, 8, 4)).toBe(true);
    expect(inner.calls).toEqual(["atomic 3 2048", "copy fake 0 8 4"]);
    // Both count as writes: the copy for its logical length.
    expect(filter.handle.demand.totals).toMatchObject({ writeOps: 2, writeBytes: 2048 + 2048 });
  });

  it("makes commands over a limit wait, and an abort removes a waiting one", async () => {
    // 1 read per second, burst 1 s: the first read goes, the second is due at 1 s, the third
    // at 2 s (an abort refunds tokens to later arrivals; it does not move due times).
    const { clock, inner, filter } = setup(
      false,
      arbiterPolicy({ agents: [{ name: "a", limits: { readIops: 1 } }], volumes: [] }),
    );
    await filter.read(0, 1);
    const ac = new AbortController();
    const waiting = filter.read(1, 1, { signal: ac.signal });
    const later = filter.read(2, 1);
    await settle();
    expect(inner.calls).toEqual(["read 0 1"]);
    ac.abort();
    await expect(waiting).rejects.toBeInstanceOf(ArbiterAbortError);
    clock.advance(1999);
    await settle();
    expect(inner.calls).toEqual(["read 0 1"]);
    clock.advance(1);
    await later;
    expect(inner.calls).toEqual(["read 0 1", "read 2 1"]);
  });

  it("aborts its own waiting commands, and refuses calls once closed", async () => {
    const { inner, filter, scheduler } = setup(
      false,
      arbiterPolicy({ agents: [{ name: "a", limits: { writeIops: 1 } }], volumes: [] }),
    );
    const other = new ArbiterFilter(inner, scheduler.channel("a", 5, "fake"));
    await filter.write(0, Buffer.alloc(512));
    const mine = filter.write(1, Buffer.alloc(512));
    const theirs = other.write(2, Buffer.alloc(512));
    expect(filter.abortQueued("LUN RESET")).toBe(1);
    await expect(mine).rejects.toBeInstanceOf(ArbiterAbortError);
    await filter.close();
    await expect(filter.read(0, 1)).rejects.toMatchObject({ code: "NOT_READY" });
    await expect(filter.flush()).rejects.toMatchObject({ code: "NOT_READY" });
    expect(inner.calls).not.toContain("close");
    expect(scheduler.abortQueued({})).toBe(1);
    await expect(theirs).rejects.toBeInstanceOf(ArbiterAbortError);
  });

  it("reserves a write's turn before its data: the write with that signal then goes at once", async () => {
    // write_iops 1, burst 1 s: the reservation takes the one token; the write it admits takes
    // none and goes at once, while a write without the signal waits for the next token (1 s).
    const { clock, inner, filter } = setup(
      false,
      arbiterPolicy({ agents: [{ name: "a", limits: { writeIops: 1 } }], volumes: [] }),
    );
    const ac = new AbortController();
    const release = await filter.reserveWrite(8192, ac.signal);
    const plain = filter.write(0, Buffer.alloc(512));
    await filter.write(1, Buffer.alloc(8192), { signal: ac.signal });
    expect(inner.calls).toEqual(["write 1 8192"]);
    release.release();
    clock.advance(1000);
    await plain;
    expect(inner.calls).toEqual(["write 1 8192", "write 0 512"]);
    // Closed: no reservation.
    await filter.close();
    await expect(filter.reserveWrite(512, new AbortController().signal)).rejects.toMatchObject({
      code: "NOT_READY",
    });
  });
});
