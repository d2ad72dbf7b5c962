import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { MetaError, MetaErrorCode } from "./errors.js";
import { fp, loc, sfp, type TempStore, tempStore } from "./testing/helpers.js";

const GRAIN = 4096;
const STORED = 2000;
const SRC = 10;
const DST = 20;
const DOMAIN = 1;

/** `n` grains of volume 1 mapped to chunks fp(0..n-1), stored back to back in container SRC. */
async function fill(t: TempStore, n: number): Promise<void> {
  await t.store.createVolume(1, DOMAIN);
  await t.store.writeGrains(
    1,
    Array.from({ length: n }, (_, g) => ({
      grain: g,
      fingerprint: fp(g),
      chunk: loc(SRC, 64 + g * STORED, STORED, GRAIN),
    })),
  );
  await t.store.applyJournal();
}

/** Copy of chunk `g` at slot `k` of container DST, `stored` bytes. */
function move(g: number, k: number, stored = STORED) {
  return {
    fingerprint: fp(g),
    from: { containerId: SRC, offset: 64 + g * STORED },
    to: { containerId: DST, offset: 64 + k * STORED, storedLength: stored },
  };
}

describe("relocateChunks", () => {
  let t: TempStore;
  beforeEach(async () => {
    t = await tempStore();
  });
  afterEach(async () => {
    await t.cleanup();
  });

  it("moves only entries still at `from`; the other copies are dead bytes of the destination", async () => {
    const { store } = t;
    await fill(t, 6);
    // Chunk 1 is overwritten away and claimed by GC; chunk 2 now lives elsewhere already.
    await store.writeGrains(1, [{ grain: 1, fingerprint: null }]);
    await store.applyJournal();
    expect(await store.reclaimDeadChunks(SRC)).toHaveLength(1);
    await store.relocateChunks(DOMAIN, [move(2, 9)]);
    const before = store.domainUsage(DOMAIN);

    const r = await store.relocateChunks(DOMAIN, [
      move(0, 0),
      move(1, 1), // gone from the index
      move(2, 2), // no longer at `from`: it is at DST slot 9
      move(3, 3, 1900), // a copy of another stored length: the maps' referenced bytes would drift
      move(4, 4),
    ]);
    expect(r).toEqual({ moved: 2, stale: 3, movedItems: [true, false, false, false, true] });
    expect(store.lookupChunk(DOMAIN, fp(0))).toEqual({ ...loc(DST, 64, STORED), refcount: 1 });
    expect(store.lookupChunk(DOMAIN, fp(1))).toBeUndefined();
    expect(store.lookupChunk(DOMAIN, fp(2))).toMatchObject({
      containerId: DST,
      offset: 64 + 9 * STORED,
    });
    expect(store.lookupChunk(DOMAIN, fp(3))).toEqual({ ...loc(SRC, 64 + 3 * STORED), refcount: 1 });
    expect(store.lookupChunk(DOMAIN, fp(4))).toEqual({
      ...loc(DST, 64 + 4 * STORED),
      refcount: 1,
    });
    expect(store.lookupChunk(DOMAIN, fp(5))?.containerId).toBe(SRC);

    // Source: 6 stored; dead: chunk 1 (claimed, still counted), 2, 0 and 4 (moved away).
    expect(store.containerUsage(SRC)).toEqual({
      containerId: SRC,
      storedChunks: 6,
      storedBytes: 6 * STORED,
      deadChunks: 4,
      deadBytes: 4 * STORED,
    });
    // Destination: six copies (slot 9 from the first call); those of 1, 2 and 3 dead from the start.
    expect(store.containerUsage(DST)).toEqual({
      containerId: DST,
      storedChunks: 6,
      storedBytes: 5 * STORED + 1900,
      deadChunks: 3,
      deadBytes: 2 * STORED + 1900,
    });
    // The domain's figures do not move: same chunks, same sizes.
    expect(store.domainUsage(DOMAIN)).toEqual(before);
    expect(store.audit().clean).toBe(true);
  });

  it("moves a chunk listed dead with its listing; GC then claims it from the destination", async () => {
    const { store } = t;
    await fill(t, 3);
    await store.unmapGrains(1, 0, 1);
    await store.applyJournal();
    expect([...store.deadChunks(SRC)].map((d) => d.fingerprint)).toEqual([sfp(0)]);
    const deadBefore = store.domainUsage(DOMAIN);
    expect(deadBefore).toMatchObject({ deadChunks: 1, deadBytes: STORED });

    const r = await store.relocateChunks(DOMAIN, [move(0, 0), move(1, 1)]);
    expect(r.moved).toBe(2);
    expect([...store.deadChunks(SRC)]).toEqual([]);
    expect([...store.deadChunks(DST)].map((d) => [d.fingerprint, d.offset])).toEqual([
      [sfp(0), 64],
    ]);
    // Source: the listed chunk was counted dead already; chunk 1's old copy is dead now.
    expect(store.containerUsage(SRC)).toMatchObject({ storedChunks: 3, deadChunks: 2 });
    expect(store.containerUsage(DST)).toEqual({
      containerId: DST,
      storedChunks: 2,
      storedBytes: 2 * STORED,
      deadChunks: 1,
      deadBytes: STORED,
    });
    expect(store.domainUsage(DOMAIN)).toEqual(deadBefore);
    expect(store.audit().clean).toBe(true);

    // A writer deduplicating against it revives it where it is now.
    await store.writeGrains(1, [{ grain: 7, fingerprint: fp(0) }]);
    await store.applyJournal();
    expect(store.containerUsage(DST)).toMatchObject({ deadChunks: 0, deadBytes: 0 });
    expect(store.domainUsage(DOMAIN)).toMatchObject({ deadChunks: 0, physicalBytes: 3 * STORED });
    await store.unmapGrains(1, 7, 1);
    expect((await store.reclaimDeadChunks(DST)).map((d) => d.fingerprint)).toEqual([sfp(0)]);
    expect(store.audit().clean).toBe(true);
  });

  it("journal records pending across a move apply to the moved entry", async () => {
    const { store } = t;
    await fill(t, 2);
    await store.writeGrains(1, [{ grain: 5, fingerprint: fp(0) }]); // +1, pending
    await store.unmapGrains(1, 1, 1); // −1 for chunk 1, pending
    expect(store.pendingJournalRecords).toBe(2);
    await store.relocateChunks(DOMAIN, [move(0, 0), move(1, 1)]);
    expect(store.audit().clean).toBe(true);
    await store.applyJournal();
    expect(store.lookupChunk(DOMAIN, fp(0))).toMatchObject({ containerId: DST, refcount: 2 });
    expect([...store.deadChunks(DST)].map((d) => d.fingerprint)).toEqual([sfp(1)]);
    expect(store.containerUsage(SRC)).toMatchObject({ storedChunks: 2, deadChunks: 2 });
    expect(store.containerUsage(DST)).toMatchObject({ storedChunks: 2, deadChunks: 1 });
    expect(store.audit().clean).toBe(true);
  });

  it("is one transaction: every entry moves at once, readers never see part of it", async () => {
    const { store } = t;
    const n = 200;
    await fill(t, n);
    const spy = vi.spyOn(store.dbs.root, "childTransaction");
    const moves = Array.from({ length: n }, (_, g) => move(g, g));
    const seen: number[] = [];
    const pending = store.relocateChunks(DOMAIN, moves);
    // Reads while the transaction is queued see none of it; afterwards all of it.
    const inDst = () =>
      Array.from({ length: n }, (_, g) => store.lookupChunk(DOMAIN, fp(g))?.containerId).filter(
        (c) => c === DST,
      ).length;
    seen.push(inDst());
    await pending;
    seen.push(inDst());
    expect(spy).toHaveBeenCalledTimes(1);
    spy.mockRestore();
    expect(seen).toEqual([0, n]);
    expect(store.containerUsage(SRC)).toMatchObject({ storedChunks: n, deadChunks: n });
    // Reopened: the move is there whole.
    await t.reopen();
    expect(t.store.lookupChunk(DOMAIN, fp(n - 1))?.containerId).toBe(DST);
    expect(t.store.audit().clean).toBe(true);
  });

  it("rejects bad arguments before changing anything", async () => {
    const { store } = t;
    await fill(t, 2);
    const bad = [
      [move(0, 0), { ...move(1, 1), to: { containerId: DST, offset: 0, storedLength: 0 } }],
      [{ ...move(0, 0), fingerprint: Buffer.alloc(5) }],
      [{ ...move(0, 0), from: { containerId: -1, offset: 0 } }],
    ];
    for (const items of bad) {
      const e = await store.relocateChunks(DOMAIN, items).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(MetaError);
      expect((e as MetaError).code).toBe(MetaErrorCode.InvalidArgument);
    }
    expect(store.lookupChunk(DOMAIN, fp(0))?.containerId).toBe(SRC);
    expect(store.containerUsage(DST)).toBeUndefined();
    expect(await store.relocateChunks(DOMAIN, [])).toEqual({ moved: 0, stale: 0, movedItems: [] });
  });
});
