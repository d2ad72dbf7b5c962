#!/usr/bin/env node
// Measures iSCSI targets side by side with libiscsi's iscsi-perf (reads) and `qemu-img bench`
// through qemu's libiscsi block driver (writes), alternating between the targets round by round
// and reporting the median of each. Started by bench/vs-tgt.sh, which starts the targets; see
// bench/README.md. Plain Node ESM without dependencies.
//
// Input (environment):
//   BENCH_TARGETS  JSON array of {name, portal, iqn, lun, pid?, log?}; measured in that order
//   BENCH_INITIATOR initiator IQN used by every run
//   BENCH_SIZE     size of every LUN in bytes (all targets must have the same)
//   ROUNDS, DURATION, SEQ_DEPTH, RAND_DEPTH, BENCH_TESTS, BENCH_FILL, BENCH_JSON: see README.md

import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";

const MiB = 1024 * 1024;

function envInt(name, fallback, min = 1) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min) {
    throw new Error(`${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  }
  return v;
}

const targets = JSON.parse(process.env.BENCH_TARGETS ?? "[]");
const initiator = process.env.BENCH_INITIATOR ?? "iqn.2026-11.io.sanmux:bench-initiator";
const size = envInt("BENCH_SIZE", 1024 * MiB);
const rounds = envInt("ROUNDS", 5);
const duration = envInt("DURATION", 5);
const seqDepth = envInt("SEQ_DEPTH", 8);
const randDepth = envInt("RAND_DEPTH", 32);
const fill = process.env.BENCH_FILL !== "0";
const jsonOut = process.env.BENCH_JSON || "";

if (targets.length === 0) throw new Error("BENCH_TARGETS names no target");

// 4 KiB "random" writes with qemu-img bench: it can only advance the offset by a fixed step
// (wrapping modulo the image size), so use a large odd multiple of 4 KiB. As the number of 4 KiB
// blocks in the LUN is a power of two, an odd multiplier visits every block once before repeating,
// in an order where neighbouring requests are ~390 MiB apart.
const RAND_STEP = 4096 * 100_003;

const TESTS = {
  seqwrite: {
    label: "128 KiB seq write",
    tool: "qemu",
    write: true,
    bs: 128 * 1024,
    depth: seqDepth,
    metric: "mibs",
  },
  seqread: {
    label: "128 KiB seq read",
    tool: "perf",
    random: false,
    bs: 128 * 1024,
    depth: seqDepth,
    metric: "mibs",
  },
  randread: {
    label: "4 KiB rand read",
    tool: "perf",
    random: true,
    bs: 4096,
    depth: randDepth,
    metric: "iops",
  },
  randwrite: {
    label: "4 KiB rand write",
    tool: "qemu",
    write: true,
    bs: 4096,
    step: RAND_STEP,
    depth: randDepth,
    metric: "iops",
  },
  // Extra rows, not run by default: the reads again, through qemu's driver instead of iscsi-perf.
  "seqread-qemu": {
    label: "128 KiB seq read (qemu)",
    tool: "qemu",
    write: false,
    bs: 128 * 1024,
    depth: seqDepth,
    metric: "mibs",
  },
  "randread-qemu": {
    label: "4 KiB rand read (qemu)",
    tool: "qemu",
    write: false,
    bs: 4096,
    step: RAND_STEP,
    depth: randDepth,
    metric: "iops",
  },
};

const DEFAULT_TESTS = ["seqwrite", "seqread", "randread", "randwrite"];
const testNames =
  process.env.BENCH_TESTS === "all"
    ? Object.keys(TESTS)
    : (process.env.BENCH_TESTS || DEFAULT_TESTS.join(","))
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
for (const t of testNames) {
  if (!TESTS[t]) throw new Error(`unknown test ${t}; known: ${Object.keys(TESTS).join(", ")}`);
}

function log(msg) {
  process.stderr.write(`[bench] ${msg}\n`);
}

// Child processes still running; killed if this script is interrupted, so that no iscsi-perf or
// qemu-img outlives it.
const children = new Set();
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, () => {
    for (const child of children) child.kill("SIGKILL");
    process.stderr.write(`[bench] interrupted (${sig})\n`);
    process.exit(sig === "SIGINT" ? 130 : 143);
  });
}

// Runs a command; SIGINT after softMs (iscsi-perf then drains and still prints its average),
// SIGKILL after hardMs, or at once when the target's process dies (libiscsi would otherwise keep
// trying to reconnect until hardMs).
function run(cmd, args, softMs, hardMs, target) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    let out = "";
    let timedOut = false;
    child.stdout.on("data", (d) => {
      out += d;
    });
    child.stderr.on("data", (d) => {
      out += d;
    });
    const soft = setTimeout(() => {
      timedOut = true;
      child.kill("SIGINT");
    }, softMs);
    const hard = setTimeout(() => child.kill("SIGKILL"), hardMs);
    const watch = setInterval(() => {
      if (target && !alive(target)) child.kill("SIGKILL");
    }, 250);
    const stop = () => {
      children.delete(child);
      clearTimeout(soft);
      clearTimeout(hard);
      clearInterval(watch);
    };
    child.on("error", (err) => {
      stop();
      resolve({ code: -1, signal: null, out: `${out}${err.message}`, timedOut });
    });
    child.on("close", (code, signal) => {
      stop();
      resolve({ code, signal, out: out.replace(/\r/g, "\n"), timedOut });
    });
  });
}

function alive(target) {
  if (!target.pid) return true;
  try {
    process.kill(target.pid, 0);
    return true;
  } catch {
    return false;
  }
}

function logTail(target, lines = 20) {
  if (!target.log) return "";
  try {
    return readFileSync(target.log, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

function url(target) {
  return `iscsi://${target.portal}/${target.iqn}/${target.lun}`;
}

function qemuOpts(target) {
  return [
    "driver=iscsi",
    "transport=tcp",
    `portal=${target.portal}`,
    `target=${target.iqn}`,
    `lun=${target.lun}`,
    `initiator-name=${initiator}`,
  ].join(",");
}

class MeasureError extends Error {}

function excerpt(out) {
  return out
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .slice(-6)
    .join(" | ");
}

// qemu-img bench runs a fixed number of requests; returns {count, seconds}.
async function qemuBench(target, test, count) {
  const args = ["bench", "-t", "none", "-c", String(count), "-d", String(test.depth)];
  args.push("-s", String(test.bs));
  if (test.step) args.push("-S", String(test.step));
  if (test.write) args.push("-w");
  args.push("--image-opts", qemuOpts(target));
  const limit = Math.max(60, duration * 12) * 1000;
  const r = await run("qemu-img", args, limit, limit + 10_000, target);
  const m = /Run completed in ([0-9.]+) seconds/.exec(r.out);
  if (r.code !== 0 || !m) {
    const why = r.timedOut ? `timed out after ${limit / 1000} s` : `exit ${r.code ?? r.signal}`;
    throw new MeasureError(`qemu-img bench ${why}: ${excerpt(r.out)}`);
  }
  return { count, seconds: Number(m[1]) };
}

// iscsi-perf reads for `seconds` (its -t); returns its average IOPS.
async function perfRun(target, test, seconds) {
  const args = [
    "-i",
    initiator,
    "-m",
    String(test.depth),
    "-b",
    String(test.bs / target.blockSize),
  ];
  args.push("-t", String(seconds));
  if (test.random) args.push("-r");
  args.push(url(target));
  // iscsi-perf's own -t can overshoot (it only looks at the clock when a command completes), so
  // interrupt it ourselves a little later: on SIGINT it drains its queue and prints the average.
  const r = await run("iscsi-perf", args, (seconds + 10) * 1000, (seconds + 30) * 1000, target);
  const avgs = [...r.out.matchAll(/iops average (\d+)/g)];
  const failed = /failed|Login Failed|Failed to/i.test(r.out);
  if (r.code !== 0 || failed || avgs.length === 0 || !/finished\./.test(r.out)) {
    throw new MeasureError(`iscsi-perf exit ${r.code ?? r.signal}: ${excerpt(r.out)}`);
  }
  return Number(avgs[avgs.length - 1][1]);
}

function toMetric(test, iops) {
  return test.metric === "iops" ? iops : (iops * test.bs) / MiB;
}

// Per (test, target): the request count that makes a qemu-img bench run last about DURATION s.
const qemuCounts = new Map();

async function warmup(target, test) {
  if (test.tool === "perf") {
    await perfRun(target, test, 1);
    return;
  }
  let count = test.bs >= 65536 ? 1024 : 8192;
  for (;;) {
    const r = await qemuBench(target, test, count);
    if (r.seconds >= 0.5 || count >= 1 << 24) {
      const scaled = Math.round((count * duration) / Math.max(r.seconds, 0.001));
      qemuCounts.set(`${test.name}/${target.name}`, Math.max(test.depth, scaled));
      return;
    }
    count *= 8;
  }
}

async function measure(target, test) {
  if (test.tool === "perf") return toMetric(test, await perfRun(target, test, duration));
  const count = qemuCounts.get(`${test.name}/${target.name}`);
  if (count === undefined) throw new MeasureError("not measured: its warm-up failed");
  const r = await qemuBench(target, test, count);
  return toMetric(test, r.count / r.seconds);
}

function median(values) {
  const v = [...values].sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function fmt(value, metric) {
  if (value === null || value === undefined) return "FAILED";
  return metric === "iops" ? String(Math.round(value)) : value.toFixed(1);
}

// Logs in once and reads the LUN's geometry (READ CAPACITY 16), which iscsi-perf's -b (a count of
// blocks) and the fill pass need.
async function readCapacity(target) {
  const args = ["-i", initiator, url(target)];
  const r = await run("iscsi-readcapacity16", args, 30_000, 40_000, target);
  const bs = /LOGICAL BLOCK LENGTH IN BYTES:(\d+)/.exec(r.out);
  const total = /Total size:(\d+)/.exec(r.out);
  if (r.code !== 0 || !bs || !total) {
    throw new MeasureError(`iscsi-readcapacity16 exit ${r.code ?? r.signal}: ${excerpt(r.out)}`);
  }
  target.blockSize = Number(bs[1]);
  target.size = Number(total[1]);
  log(`${target.name}: ${url(target)}: ${target.size / MiB} MiB, ${target.blockSize}-byte blocks`);
  if (target.size !== size) {
    log(
      `${target.name}: WARNING: LUN is ${target.size} bytes, expected ${size}; figures may not compare`,
    );
  }
}

async function main() {
  const failures = [];
  const dead = new Set();
  const results = {}; // results[test][target] = [values]

  const attempt = async (target, what, fn) => {
    if (dead.has(target.name)) return undefined;
    if (!alive(target)) {
      dead.add(target.name);
      const msg = `${target.name}: process ${target.pid} is gone (before ${what})`;
      failures.push(msg);
      log(msg);
      const tail = logTail(target);
      if (tail) log(`${target.name} log tail:\n${tail}`);
      return undefined;
    }
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof MeasureError)) throw err;
      const msg = `${target.name}: ${what}: ${err.message}`;
      failures.push(msg);
      log(msg);
      if (!alive(target)) {
        dead.add(target.name);
        const tail = logTail(target);
        if (tail) log(`${target.name} died; log tail:\n${tail}`);
      }
      return undefined;
    }
  };

  for (const target of targets) {
    await attempt(target, "login and READ CAPACITY", () => readCapacity(target));
    // Without its geometry nothing else can be run against it; its cells show FAILED.
    if (target.blockSize === undefined) dead.add(target.name);
  }

  if (fill) {
    // Write every block once, so that reads see data rather than holes (a sparse file in tgt's
    // case, unallocated extents in sanmux's) and writes overwrite, on both sides alike.
    const test = { name: "fill", write: true, bs: 128 * 1024, depth: 32 };
    for (const target of targets) {
      await attempt(target, "fill", async () => {
        const mib = target.size / MiB;
        const r = await qemuBench(target, test, Math.floor(target.size / test.bs));
        const rate = (mib / r.seconds).toFixed(0);
        log(`${target.name}: filled ${mib} MiB in ${r.seconds.toFixed(2)} s (${rate} MiB/s)`);
      });
    }
  }

  for (const name of testNames) {
    const test = { name, ...TESTS[name] };
    results[name] = {};
    for (const target of targets) results[name][target.name] = [];
    log(`${test.label} (QD ${test.depth}): warm-up`);
    for (const target of targets)
      await attempt(target, `${name} warm-up`, () => warmup(target, test));
    for (let round = 1; round <= rounds; round++) {
      for (const target of targets) {
        const v = await attempt(target, `${name} round ${round}`, () => measure(target, test));
        if (v !== undefined) results[name][target.name].push(v);
      }
      const line = targets
        .map((t) => `${t.name} ${fmt(results[name][t.name][round - 1], test.metric)}`)
        .join(", ");
      log(`${test.label} round ${round}/${rounds}: ${line}`);
    }
  }

  // The table, on stdout.
  const names = targets.map((t) => t.name);
  const hasRatio = names.includes("tgt") && names.includes("sanmux");
  const header = ["test", "unit", ...names, ...(hasRatio ? ["sanmux/tgt"] : [])];
  const rows = [header];
  const summary = [];
  for (const name of testNames) {
    const test = TESTS[name];
    const unit = test.metric === "iops" ? "IOPS" : "MiB/s";
    const medians = Object.fromEntries(names.map((n) => [n, median(results[name][n])]));
    const row = [
      `${test.label} QD${test.depth}`,
      unit,
      ...names.map((n) => fmt(medians[n], test.metric)),
    ];
    let ratio = null;
    if (hasRatio) {
      if (medians.tgt && medians.sanmux !== null) ratio = medians.sanmux / medians.tgt;
      row.push(ratio === null ? "-" : ratio.toFixed(2));
    }
    rows.push(row);
    summary.push({
      test: name,
      label: test.label,
      unit,
      block_size: test.bs,
      queue_depth: test.depth,
      tool: test.tool === "perf" ? "iscsi-perf" : "qemu-img bench",
      samples: results[name],
      median: medians,
      ratio_sanmux_tgt: ratio,
    });
  }
  const widths = header.map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const lines = rows.map((r) =>
    r.map((cell, i) => (i < 2 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join("  "),
  );
  lines.splice(1, 0, widths.map((w) => "-".repeat(w)).join("  "));
  const load = loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
  process.stdout.write(
    `\nmedian of ${rounds} round(s) of ${duration} s; LUNs of ${size / MiB} MiB; ` +
      `initiator on the same host (${cpus().length} CPUs, load average now ${load})\n`,
  );
  process.stdout.write(`${lines.join("\n")}\n`);

  if (jsonOut) {
    const doc = {
      rounds,
      duration_s: duration,
      lun_bytes: size,
      targets,
      results: summary,
      failures,
    };
    writeFileSync(jsonOut, `${JSON.stringify(doc, null, 2)}\n`);
    log(`results written to ${jsonOut}`);
  }
  if (failures.length > 0) {
    process.stdout.write(`\n${failures.length} measurement(s) failed:\n`);
    for (const f of failures) process.stdout.write(`  ${f}\n`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`[bench] ${err.stack ?? err}\n`);
    process.exitCode = 2;
  },
);
