import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fp, loc, type TempStore, tempStore } from "./testing/helpers.js";

const GRAIN = 4096;
const STORED = 2000; // each chunk compresses to 2000 bytes (sealing overhead included)
const N = 8;

describe("capacity accounting", () => {
  let t: TempStore;
  beforeEach(async () => {
    t = await tempStore();
  });
  afterEach(async () => {
    await t.cleanup();
  });

  it("counts shared chunks once per domain, and once per domain only", async () => {
    const { store } = t;
    await store.createVolume(1, 1);
    await store.createVolume(2, 1);
    await store.createVolume(3, 2); // a private domain
    const updates = (container: number) =>
      Array.from({ length: N }, (_, g) => ({
        grain: g,
        fingerprint: fp(g),
        chunk: loc(container, g * STORED, STORED, GRAIN),
      }));
    await store.writeGrains(1, updates(10));
    await store.writeGrains(2, updates(11)); // same data: deduplicated, the copies are dead bytes
    await store.writeGrains(3, updates(20)); // same data, other domain: stored again
    await store.writeGrains(1, [{ grain: 100, fingerprint: null }]); // a zero grain: a hole, free
    await store.applyJournal();

    // Domain 1: 16 grains written, 8 chunks stored.
    // logical 16 × 4096 = 65536; referenced 16 × 2000 = 32000; physical 8 × 2000 = 16000;
    // compression saved 65536 − 32000 = 33536; dedup saved 32000 − 16000 = 16000.
    expect(store.domainUsage(1)).toEqual({
      domainId: 1,
      mappedGrains: 16,
      logicalBytes: 65536,
      referencedBytes: 32000,
      liveChunks: 8,
      uniqueLogicalBytes: 32768,
      physicalBytes: 16000,
      savedByCompression: 33536,
      savedByDedup: 16000,
      compressionRatio: 65536 / 32000,
      dedupRatio: 2,
      deadChunks: 0,
      deadBytes: 0,
    });
    // Each volume of domain 1 gets half of the shared physical bytes.
    expect(store.volumeUsage(1)).toEqual({
      volume: 1,
      domainId: 1,
      mappedGrains: 8,
      logicalBytes: 32768,
      referencedBytes: 16000,
      savedByCompression: 16768,
      physicalBytes: 8000,
      savedByDedup: 8000,
    });
    expect(store.volumeUsage(2)?.physicalBytes).toBe(8000);
    // Domain 2 stores its own copy: nothing shared across domains.
    expect(store.domainUsage(2)).toMatchObject({ physicalBytes: 16000, savedByDedup: 0 });
    expect(store.volumeUsage(3)).toMatchObject({ physicalBytes: 16000, savedByDedup: 0 });
    // The pool: 24 grains, 16 chunks.
    expect(store.poolUsage()).toMatchObject({
      domains: 2,
      mappedGrains: 24,
      logicalBytes: 24 * GRAIN,
      referencedBytes: 24 * STORED,
      physicalBytes: 16 * STORED,
      savedByDedup: 8 * STORED,
    });
    // Container 11 holds 8 copies nobody references.
    expect(store.containerUsage(11)).toMatchObject({ storedBytes: 16000, deadBytes: 16000 });

    // Volume 1 goes away: domain 1 still stores everything (volume 2 uses it).
    await store.deleteVolume(1);
    await store.applyJournal();
    expect(store.domainUsage(1)).toMatchObject({
      mappedGrains: 8,
      physicalBytes: 16000,
      savedByDedup: 0,
    });
    expect(store.volumeUsage(2)).toMatchObject({ physicalBytes: 16000, savedByDedup: 0 });
    // Volume 2 unmaps everything: all 8 chunks become dead space in container 10.
    await store.unmapGrains(2, 0, N);
    const r = await store.applyJournal();
    expect(r.dead).toHaveLength(N);
    expect(store.domainUsage(1)).toMatchObject({
      mappedGrains: 0,
      physicalBytes: 0,
      deadChunks: 8,
      deadBytes: 16000,
    });
    expect(store.containerUsage(10)).toMatchObject({ deadChunks: 8, deadBytes: 16000 });
    expect(store.audit().clean).toBe(true);
  });
});
