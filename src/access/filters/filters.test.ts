import { describe, expect, it } from "vitest";
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import type { BlockStatus, Volume, WriteOptions } from "../../volume/volume.js";
import { newChannelCounters } from "../counters.js";
import { CountingFilter } from "./counting.js";
import { ReadOnlyFilter } from "./read-only.js";

/** An in-memory volume that records calls and can be told to fail the next one. */
class FakeVolume implements Volume {
  readonly id = "id-1";
  readonly name = "fake";
  readonly blockSize = 512;
  readonly calls: string[] = [];
  readonly data = Buffer.alloc(64 * 512);
  failNext: StorageError | undefined;
  closed = false;

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
    return Buffer.from(this.data.subarray(lba * 512, (lba + blocks) * 512));
  }
  async write(lba: number, data: Buffer, options?: WriteOptions): Promise<void> {
    this.outcome(`write ${lba} ${data.length}${options?.fua ? " fua" : ""}`);
    data.copy(this.data, lba * 512);
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
    this.closed = true;
  }
}

const ioError = () => new StorageError(StorageErrorCode.MediumError, "bad block", 3);

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  return promise.then(
    () => undefined,
    (e: unknown) => (e instanceof StorageError ? e.code : "not a StorageError"),
  );
}

describe("ReadOnlyFilter", () => {
  it("refuses write and unmap without reaching the volume", async () => {
    const inner = new FakeVolume();
    const ro = new ReadOnlyFilter(inner);
    expect(await codeOf(ro.write(0, Buffer.alloc(512)))).toBe(StorageErrorCode.WriteProtected);
    expect(await codeOf(ro.write(0, Buffer.alloc(512), { fua: true }))).toBe(
      StorageErrorCode.WriteProtected,
    );
    expect(await codeOf(ro.unmap(0, 8))).toBe(StorageErrorCode.WriteProtected);
    expect(inner.calls).toEqual([]);
  });

  it("forwards everything else unchanged", async () => {
    const inner = new FakeVolume();
    inner.data.fill(7, 512, 1024);
    const ro = new ReadOnlyFilter(inner);
    expect([ro.id, ro.name, ro.blockSize, ro.blockCount()]).toEqual(["id-1", "fake", 512, 64]);
    expect(await ro.read(1, 1)).toEqual(Buffer.alloc(512, 7));
    await ro.flush();
    expect(await ro.blockStatus(4)).toEqual({ mapped: true, blocks: 60 });
    inner.failNext = ioError();
    expect(await codeOf(ro.read(3, 1))).toBe(StorageErrorCode.MediumError);
    expect(inner.calls).toEqual(["read 1 1", "flush", "status 4", "read 3 1"]);
  });

  it("close does not close the shared volume", async () => {
    const inner = new FakeVolume();
    const ro = new ReadOnlyFilter(inner);
    await ro.close();
    expect(inner.closed).toBe(false);
    expect(await codeOf(ro.read(0, 1))).toBe(StorageErrorCode.NotReady);
  });
});

describe("CountingFilter", () => {
  it("counts completed reads and writes, in ops and bytes", async () => {
    const inner = new FakeVolume();
    const counters = newChannelCounters();
    const v = new CountingFilter(inner, counters);
    await v.write(0, Buffer.alloc(2048, 1));
    await v.write(8, Buffer.alloc(512, 2), { fua: true });
    expect(await v.read(0, 4)).toEqual(Buffer.alloc(2048, 1));
    await v.read(8, 1);
    await v.read(9, 3);
    await v.flush();
    await v.unmap(0, 4);
    await v.blockStatus(0);
    expect(counters).toEqual({
      commands: 0,
      readBytes: 2048 + 512 + 1536,
      writtenBytes: 2048 + 512,
      readOps: 3,
      writeOps: 2,
      errors: 0,
    });
    expect(inner.calls).toEqual([
      "write 0 2048",
      "write 8 512 fua",
      "read 0 4",
      "read 8 1",
      "read 9 3",
      "flush",
      "unmap 0 4",
      "status 0",
    ]);
  });

  it("counts an error when the inner volume rejects, and passes the error on", async () => {
    const inner = new FakeVolume();
    const counters = newChannelCounters();
    const v = new CountingFilter(inner, counters);
    for (const op of [
      () => v.read(0, 1),
      () => v.write(0, Buffer.alloc(512)),
      () => v.flush(),
      () => v.unmap(0, 1),
      () => v.blockStatus(0),
    ]) {
      const error = ioError();
      inner.failNext = error;
      await expect(op()).rejects.toBe(error);
    }
    expect(counters).toEqual({ ...newChannelCounters(), errors: 5 });
  });

  it("stacks under a read-only filter: refused writes never reach the counters", async () => {
    const inner = new FakeVolume();
    const counters = newChannelCounters();
    const v = new ReadOnlyFilter(new CountingFilter(inner, counters));
    expect(await codeOf(v.write(0, Buffer.alloc(512)))).toBe(StorageErrorCode.WriteProtected);
    await v.read(0, 2);
    expect(counters.writeOps + counters.errors).toBe(0);
    expect(counters.readBytes).toBe(1024);
  });

  it("close does not close the shared volume", async () => {
    const inner = new FakeVolume();
    const v = new CountingFilter(inner, newChannelCounters());
    await v.close();
    expect(inner.closed).toBe(false);
    expect(await codeOf(v.read(0, 1))).toBe(StorageErrorCode.NotReady);
  });
});

/** A FakeVolume with the optional members: atomic writes and copies by reference. */
class CapableVolume extends FakeVolume {
  readonly atomicWriteMaxBlocks = 16;
  copyResult = true;
  lastSource: Volume | undefined;
  async writeAtomic(lba: number, data: Buffer, options?: WriteOptions): Promise<void> {
    this.calls.push(`atomic ${lba} ${data.length}${options?.fua ? " fua" : ""}`);
    await this.write(lba, data, options);
  }
  async copyFrom(
    source: Volume,
    sourceLba: number,
    lba: number,
    blocks: number,
    options?: WriteOptions,
  ): Promise<boolean> {
    this.lastSource = source;
    this.calls.push(
      `copy ${source.name} ${sourceLba}->${lba} x${blocks}${options?.fua ? " fua" : ""}`,
    );
    const failure = this.failNext;
    this.failNext = undefined;
    if (failure !== undefined) throw failure;
    return this.copyResult;
  }
}

describe("optional members through the filters", () => {
  it("are absent when the inner volume lacks them", () => {
    for (const v of [
      new ReadOnlyFilter(new FakeVolume()),
      new CountingFilter(new FakeVolume(), newChannelCounters()),
    ]) {
      expect(v.atomicWriteMaxBlocks).toBeUndefined();
      expect(v.writeAtomic).toBeUndefined();
      expect(v.copyFrom).toBeUndefined();
    }
  });

  it("are absent for atomic writes when the inner volume reports 0 blocks", () => {
    const inner = Object.assign(new CapableVolume(), { atomicWriteMaxBlocks: 0 });
    const v = new CountingFilter(inner, newChannelCounters());
    expect(v.writeAtomic).toBeUndefined();
    expect(v.atomicWriteMaxBlocks ?? 0).toBe(0);
    expect(v.copyFrom).toBeDefined();
  });

  it("read-only: advertises them, refuses atomic writes and copies into it", async () => {
    const inner = new CapableVolume();
    const ro = new ReadOnlyFilter(inner);
    expect(ro.atomicWriteMaxBlocks).toBe(16);
    expect(await codeOf(ro.writeAtomic!(0, Buffer.alloc(512)))).toBe(
      StorageErrorCode.WriteProtected,
    );
    expect(await codeOf(ro.copyFrom!(inner, 0, 8, 4))).toBe(StorageErrorCode.WriteProtected);
    expect(inner.calls).toEqual([]);
    await ro.close();
    expect(await codeOf(ro.writeAtomic!(0, Buffer.alloc(512)))).toBe(StorageErrorCode.NotReady);
    expect(await codeOf(ro.copyFrom!(inner, 0, 8, 4))).toBe(StorageErrorCode.NotReady);
  });

  it("read-only as the source of a copy: passed on as is (a copy from it is a read)", async () => {
    const source = new ReadOnlyFilter(new CapableVolume());
    const dst = new CapableVolume();
    const v = new CountingFilter(dst, newChannelCounters());
    expect(await v.copyFrom!(source, 1, 2, 3)).toBe(true);
    expect(dst.calls).toEqual(["copy fake 1->2 x3"]);
    expect(dst.lastSource).toBe(source);
  });

  it("counting: forwards atomic writes and counts them as writes", async () => {
    const inner = new CapableVolume();
    const counters = newChannelCounters();
    const v = new CountingFilter(inner, counters);
    expect(v.atomicWriteMaxBlocks).toBe(16);
    await v.writeAtomic!(2, Buffer.alloc(3 * 512, 5), { fua: true });
    expect(await v.read(2, 3)).toEqual(Buffer.alloc(3 * 512, 5));
    const error = ioError();
    inner.failNext = error;
    await expect(v.writeAtomic!(0, Buffer.alloc(512))).rejects.toBe(error);
    expect(inner.calls).toEqual([
      "atomic 2 1536 fua",
      "write 2 1536 fua",
      "read 2 3",
      "atomic 0 512",
      "write 0 512", // where CapableVolume's atomic write fails
    ]);
    expect(counters).toEqual({
      ...newChannelCounters(),
      writeOps: 1,
      writtenBytes: 1536,
      readOps: 1,
      readBytes: 1536,
      errors: 1,
    });
  });

  it("counting: forwards copies, counting those done as writes, declined ones not at all", async () => {
    const inner = new CapableVolume();
    const counters = newChannelCounters();
    const v = new CountingFilter(inner, counters);
    const source = new FakeVolume();
    expect(await v.copyFrom!(source, 0, 8, 4, { fua: true })).toBe(true);
    inner.copyResult = false;
    expect(await v.copyFrom!(v, 0, 8, 4)).toBe(false);
    expect(inner.lastSource).toBe(v); // the source is passed on unchanged
    const error = ioError();
    inner.failNext = error;
    await expect(v.copyFrom!(source, 0, 8, 4)).rejects.toBe(error);
    expect(inner.calls).toEqual([
      "copy fake 0->8 x4 fua",
      "copy fake 0->8 x4",
      "copy fake 0->8 x4",
    ]);
    expect(counters).toEqual({
      ...newChannelCounters(),
      writeOps: 1,
      writtenBytes: 2048,
      errors: 1,
    });
    await v.close();
    expect(await codeOf(v.copyFrom!(source, 0, 8, 4))).toBe(StorageErrorCode.NotReady);
    expect(await codeOf(v.writeAtomic!(0, Buffer.alloc(512)))).toBe(StorageErrorCode.NotReady);
  });

  it("stack like the server's: read-only under counting refuses and counts an error", async () => {
    const inner = new CapableVolume();
    const counters = newChannelCounters();
    const v = new CountingFilter(new ReadOnlyFilter(inner), counters);
    expect(v.atomicWriteMaxBlocks).toBe(16);
    expect(await codeOf(v.writeAtomic!(0, Buffer.alloc(512)))).toBe(
      StorageErrorCode.WriteProtected,
    );
    expect(await codeOf(v.copyFrom!(inner, 0, 1, 1))).toBe(StorageErrorCode.WriteProtected);
    expect(inner.calls).toEqual([]);
    expect(counters).toEqual({ ...newChannelCounters(), errors: 2 });
  });
});
