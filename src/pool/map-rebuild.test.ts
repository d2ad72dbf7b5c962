import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { masterKeyFromBytes } from "../crypto/index.js";
import { Pool } from "./pool.js";
import { pattern, type TempPool, tempPool } from "./testing/helpers.js";

const CHILD = fileURLToPath(new URL("./testing/crash-child.ts", import.meta.url));
const VITE_NODE = fileURLToPath(
  new URL("../../node_modules/vite-node/vite-node.mjs", import.meta.url),
);

/** Runs the pool crash worker until it acknowledged `minAcks` markers, waits, SIGKILLs it. */
function runAndKill(dir: string, keyHex: string, seed: number, minAcks: number, extraMs: number) {
  return new Promise<void>((resolve, reject) => {
    const child = spawn(process.execPath, [VITE_NODE, CHILD, dir, keyHex, String(seed)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let acks = 0;
    let err = "";
    let armed = false;
    child.stdout.setEncoding("utf8").on("data", (s: string) => {
      acks += (s.match(/^(synced|fua) \d+$/gm) ?? []).length;
      if (!armed && acks >= minAcks) {
        armed = true;
        setTimeout(() => child.kill("SIGKILL"), extraMs);
      }
    });
    child.stderr.setEncoding("utf8").on("data", (s: string) => {
      err += s;
    });
    child.on("exit", (code, signal) => {
      if (signal === "SIGKILL") resolve();
      else reject(new Error(`crash worker exited by itself (${code}): ${err}`));
    });
    setTimeout(() => child.kill("SIGKILL"), 90_000).unref();
  });
}

async function digests(pool: Pool): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of ["big", "small"]) {
    const v = pool.volume(name)!;
    out[name] = createHash("sha256")
      .update(await v.read(0, v.blockCount()))
      .digest("hex");
  }
  return out;
}

const G = 4096;
const MiB = 1024 * 1024;

let t: TempPool | undefined;
afterEach(async () => {
  await t?.cleanup();
  t = undefined;
});

describe("Pool: rebuilding the metadata store from the containers and the map log", () => {
  it("gives back every volume, clone and snapshot byte for byte after meta/ is lost", async () => {
    t = await tempPool();
    let pool = t.pool;
    const a = await pool.ensureVolume({ name: "a", size: 16 * MiB, blockSize: 4096 });
    const b = await pool.ensureVolume({ name: "b", size: 16 * MiB, blockSize: 512 });
    await a.write(0, pattern("a0", 256 * G));
    await b.write(0, pattern("a0", 64 * G)); // deduplicated against a
    await b.write(1000, pattern("b1", 3 * 512));
    await pool.createSnapshot("a", "s1");
    await a.write(10, pattern("a1", 20 * G), { fua: true });
    await a.unmap(100, 50);
    await pool.cloneSnapshot("a", "s1", "c");
    const c = pool.volume("c")!;
    await c.write(5, pattern("c1", G));
    await pool.createSnapshot("b", "gone");
    await b.write(0, pattern("b2", 8 * 512));
    await pool.deleteSnapshot("b", "gone");
    await pool.flush();
    await pool.gc();
    const read = async (name: string, blocks: number) => {
      const v = name.includes("@")
        ? await pool.openSnapshot(name.split("@")[0]!, name.split("@")[1]!)
        : pool.volume(name)!;
      return createHash("sha256")
        .update(await v.read(0, blocks))
        .digest("hex");
    };
    const before = {
      a: await read("a", 4096),
      b: await read("b", 4096),
      c: await read("c", 4096),
      s1: await read("a@s1", 4096),
    };
    await pool.applyJournal();
    const usage = pool.usage();
    await pool.close();

    const poolDir = join(t.dir, "pool");
    rmSync(join(poolDir, "meta"), { recursive: true, force: true });
    // A normal start refuses: the maps are in the log, not in a new empty store.
    await expect(t.reopen()).rejects.toThrow(/pool rebuild/);
    pool = await t.reopen({ rebuildMaps: true });
    const report = pool.mapRebuild!;
    expect(report.movedAside).toBeUndefined();
    expect(report.maps.failed).toBe(0);
    expect(report.audit.clean).toBe(true);
    expect(report.volumes).toBe(3);
    expect(report.snapshots).toBe(1);
    expect(report.checkpoint?.seq).toBe(report.maps.lastSeq);
    expect({
      a: await read("a", 4096),
      b: await read("b", 4096),
      c: await read("c", 4096),
      s1: await read("a@s1", 4096),
    }).toEqual(before);
    expect((await pool.check()).clean).toBe(true);
    await pool.applyJournal();
    expect(pool.usage().volumes).toEqual(usage.volumes);
    expect(pool.usage().pool.logicalBytes).toBe(usage.pool.logicalBytes);
    // Writes go on, and a second rebuild (meta/ present this time: moved aside) agrees.
    await pool.volume("a")!.write(3000, pattern("late", G), { fua: true });
    const after = await read("a", 4096);
    pool = await t.reopen({ rebuildMaps: true });
    expect(pool.mapRebuild?.movedAside).toMatch(/meta\.before-rebuild-/);
    expect(existsSync(pool.mapRebuild!.movedAside!)).toBe(true);
    expect(pool.mapRebuild?.maps.checkpointSeq).toBe(report.checkpoint?.seq);
    expect(await read("a", 4096)).toEqual(after);
    expect(readdirSync(poolDir).filter((n) => n.startsWith("meta.before-rebuild-"))).toHaveLength(
      1,
    );
  }, 60_000);
});

describe("Pool: a rebuild the log cannot serve", () => {
  it("is refused before the metadata store is moved aside", async () => {
    t = await tempPool();
    const v = await t.pool.ensureVolume({ name: "v", size: 4 * MiB, blockSize: 4096 });
    await v.write(0, pattern("x", G), { fua: true });
    await t.pool.close();
    const poolDir = join(t.dir, "pool");
    rmSync(join(poolDir, "maplog"), { recursive: true, force: true });
    await expect(t.reopen({ rebuildMaps: true })).rejects.toThrow(/cannot rebuild the block maps/);
    expect(readdirSync(poolDir).filter((n) => n.startsWith("meta"))).toEqual(["meta"]);
    // The store is intact: a plain start works, re-bases the log with a checkpoint, and from
    // then on a rebuild works again.
    const pool = await t.reopen();
    expect(
      createHash("sha256")
        .update(await pool.volume("v")!.read(0, 1))
        .digest("hex"),
    ).toBe(createHash("sha256").update(pattern("x", G)).digest("hex"));
  });
});

describe("Pool: map rebuild after SIGKILL", () => {
  it("rebuilds exactly what the surviving store holds, GC and compaction included", async () => {
    const tp = await tempPool();
    const dir = join(tp.dir, "pool");
    await tp.pool.close();
    const keyHex = tp.keyBytes.toString("hex");
    const masterKey = masterKeyFromBytes(tp.keyBytes);
    try {
      for (const [i, delay] of [0, 40, 150].entries()) {
        await runAndKill(dir, keyHex, 500 + i, 3, delay);
        let pool = await Pool.open({ dir, masterKey });
        const before = await digests(pool);
        expect((await pool.check()).clean).toBe(true);
        await pool.close();
        pool = await Pool.open({ dir, masterKey, rebuildMaps: true });
        try {
          const r = pool.mapRebuild!;
          expect(r.maps.failed).toBe(0);
          expect(r.maps.records).toBeGreaterThan(0);
          expect(r.audit).toMatchObject({ clean: true, damage: 0 });
          expect(await digests(pool)).toEqual(before);
          expect((await pool.check()).clean).toBe(true);
        } finally {
          await pool.close();
        }
      }
    } finally {
      rmSync(tp.dir, { recursive: true, force: true });
    }
  }, 300_000);
});
