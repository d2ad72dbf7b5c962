/**
 * End-to-end: the shared pool seen through real initiators. Two agents of the shared domain
 * write the same 512 MiB with qemu-img convert: stored once. Two agents with private domains:
 * stored twice. 512 MiB of zeros: stored as holes. UNMAP (qemu-io discard) and a GC pass: the
 * space comes back. Figures come from `sanmux status --json`, through the running server.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, open, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CLI,
  iscsiImageOpts,
  type RunningSanmux,
  settled,
  startSanmux,
  tool,
} from "../helpers/sanmux.js";

const run = promisify(execFile);
const MIB = 1024 * 1024;
const SIZE = 512 * MIB;
const TARGET = "iqn.2026-11.io.sanmux:pool-e2e";
const INITIATOR = (agent: string) => `iqn.2026-11.test:${agent}`;

const CONFIG = `target: ${TARGET}
agents:
  - { name: a, initiators: [${INITIATOR("a")}] }
  - { name: b, initiators: [${INITIATOR("b")}] }
  - { name: c, initiators: [${INITIATOR("c")}], domain: private-c }
  - { name: d, initiators: [${INITIATOR("d")}], domain: private-d }
volumes:
  - { name: va, size: 600MiB }
  - { name: vb, size: 600MiB }
  - { name: vc, size: 600MiB }
  - { name: vd, size: 600MiB }
  - { name: vz, size: 600MiB, block_size: 4096 }
mappings:
  - { agent: a, lun: 0, volume: va }
  - { agent: a, lun: 1, volume: vz }
  - { agent: b, lun: 0, volume: vb }
  - { agent: c, lun: 0, volume: vc }
  - { agent: d, lun: 0, volume: vd }
`;

interface Usage {
  readonly physicalBytes: number;
  readonly logicalBytes: number;
  readonly pendingJournalRecords?: number;
  readonly deadBytes?: number;
}
interface Status {
  readonly pool: {
    readonly pool: Usage;
    readonly domains: ReadonlyArray<Usage & { name: string }>;
    readonly volumes: ReadonlyArray<Usage & { name: string }>;
  };
  readonly readCache: {
    readonly byVolume: { bytes: number; grains: number; hits: number; misses: number };
    readonly hints: { bytes: number; grains: number; hits: number; misses: number };
  };
}

let server: RunningSanmux;
let work: string;
let image: string;

function qemuOpts(agent: string, lun: number): string {
  return iscsiImageOpts(server.port, TARGET, lun, INITIATOR(agent));
}

async function status(): Promise<Status> {
  // Physical figures move when the refcount journal is applied (every 100 ms): wait for it.
  for (let i = 0; i < 100; i++) {
    const { stdout } = await run(process.execPath, [
      CLI,
      "status",
      "--data",
      server.dataDir,
      "--json",
    ]);
    const s = JSON.parse(stdout) as Status;
    if ((s.pool.pool.pendingJournalRecords ?? 0) === 0) return s;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the refcount journal was never applied");
}

/**
 * Physical bytes once the server has stored everything it acknowledged: qemu-img convert sends
 * no SYNCHRONIZE CACHE (cache mode "unsafe"), and writes are acknowledged before they are sealed
 * and committed (src/pool/write-back.ts, "Commit pipeline"): wait for the figure to settle.
 */
async function physical(): Promise<number> {
  return (await settled(status, (s) => s.pool.pool.physicalBytes)).pool.pool.physicalBytes;
}

/** Bytes the pool's container files take on disk. */
async function containerBytes(): Promise<number> {
  const { stdout } = await run("du", ["-sb", path.join(server.dataDir, "pool")]);
  return Number(stdout.split(/\s/)[0]);
}

async function convert(source: string, agent: string, lun: number, extra: string[] = []) {
  const r = await tool(
    "qemu-img",
    ["convert", "-n", ...extra, "-f", "raw", "--target-image-opts", source, qemuOpts(agent, lun)],
    300_000,
  );
  expect(r.code, r.stderr).toBe(0);
}

async function identical(agent: string, lun: number): Promise<void> {
  const r = await tool(
    "qemu-img",
    ["compare", "--image-opts", `driver=raw,file.filename=${image}`, qemuOpts(agent, lun)],
    300_000,
  );
  expect(r.stdout + r.stderr).toContain("Images are identical");
}

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), "sanmux-pool-e2e-"));
  image = path.join(work, "random.img");
  const file = await open(image, "w");
  for (let off = 0; off < SIZE; off += 64 * MIB) await file.write(randomBytes(64 * MIB));
  await file.close();
  server = await startSanmux({ config: CONFIG });
}, 60_000);

afterAll(async () => {
  expect(await server?.stop()).toBe(0);
  await server?.cleanup();
  await rm(work, { recursive: true, force: true });
});

describe("the shared pool", () => {
  let oneCopy = 0;

  it("stores 512 MiB of random data once for two agents of the shared domain", async () => {
    const start = await physical();
    await convert(image, "a", 0);
    const afterFirst = await physical();
    oneCopy = afterFirst - start;
    // Random data does not compress: one copy costs at least its size (plus sealing overhead).
    expect(oneCopy).toBeGreaterThanOrEqual(SIZE);
    await convert(image, "b", 0);
    const afterSecond = await physical();
    expect(afterSecond - start).toBeLessThanOrEqual(1.05 * oneCopy);
    await identical("b", 0);
    await identical("a", 0);
    const s = await status();
    const vb = s.pool.volumes.find((v) => v.name === "vb");
    expect(vb?.logicalBytes).toBe(SIZE);
    // The first reads of what was just written found their blocks' places in the location
    // hints (src/pool/location-hints.ts), not in the metadata store: with room for both volumes
    // (32 bytes a block), every one of them did.
    if (s.readCache.hints.bytes >= (2 * SIZE * 32) / 4096) {
      expect(s.readCache.hints.grains).toBe((2 * SIZE) / 4096);
      expect(s.readCache.hints.misses).toBe(0);
    }
    expect(s.readCache.hints.hits).toBeGreaterThan(0);
    // What was read is in the read cache (src/pool/volume-cache.ts), and a second read of it
    // comes from there, with the same bytes.
    expect(s.readCache.byVolume.grains).toBeGreaterThan(0);
    await identical("a", 0);
    const again = (await status()).readCache.byVolume;
    const room = s.readCache.byVolume.bytes;
    // Both volumes were read once: with room for both (the default, an eighth of the memory, on
    // the CI machines), every grain of the second pass is a hit.
    if (room >= 2 * SIZE) {
      expect(again.hits - s.readCache.byVolume.hits).toBeGreaterThanOrEqual(SIZE / 4096);
    } else expect(again.hits).toBeGreaterThan(s.readCache.byVolume.hits);
  }, 300_000);

  it("stores the same data twice in two private domains", async () => {
    const start = await physical();
    await convert(image, "c", 0);
    await convert(image, "d", 0);
    const grown = (await physical()) - start;
    expect(grown).toBeGreaterThanOrEqual(1.95 * oneCopy);
    await identical("c", 0);
    await identical("d", 0);
    const s = await status();
    const names = s.pool.domains.map((d) => d.name).sort();
    expect(names).toEqual(["private-c", "private-d", "shared"]);
  }, 300_000);

  it("stores 512 MiB of zeros as holes", async () => {
    const zeros = path.join(work, "zeros.img");
    const file = await open(zeros, "w");
    await file.truncate(SIZE);
    await file.close();
    const start = await physical();
    // -S 0: qemu-img must send the zero blocks as data, not skip them.
    await convert(zeros, "a", 1, ["-S", "0"]);
    expect((await physical()) - start).toBeLessThan(MIB);
    const vz = (await status()).pool.volumes.find((v) => v.name === "vz");
    expect(vz?.logicalBytes).toBe(0);
  }, 300_000);

  it("gives the space back after UNMAP of both copies and a GC pass", async () => {
    const before = await containerBytes();
    for (const agent of ["a", "b"]) {
      const r = await tool("qemu-io", [
        "--image-opts",
        "-c",
        `discard 0 ${SIZE}`,
        qemuOpts(agent, 0),
      ]);
      expect(r.code, r.stderr + r.stdout).toBe(0);
    }
    const s = await status();
    expect(s.pool.volumes.find((v) => v.name === "va")?.logicalBytes).toBe(0);
    expect(s.pool.volumes.find((v) => v.name === "vb")?.logicalBytes).toBe(0);
    const gc = await run(process.execPath, [CLI, "pool", "gc", "--data", server.dataDir, "--json"]);
    expect(gc.stdout.length).toBeGreaterThan(0);
    const report = JSON.parse(gc.stdout) as Record<string, number>;
    const after = await containerBytes();
    expect(before - after).toBeGreaterThanOrEqual(0.95 * oneCopy);
    // The report says what compaction did; what it freed is files deleted less chunks moved (a
    // background pass may have done part of the work already: no lower bound here).
    expect(report).toMatchObject({ containersCompacted: expect.any(Number) });
    expect(report.bytesReclaimed! - report.bytesMoved!).toBeGreaterThanOrEqual(0);
    expect((await status()).pool.pool.deadBytes ?? 0).toBeLessThan(0.05 * oneCopy);
    // Unmapped blocks read as zeros.
    const read = await tool("qemu-io", ["--image-opts", "-c", "read -P 0 0 1M", qemuOpts("a", 0)]);
    expect(read.stdout).not.toMatch(/Pattern verification failed/);
    expect(read.code).toBe(0);
  }, 300_000);
});
