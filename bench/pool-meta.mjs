#!/usr/bin/env node
// Pool metadata benchmark: block-map updates per second with refcounts journaled and applied in
// batches by the background applier, against applying after every write; and metadata bytes on
// disk per unique grain. A measurement, not a test: it always exits 0 unless something failed.
//
//   npm run build && node bench/pool-meta.mjs [--grains N] [--qd N] [--nosync]
//
// It loads the compiled store from dist/ (or from $SANMUX_DIST, a directory laid out like dist/).
//
// Phases (4 KiB grains, one domain, chunk locations made up: no container I/O here):
//   unique seq   volume 1 writes N new grains, 32 per call (a 128 KiB write), inserting each chunk
//   dup seq      volume 2 writes the same N grains: every chunk deduplicated against volume 1
//   rand 4K      single-grain overwrites at random grains of volume 1 with existing chunks
//   rand 4K sync the same with the refcounts applied after every write (no group commit)
// `qd` calls are in flight at once (like an initiator's queue depth); lmdb-js commits the calls
// queued in one event turn together.
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const GRAINS = opt("grains", 262_144); // 1 GiB of 4 KiB grains
const QD = opt("qd", 32);
const NOSYNC = args.includes("--nosync");
const RANDOM_WRITES = Math.min(GRAINS, 100_000);
const SYNC_WRITES = Math.min(GRAINS, 20_000);

const distDir = resolve(process.env.SANMUX_DIST ?? new URL("../dist", import.meta.url).pathname);
const { MetaStore, RefcountApplier } = await import(
  pathToFileURL(join(distDir, "pool/meta/index.js")).href
);

const fingerprint = (n) => createHash("sha256").update(`bench:${n}`).digest();
const STORED = 2300; // a 4 KiB grain compressed a little, plus sealing overhead
const location = (n) => ({
  containerId: Math.floor(n / 8192),
  offset: (n % 8192) * STORED,
  storedLength: STORED,
  logicalLength: 4096,
});

// A deterministic PRNG so that runs compare.
let seed = 12345;
const rand = (n) => {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed % n;
};

/** Runs `total` operations built by `op(i)`, `QD` in flight, and returns elapsed seconds. */
async function run(total, op) {
  const t0 = process.hrtime.bigint();
  let next = 0;
  async function lane() {
    while (next < total) await op(next++);
  }
  await Promise.all(Array.from({ length: QD }, lane));
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function dirBytes(dir) {
  return statSync(join(dir, "data.mdb")).size;
}

function usedBytes(store) {
  // Pages in use per sub-database (branch + leaf + overflow) × page size.
  const out = {};
  let total = 0;
  for (const [name, db] of Object.entries(store.dbs)) {
    if (name === "root") continue;
    const s = db.getStats();
    const bytes = (s.treeBranchPageCount + s.treeLeafPageCount + s.overflowPages) * s.pageSize;
    out[name] = { entries: s.entryCount, bytes };
    total += bytes;
  }
  return { total, perDb: out };
}

const dir = mkdtempSync(join(tmpdir(), "sanmux-bench-meta-"));
const rows = [];
try {
  const store = await MetaStore.open({ path: dir, noSync: NOSYNC });
  await store.createVolume(1, 1);
  await store.createVolume(2, 1);
  const applier = new RefcountApplier(store, { intervalMs: 50, highWater: 2048 });
  applier.start();

  const PER_CALL = 32;
  const calls = Math.ceil(GRAINS / PER_CALL);
  const seqUpdates = (i, withChunk) =>
    Array.from({ length: Math.min(PER_CALL, GRAINS - i * PER_CALL) }, (_, j) => {
      const g = i * PER_CALL + j;
      return withChunk
        ? { grain: g, fingerprint: fingerprint(g), chunk: location(g) }
        : { grain: g, fingerprint: fingerprint(g) };
    });

  let s = await run(calls, (i) => store.writeGrains(1, seqUpdates(i, true)));
  await applier.stop({ drain: true });
  rows.push(["unique seq (32 grains/call)", GRAINS / s, calls / s]);
  const unique = usedBytes(store);

  applier.start();
  s = await run(calls, (i) => store.writeGrains(2, seqUpdates(i, false)));
  await applier.stop({ drain: true });
  rows.push(["dup seq (32 grains/call)", GRAINS / s, calls / s]);

  const batchesBefore = applier.batches;
  const recordsBefore = applier.records;
  applier.start();
  s = await run(RANDOM_WRITES, () =>
    store.writeGrains(1, [{ grain: rand(GRAINS), fingerprint: fingerprint(rand(GRAINS)) }]),
  );
  const drainT0 = process.hrtime.bigint();
  await applier.stop({ drain: true });
  const drainS = Number(process.hrtime.bigint() - drainT0) / 1e9;
  rows.push(["rand 4K, batched refcounts", RANDOM_WRITES / s, RANDOM_WRITES / s]);
  const batches = applier.batches - batchesBefore;
  const records = applier.records - recordsBefore;

  s = await run(SYNC_WRITES, async () => {
    await store.writeGrains(1, [{ grain: rand(GRAINS), fingerprint: fingerprint(rand(GRAINS)) }]);
    await store.applyJournal({ maxRecords: 1 });
  });
  rows.push(["rand 4K, refcount per write", SYNC_WRITES / s, SYNC_WRITES / s]);

  const audit = store.audit();
  const pool = store.poolUsage();
  await store.flush();
  const fileBytes = dirBytes(dir);
  await store.close();

  console.log(
    `pool metadata: ${GRAINS} grains per volume, qd ${QD}, ${NOSYNC ? "noSync" : "durable commits (fsync)"}, node ${process.version}`,
  );
  console.log("");
  console.log("phase                          grains/s     calls/s");
  console.log("-----------------------------  ----------  ----------");
  for (const [name, gps, cps] of rows) {
    console.log(
      `${name.padEnd(29)}  ${Math.round(gps).toString().padStart(10)}  ${Math.round(cps).toString().padStart(10)}`,
    );
  }
  console.log("");
  console.log(
    `batched phase: ${records} journal records applied in ${batches} batches (${Math.round(records / Math.max(1, batches))} per batch); final drain ${(drainS * 1000).toFixed(1)} ms`,
  );
  console.log(
    `metadata after unique seq: ${unique.total} bytes in use = ${(unique.total / GRAINS).toFixed(1)} bytes per unique grain`,
  );
  for (const [name, { entries, bytes }] of Object.entries(unique.perDb)) {
    if (entries > 0)
      console.log(
        `  ${name.padEnd(10)} ${String(entries).padStart(8)} entries  ${(bytes / GRAINS).toFixed(1).padStart(6)} B/grain`,
      );
  }
  console.log(
    `at the end: data.mdb ${fileBytes} bytes (${(fileBytes / GRAINS).toFixed(1)} B per unique grain, free pages included); pool logical ${pool.logicalBytes}, physical ${pool.physicalBytes}, dedup ratio ${pool.dedupRatio.toFixed(2)}; audit clean: ${audit.clean}`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
