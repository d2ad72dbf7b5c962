#!/usr/bin/env node
/**
 * Crash harness: real initiators write while `sanmux serve` is killed with SIGKILL at random
 * moments; after each restart every grain of every volume is read back and checked against what
 * the initiators were told (DESIGN.md "Durability").
 *
 * One iteration, on one data directory that lives across iterations:
 *   1. the server (started by the previous iteration, or the first start) serves N volumes;
 *   2. W writer processes (test/tools/crash-writer.c, libiscsi, 16 commands in flight each)
 *      write self-describing 4 KiB grains to disjoint regions of the volumes, with SYNCHRONIZE
 *      CACHE at known points and some FUA writes, and log every issue, acknowledgement and sync;
 *   3. after a random delay (seeded PRNG), and once a writer's first SYNCHRONIZE CACHE has
 *      completed, the server gets SIGKILL; the writers see the connection drop and exit;
 *   4. sometimes the restarted server is killed again during its start (recovery), then
 *   5. the server is restarted (it must start), each volume is read whole, and every grain is
 *      checked:
 *      - it is all zeros, or a valid pattern (magic, CRC-32) for THAT lba by the writer that owns
 *        it: anything else is torn or garbage;
 *      - its version is the one it held after the previous restart (the baseline) or one that was
 *        issued to it in this iteration: anything else is a phantom (or a rollback);
 *      - its version is at least the newest one acknowledged before a SYNCHRONIZE CACHE that
 *        returned GOOD was issued, and at least that of any FUA write to it that returned GOOD:
 *        else a synced write was lost (zeros included).
 *      What was read becomes the baseline of the next iteration. A volume that cannot be read
 *      is a violation; its grains are checked at the next read that succeeds, against all that
 *      was issued and synced since the last one.
 *
 * Only durability and integrity break the promise, so only those count as violations; a server
 * that exits by itself or refuses to restart is one too. A write or sync that returns a SCSI
 * error is counted apart (commandErrors), and the callers fail on it as well.
 *
 * Use: `import { runCrash } from "./harness.mjs"` (types in harness.d.mts), or run it:
 *   node test/crash/harness.mjs [--iterations N] [--seed S] [--backend pool|file] [--keep] ...
 * (bench/crash-loop does that; `--help` lists the options). Exit 0 when no violation and no
 * command error happened, 1 otherwise, 2 on bad usage.
 */
import { execFile, spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { crc32 } from "@node-rs/crc32";

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const WRITER_SOURCE = path.join(ROOT, "test/tools/crash-writer.c");
export const DEFAULT_CLI = path.join(ROOT, "dist/cli/main.js");

const GRAIN = 4096;
const MAGIC = Buffer.from("SMXGRAIN");
const ZERO_GRAIN = Buffer.alloc(GRAIN);
const TARGET = "iqn.2026-11.io.sanmux:crash";
const INITIATOR = "iqn.2026-11.io.sanmux:crash";
/** Versions of iteration i are i * 2^32 + 1, + 2, ...: they grow across iterations. */
const VERSION_STRIDE = 2 ** 32;
/** A grain whose content could not be recognised: it matches no version. */
const UNKNOWN = -1;
/** Log lines that speak of recovering from a crash, whenever the server logs them. */
const RECOVERY_WORDS = /recover|replay|journal|crash|interrupt|torn|repair|rebuil|unclean|dirty/i;

const DEFAULTS = Object.freeze({
  iterations: 10,
  volumes: 2,
  volumeMiB: 32,
  writersPerVolume: 2,
  depth: 16,
  minDelayMs: 200,
  maxDelayMs: 2000,
  restartKillChance: 0.1,
  maxDetails: 20,
});

/** mulberry32: a small seeded PRNG, so that a run's kill points can be named by its seed. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** `promise`, or after `ms` the result of `onTimeout()`; the timer never outlives the race. */
async function within(promise, ms, onTimeout) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve(onTimeout()), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Compile test/tools/crash-writer.c against libiscsi into `dir`. */
export async function buildWriter(dir) {
  const bin = path.join(dir, "crash-writer");
  await run("gcc", ["-O2", "-Wall", "-o", bin, WRITER_SOURCE, "-liscsi"]);
  return bin;
}

function configYaml(volumes, volumeMiB, initiators, backend) {
  const backendField = backend === undefined ? "" : `, backend: ${backend}`;
  const lines = [
    `target: ${TARGET}`,
    "agents:",
    "  - name: crash",
    `    initiators: [${initiators.join(", ")}]`,
    "volumes:",
  ];
  for (let v = 0; v < volumes; v++) {
    lines.push(`  - { name: crash-${v}, size: ${volumeMiB}MiB, block_size: 512${backendField} }`);
  }
  lines.push("mappings:");
  for (let v = 0; v < volumes; v++) {
    lines.push(`  - { agent: crash, lun: ${v}, volume: crash-${v}, mode: rw }`);
  }
  return `${lines.join("\n")}\n`;
}

/**
 * Start `sanmux serve` on the data directory. Resolves once it logs "listening" (with its port),
 * or with `{ failed }` when it exits first or does not listen within `timeoutMs`.
 */
function startServer({ cli, dataDir, configPath, masterKey, logPath, timeoutMs = 60_000 }) {
  const started = Date.now();
  const child = spawn(
    process.execPath,
    [cli, "serve", "--data", dataDir, "--config", configPath, "--portal", "127.0.0.1:0"],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, SANMUX_MASTER_KEY: masterKey } },
  );
  const log = createWriteStream(logPath, { flags: "a" });
  const logs = [];
  let stderr = "";
  let buffered = "";
  const exited = new Promise((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
  });
  const server = { child, logs, exited, port: 0, startMs: 0, stderr: () => stderr };
  child.stderr.on("data", (d) => {
    stderr += d.toString();
    log.write(d);
  });
  const listening = new Promise((resolve) => {
    child.stdout.on("data", (d) => {
      log.write(d);
      buffered += d.toString();
      let nl = buffered.indexOf("\n");
      while (nl >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        nl = buffered.indexOf("\n");
        let entry;
        try {
          entry = JSON.parse(line);
        } catch {
          continue; // not a JSON log line
        }
        logs.push(entry);
        if (entry.msg === "listening") {
          const portal = String(entry.portal);
          server.port = Number(portal.slice(portal.lastIndexOf(":") + 1));
          server.startMs = Date.now() - started;
          resolve(undefined);
        }
      }
    });
  });
  exited.then(() => log.end());
  return within(
    Promise.race([
      listening.then(() => ({ server })),
      exited.then(({ code, signal }) => ({
        server,
        failed: `exited (code ${code}, signal ${signal}) before listening: ${stderr.trim() || "(no stderr)"}`,
      })),
    ]),
    timeoutMs,
    () => {
      child.kill("SIGKILL");
      return { server, timedOut: true, failed: `did not listen within ${timeoutMs} ms: ${stderr}` };
    },
  );
}

async function killServer(server) {
  if (server.child.exitCode === null && server.child.signalCode === null) {
    server.child.kill("SIGKILL");
  }
  return server.exited;
}

/**
 * What a restarted server said about the state it found: every line it logged before
 * "listening" (the pool's "pool open" with its journal and container counts, say), and any
 * later warning or line that speaks of recovery. pino's bookkeeping fields are left out.
 */
function recoveryLines(server) {
  const listening = server.logs.findIndex((e) => e.msg === "listening");
  return server.logs
    .filter(
      (e, i) =>
        i < listening ||
        (i > listening &&
          ((typeof e.level === "number" && e.level >= 40) || RECOVERY_WORDS.test(String(e.msg)))),
    )
    .map(({ level, time, pid, hostname, name, msg, ...rest }) =>
      JSON.stringify({
        msg,
        ...(typeof level === "number" && level >= 40 ? { level } : {}),
        ...rest,
      }),
    );
}

/**
 * One writer process and the running account of what it was told. Grains are numbered across
 * all volumes: volume v's grain k is v * grainsPerVolume + k.
 */
function startWriter({ bin, url, id, firstGrain, grains, volumeGrainBase, base, seed, depth }) {
  const w = {
    id,
    firstGrain,
    grains,
    issued: new Map(), // grain -> versions issued in this iteration
    ackGrain: [],
    ackVersion: [],
    fua: new Map(), // grain -> newest version acknowledged with FUA
    syncAt: new Map(), // sync number -> acknowledgements it covers (a prefix of ackGrain)
    covered: 0,
    issuedCommands: new Set(),
    writesIssued: 0,
    writesAcked: 0,
    fuaAcked: 0,
    syncsIssued: 0,
    syncs: 0,
    errors: [],
    protocol: [],
    stderr: "",
    blocksPerGrain: 0,
  };
  const firstLba = (firstGrain - volumeGrainBase) * 8;
  const child = spawn(
    bin,
    [
      "write",
      "-i",
      `${INITIATOR}-w${id}`,
      "-w",
      String(id),
      "-b",
      String(base),
      "-s",
      String(seed),
      "-q",
      String(depth),
      "-t",
      "60",
      url,
      String(firstLba),
      String(grains * 8),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  w.child = child;
  let readyResolve;
  w.ready = new Promise((resolve) => {
    readyResolve = resolve;
  });
  w.exited = new Promise((resolve) => {
    child.once("exit", (code, signal) => {
      readyResolve(false);
      resolve({ code, signal });
    });
  });
  const grainOf = (lba) => {
    const g = lba / w.blocksPerGrain;
    const k = g - firstLba / w.blocksPerGrain;
    if (!Number.isInteger(g) || k < 0 || k >= grains) {
      w.protocol.push(`writer ${id}: LBA ${lba} outside its region`);
      return -1;
    }
    return firstGrain + k;
  };
  const onLine = (line) => {
    const f = line.split(" ");
    switch (f[0]) {
      case "R":
        w.blocksPerGrain = GRAIN / Number(f[1]);
        readyResolve(true);
        break;
      case "I": {
        const g = grainOf(Number(f[1]));
        const v = Number(f[2]);
        let list = w.issued.get(g);
        if (list === undefined) {
          list = [];
          w.issued.set(g, list);
        }
        list.push(v);
        if (!w.issuedCommands.has(v)) {
          w.issuedCommands.add(v);
          w.writesIssued++;
        }
        break;
      }
      case "A":
      case "F": {
        const g = grainOf(Number(f[1]));
        const v = Number(f[2]);
        w.ackGrain.push(g);
        w.ackVersion.push(v);
        if (w.issuedCommands.delete(v)) {
          w.writesAcked++;
          if (f[0] === "F") w.fuaAcked++;
        }
        if (f[0] === "F") w.fua.set(g, Math.max(w.fua.get(g) ?? 0, v));
        break;
      }
      case "Y":
        w.syncAt.set(Number(f[1]), w.ackGrain.length);
        w.syncsIssued++;
        break;
      case "S":
        w.covered = Math.max(w.covered, w.syncAt.get(Number(f[1])) ?? 0);
        w.syncs++;
        break;
      case "E":
        w.errors.push(
          `writer ${id}: write of LBA ${f[1]} version ${f[2]}: status 0x${f[3]} sense key 0x${f[4]} ASC/ASCQ 0x${f[5]}`,
        );
        break;
      case "X":
        w.errors.push(
          `writer ${id}: SYNCHRONIZE CACHE ${f[1]}: status 0x${f[2]} sense key 0x${f[3]} ASC/ASCQ 0x${f[4]}`,
        );
        break;
      case "D":
        break;
      default:
        w.protocol.push(`writer ${id}: unexpected line ${JSON.stringify(line)}`);
    }
  };
  let buffered = "";
  child.stdout.on("data", (d) => {
    buffered += d.toString("latin1");
    let start = 0;
    let nl = buffered.indexOf("\n", start);
    while (nl >= 0) {
      onLine(buffered.slice(start, nl));
      start = nl + 1;
      nl = buffered.indexOf("\n", start);
    }
    buffered = buffered.slice(start);
  });
  child.stderr.on("data", (d) => {
    w.stderr += d.toString();
  });
  return w;
}

/** grain -> the version the server promised to keep (synced or FUA), for one writer. */
function floorsOf(w, into) {
  for (let j = 0; j < w.covered; j++) {
    const g = w.ackGrain[j];
    const v = w.ackVersion[j];
    if (v > (into.get(g) ?? 0)) into.set(g, v);
  }
  for (const [g, v] of w.fua) if (v > (into.get(g) ?? 0)) into.set(g, v);
}

/**
 * Decode one grain read back: `{ version }` (0 for all zeros), or `{ garbage }` with why.
 */
function decodeGrain(buf, at, lba, writerId) {
  const grain = buf.subarray(at, at + GRAIN);
  if (grain.equals(ZERO_GRAIN)) return { version: 0 };
  if (!grain.subarray(0, 8).equals(MAGIC)) {
    return { garbage: `no pattern header (first bytes ${grain.subarray(0, 32).toString("hex")})` };
  }
  const stored = grain.readUInt32BE(GRAIN - 4);
  const computed = crc32(grain.subarray(0, GRAIN - 4));
  const foundLba = Number(grain.readBigUInt64BE(8));
  const version = Number(grain.readBigUInt64BE(16));
  const writer = grain.readUInt32BE(24);
  if (stored !== computed) {
    return {
      garbage: `torn: header says LBA ${foundLba} version ${version} writer ${writer}, CRC-32 stored ${stored.toString(16)} computed ${computed.toString(16)}`,
    };
  }
  if (foundLba !== lba) {
    return { garbage: `misplaced: holds the grain of LBA ${foundLba} (version ${version})` };
  }
  if (writer !== writerId) {
    return { garbage: `foreign: written by writer ${writer}, this region is writer ${writerId}'s` };
  }
  return { version };
}

function describeVersion(v) {
  if (v === 0) return "zeros";
  if (v === UNKNOWN) return "unrecognised content";
  const iteration = Math.floor(v / VERSION_STRIDE);
  return `version ${v} (iteration ${iteration}, #${v - iteration * VERSION_STRIDE})`;
}

/**
 * Run crash iterations. See harness.d.mts for the options and the report.
 */
export async function runCrash(options = {}) {
  const o = { ...DEFAULTS, ...options };
  const seed = o.seed ?? randomInt(1, 2 ** 31);
  const say = o.log ?? (() => {});
  const random = prng(seed);
  const cli = o.cli ?? process.env.SANMUX_CLI ?? DEFAULT_CLI;
  const masterKey = o.masterKey ?? randomBytes(32).toString("hex");
  const work = o.workDir ?? (await mkdtemp(path.join(os.tmpdir(), "sanmux-crash-")));
  const dataDir = path.join(work, "data");
  await mkdir(dataDir, { recursive: true });
  const bin = o.writerBin ?? (await buildWriter(work));
  const grainsPerVolume = (o.volumeMiB * 1024 * 1024) / GRAIN;
  const writerCount = o.volumes * o.writersPerVolume;
  const initiators = [`${INITIATOR}-reader`];
  for (let i = 0; i < writerCount; i++) initiators.push(`${INITIATOR}-w${i}`);
  const configPath = path.join(work, "sanmux.yaml");
  await writeFile(configPath, configYaml(o.volumes, o.volumeMiB, initiators, o.backend));

  const report = {
    seed,
    backend: o.backend ?? "default",
    workDir: work,
    iterations: 0,
    killPoints: 0,
    writesIssued: 0,
    writesAcked: 0,
    fuaAcked: 0,
    syncs: 0,
    grainsChecked: 0,
    violations: 0,
    violationsByKind: {},
    details: [],
    commandErrors: [],
    perIteration: [],
    finalStopCode: null,
  };
  const violation = (v) => {
    report.violations++;
    report.violationsByKind[v.kind] = (report.violationsByKind[v.kind] ?? 0) + 1;
    if (report.details.length < o.maxDetails) {
      report.details.push({ seed, ...v });
      say(`VIOLATION ${JSON.stringify({ seed, ...v })}`);
    }
  };
  say(
    `crash: seed ${seed}, ${o.iterations} iteration(s), ${o.volumes} volume(s) of ${o.volumeMiB} MiB, ${writerCount} writer(s), backend ${report.backend}, in ${work}`,
  );

  // The content each grain held after the last restart (0 = zeros): the start of an iteration.
  const baseline = new Float64Array(o.volumes * grainsPerVolume);
  // When a volume could not be read after a restart, what its grains may hold and must keep
  // carries over to the next read: the versions issued meanwhile, and the synced floors.
  const unverified = new Map(); // grain -> versions issued since the last read of it
  const unverifiedFloor = new Map(); // grain -> newest synced version since then
  let starts = 0;
  const start = async (label) => {
    starts++;
    const r = await startServer({
      cli,
      dataDir,
      configPath,
      masterKey,
      logPath: path.join(work, `server-${String(starts).padStart(4, "0")}.log`),
    });
    if (r.failed) {
      violation({
        iteration: report.iterations,
        kind: "no-restart",
        message: `${label}: ${r.failed}`,
      });
      return undefined;
    }
    return r.server;
  };
  const urlOf = (server, lun) => `iscsi://127.0.0.1:${server.port}/${TARGET}/${lun}`;
  const per = Math.floor(grainsPerVolume / o.writersPerVolume);
  /** The writer whose region holds grain g (the last one of a volume takes the remainder). */
  const ownerOf = (g) => {
    const v = Math.floor(g / grainsPerVolume);
    const k = g - v * grainsPerVolume;
    return v * o.writersPerVolume + Math.min(Math.floor(k / per), o.writersPerVolume - 1);
  };

  /** Remember what volume v's grains may hold and must keep until it can be read again. */
  const carryOver = (v, issued, floors) => {
    for (let g = v * grainsPerVolume; g < (v + 1) * grainsPerVolume; g++) {
      const writes = issued.get(g);
      if (writes !== undefined) unverified.set(g, [...(unverified.get(g) ?? []), ...writes]);
      const floor = floors.get(g);
      if (floor !== undefined && floor > (unverifiedFloor.get(g) ?? 0)) {
        unverifiedFloor.set(g, floor);
      }
    }
  };

  /** Read every volume and check every grain; update the baseline. */
  const verify = async (server, iteration, issued, floors, acked) => {
    let changed = 0;
    let lostUnsynced = 0;
    for (let v = 0; v < o.volumes; v++) {
      const out = path.join(work, `volume-${v}.raw`);
      const r = await run(bin, ["read", "-i", `${INITIATOR}-reader`, urlOf(server, v), out], {
        maxBuffer: 1 << 20,
      }).catch((e) => e);
      const data = r instanceof Error ? undefined : await readFile(out);
      if (data === undefined || data.length !== grainsPerVolume * GRAIN) {
        violation({
          iteration,
          kind: "unreadable",
          volume: v,
          message: data === undefined ? r.stderr || r.message : `read ${data.length} bytes`,
        });
        carryOver(v, issued, floors);
        continue;
      }
      for (let k = 0; k < grainsPerVolume; k++) {
        const g = v * grainsPerVolume + k;
        const lba = k * 8;
        const was = baseline[g];
        const earlier = unverified.get(g);
        const writes =
          earlier === undefined ? issued.get(g) : [...earlier, ...(issued.get(g) ?? [])];
        const floor = Math.max(floors.get(g) ?? 0, unverifiedFloor.get(g) ?? 0) || undefined;
        unverified.delete(g);
        unverifiedFloor.delete(g);
        const got = decodeGrain(data, k * GRAIN, lba, ownerOf(g));
        report.grainsChecked++;
        const where = { iteration, volume: v, grain: k, lba };
        if (got.garbage !== undefined) {
          violation({ ...where, kind: "torn-or-garbage", message: got.garbage });
          baseline[g] = UNKNOWN;
          continue;
        }
        const found = got.version;
        const known = found === was || (writes?.includes(found) ?? false);
        const choices = `${describeVersion(was)} or one of ${writes?.length ?? 0} version(s) issued in this iteration`;
        if (floor !== undefined && found < floor) {
          violation({
            ...where,
            kind: "lost-synced-write",
            expected: `at least ${describeVersion(floor)} (synced or FUA, acknowledged GOOD)`,
            found: `${describeVersion(found)}${known ? "" : `, which is not even ${choices}`}`,
          });
        } else if (!known) {
          violation({
            ...where,
            kind: found === 0 ? "reverted-to-zeros" : "phantom-version",
            expected: choices,
            found: describeVersion(found),
          });
        }
        if (found !== was) changed++;
        const newestAck = acked.get(g);
        if (newestAck !== undefined && found < newestAck) lostUnsynced++;
        baseline[g] = found;
      }
    }
    return { changed, lostUnsynced };
  };

  let server = await start("first start");
  let lastStartMs = server?.startMs ?? 1000;
  if (server !== undefined) {
    // A fresh pool reads as zeros everywhere.
    await verify(server, 0, new Map(), new Map(), new Map());
  }

  for (let iteration = 1; iteration <= o.iterations && server !== undefined; iteration++) {
    const t0 = Date.now();
    const violationsBefore = report.violations;
    const writers = [];
    for (let id = 0; id < writerCount; id++) {
      const v = Math.floor(id / o.writersPerVolume);
      const slot = id % o.writersPerVolume;
      const grains = slot === o.writersPerVolume - 1 ? grainsPerVolume - slot * per : per;
      writers.push(
        startWriter({
          bin,
          url: urlOf(server, v),
          id,
          firstGrain: v * grainsPerVolume + slot * per,
          grains,
          volumeGrainBase: v * grainsPerVolume,
          base: iteration * VERSION_STRIDE,
          seed: (seed * 1000 + iteration) >>> 0,
          depth: o.depth,
        }),
      );
    }
    const ready = await Promise.all(writers.map((w) => within(w.ready, 15_000, () => false)));
    const delay = Math.round(o.minDelayMs + random() * (o.maxDelayMs - o.minDelayMs));
    const restartKill = random() < o.restartKillChance;
    // Somewhere in the restart: from spawning node to a little past when it listened last time.
    const restartKillMs = Math.round(random() * (lastStartMs * 1.2 + 50));
    await sleep(delay);
    // A kill before any SYNCHRONIZE CACHE completed checks no synced write: wait for the first
    // one (at most 3 s more). A 218 ms delay once came before it.
    const waitFrom = Date.now();
    while (writers.every((w) => w.syncs === 0) && Date.now() - waitFrom < 3000) await sleep(5);
    const killAfterMs = delay + (Date.now() - waitFrom);
    if (server.child.exitCode !== null || server.child.signalCode !== null) {
      violation({
        iteration,
        kind: "server-died",
        message: `the server exited by itself: ${server.child.exitCode ?? server.child.signalCode}: ${server.stderr().trim()}`,
      });
    }
    await killServer(server);
    report.killPoints++;
    const exits = await Promise.all(
      writers.map(async (w) =>
        within(w.exited, 15_000, () => {
          w.child.kill("SIGKILL");
          return w.exited;
        }),
      ),
    );
    const stats = {
      iteration,
      killAfterMs,
      writersReady: ready.filter((r) => r === true).length,
      writerExits: exits.map((e) => e.code ?? e.signal),
      writesIssued: 0,
      writesAcked: 0,
      fuaAcked: 0,
      syncs: 0,
      inFlightAtKill: 0,
      restartKilledAfterMs: restartKill ? restartKillMs : undefined,
      restartKillListened: undefined,
      restartMs: 0,
      recovery: [],
      grainsChanged: 0,
      ackedButLost: 0,
      violations: 0,
      ms: 0,
    };
    const issued = new Map();
    const floors = new Map();
    const acked = new Map();
    for (const w of writers) {
      for (const [g, list] of w.issued) issued.set(g, list);
      floorsOf(w, floors);
      for (let j = 0; j < w.ackGrain.length; j++) {
        const g = w.ackGrain[j];
        if (w.ackVersion[j] > (acked.get(g) ?? 0)) acked.set(g, w.ackVersion[j]);
      }
      stats.writesIssued += w.writesIssued;
      stats.writesAcked += w.writesAcked;
      stats.fuaAcked += w.fuaAcked;
      stats.syncs += w.syncs;
      stats.inFlightAtKill += w.issuedCommands.size;
      for (const e of w.errors) {
        if (report.commandErrors.length < o.maxDetails) report.commandErrors.push(e);
      }
      for (const p of w.protocol) violation({ iteration, kind: "harness", message: p });
      if (!ready[w.id]) {
        say(`iteration ${iteration}: writer ${w.id} never logged in: ${w.stderr.trim()}`);
      }
    }
    report.writesIssued += stats.writesIssued;
    report.writesAcked += stats.writesAcked;
    report.fuaAcked += stats.fuaAcked;
    report.syncs += stats.syncs;

    if (o.afterKill !== undefined) await o.afterKill({ iteration, dataDir });
    if (restartKill) {
      const r = await startServer({
        cli,
        dataDir,
        configPath,
        masterKey,
        logPath: path.join(work, `server-${String(++starts).padStart(4, "0")}.log`),
        timeoutMs: restartKillMs,
      });
      await killServer(r.server);
      report.killPoints++;
      stats.restartKillListened = r.failed === undefined;
    }
    server = await start(`restart after iteration ${iteration}`);
    if (server !== undefined) {
      stats.restartMs = server.startMs;
      lastStartMs = server.startMs;
      stats.recovery = recoveryLines(server);
      const v = await verify(server, iteration, issued, floors, acked);
      stats.grainsChanged = v.changed;
      stats.ackedButLost = v.lostUnsynced;
    }
    stats.violations = report.violations - violationsBefore;
    stats.ms = Date.now() - t0;
    report.perIteration.push(stats);
    report.iterations = iteration;
    say(
      `iteration ${iteration}: killed after ${killAfterMs} ms${restartKill ? ` and ${restartKillMs} ms into the restart` : ""}; ${stats.writesAcked}/${stats.writesIssued} writes acked (${stats.fuaAcked} FUA), ${stats.syncs} syncs, ${stats.inFlightAtKill} in flight, ${stats.ackedButLost} unsynced grains lost; restart ${stats.restartMs} ms; ${stats.violations} violation(s)${stats.recovery.length > 0 ? `; recovery: ${stats.recovery.slice(0, 3).join(" | ")}` : ""}`,
    );
  }

  if (server !== undefined) {
    server.child.kill("SIGTERM");
    const exit = await within(server.exited, 20_000, () => undefined);
    if (exit === undefined) await killServer(server);
    report.finalStopCode = exit?.code ?? null;
  }
  if (o.keep !== true && report.violations === 0 && o.workDir === undefined) {
    await rm(work, { recursive: true, force: true });
  }
  return report;
}

/** One-paragraph summary of a report, as the CLI prints it. */
export function summarize(report) {
  const lines = [
    `seed ${report.seed}, backend ${report.backend}`,
    `iterations ${report.iterations}, kill points ${report.killPoints}`,
    `writes acked ${report.writesAcked} of ${report.writesIssued} issued (${report.fuaAcked} FUA), syncs ${report.syncs}`,
    `grains checked ${report.grainsChecked}`,
    `command errors ${report.commandErrors.length}`,
    `violations ${report.violations}${report.violations > 0 ? ` ${JSON.stringify(report.violationsByKind)}` : ""}`,
  ];
  for (const d of report.details.slice(0, 5)) lines.push(`  ${JSON.stringify(d)}`);
  for (const e of report.commandErrors.slice(0, 5)) lines.push(`  ${e}`);
  if (report.violations > 0) lines.push(`data directory and server logs kept in ${report.workDir}`);
  return lines.join("\n");
}

const USAGE = `usage: node test/crash/harness.mjs [options]
  --iterations N       kill points to run (default ${DEFAULTS.iterations})
  --seed S             PRNG seed (kill delays, writer choices); printed when not given
  --backend B          pool or file (default: the config default, which is pool)
  --volumes N          volumes (default ${DEFAULTS.volumes})
  --volume-mib N       size of each volume in MiB (default ${DEFAULTS.volumeMiB})
  --writers N          writer processes per volume (default ${DEFAULTS.writersPerVolume})
  --depth N            commands in flight per writer (default ${DEFAULTS.depth})
  --min-delay MS       earliest kill after the writers logged in (default ${DEFAULTS.minDelayMs})
  --max-delay MS       latest kill (default ${DEFAULTS.maxDelayMs})
  --restart-kill P     chance of a second kill during the restart (default ${DEFAULTS.restartKillChance})
  --keep               keep the work directory (always kept when there are violations)
  --json FILE          write the whole report as JSON
  --quiet              no line per iteration
env SANMUX_CLI: the sanmux entry point (default dist/cli/main.js)`;

async function main(argv) {
  const numbers = {
    "--iterations": "iterations",
    "--seed": "seed",
    "--volumes": "volumes",
    "--volume-mib": "volumeMiB",
    "--writers": "writersPerVolume",
    "--depth": "depth",
    "--min-delay": "minDelayMs",
    "--max-delay": "maxDelayMs",
    "--restart-kill": "restartKillChance",
  };
  const options = { log: (line) => process.stderr.write(`${line}\n`) };
  let json;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [flag, inline] = arg.includes("=") ? arg.split(/=(.*)/s, 2) : [arg, undefined];
    const value = () => inline ?? argv[++i];
    if (flag in numbers) {
      const n = Number(value());
      if (!Number.isFinite(n) || n < 0) {
        process.stderr.write(`bad value for ${flag}\n${USAGE}\n`);
        return 2;
      }
      options[numbers[flag]] = n;
    } else if (flag === "--backend") {
      const b = value();
      if (b !== "pool" && b !== "file") {
        process.stderr.write(`--backend is pool or file\n${USAGE}\n`);
        return 2;
      }
      options.backend = b;
    } else if (flag === "--keep") {
      options.keep = true;
    } else if (flag === "--json") {
      json = value();
    } else if (flag === "--quiet") {
      options.log = () => {};
    } else if (flag === "--help" || flag === "-h") {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    } else {
      process.stderr.write(`unknown option ${arg}\n${USAGE}\n`);
      return 2;
    }
  }
  if (options.seed === undefined) {
    options.seed = randomInt(1, 2 ** 31);
  }
  process.stderr.write(`crash: seed ${options.seed} (rerun with --seed ${options.seed})\n`);
  const report = await runCrash(options);
  if (json !== undefined) await writeFile(json, `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(`${summarize(report)}\n`);
  return report.violations === 0 && report.commandErrors.length === 0 ? 0 : 1;
}

if (
  process.argv[1] !== undefined &&
  path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)
) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error) => {
      process.stderr.write(`crash harness failed: ${error?.stack ?? error}\n`);
      process.exitCode = 1;
    },
  );
}
