/**
 * The chunk store: container files of every domain, for the pool's write and read paths.
 *
 * Write side. One open container per domain takes the appends (FORMAT.md §1: append-only). A
 * write hands all its new grains to `appendAll` in one synchronous loop, so they land adjacent in
 * the container and a later sequential read fetches them with one pread. The write protocol's
 * step 3 (src/pool/meta/README.md, "Write protocol": the container bytes are durable before the
 * map update names them) is the write-back commit's first step for pool writes (write-back.ts:
 * one ContainerWriter.sync per container named), and `ChunkBatch.sync()` for other callers.
 * ContainerWriter.sync shares one fdatasync between all the callers waiting at the moment it
 * starts (group commit). A container that reaches
 * `sealBytes` is retired: no new appends, and it is sealed (FORMAT.md §4, §5) once no write that
 * used it is still between its append and its map update.
 *
 * In-flight dedup: a grain being appended by one write and not yet in the index is found by
 * another write of the same content through `pending`, which then maps the same location instead
 * of storing a second copy (the index's insert-if-absent handles any remaining race).
 *
 * Holds: every write holds the containers it appended to (or whose pending location it uses)
 * until its map update settled — for a write staged by the write-back layer (write-back.ts),
 * until the commit that lands it. GC (gc.ts) deletes only containers that are not open, or open
 * ones it sealed once their holds were released, so a map update can never name a deleted
 * container. A container is in `open` from the moment it enters the registry. The in-flight
 * dedup entries of a batch live as long as its holds: a staged new chunk stays findable until
 * the index has it.
 *
 * Read side: `reads` (chunk-reader.ts).
 */
import type { KeyObject } from "node:crypto";
import { readdir, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { type DomainKeys, domainKeys, newId } from "../crypto/index.js";
import { fsyncDirectory, isErrnoException } from "../util/atomic-file.js";
import { StorageError, StorageErrorCode } from "../volume/errors.js";
import { ChunkReader } from "./chunk-reader.js";
import type { JobRunner } from "./chunk-worker.js";
import {
  CONTAINER_SUFFIX,
  ContainerWriter,
  containerFileName,
  FILE_HEADER_BYTES,
  RECORD_HEADER_BYTES,
} from "./container/index.js";
import type { SealedRecords } from "./container/record.js";
import { containerDir, type Devices } from "./devices.js";
import type { ChunkLocation } from "./meta/index.js";
import type { ContainerRecord, DomainRecord, Registry } from "./registry.js";

export interface ChunkStoreOptions {
  /** Retire (and seal) a container once it holds this many bytes. Default 256 MiB. */
  readonly sealBytes?: number | undefined;
  /** Container files kept open for reading. Default 64. */
  readonly readerCacheSize?: number | undefined;
  /** Bytes of the readers' grain cache (chunk-reader.ts; default there). */
  readonly grainCacheBytes?: number | undefined;
  /**
   * Recompute HMAC(plaintext) = fingerprint on every read (FORMAT.md §3, last check). Default
   * false: the GCM tag already binds plaintext and fingerprint (the AAD holds the fingerprint),
   * so this only catches a writer that sealed a grain under a wrong fingerprint; scrub checks it.
   */
  readonly verifyReads?: boolean | undefined;
}

/** A container that takes appends (or took them, until it is sealed). */
export interface OpenContainer {
  readonly rec: ContainerRecord;
  readonly writer: ContainerWriter;
  /** Writes between their append and the end of their map update. */
  holds: number;
  /** No new appends: sealed (or, when broken, closed) once `holds` is 0. */
  retired: boolean;
  /** A write or fdatasync failed: the writer refuses everything (ContainerWriter contract). */
  broken: boolean;
  /** Resolves once the container is sealed or closed after retirement. */
  done?: Promise<void>;
}

interface DomainState {
  readonly rec: DomainRecord;
  readonly keys: DomainKeys;
  current: OpenContainer | undefined;
  creating: Promise<OpenContainer> | undefined;
  /** Grains being appended, by `pendingKey` of their fingerprint: see "In-flight dedup". */
  readonly pending: Map<number, PendingChunk>;
}

/**
 * A grain being appended (or staged and not yet in the index): where it goes, as entry `index`
 * of the locations of the batch it was appended with (one promise per batch, not per grain).
 */
interface PendingChunk {
  readonly fingerprint: Buffer;
  readonly oc: OpenContainer;
  readonly batch: Promise<readonly ChunkLocation[]>;
  readonly index: number;
}

/**
 * The key of a fingerprint in `pending`: its first 32 bits, a small integer that a Map hashes
 * at once (a latin1 string per grain cost an allocation and a string hash). Every hit is checked
 * against the whole fingerprint; two in-flight fingerprints with the same key only lose
 * in-flight dedup between them (the later one takes the slot), never share a chunk.
 */
function pendingKey(fingerprint: Buffer): number {
  return fingerprint.readInt32LE(0);
}

/** What `recover` did at open, for the log. */
export interface RecoverySummary {
  readonly reopened: number;
  readonly tornTails: number;
  readonly tornBytes: number;
  readonly sealedAtOpen: number;
  readonly deletedLeftovers: number;
  readonly missing: string[];
  readonly damaged: string[];
}

const MiB = 1024 * 1024;
/** Upper bound of one record's size, for free-space checks: header + 4 KiB + tag. */
const RECORD_BOUND = RECORD_HEADER_BYTES + 4096 + 16;
/** Stands for a 4 KiB grain whose record is sealed elsewhere (`appendSealed`). */
const ZERO_GRAIN = Buffer.alloc(4096);

export class ChunkStore {
  readonly sealBytes: number;
  private readonly domains = new Map<number, DomainState>();
  /** Every container with a writer: current, retired but not sealed yet. */
  private readonly open = new Map<number, OpenContainer>();
  /** The read side (chunk-reader.ts). */
  readonly reads: ChunkReader;

  constructor(
    private readonly registry: Registry,
    readonly devices: Devices,
    private readonly master: KeyObject,
    /** Fingerprinting and record opening, on worker threads when there are any. */
    readonly jobs: JobRunner,
    private readonly logger: Logger | undefined,
    options: ChunkStoreOptions = {},
  ) {
    this.sealBytes = options.sealBytes ?? 256 * MiB;
    this.reads = new ChunkReader(registry, (rec) => this.containerPath(rec), jobs, {
      cacheSize: options.readerCacheSize,
      verify: options.verifyReads,
      grainCacheBytes: options.grainCacheBytes,
    });
  }

  private domain(number: number): DomainState {
    let d = this.domains.get(number);
    if (d === undefined) {
      const rec = this.registry.domain(number);
      if (rec === undefined) throw new Error(`domain ${number} is not in the registry`);
      d = {
        rec,
        keys: domainKeys(this.master, rec.id),
        current: undefined,
        creating: undefined,
        pending: new Map(),
      };
      this.domains.set(number, d);
    }
    return d;
  }

  keys(domain: number): DomainKeys {
    return this.domain(domain).keys;
  }

  /** The domain's 128-bit id (UUID text), what jobs derive its keys from. */
  domainId(domain: number): string {
    return this.domain(domain).rec.id;
  }

  /**
   * Bytes the pool's container files hold right now: sealed containers by their recorded size,
   * open ones by their writer's end (appends included as soon as they are made). What
   * `pool.max_size` is compared with: unlike the metadata's physical figures, it does not wait
   * for the refcount journal.
   */
  containerBytes(): number {
    let total = 0;
    for (const rec of this.registry.containers) {
      if (rec.state === "deleting") continue;
      const oc = this.open.get(rec.number);
      total += oc !== undefined ? oc.writer.size : (rec.size ?? 0);
    }
    return total;
  }

  containerPath(rec: ContainerRecord): string {
    const device = this.registry.device(rec.device);
    if (device === undefined) throw new Error(`container ${rec.id}: device ${rec.device} unknown`);
    return join(containerDir(device), containerFileName(rec.id));
  }

  /** The container a domain currently appends to, if any (GC and tests). */
  currentContainer(domain: number): OpenContainer | undefined {
    return this.domains.get(domain)?.current;
  }

  openContainer(number: number): OpenContainer | undefined {
    return this.open.get(number);
  }

  // -------------------------------------------------------------------------------------------
  // Write side

  /**
   * Whether some device has room for `grains` new records beside its reserve (appends would
   * not fail with PoolFull). Deferred writes ask it before they are acknowledged (pool-volume.ts).
   */
  hasRoomFor(grains: number): boolean {
    return this.devices.pick(grains * RECORD_BOUND) !== undefined;
  }

  batch(domain: number): ChunkBatch {
    return new ChunkBatch(this, this.domain(domain));
  }

  /** @internal The writable container of a domain with room for `bytes` (created if needed). */
  async writable(d: DomainState, bytes: number): Promise<OpenContainer> {
    for (;;) {
      const cur = d.current;
      if (cur !== undefined && !cur.retired) {
        if (this.devices.hasRoom(cur.rec.device, bytes)) return cur;
        // Its device is at its reserve: continue on another one, if any has room.
        if (this.devices.pick(bytes) === undefined) throw poolFull();
        this.retire(cur);
      }
      d.creating ??= this.create(d).finally(() => {
        d.creating = undefined;
      });
      const oc = await d.creating;
      if (!oc.retired) return oc;
    }
  }

  private async create(d: DomainState): Promise<OpenContainer> {
    await this.devices.refresh();
    const device = this.devices.pick(4 * MiB);
    if (device === undefined) throw poolFull();
    const id = newId();
    let writer: ContainerWriter;
    try {
      writer = await ContainerWriter.create(containerDir(device), d.keys, { containerId: id });
    } catch (error) {
      throw asStorageError(error, "creating a container");
    }
    // The registry entry is durable before any index entry can name the number (registry.ts).
    // The container counts as open from the moment it is in the registry: GC, which walks the
    // registry, must never take a container being created for an unused one.
    const rec = this.registry.addContainer(id, device.number, d.rec.number);
    const oc: OpenContainer = { rec, writer, holds: 0, retired: false, broken: false };
    this.open.set(rec.number, oc);
    try {
      await this.registry.save();
    } catch (error) {
      this.open.delete(rec.number);
      this.registry.removeContainer(rec.number);
      await writer.close().catch(() => undefined);
      await unlink(writer.path).catch(() => undefined);
      throw asStorageError(error, "recording a new container");
    }
    d.current = oc;
    this.logger?.debug({ container: id, number: rec.number, device: device.path }, "new container");
    return oc;
  }

  /** No more appends to `oc`; seal it (or close it, if broken) once its holds are released. */
  retire(oc: OpenContainer): void {
    if (oc.retired) return;
    oc.retired = true;
    const d = this.domains.get(oc.rec.domain);
    if (d?.current === oc) d.current = undefined;
    this.finishIfIdle(oc);
  }

  /** @internal */
  release(oc: OpenContainer): void {
    oc.holds--;
    this.finishIfIdle(oc);
  }

  private finishIfIdle(oc: OpenContainer): void {
    if (!oc.retired || oc.holds > 0 || oc.done !== undefined) return;
    oc.done = (async () => {
      if (oc.broken) {
        await oc.writer.close().catch(() => undefined);
        this.open.delete(oc.rec.number);
        return; // stays "open" in the registry: the next start truncates and seals it
      }
      try {
        const sealed = await oc.writer.seal();
        oc.rec.state = "sealed";
        oc.rec.size = sealed.size;
        this.open.delete(oc.rec.number);
        await this.registry.save();
      } catch (error) {
        oc.broken = true;
        this.open.delete(oc.rec.number);
        this.logger?.error({ err: error, container: oc.rec.id }, "sealing a container failed");
      }
    })();
  }

  /** @internal A write on `oc` failed: the writer is poisoned, start another container. */
  markBroken(oc: OpenContainer, error: unknown): void {
    if (!oc.broken) {
      oc.broken = true;
      this.logger?.error({ err: error, container: oc.rec.id }, "container write failed");
    }
    this.retire(oc);
  }

  // -------------------------------------------------------------------------------------------
  // Lifecycle

  /**
   * At open: finish deletions, reopen unsealed containers (truncating torn tails: the write
   * protocol never lets the index name bytes that were not synced, FORMAT.md §6), keep the
   * largest one per domain as the current container and seal the others, and remove container
   * files the registry does not know that hold no record (a crash between their creation and the
   * registry save).
   */
  async recover(): Promise<RecoverySummary> {
    let reopened = 0;
    let tornTails = 0;
    let tornBytes = 0;
    let sealedAtOpen = 0;
    let deletedLeftovers = 0;
    const missing: string[] = [];
    const damaged: string[] = [];
    const byDomain = new Map<number, OpenContainer[]>();
    for (const rec of [...this.registry.containers]) {
      const path = this.containerPath(rec);
      if (rec.state === "deleting") {
        await unlink(path).catch(() => undefined);
        this.registry.removeContainer(rec.number);
        deletedLeftovers++;
        continue;
      }
      if (rec.state !== "open") continue;
      let size: number;
      try {
        size = (await stat(path)).size;
      } catch {
        missing.push(path);
        continue;
      }
      let writer: ContainerWriter;
      try {
        writer = await ContainerWriter.open(path, this.domain(rec.domain).keys, {
          truncateTail: true,
        });
      } catch (error) {
        if (error instanceof Error && /is sealed/.test(error.message)) {
          rec.state = "sealed"; // a crash between the seal and the registry save
          continue;
        }
        damaged.push(path);
        this.logger?.error(
          { err: error, container: rec.id },
          "unsealed container is damaged: it is kept for reads and takes no appends (run scrub)",
        );
        continue;
      }
      reopened++;
      if (writer.size < size) {
        tornTails++;
        tornBytes += size - writer.size;
        if (rec.closedEnd !== undefined && writer.size < rec.closedEnd) {
          this.logger?.error(
            { container: rec.id, validEnd: writer.size, closedEnd: rec.closedEnd },
            "container lost bytes that were durable at the last clean close: reads of them fail",
          );
        }
      }
      rec.closedEnd = undefined;
      const oc: OpenContainer = { rec, writer, holds: 0, retired: false, broken: false };
      this.open.set(rec.number, oc);
      const list = byDomain.get(rec.domain) ?? [];
      list.push(oc);
      byDomain.set(rec.domain, list);
    }
    for (const [domain, list] of byDomain) {
      list.sort((a, b) => a.writer.size - b.writer.size);
      const keep = [...list].reverse().find((oc) => oc.writer.size < this.sealBytes);
      for (const oc of list) {
        if (oc === keep) continue;
        this.retire(oc);
        await oc.done;
        sealedAtOpen++;
      }
      if (keep !== undefined) this.domain(domain).current = keep;
    }
    deletedLeftovers += await this.removeLeftovers();
    await this.registry.save();
    return { reopened, tornTails, tornBytes, sealedAtOpen, deletedLeftovers, missing, damaged };
  }

  private async removeLeftovers(): Promise<number> {
    const known = new Set(this.registry.containers.map((c) => containerFileName(c.id)));
    let removed = 0;
    for (const device of this.registry.devices) {
      const dir = containerDir(device);
      let names: string[];
      try {
        names = await readdir(dir);
      } catch {
        continue;
      }
      for (const name of names) {
        if (!name.endsWith(CONTAINER_SUFFIX) || known.has(name)) continue;
        const path = join(dir, name);
        const { size } = await stat(path);
        if (size <= FILE_HEADER_BYTES) {
          await unlink(path);
          removed++;
        } else {
          this.logger?.warn({ path, size }, "container file unknown to the registry: left alone");
        }
      }
    }
    if (removed > 0) for (const d of this.registry.devices) await fsyncDirectory(containerDir(d));
    return removed;
  }

  /** Wait until `oc` is sealed (retiring it first). For GC of a fully dead current container. */
  async retireAndSeal(oc: OpenContainer): Promise<void> {
    this.retire(oc);
    while (oc.done === undefined) await new Promise((r) => setTimeout(r, 5));
    await oc.done;
  }

  /**
   * Delete a container file whose chunks the index no longer names (the caller checked and
   * flushed the metadata store first). Marked `deleting` durably before the unlink, so that a
   * crash in between finishes the job at the next start instead of reporting a missing file.
   */
  async deleteContainer(number: number): Promise<number> {
    const rec = this.registry.container(number);
    if (rec === undefined) return 0;
    if (this.open.has(number)) throw new Error(`container ${rec.id} is still open`);
    const path = this.containerPath(rec);
    const size = await stat(path).then(
      (s) => s.size,
      () => 0,
    );
    rec.state = "deleting";
    await this.registry.save();
    this.reads.drop(number);
    try {
      await unlink(path);
    } catch (error) {
      if (!isErrnoException(error) || error.code !== "ENOENT") throw error;
    }
    const device = this.registry.device(rec.device);
    if (device !== undefined) await fsyncDirectory(containerDir(device));
    this.registry.removeContainer(number);
    await this.registry.save();
    return size;
  }

  /**
   * Make every open container durable, remember its durable end (closedEnd), close the writers
   * without sealing them, close the readers. Callers stop writing first.
   */
  async close(): Promise<void> {
    for (const oc of [...this.open.values()]) {
      if (oc.done !== undefined) {
        await oc.done;
        continue;
      }
      if (!oc.broken) {
        try {
          await oc.writer.sync();
          oc.rec.closedEnd = oc.writer.syncedSize;
        } catch (error) {
          this.logger?.error({ err: error, container: oc.rec.id }, "final sync failed");
        }
      }
      await oc.writer.close().catch(() => undefined);
    }
    this.open.clear();
    this.reads.close();
    await this.registry.save();
  }
}

/**
 * The new chunks of one write: appended together, synced together, held until the write's map
 * update settled (`release`; for a staged write, by the commit that lands it: write-back.ts).
 */
export class ChunkBatch {
  private readonly held = new Set<OpenContainer>();
  /** The in-flight dedup entries this batch made (`pending`), by appendAll call. */
  private readonly registered: PendingChunk[][] = [];
  private released = false;

  constructor(
    private readonly store: ChunkStore,
    private readonly d: DomainState,
  ) {}

  /**
   * Append grains (already known absent from the index) and resolve their locations once written
   * (not yet durable: `sync`). Grains another write is appending are not stored twice, nor a
   * grain repeated within `items`. Per grain it makes one `pending` entry; the rest is per call
   * (a unique write allocated a third of its main thread's garbage here with a promise per grain).
   */
  async appendAll(
    items: readonly { fingerprint: Buffer; grain: Buffer }[],
    /**
     * Called once the grains are findable by other writes (in-flight dedup) and have their
     * place in the container, before they are sealed and written: the commit pipeline lets
     * the next write take its turn from then on (write-back.ts).
     */
    placed?: () => void,
  ): Promise<ChunkLocation[]> {
    const n = items.length;
    let absent = 0;
    for (let i = 0; i < n; i++) if (this.pendingOf(items[i]!.fingerprint) === undefined) absent++;
    let oc: OpenContainer | undefined;
    if (absent > 0) {
      // Held in the same turn as the check: a container with a hold is never sealed under us.
      do oc = await this.store.writable(this.d, absent * RECORD_BOUND);
      while (oc.retired);
      this.hold(oc);
    }
    // The new grains' locations, settled once they are written (below). Each new grain is
    // registered in `pending` as it is met, so that a repeat later in `items` finds it too.
    let settle!: {
      resolve(locations: readonly ChunkLocation[]): void;
      reject(error: unknown): void;
    };
    const batch = new Promise<readonly ChunkLocation[]>((resolve, reject) => {
      settle = { resolve, reject };
    });
    batch.catch(() => undefined); // observed below (or by another write)
    // Item i takes location `slot[i]` of the new batch, or (-1) the pending one of another write.
    const slot = new Int32Array(n);
    const shared: { index: number; entry: PendingChunk }[] = [];
    const fps: Buffer[] = [];
    const grains: Buffer[] = [];
    const entries: PendingChunk[] = [];
    this.registered.push(entries);
    for (let i = 0; i < n; i++) {
      const fingerprint = items[i]!.fingerprint;
      const p = this.pendingOf(fingerprint);
      if (p !== undefined && p.batch === batch) {
        slot[i] = p.index;
        continue;
      }
      if (p !== undefined) {
        this.hold(p.oc);
        shared.push({ index: i, entry: p });
        slot[i] = -1;
        continue;
      }
      if (oc === undefined) {
        // Cannot happen (absent counted it, and nothing ran in between): fail the entries made.
        settle.reject(new Error("no container for a new grain"));
        throw new Error("no container for a new grain");
      }
      const entry: PendingChunk = { fingerprint, oc, batch, index: fps.length };
      this.d.pending.set(pendingKey(fingerprint), entry);
      entries.push(entry);
      slot[i] = fps.length;
      fps.push(fingerprint);
      grains.push(items[i]!.grain);
    }
    let bytes = 0;
    if (fps.length > 0) {
      const target = oc!;
      // One batch, appended in call order: adjacent records (one pread reads them back), sealed
      // on a worker thread while other work goes on here.
      const domain = this.d.rec.id;
      const container = target.writer.containerId;
      target.writer
        .appendBatch(fps, grains, (base) =>
          this.store.jobs.seal(domain, container, base, fps, grains),
        )
        .then(
          (rs) => {
            const locations = new Array<ChunkLocation>(rs.length);
            for (let k = 0; k < rs.length; k++) {
              const r = rs[k]!;
              bytes += r.recordLength;
              locations[k] = {
                containerId: target.rec.number,
                offset: r.offset,
                storedLength: r.storedLength,
                logicalLength: grains[k]!.length,
              };
            }
            settle.resolve(locations);
          },
          (error: unknown) => {
            this.store.markBroken(target, error);
            settle.reject(asStorageError(error, "appending to a container"));
          },
        );
    }
    placed?.();
    if (oc !== undefined && oc.writer.size >= this.store.sealBytes) this.store.retire(oc);
    const out = new Array<ChunkLocation>(n);
    if (fps.length > 0) {
      const own = await batch;
      for (let i = 0; i < n; i++) if (slot[i]! >= 0) out[i] = own[slot[i]!]!;
    }
    for (const { index, entry } of shared) out[index] = (await entry.batch)[entry.index]!;
    // The batch took its offsets (appendBatch) after the check above: check again.
    if (oc !== undefined && oc.writer.size >= this.store.sealBytes) this.store.retire(oc);
    if (oc !== undefined) this.store.devices.charge(oc.rec.device, bytes);
    return out;
  }

  /**
   * The in-flight entry for a fingerprint. A location in a container whose write or sync failed
   * is no copy to share (write-back.ts stores such grains again).
   */
  private pendingOf(fingerprint: Buffer): PendingChunk | undefined {
    const p = this.d.pending.get(pendingKey(fingerprint));
    return p === undefined || p.oc.broken || !p.fingerprint.equals(fingerprint) ? undefined : p;
  }

  /** The write protocol's step 3: every chunk this batch names is durable when this resolves. */
  async sync(): Promise<void> {
    await Promise.all(
      [...this.held].map((oc) =>
        oc.writer.sync().catch((error: unknown) => {
          this.store.markBroken(oc, error);
          throw asStorageError(error, "syncing a container");
        }),
      ),
    );
  }

  /**
   * GC compaction (gc.ts): append records built by `seal(containerId, base)` — copies of chunks
   * the index names elsewhere, sealed again for their new place — to the domain's writable
   * container, back to back; resolves their locations once written (durable after `sync`).
   * Unlike appendAll there is no in-flight dedup: `pending` is neither consulted nor fed (the
   * index names the old copies until the relocation transaction, so writes find those). Held until
   * `release`, like appendAll. `logicalLengths[i]` is record i's plaintext length. (Healing a
   * damaged chunk would use it too, with `jobs.seal` of the write's grain as `seal`.)
   */
  async appendSealed(
    fingerprints: readonly Buffer[],
    logicalLengths: readonly number[],
    seal: (containerId: string, base: number) => SealedRecords | Promise<SealedRecords>,
  ): Promise<ChunkLocation[]> {
    if (fingerprints.length === 0) return [];
    let oc: OpenContainer;
    do oc = await this.store.writable(this.d, fingerprints.length * RECORD_BOUND);
    while (oc.retired);
    this.hold(oc); // in the same turn as the check, as in appendAll
    const target = oc;
    // appendBatch reads the grains' lengths only when `seal` builds the records.
    const lengths = logicalLengths.map((n) => (n === 4096 ? ZERO_GRAIN : Buffer.alloc(n)));
    const results = await target.writer
      .appendBatch(fingerprints, lengths, (base) => seal(target.writer.containerId, base))
      .catch((error: unknown) => {
        this.store.markBroken(target, error);
        throw asStorageError(error, "appending to a container");
      });
    let bytes = 0;
    const out = results.map((r, i) => {
      bytes += r.recordLength;
      return {
        containerId: target.rec.number,
        offset: r.offset,
        storedLength: r.storedLength,
        logicalLength: logicalLengths[i]!,
      };
    });
    if (target.writer.size >= this.store.sealBytes) this.store.retire(target);
    this.store.devices.charge(target.rec.device, bytes);
    return out;
  }

  /** The map update settled (either way): let GC and sealing proceed. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    for (const entries of this.registered) {
      for (const entry of entries) {
        // A later batch may have taken the slot (this one's copy was broken, or a key collision).
        const key = pendingKey(entry.fingerprint);
        if (this.d.pending.get(key) === entry) this.d.pending.delete(key);
      }
    }
    for (const oc of this.held) this.store.release(oc);
    this.held.clear();
  }

  private hold(oc: OpenContainer): void {
    if (this.held.has(oc)) return;
    this.held.add(oc);
    oc.holds++;
  }
}

function poolFull(): StorageError {
  return new StorageError(
    StorageErrorCode.PoolFull,
    "the pool has no device with free space above its reserve for new data",
  );
}

/** Container errors are StorageErrors already (PoolFull for ENOSPC); anything else: WriteFault. */
export function asStorageError(error: unknown, what: string): StorageError {
  if (error instanceof StorageError) return error;
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return new StorageError(
    code === "ENOSPC" || code === "EDQUOT"
      ? StorageErrorCode.PoolFull
      : StorageErrorCode.WriteFault,
    `${what} failed: ${(error as Error | undefined)?.message ?? String(error)}`,
    undefined,
    { cause: error },
  );
}
