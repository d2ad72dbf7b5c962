#!/usr/bin/env node
// Throughput of a pool volume (src/pool) end to end on this machine: unique writes (fingerprint,
// compress, seal, append, group-commit fdatasync, map update), the same data written to a second
// volume (dedup: fingerprint + lookup + map update only), sequential reads (coalesced preads +
// GCM + zstd) and 4 KiB random reads. Prints MiB/s, metadata bytes per unique grain and peak RSS.
// A measurement, not a test: it exits 0.
//
//   npm run build && node bench/pool-volume.mjs
//
// Environment:
//   BENCH_MIB      MiB written per volume (default 256)
//   BENCH_IO_KIB   write and sequential read size in KiB (default 128)
//   BENCH_DEPTH    operations in flight (default 16)
//   BENCH_RANDOM   4 KiB random reads (default 32768)
//   BENCH_READ_ROUNDS  rounds of the two read phases (default 1; CPU per grain: take the lowest)
//   BENCH_WORKERS  worker threads for fingerprints and record opening (default: the pool's)
//   BENCH_TMPDIR   where the pool goes (default $TMPDIR or /tmp); removed afterwards
//   SANMUX_DIST    the compiled sources (default ./dist next to bench/)

import { randomBytes, randomFillSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const MiB = 1024 * 1024;
const envInt = (name, fallback) => {
  const v = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer`);
  return v;
};
const totalMiB = envInt("BENCH_MIB", 256);
const ioBytes = envInt("BENCH_IO_KIB", 128) * 1024;
const depth = envInt("BENCH_DEPTH", 16);
const randomReads = envInt("BENCH_RANDOM", 32768);
const readRounds = envInt("BENCH_READ_ROUNDS", 1);
const dist = process.env.SANMUX_DIST ?? new URL("../dist/", import.meta.url).pathname;
const load = (p) => import(pathToFileURL(join(dist, p)).href);

const { Pool } = await load("pool/pool.js");
const { masterKeyFromBytes } = await load("crypto/index.js");

const total = totalMiB * MiB;
const ios = Math.floor(total / ioBytes);
const data = Buffer.allocUnsafe(ios * ioBytes);
for (let at = 0; at < data.length; at += 64 * MiB) {
  randomFillSync(data, at, Math.min(64 * MiB, data.length - at));
}

const dir = await mkdtemp(join(process.env.BENCH_TMPDIR ?? tmpdir(), "sanmux-bench-pool-"));
const workers =
  process.env.BENCH_WORKERS === undefined ? undefined : Number(process.env.BENCH_WORKERS);
const pool = await Pool.open({ dir, masterKey: masterKeyFromBytes(randomBytes(32)), workers });
const size = Math.max(ios * ioBytes, 64 * MiB);
const a = await pool.ensureVolume({ name: "a", size, blockSize: 4096 });
const b = await pool.ensureVolume({ name: "b", size, blockSize: 4096 });

async function inFlight(n, limit, fn) {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, n) }, async () => {
    while (next < n) await fn(next++);
  });
  await Promise.all(lanes);
}

/** CPU seconds of the main thread (Linux: /proc/self/task/<pid>/stat utime + stime). */
function mainThreadCpu() {
  try {
    const f = readFileSync(`/proc/self/task/${process.pid}/stat`, "utf8");
    const fields = f.slice(f.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // clock ticks of 10 ms
  } catch {
    return Number.NaN;
  }
}

const rows = [];
async function phase(name, bytes, fn) {
  const cpu0 = process.cpuUsage();
  const main0 = mainThreadCpu();
  const t0 = process.hrtime.bigint();
  await fn();
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const all = (cpu.user + cpu.system) / 1e6;
  const main = mainThreadCpu() - main0;
  const grains = bytes / 4096;
  // What an otherwise idle machine could do: bounded by the main thread, and by all threads
  // sharing the CPUs.
  const bound = Math.max(main, all / cpus().length);
  rows.push({
    phase: name,
    "MiB/s": (bytes / MiB / s).toFixed(0),
    seconds: s.toFixed(2),
    "cpu µs/grain": ((all * 1e6) / grains).toFixed(1),
    "main µs/grain": ((main * 1e6) / grains).toFixed(1),
    "idle-CPU bound MiB/s": (bytes / MiB / bound).toFixed(0),
  });
}

const blocksPerIo = ioBytes / 4096;
const writeAll = (v) =>
  inFlight(ios, depth, (i) =>
    v.write(i * blocksPerIo, data.subarray(i * ioBytes, (i + 1) * ioBytes)),
  ).then(() => v.flush());

async function metaSize() {
  let size = 0;
  for (const name of await readdir(join(dir, "meta")))
    size += (await stat(join(dir, "meta", name))).size;
  return size;
}

await phase(`unique write ${ioBytes / 1024} KiB QD${depth}`, ios * ioBytes, () => writeAll(a));
await pool.applyJournal();
const metaAfterUnique = await metaSize();
await phase(`duplicate write ${ioBytes / 1024} KiB QD${depth}`, ios * ioBytes, () => writeAll(b));
await pool.applyJournal();

let mismatches = 0;
const grains = (ios * ioBytes) / 4096;
for (let round = 0; round < readRounds; round++) {
  await phase(`sequential read ${ioBytes / 1024} KiB QD${depth}`, ios * ioBytes, () =>
    inFlight(ios, depth, async (i) => {
      const got = await a.read(i * blocksPerIo, blocksPerIo);
      if (i % 97 === 0 && !got.equals(data.subarray(i * ioBytes, (i + 1) * ioBytes))) {
        mismatches++;
      }
    }),
  );
  await phase(`random read 4 KiB QD${depth}`, randomReads * 4096, () =>
    inFlight(randomReads, depth, async () => {
      const g = Math.floor(Math.random() * grains);
      const got = await (g % 2 ? a : b).read(g, 1);
      if (!got.equals(data.subarray(g * 4096, (g + 1) * 4096))) mismatches++;
    }),
  );
}

const usage = pool.usage();
const metaBytes = await metaSize();
await pool.close();
await rm(dir, { recursive: true, force: true });

const load1 = loadavg()
  .map((x) => x.toFixed(2))
  .join(" ");
console.log(
  `${totalMiB} MiB of random data per volume; ${workers ?? "default"} workers; ${cpus().length} CPUs (${cpus()[0]?.model}); node ${process.version}; load ${load1}`,
);
console.table(rows);
console.log(
  `unique grains ${usage.pool.liveChunks}; dedup ratio ${usage.pool.dedupRatio.toFixed(2)}; ` +
    `physical ${(usage.pool.physicalBytes / MiB).toFixed(1)} MiB for ${(usage.pool.logicalBytes / MiB).toFixed(0)} MiB logical`,
);
console.log(
  `metadata (LMDB file size / unique grains): ${(metaAfterUnique / usage.pool.liveChunks).toFixed(1)} B ` +
    `after the first volume (index + one map), ${(metaBytes / usage.pool.liveChunks).toFixed(1)} B ` +
    "with both volumes mapped",
);
console.log(`peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB`);
if (mismatches > 0) {
  console.log(`DATA MISMATCHES: ${mismatches}`);
  process.exitCode = 1;
}
