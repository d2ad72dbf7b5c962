/**
 * The pool: the deduplicated, compressed, encrypted storage behind every pool volume
 * (DESIGN.md "Pool", "Durability", "Domains and encryption"), wired from the building blocks:
 * container files (src/pool/container), the metadata store (src/pool/meta), the key hierarchy
 * (src/crypto), the registry (registry.ts), devices (devices.ts) and the chunk store
 * (chunk-store.ts). See README.md in this folder.
 *
 * Layout under `dir`:
 *   registry.json          devices, domains, containers, volumes (registry.ts)
 *   meta/                  the LMDB environment of the metadata store
 *   maplog/                the map log: redo log + checkpoints of every block map change
 *                          (src/pool/meta/README.md "Map log"), what `pool rebuild` rebuilds from
 *   devices/0/containers/  container files `<id>.sxc` of the default device (others: addDevice)
 *
 * Recovery is "open, then let the applier run" (src/pool/meta/README.md, "Crash consistency")
 * plus the containers' own: torn tails of unsealed containers are truncated (FORMAT.md §6; the
 * write protocol never lets the index name bytes that were not synced).
 *
 * Write-back (write-back.ts): writes are staged and committed in groups. Everything here that
 * reads the maps or counters as a whole, or changes them other than by writes (snapshots, GC,
 * scrub, check, rebuild), commits the staged writes first (`commitStaged`); `flush` and `close`
 * commit and flush.
 *
 * Concurrency: catalog changes (ensureVolume, deleteVolume, addDevice) run one at a time;
 * volume I/O, scrub, check and gc run alongside them.
 */
import type { KeyObject } from "node:crypto";
import { mkdir, readdir, rename, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Logger } from "pino";
import { keyCheckValue, newId, verifyMasterKey } from "../crypto/index.js";
import { isValidName, NAME_RULE } from "../util/names.js";
import { ChunkStore } from "./chunk-store.js";
import { JobRunner } from "./chunk-worker.js";
import { type DeviceStatus, Devices } from "./devices.js";
import { collectGarbage, type GcOptions, type GcReport } from "./gc.js";
import {
  type AuditReport,
  type DomainUsage,
  MetaStore,
  type PoolUsage,
  RefcountApplier,
  type VolumeUsage,
} from "./meta/index.js";
import { type AllocationGuard, GRAIN, type PoolContext, PoolVolume } from "./pool-volume.js";
import {
  type MapRebuildReport,
  type RebuildReport,
  rebuildPool,
  rebuildPoolMaps,
} from "./rebuild.js";
import { REGISTRY_FILE, Registry, type SnapshotRecord, type VolumeRecord } from "./registry.js";
import { type ScrubProgress, type ScrubReport, scrubPool } from "./scrub.js";
import { WriteBack, type WriteBackOptions } from "./write-back.js";

export type { GcOptions, GcProgress, GcReport } from "./gc.js";
export type { MapRebuildReport } from "./rebuild.js";

/** The map log's directory under the pool directory. */
export const MAPLOG_DIR = "maplog";
export { type AllocationGuard, PoolVolume } from "./pool-volume.js";
export type { ScrubProgress, ScrubReport } from "./scrub.js";

export interface PoolOpenOptions {
  /** The pool's directory (e.g. DATA/pool); created if missing. */
  readonly dir: string;
  readonly masterKey: KeyObject;
  readonly logger?: Logger | undefined;
  /** Extra device directories (added if new). The default device is `dir/devices/0`. */
  readonly devices?: readonly string[] | undefined;
  /** Seal containers at this size. Default 256 MiB. */
  readonly sealBytes?: number | undefined;
  /** Bytes kept free on each device (devices.ts). */
  readonly reserveBytes?: number | undefined;
  /**
   * The most bytes the pool's containers may hold, whatever the devices' free space (config
   * `pool.max_size`): capacity() reports it as the pool's size, so the arbiter's admission
   * refuses new allocations beyond it. Unset: the devices' free space is the limit.
   */
  readonly maxBytes?: number | undefined;
  /** Check HMAC(plaintext) on every read (chunk-store.ts). Default false. */
  readonly verifyReads?: boolean | undefined;
  /** Bytes of the grain cache (config `pool.cache_size`; default in chunk-reader.ts). */
  readonly grainCacheBytes?: number | undefined;
  /**
   * Worker threads for fingerprinting and record opening (chunk-worker.ts). Default: one per
   * CPU, at most 4; 0 runs them on the main thread.
   */
  readonly workers?: number | undefined;
  /** The compiled worker module (tests of the sources point at dist/); default beside this one. */
  readonly workerScript?: string | undefined;
  /**
   * Write-back of WCE=1 writes (write-back.ts): acknowledged once staged, committed in groups.
   * Default: on, unless the environment sets SANMUX_WRITE_BACK=0 (every write then commits
   * before it resolves, as before write-back existed). `deferredSeal` (a WCE=1 write is
   * acknowledged once its plaintext is staged; write-back.ts "Commit pipeline"): on unless the
   * environment sets SANMUX_DEFERRED_SEAL=0.
   */
  readonly writeBack?: WriteBackOptions | undefined;
  /**
   * `sanmux pool rebuild`: rebuild the metadata store from the containers and the map log
   * before anything else (rebuild.ts, rebuildPoolMaps). A present `meta/` is moved aside to
   * `meta.before-rebuild-<time>` first, whether it opens or not. The report is `mapRebuild`.
   */
  readonly rebuildMaps?: boolean | undefined;
}

/** Pool.readCache(). */
export interface ReadCacheStats {
  /** By volume address (volume-cache.ts): what a host reads again. */
  readonly byVolume: { bytes: number; grains: number; hits: number; misses: number };
  /** By chunk, from a grain's second read (grain-cache.ts): what many volumes share. */
  readonly byChunk: { bytes: number; grains: number; hits: number };
  /**
   * Where recently written grains' chunks are (location-hints.ts): bytes they may take, grains
   * hinted, reads resolved from them, reads that found a grain without one.
   */
  readonly hints: { bytes: number; grains: number; hits: number; misses: number };
}

export interface VolumeSpec {
  readonly name: string;
  /** Capacity in bytes, a multiple of the block size. */
  readonly size: number;
  readonly blockSize: 512 | 4096;
  /** Dedup + encryption domain. Default "shared". */
  readonly domain?: string | undefined;
  /** Write-back cache (WCE=1). Default true; false makes every write durable before it resolves. */
  readonly writeCache?: boolean | undefined;
}

/** Capacity figures (src/pool/meta/README.md, "Capacity accounting"). */
export interface UsageFigures {
  /** Sum of the volumes' sizes. */
  readonly provisionedBytes: number;
  /** Mapped grains × grain size: what was written and is not zeros. */
  readonly logicalBytes: number;
  /** Stored bytes of the chunks the maps reference, shared chunks counted for each reference. */
  readonly referencedBytes: number;
  /** What the data occupies in containers (volumes: an attributed share). */
  readonly physicalBytes: number;
  readonly savedByDedup: number;
  readonly savedByCompression: number;
  /** referenced / physical. */
  readonly dedupRatio: number;
  /** logical / referenced. */
  readonly compressionRatio: number;
}

export interface PoolUsageReport {
  readonly grainSize: number;
  readonly pool: UsageFigures & {
    readonly liveChunks: number;
    readonly deadChunks: number;
    readonly deadBytes: number;
    readonly pendingJournalRecords: number;
  };
  readonly domains: (UsageFigures & { readonly name: string; readonly id: string })[];
  readonly volumes: (UsageFigures & {
    readonly name: string;
    readonly domain: string;
    readonly blockSize: number;
    readonly writeCache: boolean;
  })[];
  readonly devices: DeviceStatus[];
  readonly containers: { readonly open: number; readonly sealed: number; readonly total: number };
}

export interface CheckReport {
  /** No finding of any kind (audit clean and no container file missing). */
  readonly clean: boolean;
  readonly leaks: number;
  readonly orphans: number;
  readonly miscounts: number;
  /** Map entries whose chunk the index lacks: unreadable grains. */
  readonly damage: number;
  readonly staleDead: number;
  readonly drift: number;
  readonly pendingRecords: number;
  readonly mapEntries: number;
  readonly chunks: number;
  readonly missingContainers: string[];
  readonly audit: AuditReport;
}

/** A named snapshot (Pool.listSnapshots). */
export interface SnapshotInfo {
  readonly volume: string;
  readonly name: string;
  /** Stable identity (the VPD 0x83 designator of a LUN mapping it). */
  readonly id: string;
  /** The metadata store's snapshot number (the volume's generation when it was taken). */
  readonly generation: number;
  readonly createdAt: string;
  /** The volume's capacity when the snapshot was taken (the snapshot's capacity). */
  readonly sizeBytes: number;
  readonly blockSize: number;
  /**
   * Logical bytes of the old versions the volume's snapshots keep beyond its head (grains
   * overwritten or unmapped since a snapshot that still sees them), for all the volume's
   * snapshots together (MetaStore.snapshotUsage).
   */
  readonly volumeSnapshotsHeldBytes: number;
  /**
   * What this snapshot alone holds beyond the head, when cheaply known: exact when it is the
   * volume's only snapshot (then it is volumeSnapshotsHeldBytes); undefined otherwise (per
   * snapshot figures need a scan: src/pool/meta/README.md, "Capacity accounting").
   */
  readonly heldBytes: number | undefined;
}

const DEFAULT_DOMAIN = "shared";

export class Pool {
  private readonly volumes = new Map<string, PoolVolume>();
  private readonly ctx: PoolContext;
  private catalogTail: Promise<unknown> = Promise.resolve();
  /** Scrubs and GCs under way: close() lets them stop and waits for them. */
  private readonly maintenance = new Set<Promise<unknown>>();
  private gcTail: Promise<unknown> = Promise.resolve();
  private closing: Promise<void> | undefined;
  private maxBytes: number | undefined;
  /** What the open with `rebuildMaps` did (undefined otherwise). */
  mapRebuild: MapRebuildReport | undefined;

  private constructor(
    readonly dir: string,
    private readonly registry: Registry,
    private readonly store: MetaStore,
    private readonly devices: Devices,
    private readonly chunks: ChunkStore,
    private readonly applier: RefcountApplier,
    private readonly logger: Logger | undefined,
    private readonly writeBack: WriteBack,
  ) {
    this.ctx = {
      store,
      chunks,
      registry,
      logger,
      writeBack,
      allocationGuard: undefined,
      forget: (v) => {
        if (this.volumes.get(v.name) === v) this.volumes.delete(v.name);
      },
    };
  }

  static async open(o: PoolOpenOptions): Promise<Pool> {
    const dir = resolve(o.dir);
    const log = o.logger;
    await mkdir(dir, { recursive: true });
    const path = join(dir, REGISTRY_FILE);
    let registry = await Registry.load(path);
    if (registry === undefined) {
      if ((await readdir(dir)).includes("meta")) {
        throw new Error(`pool at ${dir} has metadata but no ${REGISTRY_FILE}: refusing to start`);
      }
      registry = Registry.create(path, {
        poolId: newId(),
        keyCheck: keyCheckValue(o.masterKey),
        grainSize: GRAIN,
      });
      registry.addDevice(join(dir, "devices", "0"));
      await registry.save();
      log?.info({ dir, poolId: registry.data.poolId }, "created pool");
    } else {
      try {
        verifyMasterKey(o.masterKey, registry.data.keyCheck);
      } catch (error) {
        throw new Error(`wrong master key for pool at ${dir}: ${(error as Error).message}`, {
          cause: error,
        });
      }
    }
    if (registry.data.grainSize !== GRAIN) {
      throw new Error(`pool at ${dir} has grain size ${registry.data.grainSize}; only ${GRAIN}`);
    }
    for (const d of o.devices ?? []) {
      const p = resolve(d);
      if (!registry.devices.some((x) => x.path === p)) registry.addDevice(p);
    }
    await registry.save();
    const devices = new Devices(registry, { reserveBytes: o.reserveBytes });
    await devices.start();
    const metaPath = join(dir, "meta");
    let movedAside: string | undefined;
    if (o.rebuildMaps === true) {
      // Nothing is moved unless the log can give the maps back.
      const can = await MetaStore.checkMapLogRebuildable(join(dir, MAPLOG_DIR));
      if (!can.ok) {
        devices.stop();
        throw new Error(`cannot rebuild the block maps: ${can.reason}`);
      }
    }
    if (o.rebuildMaps === true && (await fileExists(metaPath))) {
      movedAside = join(
        dir,
        `meta.before-rebuild-${new Date().toISOString().replace(/[:.]/g, "-")}`,
      );
      await rename(metaPath, movedAside);
      log?.warn({ from: metaPath, to: movedAside }, "rebuild: moved the metadata store aside");
    }
    let store: MetaStore;
    try {
      store = await MetaStore.open({
        path: metaPath,
        grainSize: GRAIN,
        // The map log (src/pool/meta/README.md "Map log"): what `pool rebuild` rebuilds maps from.
        mapLog: { dir: join(dir, MAPLOG_DIR), logger: log, rebuild: o.rebuildMaps === true },
        // Refcount batches off the event loop (meta/apply-thread.ts), unless all work is to run
        // inline (workers: 0).
        applyThread: o.workers !== 0,
        onApplyThreadDeath: (err) =>
          log?.warn(
            { err },
            "the refcount journal's thread died: batches now run on the event loop",
          ),
        // The group commits' map transactions too (meta/map-thread.ts).
        mapThread: o.workers !== 0,
        onMapThreadDeath: (err) =>
          log?.warn(
            { err },
            "the map write thread died: group commits now write the maps on the event loop",
          ),
      });
    } catch (error) {
      devices.stop();
      throw error;
    }
    try {
      const pending = store.pendingJournalRecords;
      const jobs = new JobRunner(o.masterKey, o.workers, o.workerScript);
      const chunks = new ChunkStore(registry, devices, o.masterKey, jobs, log, {
        sealBytes: o.sealBytes,
        verifyReads: o.verifyReads,
        grainCacheBytes: o.grainCacheBytes,
      });
      const recovery = await chunks.recover();
      const mapRebuild =
        o.rebuildMaps === true
          ? await rebuildPoolMaps({
              registry,
              store,
              containerPath: (rec) => chunks.containerPath(rec),
              logger: log,
              movedAside,
            })
          : undefined;
      // Volumes: finish interrupted deletions; make sure every volume is registered in the store
      // (the registry is saved first, so a crash can leave a volume the store does not know).
      for (const v of [...registry.volumes]) {
        if (v.deleting === true) {
          await store.deleteVolume(v.number);
          registry.removeVolume(v.name);
        } else {
          await store.createVolume(v.number, v.domain);
        }
      }
      await registry.save();
      await recoverSnapshots(registry, store, log);
      const applier = new RefcountApplier(store, {
        onApplied: (r) => {
          if (r.anomalies.length > 0) {
            log?.warn({ anomalies: r.anomalies.slice(0, 10) }, "refcount journal anomalies");
          }
        },
        onError: (err) => log?.error({ err }, "applying the refcount journal failed"),
      });
      applier.start();
      log?.info(
        {
          dir,
          pendingJournalRecords: pending,
          containersReopened: recovery.reopened,
          tornTails: recovery.tornTails,
          tornBytesTruncated: recovery.tornBytes,
          sealedAtOpen: recovery.sealedAtOpen,
          leftoversDeleted: recovery.deletedLeftovers,
          missingContainers: recovery.missing,
          damagedContainers: recovery.damaged,
          volumes: registry.volumes.length,
          journalApplyThread: store.journalApplyThread,
          mapWriteThread: store.mapWriteThread,
        },
        "pool open",
      );
      const writeBack = new WriteBack(store, chunks, log, {
        enabled: process.env.SANMUX_WRITE_BACK !== "0",
        deferredSeal: process.env.SANMUX_DEFERRED_SEAL !== "0",
        ...o.writeBack,
      });
      const pool = new Pool(dir, registry, store, devices, chunks, applier, log, writeBack);
      pool.maxBytes = o.maxBytes;
      pool.mapRebuild = mapRebuild;
      return pool;
    } catch (error) {
      devices.stop();
      await store.close();
      throw error;
    }
  }

  /** Run catalog changes one at a time. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.catalogTail.then(fn, fn);
    this.catalogTail = run.catch(() => undefined);
    return run;
  }

  private checkOpen(): void {
    if (this.closing !== undefined) throw new Error(`pool at ${this.dir} is closed`);
  }

  // -------------------------------------------------------------------------------------------
  // Volumes

  /**
   * Create the volume if absent, grow it if `size` is larger; refuse a shrink, a block size
   * change or a domain change. Returns the open volume (the same object while it stays open).
   */
  ensureVolume(spec: VolumeSpec): Promise<PoolVolume> {
    return this.serial(async () => {
      this.checkOpen();
      const { name, size, blockSize } = spec;
      const domainName = spec.domain ?? DEFAULT_DOMAIN;
      if (!isValidName(name))
        throw new Error(`volume name "${name}" is not valid: use ${NAME_RULE}`);
      if (!isValidName(domainName)) {
        throw new Error(`domain name "${domainName}" is not valid: use ${NAME_RULE}`);
      }
      if (blockSize !== 512 && blockSize !== 4096) {
        throw new Error(`volume "${name}": block size ${String(blockSize)} is not 512 or 4096`);
      }
      if (!Number.isSafeInteger(size) || size <= 0 || size % blockSize !== 0) {
        throw new Error(
          `volume "${name}": size ${size} is not a positive multiple of the block size ${blockSize}`,
        );
      }
      const existing = this.registry.volumeByName(name);
      if (existing !== undefined) {
        const domain = this.registry.domain(existing.domain);
        if (existing.blockSize !== blockSize) {
          throw new Error(
            `volume "${name}" has block size ${existing.blockSize}; changing it to ${blockSize} ` +
              "would move every block (create a new volume instead)",
          );
        }
        if (domain?.name !== domainName) {
          throw new Error(
            `volume "${name}" is in domain "${domain?.name}"; moving it to "${domainName}" ` +
              "would need every chunk stored again under the other domain's keys (copy it instead)",
          );
        }
        const volume = this.openVolume(existing);
        if (size !== existing.size) await volume.grow(size); // refuses a shrink
        const writeCache = spec.writeCache ?? true;
        if (writeCache !== existing.writeCache) {
          existing.writeCache = writeCache;
          await this.registry.save();
        }
        return volume;
      }
      let domain = this.registry.domainByName(domainName);
      if (domain === undefined) domain = this.registry.addDomain(domainName, newId());
      const rec = this.registry.addVolume({
        name,
        id: newId(),
        domain: domain.number,
        size,
        blockSize,
        writeCache: spec.writeCache ?? true,
      });
      await this.registry.save(); // durable before the store names the number (registry.ts)
      await this.store.createVolume(rec.number, domain.number);
      this.logger?.info({ volume: name, size, blockSize, domain: domainName }, "created volume");
      return this.openVolume(rec);
    });
  }

  private openVolume(rec: VolumeRecord): PoolVolume {
    let v = this.volumes.get(rec.name);
    if (v === undefined || v.isClosed) {
      v = new PoolVolume(this.ctx, rec);
      this.volumes.set(rec.name, v);
    }
    return v;
  }

  /** The volume `name`, opened if it exists and is not open; undefined when it does not exist. */
  volume(name: string): PoolVolume | undefined {
    if (this.closing !== undefined) return undefined;
    const rec = this.registry.volumeByName(name);
    if (rec === undefined || rec.deleting === true) return undefined;
    return this.openVolume(rec);
  }

  /** Names of the pool's volumes. */
  volumeNames(): string[] {
    return this.registry.volumes.filter((v) => v.deleting !== true).map((v) => v.name);
  }

  /** Close the volume, drop every reference it holds, forget it. */
  deleteVolume(name: string): Promise<void> {
    return this.serial(async () => {
      this.checkOpen();
      const rec = this.registry.volumeByName(name);
      if (rec === undefined) throw new Error(`volume "${name}" does not exist`);
      const snapshots = rec.snapshots ?? [];
      if (snapshots.length > 0) {
        throw new Error(
          `volume "${name}" has snapshots (${snapshots.map((s) => s.name).join(", ")}): ` +
            "delete them first (`sanmux snapshot delete`); clones are independent and stay",
        );
      }
      await this.volumes.get(name)?.close();
      rec.deleting = true;
      await this.registry.save(); // a crash from here on finishes the deletion at the next start
      await this.store.deleteVolume(rec.number);
      this.chunks.reads.volumeCache.dropVolume(rec.number); // its number may come back
      this.chunks.reads.locations.dropVolume(rec.number);
      this.registry.removeVolume(name);
      await this.registry.save();
      this.logger?.info({ volume: name }, "deleted volume");
    });
  }

  // -------------------------------------------------------------------------------------------
  // Snapshots and clones (src/pool/meta/README.md, "Snapshots")

  /**
   * Take a snapshot of `volume` named `name` (unique per volume). O(1) whatever the volume size:
   * one small metadata transaction, a flush, and a registry save. It holds every write that
   * resolved before this call (writes running at the same time may or may not be in it), and it
   * is durable when the promise resolves.
   */
  createSnapshot(volume: string, name: string): Promise<SnapshotInfo> {
    return this.serial(async () => {
      this.checkOpen();
      const rec = this.liveVolume(volume);
      if (!isValidName(name))
        throw new Error(`snapshot name "${name}" is not valid: use ${NAME_RULE}`);
      if ((rec.snapshots ?? []).some((s) => s.name === name)) {
        throw new Error(`volume "${volume}" already has a snapshot "${name}"`);
      }
      await this.commitStaged(); // the snapshot holds every write that resolved before the call
      const generation = await this.store.createSnapshot(rec.number);
      // Durable in the store before the registry names it; a crash in between leaves a store
      // snapshot the registry does not know, deleted at the next start (recoverSnapshots).
      await this.store.flush();
      const snap: SnapshotRecord = {
        name,
        generation,
        id: newId(),
        createdAt: new Date().toISOString(),
        size: rec.size,
      };
      rec.snapshots = [...(rec.snapshots ?? []), snap];
      try {
        await this.registry.save();
      } catch (error) {
        rec.snapshots = rec.snapshots.filter((s) => s !== snap);
        await this.store.deleteSnapshot(rec.number, generation).catch(() => undefined);
        throw error;
      }
      this.logger?.info({ volume, snapshot: name, generation }, "created snapshot");
      return this.snapshotInfo(rec, snap);
    });
  }

  /** The snapshots of `volume` (every volume's when omitted), oldest first per volume. */
  listSnapshots(volume?: string): SnapshotInfo[] {
    this.checkOpen();
    const recs = volume === undefined ? this.registry.volumes : [this.liveVolume(volume)];
    const out: SnapshotInfo[] = [];
    for (const rec of recs) {
      if (rec.deleting === true) continue;
      for (const s of rec.snapshots ?? []) {
        if (s.deleting !== true) out.push(this.snapshotInfo(rec, s));
      }
    }
    return out;
  }

  /**
   * Delete a snapshot: an open view of it is closed (its reads fail with NotReady), and the old
   * versions no other snapshot sees are released (space comes back after the journal is applied
   * and GC runs). Time proportional to what changed while it was the newest snapshot. A crash
   * part way is finished at the next start.
   */
  deleteSnapshot(volume: string, name: string): Promise<void> {
    return this.serial(async () => {
      this.checkOpen();
      const rec = this.liveVolume(volume);
      const snap = this.liveSnapshot(rec, name);
      await this.volumes.get(snapshotViewName(volume, name))?.close();
      snap.deleting = true;
      await this.registry.save(); // from here a crash finishes the deletion at the next start
      await this.store.deleteSnapshot(rec.number, snap.generation);
      rec.snapshots = (rec.snapshots ?? []).filter((s) => s !== snap);
      await this.registry.save();
      this.logger?.info({ volume, snapshot: name }, "deleted snapshot");
    });
  }

  /**
   * Make `newVolume`, a writable volume of the same domain, block size and size as the
   * snapshot, holding the snapshot's data (MetaStore.cloneVolume: every mapped grain is copied
   * by reference, no data moves; time proportional to the snapshot's mapped grains). The clone
   * is independent from then on: the snapshot and its volume may be deleted. A crash part way
   * is finished at the next start.
   */
  cloneSnapshot(
    volume: string,
    name: string,
    newVolume: string,
    options: { writeCache?: boolean } = {},
  ): Promise<PoolVolume> {
    return this.serial(async () => {
      this.checkOpen();
      const src = this.liveVolume(volume);
      const snap = this.liveSnapshot(src, name);
      if (!isValidName(newVolume)) {
        throw new Error(`volume name "${newVolume}" is not valid: use ${NAME_RULE}`);
      }
      if (this.registry.volumeByName(newVolume) !== undefined) {
        throw new Error(`volume "${newVolume}" already exists`);
      }
      const rec = this.registry.addVolume({
        name: newVolume,
        id: newId(),
        domain: src.domain,
        size: snap.size,
        blockSize: src.blockSize,
        writeCache: options.writeCache ?? true,
        cloning: { volume: src.number, snapshot: snap.generation },
      });
      await this.registry.save(); // durable before the store names the number (registry.ts)
      let r: { copied: number };
      try {
        r = await this.store.cloneVolume(
          { volume: src.number, snapshot: snap.generation },
          rec.number,
          src.domain,
        );
        await this.store.flush();
      } catch (error) {
        // Undo the half-made clone (a crash instead is finished at the next start).
        // If this fails too, the `deleting` mark makes the next start finish it.
        rec.deleting = true;
        try {
          await this.registry.save();
          await this.store.deleteVolume(rec.number);
          this.registry.removeVolume(newVolume);
          await this.registry.save();
        } catch (undo) {
          this.logger?.error({ err: undo, volume: newVolume }, "cannot undo a failed clone");
        }
        throw error;
      }
      rec.cloning = undefined;
      await this.registry.save();
      this.logger?.info(
        { volume, snapshot: name, clone: newVolume, grains: r.copied },
        "cloned snapshot",
      );
      return this.openVolume(rec);
    });
  }

  /**
   * A read-only volume showing the snapshot (the same object while it stays open): reads and
   * block status as of the snapshot, writes and unmaps rejected with WriteProtected, its own
   * stable `id`, the snapshot's capacity, the volume's block size. Named `volume@name`.
   */
  async openSnapshot(volume: string, name: string): Promise<PoolVolume> {
    this.checkOpen();
    const rec = this.liveVolume(volume);
    const snap = this.liveSnapshot(rec, name);
    const key = snapshotViewName(volume, name);
    let v = this.volumes.get(key);
    if (v === undefined || v.isClosed) {
      const view: VolumeRecord = {
        name: key,
        number: rec.number,
        id: snap.id,
        domain: rec.domain,
        size: snap.size,
        blockSize: rec.blockSize,
        writeCache: rec.writeCache,
      };
      v = new PoolVolume(this.ctx, view, snap.generation);
      this.volumes.set(key, v);
    }
    return v;
  }

  /**
   * Set (or clear, with undefined) the hook every pool volume calls before a write allocates:
   * see AllocationGuard. The server points it at the arbiter's capacity rules.
   */
  setAllocationGuard(guard: AllocationGuard | undefined): void {
    this.ctx.allocationGuard = guard;
  }

  private liveVolume(name: string): VolumeRecord {
    const rec = this.registry.volumeByName(name);
    if (rec === undefined || rec.deleting === true) {
      throw new Error(`volume "${name}" does not exist`);
    }
    return rec;
  }

  private liveSnapshot(rec: VolumeRecord, name: string): SnapshotRecord {
    const snap = rec.snapshots?.find((s) => s.name === name && s.deleting !== true);
    if (snap === undefined) throw new Error(`volume "${rec.name}" has no snapshot "${name}"`);
    return snap;
  }

  private snapshotInfo(rec: VolumeRecord, s: SnapshotRecord): SnapshotInfo {
    const live = (rec.snapshots ?? []).filter((x) => x.deleting !== true).length;
    const held = this.store.snapshotUsage(rec.number)?.logicalBytes ?? 0;
    return {
      volume: rec.name,
      name: s.name,
      id: s.id,
      generation: s.generation,
      createdAt: s.createdAt,
      sizeBytes: s.size,
      blockSize: rec.blockSize,
      volumeSnapshotsHeldBytes: held,
      heldBytes: live === 1 ? held : undefined,
    };
  }

  /** Add a device directory (usable at once: new containers go where there is most room). */
  addDevice(dir: string): Promise<void> {
    return this.serial(async () => {
      this.checkOpen();
      const rec = await this.devices.add(dir);
      this.logger?.info({ device: rec.path, number: rec.number }, "device added");
    });
  }

  // -------------------------------------------------------------------------------------------
  // Accounting

  usage(): PoolUsageReport {
    const { store, registry } = this;
    const provisioned = new Map<number, number>();
    const volumes: PoolUsageReport["volumes"][number][] = [];
    for (const v of registry.volumes) {
      if (v.deleting === true) continue;
      provisioned.set(v.domain, (provisioned.get(v.domain) ?? 0) + v.size);
      const u = store.volumeUsage(v.number);
      volumes.push({
        name: v.name,
        domain: registry.domain(v.domain)?.name ?? String(v.domain),
        blockSize: v.blockSize,
        writeCache: v.writeCache,
        ...figures(v.size, u),
      });
    }
    const domains = registry.data.domains.map((d) => ({
      name: d.name,
      id: d.id,
      ...figures(provisioned.get(d.number) ?? 0, store.domainUsage(d.number)),
    }));
    const p = store.poolUsage();
    let total = 0;
    for (const n of provisioned.values()) total += n;
    const open = registry.containers.filter((c) => c.state === "open").length;
    return {
      grainSize: GRAIN,
      pool: {
        ...figures(total, p),
        liveChunks: p.liveChunks,
        deadChunks: p.deadChunks,
        deadBytes: p.deadBytes,
        pendingJournalRecords: store.pendingJournalRecords,
      },
      domains,
      volumes,
      devices: this.devices.status(),
      containers: {
        open,
        sealed: registry.containers.length - open,
        total: registry.containers.length,
      },
    };
  }

  /**
   * What the arbiter's capacity rules need, cheaply (cached statfs figures, O(devices)): bytes
   * the pool's containers hold, bytes it can still take (free space above each device's
   * reserve), and their sum.
   */
  capacity(): { usedBytes: number; freeBytes: number; totalBytes: number } {
    const p = this.store.poolUsage();
    // Acknowledged grains the commit pipeline has not appended yet count as used already
    // (write-back.ts "Commit pipeline"): a burst of deferred writes cannot run past the space.
    const unsealed = this.writeBack.unsealedBytes;
    const usedBytes = p.physicalBytes + p.deadBytes + unsealed;
    let freeBytes = 0;
    for (const d of this.devices.status()) {
      if (d.online) freeBytes += Math.max(0, d.freeBytes - d.reserveBytes);
    }
    freeBytes = Math.max(0, freeBytes - unsealed);
    if (this.maxBytes !== undefined) {
      // The cap is on what the container files hold now, appends not yet in the journal's
      // figures included: a burst of writes cannot run past it.
      const onDisk = Math.max(usedBytes, this.chunks.containerBytes() + unsealed);
      freeBytes = Math.max(0, Math.min(freeBytes, this.maxBytes - onDisk));
      return { usedBytes: onDisk, freeBytes, totalBytes: onDisk + freeBytes };
    }
    return { usedBytes, freeBytes, totalBytes: usedBytes + freeBytes };
  }

  /** Change `maxBytes` (config reload); undefined lifts the cap. */
  setMaxBytes(maxBytes: number | undefined): void {
    this.maxBytes = maxBytes;
  }

  /** A new size for the read caches (config `pool.cache_size` on reload; undefined: default). */
  setGrainCacheBytes(bytes: number | undefined): void {
    this.chunks.reads.resizeGrainCache(bytes);
  }

  /**
   * The read caches (chunk-reader.ts `readCacheSplit`): bytes each may hold, grains held, and
   * grains served from them since they were made.
   */
  readCache(): ReadCacheStats {
    const { volumeCache: v, grainCache: c, locations: h } = this.chunks.reads;
    return {
      byVolume: { bytes: v.slots * GRAIN, grains: v.size, hits: v.hits, misses: v.misses },
      byChunk: { bytes: c.slots * GRAIN, grains: c.size, hits: c.hits },
      hints: { bytes: h.bytes, grains: h.size, hits: h.hits, misses: h.misses },
    };
  }

  /**
   * Logical bytes a volume holds (mapped grains), 0 for an unknown volume. Staged writes count
   * as soon as they resolve (the holes they map, as the allocation guard counted them: an upper
   * bound), so that capacity rules never fall behind the write-back stage.
   */
  volumeLogicalBytes(name: string): number {
    const v = this.registry.volumes.find((x) => x.name === name && x.deleting !== true);
    if (v === undefined) return 0;
    const mapped = this.store.volumeUsage(v.number)?.logicalBytes ?? 0;
    return mapped + this.writeBack.freshBytes(v.number);
  }

  // -------------------------------------------------------------------------------------------
  // Maintenance

  /** Check every record of every container; see scrub.ts. */
  scrub(onProgress?: (p: ScrubProgress) => void): Promise<ScrubReport> {
    this.checkOpen();
    return this.track(
      this.commitStaged().then(() =>
        scrubPool(
          {
            registry: this.registry,
            chunks: this.chunks,
            store: this.store,
            logger: this.logger,
            stopped: () => this.closing !== undefined,
          },
          onProgress,
        ),
      ),
    );
  }

  /** Rebuild the fingerprint indexes from the containers and recount references (rebuild.ts). */
  rebuild(): Promise<RebuildReport> {
    this.checkOpen();
    return this.track(
      this.commitStaged().then(() =>
        rebuildPool({
          registry: this.registry,
          store: this.store,
          containerPath: (rec) => this.chunks.containerPath(rec),
          logger: this.logger,
        }),
      ),
    );
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.maintenance.add(p);
    void p.finally(() => this.maintenance.delete(p)).catch(() => undefined);
    return p;
  }

  /** The metadata audit (mark and sweep, src/pool/meta/README.md) and missing container files. */
  check(): Promise<CheckReport> {
    this.checkOpen();
    return this.track(this.checkNow()); // close waits for it (the audit holds a read transaction)
  }

  private async checkNow(): Promise<CheckReport> {
    await this.commitStaged();
    // Between slices the event loop runs: I/O goes on while every map is walked.
    const audit = await this.store.auditYielding();
    const missingContainers: string[] = [];
    for (const c of this.registry.containers) {
      if (c.state === "deleting") continue;
      const path = this.chunks.containerPath(c);
      if (!(await fileExists(path))) missingContainers.push(path);
    }
    return {
      clean: audit.clean && missingContainers.length === 0,
      leaks: audit.leaks.count,
      orphans: audit.orphans.count,
      miscounts: audit.miscounts.count,
      damage: audit.damage.count,
      staleDead: audit.staleDead.count,
      drift: audit.drift.length,
      pendingRecords: audit.pendingRecords,
      mapEntries: audit.mapEntries,
      chunks: audit.chunks,
      missingContainers,
      audit,
    };
  }

  /**
   * Apply the journal, claim every container's dead chunks (MetaStore.reclaimDeadChunks: no
   * write deduplicates against them any more), and delete the containers left with no live chunk
   * (a fully dead current container is sealed first). Containers past `minDeadFraction` (default
   * 0.3) that still hold live chunks are compacted: their live chunks move to the domain's current
   * container, then the file goes (gc.ts); those skipped are in GcReport.notCompacted, with why.
   * Yields to I/O between containers and between batches of moved chunks.
   */
  gc(options: GcOptions = {}): Promise<GcReport> {
    this.checkOpen();
    // One GC at a time: a second call runs after the first (two would race for the same
    // containers, harmlessly but for nothing).
    // Staged writes first: GC then sees their references, and what is staged meanwhile is
    // protected by its holds and by ChunkMissing at its commit (write-back.ts).
    const run = this.gcTail.then(async () => {
      await this.commitStaged();
      return collectGarbage(
        {
          registry: this.registry,
          store: this.store,
          chunks: this.chunks,
          logger: this.logger,
          stopped: () => this.closing !== undefined,
          applyJournal: () => this.applyJournal(),
        },
        options,
      );
    });
    this.gcTail = run.catch(() => undefined);
    return this.track(run);
  }

  /**
   * Commit the staged writes, then apply every pending refcount journal record now (the applier
   * does it within 100 ms anyway): logical, physical, live and dead figures are exact
   * afterwards. Resolves with the records applied.
   */
  async applyJournal(): Promise<number> {
    await this.commitStaged(); // the staged writes' references first: figures exact afterwards
    // At least one call, even with nothing pending: the background applier's batch may have
    // counted its records off before it committed, and a transaction queued after it resolves
    // only once that commit is visible.
    let n = 0;
    for (;;) {
      const r = await this.store.applyJournal({ maxRecords: 16384 });
      n += r.records;
      if (r.records === 0 || this.store.pendingJournalRecords === 0) break;
      await turn();
    }
    return n;
  }

  /** Every write that resolved before this call is durable (staged writes are committed). */
  async flush(): Promise<void> {
    await this.writeBack.commit({ durable: true });
  }

  /**
   * Move every write staged before this call to the block maps and the index (write-back.ts),
   * without flushing the metadata store: what anything that reads the maps or the counters as a
   * whole (GC, audits, reports that must be exact) calls first. Rejects (WriteFault) when the
   * commit failed; the writes then stay staged.
   */
  async commitStaged(): Promise<void> {
    await this.writeBack.commit();
  }

  /**
   * Close every volume (waiting for their I/O), apply the journal, close the containers without
   * sealing them and close the metadata store.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.catalogTail;
      await Promise.allSettled([...this.maintenance]);
      for (const v of [...this.volumes.values()]) await v.close();
      await this.writeBack.close().catch((err: unknown) => {
        // Staged writes that could not be committed are lost, as in a crash (never acknowledged
        // as durable: a flush would have reported the same failure).
        this.logger?.error({ err }, "committing staged writes at close failed");
      });
      await this.applier.stop({ drain: true });
      await this.chunks.close();
      await this.chunks.jobs.close();
      this.devices.stop();
      await this.store.close();
      this.logger?.info({ dir: this.dir }, "pool closed");
    })();
    return this.closing;
  }
}

/** The name of a snapshot's read-only view (what a snapshot mapping's LUN shows). */
export function snapshotViewName(volume: string, snapshot: string): string {
  return `${volume}@${snapshot}`;
}

/**
 * At open, bring snapshots and clones to a clean state after a crash: finish the store's
 * interrupted snapshot deletions and the registry's (`deleting`), delete store snapshots the
 * registry never named (a crash between the two in createSnapshot), and finish interrupted
 * clones (or drop the clone when its source snapshot is gone).
 */
async function recoverSnapshots(
  registry: Registry,
  store: MetaStore,
  log: Logger | undefined,
): Promise<void> {
  let changed = false;
  for (const { volume, snapshot } of store.unfinishedSnapshotDeletions()) {
    await store.deleteSnapshot(volume, snapshot);
    log?.info({ volume, snapshot }, "finished an interrupted snapshot deletion");
  }
  for (const rec of registry.volumes) {
    if (rec.cloning === undefined) continue;
    const { volume, snapshot } = rec.cloning;
    if (store.listSnapshots(volume).includes(snapshot)) {
      await store.cloneVolume({ volume, snapshot }, rec.number, rec.domain);
      log?.info({ volume: rec.name }, "finished an interrupted clone");
      rec.cloning = undefined;
    } else {
      log?.warn({ volume: rec.name }, "dropping a clone whose source snapshot is gone");
      await store.deleteVolume(rec.number);
      registry.removeVolume(rec.name);
    }
    changed = true;
  }
  for (const rec of registry.volumes) {
    const live = store.listSnapshots(rec.number);
    const kept: SnapshotRecord[] = [];
    for (const s of rec.snapshots ?? []) {
      if (s.deleting !== true && live.includes(s.generation)) {
        kept.push(s);
        continue;
      }
      if (live.includes(s.generation)) await store.deleteSnapshot(rec.number, s.generation);
      log?.info(
        { volume: rec.name, snapshot: s.name },
        "finished an interrupted snapshot deletion",
      );
      changed = true;
    }
    for (const g of store.listSnapshots(rec.number)) {
      if (kept.some((s) => s.generation === g)) continue;
      await store.deleteSnapshot(rec.number, g);
      log?.info({ volume: rec.name, generation: g }, "deleted a snapshot the registry never named");
      changed = true;
    }
    if (changed || kept.length !== (rec.snapshots?.length ?? 0)) {
      rec.snapshots = kept.length > 0 ? kept : undefined;
    }
  }
  if (changed) {
    await store.flush();
    await registry.save();
  }
}

function figures(
  provisioned: number,
  u: VolumeUsage | DomainUsage | PoolUsage | undefined,
): UsageFigures {
  return usageFigures(
    provisioned,
    u?.logicalBytes ?? 0,
    u?.referencedBytes ?? 0,
    u?.physicalBytes ?? 0,
  );
}

/** The figures of a sum of volumes (or any scope) from its four byte counts: savings, ratios. */
export function usageFigures(
  provisioned: number,
  logical: number,
  referenced: number,
  physical: number,
): UsageFigures {
  return {
    provisionedBytes: provisioned,
    logicalBytes: logical,
    referencedBytes: referenced,
    physicalBytes: physical,
    savedByDedup: referenced - physical,
    savedByCompression: logical - referenced,
    dedupRatio: physical > 0 ? referenced / physical : 1,
    compressionRatio: referenced > 0 ? logical / referenced : 1,
  };
}

function fileExists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

function turn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}
