#!/usr/bin/env node
// Arbitration measured through a real `sanmux serve` and libiscsi's iscsi-perf (bench/README.md,
// "Arbitration"): the accuracy of a 20 MB/s and a 2000 IOPS read limit over 10 s, the throughput
// ratio of two saturating agents of weights 3 and 1 (and what the light one gets alone), the same
// for two agents writing (qemu-img bench -w, writes large enough to need R2Ts), and the
// cost of arbitration when nothing is limited and nothing contends: one agent's throughput with
// the arbiter on (the default) against SANMUX_ARBITER=off, alternating rounds, medians.
//
//   npm run build && node bench/arbitration.mjs
//
// Environment: ROUNDS (overhead pairs of runs per test, default 12), DURATION (seconds per
// overhead run, default 3), BENCH_TESTS (comma-separated: rate,fairness,writes,overhead,profile;
// default all), WRITE_KIB (write size of the writes test, default 1024), WRITE_CONCURRENCY
// (pool.concurrency of the writes test; default: the server's default, 64), SANMUX_CLI
// (another build's dist/cli/main.js), KEEP_TMP=1 (keep the data directories and server logs),
// BENCH_JSON (also write every figure to this file). Progress goes to stderr, the table to
// stdout. Exit 0 whatever the figures; 1 when a server or a tool failed. Plain Node ESM.

import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import path from "node:path";

const ROOT = path.resolve(import.meta.dirname, "..");
const CLI = process.env.SANMUX_CLI || path.join(ROOT, "dist/cli/main.js");
const TARGET = "iqn.2026-11.io.sanmux:arbitration-bench";
const iqn = (agent) => `iqn.2026-11.io.sanmux:bench-${agent}`;
const rounds = envInt("ROUNDS", 12);
const duration = envInt("DURATION", 3);
const tests = new Set(
  (process.env.BENCH_TESTS || "rate,fairness,writes,overhead,profile").split(","),
);
const writeKib = envInt("WRITE_KIB", 1024);
const writeConcurrency = process.env.WRITE_CONCURRENCY ? envInt("WRITE_CONCURRENCY", 64) : 0;
const tmp = mkdtempSync(path.join(process.env.BENCH_TMPDIR || tmpdir(), "sanmux-arb-bench-"));
const servers = new Set();
const rows = [];
const failures = [];

function envInt(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be an integer >= 1`);
  return v;
}

const log = (...args) => console.error("arbitration:", ...args);

/** Start `sanmux serve` on a fresh data directory; resolves once it listens. */
async function startServer(name, config, env = {}, nodeArgs = []) {
  const dir = path.join(tmp, name);
  const configPath = path.join(tmp, `${name}.yaml`);
  writeFileSync(configPath, config);
  const child = spawn(
    process.execPath,
    [
      ...nodeArgs,
      CLI,
      "serve",
      "--data",
      dir,
      "--config",
      configPath,
      "--portal",
      "127.0.0.1:0",
      "--no-watch",
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } },
  );
  const server = { child, port: 0, dir };
  servers.add(server);
  let output = "";
  const logFile = path.join(tmp, `${name}.log`);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name}: did not listen in 30 s`)), 30_000);
    child.stdout.on("data", (d) => {
      output += d.toString();
      const m = /"portal":"127\.0\.0\.1:(\d+)"[^\n]*"msg":"listening"/.exec(output);
      if (m && server.port === 0) {
        server.port = Number(m[1]);
        clearTimeout(timer);
        resolve();
      }
    });
    child.stderr.on("data", (d) => {
      output += d.toString();
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      writeFileSync(logFile, output);
      reject(new Error(`${name}: sanmux exited with ${code} before listening:\n${output}`));
    });
  });
  child.once("exit", () => writeFileSync(logFile, output));
  return server;
}

async function stopServer(server) {
  if (server.child.exitCode !== null) return;
  const exited = new Promise((resolve) => server.child.once("exit", resolve));
  server.child.kill("SIGTERM");
  const timer = setTimeout(() => server.child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
  servers.delete(server);
}

/** iscsi-perf's per-second "iops current" samples. */
function perf(server, agent, { depth, blocks, seconds, random = false }) {
  const url = `iscsi://127.0.0.1:${server.port}/${TARGET}/0`;
  const args = ["-i", iqn(agent), "-m", String(depth), "-b", String(blocks), "-t", String(seconds)];
  if (random) args.push("-r");
  args.push(url);
  return new Promise((resolve, reject) => {
    const child = spawn("iscsi-perf", args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d.toString();
    });
    child.stderr.on("data", (d) => {
      out += d.toString();
    });
    child.once("error", reject);
    child.once("exit", (code) => {
      if (code !== 0 || !out.includes("finished.")) {
        reject(new Error(`iscsi-perf ${args.join(" ")} exited with ${code}:\n${out}`));
        return;
      }
      resolve([...out.matchAll(/iops current (\d+)/g)].map((m) => Number(m[1])));
    });
  });
}

/** CPU seconds (user + system) the server process has used so far. */
function cpuSeconds(server) {
  const stat = readFileSync(`/proc/${server.child.pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of /proc/PID/stat (11 and 12 after the name).
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}
const CLOCK_TICKS = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;

/** Commands the server executed on `agent`'s channels so far (`sanmux status --json`). */
function commandsDone(server, agent) {
  const status = JSON.parse(
    execFileSync(process.execPath, [CLI, "status", "--data", server.dir, "--json"]).toString(),
  );
  return status.channels.filter((c) => c.agent === agent).reduce((sum, c) => sum + c.commands, 0);
}

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};
const pct = (x) => `${x >= 0 ? "+" : ""}${(100 * x).toFixed(2)}%`;

function config(agents, volumes) {
  return `target: ${TARGET}
agents:
${agents.map((a) => `  - ${a}`).join("\n")}
volumes:
${volumes.map((v) => `  - { name: ${v}, size: 256MiB, backend: file }`).join("\n")}
mappings:
${volumes.map((v) => `  - { agent: ${v}, lun: 0, volume: ${v} }`).join("\n")}
`;
}

// ---------------------------------------------------------------------------------------------

async function rateAccuracy() {
  // 64 KiB reads: 20 MB/s = 305.18 reads/s; 4 KiB reads under 2000 IOPS. Each limited agent
  // runs 12 s beside an unlimited one; the first second (the 1 s burst: up to 2 s of rate) is
  // left out, so the figure is the mean of samples 2..11: 10 s.
  const server = await startServer(
    "rate",
    config(
      [
        `{ name: bps, initiators: [${iqn("bps")}], limits: { read_bps: 20MB } }`,
        `{ name: iops, initiators: [${iqn("iops")}], limits: { read_iops: 2000 } }`,
        `{ name: free, initiators: [${iqn("free")}] }`,
      ],
      ["bps", "iops", "free"],
    ),
  );
  try {
    for (const [agent, blocks, limit, unit, perRead] of [
      ["bps", 128, 20_000_000 / 65_536, "MB/s", 65_536 / 1e6],
      ["iops", 8, 2000, "IOPS", 1],
    ]) {
      log(`rate: ${agent} limited, 12 s beside an unlimited agent`);
      const [limited, free] = await Promise.all([
        perf(server, agent, { depth: 16, blocks, seconds: 12 }),
        perf(server, "free", { depth: 16, blocks, seconds: 12 }),
      ]);
      const steady = mean(limited.slice(1, 11));
      const error = steady / limit - 1;
      rows.push({
        test: `read limit ${agent === "bps" ? "20 MB/s (64 KiB reads)" : "2000 IOPS (4 KiB reads)"}`,
        figure: `${(steady * perRead).toFixed(agent === "bps" ? 2 : 0)} ${unit}`,
        vs: `${pct(error)} vs the limit`,
        note: `unlimited agent beside it: ${(mean(free.slice(1, 11)) * perRead).toFixed(0)} ${unit}`,
        raw: { limited, free, error },
      });
    }
  } finally {
    await stopServer(server);
  }
}

async function fairness() {
  // Weights 3 and 1, 512 commands outstanding each (queue_depth 512), 128 KiB reads; the
  // server-wide budget is the default 64. heavy runs 6 s, light 11 s: both during samples 2..5,
  // light alone during samples 8..10.
  const server = await startServer(
    "fairness",
    config(
      [
        `{ name: heavy, initiators: [${iqn("heavy")}], weight: 3, queue_depth: 512 }`,
        `{ name: light, initiators: [${iqn("light")}], weight: 1, queue_depth: 512 }`,
      ],
      ["heavy", "light"],
    ),
  );
  try {
    log("fairness: weights 3:1, both saturating for 6 s, then light alone");
    const opts = { depth: 512, blocks: 256 };
    const [heavy, light] = await Promise.all([
      perf(server, "heavy", { ...opts, seconds: 6 }),
      perf(server, "light", { ...opts, seconds: 11 }),
    ]);
    const h = mean(heavy.slice(1, 5));
    const l = mean(light.slice(1, 5));
    const alone = mean(light.slice(7, 10));
    const mib = (x) => ((x * 131_072) / 2 ** 20).toFixed(0);
    rows.push({
      test: "weights 3:1, both saturating",
      figure: `${(h / l).toFixed(3)} : 1`,
      vs: `${pct(h / l / 3 - 1)} vs 3:1`,
      note: `heavy ${mib(h)} MiB/s, light ${mib(l)} MiB/s`,
      raw: { heavy, light },
    });
    rows.push({
      test: "light alone after heavy stops",
      figure: `${mib(alone)} MiB/s`,
      vs: `${((100 * alone) / (h + l)).toFixed(0)}% of the shared total`,
      note: `${(alone / l).toFixed(1)}x its share under contention`,
      raw: { alone },
    });
  } finally {
    await stopServer(server);
  }
}

/** Channel totals of `agent` (`sanmux status --json`): written bytes and write commands. */
function writeTotals(server, agent) {
  const status = JSON.parse(
    execFileSync(process.execPath, [CLI, "status", "--data", server.dir, "--json"]).toString(),
  );
  const mine = status.channels.filter((c) => c.agent === agent);
  const sched = status.arbiter?.scheduler ?? {};
  const a = (status.arbiter?.agents ?? []).find((x) => x.name === agent) ?? {};
  log(
    `writes: ${agent}: scheduler in flight ${sched.inFlight}, queued ${sched.queued}, ` +
      `throttled ${sched.throttled}; agent queued ${a.queued}, in flight ${a.inFlight}`,
  );
  return {
    bytes: mine.reduce((sum, c) => sum + c.writtenBytes, 0),
    ops: mine.reduce((sum, c) => sum + c.writeOps, 0),
    at: performance.now(),
  };
}

/** `qemu-img bench -w` as `agent` until killed (a count far beyond the run). */
function benchWrites(server, agent, { depth, kib }) {
  const opts =
    `driver=iscsi,transport=tcp,portal=127.0.0.1:${server.port},target=${TARGET},lun=0,` +
    `initiator-name=${iqn(agent)}`;
  const args = [
    "bench",
    "-w",
    "-c",
    "1000000",
    "-d",
    String(depth),
    "-s",
    `${kib}K`,
    "-t",
    "none",
    "--image-opts",
    opts,
  ];
  const child = spawn("qemu-img", args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d) => {
    out += d.toString();
  });
  child.stderr.on("data", (d) => {
    out += d.toString();
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  return {
    async stop() {
      if (child.exitCode !== null) throw new Error(`qemu-img bench ${agent} exited early:\n${out}`);
      child.kill("SIGTERM");
      await exited;
    },
  };
}

async function writeFairness() {
  // Weights 3 and 1, writes of WRITE_KIB (1 MiB: the first 256 KiB go unsolicited, the rest is
  // solicited by R2T, so the arbiter admits each write before its data is asked for), 128 in
  // flight per agent (queue_depth 512), the default budget of 64. Both write for 8 s; the ratio
  // is of the bytes each wrote from second 2 to second 7 (from the servers' channel counters).
  // Then heavy stops and light writes alone for 3 s (work conservation).
  const server = await startServer(
    "writes",
    `target: ${TARGET}
agents:
  - { name: heavy, initiators: [${iqn("heavy")}], weight: 3, queue_depth: 512 }
  - { name: light, initiators: [${iqn("light")}], weight: 1, queue_depth: 512 }
volumes:
  - { name: heavy, size: 1GiB, backend: file }
  - { name: light, size: 1GiB, backend: file }
mappings:
  - { agent: heavy, lun: 0, volume: heavy }
  - { agent: light, lun: 0, volume: light }
${writeConcurrency ? `pool: { concurrency: ${writeConcurrency} }\n` : ""}`,
  );
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  try {
    log(`writes: weights 3:1, ${writeKib} KiB writes, both for 8 s, then light alone`);
    const opts = { depth: 128, kib: writeKib };
    const heavy = benchWrites(server, "heavy", opts);
    const light = benchWrites(server, "light", opts);
    await sleep(2000);
    const h0 = writeTotals(server, "heavy");
    const l0 = writeTotals(server, "light");
    await sleep(5000);
    const h1 = writeTotals(server, "heavy");
    const l1 = writeTotals(server, "light");
    await heavy.stop();
    await sleep(1000);
    const a0 = writeTotals(server, "light");
    await sleep(3000);
    const a1 = writeTotals(server, "light");
    await light.stop();
    const rate = (x0, x1) => (x1.bytes - x0.bytes) / ((x1.at - x0.at) / 1000);
    const h = rate(h0, h1);
    const l = rate(l0, l1);
    const alone = rate(a0, a1);
    const mib = (x) => (x / 2 ** 20).toFixed(0);
    rows.push({
      test: `weights 3:1, both writing ${writeKib} KiB`,
      figure: `${(h / l).toFixed(3)} : 1`,
      vs: `${pct(h / l / 3 - 1)} vs 3:1`,
      note: `heavy ${mib(h)} MiB/s, light ${mib(l)} MiB/s`,
      raw: { h, l },
    });
    rows.push({
      test: "light alone after heavy stops (writes)",
      figure: `${mib(alone)} MiB/s`,
      vs: `${((100 * alone) / (h + l)).toFixed(0)}% of the shared total`,
      note: `${(alone / l).toFixed(1)}x its share under contention`,
      raw: { alone },
    });
  } finally {
    await stopServer(server);
  }
}

async function overhead() {
  // One server, two agents with a volume each, nothing limited, default config: "on" goes
  // through the arbiter, "off" bypasses it (SANMUX_ARBITER=off:off, the benchmarking switch).
  // One at a time, so nothing contends and every arbitrated command takes the fast path. Runs
  // alternate between them in pairs (the order swapped every round), ROUNDS pairs of DURATION
  // seconds (first second left out); each figure is the median over the pairs of the ratio
  // on/off. One process for both sides keeps its state (JIT, heap, page cache) out of the
  // comparison, and pairs a few seconds apart see about the same load from the rest of the
  // machine. Per run: the throughput iscsi-perf sees, and the server's CPU time per command
  // (user + system from /proc/PID/stat, over the commands of that agent's channel). At queue
  // depth 1 the throughput is 1 / latency: that row gives the latency the arbiter adds.
  // BENCH_CONTROL=1: both agents through the arbiter (the noise floor of the method).
  const control = process.env.BENCH_CONTROL === "1";
  const server = await startServer(
    "overhead",
    config(
      [`{ name: on, initiators: [${iqn("on")}] }`, `{ name: off, initiators: [${iqn("off")}] }`],
      ["on", "off"],
    ),
    control ? {} : { SANMUX_ARBITER: "off:off" },
  );
  try {
    for (const t of [
      { name: "4 KiB random reads, QD 1", depth: 1, blocks: 8, random: true, unit: "IOPS" },
      { name: "4 KiB random reads, QD 32", depth: 32, blocks: 8, random: true, unit: "IOPS" },
      { name: "128 KiB sequential reads, QD 8", depth: 8, blocks: 256, unit: "MiB/s" },
    ]) {
      const scale = t.unit === "IOPS" ? 1 : (t.blocks * 512) / 2 ** 20;
      const run = async (agent) => {
        const cpu0 = cpuSeconds(server);
        const cmds0 = commandsDone(server, agent);
        const s = await perf(server, agent, { ...t, seconds: duration + 1 });
        const cpu = cpuSeconds(server) - cpu0;
        const cmds = commandsDone(server, agent) - cmds0;
        return { rate: mean(s.slice(1)) * scale, cpuUs: (cpu / cmds) * 1e6 };
      };
      log(`overhead: ${t.name}: warm-up`);
      await run("on");
      await run("off");
      const pairs = [];
      for (let r = 1; r <= rounds; r++) {
        let a;
        let b;
        if (r % 2) {
          a = await run("on");
          b = await run("off");
        } else {
          b = await run("off");
          a = await run("on");
        }
        pairs.push({ on: a, off: b });
        log(
          `overhead: ${t.name}: round ${r}: on ${a.rate.toFixed(0)} ${t.unit}, ` +
            `${a.cpuUs.toFixed(2)} µs CPU/cmd; off ${b.rate.toFixed(0)} ${t.unit}, ` +
            `${b.cpuUs.toFixed(2)} µs CPU/cmd`,
        );
      }
      const rateOn = median(pairs.map((p) => p.on.rate));
      const rateOff = median(pairs.map((p) => p.off.rate));
      const rateRatio = median(pairs.map((p) => p.on.rate / p.off.rate));
      const cpuOn = median(pairs.map((p) => p.on.cpuUs));
      const cpuOff = median(pairs.map((p) => p.off.cpuUs));
      const cpuRatio = median(pairs.map((p) => p.on.cpuUs / p.off.cpuUs));
      const latency =
        t.depth === 1
          ? `; latency ${(1e6 / rateOn).toFixed(1)} vs ${(1e6 / rateOff).toFixed(1)} µs`
          : "";
      rows.push({
        test: `arbiter on vs ${control ? "on (control)" : "off"}: ${t.name}`,
        figure: `${rateOn.toFixed(0)} vs ${rateOff.toFixed(0)} ${t.unit}`,
        vs: `${pct(rateRatio - 1)} throughput`,
        note: `medians of ${rounds} pairs of ${duration} s${latency}`,
        raw: { pairs },
      });
      rows.push({
        test: "  server CPU per command",
        figure: `${cpuOn.toFixed(2)} vs ${cpuOff.toFixed(2)} µs`,
        vs: `${pct(cpuRatio - 1)} CPU`,
        note: "median of the per-pair ratios",
        raw: {},
      });
    }
  } finally {
    await stopServer(server);
  }
}

async function profile() {
  // Where the server's CPU goes with the arbiter on: a CPU profile (node --cpu-prof) of the
  // server during 4 KiB random reads at queue depth 32, one agent, nothing limited. The row is
  // the self time of the arbiter's code (src/arbiter/*, and the server's NexusPort.sent that
  // releases a response's hold) over the server's busy time (every sample but idle). Not
  // counted: garbage collection of what the arbiter allocates (a few small objects per
  // command), which shows under "(garbage collector)" for the whole server.
  const dir = path.join(tmp, "profile-out");
  const server = await startServer(
    "profile",
    config([`{ name: solo, initiators: [${iqn("solo")}] }`], ["solo"]),
    {},
    ["--cpu-prof", `--cpu-prof-dir=${dir}`],
  );
  try {
    log("profile: 4 KiB random reads, QD 32, with --cpu-prof");
    await perf(server, "solo", { depth: 32, blocks: 8, random: true, seconds: 3 * duration });
  } finally {
    await stopServer(server);
  }
  const file = readdirSync(dir).find((f) => f.endsWith(".cpuprofile"));
  if (file === undefined) throw new Error(`no CPU profile in ${dir}`);
  const prof = JSON.parse(readFileSync(path.join(dir, file), "utf8"));
  const nodes = new Map(prof.nodes.map((n) => [n.id, n.callFrame]));
  let busy = 0;
  let arbiter = 0;
  let gc = 0;
  for (let i = 0; i < prof.samples.length; i++) {
    const f = nodes.get(prof.samples[i]);
    const dt = prof.timeDeltas[i] ?? 0;
    if (f.functionName === "(idle)") continue;
    busy += dt;
    if (f.functionName === "(garbage collector)") gc += dt;
    if (
      f.url.includes("/arbiter/") ||
      (f.url.endsWith("control/server.js") && f.functionName === "sent")
    ) {
      arbiter += dt;
    }
  }
  rows.push({
    test: "arbiter's share of server CPU: 4 KiB random reads, QD 32",
    figure: `${((100 * arbiter) / busy).toFixed(2)}%`,
    vs: "of busy CPU time",
    note: `CPU profile, ${(busy / 1e6).toFixed(1)} s busy; GC (whole server) ${((100 * gc) / busy).toFixed(1)}%`,
    raw: { busyUs: busy, arbiterUs: arbiter, gcUs: gc },
  });
}

function printTable() {
  const head = ["test", "measured", "error / cost", "notes"];
  const body = rows.map((r) => [r.test, r.figure, r.vs, r.note]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells) =>
    cells
      .map((c, i) => c.padEnd(widths[i]))
      .join("  ")
      .trimEnd();
  const [l1, l5, l15] = loadavg();
  console.log(
    `sanmux arbitration, iscsi-perf over loopback (${cpus().length} CPUs, load average ${l1.toFixed(2)} ${l5.toFixed(2)} ${l15.toFixed(2)})`,
  );
  console.log(line(head));
  console.log(line(widths.map((w) => "-".repeat(w))));
  for (const b of body) console.log(line(b));
  for (const f of failures) console.log(`FAILED: ${f}`);
}

async function main() {
  for (const [name, fn] of [
    ["rate", rateAccuracy],
    ["fairness", fairness],
    ["writes", writeFairness],
    ["overhead", overhead],
    ["profile", profile],
  ]) {
    if (!tests.has(name)) continue;
    try {
      await fn();
    } catch (error) {
      failures.push(`${name}: ${error.message}`);
      log(error.message);
    }
  }
  printTable();
  if (process.env.BENCH_JSON) writeFileSync(process.env.BENCH_JSON, JSON.stringify(rows, null, 2));
}

async function cleanup() {
  for (const s of [...servers]) await stopServer(s).catch(() => undefined);
  if (process.env.KEEP_TMP === "1") log(`kept ${tmp}`);
  else rmSync(tmp, { recursive: true, force: true });
}

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.once(signal, () => {
    void cleanup().then(() => process.exit(130));
  });
}

main()
  .then(cleanup)
  .then(() => process.exit(failures.length > 0 ? 1 : 0))
  .catch(async (error) => {
    console.error(error);
    await cleanup();
    process.exit(1);
  });
