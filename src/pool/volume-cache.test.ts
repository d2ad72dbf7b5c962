import { describe, expect, it } from "vitest";
import { VolumeCache } from "./volume-cache.js";

const G = 4096;
const grain = (n: number) => Buffer.alloc(G, n);

/** Read grain `g` of `volume` through the cache: the bytes, or undefined on a miss. */
function read(c: VolumeCache, volume: number, g: number): Buffer | undefined {
  const e = c.entries(volume);
  const out = Buffer.alloc(G);
  return e !== undefined && c.get(e, g, out, 0) ? out : undefined;
}

describe("VolumeCache", () => {
  it("keeps what a read offers at its epoch, and serves copies of it", () => {
    const c = new VolumeCache(8 * G);
    const e = c.epoch(1);
    c.offer(1, e, 10, Buffer.concat([grain(0), grain(7)]), G);
    const got = read(c, 1, 10);
    expect(got).toEqual(grain(7));
    got!.fill(0); // a copy: the caller may patch it
    expect(read(c, 1, 10)).toEqual(grain(7));
    expect(read(c, 1, 11)).toBeUndefined();
    expect(read(c, 2, 10)).toBeUndefined(); // another volume, same grain
    expect(c.hits).toBe(2);
    expect(c.size).toBe(1);
  });

  it("refuses what a read offers after a change to the volume moved the epoch", () => {
    const c = new VolumeCache(8 * G);
    const before = c.epoch(1);
    c.invalidate(1, 500, 1); // a write elsewhere in the volume, while the read was out
    c.offer(1, before, 10, grain(1), 0);
    expect(read(c, 1, 10)).toBeUndefined();
    const now = c.epoch(1);
    expect(now).not.toBe(before);
    c.offer(1, now, 10, grain(2), 0);
    expect(read(c, 1, 10)).toEqual(grain(2));
    // Another volume's epoch is its own.
    const other = c.epoch(2);
    c.invalidate(1, 0, 1);
    c.offer(2, other, 10, grain(3), 0);
    expect(read(c, 2, 10)).toEqual(grain(3));
  });

  it("drops an invalidated range, small or larger than what it holds, and reuses the slots", () => {
    const c = new VolumeCache(4 * G);
    let e = c.epoch(1);
    for (let g = 0; g < 4; g++) c.offer(1, e, g, grain(g + 1), 0);
    expect(c.size).toBe(4);
    c.invalidate(1, 1, 2); // range smaller than the entries: by grain
    expect([0, 1, 2, 3].map((g) => read(c, 1, g)?.[0])).toEqual([1, undefined, undefined, 4]);
    e = c.epoch(1);
    c.offer(1, e, 8, grain(9), 0);
    c.offer(1, e, 9, grain(10), 0);
    expect(c.size).toBe(4); // the two freed slots, no eviction
    expect(read(c, 1, 0)?.[0]).toBe(1);
    c.invalidate(1, 3, 1_000_000); // range larger than the entries: by entry
    expect([0, 3, 8, 9].map((g) => read(c, 1, g)?.[0])).toEqual([
      1,
      undefined,
      undefined,
      undefined,
    ]);
    expect(c.size).toBe(1);
  });

  it("forgets a deleted volume: a new volume of the same number starts empty, at a new epoch", () => {
    const c = new VolumeCache(4 * G);
    const old = c.epoch(5);
    c.offer(5, old, 0, grain(1), 0);
    c.dropVolume(5);
    expect(read(c, 5, 0)).toBeUndefined();
    expect(c.size).toBe(0);
    const fresh = c.epoch(5);
    expect(fresh).not.toBe(old);
    c.offer(5, old, 0, grain(1), 0); // a read of the deleted volume, still out
    expect(read(c, 5, 0)).toBeUndefined();
    c.offer(5, fresh, 0, grain(2), 0);
    expect(read(c, 5, 0)).toEqual(grain(2));
    c.clear();
    expect(read(c, 5, 0)).toBeUndefined();
    expect(c.size).toBe(0);
  });

  it("once full, admits a grain on its second read and evicts by CLOCK", () => {
    const c = new VolumeCache(4 * G);
    const e = c.epoch(1);
    for (let g = 0; g < 4; g++) c.offer(1, e, g, grain(g + 1), 0);
    expect(read(c, 1, 1)?.[0]).toBe(2); // referenced: survives the next pass of the hand
    c.offer(1, e, 100, grain(100), 0); // first read of a new grain: remembered, not kept
    expect(read(c, 1, 100)).toBeUndefined();
    expect(c.size).toBe(4);
    c.offer(1, e, 100, grain(100), 0); // second read: kept, evicting an unreferenced grain
    expect(read(c, 1, 100)?.[0]).toBe(100);
    expect(c.size).toBe(4);
    expect(read(c, 1, 1)?.[0]).toBe(2);
    expect(read(c, 1, 0)).toBeUndefined(); // the hand's first unreferenced slot
    // A scan of many grains read once each stores none of them.
    for (let g = 1000; g < 1100; g++) c.offer(1, e, g, grain(g % 251), 0);
    expect([1, 2, 3, 100].map((g) => read(c, 1, g)?.[0])).toEqual([2, 3, 4, 100]);
  });

  it("with no room keeps nothing, and allocates its slabs only as they are used", () => {
    const none = new VolumeCache(G - 1);
    expect(none.epoch(1)).toBe(-1);
    none.offer(1, -1, 0, grain(1), 0);
    expect(read(none, 1, 0)).toBeUndefined();
    const big = new VolumeCache(1.5 * 2 ** 30);
    expect(big.allocatedBytes).toBe(0);
    big.offer(1, big.epoch(1), 0, grain(1), 0);
    expect(big.allocatedBytes).toBe(2 ** 30); // the first slab
    expect(read(big, 1, 0)).toEqual(grain(1));
  });

  it("takes and serves runs of grains, in one copy where their slots are consecutive", () => {
    const c = new VolumeCache(16 * G);
    const run = (first: number, n: number) =>
      Buffer.concat(Array.from({ length: n }, (_, i) => grain(first + i)));
    const whole = (v: number, first: number, n: number) => {
      const e = c.entries(v);
      const out = Buffer.alloc(n * G);
      return e !== undefined && c.getRun(e, first, n, out, 0) ? out : undefined;
    };
    let e = c.epoch(1);
    c.offerRun(1, e, 0, 4, run(0, 4), 0);
    expect(whole(1, 0, 4)).toEqual(run(0, 4));
    c.offer(1, e, 10, grain(10), 0);
    // Some held already, one changed meanwhile: each grain keeps the right bytes.
    c.invalidate(1, 2, 1);
    e = c.epoch(1);
    c.offerRun(1, e, 1, 12, run(1, 12), 0); // 1, 3 and 10 are held: the others are new
    expect(whole(1, 0, 13)).toEqual(run(0, 13));
    expect(whole(1, 0, 14)).toBeUndefined(); // grain 13 is not held: nothing copied
    expect(c.hits).toBe(4 + 13);
    // Full: a run is admitted grain by grain (ghosts first), into slots wherever CLOCK finds them.
    const other = c.epoch(2);
    c.offerRun(2, other, 100, 8, run(100, 8), 0);
    c.offerRun(2, other, 100, 8, run(100, 8), 0);
    for (let g = 103; g < 108; g++) expect(read(c, 2, g)).toEqual(grain(g)); // admitted last
    let held = 0;
    for (const [v, from] of [
      [1, 0],
      [2, 100],
    ] as const) {
      for (let g = from; g < from + 13; g++) {
        const got = read(c, v, g);
        if (got === undefined) continue;
        expect(got).toEqual(grain(g));
        held++;
      }
    }
    expect(held).toBe(16);
    expect(c.size).toBe(16);
  });

  it("copies each grain of a run to its own slot when a freed slot breaks the sequence", () => {
    const c = new VolumeCache(16 * G);
    const run = (first: number, n: number) =>
      Buffer.concat(Array.from({ length: n }, (_, i) => grain(first + i)));
    c.offerRun(1, c.epoch(1), 0, 4, run(0, 4), 0);
    c.invalidate(1, 1, 1); // its slot is free: the next grain placed takes it
    c.offerRun(1, c.epoch(1), 20, 3, run(20, 3), 0); // slots 1, 4, 5
    for (const g of [0, 2, 3, 20, 21, 22]) expect(read(c, 1, g)).toEqual(grain(g));
  });
});
