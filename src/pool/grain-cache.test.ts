import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { chunkFingerprint, masterKeyFromBytes, newId } from "../crypto/index.js";
import { defaultReadCacheBytes, readCacheSplit } from "./chunk-reader.js";
import { ChunkStore } from "./chunk-store.js";
import { JobRunner } from "./chunk-worker.js";
import { Devices } from "./devices.js";
import { GrainCache } from "./grain-cache.js";
import { Registry } from "./registry.js";
import { pattern } from "./testing/helpers.js";

const G = 4096;
const grain = (n: number) => Buffer.alloc(G, n);

describe("GrainCache", () => {
  it("admits a location on its second read only, then serves copies of it", () => {
    const c = new GrainCache(4 * G);
    const out = Buffer.alloc(2 * G);
    c.put(1, 64, grain(1), 0); // first read: remembered, not kept
    expect(c.has(1, 64)).toBe(false);
    c.put(1, 64, grain(1), 0); // second read: kept
    expect(c.has(1, 64)).toBe(true);
    expect(c.get(1, 64, out, G)).toBe(true);
    expect(out.subarray(G)).toEqual(grain(1));
    out.fill(0);
    expect(out.subarray(G)).toEqual(Buffer.alloc(G)); // a copy: the caller owns it
    expect(c.get(1, 64, out, 0) && out.subarray(0, G).equals(grain(1))).toBe(true);
    expect(c.get(2, 64, out, 0)).toBe(false); // another container, same offset
    expect(c.hits).toBe(2);
  });

  it("evicts by CLOCK within its bound: a grain read again survives a pass", () => {
    const c = new GrainCache(4 * G);
    const out = Buffer.alloc(G);
    const admit = (off: number) => {
      c.put(7, off, grain(off % 251), 0);
      c.put(7, off, grain(off % 251), 0);
    };
    for (let i = 0; i < 4; i++) admit(100 + i);
    expect(c.size).toBe(4);
    expect(c.get(7, 101, out, 0)).toBe(true); // referenced
    for (let i = 4; i < 7; i++) admit(100 + i);
    expect(c.size).toBe(4);
    expect(c.has(7, 101)).toBe(true);
    expect(c.get(7, 101, out, 0) && out.equals(grain(101))).toBe(true);
    for (const off of [104, 105, 106]) {
      expect(c.get(7, off, out, 0) && out.equals(grain(off % 251))).toBe(true);
    }
  });

  it("forgets a container, and keeps nothing with no room", () => {
    const c = new GrainCache(8 * G);
    for (const container of [1, 2]) {
      c.put(container, 64, grain(container), 0);
      c.put(container, 64, grain(container), 0);
    }
    c.dropContainer(1);
    expect(c.has(1, 64)).toBe(false);
    expect(c.has(2, 64)).toBe(true);
    const none = new GrainCache(G - 1);
    none.put(1, 64, grain(1), 0);
    none.put(1, 64, grain(1), 0);
    expect(none.has(1, 64)).toBe(false);
  });
});

describe("ChunkReader with a grain cache", () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it("serves hot grains from the cache; scrub's damage and a dropped container bypass it", async () => {
    dir = mkdtempSync(join(tmpdir(), "sanmux-grain-cache-"));
    const master = masterKeyFromBytes(randomBytes(32));
    const registry = Registry.create(join(dir, "registry.json"), {
      poolId: "p",
      keyCheck: "kcv1:x",
      grainSize: G,
    });
    registry.addDevice(join(dir, "d0"));
    const domain = registry.addDomain("shared", newId()).number;
    await registry.save();
    const devices = new Devices(registry, { reserveBytes: 0 });
    await devices.start();
    const chunks = new ChunkStore(registry, devices, master, new JobRunner(master, 0), undefined);
    try {
      const keys = chunks.keys(domain);
      const items = Array.from({ length: 4 }, (_, i) => {
        const g = pattern(`c${i}`, G);
        return { grain: g, fingerprint: chunkFingerprint(keys.fingerprintKey, g) };
      });
      const batch = chunks.batch(domain);
      const locs = await batch.appendAll(items);
      await batch.sync();
      batch.release();
      const number = locs[0]!.containerId;
      const run = locs.map((l, i) => ({ ...l, fingerprint: items[i]!.fingerprint }));
      const cache = chunks.reads.grainCache;
      // The default: an eighth of pool.cache_size's default (chunk-reader.ts readCacheSplit).
      const byDefault = readCacheSplit(defaultReadCacheBytes()).byChunk;
      expect(cache.slots).toBe(Math.floor(byDefault / G));
      const want = Buffer.concat(items.map((x) => x.grain));
      for (let k = 0; k < 3; k++) {
        const got = await chunks.reads.readRun(number, run);
        expect(got.failures.size).toBe(0);
        expect(got.grains).toEqual(want);
      }
      expect(cache.hits).toBe(4); // read 1 remembers, read 2 admits, read 3 hits
      // Damage on disk: the cache still holds the authenticated plaintext, and serves it.
      const path = join(dir, "d0", "containers", `${registry.container(number)!.id}.sxc`);
      const file = readFileSync(path);
      file[locs[1]!.offset + 70]! ^= 1;
      writeFileSync(path, file);
      expect((await chunks.reads.readRun(number, run)).grains).toEqual(want);
      // Once scrub reports the record, reads fail at once, cache or not.
      chunks.reads.damaged.set(number, [
        { offset: locs[1]!.offset, length: 60 + locs[1]!.storedLength, reason: "crc" },
      ]);
      const damaged = await chunks.reads.readRun(number, run);
      expect([...damaged.failures.keys()]).toEqual([1]);
      // drop (before a container's file is deleted) forgets its grains.
      chunks.reads.drop(number);
      expect(cache.size).toBe(0);
      const after = await chunks.reads.readRun(number, run);
      expect([...after.failures.keys()]).toEqual([1]); // the damaged record, read from disk
      // pool.cache_size on reload: a new size takes a new, empty cache; 0 keeps nothing.
      chunks.reads.damaged.delete(number);
      chunks.reads.resizeGrainCache(1 << 20);
      expect(chunks.reads.grainCache.slots).toBe((1 << 20) / 8 / G);
      // Seven eighths less a thirty-second (the location hints) by volume address.
      expect(chunks.reads.volumeCache.slots).toBe(((1 << 20) * (7 / 8 - 1 / 32)) / G);
      expect(chunks.reads.locations.bytes).toBe((1 << 20) / 32);
      chunks.reads.resizeGrainCache(0);
      for (let k = 0; k < 3; k++) await chunks.reads.readRun(number, run);
      expect(chunks.reads.grainCache.slots).toBe(0);
      expect(chunks.reads.grainCache.hits).toBe(0);
      chunks.reads.resizeGrainCache(undefined);
      expect(chunks.reads.grainCache.slots).toBe(Math.floor(byDefault / G));
    } finally {
      await chunks.close();
    }
  });
});
