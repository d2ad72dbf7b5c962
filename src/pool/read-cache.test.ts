/**
 * The read cache by volume address (volume-cache.ts) as the pool uses it (volume-read.ts, "Read
 * cache"): reads are served from it, and no read that starts after a change completes returns
 * older content, however the change and the reads interleave.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { StorageErrorCode } from "../volume/errors.js";
import { FILE_HEADER_BYTES, RECORD_HEADER_BYTES } from "./container/index.js";
import type { LocationHints } from "./location-hints.js";
import type { ChunkLocation } from "./meta/index.js";
import { xorshift32 } from "./meta/testing/helpers.js";
import { pattern } from "./testing/helpers.js";
import { tempPoolPerTest } from "./testing/per-test.js";

const G = 4096;
const MiB = 1024 * 1024;

const newPool = tempPoolPerTest();

describe("Pool read cache", () => {
  it("serves a read again from memory; writes, unmaps and copies are seen at once", async () => {
    const t = await newPool();
    const { pool } = t;
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const src = await pool.ensureVolume({ name: "src", size: 16 * MiB, blockSize: 4096 });
    const data = pattern("a", 64 * G);
    await v.write(0, data);
    await v.flush(); // committed: reads come from the map, and are cached
    expect((await v.read(0, 64)).equals(data)).toBe(true);
    const held = pool.readCache().byVolume;
    expect(held.grains).toBe(64);
    expect((await v.read(0, 64)).equals(data)).toBe(true);
    expect(pool.readCache().byVolume.hits).toBe(held.hits + 64);

    const expected = Buffer.from(data);
    const check = async (what: string) => {
      expect((await v.read(0, 64)).equals(expected), what).toBe(true);
      expect((await v.read(0, 64)).equals(expected), `${what}, again`).toBe(true);
    };
    await v.write(10, pattern("b", 2 * G)); // staged (WCE=1)
    pattern("b", 2 * G).copy(expected, 10 * G);
    await check("a staged write");
    await v.flush();
    await check("the same write, committed");
    await v.write(20, pattern("c", G), { fua: true });
    pattern("c", G).copy(expected, 20 * G);
    await check("a FUA write");
    await v.unmap(30, 4);
    expected.fill(0, 30 * G, 34 * G);
    await check("an unmap");
    await src.write(0, pattern("d", 8 * G));
    await src.flush();
    expect(await v.copyFrom(src, 0, 40, 8)).toBe(true); // by reference
    pattern("d", 8 * G).copy(expected, 40 * G);
    await check("a copy into the volume");
    expect(pool.readCache().byVolume.hits).toBeGreaterThan(held.hits + 64);
  });

  it("keeps 512-byte-block read-modify-writes and partial unmaps coherent", async () => {
    const t = await newPool();
    const v = await t.pool.ensureVolume({ name: "v", size: 8 * MiB, blockSize: 512 });
    const model = Buffer.from(pattern("base", 32 * G));
    await v.write(0, model);
    await v.flush();
    const random = xorshift32(7);
    for (let round = 0; round < 60; round++) {
      expect((await v.read(0, model.length / 512)).equals(model), `round ${round}`).toBe(true);
      const lba = random(model.length / 512 - 16);
      const blocks = 1 + random(15);
      if (random(3) === 0) {
        await v.unmap(lba, blocks);
        model.fill(0, lba * 512, (lba + blocks) * 512);
      } else {
        const d = pattern(`r${round}`, blocks * 512);
        await v.write(lba, d, { fua: random(2) === 0 });
        d.copy(model, lba * 512);
      }
      if (random(4) === 0) await v.flush();
    }
    expect((await v.read(0, model.length / 512)).equals(model)).toBe(true);
  });

  it("never returns content older than a completed write to a read started after it", async () => {
    const t = await newPool();
    const v = await t.pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const grains = 16;
    let current = pattern("v0", grains * G);
    await v.write(0, current);
    await v.flush();
    const random = xorshift32(1234);
    for (let version = 1; version <= 80; version++) {
      // Reads in flight while the write and its commit happen, some of them offering to the
      // cache what they read from the map before the change.
      const racing = Array.from({ length: 1 + random(4) }, () => v.read(0, grains));
      const next = pattern(`v${version}`, grains * G);
      const first = random(grains);
      const count = 1 + random(grains - first);
      const change = Buffer.from(current);
      if (random(5) === 0) {
        await v.unmap(first, count);
        change.fill(0, first * G, (first + count) * G);
      } else {
        const part = next.subarray(first * G, (first + count) * G);
        await v.write(first, part, { fua: random(3) === 0 });
        part.copy(change, first * G);
      }
      current = change;
      if (random(3) === 0) void v.flush();
      const after = await v.read(0, grains);
      expect(after.equals(current), `version ${version}`).toBe(true);
      for (const r of await Promise.all(racing)) expect(r.length).toBe(grains * G);
      expect((await v.read(0, grains)).equals(current), `version ${version}, again`).toBe(true);
    }
    await v.flush();
    expect((await v.read(0, grains)).equals(current)).toBe(true);
  });

  it("forgets a deleted volume, and snapshot views read past it", async () => {
    const t = await newPool();
    const { pool } = t;
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    await v.write(0, pattern("old", 8 * G));
    await v.flush();
    await pool.createSnapshot("v", "s1");
    const snap = await pool.openSnapshot("v", "s1");
    expect((await snap.read(0, 8)).equals(pattern("old", 8 * G))).toBe(true);
    expect((await v.read(0, 8)).equals(pattern("old", 8 * G))).toBe(true);
    await v.write(0, pattern("new", 8 * G));
    expect((await snap.read(0, 8)).equals(pattern("old", 8 * G))).toBe(true);
    expect((await v.read(0, 8)).equals(pattern("new", 8 * G))).toBe(true);
    await snap.close();
    await pool.deleteSnapshot("v", "s1");
    await pool.deleteVolume("v");
    expect(pool.readCache().byVolume.grains).toBe(0);
    const again = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    expect((await again.read(0, 8)).equals(Buffer.alloc(8 * G))).toBe(true);
  });

  it("stops serving a grain scrub finds damaged: the read reports it", async () => {
    const t = await newPool();
    const v = await t.pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const data = pattern("dmg", 16 * G);
    await v.write(0, data);
    await v.flush();
    expect((await v.read(0, 16)).equals(data)).toBe(true); // cached
    // Flip bytes in the payload of grain 5's record (records are 60 + 4112 bytes, back to back).
    const dir = join(t.dir, "pool", "devices", "0", "containers");
    const file = join(dir, readdirSync(dir).find((n) => n.endsWith(".sxc"))!);
    const buf = readFileSync(file);
    const at = FILE_HEADER_BYTES + 5 * (RECORD_HEADER_BYTES + G + 16) + RECORD_HEADER_BYTES + 100;
    for (let i = 0; i < 4; i++) buf[at + i] = buf[at + i]! ^ 0xff;
    writeFileSync(file, buf);
    // Until scrub looks, the cache holds the content as it was authenticated: correct data.
    expect((await v.read(0, 16)).equals(data)).toBe(true);
    const report = await t.pool.scrub();
    expect(report.damaged).toHaveLength(1);
    expect(t.pool.readCache().byVolume.grains).toBe(0);
    const e = await v.read(0, 16).then(
      () => undefined,
      (err: unknown) => err as { code: StorageErrorCode; lba: number },
    );
    expect(e?.code).toBe(StorageErrorCode.MediumError);
    expect(e?.lba).toBe(5);
    expect((await v.read(0, 5)).equals(data.subarray(0, 5 * G))).toBe(true);
  });

  it("is sized by pool.cache_size, and 0 turns it off", async () => {
    const t = await newPool({ grainCacheBytes: 8 * MiB });
    const { pool } = t;
    const { byVolume, byChunk, hints } = pool.readCache();
    // The location hints take whole blocks of their 32nd (256 KiB: 8192 grains).
    expect(byVolume.bytes + byChunk.bytes + MiB / 4).toBe(8 * MiB);
    expect(byChunk.bytes).toBe(1 * MiB);
    expect(hints.bytes).toBe(MiB / 4);
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    await v.write(0, pattern("x", 8 * G));
    await v.flush();
    await v.read(0, 8);
    expect(pool.readCache().byVolume.grains).toBe(8);
    expect(pool.readCache().hints.grains).toBe(8);
    pool.setGrainCacheBytes(0);
    expect(pool.readCache().byVolume).toMatchObject({ bytes: 0, grains: 0 });
    expect(pool.readCache().hints).toMatchObject({ bytes: 0, grains: 0 });
    expect((await v.read(0, 8)).equals(pattern("x", 8 * G))).toBe(true);
    expect((await v.read(0, 8)).equals(pattern("x", 8 * G))).toBe(true);
    expect(pool.readCache().byVolume).toMatchObject({ grains: 0, hits: 0 });
  });

  it("resolves reads of what was written lately from the location hints, and follows changes", async () => {
    const t = await newPool();
    const { pool } = t;
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const w = await pool.ensureVolume({ name: "w", size: 16 * MiB, blockSize: 4096 });
    const data = pattern("h", 64 * G);
    await v.write(0, data);
    await w.write(0, data); // deduplicated: hinted where the index has the chunks
    await v.write(64, Buffer.alloc(8 * G)); // zeros: hinted as holes
    expect(pool.readCache().hints.grains).toBe(0); // staged, not landed
    await v.flush();
    await w.flush();
    expect(pool.readCache().hints.grains).toBe(64 + 64 + 8);
    const expected = Buffer.concat([data, Buffer.alloc(8 * G)]);
    const hits = () => pool.readCache().hints.hits;
    const misses = () => pool.readCache().hints.misses;
    let before = hits();
    expect((await v.read(0, 72)).equals(expected)).toBe(true);
    expect((await w.read(0, 64)).equals(data)).toBe(true);
    expect(hits()).toBe(before + 2);

    // An overwrite: staged (the hints forget the grains; the overlay serves them), then landed.
    await v.write(8, pattern("o", 4 * G));
    pattern("o", 4 * G).copy(expected, 8 * G);
    expect(pool.readCache().hints.grains).toBe(64 + 64 + 8 - 4);
    expect((await v.read(0, 72)).equals(expected)).toBe(true);
    await v.flush();
    before = hits();
    expect((await v.read(0, 72)).equals(expected)).toBe(true); // the 4 grains: from the hints
    expect(hits()).toBe(before + 1);
    // An unmap and a copy change the map without a write: no hint for them, the map answers.
    await v.unmap(20, 4);
    expected.fill(0, 20 * G, 24 * G);
    expect(await v.copyFrom(w, 0, 30, 2)).toBe(true);
    data.copy(expected, 30 * G, 0, 2 * G);
    before = misses();
    expect((await v.read(0, 72)).equals(expected)).toBe(true);
    expect(misses()).toBeGreaterThan(before);
    await pool.deleteVolume("w");
    expect(pool.readCache().hints.grains).toBe(72 - 4 - 2);
  });

  it("falls back to the map when a hinted chunk moved or is gone, and reads the right data", async () => {
    const t = await newPool();
    const { pool } = t;
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const data = pattern("m", 16 * G);
    await v.write(0, data);
    await v.flush();
    const hints = (pool as unknown as { chunks: { reads: { locations: LocationHints } } }).chunks
      .reads.locations;
    const held = hints.resolve(v.number, 0, 16, () => false)!;
    const stale = (g: number, chunk: ChunkLocation) =>
      hints.set(v.number, g, held[g]!.fingerprint, chunk);
    // What GC and healing leave behind: a container that is gone, the place of another chunk's
    // record (its fingerprint does not match), a place past the end of the file.
    stale(3, { ...held[3]!.chunk, containerId: 999 });
    stale(4, held[5]!.chunk);
    stale(6, { ...held[6]!.chunk, offset: 1 << 30 });
    const before = pool.readCache().hints.hits;
    expect((await v.read(0, 16)).equals(data)).toBe(true);
    expect(pool.readCache().hints.hits).toBe(before + 1); // it went by the hints first
    // The read forgot the hints of its range and resolved it in the map.
    expect(hints.resolve(v.number, 0, 16, () => false)).toBeUndefined();
    expect((await v.read(0, 16)).equals(data)).toBe(true);
  });
});
