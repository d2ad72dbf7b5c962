/**
 * Metadata bytes per unique grain (README.md "Why these widths", "Map log"): writes `grains`
 * unique grains in 32-grain calls (qd 32, journal applied as the pool applies it), then reports
 * the LMDB pages in use per database (as bench/pool-lmdb-stats.mjs counts them), the map log
 * segments, and a checkpoint, each per grain. A measurement, not a test. Run:
 *   node node_modules/vite-node/vite-node.mjs src/pool/meta/testing/space-bench.ts [grains]
 */
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RefcountApplier } from "../applier.js";
import { MetaStore } from "../store.js";

const GRAINS = Number(process.argv[2] ?? 262144);
const QD = 32;
/** Like the pool's fingerprints: 32 bytes of keyed SHA-256 (here unkeyed: only the size matters). */
const fingerprint = (n: number) => createHash("sha256").update(`space:${n}`).digest();
const loc = (n: number) => ({
  containerId: Math.floor(n / 8192),
  offset: (n % 8192) * 2300,
  storedLength: 2300,
  logicalLength: 4096,
});

function filesBytes(dir: string, ext: string): number {
  return readdirSync(dir)
    .filter((f) => f.endsWith(ext))
    .reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

const root = mkdtempSync(join(tmpdir(), "sanmux-space-bench-"));
try {
  const logDir = join(root, "maplog");
  const store = await MetaStore.open({
    path: join(root, "meta"),
    noSync: true,
    mapLog: { dir: logDir, checkpointMinBytes: 2 ** 40 },
  });
  await store.createVolume(1, 1);
  const applier = new RefcountApplier(store, { intervalMs: 100, highWater: 1024 });
  applier.start();
  const calls = Math.ceil(GRAINS / 32);
  let next = 0;
  await Promise.all(
    Array.from({ length: QD }, async () => {
      while (next < calls) {
        const i = next++;
        await store.writeGrains(
          1,
          Array.from({ length: 32 }, (_, j) => {
            const g = i * 32 + j;
            return { grain: g, fingerprint: fingerprint(g), chunk: loc(g) };
          }),
        );
      }
    }),
  );
  await applier.stop({ drain: true });
  await store.flush();
  const logBytes = filesBytes(logDir, ".log");
  const pageSize = 4096;
  const per = (bytes: number) => Math.round((bytes / GRAINS) * 10) / 10;
  const dbs: Record<string, number> = {};
  let used = 0;
  for (const [name, db] of Object.entries(store.dbs)) {
    if (name === "root") continue;
    const s = (db as { getStats(): Record<string, number> }).getStats();
    const pages = s.treeBranchPageCount! + s.treeLeafPageCount! + s.overflowPages!;
    used += pages * pageSize;
    dbs[name] = per(pages * pageSize);
  }
  const ck = await store.checkpointNow();
  console.log(
    JSON.stringify({
      grains: GRAINS,
      lmdbInUse: per(used),
      fp: dbs.fp,
      map: dbs.map,
      journal: dbs.journal,
      mapLog: per(logBytes),
      checkpoint: per(ck?.bytes ?? 0),
      total: per(used + logBytes + (ck?.bytes ?? 0)),
    }),
  );
  await store.close();
} finally {
  rmSync(root, { recursive: true, force: true });
}
