import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { mapKey, SNAPSHOT_FORMAT_VERSION, snapshotKey } from "./codec.js";
import type { MetaDbs } from "./dbs.js";
import { MetaErrorCode } from "./errors.js";
import type { MetaStore } from "./store.js";
import { fp, loc, sfp, type TempStore, tempStore, withRawDbs } from "./testing/helpers.js";

/** Writes `labels` (null = hole) at consecutive grains from `first`; new chunks are inserted. */
function write(store: MetaStore, volume: number, first: number, labels: (string | null)[]) {
  return store.writeGrains(
    volume,
    labels.map((l, i) => ({
      grain: first + i,
      fingerprint: l === null ? null : fp(l),
      ...(l === null ? {} : { chunk: loc(1, labelOffset(l)) }),
    })),
  );
}

/** A stable container offset per label, so that re-inserting the same label is not a duplicate. */
function labelOffset(label: string): number {
  let h = 0;
  for (const c of label) h = (h * 31 + c.charCodeAt(0)) % 1_000_000;
  return h * 4096;
}

/** What a volume (or one of its snapshots) reads at grains [0, n): labels or null. */
function view(store: MetaStore, volume: number, n: number, snapshot?: number): (string | null)[] {
  const opts = snapshot === undefined ? {} : { snapshot };
  return store.resolveGrains(volume, 0, n, opts).map((r) => (r ? labelOf(r.fingerprint) : null));
}

const labels = new Map<string, string>();
function labelOf(f: Buffer): string {
  return labels.get(f.toString("hex")) ?? `?${f.toString("hex").slice(0, 8)}`;
}
for (const l of ["A", "B", "C", "D", "E", "F", "G", "X", "Y", "Z"])
  labels.set(sfp(l).toString("hex"), l);

async function settle(store: MetaStore) {
  const r = await store.applyJournal({ maxRecords: Number.MAX_SAFE_INTEGER });
  expect(r.anomalies).toEqual([]);
  const a = store.audit();
  expect(a.clean, JSON.stringify(a, null, 1)).toBe(true);
  return r;
}

describe("snapshots", () => {
  let t: TempStore;
  beforeEach(async () => {
    t = await tempStore();
    await t.store.createVolume(1, 1);
    await t.store.createVolume(2, 1);
    await t.store.createVolume(3, 2);
  });
  afterEach(async () => {
    await t.cleanup();
  });
  const rc = (l: string) => t.store.lookupChunk(1, fp(l))?.refcount;

  it("reads the old data in the snapshot and the new data in the head after an overwrite", async () => {
    const { store } = t;
    await write(store, 1, 0, ["A", "B", null, "C"]);
    const s = await store.createSnapshot(1);
    expect(s).toBe(0);
    expect(store.listSnapshots(1)).toEqual([0]);
    await write(store, 1, 0, ["X", null, "Y"]);
    expect(view(store, 1, 4)).toEqual(["X", null, "Y", "C"]);
    expect(view(store, 1, 4, s)).toEqual(["A", "B", null, "C"]);
    expect(store.getGrain(1, 0, { snapshot: s })).toEqual(sfp("A"));
    expect(store.getGrain(1, 0)).toEqual(sfp("X"));
    expect(store.getGrain(1, 1, { snapshot: s })).toEqual(sfp("B"));
    expect(store.getGrain(1, 2, { snapshot: s })).toBeUndefined();
    expect(store.getGrain(1, 3, { snapshot: s })).toEqual(sfp("C"));
    expect(
      [...store.mapEntries(1, 0, 10, { snapshot: s })].map((e) => labelOf(e.fingerprint)),
    ).toEqual(["A", "B", "C"]);
    // GET LBA STATUS merges head and old versions.
    expect(store.extentStatus(1, 0, 100, { snapshot: s })).toEqual({ mapped: true, grains: 2 });
    expect(store.extentStatus(1, 2, 100, { snapshot: s })).toEqual({ mapped: false, grains: 1 });
    expect(store.extentStatus(1, 3, 100, { snapshot: s })).toEqual({ mapped: true, grains: 1 });
    expect(store.extentStatus(1, 4, 100, { snapshot: s })).toEqual({ mapped: false, grains: 100 });
    expect(store.extentStatus(1, 0, 100)).toEqual({ mapped: true, grains: 1 });
    expect(store.extentStatus(1, 1, 100)).toEqual({ mapped: false, grains: 1 });
    await settle(store);
    // The snapshot holds A and B: nothing was released.
    expect([rc("A"), rc("B"), rc("C"), rc("X"), rc("Y")]).toEqual([1, 1, 1, 1, 1]);
    expect(store.volumeUsage(1)).toMatchObject({ mappedGrains: 3, referencedBytes: 6000 });
    expect(store.snapshotUsage(1)).toEqual({
      volume: 1,
      domainId: 1,
      snapshots: 1,
      oldVersions: 2,
      logicalBytes: 8192,
      referencedBytes: 4000,
      physicalBytes: 4000,
    });
    expect(store.domainSnapshotUsage(1)).toEqual({
      domainId: 1,
      oldVersions: 2,
      logicalBytes: 8192,
      referencedBytes: 4000,
      physicalBytes: 4000,
    });
    // Physical bytes pay for head and snapshot: the attributions add up, dedup savings stay ≥ 0.
    expect(store.volumeUsage(1)?.physicalBytes).toBe(6000);
    expect(store.domainUsage(1)).toMatchObject({ physicalBytes: 10000, savedByDedup: 0 });
  });

  it("keeps an unmapped grain in the snapshot", async () => {
    const { store } = t;
    await write(store, 1, 10, ["A", "B", "C"]);
    const s = await store.createSnapshot(1);
    expect(await store.unmapGrains(1, 0, 100)).toBe(3);
    expect(view(store, 1, 14)).toEqual(Array(14).fill(null));
    expect(view(store, 1, 14, s).slice(10)).toEqual(["A", "B", "C", null]);
    expect(store.extentStatus(1, 0, 100)).toEqual({ mapped: false, grains: 100 });
    expect(store.extentStatus(1, 0, 100, { snapshot: s })).toEqual({ mapped: false, grains: 10 });
    expect(store.extentStatus(1, 10, 100, { snapshot: s })).toEqual({ mapped: true, grains: 3 });
    await settle(store);
    expect([rc("A"), rc("B"), rc("C")]).toEqual([1, 1, 1]);
    expect(store.domainUsage(1)).toMatchObject({ mappedGrains: 0, liveChunks: 3, deadChunks: 0 });
    // Rewriting after the unmap: the snapshot still reads the old version.
    await write(store, 1, 11, ["X"]);
    expect(view(store, 1, 13, s).slice(10)).toEqual(["A", "B", "C"]);
    expect(view(store, 1, 13).slice(10)).toEqual([null, "X", null]);
    await settle(store);
  });

  it("keeps each snapshot's view through changes between several snapshots", async () => {
    const { store } = t;
    await write(store, 1, 0, ["A", "A", "B", null]);
    const s0 = await store.createSnapshot(1);
    await write(store, 1, 1, ["C", null]);
    // Overwritten twice between snapshots: only the first overwrite preserves a version.
    await write(store, 1, 3, ["D"]);
    await write(store, 1, 3, ["E"]);
    const s1 = await store.createSnapshot(1);
    await write(store, 1, 0, ["F", null, "G", "A"]);
    const s2 = await store.createSnapshot(1);
    expect([s0, s1, s2]).toEqual([0, 1, 2]);
    await write(store, 1, 0, [null, null, null, null]);
    expect(view(store, 1, 4, s0)).toEqual(["A", "A", "B", null]);
    expect(view(store, 1, 4, s1)).toEqual(["A", "C", null, "E"]);
    expect(view(store, 1, 4, s2)).toEqual(["F", null, "G", "A"]);
    expect(view(store, 1, 4)).toEqual([null, null, null, null]);
    await settle(store);
    // Old versions (grain: data [birth, death)): 1: A [0,1), 2: B [0,1), 0: A [0,2),
    // 1: C [1,2), 3: E [1,2), 0: F [2,3), 2: G [2,3), 3: A [2,3).
    expect(store.snapshotUsage(1)?.oldVersions).toBe(8);
    // D lived only between two writes of one generation: no snapshot saw it, it was released.
    expect([rc("A"), rc("B"), rc("C"), rc("D"), rc("E"), rc("F"), rc("G")]).toEqual([
      3, 1, 1, 0, 1, 1, 1,
    ]);
  });

  it("deleting a snapshot releases exactly the versions only it saw", async () => {
    const { store } = t;
    await write(store, 1, 0, ["A", "B"]);
    const s0 = await store.createSnapshot(1);
    await write(store, 1, 0, ["C"]); // A: seen by s0 only
    const s1 = await store.createSnapshot(1);
    await write(store, 1, 0, ["D", "E"]); // C: seen by s1 only; B: seen by s0 and s1
    const s2 = await store.createSnapshot(1);
    await write(store, 1, 1, ["F"]); // E: seen by s2 only
    await settle(store);
    expect([rc("A"), rc("B"), rc("C"), rc("D"), rc("E"), rc("F")]).toEqual([1, 1, 1, 1, 1, 1]);

    expect(await store.deleteSnapshot(1, s1)).toEqual({ released: 1, finished: true });
    expect(store.listSnapshots(1)).toEqual([s0, s2]);
    let r = await settle(store);
    expect(r.dead.map((d) => labelOf(d.fingerprint))).toEqual(["C"]);
    expect(view(store, 1, 2, s0)).toEqual(["A", "B"]);
    expect(view(store, 1, 2, s2)).toEqual(["D", "E"]);
    expect(() => store.getGrain(1, 0, { snapshot: s1 })).toThrow(
      expect.objectContaining({ code: MetaErrorCode.UnknownSnapshot }),
    );

    expect(await store.deleteSnapshot(1, s0)).toEqual({ released: 2, finished: true });
    r = await settle(store);
    expect(r.dead.map((d) => labelOf(d.fingerprint)).sort()).toEqual(["A", "B"]);
    expect(view(store, 1, 2, s2)).toEqual(["D", "E"]);

    expect(await store.deleteSnapshot(1, s2)).toEqual({ released: 1, finished: true });
    r = await settle(store);
    expect(r.dead.map((d) => labelOf(d.fingerprint))).toEqual(["E"]);
    expect(store.listSnapshots(1)).toEqual([]);
    expect(store.snapshotUsage(1)).toMatchObject({
      snapshots: 0,
      oldVersions: 0,
      referencedBytes: 0,
    });
    expect(store.domainUsage(1)).toMatchObject({ mappedGrains: 2, liveChunks: 2 });
    // Without live snapshots, overwrites release at once again.
    await write(store, 1, 0, ["X"]);
    r = await settle(store);
    expect(r.dead.map((d) => labelOf(d.fingerprint))).toEqual(["D"]);
    await expect(store.deleteSnapshot(1, s2)).rejects.toMatchObject({
      code: MetaErrorCode.UnknownSnapshot,
    });
  });

  it("a version two snapshots see is released with the second", async () => {
    const { store } = t;
    await write(store, 1, 0, ["A"]);
    const s0 = await store.createSnapshot(1);
    const s1 = await store.createSnapshot(1);
    await write(store, 1, 0, ["B"]);
    expect((await store.deleteSnapshot(1, s0)).released).toBe(0);
    expect(view(store, 1, 1, s1)).toEqual(["A"]);
    await settle(store);
    expect((await store.deleteSnapshot(1, s1)).released).toBe(1);
    await settle(store);
    expect(rc("A")).toBe(0);
  });

  it("preserves nothing for a snapshot whose deletion has started", async () => {
    const { store } = t;
    await write(store, 1, 0, ["A", "B"]);
    const s0 = await store.createSnapshot(1);
    await write(store, 1, 0, ["C"]);
    const s1 = await store.createSnapshot(1);
    // Mark s1 as being deleted without releasing anything yet.
    expect(await store.deleteSnapshot(1, s1, { maxBatches: 0 })).toEqual({
      released: 0,
      finished: false,
    });
    // B (born before s0) is still preserved for s0; C (born after s0) is released at once.
    await write(store, 1, 0, ["D", "E"]);
    let r = await settle(store);
    expect(r.dead.map((d) => labelOf(d.fingerprint))).toEqual(["C"]);
    expect(view(store, 1, 2, s0)).toEqual(["A", "B"]);
    expect(await store.deleteSnapshot(1, s1)).toEqual({ released: 0, finished: true });
    await store.deleteSnapshot(1, s0);
    r = await settle(store);
    expect(r.dead.map((d) => labelOf(d.fingerprint)).sort()).toEqual(["A", "B"]);
  });

  it("takes a snapshot with the same two writes whatever the volume size", async () => {
    const { store } = t;
    await write(store, 1, 0, ["A"]);
    await store.writeGrains(
      2,
      Array.from({ length: 20_000 }, (_, g) => ({
        grain: g,
        fingerprint: fp(g),
        chunk: loc(2, g * 2000),
      })),
    );
    await store.createSnapshot(3); // the store's first snapshot also marks the format
    const touched = (): { writes: number; reads: number; restore: () => void } => {
      const counts = { writes: 0, reads: 0 };
      const spies: { mockRestore(): void }[] = [];
      for (const [name, db] of Object.entries(store.dbs) as [keyof MetaDbs, MetaDbs["map"]][]) {
        if (name === "root") continue;
        // The store writes with putSync / removeSync only.
        for (const m of ["putSync", "removeSync"] as const) {
          const orig = db[m].bind(db) as (...a: unknown[]) => unknown;
          spies.push(
            vi.spyOn(db, m).mockImplementation(((...a: unknown[]) => {
              counts.writes++;
              return orig(...a);
            }) as never),
          );
        }
        for (const m of ["get", "getRange", "getKeys", "doesExist"] as const) {
          const orig = db[m].bind(db) as (...a: unknown[]) => unknown;
          spies.push(
            vi.spyOn(db, m).mockImplementation(((...a: unknown[]) => {
              counts.reads++;
              return orig(...a);
            }) as never),
          );
        }
      }
      const restore = () => {
        for (const s of spies) s.mockRestore();
      };
      return Object.assign(counts, { restore });
    };
    const small = touched();
    await store.createSnapshot(1);
    small.restore();
    const big = touched();
    await store.createSnapshot(2);
    big.restore();
    expect(small.writes).toBe(2);
    expect(big.writes).toBe(2);
    expect(big.reads).toBe(small.reads);
    expect(big.reads).toBeLessThanOrEqual(2);
    // And the second snapshot of the big volume costs the same again.
    const again = touched();
    await store.createSnapshot(2);
    again.restore();
    expect(again.writes).toBe(2);
  });

  it("writes bare fingerprints until the first snapshot, then fingerprint and birth", async () => {
    const { store } = t;
    await write(store, 1, 0, ["A"]);
    await store.createSnapshot(1);
    await write(store, 1, 1, ["B"]);
    await store.close();
    await withRawDbs(t.dir, (dbs) => {
      expect(dbs.map.get(mapKey(1, 0))?.length).toBe(16);
      expect(dbs.map.get(mapKey(1, 1))?.length).toBe(20);
      expect(dbs.meta.get(Buffer.from("format"))?.readUInt32BE(0)).toBe(SNAPSHOT_FORMAT_VERSION);
    });
    const store2 = await t.reopen();
    expect(view(store2, 1, 2, 0)).toEqual(["A", null]);
  });

  it("finishes a deletion interrupted between its transactions, audit clean in between", async () => {
    const { store } = t;
    await write(store, 1, 0, ["A", "B", "C", "D", "E"]);
    const s0 = await store.createSnapshot(1);
    await write(store, 1, 0, ["X", "X", "X", "X", "X"]);
    const s1 = await store.createSnapshot(1);
    await write(store, 1, 0, ["Y", "Y"]);
    await settle(store);
    const partial = await store.deleteSnapshot(1, s0, { batchSize: 2, maxBatches: 1 });
    expect(partial).toEqual({ released: 2, finished: false });
    // As after a crash: the deletion is recorded, the audit is clean, reads of it fail.
    const store2 = await t.reopen();
    expect(store2.audit().clean).toBe(true);
    expect(store2.unfinishedSnapshotDeletions()).toEqual([{ volume: 1, snapshot: s0 }]);
    expect(store2.listSnapshots(1)).toEqual([s1]);
    expect(() => store2.resolveGrains(1, 0, 1, { snapshot: s0 })).toThrow(
      expect.objectContaining({ code: MetaErrorCode.UnknownSnapshot }),
    );
    // Writes go on meanwhile.
    await write(store2, 1, 0, ["Z"]);
    const first = await settle(store2);
    expect(first.dead.map((d) => labelOf(d.fingerprint)).sort()).toEqual(["A", "B"]);
    expect(await store2.deleteSnapshot(1, s0, { batchSize: 2 })).toEqual({
      released: 3,
      finished: true,
    });
    expect(store2.unfinishedSnapshotDeletions()).toEqual([]);
    const r = await settle(store2);
    expect(r.dead.map((d) => labelOf(d.fingerprint)).sort()).toEqual(["C", "D", "E"]);
    expect(view(store2, 1, 5, s1)).toEqual(["X", "X", "X", "X", "X"]);
  });

  it("deleting a volume releases its head, its old versions and its snapshots", async () => {
    const { store } = t;
    await write(store, 2, 0, ["A", "B"]);
    await write(store, 1, 0, ["A", "B", "C"]);
    await store.createSnapshot(1);
    await write(store, 1, 0, ["D", null]);
    await store.createSnapshot(1);
    await write(store, 1, 2, ["E"]);
    await store.deleteVolume(1);
    await settle(store);
    expect(store.volumeDomain(1)).toBeUndefined();
    expect(store.listSnapshots(1)).toEqual([]);
    expect(store.unfinishedSnapshotDeletions()).toEqual([]);
    expect(store.domainUsage(1)).toMatchObject({ mappedGrains: 2, liveChunks: 2 });
    expect(store.domainSnapshotUsage(1)).toMatchObject({ oldVersions: 0, referencedBytes: 0 });
    await store.deleteVolume(2);
    await settle(store);
    expect(store.domainUsage(1)).toMatchObject({
      mappedGrains: 0,
      referencedBytes: 0,
      liveChunks: 0,
      physicalBytes: 0,
      deadChunks: 5,
    });
    expect(store.domainSnapshotUsage(1)).toEqual({
      domainId: 1,
      oldVersions: 0,
      logicalBytes: 0,
      referencedBytes: 0,
      physicalBytes: 0,
    });
    for (const [, db] of Object.entries(store.dbs).filter(([n]) =>
      ["map", "mapold", "mapdeath", "snapshots"].includes(n),
    ))
      expect((db as MetaDbs["map"]).getCount()).toBe(0);
  });

  it("audit finds old versions out of step; repair brings them back", async () => {
    const { store } = t;
    await write(store, 1, 0, ["A", "B"]);
    const s0 = await store.createSnapshot(1);
    await write(store, 1, 0, ["C", "D"]);
    await settle(store);
    await store.close();
    await withRawDbs(t.dir, (dbs) => {
      // Lose one listing, and forget the snapshot record (its versions are seen by no one).
      const [first] = [...dbs.mapdeath.getKeys()];
      dbs.mapdeath.removeSync(first!);
    });
    let s = await t.reopen();
    let report = s.audit();
    expect(report.oldVersions.count).toBe(1);
    expect(report.oldVersions.items[0]).toMatchObject({ volume: 1, problem: "unlisted" });
    expect(report.clean).toBe(false);
    expect(await s.repair()).toMatchObject({ oldVersionsFixed: 1 });
    expect(s.audit().clean).toBe(true);
    expect(view(s, 1, 2, s0)).toEqual(["A", "B"]);

    await s.close();
    await withRawDbs(t.dir, (dbs) => {
      dbs.snapshots.removeSync(snapshotKey(1, 0));
    });
    s = await t.reopen();
    report = s.audit();
    expect(report.oldVersions.items.map((i) => i.problem)).toEqual(["unseen", "unseen"]);
    expect(report.drift.map((d) => d.field)).toEqual(["liveSnapshots"]);
    await s.repair();
    expect(s.audit().clean).toBe(true);
    expect(s.lookupChunk(1, fp("A"))?.refcount).toBe(0);
    expect(s.snapshotUsage(1)).toMatchObject({ snapshots: 0, oldVersions: 0 });
  });

  it("rejects unknown snapshots and volumes", async () => {
    const { store } = t;
    const code = async (p: Promise<unknown>) =>
      ((await p.catch((e: unknown) => e)) as { code: string }).code;
    expect(await code(store.createSnapshot(9))).toBe(MetaErrorCode.UnknownVolume);
    expect(await code(store.deleteSnapshot(1, 0))).toBe(MetaErrorCode.UnknownSnapshot);
    expect(() => store.extentStatus(1, 0, 1, { snapshot: 0 })).toThrow(
      expect.objectContaining({ code: MetaErrorCode.UnknownSnapshot }),
    );
    expect(store.listSnapshots(9)).toEqual([]);
  });
});
