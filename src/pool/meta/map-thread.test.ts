import { existsSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { mapKey } from "./codec.js";
import { MetaError, MetaErrorCode } from "./errors.js";
import { PACKED_NUMBERS, type PackedWrites, packUpdate, unpackUpdate } from "./map-batch.js";
import type { PreparedUpdate } from "./mapwrite.js";
import { MetaStore } from "./store.js";
import { fp, loc, sfp, tempDir } from "./testing/helpers.js";
import { dumpMaps } from "./testing/maps.js";
import type { GrainUpdate } from "./types.js";

// The compiled worker (npm run build, which `npm test` runs first).
const MAP_SCRIPT = fileURLToPath(new URL("../../../dist/pool/meta/map-thread.js", import.meta.url));

describe("map thread: packing updates", () => {
  it("unpacks what it packed, for every combination of fingerprint, chunk and known entry", () => {
    const known = { ...loc(9, 8192, 100), refcount: 12 };
    // The caller's updates, and what MetaStore would prepare from each (prepareUpdate).
    const updates: GrainUpdate[] = [
      { grain: 0, fingerprint: null, chunk: loc(1, 0) }, // a hole: no chunk kept
      { grain: 5, fingerprint: fp(1), chunk: loc(3, 2 ** 40 + 4096) }, // 32 bytes given
      { grain: 2 ** 33, fingerprint: sfp(2), indexed: known, indexToken: 41 },
      { grain: 6, fingerprint: sfp(3), indexed: known }, // no token: not trusted
    ];
    const expected: PreparedUpdate[] = [
      { grain: 0, key: mapKey(7, 0), fingerprint: undefined, chunk: undefined },
      { grain: 5, key: mapKey(7, 5), fingerprint: sfp(1), chunk: loc(3, 2 ** 40 + 4096) },
      {
        grain: 2 ** 33,
        key: mapKey(7, 2 ** 33),
        fingerprint: sfp(2),
        chunk: undefined,
        known,
        token: 41,
      },
      { grain: 6, key: mapKey(7, 6), fingerprint: sfp(3), chunk: undefined },
    ];
    const packed: PackedWrites = {
      volumes: [7],
      counts: [updates.length],
      numbers: new Float64Array(updates.length * PACKED_NUMBERS),
      fingerprints: new Uint8Array(updates.length * 16),
    };
    updates.forEach((u, i) => {
      packUpdate(packed, i, u);
    });
    const back = updates.map((_, i) => unpackUpdate(packed, i, 7));
    expect(back).toEqual(expected);
    // Fingerprints are views of the packed bytes, 16 each.
    expect(back[1]!.fingerprint!.length).toBe(16);
  });
});

describe.runIf(existsSync(MAP_SCRIPT))("map thread: group commits off the event loop", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  async function open(deaths: Error[] = [], withLog = true) {
    const root = tempDir("sanmux-map-thread-");
    dirs.push(root);
    const options = {
      path: join(root, "meta"),
      noSync: true,
      mapThread: MAP_SCRIPT,
      onMapThreadDeath: (e: Error) => deaths.push(e),
      ...(withLog ? { mapLog: { dir: join(root, "maplog") } } : {}),
    };
    const store = await MetaStore.open(options);
    return { root, options, store };
  }
  type Internals = { mapThread: { kill(): Promise<void> } };

  it("lands a batch of writes in one commit, rejecting a write that fails its checks alone", async () => {
    const { store } = await open();
    try {
      expect(store.mapWriteThread).toBe(true);
      await store.createVolume(1, 1);
      await store.createVolume(2, 1);
      const token = store.indexToken();
      const results = await store.writeGrainsMany([
        // New chunks, inserted by the write.
        {
          volume: 1,
          updates: [0, 1, 2].map((g) => ({ grain: g, fingerprint: fp(g), chunk: loc(1, g) })),
        },
        // No chunk and not in the index: ChunkMissing, named as given (32 bytes).
        { volume: 2, updates: [{ grain: 0, fingerprint: fp(50) }] },
        // Dedup against what the first write inserted, and a hole.
        {
          volume: 2,
          updates: [
            { grain: 3, fingerprint: fp(1) },
            { grain: 4, fingerprint: null },
          ],
        },
        // An unknown volume.
        { volume: 9, updates: [{ grain: 0, fingerprint: fp(1) }] },
        // Out of range: refused before the batch goes.
        { volume: 1, updates: [{ grain: -1, fingerprint: fp(1) }] },
      ]);
      expect(results.map((r) => r.status)).toEqual([
        "fulfilled",
        "rejected",
        "fulfilled",
        "rejected",
        "rejected",
      ]);
      expect(results[0]).toEqual({
        status: "fulfilled",
        value: { changed: 3, inserted: 3, duplicates: 0 },
      });
      const missing = (results[1] as PromiseRejectedResult).reason as MetaError;
      expect(missing).toBeInstanceOf(MetaError);
      expect(missing.code).toBe(MetaErrorCode.ChunkMissing);
      expect(missing.fingerprints).toEqual([fp(50).toString("hex")]);
      expect(((results[3] as PromiseRejectedResult).reason as MetaError).code).toBe(
        MetaErrorCode.UnknownVolume,
      );
      expect(((results[4] as PromiseRejectedResult).reason as MetaError).code).toBe(
        MetaErrorCode.InvalidArgument,
      );
      // Seen by this thread's reads as soon as the call resolves.
      expect(store.getGrain(1, 2)).toEqual(sfp(2));
      expect(store.getGrain(2, 3)).toEqual(sfp(1));
      expect(store.getGrain(2, 0)).toBeUndefined();
      // The dedup hit's +1 is journaled, the inserts start at their references.
      expect(store.pendingJournalRecords).toBe(1);
      await store.applyJournal();
      expect(store.lookupChunk(1, fp(1))?.refcount).toBe(2);
      // Two writes logged, after the two volume creations.
      expect(store.mapLogStatus()).toMatchObject({ nextSeq: 5, appliedSeq: 4 });
      // A token taken before trusts entries as long as nothing removed any.
      expect(store.indexToken()).toBe(token);
      // A write on the event loop after the batch follows it in the log.
      await store.unmapGrains(1, 0, 1);
      expect(store.mapLogStatus()).toMatchObject({ nextSeq: 6, appliedSeq: 5 });
      expect(store.audit().clean).toBe(true);
    } finally {
      await store.close();
    }
  });

  it("orders map transactions queued during a batch after it, in the log as in the store", async () => {
    const { root, options, store } = await open();
    await store.createVolume(1, 1);
    const batch = store.writeGrainsMany([
      { volume: 1, updates: [{ grain: 0, fingerprint: fp(1), chunk: loc(1, 0) }] },
    ]);
    // Queued while the batch is in flight: it must see grain 0 mapped, and log after it.
    const unmapped = store.unmapGrains(1, 0, 4);
    expect((await batch)[0]!.status).toBe("fulfilled");
    expect(await unmapped).toBe(1);
    expect(store.getGrain(1, 0)).toBeUndefined();
    await store.flush();
    const expected = dumpMaps(store);
    await store.close();
    // Reopened: nothing to cut, and the log replays to the same maps.
    const warnings: object[] = [];
    const logger = { info() {}, warn: (o: object) => warnings.push(o), error() {} };
    const again = await MetaStore.open({
      ...options,
      mapLog: { dir: join(root, "maplog"), logger },
    });
    try {
      expect(warnings).toEqual([]);
      expect(again.mapLogStatus()).toMatchObject({ appliedSeq: 3 });
      expect(dumpMaps(again)).toEqual(expected);
    } finally {
      await again.close();
    }
    expect(readdirSync(join(root, "maplog")).some((f) => f.startsWith("cut-"))).toBe(false);
  });

  it("runs batches on the event loop once the thread is gone, losing nothing", async () => {
    const deaths: Error[] = [];
    const { options, store } = await open(deaths);
    await store.createVolume(1, 1);
    // Killed while idle (never inside a transaction: see dyingWorker below).
    await (store as unknown as Internals).mapThread.kill();
    const writes = Array.from({ length: 8 }, (_, w) => ({
      volume: 1,
      updates: Array.from({ length: 64 }, (_, i) => ({
        grain: w * 64 + i,
        fingerprint: fp(w * 64 + i),
        chunk: loc(1, w * 64 + i),
      })),
    }));
    const results = await store.writeGrainsMany(writes);
    expect(results.every((r) => r.status === "fulfilled")).toBe(true);
    expect(deaths).toHaveLength(1);
    expect(store.mapWriteThread).toBe(false);
    // Later batches run on the event loop.
    const later = await store.writeGrainsMany([
      { volume: 1, updates: [{ grain: 600, fingerprint: fp(1) }] },
    ]);
    expect(later[0]!.status).toBe("fulfilled");
    await store.applyJournal();
    expect(store.lookupChunk(1, fp(1))?.refcount).toBe(2);
    expect(store.lookupChunk(1, fp(300))?.refcount).toBe(1);
    expect(store.audit().clean).toBe(true);
    expect(store.volumeUsage(1)?.mappedGrains).toBe(513);
    await store.flush();
    const expected = dumpMaps(store);
    await store.close();
    const again = await MetaStore.open(options);
    try {
      expect(dumpMaps(again)).toEqual(expected);
      expect(again.mapLogStatus()?.appliedSeq).toBe(again.mapLogStatus()!.nextSeq - 1);
    } finally {
      await again.close();
    }
  });

  type DeathPoint = "before its transaction" | "after its commit";
  /**
   * A stand-in for the map thread's worker that dies on its first batch without answering:
   * before it begins the transaction, or once it has committed. (Not inside: LMDB's writer lock
   * would stay held by a thread that is gone, and every later write of the process wait for it.
   * The real thread answers every error, and is only stopped once nothing is in flight.)
   */
  function dyingWorker(dir: string, when: DeathPoint): string {
    const dist = new URL("../../../dist/pool/meta/", import.meta.url);
    const file = join(dir, `dying-${when.replaceAll(" ", "-")}.mjs`);
    writeFileSync(
      file,
      `import { parentPort, workerData } from "node:worker_threads";
import { openDbs } from ${JSON.stringify(new URL("dbs.js", dist).href)};
import { writeBatchInTxn } from ${JSON.stringify(new URL("map-batch.js", dist).href)};
const dbs = openDbs(workerData.env);
parentPort.on("message", (m) => {
  if (m.close) return process.exit(0);
  ${when === "after its commit" ? "dbs.root.transactionSync(() => writeBatchInTxn(dbs, m.request));" : ""}
  process.exit(1);
});
`,
    );
    return file;
  }

  for (const when of ["before its transaction", "after its commit"] as const)
    it(`takes over a batch whose thread died ${when}: the writes land once, the log agrees`, async () => {
      const root = tempDir("sanmux-map-thread-");
      dirs.push(root);
      const deaths: Error[] = [];
      const warnings: object[] = [];
      const options = {
        path: join(root, "meta"),
        noSync: true,
        mapLog: {
          dir: join(root, "maplog"),
          logger: { info() {}, warn: (o: object) => warnings.push(o), error() {} },
        },
        mapThread: dyingWorker(root, when),
        onMapThreadDeath: (e: Error) => deaths.push(e),
      };
      const store = await MetaStore.open(options);
      await store.createVolume(1, 1);
      await store.writeGrains(1, [{ grain: 100, fingerprint: fp(1), chunk: loc(1, 100) }]);
      // A checkpoint first: the batch's records then open a segment of their own, which a batch
      // that did not commit leaves behind empty (and the writes after it create again).
      await store.checkpointNow();
      const before = store.mapLogStatus()!;
      const results = await store.writeGrainsMany([
        {
          volume: 1,
          updates: [0, 1, 2].map((g) => ({ grain: g, fingerprint: fp(10 + g), chunk: loc(2, g) })),
        },
        { volume: 1, updates: [{ grain: 3, fingerprint: fp(1) }] },
      ]);
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled"]);
      expect(deaths).toHaveLength(1);
      expect(store.mapWriteThread).toBe(false);
      // The two writes again on the event loop, after the thread's two records if it committed
      // (rewriting what a grain holds changes nothing, but is logged).
      const records = when === "after its commit" ? 4 : 2;
      expect(store.mapLogStatus()).toMatchObject({
        nextSeq: before.nextSeq + records,
        appliedSeq: before.appliedSeq + records,
      });
      const segments = readdirSync(join(root, "maplog")).filter((f) => f.endsWith(".log"));
      expect(store.mapLogStatus()?.segments).toBe(segments.length);
      await store.applyJournal();
      expect(store.lookupChunk(1, fp(1))?.refcount).toBe(2);
      expect(store.lookupChunk(1, fp(12))?.refcount).toBe(1);
      expect(store.audit().clean).toBe(true);
      await store.flush();
      const expected = dumpMaps(store);
      await store.close();
      // Reopened: nothing to cut (the failed batch's records were cut already), and a rebuild
      // from the log gives the same maps.
      const again = await MetaStore.open({ ...options, mapThread: undefined });
      try {
        expect(warnings).toEqual([]);
        expect(dumpMaps(again)).toEqual(expected);
      } finally {
        await again.close();
      }
      const rebuilt = await MetaStore.open({
        path: join(root, "rebuilt"),
        noSync: true,
        mapLog: { dir: join(root, "maplog"), rebuild: true },
      });
      try {
        for (const [c, g] of [
          [1, 100],
          [10, 0],
          [11, 1],
          [12, 2],
        ] as const)
          await rebuilt.insertChunk(1, fp(c), c === 1 ? loc(1, g) : loc(2, g));
        const replay = await rebuilt.replayMapLog();
        expect(replay.failed).toBe(0);
        await rebuilt.repair();
        expect(dumpMaps(rebuilt)).toEqual(expected);
      } finally {
        await rebuilt.close();
      }
    });

  it("works without a map log (the journal's sequence numbers still follow)", async () => {
    const { store } = await open([], false);
    try {
      await store.createVolume(1, 1);
      await store.writeGrainsMany([
        { volume: 1, updates: [{ grain: 0, fingerprint: fp(1), chunk: loc(1, 0) }] },
        { volume: 1, updates: [{ grain: 1, fingerprint: fp(1) }] },
      ]);
      await store.writeGrains(1, [{ grain: 2, fingerprint: fp(1) }]);
      await store.writeGrainsMany([{ volume: 1, updates: [{ grain: 3, fingerprint: fp(1) }] }]);
      expect(store.pendingJournalRecords).toBe(3);
      await store.applyJournal();
      expect(store.lookupChunk(1, fp(1))?.refcount).toBe(4);
      expect(store.audit().clean).toBe(true);
    } finally {
      await store.close();
    }
  });
});
