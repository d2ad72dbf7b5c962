import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fp, loc, sfp, type TempStore, tempStore } from "./testing/helpers.js";

describe("block maps", () => {
  let t: TempStore;
  beforeEach(async () => {
    t = await tempStore();
    await t.store.createVolume(1, 1);
    await t.store.createVolume(2, 1);
    await t.store.createVolume(0, 1);
  });
  afterEach(async () => {
    await t.cleanup();
  });

  const rc = (label: string) => t.store.lookupChunk(1, fp(label))?.refcount;

  it("write, overwrite and unmap move refcounts by +1/-1 once applied", async () => {
    const { store } = t;
    await store.writeGrains(1, [
      { grain: 0, fingerprint: fp("A"), chunk: loc(1, 0, 1000) },
      { grain: 1, fingerprint: fp("A"), chunk: loc(1, 0, 1000) },
      { grain: 2, fingerprint: fp("B"), chunk: loc(1, 1000, 1100) },
      { grain: 3, fingerprint: fp("C"), chunk: loc(1, 2100, 1200) },
    ]);
    // Chunks a write inserts start at the references it gives them (no journal record); later
    // changes move refcounts through the journal, in its batches.
    expect([rc("A"), rc("B"), rc("C")]).toEqual([2, 1, 1]);
    expect(store.pendingJournalRecords).toBe(0);
    await store.applyJournal();
    expect([rc("A"), rc("B"), rc("C")]).toEqual([2, 1, 1]);

    expect(await store.writeGrains(1, [{ grain: 1, fingerprint: fp("B") }])).toMatchObject({
      changed: 1,
    });
    await store.applyJournal();
    expect([rc("A"), rc("B")]).toEqual([1, 2]);

    expect(await store.unmapGrains(1, 0, 2)).toBe(2);
    const applied = await store.applyJournal();
    expect([rc("A"), rc("B"), rc("C")]).toEqual([0, 1, 1]);
    expect(applied.dead).toEqual([{ domainId: 1, fingerprint: sfp("A"), ...loc(1, 0, 1000) }]);
    expect([...store.deadChunks(1)]).toEqual(applied.dead);
    expect(store.containerUsage(1)).toMatchObject({
      storedChunks: 3,
      storedBytes: 3300,
      deadChunks: 1,
      deadBytes: 1000,
    });
    expect(store.getGrain(1, 0)).toBeUndefined();
    expect(store.getGrain(1, 1)).toBeUndefined();

    // A hole written as such (an all-zero grain) is an unmap.
    await store.writeGrains(1, [{ grain: 2, fingerprint: null }]);
    await store.applyJournal();
    expect(rc("B")).toBe(0);
    expect(store.volumeUsage(1)?.mappedGrains).toBe(1);
  });

  it("rewriting the same fingerprint changes nothing and journals nothing", async () => {
    const { store } = t;
    await store.writeGrains(1, [{ grain: 9, fingerprint: fp("A"), chunk: loc(1, 0) }]);
    const before = store.pendingJournalRecords;
    expect(await store.writeGrains(1, [{ grain: 9, fingerprint: fp("A") }])).toEqual({
      changed: 0,
      inserted: 0,
      duplicates: 0,
    });
    expect(await store.writeGrains(1, [{ grain: 10, fingerprint: null }])).toMatchObject({
      changed: 0,
    });
    expect(store.pendingJournalRecords).toBe(before);
  });

  it("lets the last update of a grain in one call win", async () => {
    const { store } = t;
    await store.writeGrains(1, [
      { grain: 4, fingerprint: fp("A"), chunk: loc(1, 0) },
      { grain: 4, fingerprint: fp("B"), chunk: loc(1, 2000) },
    ]);
    await store.applyJournal();
    expect(store.getGrain(1, 4)).toEqual(sfp("B"));
    expect(rc("B")).toBe(1);
    expect(rc("A")).toBeUndefined(); // never inserted: the first update was superseded
  });

  it("takes updates in any grain order, over grains already mapped", async () => {
    const { store } = t;
    await store.writeGrains(1, [
      { grain: 6, fingerprint: fp("old6"), chunk: loc(1, 0) },
      { grain: 7, fingerprint: fp("old7"), chunk: loc(1, 2000) },
    ]);
    // Descending and with a gap: the map transaction needs them sorted (it scans first..last).
    await store.writeGrains(1, [
      { grain: 9, fingerprint: fp("n9"), chunk: loc(1, 4000) },
      { grain: 7, fingerprint: fp("n7"), chunk: loc(1, 6000) },
      { grain: 6, fingerprint: fp("n6"), chunk: loc(1, 8000) },
    ]);
    await store.applyJournal();
    expect([6, 7, 8, 9].map((g) => store.getGrain(1, g))).toEqual([
      sfp("n6"),
      sfp("n7"),
      undefined,
      sfp("n9"),
    ]);
    expect([rc("old6"), rc("old7"), rc("n6"), rc("n7"), rc("n9")]).toEqual([0, 0, 1, 1, 1]);
    expect(store.audit()).toMatchObject({ mapEntries: 3, clean: true });
  });

  it("iterates a volume's range in grain order, and only that volume", async () => {
    const { store } = t;
    const grains = [5, 0, 2 ** 32 + 1, 255, 256, 2 ** 32, 2 ** 40, 1];
    await store.writeGrains(
      1,
      grains.map((g) => ({ grain: g, fingerprint: fp(g), chunk: loc(1, g % 1e9) })),
    );
    await store.writeGrains(0, [{ grain: 3, fingerprint: fp("v0"), chunk: loc(1, 7) }]);
    await store.writeGrains(2, [{ grain: 0, fingerprint: fp("v2"), chunk: loc(1, 8) }]);
    const all = [...store.mapEntries(1)];
    expect(all.map((e) => e.grain)).toEqual([...grains].sort((a, b) => a - b));
    expect(all[0]).toEqual({ grain: 0, fingerprint: sfp(0) });
    expect([...store.mapEntries(1, 5, 2 ** 32 + 1)].map((e) => e.grain)).toEqual([
      5,
      255,
      256,
      2 ** 32,
    ]);
    expect([...store.mapEntries(2)].map((e) => e.fingerprint)).toEqual([sfp("v2")]);
  });

  it("reports extents of mapped and unmapped grains (GET LBA STATUS)", async () => {
    const { store } = t;
    await store.writeGrains(
      1,
      [10, 11, 12, 20].map((g) => ({ grain: g, fingerprint: fp(g), chunk: loc(1, g) })),
    );
    expect(store.extentStatus(1, 0, 1000)).toEqual({ mapped: false, grains: 10 });
    expect(store.extentStatus(1, 10, 1000)).toEqual({ mapped: true, grains: 3 });
    expect(store.extentStatus(1, 11, 1)).toEqual({ mapped: true, grains: 1 });
    expect(store.extentStatus(1, 13, 1000)).toEqual({ mapped: false, grains: 7 });
    expect(store.extentStatus(1, 21, 50)).toEqual({ mapped: false, grains: 50 });
    expect(store.extentStatus(2, 0, 8)).toEqual({ mapped: false, grains: 8 });
  });

  it("resolves grains to chunk locations for reads", async () => {
    const { store } = t;
    await store.writeGrains(1, [
      { grain: 1, fingerprint: fp("A"), chunk: loc(3, 100, 900) },
      { grain: 3, fingerprint: fp("A") },
    ]);
    const r = store.resolveGrains(1, 0, 4);
    expect(r[0]).toBeUndefined();
    expect(r[1]).toEqual({ fingerprint: sfp("A"), chunk: { ...loc(3, 100, 900), refcount: 2 } });
    expect(r[2]).toBeUndefined();
    expect(r[3]?.chunk?.offset).toBe(100);
    // One grain at a time (the direct-get path) answers what the range answers, grain by grain.
    for (let g = 0; g < 4; g++) expect(store.resolveGrains(1, g, 1)).toEqual([r[g]]);
    for (let g = 0; g < 3; g++) expect(store.resolveGrains(1, g, 2)).toEqual(r.slice(g, g + 2));
    expect(store.resolveGrains(1, 0, 5)).toEqual([...r, undefined]); // past 4: the cursor
    // Also once the volume has a snapshot (map values then carry a birth after the fingerprint),
    // and for the snapshot itself.
    const s = await store.createSnapshot(1);
    await store.writeGrains(1, [{ grain: 1, fingerprint: fp("B"), chunk: loc(3, 5000, 700) }]);
    const head = store.resolveGrains(1, 0, 4);
    expect(head[1]?.fingerprint).toEqual(sfp("B"));
    for (let g = 0; g < 4; g++) {
      expect(store.resolveGrains(1, g, 1)).toEqual([head[g]]);
      expect(store.resolveGrains(1, g, 1, { snapshot: s })).toEqual([r[g]]);
    }
  });

  it("copies caller buffers before returning", async () => {
    const { store } = t;
    const buf = Buffer.from(fp("A"));
    const p = store.writeGrains(1, [{ grain: 0, fingerprint: buf, chunk: loc(1, 0) }]);
    buf.fill(0); // the caller reuses its buffer at once
    await p;
    expect(store.getGrain(1, 0)).toEqual(sfp("A"));
  });

  it("deleting a volume releases every reference", async () => {
    const { store } = t;
    await store.writeGrains(
      1,
      Array.from({ length: 20_000 }, (_, g) => ({
        grain: g,
        fingerprint: fp(g % 3),
        chunk: loc(1, g % 3),
      })),
    );
    await store.applyJournal();
    expect(rc("0")).toBe(6667);
    await store.deleteVolume(1);
    const r = await store.applyJournal();
    expect(r.dead.length).toBe(3);
    expect(store.volumeDomain(1)).toBeUndefined();
    expect([...store.mapEntries(1)]).toEqual([]);
    expect(store.domainUsage(1)).toMatchObject({ mappedGrains: 0, liveChunks: 0, deadChunks: 3 });
  });
});
