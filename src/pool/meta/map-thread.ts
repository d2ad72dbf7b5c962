/**
 * The map transactions of the pool's group commits (MetaStore.writeGrainsMany, called by
 * write-back.ts) run on a thread of their own.
 *
 * Why: on the event loop, that transaction was a third of the main thread's time during a
 * unique-data write (CPU profile, docs/performance.md "ninth session"), and the main thread is
 * what bounds that write: it ran or waited to run 86 % of the time while the machine stayed 28 %
 * idle. Here a worker thread opens the same LMDB environment (as apply-thread.ts does) and runs
 * the same `writeMapInTxn` per write; the main thread packs the updates (12 numbers and 16
 * fingerprint bytes a grain) and reads the answer.
 *
 * What the main thread keeps owning, and how the thread gets its part (MetaStore.writeGrainsMany):
 * - **Order.** A batch starts only once every map transaction queued before it has committed,
 *   and map transactions queued meanwhile wait for its commit. So the map log's and the refcount
 *   journal's sequence numbers still follow commit order.
 * - **The map log.** The current segment is lent to the thread (`MapLog.lend`): it appends each
 *   write's record inside the transaction, as `mapTxn` does, and the main thread takes the new
 *   length back. A batch that did not commit is cut off the segment again.
 * - **The journal's next sequence number** goes with the batch and comes back.
 * - **The index token.** Calls that remove index entries wait for a batch in flight, and a batch
 *   sent while one runs trusts no token (meta/README.md "The index token").
 *
 * One transaction per batch, committed before the answer: a write whose checks fail (an unknown
 * volume, ChunkMissing) is rejected alone and writes nothing, as `writeMapInTxn` reads and checks
 * everything before writing; any other failure aborts the whole batch.
 *
 * The worker script is this module compiled (`map-thread.js`); without it (the TypeScript sources
 * under the test runner) or once the thread died, batches run on the event loop as before. The
 * thread's plumbing is worker-thread.ts.
 */
import { writeSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { encodeSeq, MAPLOG_SEQ_KEY } from "./checkpoint.js";
import { type ChunkEntry, type ChunkLocation, FINGERPRINT_BYTES, mapKey } from "./codec.js";
import type { JournalState, MetaDbs, OpenEnvOptions } from "./dbs.js";
import { MetaError, type MetaErrorCode } from "./errors.js";
import { encodeFrame } from "./maplog-codec.js";
import { type PreparedUpdate, writeMapInTxn } from "./mapwrite.js";
import type { WriteResult } from "./types.js";
import { MetaWorkerThread, serveRequests } from "./worker-thread.js";

const ROLE = "sanmux-map-writer";

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

/** Packs `prepared` (checked already) as update number `i` of `into`. */
export function packUpdate(into: PackedWrites, i: number, p: PreparedUpdate): void {
  const n = into.numbers;
  const at = i * PACKED_NUMBERS;
  n[at] = p.grain;
  let flags = 0;
  if (p.fingerprint !== undefined) {
    flags |= HAS_FINGERPRINT;
    into.fingerprints.set(p.fingerprint.subarray(0, FINGERPRINT_BYTES), i * FINGERPRINT_BYTES);
  }
  if (p.chunk !== undefined) {
    flags |= HAS_CHUNK;
    n[at + 2] = p.chunk.containerId;
    n[at + 3] = p.chunk.offset;
    n[at + 4] = p.chunk.storedLength;
    n[at + 5] = p.chunk.logicalLength;
  }
  if (p.known !== undefined && p.token !== undefined) {
    flags |= HAS_KNOWN;
    n[at + 6] = p.known.containerId;
    n[at + 7] = p.known.offset;
    n[at + 8] = p.known.storedLength;
    n[at + 9] = p.known.logicalLength;
    n[at + 10] = p.known.refcount;
    n[at + 11] = p.token;
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
  const known: ChunkEntry | undefined =
    flags & HAS_KNOWN ? { ...locationAt(n, at + 6), refcount: n[at + 10]! } : undefined;
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
    ...(known !== undefined ? { known, token: n[at + 11]! } : {}),
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

/** The main thread's side: one worker, one batch at a time (MetaStore serialises them). */
export class MapWriteThread {
  private constructor(private readonly thread: MetaWorkerThread<MapBatch, MapBatchResult>) {}

  /**
   * Starts the thread for the environment `env` (the options the main thread opened it with),
   * or returns undefined when the compiled worker script is not there. `script`: for tests.
   * `onDeath`: told once when the thread dies unasked (batches then run on the event loop).
   */
  static start(
    env: OpenEnvOptions,
    script?: string,
    onDeath?: (error: Error) => void,
  ): MapWriteThread | undefined {
    const file = script ?? fileURLToPath(new URL("./map-thread.js", import.meta.url));
    const thread = MetaWorkerThread.start<MapBatch, MapBatchResult>(
      file,
      ROLE,
      "map write thread",
      env,
      onDeath,
    );
    return thread && new MapWriteThread(thread);
  }

  /** Whether batches can go to the thread (false once it died: the caller writes inline). */
  get alive(): boolean {
    return this.thread.alive;
  }

  /**
   * Runs the batch in one transaction on the thread (its packed arrays are transferred);
   * resolves once committed. Rejects with a MetaError when the transaction failed (nothing
   * committed), or with the thread's death (then whether it committed is unknown: MetaStore
   * reads it back).
   */
  write(batch: MapBatch): Promise<MapBatchResult> {
    const { numbers, fingerprints } = batch.writes;
    return this.thread.request(batch, [numbers.buffer, fingerprints.buffer]);
  }

  /** Ends the thread now, as if it died (tests). */
  kill(): Promise<void> {
    return this.thread.kill();
  }

  /** Waits for a batch in flight, then stops the thread (worker-thread.ts). */
  close(): Promise<void> {
    return this.thread.close();
  }
}

// The worker side: run batches until told to close.
serveRequests<MapBatch, MapBatchResult>(ROLE, "map batch", writeBatchInTxn);
