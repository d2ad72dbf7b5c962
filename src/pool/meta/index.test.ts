import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MetaError, MetaErrorCode } from "./errors.js";
import { fp, loc, sfp, type TempStore, tempStore } from "./testing/helpers.js";

describe("fingerprint index and dedup", () => {
  let t: TempStore;
  beforeEach(async () => {
    t = await tempStore();
  });
  afterEach(async () => {
    await t.cleanup();
  });

  it("inserts once; a second writer of the same fingerprint gets the existing location", async () => {
    const { store } = t;
    expect(store.lookupChunk(1, fp("a"))).toBeUndefined();
    const first = await store.insertChunk(1, fp("a"), loc(10, 0, 1500));
    expect(first).toEqual({ inserted: true, chunk: { ...loc(10, 0, 1500), refcount: 0 } });
    const second = await store.insertChunk(1, fp("a"), loc(11, 4096, 1500));
    expect(second.inserted).toBe(false);
    expect(second.chunk).toEqual({ ...loc(10, 0, 1500), refcount: 0 });
    expect(store.lookupChunk(1, fp("a"))).toEqual({ ...loc(10, 0, 1500), refcount: 0 });
    // The losing copy is dead space in its container from the start.
    expect(store.containerUsage(10)).toEqual({
      containerId: 10,
      storedChunks: 1,
      storedBytes: 1500,
      deadChunks: 0,
      deadBytes: 0,
    });
    expect(store.containerUsage(11)).toEqual({
      containerId: 11,
      storedChunks: 1,
      storedBytes: 1500,
      deadChunks: 1,
      deadBytes: 1500,
    });
    // Retrying the winning insert is not a second copy.
    expect((await store.insertChunk(1, fp("a"), loc(10, 0, 1500))).inserted).toBe(false);
    expect(store.containerUsage(10)?.deadChunks).toBe(0);
  });

  it("keeps domains apart: the same fingerprint in two domains is two chunks", async () => {
    const { store } = t;
    await store.insertChunk(1, fp("a"), loc(10, 0));
    const other = await store.insertChunk(2, fp("a"), loc(20, 0));
    expect(other.inserted).toBe(true);
    expect(store.lookupChunk(2, fp("a"))?.containerId).toBe(20);
    expect(store.lookupChunk(1, fp("a"))?.containerId).toBe(10);
  });

  it("inserts inline with the map update; racing writers dedup to one chunk", async () => {
    const { store } = t;
    await store.createVolume(1, 7);
    await store.createVolume(2, 7);
    // Both writers missed the lookup and stored a copy; both updates run in one event turn.
    const [a, b] = await Promise.all([
      store.writeGrains(1, [{ grain: 0, fingerprint: fp("x"), chunk: loc(100, 0) }]),
      store.writeGrains(2, [{ grain: 5, fingerprint: fp("x"), chunk: loc(101, 0) }]),
    ]);
    expect(a).toEqual({ changed: 1, inserted: 1, duplicates: 0 });
    expect(b).toEqual({ changed: 1, inserted: 0, duplicates: 1 });
    expect(store.lookupChunk(7, fp("x"))?.containerId).toBe(100);
    expect(store.getGrain(2, 5)).toEqual(sfp("x"));
    expect(store.containerUsage(101)?.deadBytes).toBe(2000);
    await store.applyJournal();
    expect(store.lookupChunk(7, fp("x"))?.refcount).toBe(2);
  });

  it("rejects a map update naming an unknown fingerprint, changing nothing", async () => {
    const { store } = t;
    await store.createVolume(1, 1);
    await store.writeGrains(1, [{ grain: 0, fingerprint: fp("a"), chunk: loc(1, 0) }]);
    const pending = store.pendingJournalRecords;
    const err = await store
      .writeGrains(1, [
        { grain: 0, fingerprint: null },
        { grain: 1, fingerprint: fp("nowhere") },
      ])
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MetaError);
    expect((err as MetaError).code).toBe(MetaErrorCode.ChunkMissing);
    expect((err as MetaError).fingerprints).toEqual([fp("nowhere").toString("hex")]);
    expect(store.getGrain(1, 0)).toEqual(sfp("a"));
    expect(store.getGrain(1, 1)).toBeUndefined();
    expect(store.pendingJournalRecords).toBe(pending);
    expect(store.volumeUsage(1)?.mappedGrains).toBe(1);
  });

  it("validates arguments at the edge", async () => {
    const { store } = t;
    await store.createVolume(1, 1);
    const code = async (p: Promise<unknown>) =>
      ((await p.catch((e: unknown) => e)) as MetaError).code;
    expect(await code(store.writeGrains(2, [{ grain: 0, fingerprint: null }]))).toBe(
      MetaErrorCode.UnknownVolume,
    );
    expect(await code(store.writeGrains(1, [{ grain: -1, fingerprint: null }]))).toBe(
      MetaErrorCode.InvalidArgument,
    );
    expect(await code(store.writeGrains(1, [{ grain: 0, fingerprint: Buffer.alloc(20) }]))).toBe(
      MetaErrorCode.InvalidArgument,
    );
    expect(await code(store.insertChunk(1, fp(1), loc(1, -1)))).toBe(MetaErrorCode.InvalidArgument);
    expect(await code(store.insertChunk(1, fp(1), loc(1, 0, 2 ** 24)))).toBe(
      MetaErrorCode.InvalidArgument,
    );
    expect(await code(store.createVolume(1, 2))).toBe(MetaErrorCode.VolumeExists);
  });

  it("keeps the grain size it was created with", async () => {
    await t.store.close();
    const { MetaStore } = await import("./store.js");
    await expect(MetaStore.open({ path: t.dir, grainSize: 8192 })).rejects.toMatchObject({
      code: MetaErrorCode.Incompatible,
    });
    t.store = await MetaStore.open({ path: t.dir, noSync: true });
    expect(t.store.grainSize).toBe(4096);
  });
});
