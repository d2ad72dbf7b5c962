import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { masterKeyFromBytes } from "../crypto/index.js";
import { StorageError, StorageErrorCode } from "../volume/errors.js";
import type { MetaStore } from "./meta/index.js";
import { Pool, type PoolOpenOptions } from "./pool.js";
import { pattern, type TempPool, tempPool } from "./testing/helpers.js";

const G = 4096;
const MiB = 1024 * 1024;

let t: TempPool | undefined;
const extraDirs: string[] = [];
const extraPools: Pool[] = [];
afterEach(async () => {
  for (const p of extraPools.splice(0)) await p.close().catch(() => undefined);
  await t?.cleanup();
  t = undefined;
  for (const d of extraDirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A pool whose timer never commits during a test: only explicit triggers do. */
async function setup(options: Partial<PoolOpenOptions> = {}): Promise<TempPool> {
  // Deferred sealing on unless a test says otherwise: most tests here are about its pipeline.
  t = await tempPool({ writeBack: { commitDelayMs: 60_000, deferredSeal: true }, ...options });
  return t;
}

function storeOf(pool: Pool): MetaStore {
  return (pool as unknown as { store: MetaStore }).store;
}

/** Mapped grains of the volume in the block map itself (staged grains not counted). */
function mappedInMap(pool: Pool, volume: string): number {
  return pool.usage().volumes.find((v) => v.name === volume)!.logicalBytes / G;
}

/**
 * The pool directory as a process killed right now would leave it (page cache included), opened
 * as a second pool: the copy holds what was handed to the kernel, nothing staged in memory.
 */
async function openCopy(tp: TempPool): Promise<Pool> {
  const dir = mkdtempSync(join(tmpdir(), "sanmux-wb-copy-"));
  extraDirs.push(dir);
  cpSync(join(tp.dir, "pool"), join(dir, "pool"), { recursive: true });
  const pool = await Pool.open({
    dir: join(dir, "pool"),
    masterKey: masterKeyFromBytes(tp.keyBytes),
  });
  extraPools.push(pool);
  return pool;
}

describe("write-back: staged writes", () => {
  it("reads its writes before the commit, from the staged plaintext", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const data = pattern("a", 64 * G);
    await v.write(8, data);
    expect(mappedInMap(pool, "v")).toBe(0); // staged, not in the map yet
    expect((await v.read(8, 64)).equals(data)).toBe(true);
    // A read across staged grains and holes.
    const around = await v.read(0, 80);
    expect(around.subarray(8 * G, 72 * G).equals(data)).toBe(true);
    expect(around.subarray(0, 8 * G).equals(Buffer.alloc(8 * G))).toBe(true);
    // The caller may reuse its buffer once the write resolved: the stage has its own copy.
    data.fill(7);
    expect((await v.read(8, 1)).equals(pattern("a", G))).toBe(true);
    await pool.commitStaged();
    expect(mappedInMap(pool, "v")).toBe(64);
    expect((await v.read(8, 64)).equals(pattern("a", 64 * G))).toBe(true);
  });

  it("read-modify-writes of a 512-byte volume patch the staged grain, not the stage's copy", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 8 * MiB, blockSize: 512 });
    const model = Buffer.from(pattern("base", 2 * G));
    await v.write(0, Buffer.from(model));
    const staged = await v.read(0, 8);
    for (let k = 1; k < 16; k += 3) {
      const sector = pattern(`s${k}`, 512);
      sector.copy(model, k * 512);
      await v.write(k, sector);
    }
    expect(staged.equals(pattern("base", G))).toBe(true); // what a read returned stays as it was
    expect((await v.read(0, 16)).equals(model)).toBe(true);
    await pool.flush();
    expect((await (await t!.reopen()).volume("v")!.read(0, 16)).equals(model)).toBe(true);
  });

  it("an overwrite while a commit runs wins, in memory and after reopening", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    await v.write(0, pattern("old", 32 * G));
    const committing = pool.commitStaged();
    await v.write(16, pattern("new", 8 * G)); // staged while the commit runs
    await committing;
    const expected = pattern("old", 32 * G);
    pattern("new", 8 * G).copy(expected, 16 * G);
    expect((await v.read(0, 32)).equals(expected)).toBe(true);
    await pool.commitStaged();
    expect((await v.read(0, 32)).equals(expected)).toBe(true);
    // Many overlapping writes racing with commits: the last one staged per grain wins.
    const last = new Map<number, string>();
    const ops: Promise<unknown>[] = [];
    for (let i = 0; i < 40; i++) {
      const first = (i * 7) % 24;
      const label = `w${i}`;
      for (let g = first; g < first + 4; g++) last.set(g, `${label}:${g - first}`);
      const grains = Array.from({ length: 4 }, (_, k) => pattern(`${label}:${k}`, G));
      ops.push(v.write(first, Buffer.concat(grains)));
      if (i % 5 === 0) ops.push(pool.commitStaged());
      await new Promise((r) => setImmediate(r));
    }
    await Promise.all(ops);
    const check = async (volume: typeof v) => {
      const got = await volume.read(0, 32);
      for (const [g, label] of last) {
        expect(got.subarray(g * G, (g + 1) * G).equals(pattern(label, G))).toBe(true);
      }
    };
    await check(v);
    const reopened = await t!.reopen();
    await check(reopened.volume("v")!);
  });

  it("orders unmaps after the staged writes they cover, and writes after them", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    await v.write(0, pattern("x", 16 * G));
    await v.unmap(4, 8); // commits the staged write first, then unmaps
    const expected = pattern("x", 16 * G);
    expected.fill(0, 4 * G, 12 * G);
    expect((await v.read(0, 16)).equals(expected)).toBe(true);
    expect(await v.blockStatus(4)).toEqual({ mapped: false, blocks: 8 });
    await v.write(6, pattern("y", G)); // staged after the unmap
    pattern("y", G).copy(expected, 6 * G);
    expect((await v.read(0, 16)).equals(expected)).toBe(true);
    expect(await v.blockStatus(6)).toEqual({ mapped: true, blocks: 1 }); // commits, then looks
    await v.write(0, Buffer.alloc(2 * G)); // zeros staged as holes
    expected.fill(0, 0, 2 * G);
    expect((await v.read(0, 16)).equals(expected)).toBe(true);
    const reopened = await t!.reopen();
    expect((await reopened.volume("v")!.read(0, 16)).equals(expected)).toBe(true);
  });

  it("a flush or a FUA write makes every staged write durable; before, a lost process keeps old or new", async () => {
    const tp = await setup();
    const v = await tp.pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const old = pattern("old", 16 * G);
    await v.write(0, old, { fua: true });
    const fresh = pattern("new", 16 * G);
    await v.write(0, fresh); // staged: nothing of it in the map
    const lost = await openCopy(tp);
    const seen = await lost.volume("v")!.read(0, 16);
    for (let g = 0; g < 16; g++) {
      const grain = seen.subarray(g * G, (g + 1) * G);
      const isOld = grain.equals(old.subarray(g * G, (g + 1) * G));
      const isNew = grain.equals(fresh.subarray(g * G, (g + 1) * G));
      expect(isOld || isNew).toBe(true);
    }
    expect((await lost.check()).clean).toBe(true); // appended, unreferenced bytes: no finding
    await v.write(32, pattern("more", 4 * G)); // staged
    await v.write(64, pattern("fua", G), { fua: true }); // commits everything staged, and flushes
    const afterFua = await openCopy(tp);
    const w = afterFua.volume("v")!;
    expect((await w.read(0, 16)).equals(fresh)).toBe(true);
    expect((await w.read(32, 4)).equals(pattern("more", 4 * G))).toBe(true);
    expect((await w.read(64, 1)).equals(pattern("fua", G))).toBe(true);
    await v.write(100, pattern("flushed", 2 * G));
    await v.flush();
    const afterFlush = await openCopy(tp);
    expect((await afterFlush.volume("v")!.read(100, 2)).equals(pattern("flushed", 2 * G))).toBe(
      true,
    );
    await v.write(200, pattern("closed", G)); // staged: Pool.close commits it
    const reopened = await tp.reopen();
    expect((await reopened.volume("v")!.read(200, 1)).equals(pattern("closed", G))).toBe(true);
    expect((await reopened.check()).clean).toBe(true);
  });

  it("a volume without write cache commits and flushes every write", async () => {
    const tp = await setup();
    const v = await tp.pool.ensureVolume({
      name: "wt",
      size: 16 * MiB,
      blockSize: 4096,
      writeCache: false,
    });
    await v.write(0, pattern("wt", 4 * G));
    expect(mappedInMap(tp.pool, "wt")).toBe(4);
    const lost = await openCopy(tp);
    expect((await lost.volume("wt")!.read(0, 4)).equals(pattern("wt", 4 * G))).toBe(true);
  });

  it("stores grains again when GC claimed the chunk they deduplicated against (ChunkMissing)", async () => {
    const tp = await setup();
    const { pool } = tp;
    const a = await pool.ensureVolume({ name: "a", size: 16 * MiB, blockSize: 4096 });
    const b = await pool.ensureVolume({ name: "b", size: 16 * MiB, blockSize: 4096 });
    const x = pattern("x", 4 * G);
    await a.write(0, x);
    await pool.commitStaged();
    await a.write(0, pattern("y", 4 * G)); // x's chunks now dead
    await pool.applyJournal();
    const store = storeOf(pool);
    const dead = [...store.deadChunks()];
    expect(dead.length).toBeGreaterThanOrEqual(4);
    await b.write(8, x); // a dedup hit on the dead chunks (revived at commit, normally)
    // GC claims them before the commit (as a GC pass running between stage and commit would).
    for (const c of new Set(dead.map((d) => d.containerId))) await store.reclaimDeadChunks(c);
    expect(store.lookupChunk(b.domain, dead[0]!.fingerprint)).toBeUndefined();
    expect((await b.read(8, 4)).equals(x)).toBe(true); // served from the stage meanwhile
    await pool.flush(); // ChunkMissing → stored again from the plaintext → mapped
    expect(store.lookupChunk(b.domain, dead[0]!.fingerprint)).toBeDefined(); // the new copy
    expect((await b.read(8, 4)).equals(x)).toBe(true);
    const reopened = await tp.reopen();
    expect((await reopened.volume("b")!.read(8, 4)).equals(x)).toBe(true);
    await reopened.applyJournal();
    expect((await reopened.check()).clean).toBe(true);
  });

  it("the capacity guard counts staged grains as mapped and staged zeros as holes", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const asked: number[] = [];
    pool.setAllocationGuard((_name, bytes) => asked.push(bytes));
    await v.write(0, pattern("a", 4 * G));
    expect(asked).toEqual([4 * G]);
    // What capacity rules read counts the staged grains at once.
    expect(pool.volumeLogicalBytes("v")).toBe(4 * G);
    await v.write(0, pattern("b", 4 * G)); // staged grains: mapped, nothing new
    expect(asked).toEqual([4 * G]);
    await v.write(2, Buffer.alloc(2 * G)); // zeros staged: holes again
    await v.write(0, pattern("c", 4 * G));
    expect(asked).toEqual([4 * G, 2 * G]);
    expect(pool.volumeLogicalBytes("v")).toBe(6 * G); // an upper bound until the commit
    await pool.commitStaged();
    expect(pool.volumeLogicalBytes("v")).toBe(4 * G);
    await v.write(0, pattern("d", 4 * G));
    expect(asked).toEqual([4 * G, 2 * G]);
  });

  it("a snapshot taken after a staged write holds it", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    await v.write(0, pattern("before", 8 * G));
    await pool.createSnapshot("v", "s1");
    await v.write(0, pattern("after", 8 * G)); // staged, after the snapshot
    const snap = await pool.openSnapshot("v", "s1");
    expect((await snap.read(0, 8)).equals(pattern("before", 8 * G))).toBe(true);
    expect((await v.read(0, 8)).equals(pattern("after", 8 * G))).toBe(true);
    const clone = await pool.cloneSnapshot("v", "s1", "c");
    expect((await clone.read(0, 8)).equals(pattern("before", 8 * G))).toBe(true);
  });

  it("copies by reference see the staged writes of both volumes", async () => {
    const { pool } = await setup();
    const a = await pool.ensureVolume({ name: "a", size: 16 * MiB, blockSize: 4096 });
    const b = await pool.ensureVolume({ name: "b", size: 16 * MiB, blockSize: 4096 });
    await a.write(0, pattern("src", 8 * G));
    await b.write(0, pattern("dst", 16 * G));
    expect(await b.copyFrom(a, 0, 4, 8)).toBe(true);
    const expected = pattern("dst", 16 * G);
    pattern("src", 8 * G).copy(expected, 4 * G);
    expect((await b.read(0, 16)).equals(expected)).toBe(true);
  });

  it("a failed commit keeps the writes staged and visible, and the flush reports it", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const store = storeOf(pool);
    const real = store.writeGrains.bind(store);
    let failures = 1;
    store.writeGrains = async (...args) => {
      if (failures-- > 0) throw new Error("injected metadata failure");
      return real(...args);
    };
    await v.write(0, pattern("kept", 4 * G));
    const e = await v.flush().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(StorageError);
    expect((e as StorageError).code).toBe(StorageErrorCode.WriteFault);
    expect((await v.read(0, 4)).equals(pattern("kept", 4 * G))).toBe(true);
    await v.flush(); // tried again: lands
    expect(mappedInMap(pool, "v")).toBe(4);
    const reopened = await t!.reopen();
    expect((await reopened.volume("v")!.read(0, 4)).equals(pattern("kept", 4 * G))).toBe(true);
  });

  it("a failed write keeps its zero grains in place when a later write of its commit landed", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const store = storeOf(pool);
    const real = store.writeGrains.bind(store);
    let calls = 0;
    store.writeGrains = async (...args) => {
      if (calls++ === 0) throw new Error("injected metadata failure"); // the first write only
      return real(...args);
    };
    // Write 1: grains 0-3, grain 1 all zeros (a hole of its plaintext); write 2: grain 2 again.
    const first = Buffer.concat([
      pattern("a0", G),
      Buffer.alloc(G),
      pattern("a2", G),
      pattern("a3", G),
    ]);
    await v.write(0, first);
    await v.write(2, pattern("b2", G));
    await expect(v.flush()).rejects.toBeInstanceOf(StorageError);
    // Write 2 landed, write 1 stays staged without grain 2: what reads see is unchanged.
    const want = Buffer.concat([
      pattern("a0", G),
      Buffer.alloc(G),
      pattern("b2", G),
      pattern("a3", G),
    ]);
    expect((await v.read(0, 4)).equals(want)).toBe(true);
    await v.flush();
    expect((await v.read(0, 4)).equals(want)).toBe(true);
    const reopened = await t!.reopen();
    expect((await reopened.volume("v")!.read(0, 4)).equals(want)).toBe(true);
  });

  it("commits by itself after the delay, and when the staged bytes pass the bound", async () => {
    const { pool } = await setup({
      writeBack: { commitDelayMs: 20, maxStagedBytes: 64 * G, maxHeldBytes: 128 * G },
    });
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    await v.write(0, pattern("timer", 4 * G));
    for (let i = 0; i < 100 && mappedInMap(pool, "v") < 4; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(mappedInMap(pool, "v")).toBe(4);
    // 256 grains = 4 × the bound: commits start at the bound, and the writes wait for one
    // rather than hold more than twice the bound (maxHeldBytes here).
    const writeBack = (pool as unknown as { writeBack: { bytesStaged: number } }).writeBack;
    for (let i = 0; i < 8; i++) {
      await v.write(64 + i * 32, pattern(`big${i}`, 32 * G));
      expect(writeBack.bytesStaged).toBeLessThan(2 * 64 * G);
    }
    for (let i = 0; i < 100 && mappedInMap(pool, "v") < 4 + 256; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(mappedInMap(pool, "v")).toBe(4 + 256);
  });

  it("is off with writeBack.enabled false: every write is in the map when it resolves", async () => {
    const { pool } = await setup({ writeBack: { enabled: false } });
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    await Promise.all([v.write(0, pattern("p", 4 * G)), v.write(8, pattern("q", 4 * G))]);
    expect(mappedInMap(pool, "v")).toBe(8);
  });
});

/** The pool's chunk store and worker jobs, to hold back or fail the commit pipeline. */
function internals(pool: Pool): {
  jobs: { fingerprint: (...args: unknown[]) => Promise<unknown> };
  chunks: { hasRoomFor(grains: number): boolean };
} {
  const chunks = (pool as unknown as { chunks: { jobs: never; hasRoomFor(g: number): boolean } })
    .chunks;
  return { jobs: chunks.jobs, chunks };
}

/** Hold every fingerprint job until `open()`; `calls` counts the jobs asked for. */
function gateFingerprints(pool: Pool): { calls: () => number; open: () => void } {
  const { jobs } = internals(pool);
  const original = jobs.fingerprint.bind(jobs);
  let calls = 0;
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  jobs.fingerprint = async (...args: unknown[]) => {
    calls++;
    await gate;
    return original(...args);
  };
  return { calls: () => calls, open };
}

describe("write-back: deferred sealing (commit pipeline)", () => {
  it("acknowledges a write before it is fingerprinted, and reads it back from the stage", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const gate = gateFingerprints(pool);
    const data = pattern("early", 64 * G);
    await v.write(0, data); // resolves although no fingerprint can be computed yet
    await v.write(80, Buffer.alloc(4 * G)); // zeros: holes
    expect((await v.read(0, 64)).equals(data)).toBe(true);
    expect((await v.read(80, 4)).equals(Buffer.alloc(4 * G))).toBe(true);
    expect(mappedInMap(pool, "v")).toBe(0);
    const flushed = v.flush();
    await new Promise((r) => setTimeout(r, 20));
    expect(mappedInMap(pool, "v")).toBe(0); // the commit waits for the preparation
    gate.open();
    await flushed;
    expect(gate.calls()).toBeGreaterThan(0);
    expect(mappedInMap(pool, "v")).toBe(64);
    const reopened = await t!.reopen();
    expect((await reopened.volume("v")!.read(0, 64)).equals(data)).toBe(true);
  });

  it("many overlapping writes prepared concurrently: the last one staged wins, after reopen too", async () => {
    const { pool } = await setup({
      writeBack: { commitDelayMs: 5, maxStagedBytes: 256 * 1024, deferredSeal: true },
    });
    const v = await pool.ensureVolume({ name: "v", size: 4 * MiB, blockSize: 4096 });
    const grains = 256;
    const expected = Buffer.alloc(grains * G);
    let seed = 12345;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const writes: Promise<void>[] = [];
    for (let k = 0; k < 300; k++) {
      const count = 1 + random(48);
      const at = random(grains - count);
      // Some repeats of earlier content (dedup against chunks still being appended), some zeros.
      const kind = random(8);
      const data =
        kind === 0 ? Buffer.alloc(count * G) : pattern(kind === 1 ? "repeat" : `w${k}`, count * G);
      data.copy(expected, at * G);
      writes.push(v.write(at, data));
      if (k % 50 === 49) await Promise.all(writes.splice(0)); // now and then all acknowledged
    }
    await Promise.all(writes);
    expect((await v.read(0, grains)).equals(expected)).toBe(true);
    await v.flush();
    expect((await v.read(0, grains)).equals(expected)).toBe(true);
    const reopened = await t!.reopen();
    expect((await reopened.volume("v")!.read(0, grains)).equals(expected)).toBe(true);
    expect((await reopened.check()).clean).toBe(true);
  });

  it("deduplicates across staged writes not yet sealed", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const chunks = (pool as unknown as { chunks: { containerBytes(): number } }).chunks;
    const before = chunks.containerBytes();
    const data = pattern("twice", 64 * G);
    await v.write(0, data);
    await v.write(512, data); // staged while the first is not prepared yet
    await v.write(1024, data);
    await pool.commitStaged();
    const grown = chunks.containerBytes() - before;
    expect(grown).toBeGreaterThan(64 * G);
    expect(grown).toBeLessThan(2 * 64 * G); // stored once
    await pool.applyJournal();
    expect(pool.usage().pool.liveChunks).toBe(64);
    for (const at of [0, 512, 1024]) expect((await v.read(at, 64)).equals(data)).toBe(true);
  });

  it("admits capacity before acknowledging: a refused write stages nothing", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const gate = gateFingerprints(pool);
    pool.setAllocationGuard((_name, bytes) => {
      if (bytes > 8 * G) throw new StorageError(StorageErrorCode.QuotaExceeded, "quota");
    });
    await v.write(0, pattern("ok", 8 * G));
    await expect(v.write(8, pattern("no", 16 * G))).rejects.toMatchObject({
      code: StorageErrorCode.QuotaExceeded,
    });
    await v.write(0, pattern("over", 8 * G)); // overwrites of staged grains allocate nothing
    await v.write(100, Buffer.alloc(64 * G)); // zeros allocate nothing
    expect((await v.read(8, 16)).equals(Buffer.alloc(16 * G))).toBe(true);
    gate.open(); // all of the above resolved with no fingerprint computed
    await v.flush();
    expect(mappedInMap(pool, "v")).toBe(8);
  });

  it("a write that fails in the pipeline stays readable and fails the next flush, then lands", async () => {
    const tp = await setup();
    const v = await tp.pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const { jobs } = internals(tp.pool);
    const original = jobs.fingerprint.bind(jobs);
    let failing = true;
    jobs.fingerprint = async (...args: unknown[]) => {
      if (failing) throw new Error("injected pipeline failure");
      return original(...args);
    };
    await v.write(0, pattern("before", 4 * G)); // acknowledged: fails in the background
    await v.write(2, pattern("after", 4 * G)); // a later write over part of it
    const expected = Buffer.concat([pattern("before", 2 * G), pattern("after", 4 * G)]);
    const fault = await v.flush().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(fault).toBeInstanceOf(StorageError);
    expect((fault as StorageError).code).toBe(StorageErrorCode.WriteFault);
    expect((await v.read(0, 6)).equals(expected)).toBe(true); // still staged, still ordered
    expect(mappedInMap(tp.pool, "v")).toBe(0); // the later write waits behind it
    failing = false;
    await v.flush(); // prepared again, then landed in order
    expect(mappedInMap(tp.pool, "v")).toBe(6);
    const reopened = await tp.reopen();
    expect((await reopened.volume("v")!.read(0, 6)).equals(expected)).toBe(true);
  });

  it("near the devices' reserve a write takes the direct path: PoolFull before the acknowledgement", async () => {
    const { pool } = await setup();
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const { chunks } = internals(pool);
    chunks.hasRoomFor = () => false;
    const gate = gateFingerprints(pool);
    const write = v.write(0, pattern("direct", 4 * G));
    await new Promise((r) => setTimeout(r, 10));
    expect(gate.calls()).toBe(1); // fingerprinted before it resolves
    gate.open();
    await write;
    expect((await v.read(0, 4)).equals(pattern("direct", 4 * G))).toBe(true);
  });

  // The held bound given (twice the commit bound), and the default (four times).
  for (const { held, given } of [
    { held: 32, given: true },
    { held: 64, given: false },
  ])
    it(`writes wait while the stage and the commit under way hold ${held} grains together (${given ? "maxHeldBytes" : "the default"})`, async () => {
      const { pool } = await setup({
        writeBack: {
          commitDelayMs: 60_000,
          maxStagedBytes: 16 * G,
          ...(given ? { maxHeldBytes: held * G } : {}),
          maxUnpreparedBytes: 1024 * G, // only the stage's bound here
          deferredSeal: true,
        },
      });
      const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
      const gate = gateFingerprints(pool);
      // 16 grains: the commit bound; a commit takes them and waits for their preparation (held
      // back). Writes of 15 grains stay under it: no second commit is asked for.
      await v.write(0, pattern("a", 16 * G));
      const rest = held - 16 - 1;
      for (let at = 16; at < 16 + rest; at += 15) {
        await v.write(at, pattern(`b${at}`, Math.min(15, 16 + rest - at) * G)); // resolves
      }
      let resolved = false;
      const last = v.write(held - 1, pattern("c", G)).then(() => {
        resolved = true;
      });
      await new Promise((r) => setTimeout(r, 30));
      // What is staged alone is under the held bound, but with the commit's it is not.
      expect(resolved).toBe(false);
      const before = await v.read(0, held - 1); // readable meanwhile
      gate.open();
      await last; // the commit landed "a": room again
      await v.flush();
      expect(mappedInMap(pool, "v")).toBe(held);
      const reopened = await t!.reopen();
      const expected = Buffer.concat([before, pattern("c", G)]);
      expect(expected.subarray(0, 16 * G).equals(pattern("a", 16 * G))).toBe(true);
      expect((await reopened.volume("v")!.read(0, held)).equals(expected)).toBe(true);
    });

  it("the switch off (deferredSeal: false) fingerprints and seals before acknowledging", async () => {
    const { pool } = await setup({ writeBack: { commitDelayMs: 60_000, deferredSeal: false } });
    const v = await pool.ensureVolume({ name: "v", size: 16 * MiB, blockSize: 4096 });
    const gate = gateFingerprints(pool);
    let done = false;
    const write = v.write(0, pattern("old path", 4 * G)).then(() => (done = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(done).toBe(false);
    gate.open();
    await write;
    expect((await v.read(0, 4)).equals(pattern("old path", 4 * G))).toBe(true);
  });
});
