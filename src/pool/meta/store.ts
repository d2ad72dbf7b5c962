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

import {
  type AuditOptions,
  type AuditReport,
  auditMeta,
  type RepairReport,
  repairMeta,
} from "./audit.js";
import {
  type ChunkEntry,
  type ChunkLocation,
  type ContainerCounters,
  DEAD_KEY_BYTES,
  decodeChunk,
  decodeContainer,
  decodeDeadKey,
  decodeDomain,
  decodeMapKey,
  decodeVolume,
  encodeChunk,
  encodeDomain,
  encodeJournalRecord,
  encodeVolume,
  FINGERPRINT_BYTES,
  fpKey,
  isU32,
  type JournalDelta,
  journalKey,
  keyFromString,
  keyString,
  locationProblem,
  MAX_GRAIN,
  META_FORMAT_VERSION,
  mapKey,
  mapValueFingerprint,
  mapVolumeEnd,
  readU32,
  readU64,
  u32Key,
  u32Value,
  type VolumeRecord,
  zeroDomain,
} from "./codec.js";
import { CounterDeltas, type MetaDbs, openDbs, readContainer, readDomain } from "./dbs.js";
import { MetaError, MetaErrorCode } from "./errors.js";
import {
  type ContainerRecord,
  type RebuildOptions,
  type RebuildResult,
  rebuildIndex,
} from "./rebuild.js";
import { type ApplyResult, applyJournalInTxn, type DeadChunk } from "./refcount.js";

export type { ChunkEntry, ChunkLocation, ContainerCounters } from "./codec.js";
export type { ApplyResult, DeadChunk, RefcountAnomaly } from "./refcount.js";

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
}

export interface GrainUpdate {
  readonly grain: number;
  /** The chunk the grain now holds, or null to make it a hole (all zeros, unmapped). */
  readonly fingerprint: Uint8Array | null;
  /**
   * Where the writer stored this chunk, when it stored it (it found no index entry). The index
   * entry is inserted in the same transaction unless the fingerprint is there by then (another
   * writer won the race): the map then points at the existing chunk, and this copy is counted as
   * dead bytes of its container. The container bytes must be durable before this call (README).
   */
  readonly chunk?: ChunkLocation;
}

export interface WriteResult {
  /** Map entries that changed (an update to the same fingerprint changes nothing). */
  readonly changed: number;
  /** Index entries inserted from `chunk` locations. */
  readonly inserted: number;
  /** `chunk` copies not used because the index already held the fingerprint elsewhere. */
  readonly duplicates: number;
}

export interface InsertResult {
  /** True when this call created the index entry; false when it existed (dedup hit). */
  readonly inserted: boolean;
  /** The entry now in the index: the given location, or the existing one. */
  readonly chunk: ChunkEntry;
}

export interface MapEntry {
  readonly grain: number;
  readonly fingerprint: Buffer;
}

export interface ResolvedGrain {
  readonly fingerprint: Buffer;
  /** The chunk, or undefined when the index lacks it (damage: the read must fail, not return zeros). */
  readonly chunk: ChunkEntry | undefined;
}

export interface ExtentStatus {
  readonly mapped: boolean;
  /** Consecutive grains from the start grain with that status (1..maxGrains). */
  readonly grains: number;
}

export interface ApplyOptions {
  /** Journal records per batch (one LMDB transaction). Default 65536. */
  readonly maxRecords?: number;
}

/**
 * Capacity of one volume. logical = physical + savedByDedup + savedByCompression.
 * Chunks shared between volumes are attributed pro rata: a volume's physical bytes are its
 * referenced bytes scaled by its domain's physical/referenced ratio. These fields are exact at the
 * domain level and an attribution at the volume level (sums over a domain's volumes match the
 * domain up to rounding).
 */
export interface VolumeUsage {
  readonly volume: number;
  readonly domainId: number;
  readonly mappedGrains: number;
  /** mappedGrains × grain size. */
  readonly logicalBytes: number;
  /** Stored bytes of the chunks its grains point at, shared chunks counted in full. */
  readonly referencedBytes: number;
  /** logical − referenced: what compression saved on this volume's data (negative: overhead). */
  readonly savedByCompression: number;
  /** Attributed share of the domain's physical bytes. */
  readonly physicalBytes: number;
  /** referenced − physical (attributed). */
  readonly savedByDedup: number;
}

/**
 * Capacity of one dedup domain. Exact once the journal is applied: mappedGrains, logical and
 * referenced bytes move with the maps; live, physical and dead move when the journal is applied.
 */
export interface DomainUsage {
  readonly domainId: number;
  readonly mappedGrains: number;
  readonly logicalBytes: number;
  readonly referencedBytes: number;
  readonly liveChunks: number;
  readonly uniqueLogicalBytes: number;
  /** Stored bytes of live chunks: what the domain occupies in containers. */
  readonly physicalBytes: number;
  /** logical − referenced. */
  readonly savedByCompression: number;
  /** referenced − physical. */
  readonly savedByDedup: number;
  /** logical / referenced (1 when empty). */
  readonly compressionRatio: number;
  /** referenced / physical (1 when empty). */
  readonly dedupRatio: number;
  readonly deadChunks: number;
  readonly deadBytes: number;
}

export type PoolUsage = Omit<DomainUsage, "domainId"> & { readonly domains: number };

export interface ContainerUsage extends ContainerCounters {
  readonly containerId: number;
}

/** Journal bookkeeping shared with the audit and the rebuild (they apply the journal too). */
export interface JournalState {
  nextSeq: number;
  /** Records in the journal (exact unless a commit failed after its callback ran; a hint). */
  pending: number;
}

const UNMAP_BATCH = 8192;
const DEFAULT_MAX_RECORDS = 65536;

export class MetaStore {
  readonly grainSize: number;
  /** @internal For audit.ts and rebuild.ts. */
  readonly dbs: MetaDbs;
  /** @internal */
  readonly journalState: JournalState;
  private readonly journalListeners = new Set<(pending: number) => void>();
  private closed = false;

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
    const dbs = openDbs(options);
    try {
      const grainSize = dbs.root.transactionSync(() => {
        const format = dbs.meta.get(Buffer.from("format"));
        const stored = dbs.meta.get(Buffer.from("grainSize"));
        if (!format) {
          dbs.meta.putSync(Buffer.from("format"), u32Value(META_FORMAT_VERSION));
          const g = wanted ?? 4096;
          dbs.meta.putSync(Buffer.from("grainSize"), u32Value(g));
          return g;
        }
        if (readU32(format) !== META_FORMAT_VERSION) {
          throw new MetaError(
            MetaErrorCode.Incompatible,
            `metadata format ${readU32(format)} is not ${META_FORMAT_VERSION}`,
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
      return new MetaStore(dbs, grainSize, { nextSeq, pending });
    } catch (err) {
      await dbs.root.close();
      throw err;
    }
  }

  /** Waits for queued mutations, then closes the environment. The store is unusable afterwards. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.dbs.root.close();
  }

  /** Resolves once every mutation that resolved before this call is durable on disk. */
  async flush(): Promise<void> {
    this.checkOpen();
    await this.dbs.root.flushed;
  }

  // -------------------------------------------------------------------------------------------
  // Volumes

  /** Registers a volume number in a domain (idempotent for the same domain). */
  async createVolume(volume: number, domainId: number): Promise<void> {
    this.checkOpen();
    checkU32("volume", volume);
    checkU32("domainId", domainId);
    const key = u32Key(volume);
    return this.dbs.root.childTransaction(() => {
      const existing = this.dbs.volumes.get(key);
      if (existing) {
        const rec = decodeVolume(existing);
        if (rec.domainId !== domainId) {
          throw new MetaError(
            MetaErrorCode.VolumeExists,
            `volume ${volume} exists in domain ${rec.domainId}`,
          );
        }
        return;
      }
      this.dbs.volumes.putSync(
        key,
        encodeVolume({ domainId, mappedGrains: 0, referencedBytes: 0 }),
      );
      const dk = u32Key(domainId);
      if (!this.dbs.domains.doesExist(dk)) this.dbs.domains.putSync(dk, encodeDomain(zeroDomain()));
    });
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
   * Unmaps every grain of the volume (journaling the releases) and forgets it. Runs as several
   * transactions; a crash in between leaves a registered, partly unmapped volume (call again).
   */
  async deleteVolume(volume: number): Promise<void> {
    this.checkOpen();
    checkU32("volume", volume);
    for (;;) {
      await this.unmapGrains(volume, 0, MAX_GRAIN);
      const gone = await this.dbs.root.childTransaction(() => {
        const start = mapKey(volume, 0);
        for (const _ of this.dbs.map.getKeys({ start, end: mapVolumeEnd(volume), limit: 1 }))
          return false;
        this.dbs.volumes.removeSync(u32Key(volume));
        return true;
      });
      if (gone) return;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Fingerprint index

  lookupChunk(domainId: number, fingerprint: Uint8Array): ChunkEntry | undefined {
    this.checkOpen();
    checkU32("domainId", domainId);
    checkFingerprint(fingerprint);
    const v = this.dbs.fp.get(fpKey(domainId, fingerprint));
    return v ? decodeChunk(v) : undefined;
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
    const byGrain = new Map<number, PreparedUpdate>();
    for (const u of updates) {
      checkGrain(u.grain);
      if (u.fingerprint !== null) checkFingerprint(u.fingerprint);
      byGrain.set(u.grain, {
        grain: u.grain,
        key: mapKey(volume, u.grain),
        fingerprint: u.fingerprint === null ? undefined : Buffer.from(u.fingerprint),
        chunk: u.chunk && u.fingerprint !== null ? checkLocation(u.chunk) : undefined,
      });
    }
    if (byGrain.size === 0) return { changed: 0, inserted: 0, duplicates: 0 };
    const prepared = [...byGrain.values()].sort((a, b) => a.grain - b.grain);
    const result = await this.dbs.root.childTransaction(() => this.writeInTxn(volume, prepared));
    if (result.journaled) this.notifyJournal();
    return { changed: result.changed, inserted: result.inserted, duplicates: result.duplicates };
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
    if (!Number.isInteger(count) || count < 0) {
      throw new MetaError(MetaErrorCode.InvalidArgument, `grain count ${count}`);
    }
    const endGrain = Math.min(firstGrain + count, MAX_GRAIN);
    let from = firstGrain;
    let total = 0;
    while (from < endGrain) {
      const start = mapKey(volume, from);
      const end = mapKey(volume, endGrain);
      const batch = await this.dbs.root.childTransaction(() => {
        const prepared: PreparedUpdate[] = [];
        for (const key of this.dbs.map.getKeys({ start, end, limit: UNMAP_BATCH })) {
          const { grain } = decodeMapKey(key);
          prepared.push({ grain, key: Buffer.from(key), fingerprint: undefined, chunk: undefined });
        }
        if (prepared.length === 0) return { next: endGrain, changed: 0, journaled: false };
        const r = this.writeInTxn(volume, prepared);
        const last = prepared[prepared.length - 1]!.grain;
        return { next: prepared.length < UNMAP_BATCH ? endGrain : last + 1, ...r };
      });
      if (batch.journaled) this.notifyJournal();
      total += batch.changed;
      from = batch.next;
    }
    return total;
  }

  /** The fingerprint a grain points at, or undefined for a hole. */
  getGrain(volume: number, grain: number): Buffer | undefined {
    this.checkOpen();
    checkGrain(grain);
    const v = this.dbs.map.get(mapKey(volume, grain));
    return v ? mapValueFingerprint(v) : undefined;
  }

  /**
   * Resolves `count` grains from `firstGrain` to their chunks, for the read path: undefined for a
   * hole. All from one consistent view of the store.
   */
  resolveGrains(volume: number, firstGrain: number, count: number): (ResolvedGrain | undefined)[] {
    this.checkOpen();
    checkGrain(firstGrain);
    if (!Number.isInteger(count) || count < 0) {
      throw new MetaError(MetaErrorCode.InvalidArgument, `grain count ${count}`);
    }
    const out: (ResolvedGrain | undefined)[] = new Array<ResolvedGrain | undefined>(count).fill(
      undefined,
    );
    if (count === 0) return out;
    const rec = this.dbs.volumes.get(u32Key(volume));
    if (!rec)
      throw new MetaError(MetaErrorCode.UnknownVolume, `volume ${volume} is not registered`);
    const domainId = decodeVolume(rec).domainId;
    const txn = this.dbs.root.useReadTransaction();
    try {
      const ro = { transaction: txn };
      const end = mapKey(volume, Math.min(firstGrain + count, MAX_GRAIN));
      const range = { start: mapKey(volume, firstGrain), end, ...ro };
      for (const { key, value } of this.dbs.map.getRange(range)) {
        const fingerprint = mapValueFingerprint(value);
        const raw = this.dbs.fp.get(fpKey(domainId, fingerprint), ro);
        out[decodeMapKey(key).grain - firstGrain] = {
          fingerprint,
          chunk: raw ? decodeChunk(raw) : undefined,
        };
      }
    } finally {
      txn.done();
    }
    return out;
  }

  /**
   * Map entries of a volume in ascending grain order, from `firstGrain` (inclusive) to `endGrain`
   * (exclusive). The iteration reads one snapshot; finish or break out of it promptly (it holds
   * an LMDB read transaction open).
   */
  *mapEntries(volume: number, firstGrain = 0, endGrain = MAX_GRAIN): Generator<MapEntry> {
    this.checkOpen();
    checkGrain(firstGrain);
    const range = {
      start: mapKey(volume, firstGrain),
      end: mapKey(volume, Math.min(endGrain, MAX_GRAIN)),
    };
    for (const { key, value } of this.dbs.map.getRange(range)) {
      yield { grain: decodeMapKey(key).grain, fingerprint: mapValueFingerprint(value) };
    }
  }

  /**
   * Whether `grain` is mapped, and for how many consecutive grains (at most `maxGrains`) that
   * status holds: the building block of GET LBA STATUS and Volume.blockStatus.
   */
  extentStatus(volume: number, grain: number, maxGrains: number): ExtentStatus {
    this.checkOpen();
    checkGrain(grain);
    if (!Number.isInteger(maxGrains) || maxGrains < 1) {
      throw new MetaError(MetaErrorCode.InvalidArgument, `maxGrains ${maxGrains}`);
    }
    const end = Math.min(grain + maxGrains, MAX_GRAIN);
    const range = { start: mapKey(volume, grain), end: mapKey(volume, end) };
    let expected = grain;
    for (const key of this.dbs.map.getKeys(range)) {
      const g = decodeMapKey(key).grain;
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
    return this.dbs.root.childTransaction(() => {
      const deltas = new CounterDeltas();
      const result = applyJournalInTxn(this.dbs, deltas, max);
      deltas.writeTo(this.dbs);
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
    const physical =
      dom.referencedBytes > 0
        ? Math.round((rec.referencedBytes * dom.physicalBytes) / dom.referencedBytes)
        : 0;
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
    return rebuildIndex(this, domainId, records, options);
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

  private usageOf(d: ReturnType<typeof zeroDomain>): Omit<DomainUsage, "domainId"> {
    const logical = d.mappedGrains * this.grainSize;
    return {
      mappedGrains: d.mappedGrains,
      logicalBytes: logical,
      referencedBytes: d.referencedBytes,
      liveChunks: d.liveChunks,
      uniqueLogicalBytes: d.uniqueLogicalBytes,
      physicalBytes: d.physicalBytes,
      savedByCompression: logical - d.referencedBytes,
      savedByDedup: d.referencedBytes - d.physicalBytes,
      compressionRatio: d.referencedBytes > 0 ? logical / d.referencedBytes : 1,
      dedupRatio: d.physicalBytes > 0 ? d.referencedBytes / d.physicalBytes : 1,
      deadChunks: d.deadChunks,
      deadBytes: d.deadBytes,
    };
  }

  /**
   * The body of every map mutation, inside a write transaction: read and check everything
   * first (it may throw), then write (it must not throw), so that a rejection changes nothing.
   */
  private writeInTxn(volume: number, prepared: readonly PreparedUpdate[]): TxnWriteResult {
    const { dbs } = this;
    const volKey = u32Key(volume);
    const rawRec = dbs.volumes.get(volKey);
    if (!rawRec)
      throw new MetaError(MetaErrorCode.UnknownVolume, `volume ${volume} is not registered`);
    const rec = decodeVolume(rawRec);
    const domainId = rec.domainId;

    // Plan. The current entries of a dense run of grains (a multi-grain write) come from one
    // range scan, which for a write into holes finds nothing at once; sparse updates use gets.
    const first = prepared[0]!.grain;
    const last = prepared[prepared.length - 1]!.grain;
    let current: Map<number, Buffer> | undefined;
    if (prepared.length > 1 && last - first < 2 * prepared.length) {
      current = new Map();
      const range = { start: mapKey(volume, first), end: mapKey(volume, last + 1) };
      for (const { key, value } of dbs.map.getRange(range)) {
        current.set(decodeMapKey(key).grain, mapValueFingerprint(value));
      }
    }
    const entries = new Map<string, ChunkEntry | null>();
    const lookup = (fp: Buffer): ChunkEntry | null => {
      const k = keyString(fp);
      let e = entries.get(k);
      if (e === undefined) {
        const raw = dbs.fp.get(fpKey(domainId, fp));
        e = raw ? decodeChunk(raw) : null;
        entries.set(k, e);
      }
      return e;
    };
    const inserts = new Map<string, ChunkLocation>();
    const duplicates = new Map<string, ChunkLocation>();
    const missing: string[] = [];
    const changes: {
      key: Buffer;
      oldFp?: Buffer;
      newFp?: Buffer;
      oldStored: number;
      newStored: number;
      /** False when the map already holds newFp (healing a dangling entry: only the +1). */
      writeMap: boolean;
      /** False when the old chunk was not in the index: its reference was never counted. */
      releaseOld: boolean;
    }[] = [];
    for (const p of prepared) {
      let newEntry: ChunkEntry | null = null;
      if (p.fingerprint) {
        newEntry = lookup(p.fingerprint);
        if (!newEntry && p.chunk) {
          newEntry = { ...p.chunk, refcount: 0 };
          entries.set(keyString(p.fingerprint), newEntry);
          inserts.set(keyString(p.fingerprint), p.chunk);
        } else if (!newEntry) {
          missing.push(p.fingerprint.toString("hex"));
          continue;
        } else if (p.chunk && !sameLocation(newEntry, p.chunk)) {
          duplicates.set(`${p.chunk.containerId}:${p.chunk.offset}`, p.chunk);
        }
      }
      let oldFp: Buffer | undefined;
      if (current) {
        oldFp = current.get(p.grain);
      } else {
        const oldRaw = dbs.map.get(p.key);
        oldFp = oldRaw ? mapValueFingerprint(oldRaw) : undefined;
      }
      const unchanged =
        oldFp !== undefined && p.fingerprint !== undefined
          ? oldFp.equals(p.fingerprint)
          : oldFp === undefined && p.fingerprint === undefined;
      if (unchanged) {
        // Rewriting a dangling entry with its own data re-inserted: the entry now counts.
        if (p.fingerprint && inserts.has(keyString(p.fingerprint))) {
          changes.push({
            key: p.key,
            newFp: p.fingerprint,
            oldStored: 0,
            newStored: newEntry?.storedLength ?? 0,
            writeMap: false,
            releaseOld: false,
          });
        }
        continue;
      }
      // A chunk inserted by this very call was not in the index before: whatever pointed at it
      // was a dangling entry whose reference no refcount holds.
      const oldEntry = oldFp && !inserts.has(keyString(oldFp)) ? lookup(oldFp) : null;
      changes.push({
        key: p.key,
        ...(oldFp ? { oldFp } : {}),
        ...(p.fingerprint ? { newFp: p.fingerprint } : {}),
        oldStored: oldEntry?.storedLength ?? 0,
        newStored: newEntry?.storedLength ?? 0,
        writeMap: true,
        releaseOld: oldEntry !== null,
      });
    }
    if (missing.length > 0) {
      throw new MetaError(
        MetaErrorCode.ChunkMissing,
        `${missing.length} fingerprint(s) not in domain ${domainId}'s index`,
        missing,
      );
    }

    // Write.
    const deltas = new CounterDeltas();
    for (const [k, loc] of inserts) {
      dbs.fp.putSync(fpKey(domainId, keyFromString(k)), encodeChunk({ ...loc, refcount: 0 }));
      countStored(deltas, loc);
    }
    for (const loc of duplicates.values()) countDuplicate(deltas, loc);
    const refDeltas = new Map<string, number>();
    const bump = (fp: Buffer, by: number): void => {
      const k = keyString(fp);
      refDeltas.set(k, (refDeltas.get(k) ?? 0) + by);
    };
    let mapped = 0;
    let referenced = 0;
    for (const c of changes) {
      if (c.newFp) bump(c.newFp, 1);
      if (c.oldFp && c.releaseOld) bump(c.oldFp, -1);
      referenced += c.newStored - c.oldStored;
      if (!c.writeMap) continue;
      if (c.newFp) dbs.map.putSync(c.key, c.newFp);
      else dbs.map.removeSync(c.key);
      mapped += (c.newFp ? 1 : 0) - (c.oldFp ? 1 : 0);
    }
    const journal: JournalDelta[] = [];
    for (const [k, delta] of refDeltas) {
      if (delta !== 0) journal.push({ fingerprint: keyFromString(k), delta });
    }
    let journaled = false;
    if (journal.length > 0) {
      const seq = this.journalState.nextSeq++;
      dbs.journal.putSync(journalKey(seq), encodeJournalRecord({ domainId, deltas: journal }));
      journaled = true;
    }
    if (mapped !== 0 || referenced !== 0) {
      const next: VolumeRecord = {
        domainId,
        mappedGrains: rec.mappedGrains + mapped,
        referencedBytes: rec.referencedBytes + referenced,
      };
      dbs.volumes.putSync(volKey, encodeVolume(next));
      const d = deltas.domain(domainId);
      d.mappedGrains += mapped;
      d.referencedBytes += referenced;
    }
    deltas.writeTo(dbs);
    if (journaled) this.journalState.pending++;
    return {
      changed: changes.length,
      inserted: inserts.size,
      duplicates: duplicates.size,
      journaled,
    };
  }
}

interface PreparedUpdate {
  readonly grain: number;
  readonly key: Buffer;
  readonly fingerprint: Buffer | undefined;
  readonly chunk: ChunkLocation | undefined;
}

interface TxnWriteResult extends WriteResult {
  readonly journaled: boolean;
}

function validGrainSize(n: number): boolean {
  return Number.isInteger(n) && n >= 4096 && n <= 65536 && (n & (n - 1)) === 0;
}

function checkU32(name: string, n: number): void {
  if (!isU32(n)) throw new MetaError(MetaErrorCode.InvalidArgument, `${name} ${n} is not a u32`);
}

function checkGrain(grain: number): void {
  if (!Number.isInteger(grain) || grain < 0 || grain >= MAX_GRAIN) {
    throw new MetaError(MetaErrorCode.InvalidArgument, `grain ${grain} out of range`);
  }
}

function checkFingerprint(fp: Uint8Array): void {
  if (fp.length !== FINGERPRINT_BYTES) {
    throw new MetaError(
      MetaErrorCode.InvalidArgument,
      `fingerprint of ${fp.length} bytes, not ${FINGERPRINT_BYTES}`,
    );
  }
}

function checkLocation(loc: ChunkLocation): ChunkLocation {
  const problem = locationProblem(loc);
  if (problem) throw new MetaError(MetaErrorCode.InvalidArgument, problem);
  return {
    containerId: loc.containerId,
    offset: loc.offset,
    storedLength: loc.storedLength,
    logicalLength: loc.logicalLength,
  };
}

function sameLocation(a: ChunkLocation, b: ChunkLocation): boolean {
  return a.containerId === b.containerId && a.offset === b.offset;
}

function locationOf(e: ChunkLocation): ChunkLocation {
  return {
    containerId: e.containerId,
    offset: e.offset,
    storedLength: e.storedLength,
    logicalLength: e.logicalLength,
  };
}

function countStored(deltas: CounterDeltas, loc: ChunkLocation): void {
  const c = deltas.container(loc.containerId);
  c.storedChunks += 1;
  c.storedBytes += loc.storedLength;
}

/** A copy written to a container but not referenced by the index: dead from the start. */
function countDuplicate(deltas: CounterDeltas, loc: ChunkLocation): void {
  countStored(deltas, loc);
  const c = deltas.container(loc.containerId);
  c.deadChunks += 1;
  c.deadBytes += loc.storedLength;
}
