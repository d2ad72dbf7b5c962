/**
 * Garbage collection of containers (src/pool/meta/README.md, "GC and the dedup race").
 *
 * 1. Apply the refcount journal, so that every chunk's refcount is exact.
 * 2. For every container, claim its dead chunks (MetaStore.reclaimDeadChunks): no write
 *    deduplicates against them from then on, and a write that found one just before gets
 *    ChunkMissing and stores its data again (pool-volume.ts).
 * 3. A container left with no live chunk is deleted: the current container of a domain is
 *    retired and sealed first (its writes under way finish first), the container's directory is
 *    checked against the index (no entry may name it: a last guard against a counter bug), the
 *    metadata store is flushed (the index forgets the chunks durably), then the file goes
 *    (ChunkStore.deleteContainer: marked `deleting` in the registry first).
 * 4. Containers past the dead-space threshold that still hold live chunks are reported, not
 *    compacted: moving live chunks needs a relocation transaction in the metadata store (an index
 *    entry's location changed atomically), which it does not offer yet (README.md, "Limits").
 *
 * Never stalls I/O: one container per turn of the event loop, index lookups in slices.
 */

import { stat } from "node:fs/promises";
import type { Logger } from "pino";
import type { ChunkStore } from "./chunk-store.js";
import { readDirectory, scanContainer } from "./container/index.js";
import type { MetaStore } from "./meta/index.js";
import type { ContainerRecord, Registry } from "./registry.js";

export interface GcReport {
  readonly journalRecords: number;
  /** Dead chunks removed from the index (no longer deduplicated against). */
  readonly chunksReclaimed: number;
  readonly containersDeleted: number;
  readonly bytesReclaimed: number;
  /**
   * Containers past the dead-space threshold that still hold live chunks: compacting them needs
   * a relocation transaction in the metadata store (README.md, "Limits").
   */
  readonly notCompacted: { container: string; deadFraction: number; deadBytes: number }[];
  readonly durationMs: number;
}

export interface GcContext {
  readonly registry: Registry;
  readonly store: MetaStore;
  readonly chunks: ChunkStore;
  readonly logger: Logger | undefined;
  /** True once the pool is closing: GC stops. */
  stopped(): boolean;
  /** Apply the whole refcount journal; resolves with the records applied. */
  applyJournal(): Promise<number>;
}

export async function collectGarbage(ctx: GcContext, threshold: number): Promise<GcReport> {
  const t0 = Date.now();
  const journalRecords = await ctx.applyJournal();
  let chunksReclaimed = 0;
  let containersDeleted = 0;
  let bytesReclaimed = 0;
  const notCompacted: GcReport["notCompacted"] = [];
  const live = async (c: ContainerRecord): Promise<number> => {
    chunksReclaimed += (await ctx.store.reclaimDeadChunks(c.number)).length;
    const u = ctx.store.containerUsage(c.number);
    return u === undefined ? 0 : u.storedChunks - u.deadChunks;
  };
  for (const c of [...ctx.registry.containers]) {
    await turn();
    if (c.state === "deleting" || ctx.stopped()) continue;
    if ((await live(c)) > 0) {
      const u = ctx.store.containerUsage(c.number);
      const fraction = u && u.storedBytes > 0 ? u.deadBytes / u.storedBytes : 0;
      if (u !== undefined && fraction >= threshold) {
        notCompacted.push({ container: c.id, deadFraction: fraction, deadBytes: u.deadBytes });
      }
      continue;
    }
    const oc = ctx.chunks.openContainer(c.number);
    if (oc !== undefined) {
      if (oc.writer.recordCount === 0 || oc.holds > 0) continue; // fresh, or writes under way
      await ctx.chunks.retireAndSeal(oc);
      if ((await live(c)) > 0) continue; // writes landed before the seal
    }
    if (!(await unreferenced(ctx, c))) {
      ctx.logger?.warn({ container: c.id }, "counters say dead but the index names a chunk");
      continue;
    }
    await ctx.store.flush(); // the index forgets the chunks durably before the file goes
    bytesReclaimed += await ctx.chunks.deleteContainer(c.number);
    containersDeleted++;
  }
  const report = {
    journalRecords,
    chunksReclaimed,
    containersDeleted,
    bytesReclaimed,
    notCompacted,
    durationMs: Date.now() - t0,
  };
  ctx.logger?.info({ ...report, notCompacted: notCompacted.length }, "gc done");
  return report;
}

/** No index entry names a record of container `c` (read from its directory, or a scan). */
async function unreferenced(ctx: GcContext, c: ContainerRecord): Promise<boolean> {
  const path = ctx.chunks.containerPath(c);
  if (!(await fileExists(path))) return true;
  const sealed = await readDirectory(path).catch(() => undefined);
  const fps = sealed?.entries ?? (await scanContainer(path)).records;
  let n = 0;
  for (const e of fps) {
    const hit = ctx.store.lookupChunk(c.domain, e.fingerprint);
    if (hit !== undefined && hit.containerId === c.number) return false;
    if (++n % 4096 === 0) await turn();
  }
  return true;
}

function fileExists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

function turn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}
