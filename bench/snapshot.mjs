#!/usr/bin/env node
// Snapshots of a fully written pool volume (src/pool, Pool.createSnapshot): how long taking one
// takes, and that reads of it return the data as of the snapshot while the volume keeps
// changing. A measurement, not a test: it prints the figures and exits 0 (1 only when the
// snapshot read back anything but its data).
//
//   npm run build && node bench/snapshot.mjs
//
// The volume (4 GiB by default) is written completely: every grain mapped. The first
// BENCH_UNIQUE_MIB (64) are written with random data; the rest is filled by copies of that
// range by reference (PoolVolume.copyFrom, doubling), so grain g holds the content of grain
// g mod (unique grains): every grain is mapped, as after a full write, in seconds rather than
// the minutes 4 GiB of unique data would take to compress and encrypt. What a snapshot costs
// does not depend on the contents (README "Snapshots": two puts whatever the map holds).
//
// Environment:
//   BENCH_GIB          volume size in GiB (default 4)
//   BENCH_UNIQUE_MIB   MiB of random data written before the copies (default 64)
//   BENCH_SECONDS      seconds of overwrites + snapshot reads (default 5)
//   BENCH_TMPDIR       where the pool goes (default $TMPDIR or /tmp); removed afterwards
//   SANMUX_DIST        the compiled sources (default ./dist next to bench/)

import { randomBytes, randomFillSync } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const MiB = 1024 * 1024;
const G = 4096;
const envInt = (name, fallback) => {
  const v = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer`);
  return v;
};
const size = envInt("BENCH_GIB", 4) * 1024 * MiB;
const uniqueBytes = Math.min(envInt("BENCH_UNIQUE_MIB", 64) * MiB, size);
const seconds = envInt("BENCH_SECONDS", 5);
const dist = process.env.SANMUX_DIST ?? new URL("../dist/", import.meta.url).pathname;
const load = (p) => import(pathToFileURL(join(dist, p)).href);
const { Pool } = await load("pool/pool.js");
const { masterKeyFromBytes } = await load("crypto/index.js");

const grains = size / G;
const uniqueGrains = uniqueBytes / G;
const base = randomBytes(uniqueBytes);
const expected = (g) => base.subarray((g % uniqueGrains) * G, (g % uniqueGrains) * G + G);
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;

async function inFlight(n, limit, fn) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, n) }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

const dir = await mkdtemp(join(process.env.BENCH_TMPDIR ?? tmpdir(), "sanmux-bench-snap-"));
let failed = false;
try {
  const pool = await Pool.open({ dir, masterKey: masterKeyFromBytes(randomBytes(32)) });
  const v = await pool.ensureVolume({ name: "v", size, blockSize: 4096 });
  console.log(
    `snapshot bench: ${size / MiB} MiB volume (${grains} grains of 4 KiB); ` +
      `${cpus().length} CPUs, load ${loadavg()
        .map((x) => x.toFixed(2))
        .join(" ")}`,
  );

  // Fill: unique data first, then copies by reference until every grain is mapped.
  let t0 = process.hrtime.bigint();
  const io = MiB;
  await inFlight(uniqueBytes / io, 16, (i) =>
    v.write((i * io) / G, base.subarray(i * io, (i + 1) * io)),
  );
  const tUnique = ms(t0);
  t0 = process.hrtime.bigint();
  for (let done = uniqueGrains; done < grains; ) {
    const n = Math.min(done, grains - done);
    if (!(await v.copyFrom(v, 0, done, n))) throw new Error("copy by reference refused");
    done += n;
  }
  await pool.flush();
  const tCopy = ms(t0);
  const mapped = pool.volumeLogicalBytes("v") / G;
  console.log(
    `fill: ${uniqueBytes / MiB} MiB written in ${(tUnique / 1000).toFixed(1)} s, the rest copied ` +
      `by reference in ${(tCopy / 1000).toFixed(1)} s; mapped grains ${mapped} / ${grains}`,
  );
  if (mapped !== grains) throw new Error("the volume is not fully mapped");

  // The snapshot: MetaStore.createSnapshot + flush + registry save.
  t0 = process.hrtime.bigint();
  await pool.createSnapshot("v", "s1");
  const tSnap = ms(t0);
  console.log(`createSnapshot of the fully written volume: ${tSnap.toFixed(1)} ms`);
  const snap = await pool.openSnapshot("v", "s1");

  // The volume keeps changing (random 64 KiB overwrites, 8 in flight) while 1 MiB reads of the
  // snapshot (8 in flight) are compared with the data as of the snapshot.
  const stopAt = Date.now() + seconds * 1000;
  let overwrites = 0;
  let reads = 0;
  let mismatches = 0;
  const last = { lba: 0, data: Buffer.alloc(0) };
  const writer = async () => {
    const buf = Buffer.allocUnsafe(64 * 1024);
    while (Date.now() < stopAt) {
      const lba = Math.floor(Math.random() * (grains / 16)) * 16;
      const data = randomFillSync(Buffer.from(buf));
      await v.write(lba, data);
      last.lba = lba;
      last.data = data;
      overwrites++;
    }
  };
  const reader = async () => {
    while (Date.now() < stopAt) {
      const lba = Math.floor(Math.random() * (grains / 256)) * 256;
      const got = await snap.read(lba, 256);
      for (let i = 0; i < 256; i++) {
        if (!got.subarray(i * G, (i + 1) * G).equals(expected(lba + i))) mismatches++;
      }
      reads++;
    }
  };
  await Promise.all([...Array.from({ length: 8 }, writer), ...Array.from({ length: 8 }, reader)]);
  // The last overwrite is in the head, not in the snapshot.
  const headNow = await v.read(last.lba, 16);
  const snapThere = await snap.read(last.lba, 16);
  const headMoved = headNow.equals(last.data) && !snapThere.equals(last.data);
  console.log(
    `while the volume changed: ${overwrites} overwrites of 64 KiB and ${reads} snapshot reads of ` +
      `1 MiB in ${seconds} s; grains of the snapshot differing from the data as of the ` +
      `snapshot: ${mismatches}; head moved on: ${headMoved}`,
  );
  if (mismatches > 0 || !headMoved) failed = true;

  t0 = process.hrtime.bigint();
  await pool.createSnapshot("v", "s2");
  console.log(`a second snapshot, after the changes: ${ms(t0).toFixed(1)} ms`);
  t0 = process.hrtime.bigint();
  await pool.deleteSnapshot("v", "s1");
  console.log(
    `deleteSnapshot s1 (releases what only it held, ≈ ${overwrites * 16} old versions): ${ms(t0).toFixed(1)} ms`,
  );
  await pool.deleteSnapshot("v", "s2");
  await pool.close();
} finally {
  await rm(dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
