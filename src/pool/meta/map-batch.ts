/**
 * The map thread's batches (map-thread.ts, meta/README.md "Map thread"): the staged writes'
 * updates packed for the thread, and the transaction body that writes them. Apart from the
 * thread itself so that it can be loaded without starting to serve (tests run it directly, and
 * their stand-in workers import it).
 */
import { writeSync } from "node:fs";
import { encodeSeq, MAPLOG_SEQ_KEY } from "./checkpoint.js";
import { type ChunkEntry, type ChunkLocation, FINGERPRINT_BYTES, mapKey } from "./codec.js";
import type { JournalState, MetaDbs } from "./dbs.js";
import { MetaError, type MetaErrorCode } from "./errors.js";
import { encodeFrame } from "./maplog-codec.js";
import { type PreparedUpdate, writeMapInTxn } from "./mapwrite.js";
import type { GrainUpdate, WriteResult } from "./types.js";

/** Numbers per packed update (`packUpdate`). */
export const PACKED_NUMBERS = 12;
const HAS_FINGERPRINT = 1;
const HAS_CHUNK = 2;
const HAS_KNOWN = 4;

/** Writes packed for the thread: per update 12 numbers and 16 fingerprint bytes. */
export interface PackedWrites {
  readonly volumes: number[];
  /** Updates per write, in order. */
  readonly counts: number[];
  readonly numbers: Float64Array<ArrayBuffer>;
  readonly fingerprints: Uint8Array<ArrayBuffer>;
}

/**
 * Packs `u` (checked already: MetaStore's `checkUpdate`) as update number `i` of `into`: what
 * `unpackUpdate` turns into the update `writeMapInTxn` takes. As MetaStore prepares one, a hole
 * carries no chunk nor index entry, and the entry only with its token; a fingerprint is packed
 * as its first 16 bytes.
 */
export function packUpdate(into: PackedWrites, i: number, u: GrainUpdate): void {
  const n = into.numbers;
  const at = i * PACKED_NUMBERS;
  n[at] = u.grain;
  let flags = 0;
  const fp = u.fingerprint;
  if (fp !== null) {
    flags |= HAS_FINGERPRINT;
    // As it is when 32 bytes long (always): a subarray per grain was the packing's garbage.
    into.fingerprints.set(
      fp.length === FINGERPRINT_BYTES ? fp : fp.subarray(0, FINGERPRINT_BYTES),
      i * FINGERPRINT_BYTES,
    );
    if (u.chunk) {
      flags |= HAS_CHUNK;
      n[at + 2] = u.chunk.containerId;
      n[at + 3] = u.chunk.offset;
      n[at + 4] = u.chunk.storedLength;
      n[at + 5] = u.chunk.logicalLength;
    }
    if (u.indexed !== undefined && u.indexToken !== undefined) {
      flags |= HAS_KNOWN;
      n[at + 6] = u.indexed.containerId;
      n[at + 7] = u.indexed.offset;
      n[at + 8] = u.indexed.storedLength;
      n[at + 9] = u.indexed.logicalLength;
      n[at + 10] = u.indexed.refcount;
      n[at + 11] = u.indexToken;
    }
  }
  n[at + 1] = flags;
}

/** Update number `i` of `from` as `writeMapInTxn` takes it, for `volume`. */
export function unpackUpdate(from: PackedWrites, i: number, volume: number): PreparedUpdate {
  const n = from.numbers;
  const at = i * PACKED_NUMBERS;
  const grain = n[at]!;
  const flags = n[at + 1]!;
  const fp = i * FINGERPRINT_BYTES;
  // Every update gets the same properties (undefined when absent): one object shape.
  const known: ChunkEntry | undefined =
    flags & HAS_KNOWN
      ? {
          containerId: n[at + 6]!,
          offset: n[at + 7]!,
          storedLength: n[at + 8]!,
          logicalLength: n[at + 9]!,
          refcount: n[at + 10]!,
        }
      : undefined;
  return {
    grain,
    key: mapKey(volume, grain),
    fingerprint:
      flags & HAS_FINGERPRINT
        ? Buffer.from(
            from.fingerprints.buffer,
            from.fingerprints.byteOffset + fp,
            FINGERPRINT_BYTES,
          )
        : undefined,
    chunk: flags & HAS_CHUNK ? locationAt(n, at + 2) : undefined,
    known,
    token: known !== undefined ? n[at + 11]! : undefined,
  };
}

/** The four numbers of a chunk location from `at`, as packUpdate wrote them. */
function locationAt(n: Float64Array, at: number): ChunkLocation {
  return {
    containerId: n[at]!,
    offset: n[at + 1]!,
    storedLength: n[at + 2]!,
    logicalLength: n[at + 3]!,
  };
}

export interface MapBatch {
  readonly writes: PackedWrites;
  /** MetaStore.indexToken() when sent: undefined trusts no `known` entry. */
  readonly indexEpoch: number | undefined;
  readonly journal: { readonly nextSeq: number; readonly suppressed: boolean };
  /** The lent map log segment and the seq of the batch's first record; none without a log. */
  readonly log: { readonly fd: number; readonly seq: number } | undefined;
}

/** A write's outcome: its result, or the MetaError it was rejected with (nothing written). */
export type MapWriteOutcome =
  | { readonly ok: WriteResult; readonly journaled: boolean }
  | {
      readonly error: {
        readonly code: MetaErrorCode;
        readonly message: string;
        readonly fingerprints?: readonly string[];
      };
    };

export interface MapBatchResult {
  readonly outcomes: MapWriteOutcome[];
  /** The journal's next sequence number after the batch, and the records it appended. */
  readonly journalNextSeq: number;
  readonly journalAppended: number;
  /** Records appended to the lent segment: the last seq and their bytes (0 when none). */
  readonly log: { readonly lastSeq: number; readonly bytes: number } | undefined;
}

/**
 * The batch, inside the caller's write transaction (the worker's; tests call it directly):
 * each write checked and written by `writeMapInTxn`, then its map log record appended and the
 * applied seq recorded, as MetaStore.mapTxn does for one write.
 */
export function writeBatchInTxn(dbs: MetaDbs, batch: MapBatch): MapBatchResult {
  const journal: JournalState = {
    nextSeq: batch.journal.nextSeq,
    pending: 0,
    suppressed: batch.journal.suppressed,
  };
  const outcomes: MapWriteOutcome[] = [];
  const { writes } = batch;
  let seq = batch.log?.seq ?? 0;
  let bytes = 0;
  let first = 0;
  for (let w = 0; w < writes.volumes.length; w++) {
    const volume = writes.volumes[w]!;
    const count = writes.counts[w]!;
    const prepared = new Array<PreparedUpdate>(count);
    for (let i = 0; i < count; i++) prepared[i] = unpackUpdate(writes, first + i, volume);
    first += count;
    let r: ReturnType<typeof writeMapInTxn>;
    try {
      r = writeMapInTxn(dbs, journal, volume, prepared, {
        ...(batch.indexEpoch !== undefined ? { indexEpoch: batch.indexEpoch } : {}),
      });
    } catch (error) {
      // Thrown while checking, before anything was written: this write alone is rejected.
      if (!(error instanceof MetaError)) throw error;
      outcomes.push({
        error: {
          code: error.code,
          message: error.message,
          ...(error.fingerprints ? { fingerprints: error.fingerprints } : {}),
        },
      });
      continue;
    }
    if (batch.log !== undefined) {
      const frame = encodeFrame(seq, { op: "write", volume, grains: prepared });
      let done = 0;
      while (done < frame.length) {
        done += writeSync(batch.log.fd, frame, done, frame.length - done);
      }
      bytes += frame.length;
      dbs.meta.putSync(MAPLOG_SEQ_KEY, encodeSeq(seq));
      seq++;
    }
    outcomes.push({
      ok: { changed: r.changed, inserted: r.inserted, duplicates: r.duplicates },
      journaled: r.journaled,
    });
  }
  return {
    outcomes,
    journalNextSeq: journal.nextSeq,
    journalAppended: journal.pending,
    log: batch.log !== undefined ? { lastSeq: seq - 1, bytes } : undefined,
  };
}
