/**
 * A thin-provisioned, deduplicated volume of the pool: the `Volume` contract
 * (src/volume/volume.ts) over the block map of the metadata store and the chunk store.
 *
 * Grains of 4 KiB (DESIGN.md "Pool") are the unit of the map: a grain never written or unmapped
 * is a hole, reads as zeros and costs nothing; an all-zero grain written is stored as a hole.
 *
 * Write path, following src/pool/meta/README.md "Write protocol": fingerprint each grain with the
 * domain's key; lookupChunk; grains the index lacks go to the chunk store in one batch
 * (`appendAll`, not synced yet); then the write is *staged* (write-back.ts): visible to reads at
 * once, and moved to the map by the next commit, which makes the containers durable (one
 * group-committed fdatasync) and then puts every grain of the write into the map in ONE
 * writeGrains transaction. That transaction is what makes a write atomic (so `writeAtomic` is the
 * same path, bounded) and a grain read as old or new after any crash: the map never names
 * container bytes that were not durable first. `ChunkMissing` (GC claimed a chunk between our
 * lookup and the map update) is answered by the commit, which stores those grains again from the
 * plaintext it holds. A WCE=1 write without FUA defers all of that (write-back.ts "Commit
 * pipeline"): it is admitted, its zero grains found by a compare, its plaintext staged, and it
 * resolves; `prepareGrains` runs in the background before the commit that lands it (near the
 * devices' reserve it takes the direct path, so that PoolFull is refused before acknowledging).
 *
 * Block size 512: a write that covers part of a grain reads the grain, patches it and writes it
 * whole (read-modify-write). Every write, unmap and copy of such a volume takes the grain locks
 * of the grains it touches, so that two writes into different sectors of one grain never lose
 * each other. A 4096-byte volume never does a partial grain, so it takes no lock: concurrent
 * overlapping writes land in an unspecified order, as SCSI allows.
 *
 * Read path: volume-read.ts (the map or the location hints, the staged grains over them, the
 * read cache by volume address, one pread per run of records).
 *
 * Durability: `write` resolving means visible; `flush()` commits what is staged and flushes the
 * metadata store, making every resolved write durable; FUA, or `writeCache: false`, does the same
 * before resolving. Operations that read or change the map other than reads and writes (unmap,
 * block status, copies) commit the staged grains they concern first, so that they see them and
 * are ordered after them.
 *
 * Read cache (volume-read.ts, volume-cache.ts): every change to the map (writeBytes once staged,
 * unmap, copyFrom) drops its range from the read cache and the location hints once visible and
 * before it completes (`uncache`).
 *
 * Snapshot views (Pool.openSnapshot): the same class over `(volume, s)`: reads, block status and
 * copies from it read the map as of snapshot `s` (MetaStore `{ snapshot }` reads); writes, unmaps
 * and copies into it reject with WriteProtected. A view of a deleted snapshot is closed (NotReady).
 *
 * Capacity admission: before a write stores anything, the pool's allocation guard (if set) is
 * called with the bytes of the grains the write turns from hole to mapped (overwrites of mapped
 * grains and zero grains count nothing); if it throws, the write rejects with that error and
 * nothing is stored.
 */
import type { Logger } from "../util/log.js";
import { StorageError, StorageErrorCode } from "../volume/errors.js";
import type { BlockStatus, Volume, WriteOptions } from "../volume/volume.js";
import type { ChunkStore } from "./chunk-store.js";
import { asStorageError } from "./chunk-store.js";
import { FOUND_FIELDS, foundEntry, type IndexLookup } from "./chunk-worker.js";
import {
  type ChunkEntry,
  type ChunkLocation,
  type GrainUpdate,
  MetaError,
  MetaErrorCode,
  type MetaStore,
} from "./meta/index.js";
import type { Registry, VolumeRecord } from "./registry.js";
import { readGrains } from "./volume-read.js";
import type { PreparedWrite, WriteBack } from "./write-back.js";

export const GRAIN = 4096;
/** Largest atomic write (one writeGrains transaction): 256 grains. */
export const ATOMIC_WRITE_MAX_BYTES = 1 << 20;

/**
 * Asked before a write allocates: `newLogicalBytes` = grains the write maps that were holes ×
 * 4096 (never 0). Throws (StorageError QuotaExceeded / PoolFull) to refuse the write.
 */
export type AllocationGuard = (volumeName: string, newLogicalBytes: number) => void;

/** What a volume needs from its pool. One object per pool: `copyFrom` compares it. */
export interface PoolContext {
  readonly store: MetaStore;
  readonly chunks: ChunkStore;
  readonly registry: Registry;
  readonly logger: Logger | undefined;
  /** The pool's write-back stage: writes are staged there, and committed by it. */
  readonly writeBack: WriteBack;
  /** Pool.setAllocationGuard; read at every write. */
  allocationGuard: AllocationGuard | undefined;
  /** Called when a volume closes, so the pool forgets it. */
  forget(volume: PoolVolume): void;
}

/** A grain of a write whose content is a chunk scrub found damaged (storeGrains, heal). */
interface Heal {
  readonly index: number;
  readonly fingerprint: Buffer;
  readonly from: { readonly containerId: number; readonly offset: number };
}

export class PoolVolume implements Volume {
  readonly physicalBlockSize = GRAIN;
  readonly atomicWriteMaxBlocks: number;
  private closed = false;
  private closing: Promise<void> | undefined;
  private inFlight = 0;
  private idle: (() => void) | undefined;
  /** Grain ranges locked, or waiting for their lock, in the order they asked (`lock`). */
  private readonly locks: { first: number; end: number; released: Promise<void> }[] = [];
  private readonly capacityListeners = new Set<(blocks: number) => void>();

  constructor(
    /** @internal */ readonly ctx: PoolContext,
    private readonly rec: VolumeRecord,
    /**
     * A snapshot view: the MetaStore snapshot number this object reads (read-only). `rec` is
     * then the view's own record: name `volume@snapshot`, the snapshot's id and size.
     */
    readonly snapshot?: number,
  ) {
    this.atomicWriteMaxBlocks = ATOMIC_WRITE_MAX_BYTES / rec.blockSize;
    this.readOptions = snapshot === undefined ? {} : { snapshot };
  }

  private readonly readOptions: { readonly snapshot?: number };

  get id(): string {
    return this.rec.id;
  }
  get name(): string {
    return this.rec.name;
  }
  get blockSize(): number {
    return this.rec.blockSize;
  }
  /** The metadata store's volume number. */
  get number(): number {
    return this.rec.number;
  }
  /** The domain number. */
  get domain(): number {
    return this.rec.domain;
  }
  get sizeBytes(): number {
    return this.rec.size;
  }
  get writeCache(): boolean {
    return this.rec.writeCache;
  }

  blockCount(): number {
    return Math.floor(this.rec.size / this.rec.blockSize);
  }

  /**
   * Call `listener(blockCount)` whenever the capacity changes (grow), so that the SCSI layer can
   * raise CAPACITY DATA HAS CHANGED. Returns the unsubscribe function.
   */
  onCapacityChange(listener: (blocks: number) => void): () => void {
    this.capacityListeners.add(listener);
    return () => this.capacityListeners.delete(listener);
  }

  /** Grow to `sizeBytes` (durable in the registry when this resolves). Shrinking is refused. */
  async grow(sizeBytes: number): Promise<void> {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes % this.blockSize !== 0) {
      throw new Error(
        `volume "${this.name}": size ${sizeBytes} is not a multiple of the block size ${this.blockSize}`,
      );
    }
    if (sizeBytes < this.rec.size) {
      throw new Error(
        `volume "${this.name}" holds ${this.rec.size} bytes; shrinking it to ${sizeBytes} would ` +
          "destroy data (sanmux never shrinks a volume)",
      );
    }
    if (sizeBytes === this.rec.size) return;
    if (this.snapshot !== undefined) throw this.writeProtected();
    const before = this.rec.size;
    this.rec.size = sizeBytes;
    try {
      await this.ctx.registry.save();
    } catch (error) {
      this.rec.size = before;
      throw error;
    }
    for (const l of this.capacityListeners) l(this.blockCount());
  }

  // -------------------------------------------------------------------------------------------
  // Reads

  async read(lba: number, blocks: number): Promise<Buffer> {
    this.check(lba, blocks);
    if (blocks === 0) return Buffer.alloc(0);
    this.enter();
    try {
      const start = lba * this.blockSize;
      const end = start + blocks * this.blockSize;
      const first = Math.floor(start / GRAIN);
      const count = Math.ceil(end / GRAIN) - first;
      const buf = await this.readGrains(first, count, lba);
      const skip = start - first * GRAIN;
      return skip === 0 && buf.length === end - start
        ? buf
        : buf.subarray(skip, skip + end - start);
    } finally {
      this.leave();
    }
  }

  /** `count` grains from `first`, holes as zeros (volume-read.ts). */
  private readGrains(first: number, count: number, fromLba = 0): Promise<Buffer> {
    return readGrains(this, first, count, fromLba);
  }
  /**
   * Grains `first .. first+count` of the head changed, or failed to: the read cache drops them
   * (volume-read.ts "Read cache"). Called once the change is visible to reads (staged, or in
   * the map) and before the operation completes.
   */
  private uncache(first: number, count: number): void {
    if (this.snapshot === undefined) {
      this.ctx.chunks.reads.volumeCache.invalidate(this.number, first, count);
      this.ctx.chunks.reads.locations.invalidate(this.number, first, count);
    }
  }

  /** @internal The map as this object sees it (the head, or its snapshot); volume-read.ts. */
  resolve(first: number, count: number): ReturnType<MetaStore["resolveGrains"]> {
    try {
      return this.ctx.store.resolveGrains(this.number, first, count, this.readOptions);
    } catch (error) {
      throw metaFailure(error, this.name);
    }
  }

  /** @internal MediumError for `grain`, logged (volume-read.ts too). */
  mediumError(grain: number, why: string, fromLba = 0, cause?: unknown): StorageError {
    const lba = Math.max(fromLba, Math.floor((grain * GRAIN) / this.blockSize));
    this.ctx.logger?.error(
      { volume: this.name, lba, grain, err: cause },
      `unreadable grain: ${why}`,
    );
    return new StorageError(
      StorageErrorCode.MediumError,
      `volume "${this.name}" block ${lba}: ${why}`,
      lba,
      cause === undefined ? undefined : { cause },
    );
  }

  // -------------------------------------------------------------------------------------------
  // Writes

  async write(lba: number, data: Buffer, options?: WriteOptions): Promise<void> {
    if (this.snapshot !== undefined) throw this.writeProtected();
    this.checkData(lba, data);
    if (data.length === 0) return;
    this.enter();
    try {
      const durableNow = options?.fua === true || !this.rec.writeCache;
      // A write that must be durable when it resolves takes the direct path: its own failure
      // (PoolFull, MediumError) is then reported as such, not as a later write fault.
      await this.writeBytes(lba * this.blockSize, data, !durableNow);
      if (durableNow) await this.commitStaged(true);
    } finally {
      this.leave();
    }
  }

  /** All or nothing: every grain goes to the map in one transaction (module comment). */
  async writeAtomic(lba: number, data: Buffer, options?: WriteOptions): Promise<void> {
    if (data.length % this.blockSize !== 0 || data.length > ATOMIC_WRITE_MAX_BYTES) {
      throw new StorageError(
        StorageErrorCode.Internal,
        `atomic write of ${data.length} bytes is not a whole number of ${this.blockSize}-byte ` +
          `blocks, or longer than ${this.atomicWriteMaxBlocks} blocks`,
        lba,
      );
    }
    return this.write(lba, data, options);
  }

  private checkData(lba: number, data: Buffer): void {
    if (data.length % this.blockSize !== 0) {
      throw new StorageError(
        StorageErrorCode.Internal,
        `write of ${data.length} bytes is not a whole number of ${this.blockSize}-byte blocks`,
        lba,
      );
    }
    this.check(lba, data.length / this.blockSize);
  }

  /** Write `data` at byte `start` (a multiple of the block size). */
  private async writeBytes(start: number, data: Buffer, mayDefer = false): Promise<void> {
    const end = start + data.length;
    const first = Math.floor(start / GRAIN);
    const last = Math.ceil(end / GRAIN);
    const unlock = this.blockSize < GRAIN ? await this.lock(first, last) : undefined;
    try {
      const grains: Buffer[] = [];
      for (let g = first; g < last; g++) {
        const gs = g * GRAIN;
        if (gs >= start && gs + GRAIN <= end) {
          grains.push(data.subarray(gs - start, gs - start + GRAIN));
          continue;
        }
        // Read-modify-write of a partial grain (512-byte blocks), under the grain lock.
        const old = await this.readGrains(g, 1, start / this.blockSize);
        const from = Math.max(start, gs);
        const to = Math.min(end, gs + GRAIN);
        data.copy(old, from - gs, from - start, to - start);
        grains.push(old);
      }
      const deferred = mayDefer && this.ctx.writeBack.deferredSeal;
      await this.storeGrains(first, grains, start / this.blockSize, false, deferred);
    } finally {
      this.uncache(first, last - first); // staged now (or failed): volume-read.ts "Read cache"
      unlock?.();
    }
  }

  /**
   * The write protocol for whole grains `first ..` (module comment). `deferred` (a WCE=1 write
   * without FUA, when the stage defers sealing): stage the plaintext and leave the rest to the
   * commit pipeline (`stageDeferred`).
   */
  private async storeGrains(
    first: number,
    grains: readonly Buffer[],
    lbaFrom = 0,
    admitted = false,
    deferred = false,
  ): Promise<void> {
    // Near the devices' reserve (room for less than what is staged and this write, as new
    // chunks) a write takes the direct path: a PoolFull is then refused before it is
    // acknowledged, not found by the pipeline afterwards (README "Write-back", PoolFull).
    if (
      deferred &&
      this.ctx.chunks.hasRoomFor(this.ctx.writeBack.bytesStaged / GRAIN + grains.length)
    ) {
      return this.stageGrains(first, grains, lbaFrom);
    }
    const { chunks, store } = this.ctx;
    // Taken before the job: the worker thread looks the fingerprints up after this (`found`).
    const token = store.indexToken();
    const { fps, zero, found } = await chunks.jobs.fingerprint(
      chunks.domainId(this.domain),
      grains,
      this.indexLookup(),
    );
    const freshBytes = admitted ? 0 : this.admit(first, zero);
    const looked = found === undefined ? undefined : { found, token };
    const { updates, batch } = await this.prepareGrains(
      first,
      grains,
      zero,
      fps,
      lbaFrom,
      undefined,
      looked,
    );
    let staged = false;
    try {
      const plaintext = copyPlaintext(grains, zero);
      const stage = this.ctx.writeBack.stage({
        volume: this.number,
        domain: this.domain,
        updates,
        plaintext,
        batch,
        freshBytes,
      });
      staged = true; // the stage owns the batch now (released by the commit that lands it)
      await stage;
    } catch (error) {
      throw metaFailure(error, this.name);
    } finally {
      if (!staged) batch.release();
    }
  }

  /**
   * Deferred write (write-back.ts "Commit pipeline"): find the zero grains here (a compare, no
   * fingerprint), admit, and stage a copy of the plaintext; what `prepareGrains` does runs in
   * the background and a failure there surfaces at the next flush.
   */
  private async stageGrains(first: number, grains: readonly Buffer[], lbaFrom: number) {
    const zero = new Uint8Array(grains.length);
    for (let i = 0; i < grains.length; i++) if (grains[i]!.equals(ZERO_GRAIN)) zero[i] = 1;
    const freshBytes = this.admit(first, zero);
    const plaintext = copyPlaintext(grains, zero);
    const copies = plaintext.map((text) => text ?? ZERO_GRAIN);
    try {
      await this.ctx.writeBack.stageDeferred({
        volume: this.number,
        domain: this.domain,
        first,
        plaintext,
        freshBytes,
        prepare: async (inOrder) => {
          const { chunks, store } = this.ctx;
          const nonZero = copies.filter((_, i) => zero[i] !== 1);
          // Taken before the job: the worker thread looks the fingerprints up after this.
          const token = store.indexToken();
          const result =
            nonZero.length === 0
              ? { fps: new Uint8Array(0), found: undefined }
              : await chunks.jobs.fingerprint(
                  chunks.domainId(this.domain),
                  nonZero,
                  this.indexLookup(),
                );
          // Back to one slot per grain of the write (zero grains: no fingerprint, not found),
          // by runs of non-zero grains (not a subarray per grain).
          let fps = result.fps;
          let found = result.found;
          if (nonZero.length !== copies.length) {
            fps = new Uint8Array(copies.length * 32);
            const spread =
              found === undefined ? undefined : new Float64Array(copies.length * FOUND_FIELDS);
            spread?.fill(-1);
            for (let i = 0, k = 0; i < copies.length; ) {
              if (zero[i] === 1) {
                i++;
                continue;
              }
              let j = i;
              while (j < copies.length && zero[j] !== 1) j++;
              fps.set(result.fps.subarray(k * 32, (k + j - i) * 32), i * 32);
              spread?.set(
                found!.subarray(k * FOUND_FIELDS, (k + j - i) * FOUND_FIELDS),
                i * FOUND_FIELDS,
              );
              k += j - i;
              i = j;
            }
            found = spread;
          }
          const looked = found === undefined ? undefined : { found, token };
          return inOrder((turnOver) =>
            this.prepareGrains(first, copies, zero, fps, lbaFrom, turnOver, looked),
          );
        },
      });
    } catch (error) {
      throw metaFailure(error, this.name);
    }
  }

  /**
   * Capacity admission (module comment): asks the allocation guard about the grains that are
   * holes now and will hold data (zero grains stay holes; overwrites of mapped grains allocate
   * nothing logical). Returns those bytes.
   */
  private admit(first: number, zero: Uint8Array): number {
    if (this.ctx.allocationGuard === undefined) return 0;
    const mapped = this.mappedMask(this.number, first, zero.length, {});
    let fresh = 0;
    for (let i = 0; i < zero.length; i++) if (zero[i] !== 1 && mapped[i] === 0) fresh++;
    if (fresh > 0) this.ctx.allocationGuard(this.name, fresh * GRAIN);
    return fresh * GRAIN;
  }

  /**
   * Dedup lookups, healing of damaged chunks this write brings again, and the append of the
   * grains the index lacks (not synced): the write's map updates and its batch (released by the
   * commit that lands it; here on failure).
   */
  private async prepareGrains(
    first: number,
    grains: readonly Buffer[],
    zero: Uint8Array,
    fps: Uint8Array,
    lbaFrom: number,
    placed?: () => void,
    /**
     * The index entries a worker thread found for the fingerprints (chunk-worker.ts `found`,
     * FOUND_FIELDS numbers a grain) and the index token taken before its job; absent: read the
     * index here.
     */
    looked?: { found: Float64Array; token: number | undefined },
  ): Promise<PreparedWrite> {
    const { store, chunks } = this.ctx;
    const updates: GrainUpdate[] = new Array(grains.length);
    const misses: { index: number; fingerprint: Buffer; grain: Buffer }[] = [];
    const heals: Heal[] = [];
    try {
      // Taken before the lookups (here, or before the worker's job that made them): the map
      // transaction uses the entries found instead of reading the index again while no GC
      // claim or relocation ran in between.
      const indexToken = looked === undefined ? store.indexToken() : looked.token;
      for (let i = 0; i < grains.length; i++) {
        if (zero[i] === 1) {
          updates[i] = grainUpdate(first + i, null, undefined, undefined, undefined);
          continue;
        }
        const fingerprint = Buffer.from(fps.buffer, fps.byteOffset + i * 32, 32);
        const hit =
          looked === undefined
            ? store.lookupChunk(this.domain, fingerprint)
            : foundEntry(looked.found, i);
        if (hit !== undefined && chunks.reads.isDamaged(hit.containerId, hit.offset)) {
          // The write brings the content of a chunk scrub found damaged: store it afresh and
          // move the index to the new copy (heal) before anything maps to it.
          const from = { containerId: hit.containerId, offset: hit.offset };
          heals.push({ index: i, fingerprint, from });
        }
        if (hit === undefined) {
          // Its update is made once its chunk has a place (below).
          misses.push({ index: i, fingerprint, grain: grains[i]! });
          continue;
        }
        // `indexed`: for writeGrains (with the token) and for the location hints once it lands.
        updates[i] = grainUpdate(first + i, fingerprint, undefined, hit, indexToken);
      }
    } catch (error) {
      throw metaFailure(error, this.name);
    }
    if (heals.length > 0) await this.heal(heals, grains, first, lbaFrom);
    const batch = chunks.batch(this.domain);
    try {
      if (misses.length > 0) {
        const locations = await batch.appendAll(misses, placed);
        for (let k = 0; k < misses.length; k++) {
          const m = misses[k]!;
          updates[m.index] = grainUpdate(
            first + m.index,
            m.fingerprint,
            locations[k]!,
            undefined,
            undefined,
          );
        }
      }
    } catch (error) {
      batch.release();
      throw metaFailure(error, this.name);
    }
    return { updates, batch };
  }

  /**
   * Heal chunks scrub found damaged with the content this write brings (its fingerprint proves
   * it is the same content): seal a fresh copy, make it durable, then move the index entry from
   * the damaged copy to it in one transaction (MetaStore.relocateChunks, as GC compaction does);
   * every grain mapping that chunk reads the good copy from then on, and the damaged record is
   * dead (GC removes it with its container). A copy that could not replace it (its stored length
   * differs, so the accounting could not follow) leaves the write refused, as before healing.
   */
  private async heal(
    heals: readonly Heal[],
    grains: readonly Buffer[],
    first: number,
    lbaFrom: number,
  ): Promise<void> {
    const { store, chunks } = this.ctx;
    const fingerprints = heals.map((h) => h.fingerprint);
    const contents = heals.map((h) => grains[h.index]!);
    const batch = chunks.batch(this.domain);
    let moved: readonly boolean[];
    try {
      const copies = await batch.appendSealed(
        fingerprints,
        contents.map((g) => g.length),
        (container, base) =>
          chunks.jobs.seal(chunks.domainId(this.domain), container, base, fingerprints, contents),
      );
      await batch.sync(); // durable before the index names it (write protocol)
      const result = await store.relocateChunks(
        this.domain,
        heals.map((h, k) => ({ fingerprint: h.fingerprint, from: h.from, to: copies[k]! })),
      );
      moved = result.movedItems;
    } catch (error) {
      throw metaFailure(error, this.name);
    } finally {
      batch.release();
    }
    heals.forEach((h, k) => {
      if (moved[k] === true) {
        const where = { container: h.from.containerId, offset: h.from.offset };
        this.ctx.logger?.warn(
          { volume: this.name, grain: first + h.index, ...where },
          "healed a damaged chunk: the same content was written again",
        );
        return;
      }
      const now = store.lookupChunk(this.domain, h.fingerprint);
      if (now !== undefined && chunks.reads.isDamaged(now.containerId, now.offset)) {
        const why = "the stored copy of this content is damaged";
        throw this.mediumError(first + h.index, why, lbaFrom);
      }
    });
  }

  async flush(): Promise<void> {
    if (this.closed) throw this.notReady();
    await this.commitStaged(true);
  }

  /**
   * Commit what is staged (write-back.ts; the pool's whole stage: one group commit); `durable`
   * also flushes the metadata store (container bytes are durable before any map update names
   * them, so that is all). Rejects with WriteFault when that could not be done.
   */
  private async commitStaged(durable = false): Promise<void> {
    try {
      await this.ctx.writeBack.commit({ durable });
    } catch (error) {
      throw metaFailure(error, this.name);
    }
  }

  /** Commit first when grains of [first, first + count) of this volume are staged. */
  private async commitIfStaged(first: number, count: number): Promise<void> {
    if (this.ctx.writeBack.stagedIn(this.number, first, count)) await this.commitStaged();
  }

  async unmap(lba: number, blocks: number): Promise<void> {
    if (this.snapshot !== undefined) throw this.writeProtected();
    this.check(lba, blocks);
    if (blocks === 0) return;
    this.enter();
    try {
      const start = lba * this.blockSize;
      const end = start + blocks * this.blockSize;
      const a = Math.ceil(start / GRAIN);
      const b = Math.floor(end / GRAIN);
      // Partial grains at the edges (512-byte blocks) get zeros written into them; a grain that
      // ends up all zeros becomes a hole.
      if (a > b) {
        await this.writeBytes(start, Buffer.alloc(end - start)); // inside one grain
        return;
      }
      if (start < a * GRAIN) await this.writeBytes(start, Buffer.alloc(a * GRAIN - start));
      if (b * GRAIN < end) await this.writeBytes(b * GRAIN, Buffer.alloc(end - b * GRAIN));
      if (b > a) {
        const unlock = this.blockSize < GRAIN ? await this.lock(a, b) : undefined;
        try {
          // Ordered after the staged writes to these grains (and the edges written above).
          await this.commitIfStaged(a, b - a);
          await this.ctx.store.unmapGrains(this.number, a, b - a);
        } catch (error) {
          throw metaFailure(error, this.name);
        } finally {
          this.uncache(a, b - a);
          unlock?.();
        }
      }
    } finally {
      this.leave();
    }
  }

  async blockStatus(lba: number): Promise<BlockStatus> {
    this.check(lba, 1);
    const grain = Math.floor((lba * this.blockSize) / GRAIN);
    const lastGrain = Math.ceil(this.rec.size / GRAIN);
    if (this.snapshot === undefined) await this.commitIfStaged(grain, lastGrain - grain);
    let s: ReturnType<MetaStore["extentStatus"]>;
    try {
      s = this.ctx.store.extentStatus(
        this.number,
        grain,
        Math.max(1, lastGrain - grain),
        this.readOptions,
      );
    } catch (error) {
      throw metaFailure(error, this.name);
    }
    const endLba = Math.floor(((grain + s.grains) * GRAIN) / this.blockSize);
    return { mapped: s.mapped, blocks: Math.max(1, Math.min(endLba, this.blockCount()) - lba) };
  }

  // -------------------------------------------------------------------------------------------
  // Copy by reference (EXTENDED COPY, clones)

  /**
   * Map this volume's grains to the source's chunks (MetaStore.copyGrains): no data is read or
   * written. Only between volumes of one pool and one domain, for grain-aligned ranges; otherwise
   * resolves false having changed nothing. copyGrains reads each source window inside the
   * transaction that writes it, in memmove order for an overlapping copy within one volume, so
   * the result is as if the source range were read whole first. A source entry whose chunk the
   * index lacks (damage) fails the copy (ChunkMissing): the copy then falls back to reading the
   * source, which reports the damaged block as MediumError.
   */
  async copyFrom(
    source: Volume,
    sourceLba: number,
    lba: number,
    blocks: number,
    options?: WriteOptions,
  ): Promise<boolean> {
    if (this.snapshot !== undefined) throw this.writeProtected();
    // The source arrives wrapped in its channel's filters: look through them (Volume.unwrap).
    let base = source;
    for (let depth = 0; !(base instanceof PoolVolume) && base.unwrap && depth < 16; depth++) {
      base = base.unwrap();
    }
    source = base;
    if (!(source instanceof PoolVolume) || source.ctx !== this.ctx) return false;
    if (source.domain !== this.domain || source.blockSize !== this.blockSize) return false;
    const perGrain = GRAIN / this.blockSize;
    if (sourceLba % perGrain !== 0 || lba % perGrain !== 0 || blocks % perGrain !== 0) {
      return false;
    }
    source.check(sourceLba, blocks);
    this.check(lba, blocks);
    if (blocks === 0) return true;
    const count = blocks / perGrain;
    const dst = lba / perGrain;
    this.enter();
    source.enter();
    try {
      const unlock = this.blockSize < GRAIN ? await this.lock(dst, dst + count) : undefined;
      try {
        // The copy reads and writes the map: it sees, and comes after, every staged write.
        if (this.ctx.writeBack.busy) await this.commitStaged();
        const guard = this.ctx.allocationGuard;
        if (guard !== undefined) {
          // Grains mapped in the source whose destination is a hole now (module comment).
          const from = this.mappedMask(
            source.number,
            sourceLba / perGrain,
            count,
            source.readOptions,
          );
          const to = this.mappedMask(this.number, dst, count, {});
          let fresh = 0;
          for (let i = 0; i < count; i++) if (from[i] === 1 && to[i] === 0) fresh++;
          if (fresh > 0) guard(this.name, fresh * GRAIN);
        }
        await this.ctx.store.copyGrains(
          source.snapshot === undefined
            ? { volume: source.number }
            : { volume: source.number, snapshot: source.snapshot },
          sourceLba / perGrain,
          this.number,
          dst,
          count,
        );
      } catch (error) {
        if (!(error instanceof MetaError) || error.code !== MetaErrorCode.ChunkMissing) {
          throw metaFailure(error, this.name);
        }
        const data = await source.readGrains(sourceLba / perGrain, count);
        await this.storeGrains(dst, splitGrains(data), 0, true);
      } finally {
        this.uncache(dst, count);
        unlock?.();
      }
      if (options?.fua === true || !this.rec.writeCache) await this.commitStaged(true);
    } finally {
      source.leave();
      this.leave();
    }
    return true;
  }

  // -------------------------------------------------------------------------------------------
  // Lifecycle

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      if (this.inFlight > 0) await new Promise<void>((r) => (this.idle = r));
      try {
        await this.ctx.writeBack.commit({ durable: true });
      } finally {
        this.ctx.forget(this);
      }
    })();
    return this.closing;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Take the grain locks of [first, end) in call order: wait for every range asked for earlier
   * that overlaps it. A caller registers its range synchronously, so two callers can never wait
   * for each other in a cycle. One entry per caller, not per grain: the list is as long as the
   * writes in flight (a Map entry set and deleted per grain was a sixth of a 512-byte volume's
   * write path garbage).
   */
  private async lock(first: number, end: number): Promise<() => void> {
    let release!: () => void;
    const mine = { first, end, released: new Promise<void>((r) => (release = r)) };
    const waits: Promise<void>[] = [];
    for (const l of this.locks) if (l.first < end && first < l.end) waits.push(l.released);
    this.locks.push(mine);
    if (waits.length > 0) await Promise.all(waits);
    return () => {
      release();
      const i = this.locks.indexOf(mine);
      if (i >= 0) this.locks.splice(i, 1);
    };
  }

  /** Range check; also refuses any operation on a closed volume. */
  private check(lba: number, blocks: number): void {
    if (this.closed) throw this.notReady();
    const count = this.blockCount();
    if (
      !Number.isSafeInteger(lba) ||
      !Number.isSafeInteger(blocks) ||
      lba < 0 ||
      blocks < 0 ||
      lba + blocks > count
    ) {
      throw new StorageError(
        StorageErrorCode.OutOfRange,
        `blocks ${lba}..${lba + blocks - 1} are outside volume "${this.name}" (${count} blocks)`,
        Number.isSafeInteger(lba) && lba >= 0 && lba < count ? count : lba,
      );
    }
  }

  /**
   * 1 for each of `count` grains from `first` of `volume` that is mapped (as of
   * `options.snapshot`), else 0: one extentStatus call per run of equal status.
   */
  private mappedMask(
    volume: number,
    first: number,
    count: number,
    options: { readonly snapshot?: number },
  ): Uint8Array {
    const mask = new Uint8Array(count);
    try {
      for (let at = 0; at < count; ) {
        const s = this.ctx.store.extentStatus(volume, first + at, count - at, options);
        if (s.mapped) mask.fill(1, at, at + s.grains);
        at += s.grains;
      }
    } catch (error) {
      throw metaFailure(error, this.name);
    }
    if (options.snapshot === undefined) {
      // Staged grains as the next commit will leave them: data mapped, zeros and unmaps holes.
      const staged = this.ctx.writeBack.overlay(volume, first, count);
      staged?.forEach((s, i) => {
        if (s !== undefined) mask[i] = s.plaintext === undefined ? 0 : 1;
      });
    }
    return mask;
  }

  /** Where fingerprint jobs look this volume's fingerprints up (its domain's index). */
  private indexLookup(): IndexLookup {
    return { env: this.ctx.store.envOptions, domainId: this.domain };
  }

  private writeProtected(): StorageError {
    return new StorageError(
      StorageErrorCode.WriteProtected,
      `"${this.name}" is a snapshot: it is read-only (clone it to get a writable volume)`,
    );
  }

  private notReady(): StorageError {
    return new StorageError(StorageErrorCode.NotReady, `volume "${this.name}" is closed`);
  }

  private enter(): void {
    this.inFlight++;
  }

  private leave(): void {
    if (--this.inFlight === 0 && this.idle !== undefined) {
      const idle = this.idle;
      this.idle = undefined;
      idle();
    }
  }
}

const ZERO_GRAIN = Buffer.alloc(GRAIN);

/**
 * A map update with every property present (undefined when absent): the write path's updates
 * then share one object shape, and the property reads along the path (staging, the map
 * transaction, the location hints) stay monomorphic. Mixed shapes (a hole, a miss, a hit with
 * and without token, a miss with its chunk) made them megamorphic.
 */
function grainUpdate(
  grain: number,
  fingerprint: Buffer | null,
  chunk: ChunkLocation | undefined,
  indexed: ChunkEntry | undefined,
  indexToken: number | undefined,
): GrainUpdate {
  return { grain, fingerprint, chunk, indexed, indexToken };
}

/**
 * The stage keeps the plaintext (reads of staged grains, preparation, ChunkMissing at commit):
 * its own copy, one allocation, since the caller may reuse `grains` once the write resolved
 * (Volume contract). Zero grains are holes: undefined.
 */
function copyPlaintext(grains: readonly Buffer[], zero: Uint8Array): (Buffer | undefined)[] {
  let nonZero = 0;
  for (let i = 0; i < grains.length; i++) if (zero[i] !== 1) nonZero++;
  const text = Buffer.allocUnsafe(nonZero * GRAIN);
  const plaintext = new Array<Buffer | undefined>(grains.length);
  for (let i = 0, at = 0; i < grains.length; ) {
    if (zero[i] === 1) {
      i++;
      continue;
    }
    // A run of whole grains back to back in the caller's buffer (the usual case): one copy.
    const g = grains[i]!;
    let j = i + 1;
    if (g.length === GRAIN) {
      while (j < grains.length && zero[j] !== 1) {
        const h = grains[j]!;
        if (h.buffer !== g.buffer || h.byteOffset !== g.byteOffset + (j - i) * GRAIN) break;
        if (h.length !== GRAIN) break;
        j++;
      }
    }
    if (j - i === 1) g.copy(text, at);
    else text.set(new Uint8Array(g.buffer, g.byteOffset, (j - i) * GRAIN), at);
    for (; i < j; i++, at += GRAIN) plaintext[i] = text.subarray(at, at + GRAIN);
  }
  return plaintext;
}

function splitGrains(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < data.length; at += GRAIN) out.push(data.subarray(at, at + GRAIN));
  return out;
}

/** A metadata failure seen by a volume operation, as a StorageError. */
function metaFailure(error: unknown, volume: string): StorageError {
  if (error instanceof StorageError) return error;
  if (error instanceof MetaError) {
    const code =
      error.code === MetaErrorCode.Closed ||
      error.code === MetaErrorCode.UnknownVolume ||
      error.code === MetaErrorCode.UnknownSnapshot
        ? StorageErrorCode.NotReady
        : StorageErrorCode.WriteFault;
    return new StorageError(code, `volume "${volume}": ${error.message}`, undefined, {
      cause: error,
    });
  }
  return asStorageError(error, `volume "${volume}": metadata update`);
}
