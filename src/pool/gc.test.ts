import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ChunkReader } from "./chunk-reader.js";
import { RECORD_HEADER_BYTES } from "./container/index.js";
import type { GcProgress } from "./gc.js";
import type { PoolVolume } from "./pool.js";
import { pattern, type TempPool, tempPool } from "./testing/helpers.js";

const G = 4096;
const MiB = 1024 * 1024;
const GRAINS = 1024; // 4 MiB of data
const SEAL = 128 * 1024; // ~30 records per container: ~32 containers

let t: TempPool | undefined;
afterEach(async () => {
  vi.restoreAllMocks();
  await t?.cleanup();
  t = undefined;
});

function containerDir(tp: TempPool): string {
  return join(tp.dir, "pool", "devices", "0", "containers");
}

function containerFiles(tp: TempPool): string[] {
  return readdirSync(containerDir(tp)).filter((n) => n.endsWith(".sxc"));
}

/** The file of container `number`, or of the first one (registry.json maps numbers to ids). */
function containerFile(tp: TempPool, number: number | "first"): string {
  const registry = JSON.parse(readFileSync(join(tp.dir, "pool", "registry.json"), "utf8")) as {
    containers: { number: number; id: string }[];
  };
  const first = Math.min(...registry.containers.map((c) => c.number));
  const rec = registry.containers.find((c) => c.number === (number === "first" ? first : number));
  if (rec === undefined) throw new Error(`container ${number} is not in the registry`);
  return `${rec.id}.sxc`;
}

function diskBytes(tp: TempPool): number {
  return containerFiles(tp).reduce((s, n) => s + statSync(join(containerDir(tp), n)).size, 0);
}

/**
 * Grain `g`'s content, version `v`: every 3rd grain compresses (zstd records), the others do not
 * (records stored as they are), so that both codecs are moved.
 */
function grain(g: number, v = 0): Buffer {
  if (g % 3 === 0) {
    const b = Buffer.alloc(G, `grain ${g} version ${v} compresses well; `);
    b.writeUInt32LE(g, 0);
    return b;
  }
  return pattern(`${g}.${v}`, G);
}

/**
 * A pool whose sealed containers are about half dead: GRAINS grains written 16 at a time, then
 * grains 2..3 of every 4 unmapped (half) or overwritten (the other half). The model is returned.
 */
async function halfDead(tp: TempPool): Promise<{ v: PoolVolume; model: Buffer }> {
  const v = await tp.pool.ensureVolume({ name: "v", size: 8 * MiB, blockSize: 4096 });
  const model = Buffer.alloc(GRAINS * G);
  for (let g = 0; g < GRAINS; g += 16) {
    const data = Buffer.concat(Array.from({ length: 16 }, (_, k) => grain(g + k)));
    await v.write(g, data);
    data.copy(model, g * G);
  }
  for (let g = 2; g < GRAINS; g += 4) {
    if (g % 8 === 2) {
      await v.unmap(g, 2);
      model.fill(0, g * G, (g + 2) * G);
    } else {
      // Overwritten: the new versions land in new containers, the old ones die.
      const data = Buffer.concat([grain(g, 1), grain(g + 1, 1)]);
      await v.write(g, data);
      data.copy(model, g * G);
    }
  }
  await tp.pool.flush();
  await tp.pool.applyJournal();
  return { v, model };
}

async function readAll(v: PoolVolume): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let g = 0; g < GRAINS; g += 128) parts.push(await v.read(g, 128));
  return Buffer.concat(parts);
}

describe("gc compaction", () => {
  it("moves live chunks out of partly dead containers, deletes them, frees the dead bytes", async () => {
    t = await tempPool({ sealBytes: SEAL });
    const tp = t;
    const { v, model } = await halfDead(tp);
    const before = tp.pool.usage();
    const filesBefore = new Set(containerFiles(tp));
    const bytesBefore = diskBytes(tp);
    // What the dead records occupy on disk: stored bytes plus a record header each.
    const dead = before.pool.deadBytes + before.pool.deadChunks * RECORD_HEADER_BYTES;
    expect(dead).toBeGreaterThan(MiB);
    const progress: GcProgress[] = [];

    const report = await tp.pool.gc({ minDeadFraction: 0.3, onProgress: (p) => progress.push(p) });

    expect(report.containersCompacted).toBeGreaterThanOrEqual(filesBefore.size - 8);
    expect(report.containersDeleted).toBeGreaterThanOrEqual(report.containersCompacted);
    expect(report.bytesMoved).toBeGreaterThan(MiB);
    expect(report.notCompacted.every((n) => /open/.test(n.reason))).toBe(true);
    expect(report.bytesReclaimed - report.bytesMoved).toBeGreaterThan(0.85 * dead);
    // The compacted files are gone; the disk is down by about the dead bytes (the open
    // container's dead records stay, new containers carry directories).
    const filesAfter = new Set(containerFiles(tp));
    const gone = [...filesBefore].filter((f) => !filesAfter.has(f));
    expect(gone.length).toBe(report.containersDeleted);
    const freed = bytesBefore - diskBytes(tp);
    expect(freed).toBeGreaterThan(0.85 * dead);
    expect(freed).toBeLessThan(1.1 * dead);
    // The figures: nothing dead left but in the open container, same data, same physical bytes.
    const after = tp.pool.usage();
    expect(after.pool.deadBytes).toBe(0);
    expect(after.pool.physicalBytes).toBe(before.pool.physicalBytes);
    expect(after.pool.logicalBytes).toBe(before.pool.logicalBytes);
    expect(after.containers.total).toBeLessThan(before.containers.total / 2 + 4);
    const last = progress[progress.length - 1]!;
    expect(last).toMatchObject({
      containersCompacted: report.containersCompacted,
      bytesMoved: report.bytesMoved,
    });
    expect(last.done).toBe(last.containers);

    expect((await readAll(v)).equals(model)).toBe(true);
    expect((await tp.pool.check()).clean).toBe(true);
    const scrub = await tp.pool.scrub();
    expect(scrub.damaged).toEqual([]);
    expect(scrub.missing).toEqual([]);

    // A second pass finds nothing to do; a reopen reads everything.
    const again = await tp.pool.gc({ minDeadFraction: 0.3 });
    expect(again.containersCompacted).toBe(0);
    const pool = await tp.reopen();
    expect((await readAll(pool.volume("v")!)).equals(model)).toBe(true);
    expect((await pool.check()).clean).toBe(true);
    expect((await pool.scrub()).damaged).toEqual([]);
  });

  it("with compaction off, lists the containers past the threshold with the reason", async () => {
    t = await tempPool({ sealBytes: SEAL });
    const tp = t;
    await halfDead(tp);
    const files = containerFiles(tp).length;
    const report = await tp.pool.gc({ minDeadFraction: 0.3, compact: false });
    expect(report.containersCompacted).toBe(0);
    expect(report.bytesMoved).toBe(0);
    expect(report.notCompacted.length).toBeGreaterThan(files / 2);
    expect(report.notCompacted.some((n) => n.reason === "compaction is off")).toBe(true);
    expect(containerFiles(tp).length).toBeGreaterThanOrEqual(files - report.containersDeleted);
  });

  it("reads and writes running during the pass all succeed with the right data", async () => {
    t = await tempPool({ sealBytes: SEAL });
    const tp = t;
    const { v, model } = await halfDead(tp);
    // Grains below HALF are only read during the pass; writers own the grains above.
    const HALF = GRAINS / 2;
    let seed = 11;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    let running = true;
    let reads = 0;
    let writes = 0;
    const reader = async () => {
      while (running) {
        const first = rand(HALF - 16);
        const n = 1 + rand(16);
        const got = await v.read(first, n);
        expect(got.equals(model.subarray(first * G, (first + n) * G))).toBe(true);
        reads++;
        // A read the read cache serves resolves without I/O: let the pass's own I/O run.
        await new Promise((r) => setImmediate(r));
      }
    };
    const writer = async (w: number) => {
      for (let round = 0; running; round++) {
        const first = HALF + w * 128 + rand(120);
        const n = 1 + rand(8);
        // Half of the writes bring content the pool holds already, in containers being
        // compacted (dedup against chunks being moved); the others new content.
        const data =
          round % 2 === 0
            ? Buffer.from(model.subarray((first - HALF) * G, (first - HALF + n) * G))
            : Buffer.concat(Array.from({ length: n }, (_, k) => grain(first + k, 100 + round)));
        await v.write(first, data);
        data.copy(model, first * G);
        const back = await v.read(first, n);
        expect(back.equals(data)).toBe(true);
        writes++;
      }
    };
    const gc = tp.pool.gc({ minDeadFraction: 0.3, batchBytes: 64 * 1024 }).finally(() => {
      running = false;
    });
    const workers = [reader(), reader(), writer(0), writer(1), writer(2), writer(3)];
    const report = await gc;
    await Promise.all(workers);
    expect(report.containersCompacted).toBeGreaterThan(10);
    expect(reads).toBeGreaterThan(10);
    expect(writes).toBeGreaterThan(10);

    expect((await readAll(v)).equals(model)).toBe(true);
    await tp.pool.gc({ minDeadFraction: 0.3 });
    expect((await readAll(v)).equals(model)).toBe(true);
    expect((await tp.pool.check()).clean).toBe(true);
    expect((await tp.pool.scrub()).damaged).toEqual([]);
    const pool = await tp.reopen();
    expect((await readAll(pool.volume("v")!)).equals(model)).toBe(true);
    expect((await pool.check()).clean).toBe(true);
  });

  it("deletes a compacted container only once the reads that resolved to it are done", async () => {
    t = await tempPool({ sealBytes: SEAL });
    const tp = t;
    const { v, model } = await halfDead(tp);
    // Hold the first read of grain 0 (in the first, half dead, container) before its pread.
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let heldContainer: number | undefined;
    let calls = 0;
    const proto = ChunkReader.prototype as unknown as {
      readRecords: (this: ChunkReader, n: number, r: unknown) => Promise<unknown>;
    };
    const original = proto.readRecords;
    vi.spyOn(proto, "readRecords").mockImplementation(async function (this: ChunkReader, n, r) {
      calls++;
      if (heldContainer === undefined) {
        heldContainer = n;
        await gate;
      }
      return original.call(this, n, r);
    });
    const idle = vi.spyOn(ChunkReader.prototype, "idle");
    const read = v.read(0, 2);
    while (heldContainer === undefined) await new Promise((r) => setTimeout(r, 1));
    const file = containerFile(tp, heldContainer);
    const gc = tp.pool.gc({ minDeadFraction: 0.3 });
    // GC moves the chunks, then waits for the read before deleting the file.
    while (!idle.mock.calls.some(([n]) => n === heldContainer)) {
      await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(containerFiles(tp)).toContain(file);
    const before = calls;
    release();
    expect((await read).equals(model.subarray(0, 2 * G))).toBe(true);
    expect(calls).toBe(before); // read where it was, not resolved again
    const report = await gc;
    expect(report.containersCompacted).toBeGreaterThan(10);
    expect(containerFiles(tp)).not.toContain(file);
    expect((await readAll(v)).equals(model)).toBe(true);
  });

  it("leaves a container with a record failing its checks, and compacts the others", async () => {
    t = await tempPool({ sealBytes: SEAL });
    const tp = t;
    const { v, model } = await halfDead(tp);
    await tp.pool.close();
    // Damage the first record of the first container: grain 0, which is live.
    const oldest = join(containerDir(tp), containerFile(tp, "first"));
    const buf = readFileSync(oldest);
    buf[64 + RECORD_HEADER_BYTES + 10]! ^= 0xff;
    writeFileSync(oldest, buf);
    const pool = await tp.reopen();
    const report = await pool.gc({ minDeadFraction: 0.3 });
    const skipped = report.notCompacted.filter((n) => !/open/.test(n.reason));
    expect(skipped).toHaveLength(1);
    expect(skipped[0]!.reason).toMatch(/fails its checks/);
    expect(report.containersCompacted).toBeGreaterThan(10);
    const w = pool.volume("v")!;
    await expect(w.read(0, 1)).rejects.toMatchObject({ code: "MEDIUM_ERROR" });
    expect((await w.read(1, GRAINS - 1)).equals(model.subarray(G))).toBe(true);
    expect((await pool.check()).clean).toBe(true);
    expect(v).toBeDefined();
  });
});
