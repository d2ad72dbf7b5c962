/**
 * End-to-end arbitration (docs/arbitration.md): a real `sanmux serve` and real initiators
 * (libiscsi's iscsi-perf and iscsi-ls, qemu-img, qemu-io, and test/tools/iscsi-probe.c).
 *
 * - four agents see only their own LUNs, and reach no other volume by any LUN number;
 * - a 20 MB/s read limit measures within 5% over 10 s while an unlimited agent runs beside it;
 * - weights 3 and 1 share a saturated server 3:1 (within 10%), and the light agent takes the
 *   whole server when the heavy one stops;
 * - a live config change adds an agent and changes a limit while a long write goes on;
 * - removing a mapping raises REPORTED LUNS DATA HAS CHANGED for that agent only.
 *
 * Volumes use the file backend: these tests are about the arbiter, not the pool, and a read of a
 * never-written block of a file volume costs almost nothing, so that the server's work is the
 * iSCSI path and the arbiter. Rates come from iscsi-perf's per-second samples ("iops current"):
 * sample k covers the k-th second of the run.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildProbe, CLI, type RunningSanmux, startSanmux, tool } from "../helpers/sanmux.js";

const TARGET = "iqn.2026-11.io.sanmux:arbitration";
const iqn = (agent: string) => `iqn.2026-11.test:${agent}`;

let work: string;
let probe: string;

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), "sanmux-e2e-arb-"));
  probe = await buildProbe(work);
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** A server for one describe block; stopped (exit code 0 checked) after it. */
function serverFor(config: string, extraArgs: readonly string[] = []) {
  const holder: { server?: RunningSanmux } = {};
  beforeAll(async () => {
    holder.server = await startSanmux({ config, extraArgs });
  });
  afterAll(async () => {
    const code = await holder.server?.stop();
    await holder.server?.cleanup();
    expect(code).toBe(0);
  });
  return () => {
    if (holder.server === undefined) throw new Error("server not started");
    return holder.server;
  };
}

/** The "iops current" samples of an iscsi-perf run, in order (one per second). */
function perfSamples(output: string): number[] {
  return [...output.matchAll(/iops current (\d+)/g)].map((m) => Number(m[1]));
}

function mean(xs: readonly number[]): number {
  if (xs.length === 0) throw new Error("no samples");
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** iscsi-perf (sequential READ(16)) as `agent` on LUN `lun`, for `seconds`. */
async function perf(
  server: RunningSanmux,
  agent: string,
  lun: number,
  opts: { depth: number; blocks: number; seconds: number },
): Promise<number[]> {
  const r = await tool(
    "iscsi-perf",
    [
      "-i",
      iqn(agent),
      "-m",
      String(opts.depth),
      "-b",
      String(opts.blocks),
      "-t",
      String(opts.seconds),
      server.url(lun),
    ],
    (opts.seconds + 30) * 1000,
  );
  expect(r.code, `iscsi-perf as ${agent}: ${r.stdout}${r.stderr}`).toBe(0);
  expect(r.stdout).toContain("finished.");
  return perfSamples(r.stdout);
}

function qemuOpts(server: RunningSanmux, agent: string, lun: number): string {
  return (
    `driver=iscsi,transport=tcp,portal=127.0.0.1:${server.port},target=${TARGET},lun=${lun},` +
    `initiator-name=${iqn(agent)}`
  );
}

function lunsIn(listing: string): number[] {
  return [...listing.matchAll(/Lun:(\d+)/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
}

async function listLuns(server: RunningSanmux, agent: string): Promise<number[]> {
  const r = await tool("iscsi-ls", ["-i", iqn(agent), "-s", `iscsi://127.0.0.1:${server.port}`]);
  expect(r.code, r.stderr).toBe(0);
  return lunsIn(r.stdout);
}

// ---------------------------------------------------------------------------------------------

describe("four agents, each alone with its LUNs", () => {
  // LUN numbers overlap on purpose: bravo's LUN 0 is not alpha's LUN 0.
  const LUNS: Record<string, Record<number, string>> = {
    alpha: { 0: "va" },
    bravo: { 0: "vb", 1: "vb1" },
    charlie: { 2: "vc" },
    delta: { 5: "vd", 6: "vd6" },
  };
  const agents = Object.keys(LUNS);
  const volumes = agents.flatMap((a) => Object.values(LUNS[a] ?? {}));
  const server = serverFor(`target: ${TARGET}
agents:
${agents.map((a) => `  - { name: ${a}, initiators: [${iqn(a)}] }`).join("\n")}
volumes:
${volumes.map((v) => `  - { name: ${v}, size: 16MiB, backend: file }`).join("\n")}
mappings:
${agents
  .flatMap((a) =>
    Object.entries(LUNS[a] ?? {}).map(
      ([lun, v]) => `  - { agent: ${a}, lun: ${lun}, volume: ${v} }`,
    ),
  )
  .join("\n")}
`);
  // Every LUN number any agent uses, one past them, and the ends of the flat address space.
  const EVERY_LUN = [0, 1, 2, 3, 4, 5, 6, 7, 255, 256, 16383];
  const own = (agent: string) => Object.keys(LUNS[agent] ?? {}).map(Number);
  const pattern = (agent: string, lun: number) =>
    `0x${(0xa0 + agents.indexOf(agent) * 16 + lun).toString(16)}`;

  it("lists only the agent's own LUNs (REPORT LUNS through iscsi-ls)", async () => {
    const listed = await Promise.all(agents.map((a) => listLuns(server(), a)));
    expect(listed).toEqual(agents.map(own));
  });

  it("reaches no other agent's volume by any LUN number, all four at once", async () => {
    // Each agent marks LBA 0 of its own LUNs with its own byte.
    for (const a of agents) {
      for (const lun of own(a)) {
        const w = await tool("qemu-io", [
          "--image-opts",
          "-c",
          `write -P ${pattern(a, lun)} 0 512`,
          qemuOpts(server(), a, lun),
        ]);
        expect(w.code, w.stderr).toBe(0);
      }
    }
    // All four, concurrently, try READ and WRITE of LBA 0 at every LUN number not their own,
    // on one session logged in through their first LUN.
    const scans = await Promise.all(
      agents.map((a) => {
        const others = EVERY_LUN.filter((lun) => !own(a).includes(lun));
        return tool(probe, [
          "-i",
          iqn(a),
          server().url(own(a)[0] ?? 0),
          "lunscan",
          others.join(","),
        ]);
      }),
    );
    scans.forEach((scan, i) => {
      const a = agents[i] ?? "";
      expect(scan.code, scan.stderr).toBe(0);
      const lines = scan.stdout.trim().split("\n");
      const others = EVERY_LUN.filter((lun) => !own(a).includes(lun));
      expect(lines).toHaveLength(others.length * 2);
      // LOGICAL UNIT NOT SUPPORTED (05/25/00), every time.
      for (const line of lines)
        expect(line).toMatch(/^lun=\d+ (read|write)=CHECK_CONDITION\/05\/25\/00$/);
    });
    // Every volume still holds its owner's mark (no write landed anywhere).
    for (const a of agents) {
      for (const lun of own(a)) {
        const r = await tool("qemu-io", [
          "--image-opts",
          "-c",
          `read -P ${pattern(a, lun)} 0 512`,
          qemuOpts(server(), a, lun),
        ]);
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).not.toContain("Pattern verification failed");
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe("a read limit beside an unlimited agent", () => {
  const server = serverFor(`target: ${TARGET}
agents:
  - name: limited
    initiators: [${iqn("limited")}]
    limits: { read_bps: 20MB }
  - name: free
    initiators: [${iqn("free")}]
volumes:
  - { name: vl, size: 256MiB, backend: file }
  - { name: vf, size: 256MiB, backend: file }
mappings:
  - { agent: limited, lun: 0, volume: vl }
  - { agent: free, lun: 0, volume: vf }
`);

  it("holds 20 MB/s within 5% over 10 s while the other agent runs at full speed", async () => {
    // 64 KiB reads (128 blocks of 512): 20 MB/s = 20 000 000 / 65 536 = 305.18 reads/s. The
    // bucket starts full with the default burst of 1 s, so the first second may carry up to
    // 2 s worth (~610 reads): we measure after it, over samples 2..11 (seconds 1 to 11, 10 s).
    // iscsi-perf rounds each sample down (< 0.4% here).
    const expected = 20_000_000 / 65_536;
    const [limited, free] = await Promise.all([
      perf(server(), "limited", 0, { depth: 16, blocks: 128, seconds: 12 }),
      perf(server(), "free", 0, { depth: 16, blocks: 128, seconds: 12 }),
    ]);
    const steady = limited.slice(1, 11);
    expect(steady).toHaveLength(10);
    const measured = mean(steady);
    const error = (measured - expected) / expected;
    console.log(
      `read_bps 20MB: ${((measured * 65_536) / 1e6).toFixed(2)} MB/s over 10 s ` +
        `(${(100 * error).toFixed(2)}%); first second ${limited[0]} reads; ` +
        `unlimited agent beside it: ${((mean(free.slice(1, 11)) * 65_536) / 1e6).toFixed(0)} MB/s`,
    );
    expect(Math.abs(error)).toBeLessThan(0.05);
    // The unlimited agent is not held back to anything near the limit.
    expect(mean(free.slice(1, 11))).toBeGreaterThan(3 * expected);
  });
});

// ---------------------------------------------------------------------------------------------

describe("weights 3 and 1 on a saturated server", () => {
  // Both agents keep 512 commands outstanding (their queue_depth, the CmdSN window), far more
  // than the server-wide budget of 64: whatever sits in socket buffers and initiators, both
  // always have commands queued in the arbiter, which is what "saturating" means here.
  const server = serverFor(`target: ${TARGET}
agents:
  - { name: heavy, initiators: [${iqn("heavy")}], weight: 3, queue_depth: 512 }
  - { name: light, initiators: [${iqn("light")}], weight: 1, queue_depth: 512 }
volumes:
  - { name: vh, size: 256MiB, backend: file }
  - { name: vl, size: 256MiB, backend: file }
mappings:
  - { agent: heavy, lun: 0, volume: vh }
  - { agent: light, lun: 0, volume: vl }
`);

  it("shares the server 3:1 within 10%, and gives it all to the light one when alone", async () => {
    // 128 KiB reads. heavy runs 6 s, light 11 s. Both run during samples 2..5 (seconds 1-5; the
    // first second is warm-up); light is alone during samples 8..10 (heavy stopped at 6 s).
    const opts = { depth: 512, blocks: 256 };
    const [heavy, light] = await Promise.all([
      perf(server(), "heavy", 0, { ...opts, seconds: 6 }),
      perf(server(), "light", 0, { ...opts, seconds: 11 }),
    ]);
    const heavyBusy = mean(heavy.slice(1, 5));
    const lightBusy = mean(light.slice(1, 5));
    const lightAlone = mean(light.slice(7, 10));
    const ratio = heavyBusy / lightBusy;
    console.log(
      `weights 3:1: heavy ${heavyBusy.toFixed(0)} reads/s, light ${lightBusy.toFixed(0)} ` +
        `reads/s, ratio ${ratio.toFixed(3)}; light alone ${lightAlone.toFixed(0)} reads/s ` +
        `(${((100 * lightAlone) / (heavyBusy + lightBusy)).toFixed(0)}% of the shared total)`,
    );
    expect(Math.abs(ratio - 3) / 3).toBeLessThan(0.1);
    // Work-conserving: alone, light gets far more than its quarter (4x in theory), and about
    // what both got together.
    expect(lightAlone).toBeGreaterThan(2.5 * lightBusy);
    expect(lightAlone).toBeGreaterThan(0.6 * (heavyBusy + lightBusy));
  });
});

// ---------------------------------------------------------------------------------------------

describe("a live config change during a long transfer", () => {
  const configWith = (limitedRate: string, newbie: boolean) => `target: ${TARGET}
agents:
  - name: runner
    initiators: [${iqn("runner")}]
    limits: { write_bps: 64MB }
  - name: limited
    initiators: [${iqn("limited")}]
    limits: { read_bps: ${limitedRate} }
${newbie ? `  - { name: newbie, initiators: [${iqn("newbie")}] }\n` : ""}volumes:
  - { name: vr, size: 256MiB, backend: file }
  - { name: vl, size: 64MiB, backend: file }
${newbie ? "  - { name: vn, size: 16MiB, backend: file }\n" : ""}mappings:
  - { agent: runner, lun: 0, volume: vr }
  - { agent: limited, lun: 0, volume: vl }
${newbie ? "  - { agent: newbie, lun: 0, volume: vn }\n" : ""}`;
  // The config file is watched (the default): rewriting it is the change.
  const server = serverFor(configWith("20MB", false));

  it("adds an agent and lowers a limit while a 256 MiB write goes on without an error", async () => {
    const image = path.join(work, "runner.img");
    await writeFile(image, randomBytes(256 * 1024 * 1024));
    // 256 MiB at 64 MB/s (after a 1 s burst): about 3 s of writing.
    const convert = tool(
      "qemu-img",
      ["convert", "-n", "-f", "raw", "--target-image-opts", image, qemuOpts(server(), "runner", 0)],
      120_000,
    );
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const reloadsBefore = server().logs.filter((l) => l.msg === "configuration reloaded").length;
    await writeFile(path.join(server().dataDir, "test-config.yaml"), configWith("10MB", true));
    const report = await waitFor(() =>
      server()
        .logs.filter((l) => l.msg === "configuration reloaded")
        .at(reloadsBefore),
    );
    expect(report).toMatchObject({
      agentsAdded: ["newbie"],
      agentsRemoved: [],
      mappingsAdded: 1,
      sessionsEnded: 0,
    });
    // The new agent logs in and sees its LUN.
    expect(await listLuns(server(), "newbie")).toEqual([0]);
    // The lowered limit is in force: 10 MB/s of 64 KiB reads = 152.59 reads/s. The agent was
    // idle, so its bucket is full (1 s of the new rate): samples 2..4, within 5%.
    const limited = await perf(server(), "limited", 0, { depth: 16, blocks: 128, seconds: 5 });
    const measured = mean(limited.slice(1, 4));
    expect(Math.abs(measured / (10_000_000 / 65_536) - 1)).toBeLessThan(0.05);
    // The long write went on across the reload, and every byte arrived.
    const done = await convert;
    expect(done.code, done.stderr).toBe(0);
    const compare = await tool(
      "qemu-img",
      [
        "compare",
        "--image-opts",
        `driver=raw,file.filename=${image}`,
        qemuOpts(server(), "runner", 0),
      ],
      120_000,
    );
    expect(compare.stdout).toContain("Images are identical");
    await rm(image, { force: true });
  });
});

// ---------------------------------------------------------------------------------------------

describe("removing a mapping", () => {
  const configWith = (alphaLun1: boolean) => `target: ${TARGET}
agents:
  - { name: alpha, initiators: [${iqn("alpha")}] }
  - { name: bravo, initiators: [${iqn("bravo")}] }
volumes:
  - { name: va, size: 16MiB, backend: file }
  - { name: va1, size: 16MiB, backend: file }
  - { name: vb, size: 16MiB, backend: file }
mappings:
  - { agent: alpha, lun: 0, volume: va }
${alphaLun1 ? "  - { agent: alpha, lun: 1, volume: va1 }\n" : ""}  - { agent: bravo, lun: 0, volume: vb }
`;
  // Not watched: `sanmux reload` is the change, and its report says what changed.
  const server = serverFor(configWith(true), ["--no-watch"]);

  it("raises REPORTED LUNS DATA HAS CHANGED for that agent's sessions only", async () => {
    const alpha = waitTur(probe, ["-i", iqn("alpha"), server().url(0), "wait-tur"]);
    const bravo = waitTur(probe, ["-i", iqn("bravo"), server().url(0), "wait-tur"]);
    await Promise.all([alpha.ready, bravo.ready]);
    await writeFile(path.join(server().dataDir, "test-config.yaml"), configWith(false));
    const reload = await tool(process.execPath, [
      CLI,
      "reload",
      "--data",
      server().dataDir,
      "--json",
    ]);
    expect(reload.code, reload.stderr).toBe(0);
    expect(JSON.parse(reload.stdout)).toMatchObject({ mappingsRemoved: 1, sessionsEnded: 0 });
    const [a, b] = await Promise.all([alpha.go(), bravo.go()]);
    // UNIT ATTENTION, REPORTED LUNS DATA HAS CHANGED (06/3F/0E), once.
    expect(a).toEqual(["tur1 CHECK_CONDITION/06/3f/0e", "tur2 GOOD"]);
    expect(b).toEqual(["tur1 GOOD", "tur2 GOOD"]);
    expect(await listLuns(server(), "alpha")).toEqual([0]);
  });
});

// ---------------------------------------------------------------------------------------------

/** Poll `get` every 50 ms until it returns something (10 s at most). */
async function waitFor<T>(get: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = get();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * `iscsi-probe ... wait-tur`: `ready` resolves once it logged in; `go()` lets it send its two
 * TEST UNIT READY and resolves with their lines.
 */
function waitTur(cmd: string, args: readonly string[]) {
  const child: ChildProcess = spawn(cmd, [...args], { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  let err = "";
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.startsWith("ready\n")) resolve();
    });
    child.stderr?.on("data", (d: Buffer) => {
      err += d.toString();
    });
    void exited.then((code) => reject(new Error(`iscsi-probe exited with ${code}: ${err}`)));
  });
  return {
    ready,
    async go(): Promise<string[]> {
      child.stdin?.end("go\n");
      const code = await exited;
      expect(code, err).toBe(0);
      return out.trim().split("\n").slice(1);
    },
  };
}
