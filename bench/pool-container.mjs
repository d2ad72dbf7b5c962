#!/usr/bin/env node
// Throughput of the chunk container (src/pool/container) on this machine, single-threaded:
// fingerprint (HMAC-SHA256), append (zstd level 1 when it pays + AES-256-GCM + CRC32C + batched
// writes, then fdatasync), read (pread + CRC + GCM + zstd + fingerprint check), and the scrub
// scan with and without keys, for random (incompressible) and compressible grains.
// A measurement, not a test: it prints a table and exits 0.
//
//   npm run build && node bench/pool-container.mjs
//
// Environment:
//   BENCH_MIB      logical MiB per data set (default 256)
//   BENCH_GRAIN    grain size in bytes (default 4096)
//   BENCH_DEPTH    appends / reads in flight (default 64)
//   BENCH_TMPDIR   where the container files go (default $TMPDIR or /tmp); removed afterwards
//   SANMUX_DIST    the compiled sources (default ./dist next to bench/)

import { randomBytes } from "node:crypto";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const MiB = 1024 * 1024;
const envInt = (name, fallback) => {
  const v = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer`);
  return v;
};
const totalMiB = envInt("BENCH_MIB", 256);
const grainBytes = envInt("BENCH_GRAIN", 4096);
const depth = envInt("BENCH_DEPTH", 64);
const dist = process.env.SANMUX_DIST ?? new URL("../dist/", import.meta.url).pathname;
const load = (p) => import(pathToFileURL(join(dist, p)).href);

const crypto = await load("crypto/index.js");
const container = await load("pool/container/index.js");

const count = Math.floor((totalMiB * MiB) / grainBytes);
const keys = crypto.domainKeys(crypto.masterKeyFromBytes(randomBytes(32)), crypto.newId());
const dir = await mkdtemp(join(process.env.BENCH_TMPDIR ?? tmpdir(), "sanmux-bench-container-"));

/** Unique text-like grains: zstd level 1 stores them in roughly a third of their size. */
function compressibleGrains(n) {
  const words = ["backup", "volume", "grain", "chunk", "agent", "pool", "block", "index", "data"];
  const out = [];
  for (let g = 0; g < n; g++) {
    let s = `grain ${g}:`;
    for (let i = 0; s.length < grainBytes; i++) {
      s += ` ${words[(g * 31 + i * 7) % words.length]}=${(g * 131 + i * 17) % 100000}`;
    }
    out.push(Buffer.from(s.slice(0, grainBytes)));
  }
  return out;
}

async function inFlight(n, limit, fn) {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, n) }, async () => {
    while (next < n) await fn(next++);
  });
  await Promise.all(lanes);
}

const seconds = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;
const rate = (bytes, s) => (bytes / MiB / s).toFixed(0);

async function measure(name, grains) {
  const logical = grains.length * grainBytes;
  let t0 = process.hrtime.bigint();
  const fps = grains.map((g) => crypto.chunkFingerprint(keys.fingerprintKey, g));
  const tFp = seconds(t0);

  const w = await container.ContainerWriter.create(dir, keys);
  const results = new Array(grains.length);
  t0 = process.hrtime.bigint();
  await inFlight(grains.length, depth, async (i) => {
    results[i] = await w.append(fps[i], grains[i]);
  });
  await w.sync();
  const tAppend = seconds(t0);
  await w.seal();
  const size = (await stat(w.path)).size;

  const r = await container.ContainerReader.open(w.path, keys);
  t0 = process.hrtime.bigint();
  await inFlight(grains.length, depth, async (i) => {
    const p = await r.read(results[i].offset, fps[i], results[i].recordLength);
    if (p.length !== grainBytes) throw new Error("short read");
  });
  const tRead = seconds(t0);
  await r.close();

  t0 = process.hrtime.bigint();
  const plain = await container.scanContainer(w.path);
  const tScan = seconds(t0);
  t0 = process.hrtime.bigint();
  const keyed = await container.scanContainer(w.path, keys);
  const tScanKeys = seconds(t0);
  if (plain.damage.length + keyed.damage.length > 0) throw new Error("scan found damage");

  return {
    name,
    stored: size / logical,
    fingerprint: rate(logical, tFp),
    append: rate(logical, tAppend),
    read: rate(logical, tRead),
    scan: rate(size, tScan),
    scanKeys: rate(size, tScanKeys),
  };
}

try {
  const rows = [];
  rows.push(
    await measure(
      "random",
      Array.from({ length: count }, () => randomBytes(grainBytes)),
    ),
  );
  rows.push(await measure("compressible", compressibleGrains(count)));

  console.log(
    `${totalMiB} MiB per set in ${grainBytes}-byte grains, ${depth} in flight, one thread; ` +
      `${cpus().length} CPUs (${cpus()[0]?.model ?? "?"}); node ${process.version}; files in ${dir}`,
  );
  console.log("MiB/s of logical data (scans: of file bytes); reads hit the page cache");
  const header = [
    "grains",
    "stored/logical",
    "fingerprint",
    "append+sync",
    "read",
    "scan",
    "scan+keys",
  ];
  const table = [
    header,
    ...rows.map((r) => [
      r.name,
      r.stored.toFixed(3),
      r.fingerprint,
      r.append,
      r.read,
      r.scan,
      r.scanKeys,
    ]),
  ];
  const widths = header.map((_, c) => Math.max(...table.map((row) => String(row[c]).length)));
  for (const row of table) {
    console.log(row.map((cell, c) => String(cell).padStart(widths[c])).join("  "));
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
