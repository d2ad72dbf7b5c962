/**
 * A pool written before the metadata cut fingerprints to 16 bytes (src/pool/meta/README.md,
 * "Fingerprints: 16 bytes"): its store is refused at start, and `pool rebuild` converts it from
 * the containers (full fingerprints in every record header) and its map log (version 1 frames and
 * an "SMXCKPT1" checkpoint, 32-byte fingerprints). The old pool is made from a current one: its
 * log rewritten by the old layout (meta/testing/legacy.ts), its store's format marker set back.
 */
import { createHash } from "node:crypto";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { fingerprintMatches } from "./container/format.js";
import { scanContainer } from "./container/index.js";
import { CONTAINER_SUFFIX } from "./container/writer.js";
import { LONG_FINGERPRINT_FORMATS, u32Value } from "./meta/codec.js";
import { MetaStore } from "./meta/index.js";
import { withRawDbs } from "./meta/testing/helpers.js";
import { downgradeMapLog } from "./meta/testing/legacy.js";
import type { Pool } from "./pool.js";
import { pattern } from "./testing/helpers.js";
import { tempPoolPerTest } from "./testing/per-test.js";

const G = 4096;
const MiB = 1024 * 1024;

const newPool = tempPoolPerTest();

/** Every container file under `dir`, recursively. */
function containerFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((n) => n.endsWith(CONTAINER_SUFFIX))
    .map((n) => join(dir, n));
}

describe("Pool: converting a pool whose metadata keeps 32-byte fingerprints", () => {
  it("is refused with a message naming `pool rebuild`, which converts it", async () => {
    const t = await newPool();
    let pool: Pool = t.pool;
    const a = await pool.ensureVolume({ name: "a", size: 8 * MiB, blockSize: 4096 });
    const b = await pool.ensureVolume({ name: "b", size: 8 * MiB, blockSize: 4096 });
    await a.write(0, pattern("a0", 64 * G));
    await b.write(0, pattern("a0", 16 * G)); // deduplicated against a
    await pool.createSnapshot("a", "s1");
    await pool.close();
    // A checkpoint of that, so that the conversion meets one with maps in it, then more records.
    const poolDir = join(t.dir, "pool");
    const store = await MetaStore.open({
      path: join(poolDir, "meta"),
      mapLog: { dir: join(poolDir, "maplog") },
    });
    expect((await store.checkpointNow())?.entries).toBeGreaterThan(64);
    await store.close();
    pool = await t.reopen();
    await pool.volume("a")!.write(8, pattern("a1", 8 * G), { fua: true });
    await pool.volume("b")!.write(100, pattern("b1", 4 * G), { fua: true });
    const read = async (name: string) => {
      const v = name.includes("@")
        ? await pool.openSnapshot(name.split("@")[0]!, name.split("@")[1]!)
        : pool.volume(name)!;
      return createHash("sha256")
        .update(await v.read(0, 256))
        .digest("hex");
    };
    const before = { a: await read("a"), b: await read("b"), s1: await read("a@s1") };
    await pool.close();

    // The older build's pool: full fingerprints from the containers' record headers.
    const full = new Map<string, Buffer>();
    for (const path of containerFiles(poolDir)) {
      for (const r of (await scanContainer(path)).records)
        full.set(r.fingerprint.toString("hex", 0, 16), Buffer.from(r.fingerprint));
    }
    expect(full.size).toBeGreaterThanOrEqual(64 + 8 + 4);
    const converted = await downgradeMapLog(join(poolDir, "maplog"), (s) => {
      return full.get(s.toString("hex"))!;
    });
    expect(converted.checkpoints).toBe(1);
    expect(converted.frames).toBeGreaterThan(0);
    await withRawDbs(join(poolDir, "meta"), (dbs) => {
      dbs.meta.putSync(Buffer.from("format"), u32Value(LONG_FINGERPRINT_FORMATS.snapshots));
    });

    await expect(t.reopen()).rejects.toThrow(/32-byte fingerprints.*sanmux pool rebuild/s);
    pool = await t.reopen({ rebuildMaps: true });
    const report = pool.mapRebuild!;
    expect(report.movedAside).toMatch(/meta\.before-rebuild-/);
    expect(report.maps.failed).toBe(0);
    expect(report.audit.clean).toBe(true);
    expect(report.snapshots).toBe(1);
    expect({ a: await read("a"), b: await read("b"), s1: await read("a@s1") }).toEqual(before);
    expect((await pool.check()).clean).toBe(true);
    // And it starts normally from then on.
    pool = await t.reopen();
    expect(await read("a")).toBe(before.a);
  }, 60_000);
});

describe("fingerprintMatches: the read path's check of the fingerprint asked for", () => {
  it("compares the first 16 bytes: the index's 16, a full one, or a 32-byte slot holding 16", () => {
    const record = createHash("sha256").update("a grain").digest();
    const slot = Buffer.alloc(32); // how the read path packs the index's 16 bytes
    record.copy(slot, 0, 0, 16);
    expect(fingerprintMatches(record, record)).toBe(true);
    expect(fingerprintMatches(record, record.subarray(0, 16))).toBe(true);
    expect(fingerprintMatches(record, slot)).toBe(true);
    const late = Buffer.from(record);
    late[16]! ^= 1; // past the 16 bytes the metadata keeps: the same chunk to it
    expect(fingerprintMatches(record, late)).toBe(true);
    for (const at of [0, 7, 15]) {
      const other = Buffer.from(record);
      other[at]! ^= 1;
      expect(fingerprintMatches(record, other)).toBe(false);
      expect(fingerprintMatches(record, other.subarray(0, 16))).toBe(false);
    }
    expect(fingerprintMatches(record, record.subarray(0, 15))).toBe(false);
  });
});
