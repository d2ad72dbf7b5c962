/**
 * Relocation of index entries: the metadata half of container compaction (src/pool/gc.ts) and of
 * healing a damaged chunk with a fresh copy. The caller has written a new copy of each chunk
 * (a record sealed for its new place: FORMAT.md §3 binds container and offset) and made it
 * durable; one transaction then points the index at the copies.
 *
 * A move happens only if the entry still names `from`: between the caller's lookup and the
 * transaction, GC may have claimed the chunk, or a rebuild or another relocation may have moved
 * it. A copy that did not move is dead bytes of its container from the start (like the losing
 * copy of an insert race, checks.ts `countDuplicate`).
 *
 * The copy must have the entry's stored length: referenced bytes (volume, domain and snapshot
 * counters) are sums of stored lengths over map entries, and a relocation cannot visit the map
 * entries naming a chunk. GC re-seals the same compressed payload (container/record.ts
 * `resealRecord`), so its copies always do; a copy of another length does not move (counted dead).
 *
 * Counters (README.md "Capacity accounting"), for an entry that moves from container F to T:
 * - T: one more stored chunk;
 * - F: the old copy is no longer named by the index: one more dead chunk, unless the chunk was
 *   listed dead (refcount 0, waiting for GC), in which case F counted it dead already: the listing
 *   moves to T (T's dead counters grow).
 * Domain counters, refcount, logical length, journal records (they name fingerprints, not places)
 * and map entries do not change.
 *
 * Everything runs inside the write transaction the caller opened.
 */
import { type ChunkLocation, deadKey, decodeChunk, encodeChunk, fpKey, u32Value } from "./codec.js";
import type { CounterDeltas, MetaDbs } from "./dbs.js";
import { isListedDead } from "./refcount.js";

export interface Relocation {
  readonly fingerprint: Uint8Array;
  /** Where the index entry must still point for the move to happen. */
  readonly from: { readonly containerId: number; readonly offset: number };
  /** The new copy (its logical and stored lengths must be the entry's). */
  readonly to: {
    readonly containerId: number;
    readonly offset: number;
    readonly storedLength: number;
  };
}

export interface RelocateResult {
  /** Entries that were at `from` and now name `to`. */
  readonly moved: number;
  /**
   * Entries no longer at `from` (or gone), or whose copy has another stored length: their copies
   * at `to` are counted dead.
   */
  readonly stale: number;
  /** Per item of the call, in order: whether it moved. */
  readonly movedItems: readonly boolean[];
}

export function relocateInTxn(
  dbs: MetaDbs,
  deltas: CounterDeltas,
  domainId: number,
  items: readonly Relocation[],
): RelocateResult {
  let moved = 0;
  const movedItems: boolean[] = [];
  for (const r of items) {
    const key = fpKey(domainId, r.fingerprint);
    const raw = dbs.fp.get(key);
    const e = raw ? decodeChunk(raw) : undefined;
    const dest = deltas.container(r.to.containerId);
    dest.storedChunks += 1;
    dest.storedBytes += r.to.storedLength;
    if (
      e === undefined ||
      e.containerId !== r.from.containerId ||
      e.offset !== r.from.offset ||
      e.storedLength !== r.to.storedLength
    ) {
      dest.deadChunks += 1;
      dest.deadBytes += r.to.storedLength;
      movedItems.push(false);
      continue;
    }
    const listed = isListedDead(dbs, domainId, r.fingerprint, e);
    const to: ChunkLocation = {
      containerId: r.to.containerId,
      offset: r.to.offset,
      storedLength: e.storedLength,
      logicalLength: e.logicalLength,
    };
    dbs.fp.putSync(key, encodeChunk({ ...to, refcount: e.refcount }));
    if (listed) {
      dbs.dead.removeSync(deadKey(e.containerId, domainId, r.fingerprint));
      dbs.dead.putSync(deadKey(to.containerId, domainId, r.fingerprint), u32Value(e.storedLength));
      dest.deadChunks += 1;
      dest.deadBytes += e.storedLength;
    } else {
      const src = deltas.container(e.containerId);
      src.deadChunks += 1;
      src.deadBytes += e.storedLength;
    }
    moved++;
    movedItems.push(true);
  }
  return { moved, stale: items.length - moved, movedItems };
}
