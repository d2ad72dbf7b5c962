/**
 * The read side of the chunk store: records that lie back to back in one container are read with
 * one pread (sequential writes put a write's grains back to back, chunk-store.ts), then opened —
 * FORMAT.md §3: header, the fingerprint asked for, GCM tag, codec; the CRC32C only to name damage
 * — on a worker thread when there is one, which does the pread itself from the descriptor
 * (chunk-worker.ts; README "Read path"). A record that fails any check is a
 * ContainerIntegrityError (a StorageError with code MediumError): no byte of it is returned.
 *
 * Open file handles are kept in an LRU cache (64 by default). A handle evicted while a read uses
 * it (the caller's pread, or a worker's) is closed when that read is done. Grains read again soon
 * are served from `grainCache` (grain-cache.ts, by chunk). The read cache by volume address
 * (`volumeCache`, volume-cache.ts) and the location hints (`locations`, location-hints.ts) live
 * here too, beside it, and are used by pool-volume.ts: the three share `pool.cache_size`
 * (`readCacheSplit`).
 *
 * `damaged` holds what scrub found (scrub.ts): reads of those records fail at once, and writes do
 * not deduplicate against them (pool-volume.ts).
 */
import { read } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { totalmem } from "node:os";
import { StorageError, StorageErrorCode } from "../volume/errors.js";
import { GRAIN_BYTES, type JobRunner, type OpenResult, packRecords } from "./chunk-worker.js";
import {
  ContainerIntegrityError,
  type DamageReason,
  RECORD_HEADER_BYTES,
} from "./container/index.js";
import { GrainCache } from "./grain-cache.js";
import { LocationHints } from "./location-hints.js";
import type { ContainerRecord, Registry } from "./registry.js";
import { VolumeCache } from "./volume-cache.js";

/** One record of a run to read (the index's ChunkEntry fields, plus the fingerprint). */
export interface RunRecord {
  readonly offset: number;
  readonly storedLength: number;
  readonly fingerprint: Uint8Array;
}

export interface RunResult {
  /** 4096 bytes per record, in order. */
  readonly grains: Buffer;
  /** Records that failed a check, by index: their bytes in `grains` must not be used. */
  readonly failures: Map<number, StorageError>;
}

export interface ChunkReaderOptions {
  /** Container files kept open. Default 64. */
  readonly cacheSize?: number | undefined;
  /** Recompute HMAC(plaintext) = fingerprint on every read (see ChunkStoreOptions). */
  readonly verify?: boolean | undefined;
  /**
   * Bytes of decrypted grains kept in memory, both caches together (`readCacheSplit`): the
   * config's `pool.cache_size`. Default `defaultReadCacheBytes()`; 0 turns both off.
   */
  readonly grainCacheBytes?: number | undefined;
}

const MiB = 1024 * 1024;

/**
 * The default of `pool.cache_size`: `SANMUX_GRAIN_CACHE_MIB` MiB from the environment, else an
 * eighth of the machine's memory, at least 64 MiB and at most 8 GiB (docs/config.md).
 */
export function defaultReadCacheBytes(): number {
  const env = Number(process.env.SANMUX_GRAIN_CACHE_MIB);
  if (Number.isFinite(env) && env >= 0) return env * MiB;
  return Math.min(8192 * MiB, Math.max(64 * MiB, Math.floor(totalmem() / 8)));
}

/**
 * How `pool.cache_size` divides: an eighth caches by chunk, from a grain's second read
 * (grain-cache.ts: what many volumes share, e.g. a golden image whose clones each read it), a
 * thirty-second holds the locations of recently written grains (location-hints.ts: 32 bytes a
 * grain, so a cache of 3 GiB hints 12 GiB of writes), the rest caches by volume address
 * (volume-cache.ts: what a host reads again).
 */
export function readCacheSplit(bytes: number): {
  byChunk: number;
  hints: number;
  byVolume: number;
} {
  const byChunk = Math.floor(bytes / 8);
  const hints = Math.floor(bytes / 32);
  return { byChunk, hints, byVolume: bytes - byChunk - hints };
}

/** Slots of a cache by grain (GrainCache, VolumeCache) of `bytes`. */
function grainSlots(bytes: number): number {
  return Math.max(0, Math.floor(bytes / GRAIN_BYTES));
}

/** Damaged record ranges of one container (scrub.ts). */
export interface DamagedRange {
  readonly offset: number;
  readonly length: number;
  readonly reason: string;
}

interface ReaderEntry {
  readonly handle: FileHandle;
  readonly path: string;
  users: number;
  evicted: boolean;
}

export class ChunkReader {
  private readonly readers = new Map<number, Promise<ReaderEntry>>();
  private readonly cacheSize: number;
  private readonly verify: boolean;
  /** readRun calls under way, per container (`idle`). */
  private readonly running = new Map<number, number>();
  /** Damaged record ranges found by scrub, per container. */
  readonly damaged = new Map<number, DamagedRange[]>();
  /** Plaintext of hot grains by location (grain-cache.ts); replaced by `resizeGrainCache`. */
  grainCache: GrainCache;
  /** Plaintext of grains read, by volume address (volume-cache.ts); see `resizeGrainCache`. */
  volumeCache: VolumeCache;
  /** Where recently written grains' chunks are (location-hints.ts); see `resizeGrainCache`. */
  locations: LocationHints;

  constructor(
    private readonly registry: Registry,
    private readonly containerPath: (rec: ContainerRecord) => string,
    private readonly jobs: JobRunner,
    options: ChunkReaderOptions = {},
  ) {
    this.cacheSize = Math.max(1, options.cacheSize ?? 64);
    this.verify = options.verify ?? false;
    const split = readCacheSplit(options.grainCacheBytes ?? defaultReadCacheBytes());
    this.grainCache = new GrainCache(split.byChunk);
    this.volumeCache = new VolumeCache(split.byVolume);
    this.locations = new LocationHints(split.hints);
  }

  /**
   * Caches of `bytes` together (config `pool.cache_size`, live on reload) instead of the present
   * ones, which are dropped with what they held when their size changes; undefined: the default
   * (see ChunkReaderOptions).
   */
  resizeGrainCache(bytes: number | undefined): void {
    const split = readCacheSplit(bytes ?? defaultReadCacheBytes());
    // Made only when the size changes: each allocates its bookkeeping arrays up front (tens of MB
    // for a cache of a few GiB), which a reload that keeps the size must not pay.
    if (grainSlots(split.byChunk) !== this.grainCache.slots) {
      this.grainCache = new GrainCache(split.byChunk);
    }
    if (grainSlots(split.byVolume) !== this.volumeCache.slots) {
      this.volumeCache = new VolumeCache(split.byVolume);
    }
    if (LocationHints.blocksFor(split.hints) !== this.locations.maxBlocks) {
      this.locations = new LocationHints(split.hints);
    }
  }

  /**
   * What scrub found in container `number` (none: forget what it found before). Damage empties
   * the volume cache: a read of a damaged grain must report it, not serve the copy it holds.
   * The location hints go too: a heal moves the damaged chunk.
   */
  recordDamage(number: number, ranges: DamagedRange[]): void {
    if (ranges.length === 0) {
      this.damaged.delete(number);
      return;
    }
    this.damaged.set(number, ranges);
    this.volumeCache.clear();
    this.locations.clear();
  }

  /** Whether scrub found the record at `offset` of container `number` damaged. */
  isDamaged(number: number, offset: number): boolean {
    const list = this.damaged.get(number);
    return list?.some((k) => offset >= k.offset && offset < k.offset + k.length) ?? false;
  }

  /**
   * Read the records of `records` (back to back, in file order, in container `number`) with one
   * pread and open them. `grains` holds 4096 bytes per record, in order; a record that failed a
   * check has an entry in `failures` (by index) and its 4096 bytes are meaningless.
   * `into` (4096 bytes per record), when given, is where `grains` goes: a worker thread writes
   * there directly when it is shared memory (util/buffer-pool.ts).
   */
  async readRun(
    number: number,
    records: readonly RunRecord[],
    into?: Uint8Array,
  ): Promise<RunResult> {
    this.running.set(number, (this.running.get(number) ?? 0) + 1);
    try {
      return await this.readRecords(number, records, into);
    } finally {
      const n = (this.running.get(number) ?? 1) - 1;
      if (n > 0) this.running.set(number, n);
      else this.running.delete(number);
    }
  }

  /**
   * Resolves true once no readRun of container `number` is under way, false after `timeoutMs`.
   * GC calls it once the index no longer names the container and before deleting its file: reads
   * that resolved their grains before a relocation finish on the old copy (the read path resolves
   * and calls readRun in one turn, so every such read is counted by then).
   */
  async idle(number: number, timeoutMs = 10_000): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    while (this.running.has(number)) {
      if (Date.now() >= until) return false;
      await new Promise((r) => setTimeout(r, 2));
    }
    return true;
  }

  private async readRecords(
    number: number,
    records: readonly RunRecord[],
    into: Uint8Array | undefined,
  ): Promise<RunResult> {
    const first = records[0];
    const last = records[records.length - 1];
    if (first === undefined || last === undefined) {
      return { grains: Buffer.alloc(0), failures: new Map() };
    }
    const rec = this.registry.container(number);
    const domain = rec && this.registry.domain(rec.domain);
    if (rec === undefined || domain === undefined) {
      throw new StorageError(StorageErrorCode.MediumError, `container ${number} is gone`);
    }
    const cache =
      this.grainCache.slots > 0 && !this.damaged.has(number) ? this.grainCache : undefined;
    if (cache?.has(number, first.offset)) {
      const out =
        into === undefined
          ? Buffer.allocUnsafeSlow(records.length * GRAIN_BYTES)
          : Buffer.from(into.buffer, into.byteOffset, records.length * GRAIN_BYTES);
      let i = 0;
      while (i < records.length && cache.get(number, records[i]!.offset, out, i * GRAIN_BYTES)) i++;
      if (i === records.length) return { grains: out, failures: new Map() };
    }
    const entry = await this.reader(number);
    const start = first.offset;
    const end = last.offset + RECORD_HEADER_BYTES + last.storedLength;
    const job = () => ({
      op: "open" as const,
      domain: domain.id,
      container: rec.id,
      base: start,
      ...packRecords(records),
      verify: this.verify,
    });
    let opened: OpenResult;
    entry.users++; // the descriptor stays open until the preads are done
    try {
      if (this.jobs.batches(records.length)) {
        // A 4 KiB random read: batched with the others of this turn, records as they are.
        opened = await this.jobs.openSmall({
          domain: domain.id,
          container: rec.id,
          fd: entry.handle.fd,
          base: start,
          length: end - start,
          verify: this.verify,
          records,
        });
      } else if (this.jobs.offloads(records.length)) {
        // The worker threads pread the run themselves: no buffer crosses threads.
        opened = await this.jobs.open({
          ...job(),
          fd: entry.handle.fd,
          length: end - start,
          out: into,
        });
      } else {
        const buf = Buffer.allocUnsafe(end - start);
        let got = 0;
        while (got < buf.length) {
          const bytesRead = await preadFd(entry.handle.fd, buf, got, start + got);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        opened = await this.jobs.open({ ...job(), buf: buf.subarray(0, got) });
      }
    } finally {
      entry.users--;
      if (entry.evicted && entry.users === 0) void entry.handle.close().catch(() => undefined);
    }
    if (cache !== undefined) {
      const failed = new Set(opened.failures.map((f) => f.index));
      records.forEach((r, i) => {
        if (!failed.has(i)) cache.put(number, r.offset, opened.grains, i * GRAIN_BYTES);
      });
    }
    const failures = new Map<number, StorageError>();
    for (const f of opened.failures) {
      const offset = records[f.index]!.offset;
      failures.set(f.index, new ContainerIntegrityError(entry.path, offset, f.reason, f.message));
    }
    const known = this.damaged.get(number);
    if (known !== undefined) {
      records.forEach((r, i) => {
        const length = RECORD_HEADER_BYTES + r.storedLength;
        const bad = known.find(
          (k) => r.offset < k.offset + k.length && k.offset < r.offset + length,
        );
        if (bad !== undefined) {
          const why = "record found damaged by scrub";
          const reason = bad.reason as DamageReason;
          failures.set(i, new ContainerIntegrityError(entry.path, r.offset, reason, why));
        }
      });
    }
    const grains = Buffer.from(
      opened.grains.buffer,
      opened.grains.byteOffset,
      opened.grains.length,
    );
    return { grains, failures };
  }

  private reader(number: number): Promise<ReaderEntry> {
    let p = this.readers.get(number);
    if (p !== undefined) {
      this.readers.delete(number); // LRU: most recently used last
      this.readers.set(number, p);
      return p;
    }
    p = this.openReader(number);
    this.readers.set(number, p);
    p.catch(() => this.readers.delete(number));
    while (this.readers.size > this.cacheSize) {
      const [oldest, q] = this.readers.entries().next().value as [number, Promise<ReaderEntry>];
      this.readers.delete(oldest);
      void q.then(evict, () => undefined);
    }
    return p;
  }

  private async openReader(number: number): Promise<ReaderEntry> {
    const rec = this.registry.container(number);
    if (rec === undefined || rec.state === "deleting") {
      throw new StorageError(StorageErrorCode.MediumError, `container ${number} does not exist`);
    }
    const path = this.containerPath(rec);
    let handle: FileHandle;
    try {
      handle = await open(path, "r");
    } catch (error) {
      throw new StorageError(
        StorageErrorCode.MediumError,
        `container ${path} cannot be opened: ${(error as Error).message}`,
        undefined,
        { cause: error },
      );
    }
    return { handle, path, users: 0, evicted: false };
  }

  /**
   * Close the cached reader of a container (before deleting its file) and forget its damage and
   * the hints that name it.
   */
  drop(number: number): void {
    this.damaged.delete(number);
    this.grainCache.dropContainer(number);
    this.locations.dropContainer(number);
    const p = this.readers.get(number);
    this.readers.delete(number);
    void p?.then(evict, () => undefined);
  }

  /** Close every cached handle. */
  close(): void {
    this.locations.clear();
    for (const number of [...this.readers.keys()]) this.drop(number);
  }
}

/**
 * pread through the callback API on the handle's descriptor: measured here at 95k reads of 4 KiB
 * per second against 57k for FileHandle.read, whose promise machinery costs the main thread
 * about 10 µs per call. The FileHandle stays open while `users` > 0, so the descriptor is valid.
 */
function preadFd(fd: number, buf: Buffer, at: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    read(fd, buf, at, buf.length - at, position, (error, bytesRead) => {
      if (error) reject(error);
      else resolve(bytesRead);
    });
  });
}

function evict(entry: ReaderEntry): void {
  entry.evicted = true;
  if (entry.users === 0) void entry.handle.close().catch(() => undefined);
}
