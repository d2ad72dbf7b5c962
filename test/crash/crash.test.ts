/**
 * Crash consistency (DESIGN.md "Durability"): real initiators write while `sanmux serve` is
 * killed with SIGKILL at random moments; after each restart every synchronized or FUA write
 * reads back, and every grain holds a pattern that was written to it, or zeros if none was.
 * The harness (test/crash/harness.mjs) does the work; `bench/crash-loop` runs it hundreds of
 * times. A failure prints the seed, the grain, and what was expected against what was found.
 */
import { mkdtemp, open, rm, truncate } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildWriter, type CrashReport, runCrash, summarize } from "./harness.mjs";

let work: string;
let writerBin: string;

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), "sanmux-crash-test-"));
  writerBin = await buildWriter(work);
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

function explain(report: CrashReport, lines: readonly string[]): string {
  return `${summarize(report)}\n${lines.join("\n")}`;
}

describe("crash consistency under SIGKILL", () => {
  it("keeps every synced and FUA write, and never tears a grain, across 10 kills of the default backend", async () => {
    const lines: string[] = [];
    // 10 kills 0.2..2 s after the writers logged in (~1.1 s on average), each followed by a
    // restart and a read of 2 x 32 MiB: ~3 s per iteration here.
    const report = await runCrash({ iterations: 10, writerBin, log: (l) => lines.push(l) });
    console.log(explain(report, lines));

    expect(report.violations, explain(report, lines)).toBe(0);
    expect(report.commandErrors, explain(report, lines)).toEqual([]);
    expect(report.iterations).toBe(10);
    expect(report.killPoints).toBeGreaterThanOrEqual(10);
    expect(report.grainsChecked).toBe(11 * 2 * 8192); // the first start, then each restart
    for (const it of report.perIteration) {
      // Every kill lands while writes and syncs are happening, or the test proves nothing.
      expect(it.writersReady, `iteration ${it.iteration}`).toBe(4);
      expect(it.writesAcked, `iteration ${it.iteration}`).toBeGreaterThan(0);
      expect(it.syncs, `iteration ${it.iteration}`).toBeGreaterThan(0);
      // Writers end because the connection dropped (3), not by finishing or failing to log in.
      expect(it.writerExits, `iteration ${it.iteration}`).toEqual([3, 3, 3, 3]);
    }
    expect(report.finalStopCode).toBe(0);
  }, 150_000);

  it("reports torn grains and lost synced writes when they happen (fault injection)", async () => {
    // The file backend keeps each volume as a plain image, so the harness's own check can be
    // shown to fail: after the first kill a grain is torn (its second half overwritten), after
    // the second the image of volume 1 is emptied (synced writes lost).
    const lines: string[] = [];
    const report = await runCrash({
      iterations: 2,
      backend: "file",
      writerBin,
      minDelayMs: 400,
      maxDelayMs: 800,
      restartKillChance: 0,
      log: (l) => lines.push(l),
      afterKill: async ({ iteration, dataDir }) => {
        const volumes = path.join(dataDir, "volumes");
        if (iteration === 1) {
          const image = await open(path.join(volumes, "crash-0.img"), "r+");
          await image.write(Buffer.alloc(2048, 0xa5), 0, 2048, 3 * 4096 + 2048);
          await image.close();
        } else {
          await truncate(path.join(volumes, "crash-1.img"), 0);
          await truncate(path.join(volumes, "crash-1.img"), 32 * 1024 * 1024);
        }
      },
    });
    await rm(report.workDir, { recursive: true, force: true });
    const kinds = report.violationsByKind;
    expect(kinds["lost-synced-write"], explain(report, lines)).toBeGreaterThan(0);
    expect(report.details[0]).toMatchObject({ iteration: 1, volume: 0, grain: 3, lba: 24 });
    // The torn grain, and only it, is reported: once after the first kill, and once more after
    // the second unless a writer rewrote it in between (on a slow machine none may have).
    const torn = report.details.filter((d) => d.kind === "torn-or-garbage");
    expect(kinds["torn-or-garbage"], explain(report, lines)).toBeLessThanOrEqual(2);
    expect(torn.length, explain(report, lines)).toBe(kinds["torn-or-garbage"]);
    expect(
      torn.map((d) => [d.iteration === 1 || d.iteration === 2, d.volume, d.grain]),
      explain(report, lines),
    ).toEqual(torn.map(() => [true, 0, 3]));
  }, 60_000);
});
