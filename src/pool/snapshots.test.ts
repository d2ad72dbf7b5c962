import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { StorageError, StorageErrorCode } from "../volume/errors.js";
import type { RegistryData } from "./registry.js";
import { pattern, type TempPool, tempPool } from "./testing/helpers.js";

const G = 4096;
const MiB = 1024 * 1024;

let t: TempPool | undefined;
afterEach(async () => {
  await t?.cleanup();
  t = undefined;
});

async function setup(): Promise<TempPool> {
  t = await tempPool({ workers: 0 });
  return t;
}

async function rejection(p: Promise<unknown>): Promise<StorageError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(StorageError);
  return e as StorageError;
}

async function message(p: Promise<unknown>): Promise<string> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(Error);
  return (e as Error).message;
}

function editRegistry(tp: TempPool, edit: (d: RegistryData) => void): void {
  const path = join(tp.dir, "pool", "registry.json");
  const d = JSON.parse(readFileSync(path, "utf8")) as RegistryData;
  edit(d);
  writeFileSync(path, JSON.stringify(d));
}

describe("Pool snapshots", () => {
  it("a snapshot reads the data as of its creation while the volume changes; it is read-only", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const old = pattern("old", 64 * G);
    await v.write(0, old);
    const info = await pool.createSnapshot("v", "s1");
    expect(info).toMatchObject({ volume: "v", name: "s1", sizeBytes: 16 * MiB, blockSize: 4096 });
    await v.write(16, pattern("new", 16 * G));
    await v.unmap(0, 8);
    await v.write(100, pattern("later", G));

    const s = await pool.openSnapshot("v", "s1");
    expect(s.name).toBe("v@s1");
    expect(s.id).toBe(info.id);
    expect(s.id).not.toBe(v.id);
    expect(s.blockSize).toBe(4096);
    expect(s.blockCount()).toBe(v.blockCount());
    expect(await pool.openSnapshot("v", "s1")).toBe(s);
    expect((await s.read(0, 64)).equals(old)).toBe(true);
    expect((await s.read(100, 1)).equals(Buffer.alloc(G))).toBe(true);
    expect(await s.blockStatus(0)).toEqual({ mapped: true, blocks: 64 });
    expect(await s.blockStatus(64)).toMatchObject({ mapped: false });
    // The head moved on.
    expect((await v.read(0, 8)).equals(Buffer.alloc(8 * G))).toBe(true);
    expect((await v.read(16, 16)).equals(pattern("new", 16 * G))).toBe(true);
    expect(await v.blockStatus(0)).toMatchObject({ mapped: false, blocks: 8 });

    for (const p of [
      s.write(0, pattern("x", G)),
      s.writeAtomic(0, pattern("x", G)),
      s.unmap(0, 1),
      s.copyFrom(v, 0, 0, 1),
      s.grow(32 * MiB),
    ]) {
      expect((await rejection(p)).code).toBe(StorageErrorCode.WriteProtected);
    }
    expect((await s.read(0, 64)).equals(old)).toBe(true);

    // XCOPY from a snapshot into a volume, by reference.
    expect(await v.copyFrom(s, 0, 200, 64)).toBe(true);
    expect((await v.read(200, 64)).equals(old)).toBe(true);

    const list = pool.listSnapshots("v");
    expect(list.map((x) => x.name)).toEqual(["s1"]);
    // 8 unmapped + 16 overwritten grains are kept for the snapshot alone.
    expect(list[0]?.heldBytes).toBe(24 * G);
    expect(pool.listSnapshots()).toHaveLength(1);
    expect((await pool.check()).clean).toBe(true);
  });

  it("refuses duplicate and invalid names, unknown volumes and snapshots, and deleting a volume with snapshots", async () => {
    const { pool } = await setup();
    await pool.ensureVolume({ name: "v", size: MiB, blockSize: 512 });
    await pool.createSnapshot("v", "a");
    expect(await message(pool.createSnapshot("v", "a"))).toMatch(/already has a snapshot "a"/);
    expect(await message(pool.createSnapshot("v", "a@b"))).toMatch(/not valid/);
    expect(await message(pool.createSnapshot("w", "a"))).toMatch(/volume "w" does not exist/);
    expect(await message(pool.openSnapshot("v", "b"))).toMatch(/has no snapshot "b"/);
    expect(await message(pool.deleteSnapshot("v", "b"))).toMatch(/has no snapshot "b"/);
    expect(await message(pool.deleteVolume("v"))).toMatch(/has snapshots \(a\): delete them first/);
    await pool.deleteSnapshot("v", "a");
    await pool.deleteVolume("v");
    expect(pool.volumeNames()).toEqual([]);
  });

  it("a clone is writable, independent, and keeps the snapshot's size, block size and domain", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({
      name: "v",
      size: 8 * MiB,
      blockSize: 512,
      domain: "private",
    });
    const old = pattern("old", 32 * G);
    await v.write(0, old);
    await pool.createSnapshot("v", "s");
    await v.grow(16 * MiB);
    await v.write(0, pattern("new", 8 * G));

    const c = await pool.cloneSnapshot("v", "s", "c");
    expect(c.blockSize).toBe(512);
    expect(c.sizeBytes).toBe(8 * MiB);
    expect(c.domain).toBe(v.domain);
    expect(pool.volumeNames()).toContain("c");
    expect((await c.read(0, 256)).equals(old)).toBe(true);
    await c.write(3, pattern("clone", 512)); // a read-modify-write of the clone
    const expected = Buffer.from(old);
    pattern("clone", 512).copy(expected, 3 * 512);
    expect((await c.read(0, 256)).equals(expected)).toBe(true);
    // Neither the volume nor the snapshot saw it.
    const s = await pool.openSnapshot("v", "s");
    expect((await s.read(0, 256)).equals(old)).toBe(true);
    expect((await v.read(0, 64)).equals(pattern("new", 8 * G))).toBe(true);
    // The snapshot and its volume may go; the clone stays.
    await pool.deleteSnapshot("v", "s");
    expect((await rejection(s.read(0, 1))).code).toBe(StorageErrorCode.NotReady);
    await pool.deleteVolume("v");
    expect((await c.read(0, 256)).equals(expected)).toBe(true);
    expect(await message(pool.cloneSnapshot("c", "s", "d"))).toMatch(/has no snapshot/);
    await pool.applyJournal();
    expect((await pool.check()).clean).toBe(true);
  });

  it("snapshots and clones survive a restart", async () => {
    const tp = await setup();
    const v = await tp.pool.ensureVolume({ name: "v", size: 4 * MiB, blockSize: 4096 });
    await v.write(0, pattern("old", 16 * G));
    const info = await tp.pool.createSnapshot("v", "s");
    await v.write(0, pattern("new", 16 * G));
    await tp.pool.cloneSnapshot("v", "s", "c");
    const pool = await tp.reopen({ workers: 0 });
    expect(pool.listSnapshots().map((x) => [x.volume, x.name, x.id])).toEqual([
      ["v", "s", info.id],
    ]);
    const s = await pool.openSnapshot("v", "s");
    expect(s.id).toBe(info.id);
    expect((await s.read(0, 16)).equals(pattern("old", 16 * G))).toBe(true);
    expect((await pool.volume("v")!.read(0, 16)).equals(pattern("new", 16 * G))).toBe(true);
    expect((await pool.volume("c")!.read(0, 16)).equals(pattern("old", 16 * G))).toBe(true);
    expect((await pool.check()).clean).toBe(true);
  });

  it("deleting a snapshot frees what only it held, once the journal is applied and GC runs", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    await v.write(0, pattern("old", 256 * G));
    await pool.createSnapshot("v", "s");
    await v.write(0, pattern("new", 256 * G));
    await pool.applyJournal();
    await pool.gc();
    const before = pool.usage().pool;
    // Both versions are live: the snapshot holds the old one.
    expect(before.liveChunks).toBe(512);
    await pool.deleteSnapshot("v", "s");
    expect(pool.listSnapshots("v")).toEqual([]);
    await pool.applyJournal();
    const after = pool.usage().pool;
    expect(after.liveChunks).toBe(256);
    expect(after.physicalBytes).toBeLessThan(before.physicalBytes * 0.6);
    const gc = await pool.gc({ minDeadFraction: 0 });
    expect(gc.containersDeleted + gc.notCompacted.length).toBeGreaterThan(0);
    expect((await v.read(0, 256)).equals(pattern("new", 256 * G))).toBe(true);
    expect((await pool.check()).clean).toBe(true);
  });

  it("finishes interrupted deletions and drops store snapshots the registry never named, at open", async () => {
    const tp = await setup();
    const v = await tp.pool.ensureVolume({ name: "v", size: 4 * MiB, blockSize: 4096 });
    await v.write(0, pattern("old", 32 * G));
    await tp.pool.createSnapshot("v", "gone");
    await tp.pool.createSnapshot("v", "deleting");
    await tp.pool.createSnapshot("v", "kept");
    await v.write(0, pattern("new", 32 * G));
    await tp.pool.close();
    editRegistry(tp, (d) => {
      const rec = d.volumes.find((x) => x.name === "v")!;
      rec.snapshots = rec.snapshots!.filter((s) => s.name !== "gone");
      rec.snapshots.find((s) => s.name === "deleting")!.deleting = true;
    });
    const pool = await tp.reopen({ workers: 0 });
    expect(pool.listSnapshots("v").map((s) => s.name)).toEqual(["kept"]);
    const s = await pool.openSnapshot("v", "kept");
    expect((await s.read(0, 32)).equals(pattern("old", 32 * G))).toBe(true);
    await pool.deleteSnapshot("v", "kept");
    await pool.applyJournal();
    expect(pool.usage().pool.liveChunks).toBe(32);
    expect((await pool.check()).clean).toBe(true);
  });

  it("finishes an interrupted clone at open, or drops it when its snapshot is gone", async () => {
    const tp = await setup();
    const v = await tp.pool.ensureVolume({ name: "v", size: 4 * MiB, blockSize: 4096 });
    await v.write(0, pattern("old", 16 * G));
    await tp.pool.createSnapshot("v", "s");
    await tp.pool.createSnapshot("v", "t");
    await tp.pool.cloneSnapshot("v", "s", "c");
    await tp.pool.cloneSnapshot("v", "t", "d");
    await tp.pool.deleteSnapshot("v", "t");
    await tp.pool.close();
    // As if both clones had been interrupted: c's source is there, d's is gone.
    editRegistry(tp, (d) => {
      const vol = d.volumes.find((x) => x.name === "v")!;
      const s = vol.snapshots!.find((x) => x.name === "s")!;
      d.volumes.find((x) => x.name === "c")!.cloning = {
        volume: vol.number,
        snapshot: s.generation,
      };
      d.volumes.find((x) => x.name === "d")!.cloning = { volume: vol.number, snapshot: 99 };
    });
    const pool = await tp.reopen({ workers: 0 });
    expect(pool.volumeNames().sort()).toEqual(["c", "v"]);
    expect((await pool.volume("c")!.read(0, 16)).equals(pattern("old", 16 * G))).toBe(true);
    await pool.applyJournal();
    expect((await pool.check()).clean).toBe(true);
    const pool2 = await tp.reopen({ workers: 0 });
    expect(pool2.volumeNames().sort()).toEqual(["c", "v"]);
  });
});

describe("Pool allocation guard", () => {
  it("is asked for the grains a write turns from hole to mapped, before anything is stored", async () => {
    const { pool } = await setup();
    const calls: [string, number][] = [];
    let refuse = false;
    pool.setAllocationGuard((volume, bytes) => {
      calls.push([volume, bytes]);
      if (refuse) throw new StorageError(StorageErrorCode.QuotaExceeded, "quota");
    });
    const v = await pool.ensureVolume({ name: "v", size: 4 * MiB, blockSize: 4096 });
    await v.write(0, pattern("a", 8 * G));
    expect(calls).toEqual([["v", 8 * G]]);
    // Overwrites of mapped grains and zero grains allocate nothing: no call.
    await v.write(0, pattern("b", 8 * G));
    await v.write(20, Buffer.alloc(4 * G));
    expect(calls).toHaveLength(1);
    // Half over mapped grains, half over holes; a zero grain among the new ones.
    const mixed = Buffer.concat([pattern("c", 4 * G), pattern("d", 3 * G), Buffer.alloc(G)]);
    await v.writeAtomic(4, mixed);
    expect(calls[1]).toEqual(["v", 3 * G]);

    // Refused: the write rejects with the guard's error and nothing changes.
    refuse = true;
    const logical = pool.volumeLogicalBytes("v");
    const e = await rejection(v.write(100, pattern("e", 2 * G)));
    expect(e.code).toBe(StorageErrorCode.QuotaExceeded);
    expect((await v.read(100, 2)).equals(Buffer.alloc(2 * G))).toBe(true);
    expect(pool.volumeLogicalBytes("v")).toBe(logical);
    // An agent at its limit can still overwrite, and unmap.
    await v.write(0, pattern("f", 4 * G));
    await v.unmap(0, 2);
    await v.write(0, pattern("g", 2 * G)).catch(() => undefined); // holes again: refused
    expect((await v.read(0, 2)).equals(Buffer.alloc(2 * G))).toBe(true);

    // Copies by reference count the source's mapped grains landing on holes.
    refuse = false;
    calls.length = 0;
    const w = await pool.ensureVolume({ name: "w", size: 4 * MiB, blockSize: 4096 });
    await w.write(1, pattern("h", G));
    calls.length = 0;
    expect(await w.copyFrom(v, 0, 0, 16)).toBe(true); // v: 2 holes, then 10 mapped grains
    expect(calls).toEqual([["w", 9 * G]]);
    refuse = true;
    expect((await rejection(w.copyFrom(v, 0, 50, 16))).code).toBe(StorageErrorCode.QuotaExceeded);
    expect(await w.blockStatus(50)).toMatchObject({ mapped: false });
    pool.setAllocationGuard(undefined);
    await w.write(100, pattern("i", G));
  });

  it("counts a partial grain of a 512-byte volume once, when the grain was a hole", async () => {
    const { pool } = await setup();
    const calls: number[] = [];
    pool.setAllocationGuard((_v, bytes) => calls.push(bytes));
    const v = await pool.ensureVolume({ name: "v", size: MiB, blockSize: 512 });
    await v.write(3, pattern("a", 512));
    await v.write(5, pattern("b", 512));
    await v.write(6, pattern("c", 4 * 512)); // grain 0 tail (mapped) + grain 1 head (hole)
    expect(calls).toEqual([G, G]);
  });
});
