/**
 * The index token (MetaStore.indexToken, GrainUpdate.indexed / indexToken): a write passes the
 * entries its dedup lookups found, and the map transaction uses them instead of reading the
 * index again, unless a call that removes or moves index entries (GC's claim, relocation, an
 * index rebuild) started since the token was taken. And FpReader, the allocation-free reader
 * behind lookupChunk, the map write and the journal apply.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { decodeChunk, fpKey } from "./codec.js";
import { FpReader } from "./dbs.js";
import { MetaErrorCode } from "./errors.js";
import { fp, loc, type TempStore, tempStore, twoDeadChunks } from "./testing/helpers.js";
import type { GrainUpdate } from "./types.js";

describe("index token", () => {
  let t: TempStore;
  beforeEach(async () => {
    t = await tempStore();
    await t.store.createVolume(1, 1);
    await t.store.createVolume(2, 1);
  });
  afterEach(async () => {
    vi.restoreAllMocks();
    await t.cleanup();
  });

  /** What the pool's prepareGrains does: the token, then the lookups, in one turn. */
  const hits = (labels: string[], first = 0): GrainUpdate[] => {
    const indexToken = t.store.indexToken();
    expect(indexToken).toBeDefined();
    return labels.map((l, i) => {
      const indexed = t.store.lookupChunk(1, fp(l));
      expect(indexed).toBeDefined();
      return { grain: first + i, fingerprint: fp(l), indexed, indexToken };
    });
  };

  it("a dedup write with its lookups' entries maps without reading the index again", async () => {
    const { store } = t;
    await store.writeGrains(1, [
      { grain: 0, fingerprint: fp("a"), chunk: loc(3, 0, 1000) },
      { grain: 1, fingerprint: fp("b"), chunk: loc(3, 1000, 2000) },
    ]);
    await store.applyJournal();
    const updates = hits(["a", "b"]);
    const reads = vi.spyOn(store.dbs.fp, "getBinaryFast");
    const r = await store.writeGrains(2, updates);
    expect(reads).not.toHaveBeenCalled();
    expect(r).toEqual({ changed: 2, inserted: 0, duplicates: 0 });
    expect(store.volumeUsage(2)).toMatchObject({ mappedGrains: 2, referencedBytes: 3000 });
    // Without them the transaction reads the index as always.
    await store.writeGrains(2, [{ grain: 5, fingerprint: fp("a") }]);
    expect(reads).toHaveBeenCalled();
    reads.mockRestore();
    await store.applyJournal();
    expect(store.lookupChunk(1, fp("a"))?.refcount).toBe(3);
    expect(store.lookupChunk(1, fp("b"))?.refcount).toBe(2);
    expect(store.audit().clean).toBe(true);
  });

  it("a GC claim after the lookups voids the token: ChunkMissing, as without it", async () => {
    const { store } = t;
    await twoDeadChunks(store);
    // A writer found both dead chunks; GC claims them before its map update.
    const updates = hits(["a", "b"], 4);
    expect(await store.reclaimDeadChunks(3)).toHaveLength(2);
    await expect(store.writeGrains(2, updates)).rejects.toMatchObject({
      code: MetaErrorCode.ChunkMissing,
    });
    expect(store.volumeUsage(2)).toMatchObject({ mappedGrains: 0 });
    expect(store.audit().clean).toBe(true);
  });

  it("a claim queued before the map update in the same turn voids it too", async () => {
    const { store } = t;
    await store.writeGrains(1, [{ grain: 0, fingerprint: fp("a"), chunk: loc(3, 0) }]);
    await store.unmapGrains(1, 0, 1);
    await store.applyJournal();
    const updates = hits(["a"]);
    const claim = store.reclaimDeadChunks(3);
    // No token while the claim is under way.
    expect(store.indexToken()).toBeUndefined();
    const write = store.writeGrains(2, updates);
    expect(await claim).toHaveLength(1);
    await expect(write).rejects.toMatchObject({ code: MetaErrorCode.ChunkMissing });
    expect(store.audit().clean).toBe(true);
  });

  it("a map update queued before the claim keeps the chunk alive (its +1 is journaled)", async () => {
    const { store } = t;
    await store.writeGrains(1, [{ grain: 0, fingerprint: fp("a"), chunk: loc(3, 0) }]);
    await store.unmapGrains(1, 0, 1);
    await store.applyJournal();
    const updates = hits(["a"]);
    const write = store.writeGrains(2, updates);
    const claim = store.reclaimDeadChunks(3);
    await write;
    expect(await claim).toEqual([]);
    expect(store.lookupChunk(1, fp("a"))?.refcount).toBe(1);
    expect(store.audit().clean).toBe(true);
  });

  it("relocation changes the token; the write then reads the moved entry", async () => {
    const { store } = t;
    await store.writeGrains(1, [{ grain: 0, fingerprint: fp("a"), chunk: loc(3, 0, 1500) }]);
    await store.applyJournal();
    const before = store.indexToken();
    const updates = hits(["a"]);
    await store.relocateChunks(1, [
      { fingerprint: fp("a"), from: { containerId: 3, offset: 0 }, to: loc(4, 0, 1500) },
    ]);
    const after = store.indexToken();
    expect(after).toBeDefined();
    expect(after).not.toBe(before);
    const reads = vi.spyOn(store.dbs.fp, "getBinaryFast");
    await store.writeGrains(2, updates);
    expect(reads).toHaveBeenCalled();
    reads.mockRestore();
    expect(store.volumeUsage(2)).toMatchObject({ mappedGrains: 1, referencedBytes: 1500 });
    await store.applyJournal();
    expect(store.lookupChunk(1, fp("a"))).toMatchObject({ containerId: 4, refcount: 2 });
    expect(store.audit().clean).toBe(true);
  });

  it("an update that brings its own chunk ignores `indexed`", async () => {
    const { store } = t;
    await store.writeGrains(1, [{ grain: 0, fingerprint: fp("a"), chunk: loc(3, 0, 1000) }]);
    const [u] = hits(["a"]);
    // A second copy of the same content: the losing copy is counted dead.
    const r = await store.writeGrains(2, [{ ...u!, chunk: loc(5, 0, 1000) }]);
    expect(r).toEqual({ changed: 1, inserted: 0, duplicates: 1 });
    expect(store.containerUsage(5)).toMatchObject({ deadChunks: 1, deadBytes: 1000 });
    expect(store.audit().clean).toBe(true);
  });
});

describe("FpReader", () => {
  let t: TempStore;
  beforeEach(async () => {
    t = await tempStore();
  });
  afterEach(async () => {
    await t.cleanup();
  });

  it("reads what get reads, with 32- or 16-byte fingerprints, per domain", async () => {
    const { store } = t;
    await store.insertChunk(1, fp("a"), loc(10, 4096, 1500));
    await store.insertChunk(200, fp("a"), loc(11, 0, 900)); // a 2-byte domain id
    const r1 = new FpReader(store.dbs.fp, 1);
    const r200 = new FpReader(store.dbs.fp, 200);
    const expected = decodeChunk(store.dbs.fp.get(fpKey(1, fp("a")))!);
    expect(r1.get(fp("a"))).toEqual(expected);
    expect(r1.get(fp("a").subarray(0, 16))).toEqual(expected);
    expect(r200.get(fp("a"))).toEqual({ ...loc(11, 0, 900), refcount: 0 });
    expect(r1.get(fp("b"))).toBeUndefined();
    // The key buffer is reused: a miss after a hit, then the hit again.
    expect(r200.get(fp("b"))).toBeUndefined();
    expect(r200.get(fp("a"))?.containerId).toBe(11);
    // Inside a write transaction it sees the transaction's writes.
    await store.dbs.root.childTransaction(() => {
      store.dbs.fp.putSync(fpKey(1, fp("c")), store.dbs.fp.get(fpKey(1, fp("a")))!);
      expect(r1.get(fp("c"))).toEqual(expected);
    });
  });
});
