import { randomBytes } from "node:crypto";
import {
  appendFileSync,
  existsSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { newChannelCounters } from "../access/counters.js";
import { CountingFilter } from "../access/filters/counting.js";
import { ReadOnlyFilter } from "../access/filters/read-only.js";
import { masterKeyFromBytes } from "../crypto/index.js";
import { StorageError, StorageErrorCode } from "../volume/errors.js";
import { FILE_HEADER_BYTES, RECORD_HEADER_BYTES } from "./container/index.js";
import { Pool } from "./pool.js";
import { pattern, type TempPool, tempPool } from "./testing/helpers.js";

const G = 4096;
const MiB = 1024 * 1024;

let t: TempPool | undefined;
afterEach(async () => {
  await t?.cleanup();
  t = undefined;
});

async function setup(options: Parameters<typeof tempPool>[0] = {}): Promise<TempPool> {
  t = await tempPool(options);
  return t;
}

function containerFiles(dir: string): string[] {
  const d = join(dir, "pool", "devices", "0", "containers");
  return readdirSync(d)
    .filter((n) => n.endsWith(".sxc"))
    .map((n) => join(d, n));
}

async function rejection(p: Promise<unknown>): Promise<StorageError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(StorageError);
  return e as StorageError;
}

describe("Pool volumes: reads and writes", () => {
  it("round-trips data at 4096-byte blocks; unwritten blocks read as zeros", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 64 * MiB, blockSize: 4096 });
    expect(v.physicalBlockSize).toBe(G);
    expect(v.blockCount()).toBe((64 * MiB) / 4096);
    const data = pattern("a", 256 * 1024);
    await v.write(10, data);
    expect((await v.read(10, 64)).equals(data)).toBe(true);
    expect((await v.read(0, 10)).equals(Buffer.alloc(10 * G))).toBe(true);
    const around = await v.read(8, 68);
    expect(around.subarray(2 * G, 66 * G).equals(data)).toBe(true);
    expect(around.subarray(0, 2 * G).equals(Buffer.alloc(2 * G))).toBe(true);
    // Overwrite part of it.
    await v.write(20, pattern("b", 4 * G), { fua: true });
    const expected = Buffer.from(data);
    pattern("b", 4 * G).copy(expected, 10 * G);
    expect((await v.read(10, 64)).equals(expected)).toBe(true);
  });

  it("round-trips data at 512-byte blocks, with unaligned read-modify-writes", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 8 * MiB, blockSize: 512 });
    const model = Buffer.alloc(64 * 1024);
    const put = async (lba: number, data: Buffer) => {
      await v.write(lba, data);
      data.copy(model, lba * 512);
    };
    await put(0, pattern("base", 64 * 1024));
    await put(3, pattern("x", 5 * 512)); // inside grain 0
    await put(7, pattern("y", 10 * 512)); // grain 0 tail, grain 1 whole... and into grain 2
    await put(31, pattern("z", 512)); // last sector of grain 3
    await put(45, pattern("w", 40 * 512)); // partial head, whole grains, partial tail
    expect((await v.read(0, 128)).equals(model)).toBe(true);
    for (const [lba, n] of [
      [1, 1],
      [5, 9],
      [30, 3],
      [44, 50],
    ] as const) {
      expect((await v.read(lba, n)).equals(model.subarray(lba * 512, (lba + n) * 512))).toBe(true);
    }
    // A never-written grain with one sector written reads zeros around it.
    await v.write(1000, pattern("lone", 512));
    const grain = await v.read(1000 - (1000 % 8), 8);
    expect(grain.subarray(0, 0).length).toBe(0);
    expect(grain.subarray(0, 512 * (1000 % 8)).equals(Buffer.alloc(512 * (1000 % 8)))).toBe(true);
    expect(
      grain.subarray(512 * (1000 % 8), 512 * ((1000 % 8) + 1)).equals(pattern("lone", 512)),
    ).toBe(true);
  });

  it("serializes concurrent read-modify-writes of one grain: 8 sector writes all land", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 8 * MiB, blockSize: 512 });
    await v.write(16, pattern("old", G));
    for (let round = 0; round < 5; round++) {
      await Promise.all(
        Array.from({ length: 8 }, (_, i) => v.write(16 + i, pattern(`s${round}.${i}`, 512))),
      );
      const got = await v.read(16, 8);
      for (let i = 0; i < 8; i++) {
        expect(got.subarray(i * 512, (i + 1) * 512).equals(pattern(`s${round}.${i}`, 512))).toBe(
          true,
        );
      }
    }
  });

  it("lands overlapping unaligned writes issued at once in call order (the grain range locks)", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 8 * MiB, blockSize: 512 });
    const sectors = 64; // eight grains
    const model = Buffer.alloc(sectors * 512);
    let seed = 11;
    const next = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 6; round++) {
      const writes = Array.from({ length: 12 }, (_, k) => {
        const lba = next(sectors - 1);
        const blocks = 1 + next(Math.min(20, sectors - lba));
        return { lba, data: pattern(`r${round}.${k}`, blocks * 512) };
      });
      await Promise.all(writes.map((w) => v.write(w.lba, w.data)));
      for (const w of writes) w.data.copy(model, w.lba * 512);
      expect((await v.read(0, sectors)).equals(model)).toBe(true);
    }
  });

  it("rejects out-of-range I/O with OutOfRange and partial blocks as Internal", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: MiB, blockSize: 4096 });
    expect((await rejection(v.read(256, 1))).code).toBe(StorageErrorCode.OutOfRange);
    expect((await rejection(v.write(255, Buffer.alloc(2 * G)))).code).toBe(
      StorageErrorCode.OutOfRange,
    );
    expect((await rejection(v.unmap(250, 7))).code).toBe(StorageErrorCode.OutOfRange);
    expect((await rejection(v.write(0, Buffer.alloc(100)))).code).toBe(StorageErrorCode.Internal);
  });

  it("writeAtomic writes up to 1 MiB and refuses more", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 8 * MiB, blockSize: 512 });
    expect(v.atomicWriteMaxBlocks).toBe(2048);
    const data = pattern("atomic", MiB);
    await v.writeAtomic(3, data, { fua: true });
    expect((await v.read(3, 2048)).equals(data)).toBe(true);
    expect((await rejection(v.writeAtomic(0, Buffer.alloc(MiB + 512)))).code).toBe(
      StorageErrorCode.Internal,
    );
  });
});

describe("Pool volumes: thin provisioning and dedup", () => {
  it("stores nothing for zeros; unmap reads zeros and reports deallocated extents", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    await v.write(0, Buffer.alloc(MiB));
    await pool.applyJournal();
    expect(pool.usage().pool.physicalBytes).toBe(0);
    expect(pool.usage().pool.logicalBytes).toBe(0);
    expect(await v.blockStatus(0)).toEqual({ mapped: false, blocks: v.blockCount() });

    await v.write(8, pattern("d", 16 * G));
    expect(await v.blockStatus(0)).toEqual({ mapped: false, blocks: 8 });
    expect(await v.blockStatus(8)).toEqual({ mapped: true, blocks: 16 });
    expect(await v.blockStatus(12)).toEqual({ mapped: true, blocks: 12 });
    await v.unmap(12, 4);
    expect((await v.read(12, 4)).equals(Buffer.alloc(4 * G))).toBe(true);
    expect(await v.blockStatus(8)).toEqual({ mapped: true, blocks: 4 });
    expect(await v.blockStatus(12)).toEqual({ mapped: false, blocks: 4 });
    await pool.applyJournal();
    const u = pool.usage().volumes.find((x) => x.name === "v")!;
    expect(u.logicalBytes).toBe(12 * G);
    expect(u.provisionedBytes).toBe(16 * MiB);
  });

  it("unmaps partial grains of a 512-byte volume by writing zeros into them", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 8 * MiB, blockSize: 512 });
    const data = pattern("p", 4 * G);
    await v.write(0, data);
    await v.unmap(4, 20); // half of grain 0, all of grain 1, all but the last 0 of grain 2
    const expected = Buffer.from(data);
    expected.fill(0, 4 * 512, 24 * 512);
    expect((await v.read(0, 32)).equals(expected)).toBe(true);
    expect(await v.blockStatus(8)).toEqual({ mapped: false, blocks: 16 });
    expect(await v.blockStatus(0)).toEqual({ mapped: true, blocks: 8 });
    await v.unmap(0, 4); // grain 0 now all zeros: a hole
    expect(await v.blockStatus(0)).toEqual({ mapped: false, blocks: 24 });
  });

  it("dedups across volumes of a domain, and not across domains", async () => {
    const { pool } = await setup();
    const a = await pool.ensureVolume({ name: "a", size: 16 * MiB, blockSize: 4096 });
    const b = await pool.ensureVolume({ name: "b", size: 16 * MiB, blockSize: 512 });
    const c = await pool.ensureVolume({
      name: "c",
      size: 16 * MiB,
      blockSize: 4096,
      domain: "private",
    });
    const data = pattern("shared", 2 * MiB);
    await a.write(0, data);
    await pool.applyJournal();
    const one = pool.usage().pool.physicalBytes;
    expect(one).toBeGreaterThanOrEqual(2 * MiB);
    expect(one).toBeLessThan(2.1 * MiB);
    await b.write(64, data); // same grains, other volume, other block size
    await pool.applyJournal();
    let u = pool.usage();
    expect(u.pool.physicalBytes).toBe(one);
    expect(u.pool.logicalBytes).toBe(4 * MiB);
    expect(u.pool.dedupRatio).toBeCloseTo(2, 5);
    const shared = u.domains.find((d) => d.name === "shared")!;
    expect(shared.savedByDedup).toBe(one);
    await c.write(0, data); // another domain: stored again
    await pool.applyJournal();
    u = pool.usage();
    expect(u.pool.physicalBytes).toBe(2 * one);
    expect(u.domains.find((d) => d.name === "private")!.physicalBytes).toBe(one);
    expect((await b.read(64, 512 * 8)).equals(data)).toBe(true);
    expect((await c.read(0, 512)).equals(data)).toBe(true);
  });

  it("stores a grain repeated within a write, and by concurrent writes, once", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const g = pattern("same", G);
    const data = Buffer.concat(Array.from({ length: 16 }, () => g));
    await Promise.all([v.write(0, data), v.write(100, data), v.write(200, g)]);
    await pool.applyJournal();
    const u = pool.usage().pool;
    expect(u.liveChunks).toBe(1);
    expect(u.logicalBytes).toBe(33 * G);
    expect(u.physicalBytes).toBeLessThan(G + 100);
  });

  it("copies by reference: physical usage does not grow, data is identical", async () => {
    const { pool } = await setup();
    const a = await pool.ensureVolume({ name: "a", size: 16 * MiB, blockSize: 512 });
    const b = await pool.ensureVolume({ name: "b", size: 16 * MiB, blockSize: 512 });
    const other = await pool.ensureVolume({
      name: "o",
      size: 16 * MiB,
      blockSize: 512,
      domain: "other",
    });
    const data = pattern("copy", MiB);
    await a.write(0, data);
    await pool.applyJournal();
    const before = pool.usage().pool.physicalBytes;
    expect(await b.copyFrom(a, 0, 2048, 2048)).toBe(true);
    expect((await b.read(2048, 2048)).equals(data)).toBe(true);
    await pool.applyJournal();
    expect(pool.usage().pool.physicalBytes).toBe(before);
    expect(pool.usage().pool.logicalBytes).toBe(2 * MiB);
    // Overlapping copy within one volume, forward: as if the source were read whole first.
    expect(await a.copyFrom(a, 0, 8, 2048, { fua: true })).toBe(true);
    expect((await a.read(8, 2048)).equals(data)).toBe(true);
    // Unaligned, or another domain: not by reference.
    expect(await b.copyFrom(a, 1, 0, 8)).toBe(false);
    expect(await other.copyFrom(a, 0, 0, 8)).toBe(false);
  });

  it("copies by reference through the source channel's filters (EXTENDED COPY between LUNs)", async () => {
    const { pool } = await setup();
    const a = await pool.ensureVolume({ name: "a", size: 16 * MiB, blockSize: 4096 });
    const b = await pool.ensureVolume({ name: "b", size: 16 * MiB, blockSize: 4096 });
    const data = pattern("filtered", MiB);
    await a.write(0, data);
    await pool.applyJournal();
    const before = pool.usage().pool.physicalBytes;
    const counters = newChannelCounters();
    const source = new CountingFilter(new ReadOnlyFilter(a), counters);
    const destination = new CountingFilter(b, newChannelCounters());
    expect(await destination.copyFrom?.(source, 0, 0, 256)).toBe(true);
    expect((await b.read(0, 256)).equals(data)).toBe(true);
    // No data moved: nothing was read from the source channel, nothing new was stored.
    expect(counters.readBytes).toBe(0);
    await pool.applyJournal();
    expect(pool.usage().pool.physicalBytes).toBe(before);
  });
});

describe("Pool: catalog, reopen and keys", () => {
  it("reopens with the same data, grows, refuses shrink and block size or domain changes", async () => {
    const tp = await setup();
    const v = await tp.pool.ensureVolume({ name: "v", size: 4 * MiB, blockSize: 512 });
    expect(await tp.pool.ensureVolume({ name: "v", size: 4 * MiB, blockSize: 512 })).toBe(v);
    const id = v.id;
    const data = pattern("persist", 300 * 512);
    await v.write(5, data);
    let grown = 0;
    v.onCapacityChange((n) => {
      grown = n;
    });
    await tp.pool.ensureVolume({ name: "v", size: 8 * MiB, blockSize: 512 });
    expect(grown).toBe((8 * MiB) / 512);
    expect(v.blockCount()).toBe((8 * MiB) / 512);
    await expect(
      tp.pool.ensureVolume({ name: "v", size: 2 * MiB, blockSize: 512 }),
    ).rejects.toThrow(/shrinking/);
    await expect(
      tp.pool.ensureVolume({ name: "v", size: 8 * MiB, blockSize: 4096 }),
    ).rejects.toThrow(/block size/);
    await expect(
      tp.pool.ensureVolume({ name: "v", size: 8 * MiB, blockSize: 512, domain: "x" }),
    ).rejects.toThrow(/domain/);
    const pool = await tp.reopen();
    const w = pool.volume("v")!;
    expect(w).toBeDefined();
    expect(w.id).toBe(id);
    expect(w.blockCount()).toBe((8 * MiB) / 512);
    expect((await w.read(5, 300)).equals(data)).toBe(true);
    expect(pool.volume("nope")).toBeUndefined();
    expect((await pool.check()).clean).toBe(true);
  });

  it("refuses a wrong master key with a clear message", async () => {
    const tp = await setup();
    await tp.pool.close();
    await expect(
      Pool.open({ dir: join(tp.dir, "pool"), masterKey: masterKeyFromBytes(randomBytes(32)) }),
    ).rejects.toThrow(/^wrong master key for pool at .*pool: wrong master key/);
    tp.pool = await Pool.open({
      dir: join(tp.dir, "pool"),
      masterKey: masterKeyFromBytes(tp.keyBytes),
    });
  });

  it("deletes a volume: its references go, the name can be used again", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 4 * MiB, blockSize: 4096 });
    await v.write(0, pattern("del", 64 * G));
    await pool.deleteVolume("v");
    expect(v.isClosed).toBe(true);
    await expect(v.read(0, 1)).rejects.toMatchObject({ code: StorageErrorCode.NotReady });
    expect(pool.volume("v")).toBeUndefined();
    await pool.applyJournal();
    expect(pool.usage().pool.physicalBytes).toBe(0);
    const again = await pool.ensureVolume({ name: "v", size: 4 * MiB, blockSize: 4096 });
    expect(again.id).not.toBe(v.id);
    expect((await again.read(0, 64)).equals(Buffer.alloc(64 * G))).toBe(true);
  });
});

describe("Pool: containers, damage and gc", () => {
  it("truncates a torn container tail at reopen; reads and writes go on", async () => {
    const tp = await setup();
    const v = await tp.pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const data = pattern("torn", 64 * G);
    await v.write(0, data);
    await tp.pool.close();
    const [file] = containerFiles(tp.dir);
    const size = statSync(file!).size;
    appendFileSync(file!, randomBytes(3000)); // an interrupted append
    const pool = await tp.reopen();
    expect(statSync(file!).size).toBe(size);
    const w = pool.volume("v")!;
    expect((await w.read(0, 64)).equals(data)).toBe(true);
    await w.write(64, pattern("after", 8 * G));
    expect((await w.read(64, 8)).equals(pattern("after", 8 * G))).toBe(true);
  });

  it("reports a damaged record as MediumError with its LBA; scrub lists it", async () => {
    const tp = await setup();
    const v = await tp.pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 512 });
    const data = pattern("dmg", 16 * G);
    await v.write(0, data); // 16 records back to back from offset 64
    await tp.pool.close();
    const [file] = containerFiles(tp.dir);
    // Flip bytes inside the payload of the 6th record (grain 5): records are 60 + 4112 bytes.
    const buf = readFileSync(file!);
    const at = FILE_HEADER_BYTES + 5 * (RECORD_HEADER_BYTES + G + 16) + RECORD_HEADER_BYTES + 100;
    for (let i = 0; i < 4; i++) buf[at + i] = buf[at + i]! ^ 0xff;
    writeFileSync(file!, buf);
    const pool = await tp.reopen();
    const w = pool.volume("v")!;
    const e = await rejection(w.read(0, 128));
    expect(e.code).toBe(StorageErrorCode.MediumError);
    expect(e.lba).toBe(40);
    expect((await rejection(w.read(43, 1))).lba).toBe(43);
    expect((await w.read(0, 40)).equals(data.subarray(0, 40 * 512))).toBe(true);
    expect((await w.read(48, 80)).equals(data.subarray(48 * 512))).toBe(true);
    const report = await pool.scrub();
    expect(report.damaged).toHaveLength(1);
    expect(report.damaged[0]).toMatchObject({ reason: "crc", inUse: true });
    expect(report.damaged[0]!.grains).toEqual([{ volume: "v", grain: 5, lba: 40 }]);
    // Overwriting the grain with other data heals the grain.
    await w.write(40, pattern("new", G));
    expect((await w.read(40, 8)).equals(pattern("new", G))).toBe(true);
    // Writing the damaged content again (to another grain) heals the chunk itself: a fresh copy
    // replaces the damaged one in the index, and both grains read it.
    const v2 = await pool.ensureVolume({ name: "v2", size: 16 * MiB, blockSize: 4096 });
    await v2.write(0, data.subarray(0, 8 * G)); // grains 0..7: grain 5 is the damaged content
    await w.write(40, data.subarray(5 * G, 6 * G));
    expect((await w.read(0, 128)).equals(data)).toBe(true);
    expect((await v2.read(0, 8)).equals(data.subarray(0, 8 * G))).toBe(true);
    await pool.close();
    const again = await tp.reopen();
    expect((await again.volume("v")!.read(0, 128)).equals(data)).toBe(true);
    // The damaged record is still on disk (dead, until GC drops its container), no longer used.
    const after = await again.scrub();
    expect(after.damaged).toHaveLength(1);
    expect(after.damaged[0]!.inUse).not.toBe(true);
    expect(after.damaged[0]!.grains).toEqual([]);
    expect((await again.check()).clean).toBe(true);
  });

  it("gc deletes containers whose chunks are all dead", async () => {
    const tp = await setup({ sealBytes: 256 * 1024 });
    const v = await tp.pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const keep = await tp.pool.ensureVolume({ name: "k", size: 16 * MiB, blockSize: 4096 });
    await keep.write(0, pattern("keep", 32 * G));
    for (let i = 0; i < 8; i++) await v.write(i * 64, pattern(`gc${i}`, 64 * G));
    await tp.pool.commitStaged(); // deferred writes are sealed into containers in the background
    const before = containerFiles(tp.dir).length;
    expect(before).toBeGreaterThan(4);
    await v.unmap(0, v.blockCount());
    const report = await tp.pool.gc();
    expect(report.containersDeleted).toBeGreaterThanOrEqual(before - 2);
    expect(report.bytesReclaimed).toBeGreaterThan(1.5 * MiB);
    expect(containerFiles(tp.dir).length).toBeLessThanOrEqual(2);
    const u = tp.pool.usage().pool;
    expect(u.deadBytes).toBe(0);
    expect(u.logicalBytes).toBe(32 * G);
    expect((await keep.read(0, 32)).equals(pattern("keep", 32 * G))).toBe(true);
    // New writes after gc go on (a new container when the current one was deleted).
    await v.write(0, pattern("again", 8 * G));
    expect((await v.read(0, 8)).equals(pattern("again", 8 * G))).toBe(true);
    const pool = await tp.reopen();
    expect((await pool.check()).clean).toBe(true);
    expect((await pool.volume("k")!.read(0, 32)).equals(pattern("keep", 32 * G))).toBe(true);
  });

  it("gc running alongside writes, unmaps and container roll-over never loses data", async () => {
    const tp = await setup({ sealBytes: 24 * 1024 });
    const v = await tp.pool.ensureVolume({ name: "v", size: 4 * MiB, blockSize: 4096 });
    const model = Buffer.alloc(256 * G);
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 40; round++) {
      // GC runs while the writes go on (one at a time: overlapping writes land in any order).
      const gcs = [tp.pool.gc({ minDeadFraction: 0.5 }), tp.pool.gc()];
      for (let i = 0; i < 6; i++) {
        const first = rand(250);
        const n = 1 + rand(6);
        if (rand(3) === 0) {
          await v.unmap(first, n);
          model.fill(0, first * G, (first + n) * G);
        } else {
          const data = pattern(`r${round}.${i}`, n * G);
          await v.write(first, data);
          data.copy(model, first * G);
        }
      }
      await Promise.all(gcs);
    }
    expect((await v.read(0, 256)).equals(model)).toBe(true);
    const pool = await tp.reopen();
    expect((await pool.volume("v")!.read(0, 256)).equals(model)).toBe(true);
    const check = await pool.check();
    expect(check.clean).toBe(true);
  });

  it("gc and dedup against staged grains while writes stay staged across gc passes", async () => {
    // Writes stay staged until a gc pass (or the end) commits them: containers that staged writes
    // name are held, chunks they deduplicated against may be claimed (ChunkMissing at commit).
    const tp = await setup({ sealBytes: 24 * 1024, writeBack: { commitDelayMs: 60_000 } });
    const v = await tp.pool.ensureVolume({ name: "v", size: 4 * MiB, blockSize: 4096 });
    const w = await tp.pool.ensureVolume({ name: "w", size: 4 * MiB, blockSize: 4096 });
    const model = Buffer.alloc(128 * G);
    let seed = 11;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 30; round++) {
      const gc = tp.pool.gc({ minDeadFraction: 0.2 });
      for (let i = 0; i < 6; i++) {
        const first = rand(120);
        const n = 1 + rand(6);
        // Few distinct contents: many writes deduplicate, against staged and dead chunks too.
        const data = Buffer.concat(Array.from({ length: n }, () => pattern(`c${rand(12)}`, G)));
        await v.write(first, data);
        data.copy(model, first * G);
        if (rand(4) === 0) await w.write(rand(120), pattern(`c${rand(12)}`, G));
      }
      expect((await v.read(0, 128)).equals(model)).toBe(true);
      await gc;
    }
    const pool = await tp.reopen();
    expect((await pool.volume("v")!.read(0, 128)).equals(model)).toBe(true);
    await pool.applyJournal();
    expect((await pool.check()).clean).toBe(true);
    expect((await pool.scrub()).damaged).toEqual([]);
  });

  it("close and volume deletion commit what is staged; the audit stays clean", async () => {
    const tp = await setup({ writeBack: { commitDelayMs: 60_000 } });
    const a = await tp.pool.ensureVolume({ name: "a", size: 4 * MiB, blockSize: 4096 });
    const b = await tp.pool.ensureVolume({ name: "b", size: 4 * MiB, blockSize: 512 });
    await a.write(0, pattern("a", 16 * G));
    await b.write(3, pattern("b", 5 * 512));
    await tp.pool.deleteVolume("a"); // its staged write lands, then its references go
    await tp.pool.applyJournal();
    expect(tp.pool.usage().pool.logicalBytes).toBe(G); // b's one staged grain, committed
    const pool = await tp.reopen(); // close commits b's write
    const expected = Buffer.alloc(G);
    pattern("b", 5 * 512).copy(expected, 3 * 512);
    expect((await pool.volume("b")!.read(0, 8)).equals(expected)).toBe(true);
    await pool.applyJournal();
    expect((await pool.check()).clean).toBe(true);
  });

  it("seals full containers and rolls over; reopens them all", async () => {
    const tp = await setup({ sealBytes: 128 * 1024 });
    const v = await tp.pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const data = pattern("roll", MiB);
    await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        v.write(i * 32, data.subarray(i * 32 * G, (i + 1) * 32 * G)),
      ),
    );
    // Full containers are sealed once no staged write holds them: after the commit.
    await tp.pool.commitStaged();
    for (let i = 0; i < 100 && tp.pool.usage().containers.sealed < 6; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const usage = tp.pool.usage();
    expect(usage.containers.total).toBeGreaterThanOrEqual(7);
    expect(usage.containers.sealed).toBeGreaterThanOrEqual(6);
    const pool = await tp.reopen();
    expect((await pool.volume("v")!.read(0, 256)).equals(data)).toBe(true);
    expect((await pool.scrub()).damaged).toEqual([]);
    expect(existsSync(join(tp.dir, "pool", "registry.json"))).toBe(true);
  });

  it("adds a device online; new containers go to the one with most free space", async () => {
    const tp = await setup({ sealBytes: 64 * 1024 });
    const v = await tp.pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    await tp.pool.addDevice(join(tp.dir, "second"));
    expect(tp.pool.usage().devices).toHaveLength(2);
    await v.write(0, pattern("dev", 64 * G));
    expect((await v.read(0, 64)).equals(pattern("dev", 64 * G))).toBe(true);
  });

  it("refuses new data with PoolFull when every device is at its reserve; dedup still works", async () => {
    const tp = await setup({ reserveBytes: Number.MAX_SAFE_INTEGER / 4 });
    // Volume creation needs no data space.
    const v = await tp.pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const e = await rejection(v.write(0, pattern("full", 4 * G)));
    expect(e.code).toBe(StorageErrorCode.PoolFull);
    await v.write(0, Buffer.alloc(4 * G)); // zeros need no space
    await v.unmap(0, 4);
  });

  // The compiled worker (npm run build): fingerprints and record opening off the main thread.
  const distWorker = fileURLToPath(new URL("../../dist/pool/chunk-worker.js", import.meta.url));
  it.skipIf(!existsSync(distWorker))("serves writes and reads through worker threads", async () => {
    const { pool } = await setup({ workers: 2, workerScript: distWorker });
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 512 });
    const data = pattern("workers", MiB);
    await Promise.all(
      [0, 1, 2, 3].map((i) =>
        v.write(i * 512, data.subarray(i * 256 * 1024, (i + 1) * 256 * 1024)),
      ),
    );
    await v.write(5, pattern("rmw", 512));
    pattern("rmw", 512).copy(data, 5 * 512);
    expect((await v.read(0, 2048)).equals(data)).toBe(true);
    expect((await v.read(3, 100)).equals(data.subarray(3 * 512, 103 * 512))).toBe(true);
  });

  it.skipIf(!existsSync(distWorker))(
    "dedups through the worker threads' index lookups (staged and FUA writes), then closes",
    async () => {
      const tp = await setup({ workers: 2, workerScript: distWorker });
      const { pool } = tp;
      const a = await pool.ensureVolume({ name: "a", size: 16 * MiB, blockSize: 4096 });
      const b = await pool.ensureVolume({ name: "b", size: 16 * MiB, blockSize: 512 });
      const f = await pool.ensureVolume({ name: "f", size: 16 * MiB, blockSize: 4096 });
      const c = await pool.ensureVolume({
        name: "c",
        size: 16 * MiB,
        blockSize: 4096,
        domain: "private",
      });
      const data = pattern("looked up", 2 * MiB);
      await a.write(0, data);
      await pool.applyJournal(); // committed: a's chunks are in the index, none in flight
      const one = pool.usage().pool.physicalBytes;
      expect(one).toBeGreaterThanOrEqual(2 * MiB);
      const onDisk = () => containerFiles(tp.dir).reduce((n, file) => n + statSync(file).size, 0);
      const before = onDisk();
      await b.write(64, data); // staged (write-back): found by the fingerprint jobs
      await f.write(0, data, { fua: true }); // direct: found the same way
      await pool.applyJournal();
      expect(pool.usage().pool.physicalBytes).toBe(one);
      expect(onDisk()).toBe(before); // not one record appended again
      expect(pool.usage().pool.logicalBytes).toBe(6 * MiB);
      await c.write(0, data); // another domain's index: stored again
      await pool.applyJournal();
      expect(pool.usage().pool.physicalBytes).toBe(2 * one);
      expect((await b.read(64, 4096)).equals(data)).toBe(true);
      expect((await f.read(0, 512)).equals(data)).toBe(true);
      expect((await c.read(0, 512)).equals(data)).toBe(true);
      await pool.close(); // the worker threads let go of the environment first
    },
  );
});
