/**
 * The pool's write-back stage: the "ordered journal with group-commit fdatasync" of DESIGN.md
 * "Durability". One per Pool.
 *
 * A write on a volume with its write cache on (WCE=1) and without FUA is *staged* here and
 * acknowledged: by default (deferred sealing, "Commit pipeline" below) with a private copy of its
 * plaintext and a sequence number alone (`stageDeferred`); without it, once its grains are
 * fingerprinted, deduplicated and its new chunks appended (not synced), with its map updates
 * and the new chunks' locations too (`stage`). Either way it is visible at once: reads overlay
 * the staged grains on the block map and serve them from the plaintext (`overlay`).
 *
 * A *commit* (`commit`) moves everything staged so far to the metadata store, in the order the
 * writes were staged: (1) fdatasync every open container a staged update names (ContainerWriter
 * shares one fdatasync between all its waiters); (2) the staged writes' map updates in one LMDB
 * commit (`MetaStore.writeGrainsMany`: on the store's map thread when it has one, else one
 * `writeGrains` per write, queued in one turn; meta/README.md, "Write protocol"); each write
 * still all or nothing (`writeAtomic`); (3) staged grains not superseded by a newer staged write
 * leave the overlay, and the write's chunk batches are released (container holds, in-flight
 * dedup entries).
 * Writes go on staging into a fresh list while a commit runs; commits run one at a time.
 *
 * The invariant that makes a crash safe is unchanged: the map never names container bytes that
 * were not durable first (step 1 before step 2), and LMDB is never run with noSync. A crash loses
 * what was staged and not committed; the appended records are then bytes no index entry names,
 * exactly what a crash between append and map update always left (src/pool/README.md,
 * "Recovery"). The volume promises durability only after SYNCHRONIZE CACHE or FUA (DESIGN.md
 * "Durability"), and both commit and flush before they answer.
 *
 * What triggers a commit: a FUA write or any write of a `writeCache: false` volume (it stages,
 * then waits for a durable commit), `flush()`, the staged bytes reaching `maxStagedBytes`, a timer
 * `commitDelayMs` after the first staged write (what a crash can lose is bounded by it), and
 * anything that reads or changes the maps other than reads and writes (unmap, block status,
 * copies, snapshots, GC, scrub, check, rebuild, volume close, pool close): see pool-volume.ts and
 * pool.ts.
 *
 * Chunk holds. A staged write keeps its ChunkBatch (and so its container holds and its in-flight
 * dedup entries) until it is committed: a container a staged update names is never sealed under
 * it or deleted by GC, and a staged new chunk stays findable for dedup (chunk-store.ts "In-flight
 * dedup") until the index has it.
 *
 * ChunkMissing. A staged write that deduplicated against a chunk GC has claimed since gets
 * `ChunkMissing` from its writeGrains; the commit stores those grains again from the plaintext
 * it holds and retries that write (up to three times), as the write path did before staging.
 *
 * Failures. A container whose fdatasync fails is marked broken (chunk-store.ts); the grains whose
 * new chunks it holds are stored again from their plaintext in another container before their map
 * update. Any other failure of a commit keeps the writes that did not land staged (still visible,
 * still ordered before later ones) and rejects the commit: a background commit logs it and tries
 * again after `retryDelayMs`; a flush or FUA write that asked for the commit reports it
 * (WriteFault) rather than pretend durability.
 *
 * Backpressure (memory): a write resolves only while the writes staged and those taken by the
 * commit under way hold less than `maxHeldBytes` together (`heldBytes`: their plaintext is in
 * memory until they land; by default four times `maxStagedBytes` with deferred sealing, twice
 * without); a waiting write resumes when a commit lands.
 *
 * Commit pipeline (`deferredSeal`, on by default: see src/pool/README.md "Deferred sealing").
 * PoolVolume stages a WCE=1 non-FUA write with
 * its plaintext alone (`stageDeferred`), after capacity admission: it is acknowledged then. Its
 * preparation (fingerprint, dedup, heal, seal, append: the volume's `prepare`) runs in the
 * background, up to `maxPreparing` writes at once, taken up in staging order; their ordered
 * parts (lookups and the placing of appends: `InOrder`) run one after the other in that order.
 * A commit waits for the preparation of every write it takes before step 1, so map updates keep
 * staging order. A preparation that fails is logged; the write stays staged and readable, the
 * commit lands only the writes before it and rejects (WriteFault: the next flush or FUA write
 * reports it), and the next commit prepares it again. Backpressure: `stageDeferred` resolves
 * only while less than `maxUnpreparedBytes` wait for preparation. `unsealedBytes` (acknowledged,
 * not appended) lets capacity rules count those bytes as used.
 *
 * Ordering. Commits apply whole writes in staging order. When one write of a commit fails while
 * later ones land, the grains those later writes cover are dropped from the failed write before
 * it is retried, so a retry never brings back an older version of a grain; the failed write
 * stays all or nothing. (Its loss together with the survival of a later write that was not
 * flushed either is allowed: neither was acknowledged as durable.)
 */
import type { Logger } from "pino";
import { StorageError, StorageErrorCode } from "../volume/errors.js";
import type { ChunkBatch, ChunkStore } from "./chunk-store.js";
import { asStorageError } from "./chunk-store.js";
import { type GrainUpdate, MetaError, MetaErrorCode, type MetaStore } from "./meta/index.js";

const GRAIN = 4096;
const MiB = 1024 * 1024;

export interface WriteBackOptions {
  /**
   * Off: every write commits before it resolves (the map is updated, not yet flushed), as before
   * write-back existed. Default on.
   */
  readonly enabled?: boolean | undefined;
  /** A commit starts this long after the first write staged since the last one. Default 200. */
  readonly commitDelayMs?: number | undefined;
  /**
   * A commit starts once this many bytes are staged. Default 16 MiB with `deferredSeal`, else
   * 64 MiB.
   */
  readonly maxStagedBytes?: number | undefined;
  /**
   * Writes wait while this many bytes are staged or being committed (backpressure). Default four
   * times `maxStagedBytes` with `deferredSeal` (64 MiB), else twice (128 MiB). A commit takes
   * 60–90 ms, about as long as the next 16 MiB take to arrive: with twice the bound, writes
   * stood waiting for commits 15 % of the time (docs/performance.md, "ninth session").
   */
  readonly maxHeldBytes?: number | undefined;
  /** A background commit that failed is tried again after this long. Default 1000. */
  readonly retryDelayMs?: number | undefined;
  /**
   * Deferred sealing (module comment, "Commit pipeline"): PoolVolume stages a WCE=1 non-FUA
   * write with its plaintext only (`stageDeferred`); fingerprinting, dedup, sealing and
   * appending happen in the background before the commit that lands it. Off: a write is staged
   * once its chunks are appended (`stage`). Default on (Pool.open: off when SANMUX_DEFERRED_SEAL=0).
   */
  readonly deferredSeal?: boolean | undefined;
  /** Deferred writes being prepared at once (fingerprinted, sealed). Default 8. */
  readonly maxPreparing?: number | undefined;
  /**
   * A deferred write resolves only once fewer than this many bytes of deferred writes wait for
   * (or are in) their preparation: how far acknowledgements run ahead of the pipeline, so that
   * a flush never has more than this to seal. Default 16 MiB.
   */
  readonly maxUnpreparedBytes?: number | undefined;
}

/** One grain as staged: its sequence number and content (undefined: a hole). */
export interface StagedGrain {
  readonly seq: number;
  /** The grain's 4 KiB of plaintext, never modified once staged; undefined for a hole. */
  readonly plaintext: Buffer | undefined;
}

/** A write handed to `stage`. */
export interface WriteToStage {
  /** MetaStore volume number and the volume's domain number. */
  readonly volume: number;
  readonly domain: number;
  /** The write's map updates, new chunks with their (appended, unsynced) location. */
  readonly updates: GrainUpdate[];
  /** Per update: the grain's plaintext, owned by the stage from now on; undefined for holes. */
  readonly plaintext: (Buffer | undefined)[];
  /** The write's chunk batch: released by the commit that lands the write. */
  readonly batch: ChunkBatch;
  /**
   * Bytes of grains the write turns from hole to mapped, when the allocation guard counted them
   * (else 0): `freshBytes` adds them to the volume's logical bytes until the write lands.
   */
  readonly freshBytes?: number;
}

/** What `DeferredWrite.prepare` hands back: what `stage` takes beside the plaintext. */
export interface PreparedWrite {
  /** One per grain of the write, in order (new chunks with their appended location). */
  readonly updates: GrainUpdate[];
  /** Released by the commit that lands the write. */
  readonly batch: ChunkBatch;
}

/**
 * Runs `fn` once the ordered part of every earlier deferred write is over; `fn` may end its own
 * ordered part early (`turnOver`), else it ends when `fn` settles.
 */
export type InOrder = <T>(fn: (turnOver: () => void) => Promise<T>) => Promise<T>;

/** A write handed to `stageDeferred`: plaintext only, prepared in the background. */
export interface DeferredWrite {
  readonly volume: number;
  readonly domain: number;
  /** The first grain; the write covers `plaintext.length` grains from it. */
  readonly first: number;
  /** Per grain: its plaintext, owned by the stage from now on; undefined for a zero grain. */
  readonly plaintext: (Buffer | undefined)[];
  readonly freshBytes?: number;
  /**
   * Fingerprint, dedup, heal and append the write's grains. `inOrder` runs its callback after
   * the `inOrder` part of every write staged before this one (appends in staging order keep a
   * sequential writer's records back to back, and a repeat finds the earlier write's chunk).
   * Called again by a later commit when it rejected.
   */
  readonly prepare: (inOrder: InOrder) => Promise<PreparedWrite>;
}

interface StagedWrite {
  readonly volume: number;
  readonly domain: number;
  readonly seq: number;
  /** Empty until a deferred write is prepared. */
  updates: GrainUpdate[];
  plaintext: (Buffer | undefined)[];
  /** The first is the write's own; ChunkMissing and broken containers add more. */
  readonly batches: ChunkBatch[];
  readonly freshBytes: number;
  /** Bytes it counts in `heldBytes` until it lands (set by `enqueue`). */
  held: number;
  /** A deferred write: how to prepare it, and the preparation under way or done. */
  readonly deferred?: {
    readonly first: number;
    readonly prepare: DeferredWrite["prepare"];
    /** Settles when the preparation ends: `updates` and `batches` are then set, or `failed`. */
    prepared: Promise<void>;
    settle: { resolve: () => void; reject: (error: unknown) => void };
    /** The last preparation failed: the next commit that takes the write prepares it again. */
    failed: boolean;
  };
}

export class WriteBack {
  readonly enabled: boolean;
  private readonly commitDelayMs: number;
  private readonly maxStagedBytes: number;
  private readonly maxHeldBytes: number;
  private readonly retryDelayMs: number;
  /** Per volume, per grain: the newest staged version (what reads see). */
  private readonly grains = new Map<number, Map<number, StagedGrain>>();
  /** Writes waiting for a commit, in staging order. */
  private readonly staged: StagedWrite[] = [];
  private stagedBytes = 0;
  /**
   * Bytes of the writes staged or being committed, not landed yet: the plaintext the stage
   * holds. Writes wait while it is at `maxHeldBytes` (backpressure).
   */
  private heldBytes = 0;
  /** Writes waiting for `heldBytes` to fall (woken, or failed, by the end of each commit). */
  private heldWaiters: { resolve: () => void; reject: (error: unknown) => void }[] = [];
  /** Per volume: WriteToStage.freshBytes of the writes not landed yet. */
  private readonly fresh = new Map<number, number>();
  /** Writes taken by the commit under way (still in the overlay). */
  private committing = 0;
  private seq = 0;
  private timer: NodeJS.Timeout | undefined;
  /** The last commit queued or under way, and the one queued behind it (shared by callers). */
  private tail: Promise<void> = Promise.resolve();
  private queued: Promise<void> | undefined;
  private closed = false;
  readonly deferredSeal: boolean;
  private readonly maxPreparing: number;
  private readonly maxUnpreparedBytes: number;
  /** Bytes of deferred writes queued for or in preparation (backpressure). */
  private unpreparedBytes = 0;
  /** Writes waiting for `unpreparedBytes` to fall below the bound. */
  private roomWaiters: (() => void)[] = [];
  /** Deferred writes waiting for a preparation slot, in staging order. */
  private readonly toPrepare: StagedWrite[] = [];
  private preparing = 0;
  /** Bytes of non-zero grains of deferred writes not prepared yet (`unsealedBytes`). */
  private unsealed = 0;
  /** Resolves when the `inOrder` part of the last deferred write taken up is over. */
  private orderTail: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: MetaStore,
    private readonly chunks: ChunkStore,
    private readonly logger: Logger | undefined,
    options: WriteBackOptions = {},
  ) {
    this.enabled = options.enabled ?? true;
    this.commitDelayMs = options.commitDelayMs ?? 200;
    this.retryDelayMs = options.retryDelayMs ?? 1000;
    this.deferredSeal = this.enabled && (options.deferredSeal ?? true);
    // Deferred: smaller commits (memory: what the stage holds, and LMDB's copy-on-write pages
    // of a large commit; src/pool/README.md "Deferred sealing", Memory).
    this.maxStagedBytes = options.maxStagedBytes ?? (this.deferredSeal ? 16 * MiB : 64 * MiB);
    this.maxHeldBytes = options.maxHeldBytes ?? (this.deferredSeal ? 4 : 2) * this.maxStagedBytes;
    this.maxPreparing = Math.max(1, options.maxPreparing ?? 8);
    this.maxUnpreparedBytes = options.maxUnpreparedBytes ?? 16 * MiB;
  }

  /** Bytes of grains staged and not yet taken by a commit. */
  get bytesStaged(): number {
    return this.stagedBytes;
  }

  /**
   * Bytes of grains acknowledged and not yet appended to a container (deferred writes not
   * prepared): capacity rules add them to what the containers hold, an upper bound (dedup may
   * store less), so that a burst of acknowledged writes cannot run past a cap.
   */
  get unsealedBytes(): number {
    return this.unsealed;
  }

  /** Whether anything is staged or being committed (reads of the maps alone are not current). */
  get busy(): boolean {
    return this.staged.length > 0 || this.committing > 0;
  }

  /**
   * Stage a write (module comment): visible to reads at once, durable after a commit. The write
   * resolves after this; when too much is staged already, `stage` resolves only once a commit
   * made room (backpressure), so memory stays bounded.
   */
  async stage(write: WriteToStage): Promise<void> {
    if (this.closed) {
      write.batch.release();
      throw new StorageError(StorageErrorCode.NotReady, "the pool is closed");
    }
    const seq = ++this.seq;
    const volume = this.volumeGrains(write.volume);
    const { updates, plaintext } = write;
    for (let i = 0; i < updates.length; i++) {
      volume.set(updates[i]!.grain, { seq, plaintext: plaintext[i] });
    }
    return this.enqueue({
      volume: write.volume,
      domain: write.domain,
      seq,
      updates: write.updates,
      plaintext: write.plaintext,
      batches: [write.batch],
      freshBytes: write.freshBytes ?? 0,
      held: 0,
    });
  }

  /**
   * Stage a write by its plaintext alone (module comment, "Commit pipeline"): visible to reads
   * at once; prepared in the background; landed, in staging order, by a commit, which waits for
   * its preparation. Backpressure as for `stage`.
   */
  async stageDeferred(write: DeferredWrite): Promise<void> {
    if (this.closed) throw new StorageError(StorageErrorCode.NotReady, "the pool is closed");
    const seq = ++this.seq;
    const volume = this.volumeGrains(write.volume);
    // A plain loop: zero grains may be holes of a sparse array, which forEach would skip.
    for (let i = 0; i < write.plaintext.length; i++) {
      volume.set(write.first + i, { seq, plaintext: write.plaintext[i] });
    }
    const staged: StagedWrite = {
      volume: write.volume,
      domain: write.domain,
      seq,
      updates: [],
      plaintext: write.plaintext,
      batches: [],
      freshBytes: write.freshBytes ?? 0,
      held: 0,
      deferred: newPreparation(write.first, write.prepare),
    };
    for (const text of write.plaintext) if (text !== undefined) this.unsealed += GRAIN;
    this.queueForPreparation([staged]);
    await this.enqueue(staged);
    // Backpressure on the pipeline: acknowledgements run at most this far ahead of it.
    while (this.unpreparedBytes > this.maxUnpreparedBytes && !this.closed) {
      await new Promise<void>((r) => this.roomWaiters.push(r));
    }
  }

  /** Queue deferred writes for preparation; `first`: they are older than all queued ones. */
  private queueForPreparation(writes: StagedWrite[], first = false): void {
    for (const w of writes) this.unpreparedBytes += w.plaintext.length * GRAIN;
    if (first) this.toPrepare.unshift(...writes);
    else this.toPrepare.push(...writes);
    this.prepareNext();
  }

  private volumeGrains(volume: number): Map<number, StagedGrain> {
    let grains = this.grains.get(volume);
    if (grains === undefined) {
      grains = new Map();
      this.grains.set(volume, grains);
    }
    return grains;
  }

  private async enqueue(write: StagedWrite): Promise<void> {
    this.staged.push(write);
    if (write.freshBytes > 0) {
      this.fresh.set(write.volume, (this.fresh.get(write.volume) ?? 0) + write.freshBytes);
    }
    write.held = write.plaintext.length * GRAIN;
    this.stagedBytes += write.held;
    this.heldBytes += write.held;
    if (!this.enabled) return this.commit();
    if (this.stagedBytes >= this.maxStagedBytes) this.commitInBackground();
    else this.timer ??= setTimeout(() => this.commitInBackground(), this.commitDelayMs).unref();
    // Backpressure: what is staged and what the commit under way holds count together (the
    // plaintext of both is in memory), so the stage never holds more than `maxHeldBytes`. A
    // waiting write resumes as soon as a commit lands enough, not after the next commit too.
    while (this.heldBytes >= this.maxHeldBytes && !this.closed) {
      if (this.staged.length > 0 && this.queued === undefined) this.commitInBackground();
      await new Promise<void>((resolve, reject) => this.heldWaiters.push({ resolve, reject }));
    }
  }

  /** A commit ended: waiting writes look again (or fail with its error, as a flush would). */
  private wakeHeld(error?: unknown): void {
    for (const w of this.heldWaiters.splice(0)) {
      if (error === undefined) w.resolve();
      else w.reject(error);
    }
  }

  /**
   * The staged versions of `count` grains from `first` of `volume`, or undefined when none of
   * them is staged. Read it in the same turn as the map (resolveGrains): a commit removes a grain
   * from here only after the map holds it.
   */
  overlay(volume: number, first: number, count: number): (StagedGrain | undefined)[] | undefined {
    const staged = this.grains.get(volume);
    if (staged === undefined) return undefined;
    let out: (StagedGrain | undefined)[] | undefined;
    for (let i = 0; i < count; i++) {
      const s = staged.get(first + i);
      if (s === undefined) continue;
      out ??= new Array<StagedGrain | undefined>(count).fill(undefined);
      out[i] = s;
    }
    return out;
  }

  /**
   * Logical bytes the staged writes of `volume` add to what its map holds (holes they map, as
   * the allocation guard counted them): capacity rules compare map + staged with a quota.
   */
  freshBytes(volume: number): number {
    return this.fresh.get(volume) ?? 0;
  }

  /**
   * Whether a grain of [first, first + count) of `volume` is staged or being committed (what
   * unmap and block status must commit first). O(min(count, grains staged for the volume)).
   */
  stagedIn(volume: number, first: number, count: number): boolean {
    const staged = this.grains.get(volume);
    if (staged === undefined) return false;
    if (count <= staged.size) {
      for (let g = first; g < first + count; g++) if (staged.has(g)) return true;
      return false;
    }
    for (const g of staged.keys()) if (g >= first && g < first + count) return true;
    return false;
  }

  /**
   * Commit everything staged before this call (module comment); with `durable`, also flush the
   * metadata store, so that every write that resolved before the call survives a power loss.
   * Rejects with a StorageError (WriteFault) when that could not be done.
   */
  async commit(options: { durable?: boolean } = {}): Promise<void> {
    let p = this.queued;
    if (p === undefined) {
      p = this.tail.then(() => {
        this.queued = undefined;
        return this.commitStaged();
      });
      this.queued = p;
      this.tail = p.catch(() => undefined);
    }
    await p;
    if (options.durable === true) {
      try {
        await this.store.flush();
      } catch (error) {
        throw asFault(error, "flushing the metadata store");
      }
    }
  }

  /** Commit everything and refuse further staging (Pool.close). */
  async close(): Promise<void> {
    try {
      await this.commit({ durable: true });
    } finally {
      this.closed = true;
      for (const wake of this.roomWaiters.splice(0)) wake();
      this.wakeHeld();
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }

  /** Start preparing deferred writes, in staging order, while slots are free. */
  private prepareNext(): void {
    while (this.preparing < this.maxPreparing && this.toPrepare.length > 0) {
      this.startPreparing(this.toPrepare.shift()!);
    }
  }

  /**
   * Prepare `w`: fingerprint, dedup, seal and append through the volume's callback. `inOrder`
   * parts run in the order writes were taken up here, which is staging order (FIFO slots; a
   * retried write goes first, being older than anything queued), and never wait for a commit.
   */
  private startPreparing(w: StagedWrite): void {
    const d = w.deferred!;
    this.preparing++;
    const before = this.orderTail;
    let done!: () => void;
    this.orderTail = new Promise<void>((r) => (done = r));
    let ran = false;
    const inOrder: InOrder = async (fn) => {
      ran = true;
      await before;
      try {
        return await fn(done);
      } finally {
        done();
      }
    };
    void (async () => {
      try {
        const { updates, batch } = await d.prepare(inOrder);
        w.updates = updates;
        w.batches.push(batch);
        for (const text of w.plaintext) if (text !== undefined) this.unsealed -= GRAIN;
        d.settle.resolve();
      } catch (error) {
        // Acknowledged already: not lost silently. It stays staged and readable; the commit
        // that needs it reports WriteFault (flush, FUA) and prepares it again (module comment).
        this.logger?.error(
          { err: error, volume: w.volume, firstGrain: d.first, grains: w.plaintext.length },
          "a write acknowledged before it was stored failed in the commit pipeline: it stays " +
            "staged and readable, the next flush reports a write fault, and it is retried",
        );
        d.failed = true;
        d.settle.reject(error);
      } finally {
        if (!ran) done(); // failed before its ordered part: the next write must not wait
        this.preparing--;
        this.unpreparedBytes -= w.plaintext.length * GRAIN;
        if (this.unpreparedBytes <= this.maxUnpreparedBytes) {
          for (const wake of this.roomWaiters.splice(0)) wake();
        }
        this.prepareNext();
      }
    })();
  }

  /**
   * Wait for the preparation of every deferred write of `writes` (preparing again, first, the
   * ones whose last preparation failed). Returns the first one that failed, in staging order.
   */
  private async awaitPrepared(
    writes: readonly StagedWrite[],
  ): Promise<{ index: number; error: unknown } | undefined> {
    const again = writes.filter((w) => w.deferred?.failed === true);
    for (const w of again) {
      const d = w.deferred!;
      Object.assign(d, newPreparation(d.first, d.prepare));
    }
    this.queueForPreparation(again, true);
    const outcomes = await Promise.all(
      writes.map((w) =>
        w.deferred === undefined
          ? undefined
          : w.deferred.prepared.then(
              () => undefined,
              (error: unknown) => ({ error }),
            ),
      ),
    );
    const index = outcomes.findIndex((o) => o !== undefined);
    return index < 0 ? undefined : { index, error: outcomes[index]!.error };
  }

  private commitInBackground(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.commit().catch(() => undefined); // logged, and retried, by commitStaged
  }

  /** One commit of everything staged now (module comment). Runs alone (`commit` chains them). */
  private async commitStaged(): Promise<void> {
    try {
      await this.commitTaken();
    } catch (error) {
      this.wakeHeld(error);
      throw error;
    }
    this.wakeHeld();
  }

  private async commitTaken(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.staged.length === 0) return;
    // Taken out of the array, which stays (a fresh empty array each commit had another elements
    // kind: the optimized staging code deoptimized on it and was compiled again, ~40 ms a time).
    const taken = this.staged.splice(0);
    this.stagedBytes = 0;
    this.committing = taken.length;
    let writes = taken;
    /** Writes from the first that failed to prepare on: not landed by this commit. */
    let unprepared: StagedWrite[] = [];
    try {
      const failedPreparation = await this.awaitPrepared(taken);
      if (failedPreparation !== undefined) {
        // Land what comes before it; it and what follows stay staged, in order (ordering).
        writes = taken.slice(0, failedPreparation.index);
        unprepared = taken.slice(failedPreparation.index);
      }
      for (let attempt = 0; writes.length > 0; attempt++) {
        await this.makeChunksDurable(writes);
        // One LMDB commit for the lot, applied in staging order (on the map thread when the
        // store has one: MetaStore.writeGrainsMany).
        const results = await this.store.writeGrainsMany(writes);
        const failed: { write: StagedWrite; error: unknown }[] = [];
        results.forEach((r, k) => {
          if (r.status === "rejected") failed.push({ write: writes[k]!, error: r.reason });
        });
        this.dropCoveredGrains(
          writes,
          results.map((r) => r.status === "fulfilled"),
        );
        results.forEach((r, k) => {
          if (r.status === "fulfilled") this.landed(writes[k]!);
        });
        // From here on `writes` is what has not landed: on any throw it goes back to staging.
        writes = [];
        for (const { write } of failed) {
          if (write.updates.length === 0)
            this.landed(write); // all its grains were overwritten
          else writes.push(write);
        }
        const fatal = failed.find(
          ({ write, error }) =>
            write.updates.length > 0 &&
            !(
              attempt < 3 &&
              error instanceof MetaError &&
              error.code === MetaErrorCode.ChunkMissing
            ),
        );
        if (fatal !== undefined) throw fatal.error;
        if (writes.length === 0) break;
        for (const { write, error } of failed) {
          if (write.updates.length === 0) continue;
          // GC claimed chunks it deduplicated against: store those grains again (README, "GC").
          await this.storeAgain(write, new Set((error as MetaError).fingerprints ?? []));
        }
      }
      if (failedPreparation !== undefined) {
        const cause = failedPreparation.error;
        const why = cause instanceof Error ? cause.message : String(cause);
        throw new StorageError(
          StorageErrorCode.WriteFault,
          `a write acknowledged earlier could not be stored: ${why}`,
          undefined,
          { cause },
        );
      }
    } catch (error) {
      // What did not land stays staged, before what was staged meanwhile (it is older).
      writes = [...writes, ...unprepared];
      this.staged.unshift(...writes);
      for (const w of writes) this.stagedBytes += w.plaintext.length * GRAIN;
      // Already acknowledged: they stay staged (and readable) and the commit is tried again,
      // whoever asked for this one; a flush or FUA write meanwhile reports the failure.
      this.logger?.error(
        { err: error, stagedWrites: this.staged.length },
        "committing staged writes failed: they stay staged and the commit is retried",
      );
      if (!this.closed) {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.commitInBackground(), this.retryDelayMs).unref();
      }
      throw asFault(error, "committing staged writes");
    } finally {
      this.committing = 0;
    }
  }

  /**
   * Step 1: every open container a staged update names is made durable (fdatasync, shared by
   * ContainerWriter between concurrent callers). Sealed containers were synced at sealing. A
   * container whose sync fails is broken: the grains it holds are stored again elsewhere from
   * their plaintext, and those new containers synced in turn.
   */
  private async makeChunksDurable(writes: readonly StagedWrite[]): Promise<void> {
    for (let round = 0; ; round++) {
      const containers = new Set<number>();
      for (const w of writes) {
        for (const u of w.updates) if (u.chunk !== undefined) containers.add(u.chunk.containerId);
      }
      await Promise.all(
        [...containers].map(async (id) => {
          const oc = this.chunks.openContainer(id);
          if (oc === undefined || oc.broken) return;
          try {
            await oc.writer.sync();
          } catch (error) {
            this.chunks.markBroken(oc, error);
          }
        }),
      );
      const isBroken = (id: number) => this.chunks.openContainer(id)?.broken === true;
      let again = false;
      for (const w of writes) {
        const lost = new Set<string>();
        for (const u of w.updates) {
          if (u.chunk !== undefined && u.fingerprint !== null && isBroken(u.chunk.containerId)) {
            lost.add(Buffer.from(u.fingerprint).toString("hex"));
          }
        }
        if (lost.size === 0) continue;
        if (round >= 3) {
          throw new StorageError(
            StorageErrorCode.WriteFault,
            "containers keep failing to sync: staged writes cannot be made durable",
          );
        }
        await this.storeAgain(w, lost);
        again = true;
      }
      if (!again) return;
    }
  }

  /**
   * Append the grains of `w` whose fingerprint (hex) is in `which` again, from the plaintext,
   * with a new batch (held until `w` lands); their updates then name the new location.
   */
  private async storeAgain(w: StagedWrite, which: ReadonlySet<string>): Promise<void> {
    const index: number[] = [];
    const items: { fingerprint: Buffer; grain: Buffer }[] = [];
    w.updates.forEach((u, i) => {
      const text = w.plaintext[i];
      if (u.fingerprint === null || text === undefined) return;
      const fingerprint = Buffer.from(u.fingerprint);
      if (!which.has(fingerprint.toString("hex"))) return;
      index.push(i);
      items.push({ fingerprint, grain: text });
    });
    if (items.length === 0) return;
    const batch = this.chunks.batch(w.domain);
    w.batches.push(batch);
    const locations = await batch.appendAll(items);
    const updates = [...w.updates];
    index.forEach((i, k) => {
      updates[i] = { ...updates[i]!, chunk: locations[k]! };
    });
    w.updates = updates;
  }

  /**
   * A failed write must not bring back, when retried, a grain a later write of the same commit
   * has landed: drop those grains from it (module comment, "Ordering").
   */
  private dropCoveredGrains(writes: readonly StagedWrite[], ok: readonly boolean[]): void {
    if (ok.every(Boolean)) return;
    const covered = new Map<number, Set<number>>();
    for (let k = writes.length - 1; k >= 0; k--) {
      const w = writes[k]!;
      let set = covered.get(w.volume);
      if (ok[k] === true) {
        if (set === undefined) {
          set = new Set();
          covered.set(w.volume, set);
        }
        for (const u of w.updates) set.add(u.grain);
        continue;
      }
      if (set === undefined) continue;
      const keep = w.updates.map((u) => !set.has(u.grain));
      if (keep.every(Boolean)) continue;
      // A loop, not filter: zero grains are holes of the plaintext array, which filter would
      // skip, and plaintext[i] must stay the grain of updates[i].
      const updates: GrainUpdate[] = [];
      const plaintext: (Buffer | undefined)[] = [];
      for (let i = 0; i < keep.length; i++) {
        if (!keep[i]) continue;
        updates.push(w.updates[i]!);
        plaintext.push(w.plaintext[i]);
      }
      w.updates = updates;
      w.plaintext = plaintext;
    }
  }

  /**
   * `w` is in the map: its grains leave the overlay unless staged again since, and for those the
   * location hints learn what the map now says (location-hints.ts); release it.
   */
  private landed(w: StagedWrite): void {
    const volume = this.grains.get(w.volume);
    if (volume !== undefined) {
      const hints = this.chunks.reads.locations;
      for (const u of w.updates) {
        if (volume.get(u.grain)?.seq !== w.seq) continue;
        volume.delete(u.grain);
        hints.set(w.volume, u.grain, u.fingerprint, u.chunk ?? u.indexed);
      }
      if (volume.size === 0) this.grains.delete(w.volume);
    }
    for (const b of w.batches) b.release();
    this.heldBytes -= w.held;
    w.held = 0;
    if (w.freshBytes > 0) {
      const left = (this.fresh.get(w.volume) ?? 0) - w.freshBytes;
      if (left > 0) this.fresh.set(w.volume, left);
      else this.fresh.delete(w.volume);
    }
  }
}

function asFault(error: unknown, what: string): StorageError {
  if (error instanceof StorageError) return error;
  if (error instanceof MetaError) {
    return new StorageError(StorageErrorCode.WriteFault, `${what}: ${error.message}`, undefined, {
      cause: error,
    });
  }
  return asStorageError(error, what);
}

function newPreparation(
  first: number,
  prepare: DeferredWrite["prepare"],
): NonNullable<StagedWrite["deferred"]> {
  let settle!: { resolve: () => void; reject: (error: unknown) => void };
  const prepared = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
  prepared.catch(() => undefined); // observed by the commit that needs it
  return { first, prepare, prepared, settle, failed: false };
}
