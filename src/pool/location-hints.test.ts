import { describe, expect, it } from "vitest";
import { HINT_BYTES, LocationHints } from "./location-hints.js";

const G = 4096;
const MiB = 1024 * 1024;
const none = () => false;

function fp(n: number): Buffer {
  return Buffer.alloc(32, n); // 32 bytes as the write path has them; 16 are kept
}

function at(containerId: number, offset: number) {
  return { containerId, offset, storedLength: 4112, logicalLength: G };
}

describe("LocationHints", () => {
  it("resolves a range it holds every grain of, holes as undefined", () => {
    const h = new LocationHints(MiB);
    h.set(1, 10, fp(1), at(7, 100));
    h.set(1, 11, null, undefined); // a hole
    h.set(1, 12, fp(3), at(8, 200));
    const r = h.resolve(1, 10, 3, none)!;
    expect(r[0]?.fingerprint).toEqual(Buffer.alloc(16, 1));
    expect(r[0]?.chunk).toEqual(at(7, 100));
    expect(r[1]).toBeUndefined();
    expect(r[2]?.chunk).toEqual(at(8, 200));
    expect(h.hits).toBe(1);
    // One grain without a hint: the caller must resolve the whole range in the map.
    expect(h.resolve(1, 10, 4, none)).toBeUndefined();
    expect(h.resolve(2, 10, 1, none)).toBeUndefined();
    expect(h.misses).toBe(1);
    // Grains the caller has (staged, or cached) need no hint.
    const skipped = h.resolve(1, 9, 5, (i) => i === 0 || i === 4)!;
    expect(skipped).toHaveLength(5);
    expect(skipped[1]?.chunk.offset).toBe(100);
  });

  it("hands out fingerprints a later set does not change", () => {
    const h = new LocationHints(MiB);
    h.set(1, 0, fp(1), at(1, 0));
    const r = h.resolve(1, 0, 1, none)!;
    h.set(1, 0, fp(2), at(1, 4172));
    expect(r[0]?.fingerprint).toEqual(Buffer.alloc(16, 1));
    expect(h.resolve(1, 0, 1, none)![0]?.fingerprint).toEqual(Buffer.alloc(16, 2));
  });

  it("forgets ranges, volumes and containers", () => {
    const h = new LocationHints(MiB);
    for (let g = 0; g < 3000; g++) h.set(1, g, fp(g % 250), at(g < 1500 ? 5 : 6, g * 4172));
    h.set(2, 0, fp(9), at(5, 0));
    expect(h.size).toBe(3001);
    h.invalidate(1, 1020, 10); // across a block boundary
    expect(h.resolve(1, 1019, 1, none)).toBeDefined();
    expect(h.resolve(1, 1020, 1, none)).toBeUndefined();
    expect(h.resolve(1, 1029, 1, none)).toBeUndefined();
    expect(h.resolve(1, 1030, 1, none)).toBeDefined();
    expect(h.size).toBe(2991);
    h.invalidate(1, 2000, Number.MAX_SAFE_INTEGER - 2000); // larger than what is held
    expect(h.resolve(1, 1999, 1, none)).toBeDefined();
    expect(h.resolve(1, 2000, 1, none)).toBeUndefined();
    h.dropContainer(5);
    expect(h.resolve(1, 0, 1, none)).toBeUndefined();
    expect(h.resolve(2, 0, 1, none)).toBeUndefined();
    expect(h.resolve(1, 1500, 500, none)).toHaveLength(500); // container 6 stays
    h.dropVolume(1);
    expect(h.size).toBe(0);
    h.set(3, 0, fp(1), at(1, 0));
    h.clear();
    expect(h.resolve(3, 0, 1, none)).toBeUndefined();
  });

  it("keeps no hint it could not use, and no more than its bytes", () => {
    const h = new LocationHints(2 * 1024 * HINT_BYTES); // two blocks of 1024 grains
    expect(h.maxBlocks).toBe(2);
    h.set(1, 0, fp(1), { ...at(1, 0), logicalLength: 8192 }); // not a 4 KiB grain
    h.set(1, 1, fp(1), undefined); // where the chunk is, unknown
    expect(h.resolve(1, 0, 1, none)).toBeUndefined();
    expect(h.resolve(1, 1, 1, none)).toBeUndefined();
    h.set(1, 0, fp(1), at(1, 0));
    h.set(1, 1024, fp(1), at(1, 0));
    h.resolve(1, 0, 1, none); // block 0 used last: block 1 goes first
    h.set(1, 2048, fp(1), at(1, 0));
    expect(h.resolve(1, 0, 1, none)).toBeDefined();
    expect(h.resolve(1, 1024, 1, none)).toBeUndefined();
    expect(h.resolve(1, 2048, 1, none)).toBeDefined();
    const off = new LocationHints(0);
    off.set(1, 0, fp(1), at(1, 0));
    expect(off.resolve(1, 0, 1, none)).toBeUndefined();
  });
});
