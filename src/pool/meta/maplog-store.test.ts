import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import {
  FINGERPRINT_BYTES,
  LONG_FINGERPRINT_FORMATS,
  readU32,
  SNAPSHOT_FORMAT_VERSION,
  u32Value,
} from "./codec.js";
import { MetaError } from "./errors.js";
import { MetaStore, type MetaStoreOptions } from "./store.js";
import { fp, loc, sfp, tempDir, withRawDbs, xorshift32 } from "./testing/helpers.js";
import { downgradeMapLog } from "./testing/legacy.js";
import { dumpMaps } from "./testing/maps.js";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function paths() {
  const root = tempDir("sanmux-maplog-store-");
  dirs.push(root);
  return { root, meta: join(root, "meta"), log: join(root, "maplog"), fresh: join(root, "fresh") };
}

type MapLogOpts = NonNullable<MetaStoreOptions["mapLog"]>;

// Group commits' map transactions on the event loop, and on their own thread (map-thread.ts):
// the compiled worker (npm run build, which `npm test` runs first).
const MAP_SCRIPT = fileURLToPath(new URL("../../../dist/pool/meta/map-thread.js", import.meta.url));
const writeModes = [
  { where: "writes on the event loop", mapThread: undefined },
  ...(existsSync(MAP_SCRIPT)
    ? [{ where: "group commits on the map thread", mapThread: MAP_SCRIPT }]
    : []),
];

/**
 * A random history on store A: concurrent writes (inserting chunks), overwrites, holes, unmaps,
 * snapshots taken and deleted (in small batches), copies (head and snapshot sources, overlapping
 * ones in one volume), clones, volume deletions and GC claims (so that replay meets fingerprints
 * the final index lacks).
 */
async function randomHistory(store: MetaStore, seed: number, rounds: number): Promise<void> {
  // With the map thread, writes go as a group commit does (writeGrainsMany, 1 to 3 at a time).
  const many = store.mapWriteThread;
  const rand = xorshift32(seed);
  let nextVolume = 4;
  const volumes = [1, 2, 3];
  for (const v of volumes) await store.createVolume(v, 1);
  let chunkNo = 0;
  const op = async (): Promise<unknown> => {
    const volume = volumes[rand(volumes.length)]!;
    const kind = rand(100);
    if (kind < 50) {
      const write = (v: number) => {
        const first = rand(300);
        const updates = Array.from({ length: 1 + rand(12) }, (_, j) => {
          if (rand(8) === 0) return { grain: first + j, fingerprint: null };
          const c = rand(80);
          return {
            grain: first + j,
            fingerprint: fp(c),
            chunk: loc(1 + (c % 5), c * 4096 + chunkNo++),
          };
        });
        return { volume: v, updates };
      };
      if (!many) {
        const w = write(volume);
        return store.writeGrains(w.volume, w.updates);
      }
      const writes = Array.from({ length: 1 + rand(3) }, () =>
        write(volumes[rand(volumes.length)]!),
      );
      const results = await store.writeGrainsMany(writes);
      const failed = results.find((r) => r.status === "rejected");
      if (failed) throw failed.reason; // as writeGrains would (a volume deleted meanwhile)
      return results;
    }
    if (kind < 60) return store.unmapGrains(volume, rand(300), 1 + rand(40));
    if (kind < 68) {
      if (store.listSnapshots(volume).length < 4) return store.createSnapshot(volume);
      return undefined;
    }
    if (kind < 76) {
      const snaps = store.listSnapshots(volume);
      if (snaps.length === 0) return undefined;
      return store.deleteSnapshot(volume, snaps[rand(snaps.length)]!, { batchSize: 3 });
    }
    if (kind < 88) {
      const snaps = store.listSnapshots(volume);
      const snapshot = snaps.length > 0 && rand(2) === 0 ? snaps[rand(snaps.length)] : undefined;
      const dst = rand(3) === 0 ? volume : volumes[rand(volumes.length)]!;
      return store.copyGrains(
        snapshot === undefined ? { volume } : { volume, snapshot },
        rand(300),
        dst,
        rand(300),
        1 + rand(60),
        { batchSize: 1 + rand(9) },
      );
    }
    if (kind < 92) {
      const snaps = store.listSnapshots(volume);
      if (snaps.length === 0) return undefined;
      const v = nextVolume++;
      await store.cloneVolume({ volume, snapshot: snaps[0]! }, v, 1, { batchSize: 7 });
      volumes.push(v);
      return undefined;
    }
    if (kind < 95) {
      if (volumes.length <= 2) return undefined;
      const i = rand(volumes.length);
      const [v] = volumes.splice(i, 1);
      return store.deleteVolume(v!);
    }
    await store.applyJournal();
    return store.reclaimDeadChunks(1 + rand(5));
  };
  for (let r = 0; r < rounds; r++) {
    // Several in flight at once: they share commits, in call order.
    const n = 1 + rand(6);
    await Promise.allSettled(Array.from({ length: n }, () => op()));
  }
}

/** Rebuild into a new environment from the log: the index from "containers", then the maps. */
async function rebuild(p: ReturnType<typeof paths>, from: MetaStore, log: MapLogOpts) {
  // What the containers hold at the end: the chunks A's index still lists.
  const chunks: { fingerprint: Buffer; domain: number; location: ReturnType<typeof loc> }[] = [];
  for (const { key, value } of from.dbs.fp.getRange()) {
    const fingerprint = Buffer.from(key.subarray(key.length - FINGERPRINT_BYTES));
    const e = from.lookupChunk(1, fingerprint);
    if (e && value) chunks.push({ fingerprint, domain: 1, location: e });
  }
  const b = await MetaStore.open({
    path: p.fresh,
    noSync: true,
    mapLog: { ...log, rebuild: true },
  });
  for (const c of chunks)
    await b.insertChunk(c.domain, c.fingerprint, {
      containerId: c.location.containerId,
      offset: c.location.offset,
      storedLength: c.location.storedLength,
      logicalLength: c.location.logicalLength,
    });
  const replay = await b.replayMapLog();
  await b.repair();
  return { b, replay };
}

describe.each(writeModes)("map log: rebuilding the maps, $where", ({ mapThread }) => {
  // MAPLOG_SEEDS=40 runs more histories.
  const seeds = Array.from({ length: Number(process.env.MAPLOG_SEEDS ?? 3) }, (_, i) => i + 1);
  const threadOption = mapThread === undefined ? {} : { mapThread };
  for (const seed of seeds) {
    it(`a random history replays to identical maps and snapshots (seed ${seed})`, async () => {
      const p = paths();
      const log: MapLogOpts = { dir: p.log, segmentBytes: 4096 };
      const a = await MetaStore.open({ path: p.meta, noSync: true, mapLog: log, ...threadOption });
      expect(a.mapWriteThread).toBe(mapThread !== undefined);
      await randomHistory(a, seed, 150);
      await a.flush();
      const expected = dumpMaps(a);
      expect(Object.keys(expected.map).length).toBeGreaterThan(100);
      if (seed <= 3) expect(Object.keys(expected.mapold).length).toBeGreaterThan(0);
      // Without a checkpoint beyond the empty one at creation: the whole log replays.
      expect(a.mapLogStatus()?.checkpointSeq).toBe(0);
      const { b, replay } = await rebuild(p, a, log);
      try {
        expect(replay.failed).toBe(0);
        expect(replay.checkpointSeq).toBe(0);
        expect(replay.lastSeq).toBe(a.mapLogStatus()?.appliedSeq);
        expect(dumpMaps(b)).toEqual(expected);
        const audit = b.audit();
        expect(audit.leaks.count + audit.miscounts.count + audit.drift.length).toBe(0);
        expect(audit.oldVersions).toEqual(a.audit().oldVersions);
        for (const { volume } of a.listVolumes()) {
          await a.applyJournal();
          expect(b.volumeUsage(volume)).toMatchObject({
            mappedGrains: a.volumeUsage(volume)?.mappedGrains,
          });
          expect(b.snapshotUsage(volume)?.oldVersions).toBe(a.snapshotUsage(volume)?.oldVersions);
        }
      } finally {
        await b.close();
        await a.close();
      }
    });
  }

  for (const seed of seeds)
    it(`checkpoints bound the log; a rebuild loads the newest and replays the rest (seed ${seed})`, async () => {
      const p = paths();
      const log: MapLogOpts = {
        dir: p.log,
        segmentBytes: 2048,
        checkpointMinBytes: 6000,
        checkpointBatch: 5,
      };
      const infos: object[] = [];
      const logger = { info: (o: object) => infos.push(o), warn() {}, error() {} };
      const a = await MetaStore.open({
        path: p.meta,
        noSync: true,
        mapLog: { ...log, logger },
        ...threadOption,
      });
      await randomHistory(a, 100 + seed, 200);
      await a.checkpointIdle();
      // More after the last checkpoint, some of it while one is being written.
      const pending = a.checkpointNow();
      await randomHistory(a, 200 + seed, 40).catch(() => undefined);
      await pending;
      await randomHistory(a, 300 + seed, 20).catch(() => undefined);
      await a.checkpointIdle();
      await a.flush();
      const status = a.mapLogStatus()!;
      expect(infos.length).toBeGreaterThan(3); // checkpoints written
      expect(status.checkpointSeq).toBeGreaterThan(0);
      const files = readdirSync(p.log);
      expect(files.filter((f) => f.endsWith(".ckpt"))).toHaveLength(1);
      // Segments before the checkpoint are gone: what is left is bounded.
      // The next checkpoint starts past max(minimum, last checkpoint's size).
      const threshold = Math.max(6000, status.checkpointBytes ?? 0);
      expect(status.segmentBytes).toBeLessThan(threshold + 3 * 2048 + 4096);
      const expected = dumpMaps(a);
      const { b, replay } = await rebuild(p, a, log);
      try {
        expect(replay.failed).toBe(0);
        expect(replay.checkpointSeq).toBe(status.checkpointSeq);
        expect(replay.checkpointEntries).toBeGreaterThan(0);
        expect(replay.lastSeq).toBe(status.appliedSeq);
        expect(dumpMaps(b)).toEqual(expected);
      } finally {
        await b.close();
        await a.close();
      }
    });
});

describe("map log: reopening, damage, re-basing", () => {
  it("reopening continues the log; a lost environment is refused until rebuilt", async () => {
    const p = paths();
    const log: MapLogOpts = { dir: p.log };
    let a = await MetaStore.open({ path: p.meta, noSync: true, mapLog: log });
    await a.createVolume(1, 1);
    await a.writeGrains(1, [{ grain: 0, fingerprint: fp(1), chunk: loc(1, 0) }]);
    await a.close();
    a = await MetaStore.open({ path: p.meta, noSync: true, mapLog: log });
    expect(a.mapLogStatus()).toMatchObject({ nextSeq: 3, appliedSeq: 2 });
    await a.writeGrains(1, [{ grain: 1, fingerprint: fp(1) }]);
    await a.close();
    rmSync(p.meta, { recursive: true, force: true });
    await expect(MetaStore.open({ path: p.meta, noSync: true, mapLog: log })).rejects.toThrow(
      /pool rebuild/,
    );
    rmSync(p.meta, { recursive: true, force: true });
    const b = await MetaStore.open({
      path: p.meta,
      noSync: true,
      mapLog: { ...log, rebuild: true },
    });
    await b.insertChunk(1, fp(1), loc(1, 0));
    const r = await b.replayMapLog();
    expect(r).toMatchObject({ checkpointSeq: 0, records: 3, lastSeq: 3, failed: 0 });
    await b.repair();
    expect(b.getGrain(1, 1)).toEqual(sfp(1));
    expect(b.lookupChunk(1, fp(1))?.refcount).toBe(2);
    expect(b.audit().clean).toBe(true);
    // Logging goes on after the rebuild, at the next seq.
    await b.unmapGrains(1, 0, 1);
    expect(b.mapLogStatus()).toMatchObject({ nextSeq: 5, appliedSeq: 4 });
    await b.close();
    const c = await MetaStore.open({ path: p.meta, noSync: true, mapLog: log });
    expect(c.getGrain(1, 0)).toBeUndefined();
    // A checkpoint retires the segment it covers; the next record starts a new one.
    const segments = () => readdirSync(p.log).filter((f) => f.endsWith(".log"));
    expect(segments()).toEqual(["0000000000000001.log"]);
    expect((await c.checkpointNow())?.seq).toBe(4);
    expect(segments()).toEqual([]);
    await c.writeGrains(1, [{ grain: 2, fingerprint: fp(1) }]);
    expect(segments()).toEqual(["0000000000000005.log"]);
    expect(readdirSync(p.log).filter((f) => f.endsWith(".ckpt"))).toEqual([
      "checkpoint-0000000000000004.ckpt",
    ]);
    await c.close();
  });

  it("a store from before the map log gets a checkpoint at open", async () => {
    const p = paths();
    const warns: object[] = [];
    const logger = { info() {}, warn: (o: object) => warns.push(o), error() {} };
    const old = await MetaStore.open({ path: p.meta, noSync: true });
    await old.createVolume(1, 1);
    await old.writeGrains(1, [{ grain: 5, fingerprint: fp(1), chunk: loc(1, 0) }]);
    await old.createSnapshot(1);
    await old.writeGrains(1, [{ grain: 5, fingerprint: fp(2), chunk: loc(1, 4096) }]);
    await old.close();
    const a = await MetaStore.open({
      path: p.meta,
      noSync: true,
      mapLog: { dir: p.log, logger },
    });
    expect(warns).toHaveLength(1);
    await a.checkpointIdle();
    expect(a.mapLogStatus()?.checkpointSeq).toBe(0);
    await a.writeGrains(1, [{ grain: 6, fingerprint: fp(1) }]);
    const expected = dumpMaps(a);
    const { b, replay } = await rebuild(p, a, { dir: p.log });
    expect(replay).toMatchObject({ checkpointSeq: 0, records: 1, failed: 0 });
    expect(dumpMaps(b)).toEqual(expected);
    expect(b.getGrain(1, 5, { snapshot: 0 })).toEqual(sfp(1));
    expect(b.audit().clean).toBe(true);
    await b.close();
    await a.close();
  });

  it("a log that lost records the store has (power loss) is re-based by a checkpoint", async () => {
    const p = paths();
    const log: MapLogOpts = { dir: p.log };
    let a = await MetaStore.open({ path: p.meta, noSync: true, mapLog: log });
    await a.createVolume(1, 1);
    await a.writeGrains(1, [{ grain: 0, fingerprint: fp(1), chunk: loc(1, 0) }]);
    await a.close();
    // The log loses its last record; the store has it.
    const seg = readdirSync(p.log).find((f) => f.endsWith(".log"))!;
    const { truncateSync: cut, statSync } = await import("node:fs");
    cut(join(p.log, seg), statSync(join(p.log, seg)).size - 10);
    a = await MetaStore.open({ path: p.meta, noSync: true, mapLog: log });
    await a.checkpointIdle();
    expect(a.mapLogStatus()).toMatchObject({ checkpointSeq: 2, nextSeq: 3 });
    expect((await MetaStore.checkMapLogRebuildable(p.log)).ok).toBe(true);
    await a.writeGrains(1, [{ grain: 1, fingerprint: fp(1) }]);
    const expected = dumpMaps(a);
    const { b, replay } = await rebuild(p, a, log);
    expect(replay).toMatchObject({ checkpointSeq: 2, records: 1, failed: 0 });
    expect(dumpMaps(b)).toEqual(expected);
    await b.close();
    await a.close();
  });

  it("a damaged earlier segment refuses to open with a clear error", async () => {
    const p = paths();
    const a = await MetaStore.open({
      path: p.meta,
      noSync: true,
      mapLog: { dir: p.log, segmentBytes: 100 },
    });
    await a.createVolume(1, 1);
    for (let i = 0; i < 5; i++)
      await a.writeGrains(1, [{ grain: i, fingerprint: fp(i), chunk: loc(1, i * 4096) }]);
    await a.close();
    const first = readdirSync(p.log)
      .filter((f) => f.endsWith(".log"))
      .sort()[0]!;
    const { readFileSync, writeFileSync } = await import("node:fs");
    const bytes = readFileSync(join(p.log, first));
    bytes[bytes.length - 2]! ^= 4;
    writeFileSync(join(p.log, first), bytes);
    const err = await MetaStore.open({
      path: p.meta,
      noSync: true,
      mapLog: { dir: p.log, segmentBytes: 100 },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MetaError);
    expect((err as MetaError).code).toBe("MAP_LOG_CORRUPT");
  });

  it("a damaged checkpoint or a gap makes the log unrebuildable, said before anything moves", async () => {
    const p = paths();
    const a = await MetaStore.open({ path: p.meta, noSync: true, mapLog: { dir: p.log } });
    await a.createVolume(1, 1);
    await a.writeGrains(1, [{ grain: 0, fingerprint: fp(1), chunk: loc(1, 0) }]);
    await a.checkpointNow();
    await a.writeGrains(1, [{ grain: 1, fingerprint: fp(1) }]);
    await a.close();
    expect(await MetaStore.checkMapLogRebuildable(p.log)).toEqual({
      ok: true,
      checkpointSeq: 2,
      lastSeq: 3,
    });
    const { readFileSync, writeFileSync } = await import("node:fs");
    const ckpt = join(p.log, readdirSync(p.log).find((f) => f.endsWith(".ckpt"))!);
    const good = readFileSync(ckpt);
    const bad = Buffer.from(good);
    bad[30]! ^= 1;
    writeFileSync(ckpt, bad);
    const r = await MetaStore.checkMapLogRebuildable(p.log);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.reason).toMatch(/CRC mismatch/);
    const b = await MetaStore.open({
      path: p.fresh,
      noSync: true,
      mapLog: { dir: p.log, rebuild: true },
    });
    await expect(b.replayMapLog()).rejects.toThrow(/damaged/);
    await b.close();
    // A gap: the checkpoint is fine again, the segment after it is gone.
    writeFileSync(ckpt, good);
    const seg = readdirSync(p.log).find((f) => f.endsWith(".log"))!;
    rmSync(join(p.log, seg));
    const { writeFileSync: w } = await import("node:fs");
    const { encodeFrame } = await import("./maplog-codec.js");
    w(join(p.log, "0000000000000005.log"), encodeFrame(5, { op: "volumeForget", volume: 9 }));
    const gap = await MetaStore.checkMapLogRebuildable(p.log);
    expect(!gap.ok && gap.reason).toMatch(/no record 3/);
  });

  it("a gap after the last checkpoint (a re-basing that never finished) is closed at open", async () => {
    const p = paths();
    const log: MapLogOpts = { dir: p.log, segmentBytes: 10 };
    let a = await MetaStore.open({ path: p.meta, noSync: true, mapLog: log });
    await a.createVolume(1, 1);
    await a.writeGrains(1, [{ grain: 0, fingerprint: fp(1), chunk: loc(1, 0) }]);
    await a.checkpointNow();
    for (let g = 1; g <= 3; g++) await a.writeGrains(1, [{ grain: g, fingerprint: fp(1) }]);
    await a.close();
    // Records 3, 4, 5 are one segment each: losing 4 leaves a gap the store has behind it.
    rmSync(join(p.log, "0000000000000004.log"));
    expect(await MetaStore.checkMapLogRebuildable(p.log)).toMatchObject({ ok: false });
    const warns: object[] = [];
    const logger = { info() {}, warn: (o: object) => warns.push(o), error() {} };
    a = await MetaStore.open({ path: p.meta, noSync: true, mapLog: { ...log, logger } });
    expect(warns).toEqual([{ missingSeq: 4, checkpointSeq: 2 }]);
    await a.checkpointIdle();
    expect(a.mapLogStatus()?.checkpointSeq).toBe(5);
    expect(await MetaStore.checkMapLogRebuildable(p.log)).toMatchObject({ ok: true });
    const expected = dumpMaps(a);
    const { b } = await rebuild(p, a, log);
    expect(dumpMaps(b)).toEqual(expected);
    await b.close();
    await a.close();
  });
});

describe("16-byte fingerprints (README.md, Fingerprints: 16 bytes)", () => {
  it("keeps grains apart whose fingerprints differ in the first 16 bytes, through a rebuild", async () => {
    const p = paths();
    const log: MapLogOpts = { dir: p.log };
    const a = await MetaStore.open({ path: p.meta, noSync: true, mapLog: log });
    await a.createVolume(1, 1);
    const x = Buffer.alloc(32, 0x00);
    const y = Buffer.alloc(32, 0xff); // shares no byte with x
    const z = Buffer.from(x); // shares x's first 15 bytes and its last 16
    z[15] = 1;
    const w = Buffer.from(x); // differs from x only past byte 16: the same chunk to the metadata
    w[16] = 1;
    const records = [x, y, z, w].map((fingerprint, i) => ({ fingerprint, ...loc(1, i * 4096) }));
    const r = await a.writeGrains(
      1,
      records.map((c, i) => ({ grain: i, fingerprint: c.fingerprint, chunk: loc(1, i * 4096) })),
    );
    expect(r).toEqual({ changed: 4, inserted: 3, duplicates: 1 });
    const resolved = (s: MetaStore) =>
      s.resolveGrains(1, 0, 4).map((g) => [g?.fingerprint.toString("hex"), g?.chunk?.offset]);
    const expected = [
      [x.toString("hex", 0, 16), 0],
      [y.toString("hex", 0, 16), 4096],
      [z.toString("hex", 0, 16), 8192],
      [x.toString("hex", 0, 16), 0],
    ];
    expect(resolved(a)).toEqual(expected);
    await a.close();
    // Rebuilt from "containers" (every record, w's copy included, with its full fingerprint).
    const b = await MetaStore.open({
      path: p.fresh,
      noSync: true,
      mapLog: { ...log, rebuild: true },
    });
    try {
      expect(await b.rebuildIndex(1, records)).toMatchObject({ chunks: 3, duplicates: 1 });
      expect(await b.replayMapLog()).toMatchObject({ failed: 0, records: 2 });
      await b.repair();
      expect(resolved(b)).toEqual(expected);
      expect(b.lookupChunk(1, x)?.refcount).toBe(2);
      expect(b.lookupChunk(1, w)).toEqual(b.lookupChunk(1, x));
      expect(b.audit().clean).toBe(true);
    } finally {
      await b.close();
    }
  });

  it("takes either length at the edge and returns 16 bytes; ChunkMissing names what was given", async () => {
    const p = paths();
    const a = await MetaStore.open({ path: p.meta, noSync: true });
    try {
      await a.createVolume(1, 1);
      await a.writeGrains(1, [{ grain: 0, fingerprint: fp(1), chunk: loc(1, 0) }]);
      await a.writeGrains(1, [{ grain: 1, fingerprint: sfp(1) }]); // a map entry read back
      expect(a.getGrain(1, 1)).toEqual(sfp(1));
      expect(a.lookupChunk(1, sfp(1))).toEqual(a.lookupChunk(1, fp(1)));
      const err = await a
        .writeGrains(1, [
          { grain: 2, fingerprint: fp(2) },
          { grain: 3, fingerprint: sfp(3) },
        ])
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MetaError);
      expect((err as MetaError).fingerprints).toEqual([
        fp(2).toString("hex"),
        sfp(3).toString("hex"),
      ]);
      await expect(
        a.writeGrains(1, [{ grain: 4, fingerprint: fp(1).subarray(0, 20) }]),
      ).rejects.toThrow(/20 bytes/);
    } finally {
      await a.close();
    }
  });

  for (const seed of [1, 2])
    it(`converts an older build's store: refused at open, rebuilt from its 32-byte log (seed ${seed})`, async () => {
      const p = paths();
      const log: MapLogOpts = { dir: p.log, segmentBytes: 2048, checkpointMinBytes: 2 ** 40 };
      const a = await MetaStore.open({ path: p.meta, noSync: true, mapLog: log });
      // A history, a checkpoint, more history after it: both parts of the log are converted.
      await randomHistory(a, 600 + seed, 120);
      await a.checkpointNow();
      await randomHistory(a, 700 + seed, 40).catch(() => undefined);
      await a.flush();
      const status = a.mapLogStatus()!;
      expect(status.checkpointSeq).toBeGreaterThan(0);
      expect(status.appliedSeq).toBeGreaterThan(status.checkpointSeq!);
      const expected = dumpMaps(a);
      expect(Object.keys(expected.mapold).length).toBeGreaterThan(0);
      const format = readU32(a.dbs.meta.get(Buffer.from("format"))!);
      expect(format).toBe(SNAPSHOT_FORMAT_VERSION);
      // The containers' records: the full fingerprints of the chunks the index lists.
      const full = new Map(Array.from({ length: 80 }, (_, c) => [sfp(c).toString("hex"), fp(c)]));
      const records = [...a.dbs.fp.getRange()].map(({ key, value }) => {
        const short = key.subarray(key.length - FINGERPRINT_BYTES).toString("hex");
        return { fingerprint: full.get(short)!, ...a.lookupChunk(1, full.get(short)!)!, value };
      });
      await a.close();

      // What the older build left: its format marker, and its log.
      await withRawDbs(p.meta, (dbs) => {
        dbs.meta.putSync(Buffer.from("format"), u32Value(LONG_FINGERPRINT_FORMATS.snapshots));
      });
      const converted = await downgradeMapLog(p.log, (s) => full.get(s.toString("hex"))!);
      expect(converted).toMatchObject({ checkpoints: 1 });
      expect(converted.frames).toBe(status.appliedSeq - status.checkpointSeq!);
      const ckpt = readdirSync(p.log).find((f) => f.endsWith(".ckpt"))!;
      expect(readFileSync(join(p.log, ckpt)).subarray(0, 8).toString("latin1")).toBe("SMXCKPT1");
      const err = await MetaStore.open({ path: p.meta, noSync: true, mapLog: log }).catch(
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ code: "INCOMPATIBLE" });
      expect((err as Error).message).toMatch(/32-byte fingerprints.*run `sanmux pool rebuild`/s);

      // The migration: index from the containers, maps from the old log.
      expect(await MetaStore.checkMapLogRebuildable(p.log)).toMatchObject({ ok: true });
      const b = await MetaStore.open({
        path: p.fresh,
        noSync: true,
        mapLog: { ...log, rebuild: true },
      });
      try {
        await b.rebuildIndex(1, records);
        const replay = await b.replayMapLog();
        expect(replay).toMatchObject({
          failed: 0,
          checkpointSeq: status.checkpointSeq,
          lastSeq: status.appliedSeq,
        });
        await b.repair();
        expect(dumpMaps(b)).toEqual(expected);
        expect(readU32(b.dbs.meta.get(Buffer.from("format"))!)).toBe(SNAPSHOT_FORMAT_VERSION);
        const audit = b.audit();
        expect(audit.leaks.count + audit.miscounts.count + audit.drift.length).toBe(0);
        // It goes on in the current format: version 2 frames after the old ones, a new checkpoint.
        await b.writeGrains(1, [{ grain: 999, fingerprint: fp(1) }]).catch(() => undefined);
        const ck = await b.checkpointNow();
        expect(readFileSync(ck!.path).subarray(0, 8).toString("latin1")).toBe("SMXCKPT2");
      } finally {
        await b.close();
      }
      const c = await MetaStore.open({ path: p.fresh, noSync: true, mapLog: log });
      expect(c.audit().leaks.count).toBe(0);
      await c.close();
    });
});
