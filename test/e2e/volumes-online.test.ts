/**
 * End-to-end: pool volumes change while sanmux serves (issue "The shared pool": volumes can be
 * created, grown and deleted online). Growing a volume in the config and reloading raises
 * CAPACITY DATA HAS CHANGED (06h/2Ah/09h) for a session already logged in, and the initiator
 * sees the new size; a volume added to the config is created and writable at once; a volume
 * still in the config cannot be deleted; once out of it, `sanmux volume delete` removes it and
 * the background GC pass (pool.gc_interval) gives its space back.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildProbe,
  CLI,
  iscsiImageOpts,
  loggedInSession,
  type RunningSanmux,
  startSanmux,
  statusJson,
  tool,
} from "../helpers/sanmux.js";

const TARGET = "iqn.2026-11.io.sanmux:volumes-e2e";
const INITIATOR = "iqn.2026-11.test:vol";
const MiB = 1024 * 1024;

function config(size: string, withSecond: boolean): string {
  return `target: ${TARGET}
agents:
  - { name: a, initiators: [${INITIATOR}] }
volumes:
  - { name: v1, size: ${size}, block_size: 4096 }
${withSecond ? "  - { name: v2, size: 32MiB, block_size: 4096 }\n" : ""}mappings:
  - { agent: a, lun: 0, volume: v1 }
${withSecond ? "  - { agent: a, lun: 1, volume: v2 }\n" : ""}pool: { gc_interval: 2s }
`;
}

let server: RunningSanmux;
let work: string;
let probe: string;
let configPath: string;

const lunOpts = (lun: number) => iscsiImageOpts(server.port, TARGET, lun, INITIATOR);

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return tool(process.execPath, [CLI, ...args, "--data", server.dataDir], 120_000);
}

async function reconfigure(text: string): Promise<void> {
  await writeFile(configPath, text);
  const r = await cli("reload");
  expect(r.code, r.stderr).toBe(0);
}

const status = () =>
  statusJson<{
    pool: {
      pool: { physicalBytes: number; deadBytes: number };
      volumes: Array<{ name: string; provisionedBytes: number; logicalBytes: number }>;
    };
  }>(server.dataDir);

/** Bytes the pool's files take on disk (containers, metadata, registry). */
async function containerBytes(): Promise<number> {
  const r = await tool("du", ["-sb", path.join(server.dataDir, "pool")]);
  return Number(r.stdout.split(/\s/)[0]);
}

/** A session logged in now: call the result to send two TEST UNIT READY (loggedInSession). */
const session = () => loggedInSession(probe, INITIATOR, server.url(0));

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), "sanmux-volumes-e2e-"));
  probe = await buildProbe(work);
  server = await startSanmux({ config: config("16MiB", false) });
  configPath = path.join(server.dataDir, "test-config.yaml");
}, 60_000);

afterAll(async () => {
  expect(await server?.stop()).toBe(0);
  await server?.cleanup();
  await rm(work, { recursive: true, force: true });
});

describe("pool volumes online", () => {
  it("grows a volume: CAPACITY DATA HAS CHANGED once, and the new size", async () => {
    const logged = await session();
    await reconfigure(config("48MiB", false));
    expect(await logged()).toEqual(["tur1 CHECK_CONDITION/06/2a/09", "tur2 GOOD"]);
    const info = await tool("qemu-img", ["info", "--image-opts", lunOpts(0)]);
    expect(info.code, info.stderr).toBe(0);
    expect(info.stdout).toMatch(/virtual size: 48 MiB/);
    const v1 = (await status()).pool.volumes.find((v) => v.name === "v1");
    expect(v1?.provisionedBytes).toBe(48 * MiB);
  }, 60_000);

  it("creates a volume from the config, and deletes it once the config no longer has it", async () => {
    await reconfigure(config("48MiB", true));
    const image = path.join(work, "random16.img");
    await writeFile(image, randomBytes(16 * MiB));
    const before = (await status()).pool.pool.physicalBytes;
    const w = await tool(
      "qemu-img",
      ["convert", "-n", "-f", "raw", "--target-image-opts", image, lunOpts(1)],
      120_000,
    );
    expect(w.code, w.stderr).toBe(0);
    await new Promise((r) => setTimeout(r, 500)); // the refcount journal is applied every 100 ms
    const written = (await status()).pool;
    const onDisk = await containerBytes();
    expect(written.volumes.find((v) => v.name === "v2")?.logicalBytes).toBe(16 * MiB);
    expect(written.pool.physicalBytes - before).toBeGreaterThan(15 * MiB);

    // Still declared: refused, with the way out in the message; nothing deleted.
    const refused = await cli("volume", "delete", "v2");
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/in the running config: remove it/);
    expect((await status()).pool.volumes.some((v) => v.name === "v2")).toBe(true);

    await reconfigure(config("48MiB", false));
    const deleted = await cli("volume", "delete", "v2", "--json");
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(JSON.parse(deleted.stdout)).toEqual({ deleted: "v2" });
    expect((await status()).pool.volumes.some((v) => v.name === "v2")).toBe(false);

    // No `sanmux pool gc`: the background pass (pool.gc_interval, 2 s here) gives the space
    // back. Deleting the volume turns its chunks dead at once (physical figures drop); the files
    // shrink only when GC deletes the dead container, which is what the event and `du` show.
    const gcEvent = async () => {
      const events = await cli("events", "--json");
      expect(events.code, events.stderr).toBe(0);
      return (JSON.parse(events.stdout) as Array<{ kind: string }>).map((e) => e.kind);
    };
    const deadline = Date.now() + 30_000;
    while (!(await gcEvent()).includes("pool.gc") && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
    }
    const kinds = await gcEvent();
    expect(kinds).toContain("pool.volume-deleted");
    expect(kinds).toContain("pool.gc");
    expect(await containerBytes()).toBeLessThan(onDisk - 14 * MiB);
    const after = (await status()).pool.pool;
    expect(after.physicalBytes).toBeLessThan(before + MiB);
    expect(after.deadBytes).toBeLessThan(MiB);

    // v1 still serves.
    const io = await tool("qemu-io", ["--image-opts", "-c", "write -P 0x5a 0 1M", lunOpts(0)]);
    expect(io.code, io.stderr).toBe(0);
  }, 180_000);
});
