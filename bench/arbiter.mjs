#!/usr/bin/env node
// Arbiter benchmark: rate-limit accuracy, fairness between weighted agents, and what the
// arbitration costs when nothing is limited and nobody contends. In-process, against an
// in-memory volume with a fixed service time; no iSCSI, no pool. A measurement, not a test: it
// exits 0 whatever the figures are, 1 only when something failed.
//
//   npm run build && node bench/arbiter.mjs [--duration S] [--rounds N] [--service-us US] [--json FILE]
//
// It loads the compiled arbiter from dist/ (or from $SANMUX_DIST, a directory laid out like
// dist/). What each row measures:
//
//   rate  An agent limited to 20 MB/s of reads (64 KiB reads, 32 outstanding), then one limited
//         to 2000 read IOPS (4 KiB reads, 32 outstanding), each with an unlimited agent reading
//         beside it from another volume (8 outstanding). The volume serves a read in one timer
//         tick (~1 ms), so without the limit the agent would do ~30 000 reads/s. Measured over
//         DURATION seconds of steady state (after the first second, which the 1 s burst of a
//         full bucket inflates: that figure is printed too, "from idle").
//   fair  Two agents of weights 3 and 1, each keeping 32 reads of 64 KiB outstanding, on a
//         server that runs 8 commands at once (concurrency 8, 1 ms per command): the ratio of
//         their bytes over DURATION seconds. Then the heavy one stops, and the light one's
//         throughput alone is compared with what both had together (work conservation).
//   cost  Commands per second through the arbiter filter (no limits, one agent, 32 outstanding,
//         never more than the 64-command budget: the fast path) against the same volume
//         without it, and the CPU time per command of each (process.cpuUsage: steadier than
//         wall time on a shared machine; the verdict uses it). The volume first spends a fixed
//         SERVICE_US µs of CPU per command (default 20: SHA-256 over a buffer sized at start to
//         take that long; about what sanmux's iSCSI and SCSI layers spend on a 4 KiB command,
//         from bench/README.md's 36k IOPS on 2 CPUs, before any pool work), then nothing at all
//         (the worst case: the arbiter's own cost against an empty call). Median of ROUNDS
//         alternated rounds of 1 s each.
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import os from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const DURATION = Number(opt("duration", 10));
const ROUNDS = Number(opt("rounds", 7));
const JSON_OUT = opt("json", undefined);
const SERVICE_US = Number(opt("service-us", 20));

const distDir = resolve(process.env.SANMUX_DIST ?? new URL("../dist", import.meta.url).pathname);
const { Arbiter, arbiterPolicy } = await import(
  pathToFileURL(join(distDir, "arbiter/index.js")).href
);

const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** An in-memory volume whose every command takes a fixed service time. */
class BenchVolume {
  /**
   * @param {"timer" | "cpu" | "none"} mode timer: completes on the next 1 ms timer; cpu: spends
   *   SERVICE_US µs of CPU (hashing `cpuBytes`), then resolves; none: resolves at once.
   */
  constructor(name, mode) {
    this.id = `bench-${name}`;
    this.name = name;
    this.blockSize = 512;
    this.mode = mode;
    this.data = Buffer.alloc(1 << 20, 7);
    this.digest = undefined;
  }
  blockCount() {
    return 1 << 30;
  }
  service(value) {
    if (this.mode === "timer") return new Promise((r) => setTimeout(r, 1, value));
    if (this.mode === "cpu") {
      this.digest = createHash("sha256").update(this.data.subarray(0, cpuBytes)).digest();
    }
    return Promise.resolve(value);
  }
  read(_lba, blocks) {
    return this.service(this.data.subarray(0, blocks * 512));
  }
  write() {
    return this.service(undefined);
  }
  flush() {
    return this.service(undefined);
  }
  unmap() {
    return this.service(undefined);
  }
  blockStatus() {
    return this.service({ mapped: true, blocks: 1 });
  }
  async close() {}
}

/**
 * Keep `depth` reads of `bytes` outstanding on `volume` until `stopAt`. Counts what completes
 * in [measureFrom, stopAt), and all of it.
 */
function load(volume, { depth, bytes, stopAt, measureFrom }) {
  const stats = { ops: 0, bytes: 0, allOps: 0, allBytes: 0, errors: 0, done: undefined };
  const blocks = bytes / 512;
  const worker = async () => {
    while (now() < stopAt()) {
      try {
        await volume.read(0, blocks);
      } catch {
        stats.errors++;
        continue;
      }
      const t = now();
      if (t < stopAt()) {
        stats.allOps++;
        stats.allBytes += bytes;
        if (t >= measureFrom) {
          stats.ops++;
          stats.bytes += bytes;
        }
      }
    }
  };
  stats.done = Promise.all(Array.from({ length: depth }, worker));
  return stats;
}

const results = [];
const row = (test, unit, target, measured, verdict) =>
  results.push({ test, unit, target, measured, verdict });
const pct = (x) => `${x >= 0 ? "+" : ""}${(x * 100).toFixed(2)}%`;

// ---------------------------------------------------------------------------------------------
// 1. Rate-limit accuracy

async function rateTest(label, limits, bytes, unit, perSecond) {
  const policy = arbiterPolicy({
    agents: [{ name: "limited", limits }, { name: "free" }],
    volumes: [{ name: "v1" }, { name: "v2" }],
  });
  const arbiter = new Arbiter({ policy });
  const limited = arbiter.filter(new BenchVolume("v1", "timer"), {
    agent: "limited",
    channel: 1,
    volume: "v1",
  });
  const free = arbiter.filter(new BenchVolume("v2", "timer"), {
    agent: "free",
    channel: 2,
    volume: "v2",
  });
  const start = now();
  const stop = start + (DURATION + 1) * 1000;
  const a = load(limited, { depth: 32, bytes, stopAt: () => stop, measureFrom: start + 1000 });
  const b = load(free, { depth: 8, bytes: 65536, stopAt: () => stop, measureFrom: start + 1000 });
  await Promise.all([a.done, b.done]);
  arbiter.close();
  const target = perSecond(limits);
  const steady = unit === "MB/s" ? a.bytes / DURATION / 1e6 : a.ops / DURATION;
  // From idle: the first DURATION seconds, burst included.
  const fromIdleTotal = unit === "MB/s" ? a.allBytes / 1e6 : a.allOps;
  const fromIdle = (fromIdleTotal - steady) / DURATION;
  const targetShown = unit === "MB/s" ? target / 1e6 : target;
  row(
    `${label}, ${DURATION} s steady`,
    unit,
    targetShown.toFixed(2),
    steady.toFixed(2),
    pct(steady / targetShown - 1),
  );
  row(
    `${label}, first ${DURATION} s from idle`,
    unit,
    targetShown.toFixed(2),
    fromIdle.toFixed(2),
    `${pct(fromIdle / targetShown - 1)} (1 s burst)`,
  );
  row(
    "  unlimited agent beside it",
    "MB/s",
    "-",
    (b.bytes / DURATION / 1e6).toFixed(1),
    a.errors + b.errors === 0 ? "no errors" : `${a.errors + b.errors} errors`,
  );
}

// ---------------------------------------------------------------------------------------------
// 2. Fairness

async function fairnessTest() {
  const policy = arbiterPolicy({
    agents: [
      { name: "heavy", weight: 3 },
      { name: "light", weight: 1 },
    ],
    volumes: [{ name: "v1" }, { name: "v2" }],
  });
  const arbiter = new Arbiter({ policy, concurrency: 8 });
  const heavyVol = arbiter.filter(new BenchVolume("v1", "timer"), {
    agent: "heavy",
    channel: 1,
    volume: "v1",
  });
  const lightVol = arbiter.filter(new BenchVolume("v2", "timer"), {
    agent: "light",
    channel: 2,
    volume: "v2",
  });
  const start = now();
  const heavyStop = start + (DURATION + 1) * 1000;
  const lightStop = heavyStop + Math.max(2, DURATION / 2) * 1000 + 500;
  const heavy = load(heavyVol, {
    depth: 32,
    bytes: 65536,
    stopAt: () => heavyStop,
    measureFrom: start + 1000,
  });
  const light = load(lightVol, {
    depth: 32,
    bytes: 65536,
    stopAt: () => heavyStop,
    measureFrom: start + 1000,
  });
  await Promise.all([heavy.done, light.done]);
  const together = (heavy.bytes + light.bytes) / DURATION;
  const ratio = heavy.bytes / light.bytes;
  row("weights 3:1, both saturating", "ratio", "3.00", ratio.toFixed(3), pct(ratio / 3 - 1));
  // The heavy one stops: the light one alone (after 0.5 s to settle).
  const aloneFrom = now() + 500;
  const alone = load(lightVol, {
    depth: 32,
    bytes: 65536,
    stopAt: () => lightStop,
    measureFrom: aloneFrom,
  });
  await alone.done;
  const aloneRate = alone.bytes / ((lightStop - aloneFrom) / 1000);
  row(
    "light agent alone, after heavy stops",
    "MB/s",
    (together / 1e6).toFixed(1),
    (aloneRate / 1e6).toFixed(1),
    `${((aloneRate / together) * 100).toFixed(1)}% of both together`,
  );
  arbiter.close();
}

// ---------------------------------------------------------------------------------------------
// 3. Cost at no contention

/** Bytes of SHA-256 that take SERVICE_US µs of CPU here (calibrated once). */
let cpuBytes = 4096;
function calibrate() {
  const buf = Buffer.alloc(1 << 20, 7);
  const time = (bytes) => {
    const n = 2000;
    const t0 = process.cpuUsage();
    for (let i = 0; i < n; i++) createHash("sha256").update(buf.subarray(0, bytes)).digest();
    const t = process.cpuUsage(t0);
    return (t.user + t.system) / n; // µs per call
  };
  time(4096);
  const perByte = (time(65536) - time(4096)) / (65536 - 4096);
  const fixed = time(4096) - 4096 * perByte;
  cpuBytes = Math.max(64, Math.min(1 << 20, Math.round((SERVICE_US - fixed) / perByte)));
}

/** Wall-clock commands per second, and CPU nanoseconds per command. */
async function measure(volume, ms) {
  const start = now();
  const cpu0 = process.cpuUsage();
  const stats = load(volume, {
    depth: 32,
    bytes: 4096,
    stopAt: () => start + ms,
    measureFrom: start,
  });
  await stats.done;
  const cpu = process.cpuUsage(cpu0);
  return {
    opsPerSecond: stats.allOps / ((now() - start) / 1000),
    cpuNs: ((cpu.user + cpu.system) * 1000) / stats.allOps,
  };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function costTest(mode) {
  const base = new BenchVolume("v", mode);
  const arbiter = new Arbiter({
    policy: arbiterPolicy({ agents: [{ name: "a" }], volumes: [{ name: "v" }] }),
  });
  const filtered = arbiter.filter(base, { agent: "a", channel: 1, volume: "v" });
  // Warm up both paths (JIT).
  await measure(base, 300);
  await measure(filtered, 300);
  const without = [];
  const withArbiter = [];
  for (let r = 0; r < ROUNDS; r++) {
    without.push(await measure(base, 1000));
    await sleep(10);
    withArbiter.push(await measure(filtered, 1000));
    await sleep(10);
  }
  arbiter.close();
  const label =
    mode === "cpu" ? `${SERVICE_US} µs of CPU per command` : "empty volume (worst case)";
  const ops = [
    median(without.map((m) => m.opsPerSecond)),
    median(withArbiter.map((m) => m.opsPerSecond)),
  ];
  const cpu = [median(without.map((m) => m.cpuNs)), median(withArbiter.map((m) => m.cpuNs))];
  row(
    `no contention, ${label}`,
    "cmd/s",
    `${Math.round(ops[0])} without`,
    `${Math.round(ops[1])} with`,
    `${pct(ops[1] / ops[0] - 1)} wall`,
  );
  const extra = cpu[1] / cpu[0] - 1;
  row(
    "  CPU time per command",
    "ns",
    `${Math.round(cpu[0])} without`,
    `${Math.round(cpu[1])} with`,
    `${pct(extra)} (+${Math.round(cpu[1] - cpu[0])} ns)${mode === "cpu" ? (extra < 0.05 ? ": < 5%, ok" : ": over 5%") : ""}`,
  );
}

// ---------------------------------------------------------------------------------------------

try {
  process.stderr.write(`rate: 20 MB/s (${DURATION + 1} s)...\n`);
  await rateTest("read_bps 20 MB/s", { readBps: 20e6 }, 65536, "MB/s", (l) => l.readBps);
  process.stderr.write(`rate: 2000 IOPS (${DURATION + 1} s)...\n`);
  await rateTest("read_iops 2000", { readIops: 2000 }, 4096, "IOPS", (l) => l.readIops);
  process.stderr.write("fairness...\n");
  await fairnessTest();
  process.stderr.write("cost...\n");
  calibrate();
  await costTest("cpu");
  await costTest("none");
} catch (error) {
  console.error(error);
  process.exit(1);
}

const cols = ["test", "unit", "target", "measured", "verdict"];
const widths = cols.map((c) => Math.max(c.length, ...results.map((r) => String(r[c]).length)));
const line = (cells) =>
  cells
    .map((c, i) => String(c).padEnd(widths[i]))
    .join("  ")
    .trimEnd();
console.log(
  `arbiter bench: node ${process.version}, ${os.cpus().length} CPUs, load ${os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(" ")}; ${DURATION} s windows, ${ROUNDS} rounds`,
);
console.log(line(cols));
console.log(line(widths.map((w) => "-".repeat(w))));
for (const r of results) console.log(line(cols.map((c) => r[c])));
if (JSON_OUT) writeFileSync(JSON_OUT, `${JSON.stringify(results, null, 2)}\n`);
