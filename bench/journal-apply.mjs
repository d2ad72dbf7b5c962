#!/usr/bin/env node
// What a refcount journal batch costs per delta, by batch size (src/pool/meta/README.md,
// "Crash consistency": Apply). Writes GRAINS unique grains to volume 1, then the same
// fingerprints to volume 2 in 2 MiB writes (the duplicate write: one journal record of +1 deltas
// per write), applying the journal every BATCH writes, and prints the apply time per delta.
//
//   npm run build && node bench/journal-apply.mjs            # BATCH 8, 32, 128, 512 writes
//   GRAINS=65536 BATCHES="8 128" node bench/journal-apply.mjs
//
// Metadata only (no containers, no iSCSI), on the event loop, with fsync on commit as in the pool.
// Plain Node ESM.

import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const { MetaStore } = await import(new URL("../dist/pool/meta/store.js", import.meta.url).href);

const GRAINS = Number(process.env.GRAINS ?? 262144);
const BATCHES = (process.env.BATCHES ?? "8 32 128 512").split(/\s+/).map(Number);
const PER_WRITE = 512; // 2 MiB of 4 KiB grains, what qemu-img convert sends
const QUEUED = 8; // writes queued in one turn, as the write-back commit does

async function run(batchWrites) {
  const dir = mkdtempSync(join(tmpdir(), "sanmux-journal-bench-"));
  const store = await MetaStore.open({ path: dir });
  try {
    await store.createVolume(1, 0);
    await store.createVolume(2, 0);
    const fps = randomBytes(GRAINS * 32);
    const fp = (g) => fps.subarray(g * 32, g * 32 + 32);
    let applyMs = 0;
    let sinceApply = 0;
    for (const volume of [1, 2]) {
      for (let g = 0; g < GRAINS; g += PER_WRITE * QUEUED) {
        const writes = [];
        for (let w = 0; w < QUEUED && g + w * PER_WRITE < GRAINS; w++) {
          const updates = [];
          for (let i = 0; i < PER_WRITE; i++) {
            const grain = g + w * PER_WRITE + i;
            updates.push(
              volume === 1
                ? {
                    grain,
                    fingerprint: fp(grain),
                    chunk: {
                      containerId: 1,
                      offset: grain * 4156,
                      storedLength: 4112,
                      logicalLength: 4096,
                    },
                  }
                : { grain, fingerprint: fp(grain), indexed: store.lookupChunk(0, fp(grain)) },
            );
          }
          writes.push(updates);
        }
        await Promise.all(writes.map((u) => store.writeGrains(volume, u)));
        if (volume === 1) continue;
        sinceApply += writes.length;
        if (sinceApply >= batchWrites) {
          const t = performance.now();
          await store.applyJournal({ maxRecords: Number.MAX_SAFE_INTEGER });
          applyMs += performance.now() - t;
          sinceApply = 0;
        }
      }
    }
    const t = performance.now();
    await store.applyJournal({ maxRecords: Number.MAX_SAFE_INTEGER });
    applyMs += performance.now() - t;
    if (store.lookupChunk(0, fp(0))?.refcount !== 2) throw new Error("refcount is not 2");
    return (applyMs * 1000) / GRAINS;
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(`| deltas per batch | µs per delta |`);
console.log(`| ---: | ---: |`);
for (const b of BATCHES) {
  const us = await run(b);
  console.log(`| ${b * PER_WRITE} | ${us.toFixed(2)} |`);
}
