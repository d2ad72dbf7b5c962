import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { decodeChunk, encodeChunk, fpKey, mapKey } from "./codec.js";
import type { ContainerRecord } from "./rebuild.js";
import { fp, loc, sfp, type TempStore, tempStore, withRawDbs } from "./testing/helpers.js";

describe("audit, repair and rebuild", () => {
  let t: TempStore;
  beforeEach(async () => {
    t = await tempStore();
    const { store } = t;
    await store.createVolume(1, 1);
    await store.createVolume(2, 1);
    // Volume 1: grains 0..9 → chunks 0..4 (each twice); volume 2: grains 0..4 → chunks 0..4.
    await store.writeGrains(
      1,
      Array.from({ length: 10 }, (_, g) => ({
        grain: g,
        fingerprint: fp(g % 5),
        chunk: loc(1, (g % 5) * 2000),
      })),
    );
    await store.writeGrains(
      2,
      Array.from({ length: 5 }, (_, g) => ({ grain: g, fingerprint: fp(g) })),
    );
    await store.applyJournal();
    // One more change left in the journal: the audit must count it as pending, not as an error.
    await store.writeGrains(2, [{ grain: 4, fingerprint: null }]);
  });
  afterEach(async () => {
    await t.cleanup();
  });

  it("finds nothing in a consistent store (journal records pending included)", () => {
    const report = t.store.audit();
    expect(report).toMatchObject({
      domains: [1],
      mapEntries: 14,
      chunks: 5,
      pendingRecords: 1,
      clean: true,
    });
    expect(t.store.audit({ partitions: 7 })).toMatchObject({
      mapEntries: 14,
      chunks: 5,
      clean: true,
    });
  });

  it("finds a planted leak and a planted dangling reference; repair fixes the leak", async () => {
    const { store } = t;
    await store.insertChunk(1, fp("leaked"), loc(9, 0, 777));
    await store.applyJournal();
    await store.close();
    await withRawDbs(t.dir, (dbs) => {
      // Leak: a refcount no map entry backs.
      const k = fpKey(1, fp("leaked"));
      dbs.fp.putSync(k, encodeChunk({ ...decodeChunk(dbs.fp.get(k)!), refcount: 3 }));
      // Damage: a map entry pointing at a chunk the index does not hold.
      dbs.map.putSync(mapKey(2, 99), fp("gone"));
    });
    const store2 = await t.reopen();
    const report = store2.audit();
    expect(report.clean).toBe(false);
    expect(report.leaks).toEqual({
      count: 1,
      items: [
        {
          domainId: 1,
          fingerprint: sfp("leaked").toString("hex"),
          containerId: 9,
          offset: 0,
          storedLength: 777,
          refcount: 3,
          pending: 0,
          references: 0,
        },
      ],
    });
    expect(report.damage).toEqual({
      count: 1,
      items: [{ volume: 2, grain: 99, domainId: 1, fingerprint: sfp("gone").toString("hex") }],
    });
    expect(report.miscounts.count).toBe(0);
    // The planted map entry bypassed the counters: the audit says so.
    expect(report.drift).toContainEqual({
      scope: "volume",
      id: 2,
      field: "mappedGrains",
      recorded: 4,
      actual: 5,
    });

    const repaired = await store2.repair();
    expect(repaired).toMatchObject({ refcountsFixed: 1, listedDead: 1 });
    const after = store2.audit();
    expect(after.leaks.count).toBe(0);
    expect(after.drift).toEqual([]);
    expect(after.damage.count).toBe(1); // not repairable from the metadata alone
    expect([...store2.deadChunks(9)].map((d) => d.fingerprint)).toEqual([sfp("leaked")]);
    expect(store2.lookupChunk(1, fp("leaked"))?.refcount).toBe(0);
  });

  it("counts references right when dangling entries are rewritten", async () => {
    const { store } = t;
    await store.applyJournal();
    await store.close();
    await withRawDbs(t.dir, (dbs) => {
      dbs.fp.removeSync(fpKey(1, fp(0))); // chunk 0 lost: volume 1 grains 0 and 5, volume 2 grain 0 dangle
    });
    const store2 = await t.reopen();
    await store2.repair(); // the counters follow the loss; the damage stays
    expect(store2.audit().damage.count).toBe(3);
    // Writers overwrite two dangling grains and rewrite the third with its data stored again.
    await store2.writeGrains(1, [{ grain: 5, fingerprint: fp("new"), chunk: loc(4, 0) }]);
    await store2.writeGrains(2, [{ grain: 0, fingerprint: null }]);
    await store2.writeGrains(1, [{ grain: 0, fingerprint: fp(0), chunk: loc(4, 2000) }]);
    const r = await store2.applyJournal();
    expect(r.anomalies).toEqual([]); // no release of a chunk that was not there
    expect(store2.lookupChunk(1, fp(0))?.refcount).toBe(1);
    expect(store2.audit().clean).toBe(true);
  });

  it("finds a refcount that is too low, and an orphan; repair restores both", async () => {
    const { store } = t;
    await store.insertChunk(1, fp("orphan"), loc(9, 0)); // stored, never mapped (crash before the map update)
    await store.close();
    await withRawDbs(t.dir, (dbs) => {
      const k = fpKey(1, fp(2));
      dbs.fp.putSync(k, encodeChunk({ ...decodeChunk(dbs.fp.get(k)!), refcount: 1 })); // really 3
    });
    const store2 = await t.reopen();
    const report = store2.audit();
    expect(report.miscounts.items).toMatchObject([
      { fingerprint: sfp(2).toString("hex"), refcount: 1, references: 3 },
    ]);
    expect(report.orphans.items).toMatchObject([{ fingerprint: sfp("orphan").toString("hex") }]);
    await store2.repair({ partitions: 3 });
    expect(store2.audit().clean).toBe(true);
    expect(store2.lookupChunk(1, fp(2))?.refcount).toBe(3);
    expect([...store2.deadChunks(9)].map((d) => d.fingerprint)).toEqual([sfp("orphan")]);
  });

  it("rebuilds the index from container records and recounts from the maps", async () => {
    const { store } = t;
    await store.applyJournal();
    const before = [0, 1, 2, 3, 4].map((c) => store.lookupChunk(1, fp(c)));
    const usage = store.domainUsage(1);
    const records: ContainerRecord[] = [0, 1, 2, 3, 4].map((c) => ({
      fingerprint: fp(c),
      ...loc(1, c * 2000),
    }));
    records.push({ fingerprint: fp(3), ...loc(2, 0) }); // a second copy of chunk 3
    records.push({ fingerprint: fp("unused"), ...loc(2, 2000) }); // a chunk no map uses
    await store.close();
    await withRawDbs(t.dir, (dbs) => {
      dbs.fp.clearSync(); // lose the index entirely
      dbs.dead.clearSync();
    });
    const store2 = await t.reopen();
    expect(store2.audit().damage.count).toBe(14);
    async function* stream() {
      yield* records;
    }
    const result = await store2.rebuildIndex(1, stream(), { batchSize: 2 });
    expect(result).toMatchObject({ records: 7, chunks: 6, duplicates: 1, invalid: 0 });
    expect([0, 1, 2, 3, 4].map((c) => store2.lookupChunk(1, fp(c)))).toEqual(before);
    expect(store2.lookupChunk(1, fp("unused"))?.refcount).toBe(0);
    expect([...store2.deadChunks(2)].map((d) => d.fingerprint)).toEqual([sfp("unused")]);
    expect(store2.containerUsage(2)).toMatchObject({
      storedChunks: 2,
      deadChunks: 2,
      deadBytes: 4000,
    });
    expect(store2.domainUsage(1)).toEqual({ ...usage, deadChunks: 1, deadBytes: 2000 });
    expect(store2.unfinishedRebuilds()).toEqual([]);
    expect(store2.audit().clean).toBe(true);
  });
});

describe("auditYielding (what a serving pool runs)", () => {
  let t: TempStore;
  beforeEach(async () => {
    t = await tempStore();
    await t.store.createVolume(1, 1);
    await t.store.writeGrains(
      1,
      Array.from({ length: 400 }, (_, g) => ({
        grain: g,
        fingerprint: fp(`y${g}`),
        chunk: loc(1, g * 2000),
      })),
    );
    await t.store.applyJournal();
  });
  afterEach(async () => {
    await t.cleanup();
  });

  it("lets the event loop run between slices and reports the snapshot it started on", async () => {
    const { store } = t;
    const before = store.audit();
    expect(before).toMatchObject({ mapEntries: 400, chunks: 400, clean: true });
    let turns = 0;
    let writes = 0;
    let stop = false;
    // Each runs only while the event loop gets turns: one counts them, one lands writes.
    const ticker = (async () => {
      while (!stop) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        turns++;
      }
    })();
    const writer = (async () => {
      while (!stop && writes < 20) {
        const g = 1000 + writes++;
        await store.writeGrains(1, [{ grain: g, fingerprint: fp(`w${g}`), chunk: loc(2, g) }]);
      }
    })();
    const report = await store.auditYielding({ slice: 16 });
    stop = true;
    await Promise.all([ticker, writer]);
    // 400 map entries + 400 index entries in slices of 16: dozens of turns for the writer.
    expect(turns).toBeGreaterThan(20);
    expect(writes).toBeGreaterThan(0);
    // The writes that landed meanwhile are not in it: one snapshot, and a clean one.
    expect(report).toMatchObject({ mapEntries: 400, chunks: 400, clean: true });
    expect(store.audit()).toMatchObject({ mapEntries: 400 + writes, clean: true });
  });

  it("finds what the audit in one go finds", async () => {
    const { store } = t;
    await store.close();
    await withRawDbs(t.dir, (dbs) => {
      dbs.map.putSync(mapKey(1, 999), fp("gone")); // a map entry the index lacks
    });
    const reopened = await t.reopen();
    const whole = reopened.audit();
    const sliced = await reopened.auditYielding({ slice: 7 });
    expect(whole.clean).toBe(false);
    expect(sliced).toEqual(whole);
  });

  it("stops with an error when the store closes while it runs", async () => {
    const { store } = t;
    const run = store.auditYielding({ slice: 8 });
    await new Promise<void>((resolve) => setImmediate(resolve));
    await store.close();
    await expect(run).rejects.toThrow(/closed/);
  });
});
