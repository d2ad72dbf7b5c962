/**
 * MetaStore: the metadata of the deduplicated pool, in one LMDB environment.
 *
 * - Fingerprint index, per dedup domain: fingerprint → chunk location + reference count.
 * - Block maps, per volume: grain index → fingerprint; an absent entry is a hole (reads as
 *   zeros). All-zero grains are never stored: the caller writes them as holes.
 * - Reference-count journal: map updates append refcount deltas in the same transaction; a batch
 *   (applyJournal, usually driven by RefcountApplier) applies them later. See README.md for the
 *   crash-consistency argument.
 * - Counters for capacity accounting per volume, per domain and per container.
 * - Snapshots of block maps (snapshot.ts): O(1) to take; overwrites of what a snapshot sees move
 *   the old entry, with its reference, to the old versions; map copies and clones by reference
 *   (copy.ts). The map mutations themselves are in mapwrite.ts.
 *
 * Identifiers: volumes, domains and containers are u32 numbers that the catalog (volumes,
 * domains) and the container store (containers) assign; a number is never reused while anything
 * here still refers to it. Grains are non-negative safe integers.
 *
 * Concurrency: one MetaStore per environment and per process. Mutations are queued as lmdb-js
 * asynchronous child transactions: they run in call order, mutations queued in the same event
 * turn share one LMDB commit (group commit), and each is all-or-nothing (a rejected mutation
 * changed nothing). Reads are synchronous and see the last committed state.
 *
 * Durability: a mutation's promise resolves when it is committed (visible to every later read);
 * it is durable once a later `flush()` resolves. Commits become durable in commit order.
 *
 * Buffers: fingerprints passed in are copied before the call returns; the caller may reuse them at
 * once. Buffers returned are fresh copies owned by the caller.
 */

import { existsSync, fstatSync } from "node:fs";
import { join } from "node:path";
import { applyBatch, JournalApplyThread } from "./apply-thread.js";
import {
  type AuditOptions,
  type AuditReport,
  auditMeta,
  auditMetaYielding,
  type RepairReport,
  repairMeta,
} from "./audit.js";
import {
  type CheckpointResult,
  encodeSeq,
  MAPLOG_SEQ_KEY,
  readAppliedSeq,
  writeCheckpoint,
} from "./checkpoint.js";
import {
  checkCount,
  checkFingerprint,
  checkGrain,
  checkLocation,
  checkU32,
  countDuplicate,
  countStored,
  locationOf,
  ownFingerprint,
  sameLocation,
  unknownVolume,
  validGrainSize,
} from "./checks.js";
import {
  type ChunkEntry,
  type ChunkLocation,
  DEAD_KEY_BYTES,
  type DomainCounters,
  decodeChunk,
  decodeContainer,
  decodeDeadKey,
  decodeDomain,
  decodeMapKey,
  decodeVolume,
  encodeChunk,
  FINGERPRINT_BYTES,
  fpKey,
  LONG_FINGERPRINT_FORMATS,
  MAX_GRAIN,
  META_FORMAT_VERSION,
  mapKey,
  mapValueFingerprint,
  readU32,
  readU64,
  SNAPSHOT_FORMAT_VERSION,
  u32Key,
  u32Value,
  zeroDomain,
} from "./codec.js";
import { type CopyOptions, type CopyResult, type CopySource, copyGrains } from "./copy.js";
import {
  CounterDeltas,
  FpReader,
  type JournalState,
  type MetaDbs,
  type OpenEnvOptions,
  openDbs,
  type ReadOpts,
  readContainer,
  readDomain,
} from "./dbs.js";
import { MetaError, MetaErrorCode } from "./errors.js";
import { type MapBatchResult, PACKED_NUMBERS, type PackedWrites, packUpdate } from "./map-batch.js";
import { MapWriteThread } from "./map-thread.js";
import { MapLog, type MapLogLogger } from "./maplog.js";
import type { MapRecord } from "./maplog-codec.js";
import { createVolumeInTxn, type PreparedUpdate, writeMapInTxn } from "./mapwrite.js";
import {
  type ContainerRecord,
  type RebuildOptions,
  type RebuildResult,
  rebuildIndex,
} from "./rebuild.js";
import { type ApplyResult, applyJournalInTxn, type DeadChunk } from "./refcount.js";
import { type RelocateResult, type Relocation, relocateInTxn } from "./relocate.js";
import { checkRebuildable, type ReplayOptions, type ReplayResult, replayMapLog } from "./replay.js";
import {
  checkLiveSnapshot,
  createSnapshotInTxn,
  type DeleteSnapshotOptions,
  type DeleteSnapshotResult,
  deleteSnapshot,
  forgetVolumeInTxn,
  liveSnapshots,
  RELEASE_BATCH,
  releaseSomeOldVersionsInTxn,
  retireSnapshotsInTxn,
  snapshotEntries,
  snapshotGrain,
  unfinishedSnapshotDeletions,
} from "./snapshot.js";
import type {
  ApplyOptions,
  ContainerUsage,
  DomainSnapshotUsage,
  DomainUsage,
  ExtentStatus,
  GrainUpdate,
  InsertResult,
  MapEntry,
  PoolUsage,
  ReadOptions,
  ResolvedGrain,
  SnapshotUsage,
  VolumeUsage,
  WriteResult,
} from "./types.js";

export type { CheckpointResult } from "./checkpoint.js";
export type { ChunkEntry, ChunkLocation, ContainerCounters } from "./codec.js";
export type { CopyOptions, CopyResult, CopySource } from "./copy.js";
export type { JournalState } from "./dbs.js";
export type { MapLogLogger } from "./maplog.js";
export type { ApplyResult, DeadChunk, RefcountAnomaly } from "./refcount.js";
export type { RelocateResult, Relocation } from "./relocate.js";
export type { ReplayOptions, ReplayResult } from "./replay.js";
export type { DeleteSnapshotOptions, DeleteSnapshotResult } from "./snapshot.js";
export type {
  ApplyOptions,
  ContainerUsage,
  DomainSnapshotUsage,
  DomainUsage,
  ExtentStatus,
  GrainUpdate,
  InsertResult,
  MapEntry,
  PoolUsage,
  ReadOptions,
  ResolvedGrain,
  SnapshotUsage,
  VolumeUsage,
  WriteResult,
} from "./types.js";

export interface MetaStoreOptions {
  /** Directory of the LMDB environment (created if absent). */
  readonly path: string;
  /**
   * Grain size in bytes, a power of two from 4 KiB to 64 KiB. Fixed when the store is created;
   * when reopening, omit it or give the same value. Default 4096.
   */
  readonly grainSize?: number;
  /** Skip fsync: only for benchmarks and tests. A power loss may then lose or corrupt anything. */
  readonly noSync?: boolean;
  /** Initial LMDB map size in bytes. */
  readonly mapSize?: number;
  /**
   * The map log (README.md "Map log"): every map transaction is also appended to a redo log in
   * this directory, so that the maps can be rebuilt without the LMDB environment. Absent: no
   * log (tests of other parts, benchmarks).
   */
  readonly mapLog?: MapLogConfig;
  /**
   * Apply the refcount journal's batches on a thread of their own (apply-thread.ts): true, or
   * the compiled worker script (tests). Default false: on the event loop. Without the compiled
   * script, or once the thread died, batches are applied on the event loop.
   */
  readonly applyThread?: boolean | string;
  /** Told when the apply thread dies while the store is open (batches go on, on the event loop). */
  readonly onApplyThreadDeath?: (error: Error) => void;
  /**
   * Run `writeGrainsMany`'s transactions on a thread of their own (map-thread.ts): true, or the
   * compiled worker script (tests). Default false: on the event loop, as are they without the
   * compiled script or once the thread died.
   */
  readonly mapThread?: boolean | string;
  /** Told when the map thread dies while the store is open (batches go on, on the event loop). */
  readonly onMapThreadDeath?: (error: Error) => void;
}

export interface MapLogConfig {
  readonly dir: string;
  /** Segment size before rotation. Default 64 MiB. */
  readonly segmentBytes?: number;
  /**
   * A checkpoint starts when the log since the last one exceeds max(this, the last checkpoint's
   * size). Default 64 MiB.
   */
  readonly checkpointMinBytes?: number;
  /** Entries per checkpoint batch (the writer yields between batches). Default 16384. */
  readonly checkpointBatch?: number;
  /**
   * Opening for `pool rebuild`: the environment is new and the log is replayed into it
   * (replayMapLog) instead of being checked against it.
   */
  readonly rebuild?: boolean;
  readonly logger?: MapLogLogger;
}

const UNMAP_BATCH = 8192;
const CHECKPOINT_MIN_BYTES = 64 * 1024 * 1024;
const DEFAULT_MAX_RECORDS = 65536;

/**
 * One `writeGrains` update, checked and in the form `writeMapInTxn` takes. A module function,
 * not a closure made per call: V8 optimizes each new closure of a hot function again (32
 * TurboFan compiles of it in a 2 GiB bench run, when it was one).
 */
function prepareUpdate(volume: number, u: GrainUpdate): PreparedUpdate {
  checkUpdate(u);
  const known = u.indexed !== undefined && u.indexToken !== undefined && u.fingerprint !== null;
  // Every property always there (undefined when absent): one object shape for every update.
  return {
    grain: u.grain,
    key: mapKey(volume, u.grain),
    fingerprint: u.fingerprint === null ? undefined : ownFingerprint(u.fingerprint),
    chunk: u.chunk && u.fingerprint !== null ? locationOf(u.chunk) : undefined,
    known: known ? u.indexed : undefined,
    token: known ? u.indexToken : undefined,
  };
}

/** What `writeGrains` refuses in an update (throws InvalidArgument). */
function checkUpdate(u: GrainUpdate): void {
  checkGrain(u.grain);
  if (u.fingerprint === null) return;
  checkFingerprint(u.fingerprint);
  if (u.chunk) checkLocation(u.chunk);
}

/** `updates` by grain, the last update of a grain winning: the same array when ascending. */
function inGrainOrder(updates: readonly GrainUpdate[]): readonly GrainUpdate[] {
  if (ascending(updates)) return updates; // what the pool's writes give: no map, no sort
  const byGrain = new Map<number, GrainUpdate>();
  for (const u of updates) byGrain.set(u.grain, u);
  return [...byGrain.values()].sort((a, b) => a.grain - b.grain);
}

/** `writeGrains`' updates checked and prepared, in grain order (`inGrainOrder`). */
function prepareUpdates(volume: number, updates: readonly GrainUpdate[]): PreparedUpdate[] {
  const ordered = inGrainOrder(updates);
  const prepared = new Array<PreparedUpdate>(ordered.length);
  for (let i = 0; i < ordered.length; i++) prepared[i] = prepareUpdate(volume, ordered[i]!);
  return prepared;
}

/** A settled write with its ChunkMissing fingerprints as its caller gave them (missingAsGiven). */
function settledAsGiven(
  r: PromiseSettledResult<WriteResult>,
  updates: readonly GrainUpdate[],
): PromiseSettledResult<WriteResult> {
  return r.status === "fulfilled"
    ? r
    : { status: "rejected", reason: missingAsGiven(r.reason, updates) };
}

/** resolveGrains of at most this many head grains reads them by direct gets (see there). */
const DIRECT_GETS_UP_TO = 4;

export class MetaStore {
  readonly grainSize: number;
  /** @internal For audit.ts and rebuild.ts. */
  readonly dbs: MetaDbs;
  /** @internal */
  readonly journalState: JournalState;
  private readonly journalListeners = new Set<(pending: number) => void>();
  /** One reused-buffer index reader per domain (lookupChunk). */
  private readonly fpReaders = new Map<number, FpReader>();
  /**
   * Index epoch (indexToken): bumped when a call that may remove or move index entries starts
   * and again when it settles; `indexChanging` counts those in flight.
   */
  private indexEpoch = 0;
  private indexChanging = 0;
  private closed = false;
  /** @internal The map log, when configured. */
  mapLog: MapLog | undefined;
  /** @internal The seq the next logged map transaction gets. */
  nextMapSeq = 1;
  /** @internal False while replaying the log (replay.ts): replayed transactions are not logged. */
  logMaps = true;
  private mapLogConfig: MapLogConfig | undefined;
  private noSync = false;
  /** The options the environment was opened with (`envOptions`). */
  private env: OpenEnvOptions = { path: "" };
  private checkpointing: Promise<unknown> | undefined;
  private stopCheckpoint = false;
  private checkpointWanted = false;
  /** Where journal batches are applied when not on the event loop (options.applyThread). */
  private applyThread: JournalApplyThread | undefined;

  /** Whether refcount journal batches run on their own thread now (options.applyThread). */
  get journalApplyThread(): boolean {
    return this.applyThread?.alive === true;
  }
  /** Where `writeGrainsMany` runs its transactions when not on the event loop (options.mapThread). */
  private mapThread: MapWriteThread | undefined;
  /** Map transactions queued on the event loop and not settled yet (`mapTxn`). */
  private readonly mapTxnsInFlight = new Set<Promise<unknown>>();
  /** The map thread's batch in flight (settles, never rejects): map transactions wait for it. */
  private mapBatch: Promise<void> | undefined;

  /** Whether `writeGrainsMany` runs its transactions on their own thread now (options.mapThread). */
  get mapWriteThread(): boolean {
    return this.mapThread?.alive === true;
  }

  private constructor(dbs: MetaDbs, grainSize: number, journal: JournalState) {
    this.dbs = dbs;
    this.grainSize = grainSize;
    this.journalState = journal;
  }

  static async open(options: MetaStoreOptions): Promise<MetaStore> {
    const wanted = options.grainSize;
    if (wanted !== undefined && !validGrainSize(wanted)) {
      throw new MetaError(
        MetaErrorCode.InvalidArgument,
        `grain size ${wanted} is not a power of two in 4096..65536`,
      );
    }
    // The map log first: a missing environment next to a log that holds maps is refused before
    // an empty environment is created in its place (a later start would take that for the
    // store and cut the log back to it).
    let mapLog: MapLog | undefined;
    if (options.mapLog) {
      mapLog = await MapLog.open(options.mapLog.dir, {
        noSync: options.noSync === true,
        ...(options.mapLog.segmentBytes !== undefined
          ? { segmentBytes: options.mapLog.segmentBytes }
          : {}),
        logger: options.mapLog.logger,
      });
      if (
        options.mapLog.rebuild !== true &&
        mapLog.lastSeq > 0 &&
        !existsSync(join(options.path, "data.mdb"))
      ) {
        await mapLog.close();
        throw new MetaError(
          MetaErrorCode.MapLogUnusable,
          `there is no metadata store at ${options.path}, but the map log in ` +
            `${options.mapLog.dir} holds maps up to record ${mapLog.lastSeq}: run ` +
            "`sanmux pool rebuild` to rebuild the store from the containers and the log",
        );
      }
    }
    const dbs = openDbs(options);
    let fresh = false;
    try {
      const grainSize = dbs.root.transactionSync(() => {
        const format = dbs.meta.get(Buffer.from("format"));
        const stored = dbs.meta.get(Buffer.from("grainSize"));
        if (!format) {
          fresh = true;
          dbs.meta.putSync(Buffer.from("format"), u32Value(META_FORMAT_VERSION));
          const g = wanted ?? 4096;
          dbs.meta.putSync(Buffer.from("grainSize"), u32Value(g));
          return g;
        }
        const version = readU32(format);
        if (
          version === LONG_FINGERPRINT_FORMATS.plain ||
          version === LONG_FINGERPRINT_FORMATS.snapshots
        ) {
          // The same layout with 32-byte fingerprints (README "Fingerprints: 16 bytes"): the
          // rebuild converts it, from the containers and the map log (its records replay cut).
          throw new MetaError(
            MetaErrorCode.Incompatible,
            `the metadata store at ${options.path} is format ${version}, which keys chunks by ` +
              `32-byte fingerprints; this version keys them by 16 bytes (format ` +
              `${META_FORMAT_VERSION}): run \`sanmux pool rebuild\` to rebuild it from the ` +
              "containers and the map log (the old store is moved aside, not deleted)",
          );
        }
        if (version !== META_FORMAT_VERSION && version !== SNAPSHOT_FORMAT_VERSION) {
          // Formats 1 and 2 are the pre-release layout (README "Key layout"): not converted.
          throw new MetaError(
            MetaErrorCode.Incompatible,
            `metadata format ${version} is not ${META_FORMAT_VERSION} or ${SNAPSHOT_FORMAT_VERSION}`,
          );
        }
        const g = stored ? readU32(stored) : 4096;
        if (wanted !== undefined && wanted !== g) {
          throw new MetaError(
            MetaErrorCode.Incompatible,
            `store has grain size ${g}, not ${wanted}`,
          );
        }
        return g;
      });
      let nextSeq = 0;
      for (const key of dbs.journal.getKeys({ reverse: true, limit: 1 }))
        nextSeq = readU64(key, 0) + 1;
      const pending = dbs.journal.getCount();
      const store = new MetaStore(dbs, grainSize, { nextSeq, pending });
      if (options.mapLog && mapLog) {
        store.mapLog = mapLog;
        store.mapLogConfig = options.mapLog;
        store.noSync = options.noSync === true;
        await store.reconcileMapLog(fresh);
      }
      store.env = {
        path: options.path,
        noSync: options.noSync === true,
        ...(options.mapSize !== undefined ? { mapSize: options.mapSize } : {}),
      };
      // Last: nothing below can fail and leave the thread running on a closed environment.
      if (options.applyThread) {
        store.applyThread = JournalApplyThread.start(
          options,
          typeof options.applyThread === "string" ? options.applyThread : undefined,
          options.onApplyThreadDeath,
        );
      }
      if (options.mapThread) {
        store.mapThread = MapWriteThread.start(
          options,
          typeof options.mapThread === "string" ? options.mapThread : undefined,
          options.onMapThreadDeath,
        );
      }
      return store;
    } catch (err) {
      await mapLog?.close().catch(() => undefined);
      await dbs.root.close();
      throw err;
    }
  }

  /**
   * At open: settles the map log against the environment (README.md "Map log", "Crash
   * safety"). A = the environment's last applied seq, L = the log's last record.
   * - L > A: records of transactions that never committed (a crash after their append): cut.
   * - L < A: the log lost records the environment has (a power loss before the log's fdatasync,
   *   or a deleted log): appends continue at A + 1 in a new segment, and a checkpoint is taken
   *   at once (the maps are not rebuildable until it is done).
   * - No checkpoint (a data directory from before the map log, or a new one): one is taken.
   * - A fresh environment next to a log that holds maps: refused, unless opened for rebuild.
   */
  private async reconcileMapLog(fresh: boolean): Promise<void> {
    const log = this.mapLog!;
    const cfg = this.mapLogConfig!;
    const logger = cfg.logger;
    if (cfg.rebuild) {
      this.logMaps = false;
      return;
    }
    const applied = readAppliedSeq(this.dbs);
    const last = log.lastSeq;
    if (fresh && last > 0) {
      throw new MetaError(
        MetaErrorCode.MapLogUnusable,
        `the metadata store is new but the map log in ${log.dir} holds ` +
          `maps up to record ${last}: run \`sanmux pool rebuild\` to rebuild them`,
      );
    }
    const checkpoint = log.newestCheckpoint;
    if (checkpoint && checkpoint.seq > applied) {
      throw new MetaError(
        MetaErrorCode.MapLogUnusable,
        `the metadata store has applied map log record ${applied}, older than the checkpoint at ` +
          `${checkpoint.seq}: the store is not the one the log belongs to (run \`sanmux pool rebuild\`)`,
      );
    }
    if (last > applied) {
      const cut = await log.cutAfter(applied);
      logger?.warn(
        { cut: cut.records, appliedSeq: applied, keptIn: cut.keptIn },
        "map log: cut records of transactions that never committed",
      );
    }
    this.nextMapSeq = applied + 1;
    // A gap left by an earlier re-basing whose checkpoint did not finish (closed meanwhile).
    const gap = checkpoint ? log.gapAfter(checkpoint.seq) : undefined;
    if (gap !== undefined && gap <= applied) {
      logger?.warn(
        { missingSeq: gap, checkpointSeq: checkpoint?.seq },
        "map log: records are missing after the last checkpoint; taking a checkpoint now (maps " +
          "are not rebuildable until it is written)",
      );
      this.checkpointWanted = true;
    }
    if (last < applied) {
      logger?.warn(
        { logSeq: last, appliedSeq: applied },
        "map log: the log lacks records the store has; taking a checkpoint now (maps are not " +
          "rebuildable until it is written)",
      );
      this.checkpointWanted = true;
    } else if (!checkpoint) {
      if (applied > 0 || fresh) {
        // A new store: the empty checkpoint is written at once.
      } else {
        logger?.warn(
          { dir: log.dir },
          "map log: none yet (data directory from before the map log): the maps are not " +
            "rebuildable until the first checkpoint, which starts now",
        );
      }
      this.checkpointWanted = true;
    }
    if (this.checkpointWanted) {
      const empty = this.dbs.volumes.getCount() === 0;
      if (empty) await this.checkpointNow();
      else this.startCheckpoint();
    }
  }

  /**
   * Whether the maps can be rebuilt from the map log in `dir` (replay.ts checkRebuildable): run
   * before moving a store aside for a rebuild.
   */
  static checkMapLogRebuildable(dir: string): ReturnType<typeof checkRebuildable> {
    return checkRebuildable(dir);
  }

  /** Waits for queued mutations, then closes the environment. The store is unusable afterwards. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.stopCheckpoint = true;
    await this.checkpointing?.catch(() => undefined);
    this.closed = true;
    // Their batches in flight first: the threads' transactions must end before the environment.
    await this.mapThread?.close();
    await this.applyThread?.close();
    await this.dbs.root.close();
    await this.mapLog?.close();
  }

  /** Resolves once every mutation that resolved before this call is durable on disk. */
  async flush(): Promise<void> {
    this.checkOpen();
    await Promise.all([this.dbs.root.flushed, this.mapLog?.sync()]);
  }

  // -------------------------------------------------------------------------------------------
  // Map log (maplog.ts, checkpoint.ts, replay.ts)

  /**
   * @internal Runs a map transaction body as a child transaction; with the map log on, appends
   * `record(result)` to the log inside the same transaction (after the body succeeded) and
   * records its seq as `maplog:seq` in `meta`. The append is a synchronous write: a process crash
   * cannot leave the environment with a committed transaction the log lacks.
   */
  mapTxn<T>(body: () => T, record: (result: T) => MapRecord | undefined): Promise<T> {
    // After the map thread's batch in flight (writeGrainsMany): sequence numbers follow commits.
    const batch = this.mapBatch;
    if (batch !== undefined) return batch.then(() => this.mapTxn(body, record));
    const txn = this.mapTxnNow(body, record);
    this.mapTxnsInFlight.add(txn);
    const settled = () => this.mapTxnsInFlight.delete(txn);
    txn.then(settled, settled);
    return txn;
  }

  private mapTxnNow<T>(body: () => T, record: (result: T) => MapRecord | undefined): Promise<T> {
    const log = this.mapLog;
    if (!log || !this.logMaps) return this.dbs.root.childTransaction(body);
    let appended = false;
    return this.dbs.root
      .childTransaction(() => {
        const result = body();
        const rec = record(result);
        if (rec) {
          const seq = this.nextMapSeq;
          log.append(seq, rec);
          this.nextMapSeq = seq + 1;
          this.dbs.meta.putSync(MAPLOG_SEQ_KEY, encodeSeq(seq));
          appended = true;
        }
        return result;
      })
      .then(
        (result) => {
          if (appended) this.afterMapAppend();
          return result;
        },
        (err: unknown) => {
          if (appended) {
            // The commit failed after the record was written: the log holds a transaction the
            // store lacks. A checkpoint supersedes it (replay starts after its seq).
            this.mapLogConfig?.logger?.error(
              { err },
              "map log: a logged transaction's commit failed; taking a checkpoint",
            );
            this.startCheckpoint();
          }
          throw err;
        },
      );
  }

  private afterMapAppend(): void {
    const log = this.mapLog!;
    log.scheduleSync((err) =>
      this.mapLogConfig?.logger?.error({ err }, "map log: fdatasync failed"),
    );
    const min = this.mapLogConfig?.checkpointMinBytes ?? CHECKPOINT_MIN_BYTES;
    const threshold = Math.max(min, log.newestCheckpoint?.bytes ?? 0);
    if (log.bytesSinceCheckpoint > threshold) this.startCheckpoint();
  }

  /** Starts a checkpoint in the background unless one is running (then one follows it). */
  private startCheckpoint(): void {
    if (!this.mapLog || this.closed || this.stopCheckpoint) return;
    if (this.checkpointing) {
      this.checkpointWanted = true;
      return;
    }
    this.checkpointWanted = false;
    const run = this.checkpointNow()
      .catch((err: unknown) =>
        this.mapLogConfig?.logger?.error({ err }, "map log: checkpoint failed"),
      )
      .finally(() => {
        this.checkpointing = undefined;
        if (this.checkpointWanted) this.startCheckpoint();
      });
    this.checkpointing = run;
  }

  /**
   * Writes a map log checkpoint now (waiting for one under way first) and deletes what it makes
   * unnecessary. Resolves with its figures (undefined without a map log, or when stopped).
   */
  async checkpointNow(): Promise<CheckpointResult | undefined> {
    this.checkOpen();
    const log = this.mapLog;
    if (!log) return undefined;
    const r = await writeCheckpoint(this.dbs, log, this.grainSize, {
      noSync: this.noSync,
      ...(this.mapLogConfig?.checkpointBatch !== undefined
        ? { batchEntries: this.mapLogConfig.checkpointBatch }
        : {}),
      stopped: () => this.stopCheckpoint,
    });
    if (r) {
      this.mapLogConfig?.logger?.info(
        { seq: r.seq, bytes: r.bytes, entries: r.entries, durationMs: r.durationMs },
        "map log: checkpoint written",
      );
    }
    return r;
  }

  /** Waits for the background checkpoint under way, if any (tests). */
  async checkpointIdle(): Promise<void> {
    while (this.checkpointing) await this.checkpointing;
  }

  /** The map log's state: seqs, segments, checkpoints (undefined without one). */
  mapLogStatus():
    | {
        nextSeq: number;
        appliedSeq: number;
        segments: number;
        segmentBytes: number;
        checkpointSeq: number | undefined;
        checkpointBytes: number | undefined;
      }
    | undefined {
    const log = this.mapLog;
    if (!log) return undefined;
    return {
      nextSeq: this.nextMapSeq,
      appliedSeq: readAppliedSeq(this.dbs),
      segments: log.segments.length,
      segmentBytes: log.segmentBytesTotal,
      checkpointSeq: log.newestCheckpoint?.seq,
      checkpointBytes: log.newestCheckpoint?.bytes,
    };
  }

  /**
   * For `pool rebuild`, on a store opened with `mapLog.rebuild` (a new environment): loads the
   * newest checkpoint and replays the records after it (replay.ts), without logging them.
   * Refcounts and counters are not recounted: run repair() afterwards.
   */
  async replayMapLog(options: ReplayOptions = {}): Promise<ReplayResult> {
    this.checkOpen();
    const result = await replayMapLog(this, options);
    this.nextMapSeq = result.lastSeq + 1;
    this.logMaps = true;
    return result;
  }

  // -------------------------------------------------------------------------------------------
  // Volumes

  /** Registers a volume number in a domain (idempotent for the same domain). */
  async createVolume(volume: number, domainId: number): Promise<void> {
    this.checkOpen();
    checkU32("volume", volume);
    checkU32("domainId", domainId);
    await this.mapTxn(
      () => createVolumeInTxn(this.dbs, volume, domainId),
      (created) => (created ? { op: "volumeCreate", volume, domainId } : undefined),
    );
  }

  /** The domain of a registered volume. */
  volumeDomain(volume: number): number | undefined {
    this.checkOpen();
    const v = this.dbs.volumes.get(u32Key(volume));
    return v ? decodeVolume(v).domainId : undefined;
  }

  listVolumes(): { volume: number; domainId: number }[] {
    this.checkOpen();
    const out: { volume: number; domainId: number }[] = [];
    for (const { key, value } of this.dbs.volumes.getRange()) {
      out.push({ volume: readU32(key), domainId: decodeVolume(value).domainId });
    }
    return out;
  }

  listDomains(): number[] {
    this.checkOpen();
    return [...this.dbs.domains.getKeys()].map((k) => readU32(k));
  }

  /**
   * Unmaps every grain of the volume (journaling the releases), releases its snapshots' old
   * versions, and forgets it and its snapshots. Runs as several transactions: first every
   * snapshot is marked as being deleted (nothing is preserved from then on), then the head is
   * unmapped and the old versions released in batches, and the last one removes the records. A
   * crash in between leaves a registered, partly released volume (call again).
   */
  async deleteVolume(volume: number): Promise<void> {
    this.checkOpen();
    checkU32("volume", volume);
    const { dbs } = this;
    for (;;) {
      await this.mapTxn(
        () => retireSnapshotsInTxn(dbs, volume),
        (changed) => (changed ? { op: "volumeRetire", volume } : undefined),
      );
      await this.unmapGrains(volume, 0, MAX_GRAIN);
      for (;;) {
        const r = await this.mapTxn(
          () => releaseSomeOldVersionsInTxn(dbs, this.journalState, volume, RELEASE_BATCH),
          (r) =>
            r.visited > 0 ? { op: "volumeReleaseOld", volume, batch: RELEASE_BATCH } : undefined,
        );
        if (r.journaled) this.notifyJournal();
        if (r.visited < RELEASE_BATCH) break;
      }
      const forgotten = await this.mapTxn(
        () => forgetVolumeInTxn(dbs, volume),
        (done) => (done ? { op: "volumeForget", volume } : undefined),
      );
      if (forgotten) return;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Snapshots (snapshot.ts; design in README "Snapshots")

  /**
   * Takes a snapshot of the volume's map and returns its number `s` (the volume's generation,
   * increasing). O(1) whatever the volume size: two small puts, no map entry is copied; from
   * then on overwrites and unmaps of what `s` sees keep the old version for it.
   */
  async createSnapshot(volume: number): Promise<number> {
    this.checkOpen();
    checkU32("volume", volume);
    return this.mapTxn(
      () => createSnapshotInTxn(this.dbs, volume),
      (snapshot) => ({ op: "snapshotCreate", volume, snapshot }),
    );
  }

  /** The volume's live snapshots, oldest first ([] for an unknown volume). */
  listSnapshots(volume: number): number[] {
    this.checkOpen();
    checkU32("volume", volume);
    return liveSnapshots(this.dbs, volume, undefined);
  }

  /**
   * Deletes a snapshot: releases (journals −1 for) the old versions no remaining snapshot sees,
   * in time proportional to the versions that died between it and the next snapshot. Reads of
   * it fail at once; the release runs as transactions of `batchSize` versions, each keeping the
   * invariant. Interrupted (crash, or `maxBatches` reached), the snapshot stays listed by
   * unfinishedSnapshotDeletions() until a further call finishes it.
   */
  async deleteSnapshot(
    volume: number,
    snapshot: number,
    options: DeleteSnapshotOptions = {},
  ): Promise<DeleteSnapshotResult> {
    return deleteSnapshot(this, volume, snapshot, options);
  }

  /** Snapshots whose deletion started and did not finish (call deleteSnapshot again for each). */
  unfinishedSnapshotDeletions(): { volume: number; snapshot: number }[] {
    this.checkOpen();
    return unfinishedSnapshotDeletions(this.dbs);
  }

  /**
   * Makes `count` grains of `dstVolume` from `dstFirst` point at the chunks of the source's
   * grains from `srcFirst` (the head, or a snapshot): +1 journaled per copied entry, the
   * destination's previous entries released (or preserved for its snapshots) as a write would,
   * holes copied as holes. No data moves. Same dedup domain only (CrossDomain otherwise). Runs
   * in transactions of up to 16384 source entries; overlapping ranges of one volume behave as if
   * the source was read whole first (copy.ts). Resolves with the number of mapped grains copied.
   */
  async copyGrains(
    src: CopySource,
    srcFirst: number,
    dstVolume: number,
    dstFirst: number,
    count: number,
    options: CopyOptions = {},
  ): Promise<CopyResult> {
    return copyGrains(this, src, srcFirst, dstVolume, dstFirst, count, options);
  }

  /**
   * Creates `newVolume` in `domainId` as a copy of a snapshot's map: every mapped grain of the
   * snapshot is copied (one +1 each), so the time is proportional to the snapshot's mapped
   * grains, not O(1); the clone is independent of its source from then on (the snapshot can be
   * deleted). The domain must be the source's. Calling again after a crash completes the clone
   * (the copy overwrites whatever the new volume holds).
   */
  async cloneVolume(
    src: { readonly volume: number; readonly snapshot: number },
    newVolume: number,
    domainId: number,
    options: CopyOptions = {},
  ): Promise<CopyResult> {
    this.checkOpen();
    checkU32("volume", src.volume);
    checkU32("volume", newVolume);
    checkU32("domainId", domainId);
    if (newVolume === src.volume) {
      throw new MetaError(MetaErrorCode.InvalidArgument, `volume ${newVolume} cannot clone itself`);
    }
    const srcDomain = this.volumeDomain(src.volume);
    if (srcDomain === undefined) throw unknownVolume(src.volume);
    checkLiveSnapshot(this.dbs, src.volume, src.snapshot, undefined);
    if (srcDomain !== domainId) {
      throw new MetaError(
        MetaErrorCode.CrossDomain,
        `volume ${src.volume} is in domain ${srcDomain}, not ${domainId}`,
      );
    }
    await this.createVolume(newVolume, domainId);
    return copyGrains(this, src, 0, newVolume, 0, MAX_GRAIN, options);
  }

  // -------------------------------------------------------------------------------------------
  // Fingerprint index

  lookupChunk(domainId: number, fingerprint: Uint8Array): ChunkEntry | undefined {
    this.checkOpen();
    checkU32("domainId", domainId);
    checkFingerprint(fingerprint);
    let reader = this.fpReaders.get(domainId);
    if (reader === undefined) {
      reader = new FpReader(this.dbs.fp, domainId);
      this.fpReaders.set(domainId, reader);
    }
    return reader.get(fingerprint);
  }

  /**
   * A token for `GrainUpdate.indexToken`, or undefined while a call that removes or moves index
   * entries (GC's claim, relocation, an index rebuild) is under way. Lookups made in the same
   * synchronous turn after taking it saw a state that no such call had changed yet; as long as
   * none starts before the map transaction runs, their entries are still in the index with the
   * same stored length, and `writeGrains` need not read them again.
   */
  indexToken(): number | undefined {
    this.checkOpen();
    return this.indexChanging === 0 ? this.indexEpoch : undefined;
  }

  /** Runs a call that may remove or move index entries (see indexToken). */
  private async changingIndex<T>(fn: () => Promise<T>): Promise<T> {
    // A map batch in flight may trust entries looked up before (its epoch): it commits first.
    while (this.mapBatch !== undefined) await this.mapBatch;
    this.indexEpoch++;
    this.indexChanging++;
    try {
      return await fn();
    } finally {
      this.indexChanging--;
      this.indexEpoch++;
    }
  }

  /**
   * Inserts the chunk at refcount 0 unless the domain's index holds the fingerprint already; in
   * that case returns the existing entry (dedup), and counts the given copy as dead bytes of its
   * container. A chunk inserted here and never mapped stays at refcount 0 unlisted: the audit
   * reports it as an orphan and repair lists it dead. Prefer `writeGrains` with `chunk`, which
   * inserts and maps in one transaction.
   */
  async insertChunk(
    domainId: number,
    fingerprint: Uint8Array,
    location: ChunkLocation,
  ): Promise<InsertResult> {
    this.checkOpen();
    checkU32("domainId", domainId);
    checkFingerprint(fingerprint);
    const loc = checkLocation(location);
    const key = fpKey(domainId, fingerprint);
    return this.dbs.root.childTransaction(() => {
      const deltas = new CounterDeltas();
      const existing = this.dbs.fp.get(key);
      let result: InsertResult;
      if (existing) {
        const chunk = decodeChunk(existing);
        if (!sameLocation(chunk, loc)) countDuplicate(deltas, loc);
        result = { inserted: false, chunk };
      } else {
        const chunk = { ...loc, refcount: 0 };
        this.dbs.fp.putSync(key, encodeChunk(chunk));
        countStored(deltas, loc);
        result = { inserted: true, chunk };
      }
      deltas.writeTo(this.dbs);
      return result;
    });
  }

  // -------------------------------------------------------------------------------------------
  // Block maps

  /**
   * Points grains at chunks (or makes them holes), and journals the refcount changes, in one
   * transaction. When a grain appears twice, the last update wins. Every fingerprint must be in
   * the volume's domain index by the time the transaction runs, or come with `chunk`; otherwise
   * the call rejects with ChunkMissing and changes nothing.
   */
  async writeGrains(volume: number, updates: readonly GrainUpdate[]): Promise<WriteResult> {
    this.checkOpen();
    checkU32("volume", volume);
    const prepared = prepareUpdates(volume, updates);
    if (prepared.length === 0) return { changed: 0, inserted: 0, duplicates: 0 };
    try {
      return await this.writeGrainsNow(volume, prepared);
    } catch (err) {
      throw missingAsGiven(err, updates);
    }
  }

  /** `writeGrains` of prepared updates, on the event loop. */
  private async writeGrainsNow(volume: number, prepared: PreparedUpdate[]): Promise<WriteResult> {
    const result = await this.mapTxn(
      () =>
        writeMapInTxn(this.dbs, this.journalState, volume, prepared, {
          indexEpoch: this.indexEpoch,
        }),
      () => ({
        op: "write",
        volume,
        grains: prepared, // grain and fingerprint are what the log takes (encoded at once)
      }),
    );
    if (result.journaled) this.notifyJournal();
    return { changed: result.changed, inserted: result.inserted, duplicates: result.duplicates };
  }

  /**
   * `writeGrains` for several writes, settled in order like `Promise.allSettled`: what a group
   * commit of the pool's staged writes does (write-back.ts). With the map thread (options
   * `mapThread`), all of them run in one transaction on it (map-thread.ts), each write still all
   * or nothing; else each as `writeGrains`, queued in one turn (one commit).
   */
  async writeGrainsMany(
    writes: readonly { readonly volume: number; readonly updates: readonly GrainUpdate[] }[],
  ): Promise<PromiseSettledResult<WriteResult>[]> {
    const thread = this.mapThread;
    if (thread === undefined || !thread.alive || writes.length === 0) {
      return Promise.allSettled(writes.map((w) => this.writeGrains(w.volume, w.updates)));
    }
    this.checkOpen();
    // Checked and packed here, straight from the caller's updates (the thread builds what
    // `writeMapInTxn` takes): a write that fails its checks is rejected alone, never sent.
    const outcomes: PromiseSettledResult<WriteResult>[] = new Array(writes.length);
    const sent: number[] = [];
    const ordered: (readonly GrainUpdate[])[] = [];
    let total = 0;
    for (let w = 0; w < writes.length; w++) {
      const { volume, updates } = writes[w]!;
      try {
        checkU32("volume", volume);
        const o = inGrainOrder(updates);
        for (const u of o) checkUpdate(u);
        if (o.length === 0) {
          outcomes[w] = { status: "fulfilled", value: { changed: 0, inserted: 0, duplicates: 0 } };
          continue;
        }
        sent.push(w);
        ordered.push(o);
        total += o.length;
      } catch (error) {
        outcomes[w] = { status: "rejected", reason: error };
      }
    }
    if (sent.length === 0) return outcomes;
    const packed: PackedWrites = {
      volumes: sent.map((w) => writes[w]!.volume),
      counts: ordered.map((o) => o.length),
      numbers: new Float64Array(total * PACKED_NUMBERS),
      fingerprints: new Uint8Array(total * FINGERPRINT_BYTES),
    };
    let i = 0;
    for (const o of ordered) for (const u of o) packUpdate(packed, i++, u);

    // Every map transaction queued before this batch commits first; those queued from now on
    // wait for it (mapTxn), so that the log's and the journal's sequence numbers follow commits.
    while (this.mapBatch !== undefined || this.mapTxnsInFlight.size > 0) {
      if (this.mapBatch !== undefined) await this.mapBatch;
      else await Promise.allSettled([...this.mapTxnsInFlight]);
    }
    let release!: () => void;
    this.mapBatch = new Promise<void>((resolve) => {
      release = resolve;
    });
    let results: PromiseSettledResult<WriteResult>[] | undefined;
    try {
      this.checkOpen(); // closed while this batch waited
      results = await this.runMapBatch(thread, packed);
    } catch (error) {
      // Nothing was sent, or nothing committed (a closed store, a broken map log): every write
      // is rejected with it, as each `writeGrains` would have been.
      const failed = { status: "rejected", reason: error } as const;
      results = packed.volumes.map(() => failed);
    } finally {
      this.mapBatch = undefined;
      release();
    }
    // Undefined: the thread died. What it committed was taken over; the writes run here, again
    // if they had committed (rewriting a grain with the fingerprint it has changes nothing).
    const settled =
      results ??
      (await Promise.allSettled(
        sent.map((w) => {
          const { volume, updates } = writes[w]!;
          return this.writeGrainsNow(volume, prepareUpdates(volume, updates));
        }),
      ));
    sent.forEach((w, k) => {
      outcomes[w] = settledAsGiven(settled[k]!, writes[w]!.updates);
    });
    return outcomes;
  }

  /**
   * One batch on the map thread, with the log lent and the journal's seq handed over; undefined
   * when the thread died (its effect, if it committed, is then taken over from the environment).
   */
  private async runMapBatch(
    thread: MapWriteThread,
    packed: PackedWrites,
  ): Promise<PromiseSettledResult<WriteResult>[] | undefined> {
    const log = this.mapLog !== undefined && this.logMaps ? this.mapLog : undefined;
    const firstSeq = this.nextMapSeq;
    const lent = log?.lend(firstSeq);
    let result: MapBatchResult;
    try {
      result = await thread.write({
        writes: packed,
        indexEpoch: this.indexChanging === 0 ? this.indexEpoch : undefined,
        journal: {
          nextSeq: this.journalState.nextSeq,
          suppressed: this.journalState.suppressed === true,
        },
        log: lent !== undefined ? { fd: lent.fd, seq: firstSeq } : undefined,
      });
    } catch (error) {
      this.resetReadTxn();
      if (error instanceof MetaError || thread.alive) {
        // Nothing was committed: the log is cut back to where it was lent.
        log?.settleLend(undefined);
        const failed = { status: "rejected", reason: error } as const;
        return packed.volumes.map(() => failed);
      }
      this.takeOverAfterDeath(log, lent, firstSeq);
      return undefined;
    }
    // Reads from here on must see the batch (lmdb-js renews this thread's snapshot only after
    // its own commits, or on a timer).
    this.resetReadTxn();
    this.journalState.nextSeq = result.journalNextSeq;
    this.journalState.pending += result.journalAppended;
    if (log !== undefined && result.log !== undefined) {
      log.settleLend(result.log);
      if (result.log.bytes > 0) {
        this.nextMapSeq = result.log.lastSeq + 1;
        this.afterMapAppend();
      }
    }
    if (result.journalAppended > 0) this.notifyJournal();
    return result.outcomes.map((o) =>
      "ok" in o
        ? { status: "fulfilled", value: o.ok }
        : {
            status: "rejected",
            reason: new MetaError(o.error.code, o.error.message, o.error.fingerprints),
          },
    );
  }

  /**
   * The map thread died with a batch in flight, which may or may not have committed: the
   * environment says (its applied map log seq, its journal), and the log keeps the batch's
   * records only if it did.
   */
  private takeOverAfterDeath(
    log: MapLog | undefined,
    lent: { fd: number; bytes: number } | undefined,
    firstSeq: number,
  ): void {
    this.resetReadTxn();
    if (log !== undefined && lent !== undefined) {
      const applied = readAppliedSeq(this.dbs);
      if (applied >= firstSeq) {
        log.settleLend({ lastSeq: applied, bytes: fstatSync(lent.fd).size - lent.bytes });
        this.nextMapSeq = applied + 1;
        this.afterMapAppend();
      } else {
        log.settleLend(undefined);
      }
    }
    for (const key of this.dbs.journal.getKeys({ reverse: true, limit: 1 })) {
      this.journalState.nextSeq = Math.max(this.journalState.nextSeq, readU64(key, 0) + 1);
    }
    this.journalState.pending = this.dbs.journal.getCount();
    if (this.journalState.pending > 0) this.notifyJournal();
  }

  /**
   * How this store's environment was opened: what another thread needs to open it too (lmdb-js
   * shares one environment between the threads of a process), as the chunk workers do for their
   * index lookups (chunk-worker.ts `IndexLookup`).
   */
  get envOptions(): OpenEnvOptions {
    return this.env;
  }

  private resetReadTxn(): void {
    (this.dbs.root as unknown as { resetReadTxn(): void }).resetReadTxn();
  }

  /**
   * Makes `count` grains from `firstGrain` holes. Large ranges run as several transactions of at
   * most 8192 mapped grains each (UNMAP is not atomic across blocks). Resolves with the number of
   * grains that were mapped.
   */
  async unmapGrains(volume: number, firstGrain: number, count: number): Promise<number> {
    this.checkOpen();
    checkU32("volume", volume);
    checkGrain(firstGrain);
    checkCount(count);
    const endGrain = Math.min(firstGrain + count, MAX_GRAIN);
    let from = firstGrain;
    let total = 0;
    while (from < endGrain) {
      const start = mapKey(volume, from);
      const end = mapKey(volume, endGrain);
      const batchFrom = from;
      const batch = await this.mapTxn(
        () => {
          const prepared: PreparedUpdate[] = [];
          for (const key of this.dbs.map.getKeys({ start, end, limit: UNMAP_BATCH })) {
            const { grain } = decodeMapKey(key);
            prepared.push({
              grain,
              key: Buffer.from(key),
              fingerprint: undefined,
              chunk: undefined,
            });
          }
          if (prepared.length === 0) return { next: endGrain, changed: 0, journaled: false };
          const r = writeMapInTxn(this.dbs, this.journalState, volume, prepared);
          const last = prepared[prepared.length - 1]!.grain;
          return { next: prepared.length < UNMAP_BATCH ? endGrain : last + 1, ...r };
        },
        (b) => (b.changed > 0 ? { op: "unmap", volume, first: batchFrom, end: b.next } : undefined),
      );
      if (batch.journaled) this.notifyJournal();
      total += batch.changed;
      from = batch.next;
    }
    return total;
  }

  /** The fingerprint a grain points at (as of `options.snapshot`), or undefined for a hole. */
  getGrain(volume: number, grain: number, options: ReadOptions = {}): Buffer | undefined {
    this.checkOpen();
    checkGrain(grain);
    if (options.snapshot !== undefined) {
      const s = options.snapshot;
      return this.withReadTxn((ro) => {
        checkLiveSnapshot(this.dbs, volume, s, ro);
        return snapshotGrain(this.dbs, volume, s, grain, ro);
      });
    }
    const v = this.dbs.map.get(mapKey(volume, grain));
    return v ? mapValueFingerprint(v) : undefined;
  }

  /**
   * Resolves `count` grains from `firstGrain` to their chunks, for the read path: undefined for a
   * hole. All from one consistent view of the store; as of `options.snapshot` if given.
   */
  resolveGrains(
    volume: number,
    firstGrain: number,
    count: number,
    options: ReadOptions = {},
  ): (ResolvedGrain | undefined)[] {
    this.checkOpen();
    checkGrain(firstGrain);
    checkCount(count);
    const out: (ResolvedGrain | undefined)[] = new Array<ResolvedGrain | undefined>(count).fill(
      undefined,
    );
    if (count === 0) return out;
    const rec = this.dbs.volumes.get(u32Key(volume));
    if (!rec) throw unknownVolume(volume);
    const domainId = decodeVolume(rec).domainId;
    const end = Math.min(firstGrain + count, MAX_GRAIN);
    this.withReadTxn((ro) => {
      if (count <= DIRECT_GETS_UP_TO && options.snapshot === undefined) {
        // A few grains of the head (a 4 KiB random read: one grain, or two when it is not
        // aligned to a grain): direct gets instead of a cursor, whose setup cost the main
        // thread ≈ 3–5 µs a read (CPU profile of 4 KiB random reads).
        for (let i = 0; i < count; i++) {
          const value = this.dbs.map.get(mapKey(volume, firstGrain + i), ro);
          if (value === undefined) continue;
          const fingerprint = mapValueFingerprint(value);
          const raw = this.dbs.fp.get(fpKey(domainId, fingerprint), ro);
          out[i] = { fingerprint, chunk: raw ? decodeChunk(raw) : undefined };
        }
        return;
      }
      for (const { grain, fingerprint } of this.entriesIn(volume, firstGrain, end, options, ro)) {
        const raw = this.dbs.fp.get(fpKey(domainId, fingerprint), ro);
        out[grain - firstGrain] = { fingerprint, chunk: raw ? decodeChunk(raw) : undefined };
      }
    });
    return out;
  }

  /**
   * Map entries of a volume in ascending grain order, from `firstGrain` (inclusive) to `endGrain`
   * (exclusive), of the head or of `options.snapshot`. The iteration reads one snapshot; finish
   * or break out of it promptly (it holds an LMDB read transaction open).
   */
  *mapEntries(
    volume: number,
    firstGrain = 0,
    endGrain = MAX_GRAIN,
    options: ReadOptions = {},
  ): Generator<MapEntry> {
    this.checkOpen();
    checkGrain(firstGrain);
    const end = Math.min(endGrain, MAX_GRAIN);
    if (options.snapshot === undefined) {
      const range = { start: mapKey(volume, firstGrain), end: mapKey(volume, end) };
      for (const { key, value } of this.dbs.map.getRange(range)) {
        yield { grain: decodeMapKey(key).grain, fingerprint: mapValueFingerprint(value) };
      }
      return;
    }
    const txn = this.dbs.root.useReadTransaction();
    try {
      yield* this.entriesIn(volume, firstGrain, end, options, { transaction: txn });
    } finally {
      txn.done();
    }
  }

  /**
   * Whether `grain` is mapped (in the head, or in `options.snapshot`), and for how many
   * consecutive grains (at most `maxGrains`) that status holds: the building block of GET LBA
   * STATUS and Volume.blockStatus.
   */
  extentStatus(
    volume: number,
    grain: number,
    maxGrains: number,
    options: ReadOptions = {},
  ): ExtentStatus {
    this.checkOpen();
    checkGrain(grain);
    if (!Number.isInteger(maxGrains) || maxGrains < 1) {
      throw new MetaError(MetaErrorCode.InvalidArgument, `maxGrains ${maxGrains}`);
    }
    const end = Math.min(grain + maxGrains, MAX_GRAIN);
    const status = (grains: Iterable<number>): ExtentStatus => {
      let expected = grain;
      for (const g of grains) {
        if (g !== expected) {
          return expected === grain
            ? { mapped: false, grains: g - grain }
            : { mapped: true, grains: expected - grain };
        }
        expected++;
      }
      return expected === grain
        ? { mapped: false, grains: end - grain }
        : { mapped: true, grains: expected - grain };
    };
    if (options.snapshot === undefined) {
      const range = { start: mapKey(volume, grain), end: mapKey(volume, end) };
      return status(
        (function* (keys: Iterable<Buffer>) {
          for (const key of keys) yield decodeMapKey(key).grain;
        })(this.dbs.map.getKeys(range)),
      );
    }
    return this.withReadTxn((ro) =>
      status(
        (function* (entries: Iterable<{ grain: number }>) {
          for (const e of entries) yield e.grain;
        })(this.entriesIn(volume, grain, end, options, ro)),
      ),
    );
  }

  // -------------------------------------------------------------------------------------------
  // Journal

  /** Journal records not applied yet. */
  get pendingJournalRecords(): number {
    return this.journalState.pending;
  }

  /** Calls `listener(pending)` after each committed mutation that appended a journal record. */
  onJournalRecord(listener: (pending: number) => void): () => void {
    this.journalListeners.add(listener);
    return () => this.journalListeners.delete(listener);
  }

  /**
   * Applies a batch of journal records to the refcounts, in one transaction that also deletes
   * them: a crash leaves either the records or their effect, never both.
   */
  async applyJournal(options: ApplyOptions = {}): Promise<ApplyResult> {
    this.checkOpen();
    const max = options.maxRecords ?? DEFAULT_MAX_RECORDS;
    const thread = this.applyThread;
    if (thread?.alive) {
      try {
        const result = await thread.apply(max);
        // The batch committed on the other thread: reads from here on must see it (lmdb-js
        // renews the main thread's read snapshot only after its own commits, or a timer).
        (this.dbs.root as unknown as { resetReadTxn(): void }).resetReadTxn();
        this.journalState.pending = Math.max(0, this.journalState.pending - result.records);
        return result;
      } catch (error) {
        if (thread.alive || error instanceof MetaError) throw error;
        // The thread died (its batch, if it had begun, was not committed): apply here.
      }
    }
    return this.dbs.root.childTransaction(() => {
      const result = applyBatch(this.dbs, max);
      this.journalState.pending = Math.max(0, this.journalState.pending - result.records);
      return result;
    });
  }

  // -------------------------------------------------------------------------------------------
  // Dead chunks and containers

  /** Dead chunks (refcount 0, not reclaimed), of one container or of all, in container order. */
  *deadChunks(containerId?: number): Generator<DeadChunk> {
    this.checkOpen();
    const range =
      containerId === undefined
        ? {}
        : {
            start: u32Key(containerId),
            ...(containerId < 0xffff_ffff ? { end: u32Key(containerId + 1) } : {}),
          };
    for (const key of this.dbs.dead.getKeys(range)) {
      if (key.length !== DEAD_KEY_BYTES) continue;
      const { containerId: c, domainId, fingerprint } = decodeDeadKey(key);
      const raw = this.dbs.fp.get(fpKey(domainId, fingerprint));
      if (!raw) continue;
      const e = decodeChunk(raw);
      yield {
        domainId,
        fingerprint,
        containerId: c,
        offset: e.offset,
        storedLength: e.storedLength,
        logicalLength: e.logicalLength,
      };
    }
  }

  containerUsage(containerId: number): ContainerUsage | undefined {
    this.checkOpen();
    const c = readContainer(this.dbs, containerId);
    return c ? { containerId, ...c } : undefined;
  }

  /** Every container's counters; compaction picks by deadBytes / storedBytes. */
  listContainers(): ContainerUsage[] {
    this.checkOpen();
    const out: ContainerUsage[] = [];
    for (const { key, value } of this.dbs.containers.getRange()) {
      out.push({ containerId: readU32(key), ...decodeContainer(value) });
    }
    return out;
  }

  /**
   * GC's claim on a container's dead chunks: applies the whole journal, then removes from the
   * index every dead chunk of the container still at refcount 0, in one transaction. After it
   * commits no lookup finds them, and a writer that found one earlier gets ChunkMissing from its
   * map update (and stores the data again), so the bytes may go once compaction has rewritten
   * the container's live chunks. The container's dead counters keep counting these bytes until
   * the container itself is dropped.
   */
  async reclaimDeadChunks(containerId: number): Promise<DeadChunk[]> {
    this.checkOpen();
    checkU32("containerId", containerId);
    return this.changingIndex(() => this.reclaimInTxn(containerId));
  }

  private async reclaimInTxn(containerId: number): Promise<DeadChunk[]> {
    return this.dbs.root.childTransaction(() => {
      const deltas = new CounterDeltas();
      const applied = applyJournalInTxn(this.dbs, deltas, Number.MAX_SAFE_INTEGER);
      this.journalState.pending = Math.max(0, this.journalState.pending - applied.records);
      const range = {
        start: u32Key(containerId),
        ...(containerId < 0xffff_ffff ? { end: u32Key(containerId + 1) } : {}),
      };
      const keys = [...this.dbs.dead.getKeys(range)].map((k) => Buffer.from(k));
      const reclaimed: DeadChunk[] = [];
      for (const key of keys) {
        const { domainId, fingerprint } = decodeDeadKey(key);
        const fk = fpKey(domainId, fingerprint);
        const raw = this.dbs.fp.get(fk);
        const storedLength = readU32(this.dbs.dead.get(key) ?? u32Value(0));
        const d = deltas.domain(domainId);
        if (raw) {
          const e = decodeChunk(raw);
          if (e.refcount > 0) continue; // stale listing: audit's business
          this.dbs.fp.removeSync(fk);
          reclaimed.push({ domainId, fingerprint, ...locationOf(e) });
        }
        this.dbs.dead.removeSync(key);
        d.deadChunks -= 1;
        d.deadBytes -= storedLength;
      }
      deltas.writeTo(this.dbs);
      return reclaimed;
    });
  }

  // -------------------------------------------------------------------------------------------
  // Accounting

  volumeUsage(volume: number): VolumeUsage | undefined {
    this.checkOpen();
    const v = this.dbs.volumes.get(u32Key(volume));
    if (!v) return undefined;
    const rec = decodeVolume(v);
    const dom = readDomain(this.dbs, rec.domainId);
    const physical = attributed(rec.referencedBytes, dom);
    const logical = rec.mappedGrains * this.grainSize;
    return {
      volume,
      domainId: rec.domainId,
      mappedGrains: rec.mappedGrains,
      logicalBytes: logical,
      referencedBytes: rec.referencedBytes,
      savedByCompression: logical - rec.referencedBytes,
      physicalBytes: physical,
      savedByDedup: rec.referencedBytes - physical,
    };
  }

  /** What the volume's snapshots hold beyond its head (undefined for an unknown volume). */
  snapshotUsage(volume: number): SnapshotUsage | undefined {
    this.checkOpen();
    const v = this.dbs.volumes.get(u32Key(volume));
    if (!v) return undefined;
    const rec = decodeVolume(v);
    const dom = readDomain(this.dbs, rec.domainId);
    const oldVersions = rec.snap?.oldGrains ?? 0;
    const referenced = rec.snap?.oldBytes ?? 0;
    return {
      volume,
      domainId: rec.domainId,
      snapshots: rec.snap?.live ?? 0,
      oldVersions,
      logicalBytes: oldVersions * this.grainSize,
      referencedBytes: referenced,
      physicalBytes: attributed(referenced, dom),
    };
  }

  /** What the snapshots of a domain's volumes hold beyond the heads. */
  domainSnapshotUsage(domainId: number): DomainSnapshotUsage {
    this.checkOpen();
    const dom = readDomain(this.dbs, domainId);
    return {
      domainId,
      oldVersions: dom.snapshotGrains,
      logicalBytes: dom.snapshotGrains * this.grainSize,
      referencedBytes: dom.snapshotBytes,
      physicalBytes: attributed(dom.snapshotBytes, dom),
    };
  }

  domainUsage(domainId: number): DomainUsage {
    this.checkOpen();
    return { domainId, ...this.usageOf(readDomain(this.dbs, domainId)) };
  }

  poolUsage(): PoolUsage {
    this.checkOpen();
    const sum = zeroDomain();
    let domains = 0;
    for (const { value } of this.dbs.domains.getRange()) {
      const d = decodeDomain(value);
      for (const f of Object.keys(sum) as (keyof typeof sum)[]) sum[f] += d[f];
      domains++;
    }
    return { domains, ...this.usageOf(sum) };
  }

  // -------------------------------------------------------------------------------------------
  // Audit and rebuild (see audit.ts and rebuild.ts)

  /** Mark-and-sweep check of refcounts and counters against the maps, on one snapshot. */
  audit(options: AuditOptions = {}): AuditReport {
    return auditMeta(this, options);
  }

  /**
   * The same audit, letting the event loop run between slices of a few thousand entries (what a
   * serving pool runs: I/O goes on meanwhile). Same snapshot semantics as `audit`.
   */
  auditYielding(options: AuditOptions & { readonly slice?: number } = {}): Promise<AuditReport> {
    return auditMetaYielding(this, options);
  }

  /** Recomputes refcounts, the dead table and the counters from the maps. */
  async repair(options: Pick<AuditOptions, "domainId" | "partitions"> = {}): Promise<RepairReport> {
    return repairMeta(this, options);
  }

  /** Rebuilds a domain's index from container records, then recounts from the maps. */
  async rebuildIndex(
    domainId: number,
    records: Iterable<ContainerRecord> | AsyncIterable<ContainerRecord>,
    options: RebuildOptions = {},
  ): Promise<RebuildResult> {
    checkU32("domainId", domainId);
    return this.changingIndex(() => rebuildIndex(this, domainId, records, options));
  }

  /** Domains whose index rebuild started and did not finish (rerun rebuildIndex for them). */
  unfinishedRebuilds(): number[] {
    this.checkOpen();
    const out: number[] = [];
    for (const key of this.dbs.meta.getKeys({
      start: Buffer.from("rebuild:"),
      end: Buffer.from("rebuild;"),
    })) {
      out.push(Number(key.toString("latin1").slice("rebuild:".length)));
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // Internals

  /** @internal */
  checkOpen(): void {
    if (this.closed) throw new MetaError(MetaErrorCode.Closed, "metadata store is closed");
  }

  /** @internal */
  notifyJournal(): void {
    for (const l of this.journalListeners) l(this.journalState.pending);
  }

  private withReadTxn<T>(fn: (ro: ReadOpts) => T): T {
    const txn = this.dbs.root.useReadTransaction();
    try {
      return fn({ transaction: txn });
    } finally {
      txn.done();
    }
  }

  /** Entries of the head or of a live snapshot in [first, end), ascending, read through `ro`. */
  private *entriesIn(
    volume: number,
    first: number,
    end: number,
    options: ReadOptions,
    ro: ReadOpts,
  ): Generator<MapEntry> {
    if (options.snapshot !== undefined) {
      checkLiveSnapshot(this.dbs, volume, options.snapshot, ro);
      yield* snapshotEntries(this.dbs, volume, options.snapshot, first, end, ro);
      return;
    }
    const range = { start: mapKey(volume, first), end: mapKey(volume, end), ...ro };
    for (const { key, value } of this.dbs.map.getRange(range)) {
      yield { grain: decodeMapKey(key).grain, fingerprint: mapValueFingerprint(value) };
    }
  }

  /**
   * Domain totals. With snapshots, physical bytes also pay for what only old versions reference:
   * dedup savings count the old versions' references with the heads' (logical + snapshot
   * referenced = physical + savedByDedup + savedByCompression); without, the usual identity.
   */
  private usageOf(d: DomainCounters): Omit<DomainUsage, "domainId"> {
    const logical = d.mappedGrains * this.grainSize;
    const allReferenced = d.referencedBytes + d.snapshotBytes;
    return {
      mappedGrains: d.mappedGrains,
      logicalBytes: logical,
      referencedBytes: d.referencedBytes,
      liveChunks: d.liveChunks,
      uniqueLogicalBytes: d.uniqueLogicalBytes,
      physicalBytes: d.physicalBytes,
      savedByCompression: logical - d.referencedBytes,
      savedByDedup: allReferenced - d.physicalBytes,
      compressionRatio: d.referencedBytes > 0 ? logical / d.referencedBytes : 1,
      dedupRatio: d.physicalBytes > 0 ? allReferenced / d.physicalBytes : 1,
      deadChunks: d.deadChunks,
      deadBytes: d.deadBytes,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Relocation (relocate.ts): container compaction and healing

  /**
   * Points index entries at new copies of their chunks, in one transaction: an entry moves only
   * if it still names `from` (GC may have claimed it, or something else moved it, since the
   * caller looked); the copies of entries that did not move count as dead bytes of their
   * container. Container and domain counters move with the entries (relocate.ts). The new copies
   * must be durable before this is called (write protocol step 3); the old copies may be deleted
   * once a later `flush()` resolved.
   */
  async relocateChunks(domainId: number, items: readonly Relocation[]): Promise<RelocateResult> {
    this.checkOpen();
    checkU32("domainId", domainId);
    const copies = items.map((r) => {
      const fingerprint = ownFingerprint(r.fingerprint);
      checkLocation({ ...r.from, storedLength: 1, logicalLength: 1 });
      checkLocation({ ...r.to, logicalLength: 1 });
      return {
        fingerprint,
        from: { containerId: r.from.containerId, offset: r.from.offset },
        to: { containerId: r.to.containerId, offset: r.to.offset, storedLength: r.to.storedLength },
      };
    });
    if (copies.length === 0) return { moved: 0, stale: 0, movedItems: [] };
    return this.changingIndex(() =>
      this.dbs.root.childTransaction(() => {
        const deltas = new CounterDeltas();
        const result = relocateInTxn(this.dbs, deltas, domainId, copies);
        deltas.writeTo(this.dbs);
        return result;
      }),
    );
  }
}

/**
 * ChunkMissing names the missing fingerprints (hex) as the caller gave them (full, 32 bytes, from
 * the write path), not as the metadata keeps them: the write-back stage finds the grains to store
 * again by them. Other errors pass unchanged.
 */
/** Whether the grains of `updates` strictly ascend (no grain twice). */
function ascending(updates: readonly GrainUpdate[]): boolean {
  for (let i = 1; i < updates.length; i++) {
    if (updates[i]!.grain <= updates[i - 1]!.grain) return false;
  }
  return true;
}

function missingAsGiven(err: unknown, updates: readonly GrainUpdate[]): unknown {
  if (!(err instanceof MetaError) || err.code !== MetaErrorCode.ChunkMissing) return err;
  const short = new Set(err.fingerprints ?? []);
  const given = new Set<string>();
  for (const u of updates) {
    if (u.fingerprint === null) continue;
    const fp = Buffer.from(u.fingerprint.buffer, u.fingerprint.byteOffset, u.fingerprint.length);
    if (short.has(fp.toString("hex", 0, FINGERPRINT_BYTES))) given.add(fp.toString("hex"));
  }
  return new MetaError(err.code, err.message, [...given], { cause: err.cause });
}

/**
 * The share of a domain's physical bytes attributed to `referenced` bytes of it: pro rata over
 * everything the domain references (heads and old versions), so that the shares add up.
 */
function attributed(referenced: number, dom: DomainCounters): number {
  const all = dom.referencedBytes + dom.snapshotBytes;
  return all > 0 ? Math.round((referenced * dom.physicalBytes) / all) : 0;
}
