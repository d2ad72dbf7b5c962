import { describe, expect, it } from "vitest";
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import { MemoryVolume } from "./memory-volume.js";

describe("MemoryVolume", () => {
  it("reads back what was written and zeros elsewhere", async () => {
    const v = new MemoryVolume({ blocks: 16 });
    await v.write(2, Buffer.alloc(1024, 7));
    expect(
      (await v.read(1, 4)).equals(
        Buffer.concat([Buffer.alloc(512), Buffer.alloc(1024, 7), Buffer.alloc(512)]),
      ),
    ).toBe(true);
    expect(v.mappedBlocks).toBe(2);
  });

  it("does not keep a reference to the caller's buffer", async () => {
    const v = new MemoryVolume({ blocks: 4 });
    const data = Buffer.alloc(512, 1);
    await v.write(0, data);
    data.fill(2);
    expect(v.peek(0, 1).equals(Buffer.alloc(512, 1))).toBe(true);
  });

  it("rejects out-of-range access with OUT_OF_RANGE and use after close with NOT_READY", async () => {
    const v = new MemoryVolume({ blocks: 4 });
    await expect(v.read(3, 2)).rejects.toMatchObject({ code: StorageErrorCode.OutOfRange });
    await v.close();
    await expect(v.read(0, 1)).rejects.toMatchObject({ code: StorageErrorCode.NotReady });
  });

  it("makes flush and FUA observable, and loses volatile writes on crash", async () => {
    const v = new MemoryVolume({ blocks: 8, trackDurability: true });
    await v.write(0, Buffer.alloc(512, 1));
    await v.write(1, Buffer.alloc(512, 2), { fua: true });
    expect(v.fuaWriteCount).toBe(1);
    expect(
      v.readDurable(0, 2).equals(Buffer.concat([Buffer.alloc(512), Buffer.alloc(512, 2)])),
    ).toBe(true);
    await v.flush();
    await v.write(2, Buffer.alloc(512, 3));
    await v.unmap(0, 1);
    v.crash();
    expect(
      v
        .peek(0, 3)
        .equals(Buffer.concat([Buffer.alloc(512, 1), Buffer.alloc(512, 2), Buffer.alloc(512)])),
    ).toBe(true);
    expect(v.flushCount).toBe(1);
  });

  it("reports extents of equal provisioning status", async () => {
    const v = new MemoryVolume({ blocks: 10 });
    await v.write(3, Buffer.alloc(1024, 1));
    expect(await v.blockStatus(0)).toEqual({ mapped: false, blocks: 3 });
    expect(await v.blockStatus(3)).toEqual({ mapped: true, blocks: 2 });
    expect(await v.blockStatus(5)).toEqual({ mapped: false, blocks: 5 });
  });

  it("fails the next call of an operation on demand, and records calls", async () => {
    const v = new MemoryVolume({ blocks: 4 });
    const err = new StorageError(StorageErrorCode.PoolFull, "full");
    v.failNext("write", err);
    await expect(v.write(0, Buffer.alloc(512))).rejects.toBe(err);
    await v.write(0, Buffer.alloc(512));
    expect(v.calls).toEqual([
      { op: "write", lba: 0, blocks: 1, fua: false },
      { op: "write", lba: 0, blocks: 1, fua: false },
    ]);
  });

  it("resizes", async () => {
    const v = new MemoryVolume({ blocks: 4 });
    await v.write(3, Buffer.alloc(512, 1));
    v.resize(2);
    expect(v.blockCount()).toBe(2);
    v.resize(4);
    expect(v.peek(3, 1).equals(Buffer.alloc(512))).toBe(true);
  });
});
