/**
 * End-to-end: THIN PROVISIONING SOFT THRESHOLD REACHED (38h/07h) arrives once per crossing. An
 * agent with a 4 MiB limit and a 50% soft threshold writes 3 MiB: a session that was logged in
 * gets the unit attention once (the next TEST UNIT READY is GOOD); writing more while still
 * above raises nothing new; after an UNMAP brings it below the threshold, crossing it again
 * raises it again. Each crossing is also an event (`sanmux events`).
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildProbe,
  CLI,
  iscsiImageOpts,
  loggedInSession,
  type RunningSanmux,
  startSanmux,
  tool,
} from "../helpers/sanmux.js";

const run = promisify(execFile);

const TARGET = "iqn.2026-11.io.sanmux:threshold-e2e";
const INITIATOR = "iqn.2026-11.test:t";
const CONFIG = `target: ${TARGET}
agents:
  - { name: t, initiators: [${INITIATOR}], capacity: { limit: 4MiB, soft_threshold: 50% } }
volumes:
  - { name: vt, size: 64MiB, block_size: 4096 }
mappings:
  - { agent: t, lun: 0, volume: vt }
`;

let server: RunningSanmux;
let work: string;
let probe: string;

async function qemuIo(command: string): Promise<void> {
  const r = await tool("qemu-io", [
    "--image-opts",
    "-c",
    command,
    iscsiImageOpts(server.port, TARGET, 0, INITIATOR),
  ]);
  expect(r.code, r.stderr + r.stdout).toBe(0);
  expect(r.stdout).not.toMatch(/error/i);
}

/** A session logged in now: call the result to send two TEST UNIT READY (loggedInSession). */
const session = () => loggedInSession(probe, INITIATOR, server.url(0));

/** The server checks thresholds 300 ms after allocating writes: give it time. */
const settle = () => new Promise((r) => setTimeout(r, 1000));

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), "sanmux-threshold-e2e-"));
  probe = await buildProbe(work);
  server = await startSanmux({ config: CONFIG });
}, 60_000);

afterAll(async () => {
  expect(await server?.stop()).toBe(0);
  await server?.cleanup();
  await rm(work, { recursive: true, force: true });
});

describe("the capacity soft threshold", () => {
  it("raises 38h/07h once per crossing, and again after usage fell below it", async () => {
    const first = await session();
    await qemuIo("write -P 0x21 0 1M");
    await settle();
    const below = await session();
    await qemuIo("write -P 0x22 1M 2M"); // 3 MiB of 4: above 50%
    await settle();
    expect(await first()).toEqual(["tur1 CHECK_CONDITION/06/38/07", "tur2 GOOD"]);
    expect(await below()).toEqual(["tur1 CHECK_CONDITION/06/38/07", "tur2 GOOD"]);

    // Still above: no new crossing, no new unit attention.
    const still = await session();
    await qemuIo("write -P 0x23 3M 512k");
    await settle();
    expect(await still()).toEqual(["tur1 GOOD", "tur2 GOOD"]);

    // Back below (1.5 of 4 MiB), then above again: a new crossing.
    await qemuIo("discard 0 2M");
    await qemuIo("write -P 0x24 8M 4k"); // an allocation, so the server looks again
    await settle();
    const again = await session();
    await qemuIo("write -P 0x25 0 1M");
    await settle();
    expect(await again()).toEqual(["tur1 CHECK_CONDITION/06/38/07", "tur2 GOOD"]);

    // Each crossing is also an event of the server (`sanmux events`), naming the agent.
    const { stdout } = await run(process.execPath, [
      CLI,
      "events",
      "--data",
      server.dataDir,
      "--json",
    ]);
    const crossings = (
      JSON.parse(stdout) as Array<{ kind: string; details?: { agent?: string } }>
    ).filter((e) => e.kind === "capacity.soft-threshold");
    expect(crossings.map((e) => e.details?.agent)).toEqual(["t", "t"]);
  }, 120_000);
});
