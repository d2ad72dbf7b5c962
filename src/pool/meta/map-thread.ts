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
 * under the test runner) or once the thread died, batches run on the event loop as before.
 */
import { existsSync, writeSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { encodeSeq, MAPLOG_SEQ_KEY } from "./checkpoint.js";
import { type ChunkEntry, FINGERPRINT_BYTES, mapKey } from "./codec.js";
import { type JournalState, type MetaDbs, type OpenEnvOptions, openDbs } from "./dbs.js";
import { MetaError, MetaErrorCode } from "./errors.js";
import { encodeFrame } from "./maplog-codec.js";
import { type PreparedUpdate, writeMapInTxn } from "./mapwrite.js";
import type { WriteResult } from "./types.js";

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
    chunk:
      flags & HAS_CHUNK
        ? {
            containerId: n[at + 2]!,
            offset: n[at + 3]!,
            storedLength: n[at + 4]!,
            logicalLength: n[at + 5]!,
          }
        : undefined,
    ...(known !== undefined ? { known, token: n[at + 11]! } : {}),
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

type Request = { readonly op: "write"; readonly id: number; readonly batch: MapBatch };

interface Reply {
  readonly id: number;
  readonly result?: MapBatchResult;
  readonly error?: { readonly message: string; readonly code?: string };
}

/** The main thread's side: one worker, one batch at a time (MetaStore serialises them). */
export class MapWriteThread {
  private readonly pending = new Map<
    number,
    { resolve(r: MapBatchResult): void; reject(e: Error): void }
  >();
  private nextId = 1;
  private readonly inflight = new Set<Promise<unknown>>();
  private dead: Error | undefined;
  private readonly exited: Promise<void>;
  private closing = false;

  private constructor(
    private readonly worker: Worker,
    /** Told once when the thread dies unasked (batches then run on the event loop). */
    private readonly onDeath?: (error: Error) => void,
  ) {
    worker.unref(); // referenced only while a batch is in flight
    worker.on("message", (m: Reply) => {
      const p = this.pending.get(m.id);
      if (p === undefined) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) worker.unref();
      if (m.error !== undefined) {
        p.reject(
          new MetaError(
            (m.error.code ?? MetaErrorCode.CommitFailed) as MetaErrorCode,
            m.error.message,
          ),
        );
      } else {
        p.resolve(m.result!);
      }
    });
    const fail = (error: Error) => {
      if (this.dead === undefined && !this.closing) this.onDeath?.(error);
      this.dead ??= error;
      for (const p of this.pending.values()) p.reject(error);
      this.pending.clear();
    };
    worker.on("error", fail);
    this.exited = new Promise((resolve) => {
      worker.on("exit", (code) => {
        fail(new Error(`map write thread exited with code ${code}`));
        resolve();
      });
    });
  }

  /**
   * Starts the thread for the environment `env` (the options the main thread opened it with),
   * or returns undefined when the compiled worker script is not there. `script`: for tests.
   */
  static start(
    env: OpenEnvOptions,
    script?: string,
    onDeath?: (error: Error) => void,
  ): MapWriteThread | undefined {
    const file = script ?? fileURLToPath(new URL("./map-thread.js", import.meta.url));
    if (!existsSync(file)) return undefined;
    const data = { role: ROLE, env: { path: env.path, noSync: env.noSync, mapSize: env.mapSize } };
    return new MapWriteThread(new Worker(file, { workerData: data }), onDeath);
  }

  /** Whether batches can go to the thread (false once it died: the caller writes inline). */
  get alive(): boolean {
    return this.dead === undefined;
  }

  /**
   * Runs the batch in one transaction on the thread; resolves once committed. Rejects with a
   * MetaError when the transaction failed (nothing committed), or with the thread's death (then
   * whether it committed is unknown: MetaStore reads it back).
   */
  write(batch: MapBatch): Promise<MapBatchResult> {
    if (this.dead !== undefined) return Promise.reject(this.dead);
    const id = this.nextId++;
    const done = new Promise<MapBatchResult>((resolve, reject) => {
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(id, { resolve, reject });
      const { numbers, fingerprints } = batch.writes;
      this.worker.postMessage({ op: "write", id, batch } satisfies Request, [
        numbers.buffer,
        fingerprints.buffer,
      ]);
    });
    this.inflight.add(done);
    const settled = () => this.inflight.delete(done);
    done.then(settled, settled);
    return done;
  }

  /** Ends the thread now, as if it died (tests of what follows a death). */
  async kill(): Promise<void> {
    await this.worker.terminate();
    await this.exited;
  }

  /**
   * Waits for a batch in flight, then stops the thread. Its environment handle closes with the
   * thread; the main thread closes the environment afterwards.
   */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.allSettled([...this.inflight]);
    // Referenced while it closes: an unreferenced worker would let the process exit first.
    this.worker.ref();
    if (this.dead === undefined) this.worker.postMessage({ op: "close" });
    await Promise.race([this.exited, new Promise((r) => setTimeout(r, 5000).unref())]);
    if (this.dead === undefined) await this.worker.terminate();
  }
}

// The worker side: run batches until told to close.
const data = workerData as { role?: string; env?: OpenEnvOptions } | null;
if (!isMainThread && parentPort !== null && data?.role === ROLE && data.env) {
  const port = parentPort;
  const dbs = openDbs(data.env);
  port.on("message", (m: Request | { op: "close" }) => {
    if (m.op === "close") {
      // Closing this thread's handle leaves the environment open for the main thread.
      Promise.resolve(dbs.root.close()).finally(() => port.close());
      return;
    }
    try {
      const result = dbs.root.transactionSync(() => writeBatchInTxn(dbs, m.batch));
      port.postMessage({ id: m.id, result } satisfies Reply);
    } catch (error) {
      // Nothing was committed (the main thread cuts the log back). A MetaError keeps its code;
      // anything else (LMDB's, a failed log append) is a failed commit, as on the main thread.
      const message =
        error instanceof MetaError
          ? error.message
          : `metadata commit failed (map batch): ${(error as Error).message}`;
      const code = error instanceof MetaError ? error.code : MetaErrorCode.CommitFailed;
      port.postMessage({ id: m.id, error: { message, code } } satisfies Reply);
    }
  });
}
