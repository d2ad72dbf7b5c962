/**
 * Crash-test worker (run with vite-node by crash.test.ts, then killed with SIGKILL at a random
 * moment): hammers a store with concurrent map updates, unmaps, GC claims, snapshots, snapshot
 * deletions (in small batches, so that kills land between their transactions) and map copies
 * (some from snapshots) while the background applier applies the journal, and after every 10th
 * round writes a marker grain, flushes, and prints `synced <n>`: the parent checks that the last
 * printed marker survived the kill. At start it finishes the snapshot deletions a previous kill
 * interrupted.
 *
 * Usage: crash-child.ts <dir> <seed> [map thread script]: with the compiled map-thread.js, each
 * round's writes go to it as one batch (MetaStore.writeGrainsMany), as the pool's group commits do.
 */
import { join } from "node:path";
import { RefcountApplier } from "../applier.js";
import { MetaStore } from "../store.js";
import type { GrainUpdate } from "../types.js";
import { fp, loc, xorshift32 } from "./helpers.js";

const [dir, seedArg, mapThread] = process.argv.slice(2);
if (!dir) throw new Error("usage: crash-child.ts <dir> <seed>");
const rand = xorshift32(Number(seedArg ?? 1)); // reproducible per seed

// With the map log (README "Map log"): the parent also rebuilds the maps from it after each kill.
const store = await MetaStore.open({
  path: dir,
  mapLog: { dir: join(dir, "maplog") },
  ...(mapThread ? { mapThread } : {}),
});
if (mapThread && !store.mapWriteThread) throw new Error(`no map thread from ${mapThread}`);
await store.createVolume(1, 1);
await store.createVolume(2, 1);
const applier = new RefcountApplier(store, { intervalMs: 2, highWater: 16 });
applier.start();
for (const { volume, snapshot } of store.unfinishedSnapshotDeletions())
  await store.deleteSnapshot(volume, snapshot, { batchSize: 4 });
process.stdout.write("ready\n");

const label = (c: number) => `data-${c}`;
for (let round = 0; ; round++) {
  const ops: Promise<unknown>[] = [];
  const batch: { volume: number; updates: GrainUpdate[] }[] = [];
  for (let i = 0; i < 8; i++) {
    const volume = 1 + rand(2);
    const kind = rand(10);
    if (kind < 7) {
      const first = rand(256);
      const updates = Array.from({ length: 1 + rand(8) }, (_, j) => {
        const c = rand(64);
        return rand(8) === 0
          ? { grain: first + j, fingerprint: null }
          : {
              grain: first + j,
              fingerprint: fp(label(c)),
              chunk: loc(1 + (c % 4), c * 4096 + rand(4) * 100),
            };
      });
      if (mapThread) batch.push({ volume, updates });
      else ops.push(store.writeGrains(volume, updates));
    } else if (kind < 8) {
      ops.push(store.unmapGrains(volume, rand(256), 1 + rand(16)));
    } else if (kind < 9) {
      ops.push(store.reclaimDeadChunks(1 + rand(4)).catch(() => undefined));
    } else {
      ops.push(snapshotOp(volume));
    }
  }
  if (batch.length > 0) ops.push(store.writeGrainsMany(batch));
  // Writers racing a GC claim may get ChunkMissing: that is the protocol, not a failure.
  await Promise.allSettled(ops);
  if (round % 10 === 9) {
    const n = (round + 1) / 10;
    await store.writeGrains(2, [
      { grain: 1000 + n, fingerprint: fp(label(n % 64)), chunk: loc(9, n) },
    ]);
    await store.flush();
    process.stdout.write(`synced ${n}\n`);
  }
}

/** A snapshot, a snapshot deletion or a map copy (grains below 300: the markers stay intact). */
async function snapshotOp(volume: number): Promise<unknown> {
  const snapshots = store.listSnapshots(volume);
  const what = rand(3);
  if (what === 0 && snapshots.length < 3) return store.createSnapshot(volume);
  if (what <= 1 && snapshots.length > 0)
    return store.deleteSnapshot(volume, snapshots[rand(snapshots.length)]!, { batchSize: 4 });
  const n = 1 + rand(32);
  const snapshot = snapshots.length > 0 && rand(2) === 0 ? snapshots[0] : undefined;
  return store.copyGrains(
    snapshot === undefined ? { volume } : { volume, snapshot },
    rand(256),
    1 + rand(2),
    rand(256),
    n,
    { batchSize: 8 },
  );
}
