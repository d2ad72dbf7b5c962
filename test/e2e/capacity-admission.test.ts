/**
 * End-to-end: the pool asks the arbiter's capacity rules before a write allocates
 * (Pool.setAllocationGuard → CapacityRules.admit). An agent with a 1 MiB limit writes 1 MiB;
 * a write into a hole beyond it fails with DATA PROTECT / SPACE ALLOCATION FAILED WRITE PROTECT
 * (07h/27h/07h) and stores nothing; overwrites of what it holds still succeed; after an unmap
 * (qemu-io discard) the space can be written again.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningSanmux, startSanmux, tool } from "../helpers/sanmux.js";

const run = promisify(execFile);
const TARGET = "iqn.2026-11.io.sanmux:capacity-e2e";
const INITIATOR = "iqn.2026-11.test:c";
const CONFIG = `target: ${TARGET}
agents:
  - { name: c, initiators: [${INITIATOR}], capacity: { limit: 1MiB } }
volumes:
  - { name: vc, size: 64MiB }
mappings:
  - { agent: c, lun: 0, volume: vc }
`;

let server: RunningSanmux;
let work: string;
let probe: string;

const qemuOpts = () =>
  `driver=iscsi,transport=tcp,portal=127.0.0.1:${server.port},target=${TARGET},lun=0,` +
  `initiator-name=${INITIATOR}`;

async function qemuIo(command: string) {
  return tool("qemu-io", ["--image-opts", "-c", command, qemuOpts()], 60_000);
}

/** WRITE(10) of one 512-byte block at `lba`, retried past unit attentions; the outcome line. */
async function probeWrite(lba: number): Promise<string> {
  for (let i = 0; i < 5; i++) {
    const r = await tool(probe, ["-i", INITIATOR, server.url(0), "write", String(lba)]);
    expect(r.code, r.stderr).toBe(0);
    if (!/key=0x06/.test(r.stdout)) return r.stdout;
  }
  throw new Error("unit attentions never stopped");
}

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), "sanmux-capacity-e2e-"));
  probe = path.join(work, "iscsi-probe");
  await run("gcc", [
    "-O2",
    "-o",
    probe,
    path.resolve(import.meta.dirname, "../tools/iscsi-probe.c"),
    "-liscsi",
  ]);
  server = await startSanmux({ config: CONFIG });
}, 60_000);

afterAll(async () => {
  expect(await server?.stop()).toBe(0);
  await server?.cleanup();
  await rm(work, { recursive: true, force: true });
});

describe("capacity admission in the pool's write path", () => {
  it("refuses allocating writes past the agent's limit with 07h/27h/07h; overwrites go on", async () => {
    const fill = await qemuIo("write -P 0x11 0 1M");
    expect(fill.code, fill.stderr).toBe(0);
    expect(fill.stdout + fill.stderr).not.toMatch(/error/i);

    // LBA 4096 (2 MiB) is a hole: it would allocate a grain beyond the limit.
    expect(await probeWrite(4096)).toMatch(/status=CHECK_CONDITION key=0x07 asc=0x27 ascq=0x07/);
    const hole = await qemuIo("read -P 0 2M 4k");
    expect(hole.stdout + hole.stderr).not.toMatch(/Pattern verification failed|error/i);

    // An overwrite of a mapped grain allocates nothing: allowed at the limit.
    expect(await probeWrite(8)).toMatch(/status=GOOD/);

    // Unmapping frees logical space: the hole can be written again.
    const discard = await qemuIo("discard 512k 512k");
    expect(discard.code, discard.stderr).toBe(0);
    expect(await probeWrite(4096)).toMatch(/status=GOOD/);
  }, 120_000);
});
