import { existsSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { mapKey } from "./codec.js";
import { MetaError, MetaErrorCode } from "./errors.js";
import { PACKED_NUMBERS, type PackedWrites, packUpdate, unpackUpdate } from "./map-thread.js";
import type { PreparedUpdate } from "./mapwrite.js";
import { MetaStore } from "./store.js";
import { fp, loc, sfp, tempDir } from "./testing/helpers.js";
import { dumpMaps } from "./testing/maps.js";

// The compiled worker (npm run build, which `npm test` runs first).
const MAP_SCRIPT = fileURLToPath(new URL("../../../dist/pool/meta/map-thread.js", import.meta.url));

describe("map thread: packing updates", () => {
  it("unpacks what it packed, for every combination of fingerprint, chunk and known entry", () => {
    const updates: PreparedUpdate[] = [
      { grain: 0, key: mapKey(7, 0), fingerprint: undefined, chunk: undefined },
      { grain: 5, key: mapKey(7, 5), fingerprint: sfp(1), chunk: loc(3, 2 ** 40 + 4096) },
      {
        grain: 2 ** 33,
        key: mapKey(7, 2 ** 33),
        fingerprint: sfp(2),
        chunk: undefined,
        known: { ...loc(9, 8192, 100), refcount: 12 },
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
    expect(back).toEqual(updates);
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
    const again = await MetaStore.open({ ...options, mapLog: { ...options.mapLog, logger } });
    try {
      expect(warnings).toEqual([]);
      expect(again.mapLogStatus()).toMatchObject({ appliedSeq: 3 });
      expect(dumpMaps(again)).toEqual(expected);
    } finally {
      await again.close();
    }
    expect(readdirSync(join(root, "maplog")).some((f) => f.startsWith("cut-"))).toBe(false);
  });

  it("takes over when the thread dies with a batch in flight: nothing lost, nothing twice", async () => {
    const deaths: Error[] = [];
    const { options, store } = await open(deaths);
    await store.createVolume(1, 1);
    const writes = Array.from({ length: 8 }, (_, w) => ({
      volume: 1,
      updates: Array.from({ length: 64 }, (_, i) => ({
        grain: w * 64 + i,
        fingerprint: fp(w * 64 + i),
        chunk: loc(1, w * 64 + i),
      })),
    }));
    const batch = store.writeGrainsMany(writes);
    // Killed at once: the batch may or may not have committed; either way it lands once.
    await (store as unknown as Internals).mapThread.kill();
    const results = await batch;
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
