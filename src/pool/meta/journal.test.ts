import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RefcountApplier } from "./applier.js";
import { MetaErrorCode } from "./errors.js";
import { fp, loc, sfp, type TempStore, tempStore, twoDeadChunks } from "./testing/helpers.js";

// Batches on the event loop, and on their own thread (apply-thread.ts): the compiled worker
// (npm run build, which `npm test` runs first).
const APPLY_SCRIPT = fileURLToPath(
  new URL("../../../dist/pool/meta/apply-thread.js", import.meta.url),
);
const modes = [
  { where: "on the event loop", applyThread: undefined },
  ...(existsSync(APPLY_SCRIPT)
    ? [{ where: "on their own thread", applyThread: APPLY_SCRIPT }]
    : []),
];

describe.each(modes)("refcount journal, batches applied $where", ({ applyThread }) => {
  let t: TempStore;
  beforeEach(async () => {
    t = await tempStore(applyThread === undefined ? {} : { applyThread });
    await t.store.createVolume(1, 1);
  });
  afterEach(async () => {
    await t.cleanup();
  });

  it("appends one record per map update and applies them in batches", async () => {
    const { store } = t;
    // 100 updates of 4 grains each, over 10 distinct chunks, queued in one event turn.
    await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        store.writeGrains(
          1,
          [0, 1, 2, 3].map((j) => ({
            grain: i * 4 + j,
            fingerprint: fp((i + j) % 10),
            chunk: loc(1, (i + j) % 10),
          })),
        ),
      ),
    );
    // The first update inserts the four chunks it names, with their references: no record.
    expect(store.pendingJournalRecords).toBe(99);
    expect(store.lookupChunk(1, fp(0))?.refcount).toBe(1);
    expect(store.lookupChunk(1, fp(1))?.refcount).toBe(1);
    const first = await store.applyJournal({ maxRecords: 30 });
    expect(first.records).toBe(30);
    expect(store.pendingJournalRecords).toBe(69);
    const rest = await store.applyJournal();
    expect(rest.records).toBe(69);
    expect(store.pendingJournalRecords).toBe(0);
    let total = 0;
    for (let c = 0; c < 10; c++) total += store.lookupChunk(1, fp(c))?.refcount ?? 0;
    expect(total).toBe(400);
    expect(store.lookupChunk(1, fp(0))?.refcount).toBe(40);
    expect((await store.applyJournal()).records).toBe(0);
  });

  it("lists a chunk dead when its +1 and -1 cancel within one batch", async () => {
    const { store } = t;
    await store.writeGrains(1, [{ grain: 0, fingerprint: fp("tmp"), chunk: loc(5, 0, 3000) }]);
    await store.writeGrains(1, [{ grain: 0, fingerprint: fp("final"), chunk: loc(5, 3000, 1000) }]);
    const r = await store.applyJournal();
    expect(r.dead.map((d) => d.fingerprint)).toEqual([sfp("tmp")]);
    expect(store.containerUsage(5)).toMatchObject({ deadChunks: 1, deadBytes: 3000 });
    expect(store.domainUsage(1)).toMatchObject({
      liveChunks: 1,
      physicalBytes: 1000,
      deadBytes: 3000,
    });
  });

  it("revives a dead chunk that is deduplicated against before GC", async () => {
    const { store } = t;
    await store.writeGrains(1, [{ grain: 0, fingerprint: fp("a"), chunk: loc(2, 0, 1234) }]);
    await store.applyJournal();
    await store.unmapGrains(1, 0, 1);
    expect((await store.applyJournal()).dead).toHaveLength(1);
    expect(store.domainUsage(1)).toMatchObject({ deadChunks: 1, physicalBytes: 0 });
    // A later writer finds the dead chunk in the index and points at it.
    expect(store.lookupChunk(1, fp("a"))?.refcount).toBe(0);
    await store.writeGrains(1, [{ grain: 7, fingerprint: fp("a") }]);
    const r = await store.applyJournal();
    expect(r.revived).toBe(1);
    expect([...store.deadChunks()]).toEqual([]);
    expect(store.containerUsage(2)).toMatchObject({ deadChunks: 0, deadBytes: 0 });
    expect(store.domainUsage(1)).toMatchObject({
      deadChunks: 0,
      liveChunks: 1,
      physicalBytes: 1234,
    });
  });

  it("GC reclaims only chunks still dead after the whole journal is applied", async () => {
    const { store } = t;
    await twoDeadChunks(store);
    expect([...store.deadChunks(3)]).toHaveLength(2);
    // Between the batch and GC, a writer dedups against "b": its +1 is only in the journal.
    await store.writeGrains(1, [{ grain: 9, fingerprint: fp("b") }]);
    const reclaimed = await store.reclaimDeadChunks(3);
    expect(reclaimed.map((d) => d.fingerprint)).toEqual([sfp("a")]);
    expect(store.lookupChunk(1, fp("a"))).toBeUndefined();
    expect(store.lookupChunk(1, fp("b"))?.refcount).toBe(1);
    expect(store.domainUsage(1)).toMatchObject({ deadChunks: 0, deadBytes: 0 });
    // A writer that looked "a" up before the reclaim must store it again.
    await expect(store.writeGrains(1, [{ grain: 2, fingerprint: fp("a") }])).rejects.toMatchObject({
      code: MetaErrorCode.ChunkMissing,
    });
    expect(store.audit().clean).toBe(true);
  });

  it("the background applier keeps the journal short under load", async () => {
    const { store } = t;
    const batches: number[] = [];
    const applier = new RefcountApplier(store, {
      intervalMs: 5,
      highWater: 50,
      onApplied: (r) => batches.push(r.records),
    });
    applier.start();
    for (let round = 0; round < 20; round++) {
      await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          store.writeGrains(1, [{ grain: round * 50 + i, fingerprint: fp(i), chunk: loc(1, i) }]),
        ),
      );
    }
    await applier.stop({ drain: true });
    expect(store.pendingJournalRecords).toBe(0);
    // The first round inserts the 50 chunks with their references; the others are journaled.
    expect(applier.records).toBe(950);
    expect(batches.reduce((a, b) => a + b, 0)).toBe(950);
    expect(batches.length).toBeLessThan(950); // grouped, not one by one
    expect(store.lookupChunk(1, fp(0))?.refcount).toBe(20);
    expect(store.audit().clean).toBe(true);
  });
});

describe.skipIf(!existsSync(APPLY_SCRIPT))("refcount journal: the apply thread", () => {
  let t: TempStore;
  let deaths: Error[];
  beforeEach(async () => {
    deaths = [];
    t = await tempStore({ applyThread: APPLY_SCRIPT, onApplyThreadDeath: (e) => deaths.push(e) });
    expect(t.store.journalApplyThread).toBe(true);
    await t.store.createVolume(1, 1);
  });
  afterEach(async () => {
    await t.cleanup();
  });

  const thread = () =>
    (t.store as unknown as { applyThread: { alive: boolean; kill(): Promise<void> } }).applyThread;

  it("applies on the event loop once the thread is gone, losing nothing", async () => {
    const { store } = t;
    await store.writeGrains(1, [{ grain: 0, fingerprint: fp("x"), chunk: loc(1, 0) }]);
    await store.writeGrains(1, [{ grain: 1, fingerprint: fp("x") }]);
    expect((await store.applyJournal()).records).toBe(1);
    expect(store.lookupChunk(1, fp("x"))?.refcount).toBe(2);
    await thread().kill();
    expect(thread().alive).toBe(false);
    expect(t.store.journalApplyThread).toBe(false);
    expect(deaths).toHaveLength(1); // the pool logs it
    await store.writeGrains(1, [{ grain: 2, fingerprint: fp("x") }]);
    expect((await store.applyJournal()).records).toBe(1);
    expect(store.lookupChunk(1, fp("x"))?.refcount).toBe(3);
    expect(store.audit().clean).toBe(true);
  });

  it("what follows applyJournal reads the batch, even before lmdb-js renews its snapshot", async () => {
    const { store } = t;
    await store.writeGrains(1, [{ grain: 0, fingerprint: fp("z"), chunk: loc(1, 0) }]);
    await store.writeGrains(1, [{ grain: 1, fingerprint: fp("z") }]);
    // lmdb-js renews the main thread's read snapshot on a timer after a read: frozen here, the
    // read below keeps the snapshot from before the batch unless applyJournal renews it.
    vi.useFakeTimers({ toFake: ["setTimeout"] });
    try {
      expect(store.lookupChunk(1, fp("z"))?.refcount).toBe(1);
      expect((await store.applyJournal()).records).toBe(1);
      expect(store.lookupChunk(1, fp("z"))?.refcount).toBe(2);
    } finally {
      vi.useRealTimers();
    }
  });

  it("leaves a store that reopens with every batch it acknowledged", async () => {
    const { store } = t;
    await store.writeGrains(1, [{ grain: 0, fingerprint: fp("y"), chunk: loc(1, 0) }]);
    await store.writeGrains(1, [{ grain: 1, fingerprint: fp("y") }]);
    await store.unmapGrains(1, 0, 2);
    const r = await store.applyJournal();
    expect(r.dead.map((d) => d.fingerprint)).toEqual([sfp("y")]);
    expect(Buffer.isBuffer(r.dead[0]!.fingerprint)).toBe(true);
    const again = await t.reopen();
    expect(deaths).toEqual([]); // closing the store stops the thread: no death to report
    expect(again.pendingJournalRecords).toBe(0);
    expect(again.lookupChunk(1, fp("y"))?.refcount).toBe(0);
    expect([...again.deadChunks()].map((d) => d.fingerprint)).toEqual([sfp("y")]);
    expect(again.audit().clean).toBe(true);
  });
});
