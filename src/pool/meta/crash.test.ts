import { spawn } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MetaStore } from "./store.js";
import { fp, loc, sfp, type TempStore, tempDir, tempStore } from "./testing/helpers.js";
import { dumpMaps } from "./testing/maps.js";

describe("crash consistency", () => {
  let t: TempStore;
  beforeEach(async () => {
    t = await tempStore({ noSync: false });
    await t.store.createVolume(1, 1);
    await t.store.createVolume(2, 1);
  });
  afterEach(async () => {
    await t.cleanup();
  });

  it("map updates whose journal was not applied before a stop are applied after restart", async () => {
    let store = t.store;
    await store.writeGrains(1, [
      { grain: 0, fingerprint: fp("A"), chunk: loc(1, 0) },
      { grain: 1, fingerprint: fp("B"), chunk: loc(1, 2000) },
    ]);
    await store.writeGrains(2, [{ grain: 0, fingerprint: fp("A") }]);
    await store.applyJournal();
    // Committed and flushed, but not applied: then the process goes away.
    await store.writeGrains(1, [{ grain: 0, fingerprint: fp("C"), chunk: loc(1, 4000) }]);
    await store.writeGrains(2, [{ grain: 5, fingerprint: fp("B") }]);
    await store.unmapGrains(1, 1, 1);
    await store.flush();
    store = await t.reopen();
    expect(store.pendingJournalRecords).toBe(3);
    // The applied refcounts lag, the maps do not; the audit counts the journal in.
    expect(store.lookupChunk(1, fp("A"))?.refcount).toBe(2);
    expect(store.getGrain(1, 0)).toEqual(sfp("C"));
    expect(store.audit().clean).toBe(true);
    const r = await store.applyJournal();
    expect(r.records).toBe(3);
    expect(r.anomalies).toEqual([]);
    expect(store.pendingJournalRecords).toBe(0);
    expect(["A", "B", "C"].map((c) => store.lookupChunk(1, fp(c))?.refcount)).toEqual([1, 1, 1]);
    expect(store.domainUsage(1)).toMatchObject({
      mappedGrains: 3,
      liveChunks: 3,
      physicalBytes: 6000,
    });
    expect(store.audit().clean).toBe(true);
    // Applying again after another restart changes nothing: the records are gone with their effect.
    store = await t.reopen();
    expect((await store.applyJournal()).records).toBe(0);
    expect(store.lookupChunk(1, fp("A"))?.refcount).toBe(1);
  });

  it("an apply batch interrupted before commit leaves the journal intact", async () => {
    let store = t.store;
    await store.writeGrains(1, [{ grain: 0, fingerprint: fp("A"), chunk: loc(1, 0) }]);
    // Queue the batch and close at once: close waits for queued transactions, so the batch
    // either commits completely or (had the process died) not at all. Either way the audit holds.
    const applying = store.applyJournal();
    store = await t.reopen();
    await applying;
    expect(store.audit().clean).toBe(true);
    expect(store.pendingJournalRecords).toBe(0);
    expect(store.lookupChunk(1, fp("A"))?.refcount).toBe(1);
  });
});

const CHILD = fileURLToPath(new URL("./testing/crash-child.ts", import.meta.url));
const VITE_NODE = fileURLToPath(
  new URL("../../../node_modules/vite-node/vite-node.mjs", import.meta.url),
);

// The compiled map thread (npm run build, which `npm test` runs first): every other kill point
// has the worker's writes go through it.
const MAP_SCRIPT = fileURLToPath(new URL("../../../dist/pool/meta/map-thread.js", import.meta.url));

/**
 * Runs the crash worker until it has synced `minSynced` markers plus `extraMs`, then SIGKILLs it.
 * `mapThread`: the worker's writes go to the map thread in batches.
 */
function runAndKill(
  dir: string,
  seed: number,
  minSynced: number,
  extraMs: number,
  mapThread = false,
): Promise<number> {
  const args = [VITE_NODE, CHILD, dir, String(seed), ...(mapThread ? [MAP_SCRIPT] : [])];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    let lastSynced = 0;
    let armed = false;
    child.stdout.setEncoding("utf8").on("data", (s: string) => {
      out += s;
      for (const m of out.matchAll(/synced (\d+)/g))
        lastSynced = Math.max(lastSynced, Number(m[1]));
      if (!armed && lastSynced >= minSynced) {
        armed = true;
        setTimeout(() => child.kill("SIGKILL"), extraMs);
      }
    });
    child.stderr.setEncoding("utf8").on("data", (s: string) => {
      err += s;
    });
    child.on("exit", (_code, signal) => {
      if (signal === "SIGKILL") resolve(lastSynced);
      else reject(new Error(`crash worker exited by itself (${_code}): ${err}`));
    });
    setTimeout(() => child.kill("SIGKILL"), 60_000).unref();
  });
}

describe("crash consistency under SIGKILL", () => {
  it("keeps maps, journal, refcounts and counters consistent at every kill point", async () => {
    const dir = tempDir();
    try {
      // Kill points: a few ms to a few hundred ms after a sync, in one directory that accumulates
      // history across kills (each restart continues from the state the previous kill left).
      const delays = [0, 3, 17, 41, 90, 150];
      // The worker also takes and deletes snapshots and copies maps: make sure it did.
      let snapshotsSeen = 0;
      let oldVersionsSeen = 0;
      let replayed = 0;
      // Open-time repairs of the log (cut records of commits that never happened), for the record.
      const cuts: object[] = [];
      for (const [i, delay] of delays.entries()) {
        const synced = await runAndKill(
          dir,
          1000 + i,
          2,
          delay,
          i % 2 === 1 && existsSync(MAP_SCRIPT),
        );
        const store = await MetaStore.open({
          path: dir,
          mapLog: {
            dir: join(dir, "maplog"),
            logger: { info() {}, error() {}, warn: (o: object) => cuts.push(o) },
          },
        });
        try {
          // The map log rebuilds exactly the maps the surviving environment holds (records of
          // transactions that never committed were cut at open).
          const rebuilt = await MetaStore.open({
            path: join(dir, `rebuilt-${i}`),
            noSync: true,
            mapLog: { dir: join(dir, "maplog"), rebuild: true },
          });
          try {
            const r = await rebuilt.replayMapLog();
            expect(r.failed).toBe(0);
            replayed += r.records;
            expect(dumpMaps(rebuilt)).toEqual(dumpMaps(store));
          } finally {
            await rebuilt.close();
            rmSync(join(dir, `rebuilt-${i}`), { recursive: true, force: true });
          }
          const before = store.audit();
          expect(before.leaks.count + before.miscounts.count + before.damage.count).toBe(0);
          expect(before.staleDead.count + before.orphans.count).toBe(0);
          expect(before.drift).toEqual([]);
          // Every marker acknowledged by flush() survived.
          for (let n = 1; n <= synced; n++)
            expect(store.getGrain(2, 1000 + n)).toEqual(sfp(`data-${n % 64}`));
          const r = await store.applyJournal({ maxRecords: Number.MAX_SAFE_INTEGER });
          expect(r.anomalies).toEqual([]);
          expect(store.audit().clean).toBe(true);
          snapshotsSeen += store.listSnapshots(1).length + store.listSnapshots(2).length;
          oldVersionsSeen += store.domainSnapshotUsage(1).oldVersions;
        } finally {
          await store.close();
        }
      }
      expect(snapshotsSeen).toBeGreaterThan(0);
      expect(replayed).toBeGreaterThan(0);
      if (process.env.MAPLOG_DEBUG) console.log("map log repairs at open", cuts);
      expect(oldVersionsSeen).toBeGreaterThan(0);
      // Interrupted snapshot deletions finish after a restart, and leave the audit clean.
      const store = await MetaStore.open({ path: dir, mapLog: { dir: join(dir, "maplog") } });
      try {
        for (const { volume, snapshot } of store.unfinishedSnapshotDeletions())
          expect((await store.deleteSnapshot(volume, snapshot)).finished).toBe(true);
        for (const volume of [1, 2])
          for (const s of store.listSnapshots(volume)) await store.deleteSnapshot(volume, s);
        await store.applyJournal({ maxRecords: Number.MAX_SAFE_INTEGER });
        expect(store.audit().clean).toBe(true);
        expect(store.domainSnapshotUsage(1).oldVersions).toBe(0);
      } finally {
        await store.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
