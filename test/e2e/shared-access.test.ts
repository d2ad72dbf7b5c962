/**
 * End-to-end: shared access done safely (issue "Arbitration between agents"). A volume mapped
 * read-write to two agents is arbitrated by persistent reservations: while agent a1 holds a
 * WRITE EXCLUSIVE reservation, agent a2's writes get RESERVATION CONFLICT and its reads go on;
 * once a1 releases it, a2 writes. A snapshot mapped read-only to four agents (and its volume
 * mapped read-only to two of them) serves concurrent reads of the same blocks to all of them,
 * every copy byte-identical to what was written.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildProbe,
  CLI,
  iscsiImageOpts,
  probeCommand,
  type RunningSanmux,
  startSanmux,
  tool,
} from "../helpers/sanmux.js";

const run = promisify(execFile);
const TARGET = "iqn.2026-11.io.sanmux:shared-e2e";
const AGENTS = ["a1", "a2", "a3", "a4"] as const;
const INITIATOR = (agent: string) => `iqn.2026-11.test:${agent}`;
const MiB = 1024 * 1024;
/**
 * Each iscsi-probe run is a new session with a new ISID: registrations keyed by initiator name
 * (not by I_T nexus) let one agent's successive runs act as one registrant.
 */
const KEY_BY = "reservations: { key_by: initiator }";

function config(withSnapshot: boolean): string {
  const snapshotMappings = withSnapshot
    ? AGENTS.map((a) => `  - { agent: ${a}, lun: 2, volume: golden, snapshot: s1 }\n`).join("")
    : "";
  return `target: ${TARGET}
agents:
${AGENTS.map((a) => `  - { name: ${a}, initiators: [${INITIATOR(a)}], ${KEY_BY} }`).join("\n")}
volumes:
  - { name: shared, size: 16MiB, block_size: 512 }
  - { name: golden, size: 32MiB, block_size: 4096 }
mappings:
  - { agent: a1, lun: 0, volume: shared }
  - { agent: a2, lun: 0, volume: shared }
  - { agent: a1, lun: 1, volume: golden }
  - { agent: a3, lun: 1, volume: golden, mode: ro }
  - { agent: a4, lun: 1, volume: golden, mode: ro }
${snapshotMappings}`;
}

let server: RunningSanmux;
let work: string;
let probe: string;

const lunOpts = (agent: string, lun: number) =>
  iscsiImageOpts(server.port, TARGET, lun, INITIATOR(agent));

/** One iscsi-probe command as `agent` on `lun`, retried past unit attentions; its output. */
const probeAs = (agent: string, lun: number, ...args: string[]) =>
  probeCommand(probe, INITIATOR(agent), server.url(lun), ...args);

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), "sanmux-shared-e2e-"));
  probe = await buildProbe(work);
  server = await startSanmux({ config: config(false), extraArgs: ["--no-watch"] });
}, 60_000);

afterAll(async () => {
  expect(await server?.stop()).toBe(0);
  await server?.cleanup();
  await rm(work, { recursive: true, force: true });
});

describe("shared access", () => {
  it("arbitrates a volume two agents write with a persistent reservation", async () => {
    expect(await probeAs("a1", 0, "prout-register", "0xa1")).toMatch(/status=GOOD/);
    expect(await probeAs("a2", 0, "prout-register", "0xa2")).toMatch(/status=GOOD/);
    // WRITE EXCLUSIVE (type 1) held by a1.
    expect(await probeAs("a1", 0, "prout-reserve", "0xa1", "1")).toMatch(/status=GOOD/);
    expect(await probeAs("a2", 0, "prin-reservation")).toMatch(/reservation key=0x0+a1 type=1/);

    expect(await probeAs("a1", 0, "write", "8")).toMatch(/status=GOOD/);
    expect(await probeAs("a2", 0, "write", "8")).toMatch(/status=0x18/); // RESERVATION CONFLICT
    const read = await probeAs("a2", 0, "read", "8");
    expect(read).toMatch(/status=GOOD/);
    expect(read).toContain("55".repeat(512)); // a1's write, as a2 reads it

    expect(await probeAs("a1", 0, "prout-release", "0xa1", "1")).toMatch(/status=GOOD/);
    expect(await probeAs("a2", 0, "write", "9")).toMatch(/status=GOOD/);
    expect(await probeAs("a1", 0, "prin-reservation")).toMatch(/reservation=none/);
  }, 120_000);

  it("serves a snapshot read-only to four agents at once, the same bytes to each", async () => {
    const image = path.join(work, "golden.img");
    const data = randomBytes(32 * MiB);
    await writeFile(image, data);
    const w = await tool(
      "qemu-img",
      ["convert", "-n", "-f", "raw", "--target-image-opts", image, lunOpts("a1", 1)],
      120_000,
    );
    expect(w.code, w.stderr).toBe(0);
    await run(process.execPath, [
      CLI,
      "snapshot",
      "create",
      "golden",
      "s1",
      "--data",
      server.dataDir,
    ]);
    await writeFile(path.join(server.dataDir, "test-config.yaml"), config(true));
    await run(process.execPath, [CLI, "reload", "--data", server.dataDir]);

    // Six readers at once: the snapshot through all four agents, the volume through a3 and a4.
    const readers = [
      ...AGENTS.map((a) => ({ agent: a, lun: 2 })),
      { agent: "a3", lun: 1 },
      { agent: "a4", lun: 1 },
    ];
    const results = await Promise.all(
      readers.map(async ({ agent, lun }) => {
        const out = path.join(work, `read-${agent}-${lun}.img`);
        const r = await tool(
          "qemu-img",
          ["convert", "--image-opts", lunOpts(agent, lun), "-O", "raw", out],
          180_000,
        );
        expect(r.code, `${agent} lun ${lun}: ${r.stderr}`).toBe(0);
        return (await readFile(out)).equals(data);
      }),
    );
    expect(results).toEqual(readers.map(() => true));

    // Read-only means read-only for every one of them.
    for (const agent of AGENTS) {
      expect(await probeAs(agent, 2, "write", "0")).toMatch(/key=0x07 asc=0x27 ascq=0x00/);
    }
  }, 240_000);
});
