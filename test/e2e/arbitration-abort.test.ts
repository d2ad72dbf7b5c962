/**
 * End-to-end: ABORT TASK of a command waiting in the arbiter's queue (docs/arbitration.md), with
 * a real `sanmux serve` and a real initiator (libiscsi, through test/tools/iscsi-probe.c's
 * `abort-queued` mode).
 *
 * The agent may read 2 commands per second (burst 1 s: 2 tokens at the start). Six READs are
 * queued at once: 1 and 2 go at once, 3 is due at 0.5 s, 4 at 1 s, 5 at 1.5 s, 6 at 2 s. ABORT
 * TASK of READ 5 (due at 1.5 s) must be answered FUNCTION COMPLETE at once, READ 5 must get no
 * status, and the others GOOD at their due times. Its token is given back: four READs sent once
 * the first batch is over (after 2 s + the probe's 1 s grace, the bucket has refilled to its
 * burst of 2, or would have without the refund too) go at 2/s again: 2 at once, then at 0.5 s
 * and 1 s. The aborted READ never reaches the volume: the agent's read count is 5 + 4.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildProbe, CLI, type RunningSanmux, startSanmux, tool } from "../helpers/sanmux.js";

const run = promisify(execFile);
const TARGET = "iqn.2026-11.io.sanmux:arbitration-abort";
const INITIATOR = "iqn.2026-11.test:limited";

let work: string;
let probe: string;
let server: RunningSanmux;

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), "sanmux-e2e-arb-abort-"));
  probe = await buildProbe(work);
  server = await startSanmux({
    config: `target: ${TARGET}
agents:
  - name: limited
    initiators: [${INITIATOR}]
    limits: { read_iops: 2 }
volumes:
  - { name: vl, size: 16MiB, backend: file }
mappings:
  - { agent: limited, lun: 0, volume: vl }
`,
    extraArgs: ["--no-watch"],
  });
});

afterAll(async () => {
  const code = await server?.stop();
  await server?.cleanup();
  await rm(work, { recursive: true, force: true });
  expect(code).toBe(0);
});

interface Line {
  readonly what: string;
  readonly index: number;
  readonly outcome: string;
  readonly ms: number;
}

function parse(stdout: string) {
  let tmf = { response: -1, ms: Number.NaN };
  let sent = Number.NaN;
  const lines: Line[] = [];
  for (const line of stdout.trim().split("\n")) {
    const f = line.split(" ");
    if (f[0] === "tmf") tmf = { response: Number(f[1]), ms: Number(f[2]) };
    else if (f[0] === "sent") sent = Number(f[1]);
    else lines.push({ what: f[0]!, index: Number(f[1]), outcome: f[2]!, ms: Number(f[3]) });
  }
  return { tmf, sent, lines };
}

describe("ABORT TASK of a command waiting for a rate limit", () => {
  it("answers FUNCTION COMPLETE at once, no status for it, the rest GOOD, the rate unchanged", async () => {
    // Once logged in (the probe's READ CAPACITY takes no read token: it is not a READ).
    const r = await tool(probe, ["-i", INITIATOR, server.url(0), "abort-queued", "6", "5", "4"]);
    expect(r.code, `${r.stdout}${r.stderr}`).toBe(0);
    console.log(r.stdout.trim().split("\n").join("; "));
    const { tmf, sent, lines } = parse(r.stdout);
    // The probe sent ABORT TASK once every READ was on the wire and READ 1 was answered
    // (`sent`, a few ms in). FUNCTION COMPLETE (0) comes at once, well before READ 5's due time
    // (1.5 s): the arbiter let it go.
    expect(tmf.response).toBe(0);
    expect(sent).toBeLessThan(400);
    expect(tmf.ms - sent).toBeLessThan(200);
    console.log(`ABORT TASK of a queued READ answered in ${tmf.ms - sent} ms`);
    // No status for READ 5, ever (the probe waited 1 s past the last of the others).
    expect(lines.filter((l) => l.what === "aborted")).toEqual([
      { what: "aborted", index: 5, outcome: "none", ms: Number.NaN },
    ]);
    const first = lines.filter((l) => l.what === "task");
    expect(first.map((l) => l.index).sort()).toEqual([1, 2, 3, 4, 6]);
    for (const l of first) expect(l.outcome).toBe("GOOD");
    // Due times 0, 0, 0.5, 1, 2 s (READ 6 keeps its place: 2 s), within 250 ms late.
    const due: Record<number, number> = { 1: 0, 2: 0, 3: 500, 4: 1000, 6: 2000 };
    for (const l of first) {
      expect(l.ms, `READ ${l.index}`).toBeGreaterThan((due[l.index] ?? 0) - 50);
      expect(l.ms, `READ ${l.index}`).toBeLessThan((due[l.index] ?? 0) + 250);
    }
    // The rate afterwards: 2 at once (the refilled burst), then one every 0.5 s.
    const after = lines.filter((l) => l.what === "after").sort((a, b) => a.ms - b.ms);
    expect(after.map((l) => l.outcome)).toEqual(["GOOD", "GOOD", "GOOD", "GOOD"]);
    const times = after.map((l) => l.ms);
    expect(times[1]!).toBeLessThan(250);
    expect(times[2]!).toBeGreaterThan(450);
    expect(times[2]!).toBeLessThan(750);
    expect(times[3]!).toBeGreaterThan(950);
    expect(times[3]!).toBeLessThan(1250);
    // The arbiter counted one command aborted while it waited, and 9 reads that reached the
    // volume.
    const status = JSON.parse(
      (await run(process.execPath, [CLI, "status", "--data", server.dataDir, "--json"])).stdout,
    ) as {
      arbiter: { agents: Array<{ name: string; totals: Record<string, number> }> };
      channels: Array<{ agent: string; readOps: number; errors: number }>;
    };
    const agent = status.arbiter.agents.find((a) => a.name === "limited");
    expect(agent?.totals).toMatchObject({ readOps: 9, aborted: 1 });
    // Not an error of the channel: it never reached the volume.
    expect(status.channels.find((c) => c.agent === "limited")).toMatchObject({
      readOps: 9,
      errors: 0,
    });
  });
});
