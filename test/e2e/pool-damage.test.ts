/**
 * End-to-end: `sanmux pool rebuild` on intact containers, then damage in a container. Bytes flipped inside one chunk record while sanmux is
 * stopped: `sanmux pool scrub` reports the record and the grain that uses it (exit status 2),
 * a READ of that grain gets MEDIUM ERROR / UNRECOVERED READ ERROR (03h/11h/00h) — never wrong
 * data — and every other grain still reads back exactly.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, readdir, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildProbe,
  CLI,
  iscsiImageOpts,
  type RunningSanmux,
  startSanmux,
  TEST_MASTER_KEY,
  tool,
} from "../helpers/sanmux.js";

const run = promisify(execFile);
const TARGET = "iqn.2026-11.io.sanmux:damage-e2e";
const INITIATOR = "iqn.2026-11.test:damage";
const GRAIN = 4096;
const BLOCK = 512;
const CONFIG = `target: ${TARGET}
agents:
  - { name: a, initiators: [${INITIATOR}] }
volumes:
  - { name: v, size: 16MiB }
mappings:
  - { agent: a, lun: 0, volume: v }
`;

let work: string;
let dataDir: string;
let probe: string;
let server: RunningSanmux | undefined;
const data = randomBytes(1024 * 1024);

function qemuOpts(port: number): string {
  return iscsiImageOpts(port, TARGET, 0, INITIATOR);
}

/** READ(10) of one block through libiscsi: "status=GOOD" and hex, or the sense. */
async function readBlock(port: number, lba: number): Promise<string> {
  const r = await tool(probe, [
    "-i",
    INITIATOR,
    `iscsi://127.0.0.1:${port}/${TARGET}/0`,
    "read",
    String(lba),
  ]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
}

function hexOf(stdout: string): string {
  return stdout
    .split("\n")
    .slice(1)
    .join("")
    .replace(/[^0-9a-f]/gi, "")
    .toLowerCase();
}

async function containerFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name.endsWith(".sxc")) {
      out.push(path.join(entry.parentPath ?? (entry as { path: string }).path, entry.name));
    }
  }
  return out;
}

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), "sanmux-damage-"));
  dataDir = path.join(work, "data");
  await mkdir(dataDir);
  probe = await buildProbe(work);
  const image = path.join(work, "image.raw");
  await writeFile(image, data);
  server = await startSanmux({ config: CONFIG, dataDir });
  const convert = await tool("qemu-img", [
    "convert",
    "-n",
    "-f",
    "raw",
    "--target-image-opts",
    image,
    qemuOpts(server.port),
  ]);
  expect(convert.code, convert.stderr).toBe(0);
  expect(await server.stop()).toBe(0);
  server = undefined;
}, 60_000);

afterAll(async () => {
  await server?.stop();
  await rm(work, { recursive: true, force: true });
});

describe("sanmux pool rebuild", () => {
  it("rebuilds the index from the containers; the audit is clean and the data reads back", async () => {
    const env = { ...process.env, SANMUX_MASTER_KEY: TEST_MASTER_KEY };
    const rebuild = await run(
      process.execPath,
      [CLI, "pool", "rebuild", "--data", dataDir, "--json"],
      {
        env,
      },
    );
    const report = JSON.parse(rebuild.stdout) as {
      domains: Array<{ domain: string; records: number; chunks: number }>;
    };
    const shared = report.domains.find((d) => d.domain === "shared");
    // 1 MiB of random data: 256 unique grains, each one record.
    expect(shared?.chunks).toBe(256);
    expect(shared?.records).toBeGreaterThanOrEqual(256);
    const check = await run(process.execPath, [CLI, "pool", "check", "--data", dataDir, "--json"], {
      env,
    });
    expect((JSON.parse(check.stdout) as { clean: boolean }).clean).toBe(true);
    server = await startSanmux({ config: CONFIG, dataDir });
    for (const lba of [0, 1000, 2047]) {
      const out = await readBlock(server.port, lba);
      expect(hexOf(out)).toBe(data.subarray(lba * BLOCK, (lba + 1) * BLOCK).toString("hex"));
    }
    expect(await server.stop()).toBe(0);
    server = undefined;
  }, 60_000);
});

describe("a damaged chunk", () => {
  it("is found by scrub, fails its reads with MEDIUM ERROR, and harms nothing else", async () => {
    // Flip one byte in the payload of a record in the middle of the biggest container.
    const files = await containerFiles(path.join(dataDir, "pool"));
    const sizes = await Promise.all(files.map(async (f) => (await stat(f)).size));
    const biggest = files[sizes.indexOf(Math.max(...sizes))] as string;
    const size = Math.max(...sizes);
    expect(size).toBeGreaterThan(data.length);
    const at = Math.floor(size / 2);
    const file = await open(biggest, "r+");
    const byte = Buffer.alloc(1);
    await file.read(byte, 0, 1, at);
    byte[0] = (byte[0] as number) ^ 0x5a;
    await file.write(byte, 0, 1, at);
    await file.close();

    // Scrub on the stopped data directory: reports the damage and the grain, exit status 2.
    const scrub = await run(process.execPath, [CLI, "pool", "scrub", "--data", dataDir, "--json"], {
      env: { ...process.env, SANMUX_MASTER_KEY: TEST_MASTER_KEY },
    }).then(
      (r) => ({ code: 0, stdout: r.stdout }),
      (e: { code: number; stdout: string }) => ({ code: e.code, stdout: e.stdout }),
    );
    expect(scrub.code).toBe(2);
    const report = JSON.parse(scrub.stdout) as {
      damaged: Array<{ grains: Array<{ volume: string; lba: number }> }>;
    };
    expect(report.damaged).toHaveLength(1);
    const grains = report.damaged[0]?.grains ?? [];
    expect(grains.length).toBeGreaterThanOrEqual(1);
    const bad = grains[0] as { volume: string; lba: number };
    expect(bad.volume).toBe("v");

    server = await startSanmux({ config: CONFIG, dataDir });
    // Every block of the damaged grain: MEDIUM ERROR, UNRECOVERED READ ERROR.
    for (let b = 0; b < GRAIN / BLOCK; b++) {
      expect(await readBlock(server.port, bad.lba + b)).toMatch(
        /status=CHECK_CONDITION key=0x0?3 asc=0x11 ascq=0x0?0/,
      );
    }
    // The neighbours (and a far grain) read back exactly what was written.
    const others = [bad.lba - GRAIN / BLOCK, bad.lba + GRAIN / BLOCK, 0].filter(
      (lba) => lba >= 0 && lba * BLOCK < data.length,
    );
    for (const lba of others) {
      if (lba === bad.lba) continue;
      const out = await readBlock(server.port, lba);
      expect(out).toMatch(/^status=GOOD/);
      expect(hexOf(out)).toBe(data.subarray(lba * BLOCK, (lba + 1) * BLOCK).toString("hex"));
    }
    // The running server's scrub says the same.
    const live = await run(process.execPath, [
      CLI,
      "pool",
      "scrub",
      "--data",
      dataDir,
      "--json",
    ]).catch((e: { code: number; stdout: string }) => e);
    expect((live as { code?: number }).code).toBe(2);
  }, 120_000);
});
