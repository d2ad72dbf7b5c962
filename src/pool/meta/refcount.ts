/**
 * Applying reference-count changes: the journal batch (group commit of refcounts) and the one
 * state transition every refcount change goes through (also used by repair and reclaim).
 *
 * Everything here runs inside a write transaction the caller opened; nothing commits on its own.
 */
import {
  type ChunkEntry,
  type ChunkLocation,
  deadKey,
  decodeChunk,
  decodeJournalRecord,
  encodeChunk,
  FINGERPRINT_BYTES,
  fpKey,
  keyString,
  u32Value,
} from "./codec.js";
import type { CounterDeltas, MetaDbs } from "./dbs.js";

/** A chunk no map references any more: GC may reclaim it (see MetaStore.reclaimDeadChunks). */
export interface DeadChunk extends ChunkLocation {
  readonly domainId: number;
  readonly fingerprint: Buffer;
}

export interface RefcountAnomaly {
  readonly kind: /** A journal delta names a chunk the index does not hold (the delta was dropped). */
    | "missing-chunk"
    /** Applying the deltas would take the refcount below zero (it was clamped at zero). */
    | "negative-refcount"
    /** A journal record could not be decoded (it was dropped). */
    | "corrupt-record";
  readonly domainId?: number;
  /** Hex fingerprint, when known. */
  readonly fingerprint?: string;
  readonly refcount?: number;
  readonly delta?: number;
}

export interface ApplyResult {
  /** Journal records applied (and deleted). */
  readonly records: number;
  /** Distinct chunks whose refcount the batch touched. */
  readonly chunks: number;
  /** Chunks that became dead in this batch (refcount reached 0). */
  readonly dead: readonly DeadChunk[];
  /** Dead chunks that came back to life (deduplicated against before GC reclaimed them). */
  readonly revived: number;
  /** Inconsistencies met (each also leaves the audit something to repair). */
  readonly anomalies: readonly RefcountAnomaly[];
}

/**
 * Moves one chunk to `newRefcount`, keeping the dead table and the counters in step:
 * - live (refcount > 0) ↔ not live changes the domain's live/physical/unique counters;
 * - a chunk at refcount 0 is listed in `dead` (with its domain's and container's dead counters);
 *   a listed chunk whose refcount rises is unlisted ("revived").
 * `listed` says whether the chunk is in the dead table now (callers know it, or look it up).
 * Returns "died" when the chunk was newly listed, "revived" when unlisted.
 */
export function setChunkState(
  dbs: MetaDbs,
  deltas: CounterDeltas,
  domainId: number,
  fingerprint: Uint8Array,
  entry: ChunkEntry,
  newRefcount: number,
  listed: boolean,
  /** The chunk's `fp` key, when the caller has it (else built from domain and fingerprint). */
  key?: Buffer,
): "died" | "revived" | undefined {
  const d = deltas.domain(domainId);
  const wasLive = entry.refcount > 0;
  const isLive = newRefcount > 0;
  if (wasLive !== isLive) {
    const sign = isLive ? 1 : -1;
    d.liveChunks += sign;
    d.physicalBytes += sign * entry.storedLength;
    d.uniqueLogicalBytes += sign * entry.logicalLength;
  }
  if (newRefcount !== entry.refcount) {
    dbs.fp.putSync(
      key ?? fpKey(domainId, fingerprint),
      encodeChunk({ ...entry, refcount: newRefcount }),
    );
  }
  const willList = !isLive;
  if (listed === willList) return undefined;
  const dk = deadKey(entry.containerId, domainId, fingerprint);
  const c = deltas.container(entry.containerId);
  const sign = willList ? 1 : -1;
  d.deadChunks += sign;
  d.deadBytes += sign * entry.storedLength;
  c.deadChunks += sign;
  c.deadBytes += sign * entry.storedLength;
  if (willList) {
    dbs.dead.putSync(dk, u32Value(entry.storedLength));
    return "died";
  }
  dbs.dead.removeSync(dk);
  return "revived";
}

/** Whether a chunk is in the dead table (only chunks at refcount 0 can be). */
export function isListedDead(
  dbs: MetaDbs,
  domainId: number,
  fingerprint: Uint8Array,
  entry: ChunkEntry,
): boolean {
  return (
    entry.refcount === 0 && dbs.dead.doesExist(deadKey(entry.containerId, domainId, fingerprint))
  );
}

/**
 * Applies up to `maxRecords` journal records, oldest first, and deletes them: one batch of the
 * refcount group commit. Run inside a write transaction; the caller adds `deltas` to the
 * counters (`deltas.writeTo(dbs)`) in the same transaction.
 *
 * Deltas are summed per chunk first, so a chunk referenced and released within the batch costs
 * one index update (or none). Every chunk the batch touched that ends at refcount 0 is listed
 * dead, including a chunk whose +1 and -1 cancelled out (a grain overwritten before the batch
 * ran): otherwise it would be stored but never collected.
 */
export function applyJournalInTxn(
  dbs: MetaDbs,
  deltas: CounterDeltas,
  maxRecords: number,
): ApplyResult {
  const keys: Buffer[] = [];
  // fp key (latin1) → the key, its domain and the summed delta
  const sums = new Map<string, { key: Buffer; domainId: number; delta: number }>();
  const anomalies: RefcountAnomaly[] = [];
  for (const { key, value } of dbs.journal.getRange({ limit: maxRecords })) {
    keys.push(key);
    let record: ReturnType<typeof decodeJournalRecord>;
    try {
      record = decodeJournalRecord(value);
    } catch {
      anomalies.push({ kind: "corrupt-record" });
      continue;
    }
    for (const { fingerprint, delta } of record.deltas) {
      const key = fpKey(record.domainId, fingerprint);
      const k = keyString(key);
      const sum = sums.get(k);
      if (sum === undefined) sums.set(k, { key, domainId: record.domainId, delta });
      else sum.delta += delta;
    }
  }
  // Visit chunks in key order: neighbouring index pages are touched together.
  const ordered = [...sums.keys()].sort();
  const dead: DeadChunk[] = [];
  let revived = 0;
  for (const k of ordered) {
    const { key, domainId, delta } = sums.get(k)!;
    const fingerprint = key.subarray(key.length - FINGERPRINT_BYTES); // a view: copied if kept
    // Decoded before the next read: lmdb-js' reused value buffer, no copy.
    const raw = dbs.fp.getBinaryFast(key);
    if (!raw) {
      if (delta !== 0) {
        anomalies.push({
          kind: "missing-chunk",
          domainId,
          fingerprint: fingerprint.toString("hex"),
          delta,
        });
      }
      continue;
    }
    const entry = decodeChunk(raw);
    let refcount = entry.refcount + delta;
    if (refcount < 0) {
      anomalies.push({
        kind: "negative-refcount",
        domainId,
        fingerprint: fingerprint.toString("hex"),
        refcount: entry.refcount,
        delta,
      });
      refcount = 0;
    }
    if (refcount === entry.refcount && refcount > 0) continue;
    const listed = isListedDead(dbs, domainId, fingerprint, entry);
    const change = setChunkState(dbs, deltas, domainId, fingerprint, entry, refcount, listed, key);
    if (change === "died") {
      dead.push({
        domainId,
        fingerprint: Buffer.from(fingerprint),
        containerId: entry.containerId,
        offset: entry.offset,
        storedLength: entry.storedLength,
        logicalLength: entry.logicalLength,
      });
    } else if (change === "revived") {
      revived++;
    }
  }
  for (const key of keys) dbs.journal.removeSync(key);
  return { records: keys.length, chunks: ordered.length, dead, revived, anomalies };
}
