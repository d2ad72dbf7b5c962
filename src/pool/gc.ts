/**
 * Garbage collection of containers (src/pool/meta/README.md, "GC and the dedup race"; README.md
 * "GC" in this folder).
 *
 * 1. Apply the refcount journal (Pool.gc commits the writes staged by write-back.ts first), so
 *    that every chunk's refcount is exact.
 * 2. For every container, claim its dead chunks (MetaStore.reclaimDeadChunks): no write
 *    deduplicates against them from then on, and a write that found one just before gets
 *    ChunkMissing and stores its data again (pool-volume.ts).
 * 3. Compaction: a container whose dead bytes reach `minDeadFraction` of its stored bytes and that
 *    still holds live chunks has them moved, in batches of about 1 MiB of records, into the
 *    domain's current container. Per batch: read the records (one pread per run), check each
 *    (CRC32C, fingerprint, GCM tag) and seal its payload again for its new place — a record cannot
 *    be copied byte for byte, its AAD binds container id and offset (container/FORMAT.md §3) —
 *    without decompressing it, so that codec and stored length stay the same; append the copies
 *    (ChunkBatch.appendSealed), fdatasync them, then one MetaStore.relocateChunks transaction
 *    points the index at them, each entry only if it still names the old copy. Between batches GC
 *    yields to I/O. The container is then left without a live chunk.
 * 4. A container left with no live chunk is deleted: the current container of a domain is retired
 *    and sealed first (its writes under way finish first), the container's directory is checked
 *    against the index (no entry may name it: a last guard against a counter bug), the metadata
 *    store is flushed (the index forgets the chunks, or names their new copies, durably), reads
 *    that resolved a grain to it before that are waited for (ChunkReader.idle), then the file goes
 *    (ChunkStore.deleteContainer: marked `deleting` in the registry first).
 *
 * Why this is safe against concurrent I/O: map entries name fingerprints, not places, so writes
 * and copies are unaffected by a move; a write that deduplicates against a chunk being moved maps
 * its fingerprint, found at the old place before the relocation commits and at the new one after.
 * A read resolves grains and starts its preads in one turn, so it is counted by ChunkReader before
 * the deletion waits for it; should one still fail, the read path resolves again and finds the
 * new place (pool-volume.ts readGrains). Crash: copies are durable before the relocation names
 * them, and the old file goes only after the relocation is durable; copies a crash left unnamed
 * are bytes no index entry names, as after a crash between a write's append and its map update.
 *
 * Containers past the threshold that are not compacted are listed in `notCompacted` with the
 * reason (open, damaged record, no room, ...). One GC runs at a time (Pool.gc).
 */

import { type FileHandle, open, stat } from "node:fs/promises";
import type { Logger } from "pino";
import type { ChunkStore } from "./chunk-store.js";
import { RECORD_HEADER_BYTES, readDirectory, scanContainer } from "./container/index.js";
import {
  type ContainerKeys,
  containerKeys,
  type OpenedPayload,
  openPayload,
  sealPayloads,
} from "./container/record.js";
import type { MetaStore, Relocation } from "./meta/index.js";
import type { ContainerRecord, Registry } from "./registry.js";

export interface GcReport {
  readonly journalRecords: number;
  /** Dead chunks removed from the index (no longer deduplicated against). */
  readonly chunksReclaimed: number;
  /** Container files deleted (the compacted ones included). */
  readonly containersDeleted: number;
  /** Containers whose live chunks were moved elsewhere (and which were then deleted). */
  readonly containersCompacted: number;
  /** Bytes of records written to hold the moved chunks. */
  readonly bytesMoved: number;
  /** Bytes of the container files deleted. The space freed is bytesReclaimed − bytesMoved. */
  readonly bytesReclaimed: number;
  /** Containers past the dead-space threshold that still hold live chunks, and why. */
  readonly notCompacted: {
    container: string;
    deadFraction: number;
    deadBytes: number;
    reason: string;
  }[];
  readonly durationMs: number;
}

/** What `onProgress` gets: after every container, and after every batch of a compaction. */
export interface GcProgress {
  /** Containers to visit in this pass. */
  readonly containers: number;
  readonly done: number;
  readonly containersDeleted: number;
  readonly containersCompacted: number;
  readonly bytesMoved: number;
  readonly bytesReclaimed: number;
}

export interface GcOptions {
  /** Compact containers whose dead bytes reach this fraction of their stored bytes. Default 0.3. */
  readonly minDeadFraction?: number | undefined;
  /** Move the live chunks of such containers (default); false: list them in notCompacted. */
  readonly compact?: boolean | undefined;
  /** Record bytes moved per relocation transaction; GC yields between batches. Default 1 MiB. */
  readonly batchBytes?: number | undefined;
  readonly onProgress?: ((p: GcProgress) => void) | undefined;
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

const MiB = 1024 * 1024;
/** Dead bytes between two live records read with one pread rather than two. */
const MAX_GAP = 64 * 1024;
/** How long the deletion of a compacted container waits for reads still using it. */
const READS_TIMEOUT_MS = 10_000;

interface Tally {
  containersDeleted: number;
  containersCompacted: number;
  bytesMoved: number;
  bytesReclaimed: number;
  readonly containers: number;
  done: number;
}

export async function collectGarbage(
  ctx: GcContext,
  options: GcOptions | number = {},
): Promise<GcReport> {
  const o: GcOptions = typeof options === "number" ? { minDeadFraction: options } : options;
  const threshold = o.minDeadFraction ?? 0.3;
  const compact = o.compact ?? true;
  const batchBytes = Math.max(1, o.batchBytes ?? MiB); // a batch holds one record at least
  const t0 = Date.now();
  const journalRecords = await ctx.applyJournal();
  let chunksReclaimed = 0;
  const notCompacted: GcReport["notCompacted"] = [];
  const containers = [...ctx.registry.containers];
  const tally: Tally = {
    containersDeleted: 0,
    containersCompacted: 0,
    bytesMoved: 0,
    bytesReclaimed: 0,
    containers: containers.length,
    done: 0,
  };
  const progress = (): void => {
    if (o.onProgress === undefined) return;
    const { containers: n, done, containersDeleted, containersCompacted } = tally;
    const { bytesMoved, bytesReclaimed } = tally;
    o.onProgress({
      containers: n,
      done,
      containersDeleted,
      containersCompacted,
      bytesMoved,
      bytesReclaimed,
    });
  };
  const live = async (c: ContainerRecord): Promise<number> => {
    chunksReclaimed += (await ctx.store.reclaimDeadChunks(c.number)).length;
    const u = ctx.store.containerUsage(c.number);
    return u === undefined ? 0 : u.storedChunks - u.deadChunks;
  };
  for (const c of containers) {
    await turn();
    tally.done++;
    if (c.state === "deleting" || ctx.registry.container(c.number) === undefined) continue;
    if (ctx.stopped()) continue;
    let compacted = false;
    let skip: ((reason: string) => void) | undefined;
    if ((await live(c)) > 0) {
      const u = ctx.store.containerUsage(c.number);
      const fraction = u && u.storedBytes > 0 ? u.deadBytes / u.storedBytes : 0;
      if (u === undefined || fraction < threshold) continue;
      skip = (reason: string): void => {
        notCompacted.push({
          container: c.id,
          deadFraction: fraction,
          deadBytes: u.deadBytes,
          reason,
        });
      };
      if (!compact) {
        skip("compaction is off");
        continue;
      }
      const why = await compactContainer(ctx, c, batchBytes, tally, progress);
      if (why !== undefined) {
        skip(why);
        continue;
      }
      if ((await live(c)) > 0) {
        ctx.logger?.warn({ container: c.id }, "counters say live chunks remain after compaction");
        skip("its counters still count live chunks after the move (run `sanmux pool check`)");
        continue;
      }
      compacted = true;
    }
    const oc = ctx.chunks.openContainer(c.number);
    if (oc !== undefined) {
      if (oc.writer.recordCount === 0 || oc.holds > 0) continue; // fresh, or writes under way
      await ctx.chunks.retireAndSeal(oc);
      if ((await live(c)) > 0) continue; // writes landed before the seal
    }
    if (!(await unreferenced(ctx, c))) {
      ctx.logger?.warn({ container: c.id }, "counters say dead but the index names a chunk");
      skip?.("the index still names a chunk in it (run `sanmux pool check`)");
      continue;
    }
    await ctx.store.flush(); // the index forgets the chunks (or names their copies) durably
    if (!(await ctx.chunks.reads.idle(c.number, READS_TIMEOUT_MS))) {
      // Reads that fail now resolve again and find the new copies (pool-volume.ts readGrains).
      ctx.logger?.warn({ container: c.id }, "deleting a container that reads still use");
    }
    tally.bytesReclaimed += await ctx.chunks.deleteContainer(c.number);
    tally.containersDeleted++;
    if (compacted) tally.containersCompacted++;
    progress();
  }
  progress();
  const report: GcReport = {
    journalRecords,
    chunksReclaimed,
    containersDeleted: tally.containersDeleted,
    containersCompacted: tally.containersCompacted,
    bytesMoved: tally.bytesMoved,
    bytesReclaimed: tally.bytesReclaimed,
    notCompacted,
    durationMs: Date.now() - t0,
  };
  ctx.logger?.info({ ...report, notCompacted: notCompacted.length }, "gc done");
  return report;
}

/** A record the index names in the container being compacted. */
interface LiveRecord {
  readonly fingerprint: Buffer;
  readonly offset: number;
  readonly storedLength: number;
  readonly logicalLength: number;
}

/**
 * Move every chunk the index names in container `c` to the domain's current container (module
 * comment, step 3). Resolves undefined when done, else why the container was left as it is (what
 * was moved before stays moved: the relocations are committed).
 */
async function compactContainer(
  ctx: GcContext,
  c: ContainerRecord,
  batchBytes: number,
  tally: Tally,
  progress: () => void,
): Promise<string | undefined> {
  if (ctx.chunks.openContainer(c.number) !== undefined) {
    return "open: it takes appends (compacted once sealed)";
  }
  const path = ctx.chunks.containerPath(c);
  let records: LiveRecord[];
  try {
    records = await liveRecords(ctx, c, path);
  } catch (error) {
    return `unreadable: ${(error as Error).message}`;
  }
  const damaged = records.find((r) => ctx.chunks.reads.isDamaged(c.number, r.offset));
  if (damaged !== undefined) {
    return `scrub found the record at offset ${damaged.offset} damaged`;
  }
  const domainKeys = ctx.chunks.keys(c.domain);
  const from = containerKeys(domainKeys, c.id);
  const destinations = new Map<string, ContainerKeys>();
  const keysOf = (id: string): ContainerKeys => {
    let k = destinations.get(id);
    if (k === undefined) {
      k = containerKeys(domainKeys, id);
      destinations.set(id, k);
    }
    return k;
  };
  let file: FileHandle;
  try {
    file = await open(path, "r");
  } catch (error) {
    return `cannot be opened: ${(error as Error).message}`;
  }
  try {
    for (let i = 0; i < records.length; ) {
      if (ctx.stopped()) return "the pool is closing";
      const batch: LiveRecord[] = [];
      let bytes = 0;
      while (i < records.length && (batch.length === 0 || bytes < batchBytes)) {
        const r = records[i++]!;
        batch.push(r);
        bytes += RECORD_HEADER_BYTES + r.storedLength;
      }
      let payloads: OpenedPayload[];
      try {
        payloads = await readPayloads(file, from, batch);
      } catch (error) {
        ctx.logger?.error({ err: error, container: c.id }, "gc: a live record fails its checks");
        return `a live record fails its checks: ${(error as Error).message}`;
      }
      const chunks = ctx.chunks.batch(c.domain);
      try {
        const copies = await chunks.appendSealed(
          batch.map((r) => r.fingerprint),
          batch.map((r) => r.logicalLength),
          (id, base) => sealPayloads(keysOf(id), base, payloads),
        );
        await chunks.sync(); // write protocol step 3: durable before the index names them
        const moves: Relocation[] = batch.map((r, k) => ({
          fingerprint: r.fingerprint,
          from: { containerId: c.number, offset: r.offset },
          to: copies[k]!,
        }));
        await ctx.store.relocateChunks(c.domain, moves);
        for (const copy of copies) tally.bytesMoved += RECORD_HEADER_BYTES + copy.storedLength;
      } catch (error) {
        ctx.logger?.warn({ err: error, container: c.id }, "gc: moving live chunks failed");
        return `moving its live chunks failed: ${(error as Error).message}`;
      } finally {
        chunks.release();
      }
      progress();
      await turn();
    }
  } finally {
    await file.close().catch(() => undefined);
  }
  ctx.logger?.debug({ container: c.id, chunks: records.length }, "gc: container compacted");
  return undefined;
}

/** The records of container `c` that the index names (there), in file order. */
async function liveRecords(
  ctx: GcContext,
  c: ContainerRecord,
  path: string,
): Promise<LiveRecord[]> {
  const sealed = await readDirectory(path).catch(() => undefined);
  const entries = sealed?.entries ?? (await scanContainer(path)).records;
  const out: LiveRecord[] = [];
  let n = 0;
  for (const e of entries) {
    const hit = ctx.store.lookupChunk(c.domain, e.fingerprint);
    if (hit !== undefined && hit.containerId === c.number && hit.offset === e.offset) {
      out.push({
        fingerprint: Buffer.from(e.fingerprint),
        offset: hit.offset,
        storedLength: hit.storedLength,
        logicalLength: hit.logicalLength,
      });
    }
    if (++n % 4096 === 0) await turn();
  }
  return out.sort((a, b) => a.offset - b.offset);
}

/**
 * Read `records` (file order) with one pread per run of records at most MAX_GAP apart, and open
 * their payloads for re-sealing (checks: header, CRC32C, fingerprint, GCM tag).
 */
async function readPayloads(
  file: FileHandle,
  keys: ContainerKeys,
  records: readonly LiveRecord[],
): Promise<OpenedPayload[]> {
  const out: OpenedPayload[] = [];
  for (let i = 0; i < records.length; ) {
    const start = records[i]!.offset;
    let j = i;
    let end = start + RECORD_HEADER_BYTES + records[i]!.storedLength;
    while (j + 1 < records.length && records[j + 1]!.offset - end <= MAX_GAP) {
      j++;
      end = records[j]!.offset + RECORD_HEADER_BYTES + records[j]!.storedLength;
    }
    const buf = Buffer.allocUnsafe(end - start);
    let got = 0;
    while (got < buf.length) {
      const { bytesRead } = await file.read(buf, got, buf.length - got, start + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    for (; i <= j; i++) {
      const r = records[i]!;
      const at = r.offset - start;
      const length = RECORD_HEADER_BYTES + r.storedLength;
      if (at + length > got) throw new Error(`the record at offset ${r.offset} is cut short`);
      out.push(openPayload(keys, r.offset, buf.subarray(at, at + length), r.fingerprint));
    }
  }
  return out;
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
