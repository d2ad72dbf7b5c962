/**
 * Rebuilding a domain's fingerprint index from the containers' own records (`sanmux pool
 * rebuild`): the containers are self-describing, so the index is derived data.
 *
 * Steps, each in its own transactions, with a `rebuild:<domain>` marker in `meta` from the first
 * to the last so that an interrupted rebuild is visible (MetaStore.unfinishedRebuilds) and simply
 * run again from the start:
 * 1. forget the domain's index entries, dead-table entries and journal records, and zero its
 *    chunk counters (the maps are kept: they are what the refcounts are recounted from);
 * 2. insert every record at refcount 0, keyed by the first 16 bytes of the fingerprint its header
 *    holds (codec.ts FINGERPRINT_BYTES); when a fingerprint appears twice the first record wins
 *    and the other copy counts as dead bytes of its container; a container's counters restart
 *    from zero the first time one of its records is seen (a container holds one domain's chunks);
 * 3. repair: count references from the maps, set the refcounts, list unreferenced chunks dead,
 *    recompute the counters. Map entries whose chunk no container holds are reported as damage by
 *    a following audit.
 *
 * Run it with the pool's I/O stopped for the domain: between steps 1 and 3 map updates would find
 * the index empty.
 */

import { indexRange, type RepairReport, repairMeta } from "./audit.js";
import {
  type ChunkLocation,
  DEAD_KEY_BYTES,
  decodeChunk,
  decodeDeadKey,
  encodeChunk,
  encodeContainer,
  encodeDomain,
  FINGERPRINT_BYTES,
  FULL_FINGERPRINT_BYTES,
  fpKey,
  locationProblem,
  readU32,
  u32Key,
  u32Value,
  zeroContainer,
} from "./codec.js";
import { CounterDeltas, readDomain } from "./dbs.js";
import type { MetaStore } from "./store.js";

/** One chunk record as a container describes it. */
export interface ContainerRecord extends ChunkLocation {
  /** The record header's fingerprint: 32 bytes (16 are accepted; the index keeps the first 16). */
  readonly fingerprint: Uint8Array;
}

export interface RebuildOptions {
  /** Records inserted per transaction. Default 4096. */
  readonly batchSize?: number;
  /** Passed to the repair (see AuditOptions.partitions). */
  readonly partitions?: number;
}

export interface RebuildResult {
  readonly records: number;
  /** Index entries created. */
  readonly chunks: number;
  /** Records whose fingerprint was already indexed (extra copies: dead bytes). */
  readonly duplicates: number;
  /** Records skipped because a field was out of range. */
  readonly invalid: number;
  readonly repair: RepairReport;
}

const DELETE_BATCH = 10_000;

export async function rebuildIndex(
  store: MetaStore,
  domainId: number,
  records: Iterable<ContainerRecord> | AsyncIterable<ContainerRecord>,
  options: RebuildOptions = {},
): Promise<RebuildResult> {
  store.checkOpen();
  const dbs = store.dbs;
  const marker = Buffer.from(`rebuild:${domainId}`, "latin1");
  await dbs.root.childTransaction(() => {
    dbs.meta.putSync(marker, u32Value(1));
  });

  // 1. Forget the domain's derived state.
  const { start, end } = indexRange(domainId, 0, 256);
  for (;;) {
    const removed = await dbs.root.childTransaction(() => {
      const keys = [...dbs.fp.getKeys({ start, ...(end ? { end } : {}), limit: DELETE_BATCH })];
      for (const k of keys) dbs.fp.removeSync(k);
      return keys.length;
    });
    if (removed < DELETE_BATCH) break;
  }
  const deadKeys: Buffer[] = [];
  for (const key of dbs.dead.getKeys()) {
    if (key.length === DEAD_KEY_BYTES && decodeDeadKey(key).domainId === domainId)
      deadKeys.push(Buffer.from(key));
  }
  const journalKeys: Buffer[] = [];
  for (const { key, value } of dbs.journal.getRange()) {
    if (value.length >= 4 && readU32(value) === domainId) journalKeys.push(Buffer.from(key));
  }
  for (let i = 0; i < Math.max(deadKeys.length, journalKeys.length); i += DELETE_BATCH) {
    await dbs.root.childTransaction(() => {
      for (const k of deadKeys.slice(i, i + DELETE_BATCH)) dbs.dead.removeSync(k);
      for (const k of journalKeys.slice(i, i + DELETE_BATCH)) {
        if (dbs.journal.removeSync(k))
          store.journalState.pending = Math.max(0, store.journalState.pending - 1);
      }
    });
  }
  await dbs.root.childTransaction(() => {
    const d = readDomain(dbs, domainId);
    d.liveChunks = 0;
    d.physicalBytes = 0;
    d.uniqueLogicalBytes = 0;
    d.deadChunks = 0;
    d.deadBytes = 0;
    dbs.domains.putSync(u32Key(domainId), encodeDomain(d));
  });

  // 2. Insert the records.
  const batchSize = options.batchSize ?? 4096;
  const seenContainers = new Set<number>();
  let total = 0;
  let chunks = 0;
  let duplicates = 0;
  let invalid = 0;
  const insertBatch = (batch: ContainerRecord[]) =>
    dbs.root.childTransaction(() => {
      const deltas = new CounterDeltas();
      for (const r of batch) {
        if (!seenContainers.has(r.containerId)) {
          seenContainers.add(r.containerId);
          dbs.containers.putSync(u32Key(r.containerId), encodeContainer(zeroContainer()));
        }
        const c = deltas.container(r.containerId);
        c.storedChunks++;
        c.storedBytes += r.storedLength;
        const key = fpKey(domainId, r.fingerprint);
        const existing = dbs.fp.get(key);
        if (existing) {
          const e = decodeChunk(existing);
          if (e.containerId === r.containerId && e.offset === r.offset) {
            // The same record twice (a re-read): not a second copy.
            c.storedChunks--;
            c.storedBytes -= r.storedLength;
            continue;
          }
          c.deadChunks++;
          c.deadBytes += r.storedLength;
          duplicates++;
          continue;
        }
        dbs.fp.putSync(
          key,
          encodeChunk({
            containerId: r.containerId,
            offset: r.offset,
            storedLength: r.storedLength,
            logicalLength: r.logicalLength,
            refcount: 0,
          }),
        );
        chunks++;
      }
      deltas.writeTo(dbs);
    });
  let batch: ContainerRecord[] = [];
  for await (const r of records) {
    total++;
    const length = r.fingerprint.length;
    if (
      (length !== FULL_FINGERPRINT_BYTES && length !== FINGERPRINT_BYTES) ||
      locationProblem(r) !== undefined
    ) {
      invalid++;
      continue;
    }
    batch.push({
      // The index keys the first 16 bytes of the record header's fingerprint (codec.ts).
      fingerprint: Buffer.from(r.fingerprint.subarray(0, FINGERPRINT_BYTES)),
      containerId: r.containerId,
      offset: r.offset,
      storedLength: r.storedLength,
      logicalLength: r.logicalLength,
    });
    if (batch.length >= batchSize) {
      await insertBatch(batch);
      batch = [];
    }
  }
  if (batch.length > 0) await insertBatch(batch);

  // 3. Recount from the maps.
  const repair = await repairMeta(store, {
    domainId,
    ...(options.partitions !== undefined ? { partitions: options.partitions } : {}),
  });
  await dbs.root.childTransaction(() => {
    dbs.meta.removeSync(marker);
  });
  return { records: total, chunks, duplicates, invalid, repair };
}
