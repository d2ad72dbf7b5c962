import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MetaErrorCode } from "./errors.js";
import type { MetaStore } from "./store.js";
import { fp, loc, type TempStore, tempStore, xorshift32 } from "./testing/helpers.js";

const names = new Map<string, string>();
const label = (n: string | number) => {
  const f = fp(`copy-${n}`);
  names.set(f.toString("hex", 0, 16), String(n)); // the store returns the first 16 bytes
  return f;
};

/** Writes labels (null = hole) at consecutive grains; every chunk stored in container 1. */
function write(store: MetaStore, volume: number, first: number, labels: (string | null)[]) {
  return store.writeGrains(
    volume,
    labels.map((l, i) => ({
      grain: first + i,
      fingerprint: l === null ? null : label(l),
      ...(l === null ? {} : { chunk: loc(1, offsetOf(l)) }),
    })),
  );
}

function offsetOf(l: string): number {
  let h = 7;
  for (const c of l) h = (h * 131 + c.charCodeAt(0)) % 100_000_007;
  return h;
}

function view(store: MetaStore, volume: number, first: number, n: number, snapshot?: number) {
  return store
    .resolveGrains(volume, first, n, snapshot === undefined ? {} : { snapshot })
    .map((r) => (r ? (names.get(r.fingerprint.toString("hex")) ?? "?") : null));
}

async function settle(store: MetaStore) {
  const r = await store.applyJournal({ maxRecords: Number.MAX_SAFE_INTEGER });
  expect(r.anomalies).toEqual([]);
  const a = store.audit();
  expect(a.clean, JSON.stringify(a, null, 1)).toBe(true);
  return r;
}

describe("map copies", () => {
  let t: TempStore;
  beforeEach(async () => {
    t = await tempStore();
    await t.store.createVolume(1, 1);
    await t.store.createVolume(2, 1);
    await t.store.createVolume(3, 2);
  });
  afterEach(async () => {
    await t.cleanup();
  });
  const rc = (l: string) => t.store.lookupChunk(1, label(l))?.refcount;

  it("copies across volumes by reference, holes as holes", async () => {
    const { store } = t;
    await write(store, 1, 0, ["A", "B", null, "C"]);
    await write(store, 2, 10, ["X", "X", "X", "X", "X"]);
    expect(await store.copyGrains({ volume: 1 }, 0, 2, 10, 4)).toEqual({ copied: 3 });
    expect(view(store, 2, 10, 5)).toEqual(["A", "B", null, "C", "X"]);
    const r = await settle(store);
    expect([rc("A"), rc("B"), rc("C"), rc("X")]).toEqual([2, 2, 2, 1]);
    expect(r.dead).toEqual([]);
    expect(store.volumeUsage(2)).toMatchObject({ mappedGrains: 4, referencedBytes: 8000 });
    // The copy is independent: overwriting the source leaves it.
    await write(store, 1, 0, ["D"]);
    expect(view(store, 2, 10, 1)).toEqual(["A"]);
    await settle(store);
  });

  it("copies overlapping ranges of one volume as if the source was read whole first", async () => {
    const { store } = t;
    const initial = ["0", "1", null, "3", "4", "5", null, "7", "8", "9", null, null];
    const memmove = (src: number, dst: number, n: number) => {
      const out = [...initial];
      const part = initial.slice(src, src + n);
      for (let i = 0; i < n; i++) out[dst + i] = part[i] ?? null;
      return out;
    };
    for (const [src, dst, n] of [
      [0, 3, 8], // forward overlap: copied from the end down
      [3, 0, 8], // backward overlap
      [0, 1, 10],
      [2, 2, 5], // onto itself: nothing changes
    ] as const) {
      await write(store, 1, 0, initial);
      await store.copyGrains({ volume: 1 }, src, 1, dst, n, { batchSize: 2 });
      expect(view(store, 1, 0, 12), `${src}→${dst}×${n}`).toEqual(memmove(src, dst, n));
      await settle(store);
    }
  });

  it("copies from a snapshot, and keeps the destination's snapshots whole", async () => {
    const { store } = t;
    await write(store, 1, 0, ["A", "B", "C", "D"]);
    const s = await store.createSnapshot(1);
    await write(store, 1, 0, ["W", "X", null, "Z"]);
    // Restore grains 1..3 from the snapshot, shifted by one (overlap is harmless: s is frozen).
    expect(
      await store.copyGrains({ volume: 1, snapshot: s }, 0, 1, 1, 3, { batchSize: 1 }),
    ).toEqual({ copied: 3 });
    expect(view(store, 1, 0, 4)).toEqual(["W", "A", "B", "C"]);
    expect(view(store, 1, 0, 4, s)).toEqual(["A", "B", "C", "D"]);
    // Into another volume that has a snapshot: what the copy overwrites is preserved for it.
    await write(store, 2, 0, ["P", "Q"]);
    const s2 = await store.createSnapshot(2);
    await store.copyGrains({ volume: 1, snapshot: s }, 0, 2, 0, 2);
    expect(view(store, 2, 0, 2)).toEqual(["A", "B"]);
    expect(view(store, 2, 0, 2, s2)).toEqual(["P", "Q"]);
    const dead = async () =>
      (await settle(store)).dead.map((d) => names.get(d.fingerprint.toString("hex"))).sort();
    // X and Z were written after the snapshot: the copy released them at once.
    expect(await dead()).toEqual(["X", "Z"]);
    await store.deleteSnapshot(1, s);
    await store.deleteSnapshot(2, s2);
    expect(await dead()).toEqual(["D", "P", "Q"]);
  });

  it("rejects copies across dedup domains and changes nothing", async () => {
    const { store } = t;
    await write(store, 1, 0, ["A"]);
    await expect(store.copyGrains({ volume: 1 }, 0, 3, 0, 1)).rejects.toMatchObject({
      code: MetaErrorCode.CrossDomain,
    });
    await expect(store.cloneVolume({ volume: 1, snapshot: 0 }, 4, 1)).rejects.toMatchObject({
      code: MetaErrorCode.UnknownSnapshot,
    });
    const s = await store.createSnapshot(1);
    await expect(store.cloneVolume({ volume: 1, snapshot: s }, 4, 2)).rejects.toMatchObject({
      code: MetaErrorCode.CrossDomain,
    });
    await expect(store.copyGrains({ volume: 9 }, 0, 1, 0, 1)).rejects.toMatchObject({
      code: MetaErrorCode.UnknownVolume,
    });
    await expect(store.copyGrains({ volume: 1 }, -1, 2, 0, 1)).rejects.toMatchObject({
      code: MetaErrorCode.InvalidArgument,
    });
    expect(store.volumeDomain(4)).toBeUndefined();
    expect(view(store, 3, 0, 1)).toEqual([null]);
    await settle(store);
  });

  it("costs what is mapped, not the length of a sparse range", async () => {
    const { store } = t;
    await write(store, 1, 2 ** 40, ["A"]);
    await write(store, 1, 5, ["B"]);
    await write(store, 2, 2 ** 41, ["X"]);
    const r = await store.copyGrains({ volume: 1 }, 0, 2, 2 ** 41 - 5, 2 ** 42, { batchSize: 1 });
    expect(r).toEqual({ copied: 2 });
    expect(view(store, 2, 2 ** 41, 1)).toEqual(["B"]);
    expect(view(store, 2, 2 ** 41 + 2 ** 40 - 5, 1)).toEqual(["A"]);
    expect([...store.mapEntries(2)].length).toBe(2);
    await settle(store);
  });

  it("clones a snapshot into an independent volume", async () => {
    const { store } = t;
    await store.writeGrains(
      1,
      Array.from({ length: 3000 }, (_, g) => ({
        grain: g * 3,
        fingerprint: label(g % 100),
        chunk: loc(1, offsetOf(String(g % 100))),
      })),
    );
    const s = await store.createSnapshot(1);
    await write(store, 1, 0, ["new", null, null, "new"]);
    expect(await store.cloneVolume({ volume: 1, snapshot: s }, 7, 1, { batchSize: 1000 })).toEqual({
      copied: 3000,
    });
    expect(store.volumeDomain(7)).toBe(1);
    expect(view(store, 7, 0, 7)).toEqual(["0", null, null, "1", null, null, "2"]);
    expect(store.volumeUsage(7)).toMatchObject({ mappedGrains: 3000, referencedBytes: 6_000_000 });
    await settle(store);
    expect(rc("0")).toBe(30 + 30); // volume 1's snapshot (A@0 preserved) and head, plus the clone
    await store.deleteSnapshot(1, s);
    await store.deleteVolume(1);
    await settle(store);
    expect(rc("0")).toBe(30);
    expect(view(store, 7, 0, 4)).toEqual(["0", null, null, "1"]);
    await store.deleteVolume(7);
    await settle(store);
    expect(store.domainUsage(1)).toMatchObject({ mappedGrains: 0, liveChunks: 0 });
  });
});

describe("random map operations agree with a model", () => {
  let t: TempStore;
  beforeEach(async () => {
    t = await tempStore();
  });
  afterEach(async () => {
    await t.cleanup();
  });

  it("writes, unmaps, copies, snapshots, snapshot deletions and clones", async () => {
    const { store } = t;
    const rand = xorshift32(42);
    const N = 48;
    type Map_ = (string | null)[];
    const heads = new Map<number, Map_>();
    const snaps = new Map<string, Map_>(); // `${volume}:${s}`
    const volumes = [1, 2];
    for (const v of volumes) {
      await store.createVolume(v, 1);
      heads.set(v, Array(N).fill(null));
    }
    let nextVolume = 10;
    const pick = <T>(xs: readonly T[]) => xs[rand(xs.length)]!;
    for (let step = 0; step < 400; step++) {
      const v = pick(volumes);
      const head = heads.get(v)!;
      const op = rand(20);
      if (op < 8) {
        const first = rand(N);
        const labels = Array.from({ length: 1 + rand(Math.min(6, N - first)) }, () =>
          rand(5) === 0 ? null : String(rand(24)),
        );
        await write(store, v, first, labels);
        labels.forEach((l, i) => {
          head[first + i] = l;
        });
      } else if (op < 10) {
        const first = rand(N);
        const n = rand(N - first + 1);
        await store.unmapGrains(v, first, n);
        head.fill(null, first, first + n);
      } else if (op < 13) {
        const dst = pick(volumes);
        const n = 1 + rand(N / 2);
        const sf = rand(N - n + 1);
        const df = rand(N - n + 1);
        const fromSnap = [...snaps.keys()].filter((k) => k.startsWith(`${v}:`));
        const key = rand(2) === 0 && fromSnap.length > 0 ? pick(fromSnap) : undefined;
        const src = key ? snaps.get(key)! : head;
        const part = src.slice(sf, sf + n);
        await store.copyGrains(
          key ? { volume: v, snapshot: Number(key.split(":")[1]) } : { volume: v },
          sf,
          dst,
          df,
          n,
          { batchSize: 1 + rand(4) },
        );
        const d = heads.get(dst)!;
        part.forEach((l, i) => {
          d[df + i] = l;
        });
      } else if (op < 16) {
        const s = await store.createSnapshot(v);
        snaps.set(`${v}:${s}`, [...head]);
      } else if (op < 19) {
        const mine = [...snaps.keys()].filter((k) => k.startsWith(`${v}:`));
        if (mine.length === 0) continue;
        const key = pick(mine);
        await store.deleteSnapshot(v, Number(key.split(":")[1]), { batchSize: 1 + rand(3) });
        snaps.delete(key);
      } else {
        const mine = [...snaps.keys()].filter((k) => k.startsWith(`${v}:`));
        if (mine.length === 0 || volumes.length > 4) continue;
        const key = pick(mine);
        const nv = nextVolume++;
        await store.cloneVolume({ volume: v, snapshot: Number(key.split(":")[1]) }, nv, 1);
        volumes.push(nv);
        heads.set(nv, [...snaps.get(key)!]);
      }
      if (rand(4) === 0) await store.applyJournal({ maxRecords: 1 + rand(8) });
      for (const vol of volumes)
        expect(view(store, vol, 0, N), `step ${step}`).toEqual(heads.get(vol));
      for (const [key, m] of snaps) {
        const [vol, s] = key.split(":").map(Number) as [number, number];
        expect(view(store, vol, 0, N, s), `step ${step} snapshot ${key}`).toEqual(m);
      }
      if (step % 50 === 49) {
        const a = store.audit();
        expect(a.clean, `step ${step}: ${JSON.stringify(a)}`).toBe(true);
      }
    }
    await settle(store);
    for (const vol of volumes) await store.deleteVolume(vol);
    await settle(store);
    expect(store.domainUsage(1)).toMatchObject({
      mappedGrains: 0,
      referencedBytes: 0,
      liveChunks: 0,
      physicalBytes: 0,
    });
    expect(store.domainSnapshotUsage(1)).toMatchObject({ oldVersions: 0, referencedBytes: 0 });
    expect(store.listVolumes()).toEqual([]);
  });
});
