#!/usr/bin/env node
// Runs libiscsi's conformance suite (iscsi-test-cu) against a real `sanmux serve`:
//   1. the whole suite, data-loss tests allowed (-d), with a second URL for the multipath tests,
//      against a read-write LUN mapped to one agent that owns both of the suite's initiator names;
//   2. the Sanitize suite of each family that has one, SANITIZE allowed (-S), on the same LUN
//      without the second URL (see SANITIZE_FAMILIES); its results replace the skipped Sanitize
//      entries of run 1;
//   3. the ReadOnly suite of each family against a read-only mapping of another volume (its
//      results replace the skipped ReadOnly entries of run 1), and ALL.ReadOnly once more as the
//      read-only run's own summary.
// Prints a summary (tests, passed, failed, skipped — skips counted per test from its [SKIPPED]
// lines), writes the full output and a JSON summary to $SANMUX_TEST_ARTIFACTS (default
// test-artifacts/), and exits 1 if any test failed.
//
// usage: node test/conformance/run.mjs [--block-size 512|4096] [--tests ALL.Suite[.Test]]
// Needs `npm run build` first (it runs dist/cli/main.js) and libiscsi-bin.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const CLI = path.join(ROOT, "dist/cli/main.js");
const TARGET = "iqn.2026-11.io.sanmux:conformance";
const INITIATORS = [
  "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test",
  "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2",
];

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? args[i + 1] : fallback;
};
const blockSize = Number(option("--block-size", "512"));
/** Default: every family (ALL, LINUX, SCSI, iSCSI), as a plain `iscsi-test-cu` run does. */
const tests = option("--tests", "");
const artifacts = path.resolve(
  process.env.SANMUX_TEST_ARTIFACTS ?? path.join(ROOT, "test-artifacts"),
);
/**
 * The families whose Sanitize suite runs on its own (iscsi-test-cu -l: LINUX and iSCSI have
 * none). With a multipath URL, libiscsi 1.19's tests take their second session from it, and
 * that session outlives the test: Sanitize.Reservations leaves its RESERVE(6) in place, and the
 * SANITIZE of Sanitize.Reset, which comes next, is then refused with RESERVATION CONFLICT, as on
 * any target. With one URL the second session is a fresh login (the suite's second initiator
 * name) that logs out at the end of the test, which releases the reservation.
 */
const SANITIZE_FAMILIES = ["ALL", "SCSI"];
/**
 * The families with a ReadOnly suite (iscsi-test-cu -l). Its tests skip on a writable LUN, so in
 * the whole-suite run they are replaced by their runs on the read-only mapping (LUN 1).
 */
const READONLY_FAMILIES = ["ALL", "SCSI", "LINUX"];
/** One run of the suite may take long, but must never hang CI. */
const SUITE_TIMEOUT_MS = Number(process.env.CONFORMANCE_TIMEOUT_S ?? 1800) * 1000;

mkdirSync(artifacts, { recursive: true });
const dataDir = mkdtempSync(path.join(os.tmpdir(), "sanmux-conformance-"));
const configPath = path.join(dataDir, "conformance.yaml");
writeFileSync(
  configPath,
  `# Written by test/conformance/run.mjs
target: ${TARGET}
# ImmediateData=No and InitialR2T=Yes: libiscsi's iSCSIdatasn tests corrupt the DataSN of
# Data-Out PDUs, but after the reconnect their first case forces, libiscsi forgets that it was
# told not to use immediate data, and a 1-block write then has no Data-Out to corrupt; and
# iSCSITMF.AbortTaskSimpleAsync expects exactly one queued PDU per write, so no unsolicited
# Data-Out either. With these two keys every write's data is solicited by an R2T, and both tests
# see what they test. See docs/conformance.md.
iscsi:
  immediate_data: false
  initial_r2t: true
agents:
  - name: conformance
    initiators: [${INITIATORS.join(", ")}]
# cu-rw is 512 MiB so that a SANITIZE OVERWRITE lasts about 8 s at the default pace of 64 MiB/s
# (src/scsi/pacer.ts): Sanitize.Reset sends one, sleeps 3 s, resets, reconnects after another
# second and expects it still in progress. See docs/conformance.md.
volumes:
  - { name: cu-rw, size: 512MiB, block_size: ${blockSize} }
  - { name: cu-ro, size: 16MiB, block_size: ${blockSize} }
mappings:
  - { agent: conformance, lun: 0, volume: cu-rw, mode: rw }
  - { agent: conformance, lun: 1, volume: cu-ro, mode: ro }
`,
);

function log(msg) {
  process.stderr.write(`[conformance] ${msg}\n`);
}

/** Start sanmux on a free loopback port; resolves with the child and its port. */
function startServer() {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [CLI, "serve", "--data", dataDir, "--config", configPath, "--portal", "127.0.0.1:0"],
      {
        stdio: ["ignore", "pipe", "inherit"],
        // Pool volumes are encrypted under a master key: a fresh one for this run's pool.
        env: { ...process.env, SANMUX_MASTER_KEY: randomBytes(32).toString("hex") },
      },
    );
    const serverLog = [];
    let buffered = "";
    child.stdout.on("data", (d) => {
      buffered += d.toString();
      let nl = buffered.indexOf("\n");
      while (nl >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        nl = buffered.indexOf("\n");
        serverLog.push(line);
        if (line.includes('"msg":"listening"')) {
          const portal = JSON.parse(line).portal;
          resolve({ child, port: Number(portal.slice(portal.lastIndexOf(":") + 1)), serverLog });
        }
      }
    });
    child.once("exit", (code) => reject(new Error(`sanmux exited with ${code} before listening`)));
  });
}

/** Run iscsi-test-cu; resolves with its combined output. */
function runSuite(cuArgs) {
  return new Promise((resolve) => {
    const child = spawn("iscsi-test-cu", cuArgs, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d.toString("latin1");
    });
    child.stderr.on("data", (d) => {
      out += d.toString("latin1");
    });
    const timer = setTimeout(() => {
      out += `\n[conformance] iscsi-test-cu did not finish in ${SUITE_TIMEOUT_MS / 1000} s: killed\n`;
      child.kill("SIGKILL");
    }, SUITE_TIMEOUT_MS);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out });
    });
  });
}

/**
 * Run the suite; if the test tool itself crashed (killed by a signal, no "Run Summary"), say so
 * and run it once more. libiscsi 1.19's iscsi-test-cu sometimes dies of heap corruption right
 * after its asynchronous TMF tests, which destroy their own context; that is a client crash, not
 * a target verdict. A second crash is reported as such and the unfinished tests count as failed.
 */
async function runSuiteOnce(cuArgs) {
  const first = await runSuite(cuArgs);
  const crashed = (r) => r.signal !== null || !r.out.includes("Run Summary");
  if (!crashed(first)) return first;
  log(
    `iscsi-test-cu crashed (${first.signal ?? `exit ${first.code}`}); its output is kept, running it again`,
  );
  writeFileSync(path.join(artifacts, `iscsi-test-cu-crash-${Date.now()}.log`), first.out);
  const second = await runSuite(cuArgs);
  if (crashed(second))
    log(`iscsi-test-cu crashed again (${second.signal ?? `exit ${second.code}`})`);
  return second;
}

/**
 * Parse CUnit's verbose output: "Suite: NAME", "  Test: NAME ...passed|FAILED". A test that
 * passed after printing "[SKIPPED]" did not really run: it counts as skipped.
 */
export function parseResults(out) {
  const results = [];
  let suite = "";
  let current;
  for (const line of out.split("\n")) {
    const s = /^Suite: (\S+)/.exec(line);
    if (s) {
      suite = s[1];
      continue;
    }
    const t = /^ {2}Test: (\S+) \.\.\./.exec(line);
    if (t) {
      current = { name: `${suite}.${t[1]}`, status: "running", skipReasons: [] };
      results.push(current);
    }
    if (!current) continue;
    for (const m of line.matchAll(/\[SKIPPED\] ([^[]*)/g)) {
      const reason = m[1].trim();
      if (!current.skipReasons.includes(reason)) current.skipReasons.push(reason);
    }
    if (/(\.\.\.|^)passed\b/.test(line) && current.status === "running") current.status = "passed";
    if (/(\.\.\.|^)FAILED\b/.test(line) || line.trim() === "FAILED") current.status = "failed";
  }
  for (const r of results) {
    if (r.status === "passed" && r.skipReasons.length > 0) r.status = "skipped";
    if (r.status === "running") r.status = "failed"; // never finished (crash or timeout)
  }
  return results;
}

function summarize(label, results) {
  const count = (s) => results.filter((r) => r.status === s).length;
  const summary = {
    label,
    tests: results.length,
    passed: count("passed"),
    failed: count("failed"),
    skipped: count("skipped"),
    failedTests: results.filter((r) => r.status === "failed").map((r) => r.name),
    skippedTests: results
      .filter((r) => r.status === "skipped")
      .map((r) => ({ name: r.name, reasons: r.skipReasons })),
  };
  log(
    `${label}: ${summary.tests} tests, ${summary.passed} passed, ${summary.failed} failed, ${summary.skipped} skipped`,
  );
  for (const f of summary.failedTests) log(`  FAILED ${f}`);
  return summary;
}

async function main() {
  const { child, port, serverLog } = await startServer();
  const url = (lun) => `iscsi://127.0.0.1:${port}/${TARGET}/${lun}`;
  const summaries = [];
  try {
    const label = tests || "every family";
    log(`sanmux on port ${port}, ${blockSize}-byte blocks; running ${label}`);
    let results;
    if (tests) {
      // One family, suite or test, SANITIZE allowed; a Sanitize selection without the second URL.
      const urls = /Sanitize/.test(tests) ? [url(0)] : [url(0), url(0)];
      const run = await runSuiteOnce(["-d", "-S", "-t", tests, ...urls]);
      writeFileSync(path.join(artifacts, `iscsi-test-cu-${blockSize}.log`), run.out);
      results = parseResults(run.out);
    } else {
      const all = await runSuiteOnce(["-d", url(0), url(0)]);
      writeFileSync(path.join(artifacts, `iscsi-test-cu-${blockSize}.log`), all.out);
      // Without -S the Sanitize tests skip here, and the ReadOnly tests skip on a writable LUN;
      // their own runs (below) replace them.
      results = parseResults(all.out).filter(
        (r) => !r.name.startsWith("Sanitize.") && !r.name.startsWith("ReadOnly."),
      );
      for (const family of READONLY_FAMILIES) {
        log(`running ${family}.ReadOnly (read-only mapping)`);
        const run = await runSuiteOnce(["-d", "-t", `${family}.ReadOnly`, url(1)]);
        writeFileSync(
          path.join(artifacts, `iscsi-test-cu-readonly-${family}-${blockSize}.log`),
          run.out,
        );
        results.push(...parseResults(run.out));
      }
      for (const family of SANITIZE_FAMILIES) {
        log(`running ${family}.Sanitize (SANITIZE allowed, one URL)`);
        const run = await runSuiteOnce(["-d", "-S", "-t", `${family}.Sanitize`, url(0)]);
        writeFileSync(
          path.join(artifacts, `iscsi-test-cu-sanitize-${family}-${blockSize}.log`),
          run.out,
        );
        results.push(...parseResults(run.out));
      }
    }
    summaries.push(summarize(`iscsi-test-cu ${label} (rw LUN, ${blockSize}-byte blocks)`, results));
    if (!tests) {
      // The ReadOnly suite needs -d too: it tries the writes that must fail.
      const ro = await runSuiteOnce(["-d", "-t", "ALL.ReadOnly", url(1)]);
      writeFileSync(path.join(artifacts, `iscsi-test-cu-readonly-${blockSize}.log`), ro.out);
      summaries.push(
        summarize(
          `iscsi-test-cu ALL.ReadOnly (ro LUN, ${blockSize}-byte blocks)`,
          parseResults(ro.out),
        ),
      );
    }
  } finally {
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
    writeFileSync(
      path.join(artifacts, `sanmux-conformance-${blockSize}.log`),
      `${serverLog.join("\n")}\n`,
    );
    rmSync(dataDir, { recursive: true, force: true });
  }
  writeFileSync(
    path.join(artifacts, `conformance-${blockSize}.json`),
    `${JSON.stringify(summaries, null, 2)}\n`,
  );
  const failed = summaries.reduce((n, s) => n + s.failed + (s.tests === 0 ? 1 : 0), 0);
  process.exit(failed > 0 ? 1 : 0);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    log(err.stack ?? String(err));
    process.exit(2);
  });
}
