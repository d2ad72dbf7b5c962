import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildProbe, type RunningSanmux, startSanmux, tool } from "../helpers/sanmux.js";

const TARGET = "iqn.2026-11.io.sanmux:e2e-pr";
const NODE1 = "iqn.2026-11.test:node1";
const NODE2 = "iqn.2026-11.test:node2";
const KEY1 = "0x00000000000abc01";
const KEY2 = "0x00000000000abc02";
const EXCLUSIVE_ACCESS = 3;

const CONFIG = `
target: ${TARGET}
agents:
  - name: node1
    initiators: [${NODE1}]
    reservations: { key_by: initiator }
  - name: node2
    initiators: [${NODE2}]
volumes:
  - { name: fenced, size: 16MiB }
  - { name: scratch, size: 16MiB }
mappings:
  - { agent: node1, lun: 0, volume: fenced }
  - { agent: node2, lun: 0, volume: fenced }
  - { agent: node2, lun: 1, volume: scratch }
`;

let work: string;
let dataDir: string;
let probe: string;
let server: RunningSanmux | undefined;

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), "sanmux-e2e-pr-"));
  dataDir = path.join(work, "data");
  await mkdir(dataDir);
  probe = await buildProbe(work);
});

afterAll(async () => {
  await server?.stop();
  await rm(work, { recursive: true, force: true });
});

/** Run iscsi-probe; returns its output lines. Fails the test when login or transport fails. */
async function pr(initiator: string, lun: number, ...args: string[]): Promise<string[]> {
  const r = await tool(probe, ["-i", initiator, server!.url(lun), ...args]);
  expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(0);
  return r.stdout.trim().split("\n");
}

describe("persistent reservations across a restart", () => {
  it("takes an APTPL registration and reservation, and a non-APTPL registration", async () => {
    server = await startSanmux({ config: CONFIG, dataDir });
    expect(await pr(NODE1, 0, "prout-register", KEY1, "aptpl")).toEqual(["status=GOOD"]);
    expect(await pr(NODE1, 0, "prout-reserve", KEY1, String(EXCLUSIVE_ACCESS))).toEqual([
      "status=GOOD",
    ]);
    expect(await pr(NODE2, 1, "prout-register", KEY2)).toEqual(["status=GOOD"]);

    expect(await pr(NODE2, 0, "prin-keys")).toEqual(["status=GOOD", "generation=1", `key=${KEY1}`]);
    expect(await pr(NODE2, 0, "prin-reservation")).toEqual([
      "status=GOOD",
      "generation=1",
      `reservation key=${KEY1} type=${EXCLUSIVE_ACCESS}`,
    ]);
    expect(await pr(NODE2, 1, "prin-keys")).toEqual(["status=GOOD", "generation=1", `key=${KEY2}`]);
    // REPORT CAPABILITIES: PTPL_C (byte 2 bit 0) and PTPL_A (byte 3 bit 0) on the APTPL volume.
    const caps = await pr(NODE2, 0, "prin-caps");
    expect(caps[1]?.slice(4, 8)).toBe("1db1");
    // The reservation is enforced: node2 may not touch the fenced volume, node1 (a new session,
    // keyed by initiator name) may.
    expect(await pr(NODE2, 0, "read", "0")).toEqual(["status=0x18"]);
    expect(await pr(NODE1, 0, "write", "0")).toEqual(["status=GOOD"]);

    // The state is on disk, as one JSON file per volume, for the APTPL volume only.
    const file = path.join(dataDir, "reservations");
    const saved = await readdirJson(file);
    expect(saved).toHaveLength(1);
    expect(saved[0]).toMatchObject({
      version: 1,
      aptpl: true,
      generation: 1,
      registrations: [{ key: KEY1, initiator: NODE1 }],
      reservation: { type: EXCLUSIVE_ACCESS, holder: 1 },
    });

    expect(await server.stop("SIGTERM")).toBe(0);
    server = undefined;
  });

  it("finds the APTPL registration and reservation again after the restart, and nothing else", async () => {
    server = await startSanmux({ config: CONFIG, dataDir });
    // A restart is a power on: PRgeneration starts again at 0 (SPC-4 6.15.2).
    expect(await pr(NODE2, 0, "prin-keys")).toEqual(["status=GOOD", "generation=0", `key=${KEY1}`]);
    expect(await pr(NODE2, 0, "prin-reservation")).toEqual([
      "status=GOOD",
      "generation=0",
      `reservation key=${KEY1} type=${EXCLUSIVE_ACCESS}`,
    ]);
    // The registration made without APTPL is gone.
    expect(await pr(NODE2, 1, "prin-keys")).toEqual(["status=GOOD", "generation=0"]);
    // And the reservation still fences.
    expect(await pr(NODE2, 0, "write", "0")).toEqual(["status=0x18"]);
    expect(await pr(NODE1, 0, "read", "0")).toEqual(["status=GOOD", "55".repeat(512)]);

    // Releasing and unregistering without APTPL forgets the saved state.
    expect(await pr(NODE1, 0, "prout-release", KEY1, String(EXCLUSIVE_ACCESS))).toEqual([
      "status=GOOD",
    ]);
    expect(await pr(NODE1, 0, "prout-register", "0")).toEqual(["status=GOOD"]);
    expect(await readdirJson(path.join(dataDir, "reservations"))).toEqual([]);
    expect(await pr(NODE2, 0, "read", "0")).toEqual(["status=GOOD", "55".repeat(512)]);
  });
});

async function readdirJson(dir: string): Promise<unknown[]> {
  const names = (await readdir(dir)).filter((n) => n.endsWith(".json"));
  return Promise.all(names.map(async (n) => JSON.parse(await readFile(path.join(dir, n), "utf8"))));
}
