/**
 * End-to-end: the block maps come back from the map log. Through a real server and real
 * initiators (qemu-img, qemu-io): random data on two volumes (the second a copy of the first's,
 * deduplicated), a snapshot, an overwrite and an UNMAP after it. Then, with the server stopped,
 * `rm -rf <data>/pool/meta`, `sanmux pool rebuild`, start again: both volumes and the snapshot
 * read back identical, `sanmux pool check` is clean, the capacity figures are those of before.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFile, mkdir, mkdtemp, open, readdir, rm, writeFile } from "node:fs/promises";
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
  TEST_MASTER_KEY,
  tool,
} from "../helpers/sanmux.js";

const run = promisify(execFile);
const MIB = 1024 * 1024;
const TARGET = "iqn.2026-11.io.sanmux:map-rebuild-e2e";
const INITIATOR = "iqn.2026-11.test:map-rebuild";
const BASE = `target: ${TARGET}
agents:
  - { name: a, initiators: [${INITIATOR}] }
volumes:
  - { name: v1, size: 64MiB }
  - { name: v2, size: 64MiB }
mappings:
  - { agent: a, lun: 0, volume: v1 }
  - { agent: a, lun: 1, volume: v2 }
`;
const WITH_SNAPSHOT = `${BASE}  - { agent: a, lun: 2, volume: v1, snapshot: before }\n`;

interface Figures {
  readonly name?: string;
  readonly logicalBytes: number;
  readonly physicalBytes: number;
  readonly referencedBytes: number;
  readonly pendingJournalRecords?: number;
}
interface Status {
  readonly pool: {
    readonly pool: Figures;
    readonly domains: readonly Figures[];
    readonly volumes: readonly Figures[];
  };
}

const env = { ...process.env, SANMUX_MASTER_KEY: TEST_MASTER_KEY };
let work: string;
let dataDir: string;
let server: RunningSanmux | undefined;
/** The data as written (v2 and the snapshot), and v1 after the overwrite and the unmap. */
let image: string;
let v1Now: string;

async function sanmux(...args: string[]): Promise<{ code: number; out: string }> {
  try {
    const r = await run(process.execPath, [CLI, ...args, "--data", dataDir], { env });
    return { code: 0, out: r.stdout };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, out: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

function opts(lun: number): string {
  return iscsiImageOpts(server!.port, TARGET, lun, INITIATOR);
}

async function identical(file: string, lun: number): Promise<void> {
  const r = await tool(
    "qemu-img",
    ["compare", "-U", "--image-opts", `driver=raw,file.filename=${file}`, opts(lun)],
    300_000,
  );
  expect(r.stdout + r.stderr).toContain("Images are identical");
}

async function status(): Promise<Status> {
  for (let i = 0; i < 100; i++) {
    const r = await sanmux("status", "--json");
    const s = JSON.parse(r.out) as Status;
    if ((s.pool.pool.pendingJournalRecords ?? 0) === 0) return s;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error("the refcount journal was never applied");
}

function figures(s: Status) {
  const pick = (f: Figures) => ({
    logicalBytes: f.logicalBytes,
    physicalBytes: f.physicalBytes,
    referencedBytes: f.referencedBytes,
  });
  return {
    pool: pick(s.pool.pool),
    volumes: Object.fromEntries(s.pool.volumes.map((v) => [v.name, pick(v)])),
  };
}

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), "sanmux-map-rebuild-e2e-"));
  dataDir = path.join(work, "data");
  await mkdir(dataDir);
  image = path.join(work, "image.raw");
  v1Now = path.join(work, "v1.raw");
  const data = randomBytes(48 * MIB);
  await writeFile(image, Buffer.concat([data, Buffer.alloc(16 * MIB)]));
  server = await startSanmux({ config: BASE, dataDir, extraArgs: ["--no-watch"] });
}, 60_000);

afterAll(async () => {
  await server?.stop();
  await rm(work, { recursive: true, force: true });
});

describe("sanmux pool rebuild: block maps from the map log", () => {
  it("gives back both volumes and the snapshot after meta/ is deleted", async () => {
    for (const lun of [0, 1]) {
      const r = await tool(
        "qemu-img",
        ["convert", "-n", "-f", "raw", "--target-image-opts", image, opts(lun)],
        300_000,
      );
      expect(r.code, r.stderr).toBe(0);
    }
    const snap = await sanmux("snapshot", "create", "v1", "before", "--json");
    expect(snap.code, snap.out).toBe(0);
    // After the snapshot: overwrite 4 MiB at 4 MiB, unmap 8 MiB at 16 MiB, in v1.
    const w = await tool("qemu-io", ["--image-opts", "-c", "write -P 0x5a 4M 4M", opts(0)]);
    expect(w.code, w.stderr).toBe(0);
    const d = await tool("qemu-io", ["--image-opts", "-c", "discard 16M 8M", opts(0)]);
    expect(d.code, d.stderr).toBe(0);
    const f = await tool("qemu-io", ["--image-opts", "-c", "flush", opts(0)]);
    expect(f.code, f.stderr).toBe(0);
    await copyFile(image, v1Now);
    const fh = await open(v1Now, "r+");
    await fh.write(Buffer.alloc(4 * MIB, 0x5a), 0, 4 * MIB, 4 * MIB);
    await fh.write(Buffer.alloc(8 * MIB), 0, 8 * MIB, 16 * MIB);
    await fh.close();

    const reload = async (config: string) => {
      await writeFile(path.join(dataDir, "test-config.yaml"), config);
      const r = await sanmux("reload", "--json");
      expect(r.code, r.out).toBe(0);
    };
    await reload(WITH_SNAPSHOT);
    await identical(v1Now, 0);
    await identical(image, 1);
    await identical(image, 2);
    const before = figures(await settled(status, (s) => s.pool.pool.physicalBytes));
    // v2 is a copy of v1's data: stored once.
    expect(before.pool.physicalBytes).toBeLessThan(before.pool.referencedBytes);
    expect(await server!.stop()).toBe(0);
    server = undefined;

    const poolDir = path.join(dataDir, "pool");
    expect(await readdir(path.join(poolDir, "maplog"))).toContainEqual(
      expect.stringMatching(/\.log$/),
    );
    await rm(path.join(poolDir, "meta"), { recursive: true, force: true });
    // A plain start refuses rather than serve empty volumes.
    const refused = await startSanmux({ config: WITH_SNAPSHOT, dataDir }).then(
      async (s) => {
        await s.stop();
        return "started";
      },
      (err: Error) => err.message,
    );
    expect(refused).toMatch(/pool rebuild/);

    const t0 = Date.now();
    const rebuild = await sanmux("pool", "rebuild", "--json");
    const rebuildMs = Date.now() - t0;
    expect(rebuild.code, rebuild.out).toBe(0);
    const report = JSON.parse(rebuild.out) as {
      movedAside?: string;
      maps: { checkpointSeq: number; records: number; failed: number };
      volumes: number;
      grains: number;
      snapshots: number;
      audit: { clean: boolean; damage: number };
    };
    expect(report.maps.failed).toBe(0);
    expect(report.maps.records).toBeGreaterThan(0);
    expect(report.volumes).toBe(2);
    expect(report.snapshots).toBe(1);
    expect(report.audit).toMatchObject({ clean: true, damage: 0 });
    // 48 MiB in each volume, less v1's 8 MiB unmapped: grains of 4 KiB.
    expect(report.grains).toBe((48 * 2 - 8) * 256);
    console.log(`map rebuild: ${JSON.stringify(report.maps)}, ${rebuildMs} ms for the CLI run`);

    const check = await sanmux("pool", "check", "--json");
    expect(check.code, check.out).toBe(0);
    expect((JSON.parse(check.out) as { clean: boolean }).clean).toBe(true);

    server = await startSanmux({ config: WITH_SNAPSHOT, dataDir, extraArgs: ["--no-watch"] });
    await identical(v1Now, 0);
    await identical(image, 1);
    await identical(image, 2);
    expect(figures(await settled(status, (s) => s.pool.pool.physicalBytes))).toEqual(before);
    expect(await server.stop()).toBe(0);
    server = undefined;
  }, 600_000);
});
