/**
 * `sanmux pool rebuild`: rebuild the whole metadata store from the containers and the map log
 * (rebuildPoolMaps, run by Pool.open with `rebuildMaps`):
 * 1. every domain's fingerprint index from its containers alone (MetaStore.rebuildIndex, meta/
 *    README.md "Audit, repair, rebuild"). Containers are self-describing (FORMAT.md §3: each
 *    record header names its fingerprint and sizes, CRC-checked), so no key is needed;
 * 2. the block maps and snapshots from the map log: the newest checkpoint, then every logged map
 *    transaction after it (MetaStore.replayMapLog, meta/README.md "Map log");
 * 3. every reference and counter recounted from the maps (repair), then an audit: a map entry
 *    whose chunk no container holds is reported as damage.
 * The store is a new one: a present `meta/` was moved aside by Pool.open.
 *
 * rebuildPool alone (Pool.rebuild) is step 1 plus the recount, on the maps the store holds.
 *
 * Run it on a stopped pool (the CLI holds the data directory lock): it assumes no I/O.
 */
import type { Logger } from "pino";
import { scanContainer } from "./container/index.js";
import type {
  CheckpointResult,
  ContainerRecord as IndexRecord,
  MetaStore,
  ReplayResult,
} from "./meta/index.js";
import type { ContainerRecord, Registry } from "./registry.js";

export interface RebuildContext {
  readonly registry: Registry;
  readonly store: MetaStore;
  readonly containerPath: (rec: ContainerRecord) => string;
  readonly logger: Logger | undefined;
}

export interface DomainRebuild {
  readonly domain: string;
  readonly containers: number;
  /** Records found in the containers (intact ones: CRC-checked headers and payloads). */
  readonly records: number;
  /** Index entries created. */
  readonly chunks: number;
  /** Extra copies of a fingerprint (counted as dead bytes of their container). */
  readonly duplicates: number;
  /** Damaged ranges the scan skipped, and torn tails. */
  readonly damaged: number;
  /** References recounted from the block maps by the repair that ends the rebuild. */
  readonly repaired: unknown;
}

export interface RebuildReport {
  readonly domains: DomainRebuild[];
  readonly durationMs: number;
}

export async function rebuildPool(ctx: RebuildContext): Promise<RebuildReport> {
  const t0 = Date.now();
  const domains: DomainRebuild[] = [];
  for (const d of ctx.registry.data.domains) {
    const containers = ctx.registry.containers.filter(
      (c) => c.domain === d.number && c.state !== "deleting",
    );
    let records = 0;
    let damaged = 0;
    async function* scanned(): AsyncGenerator<IndexRecord> {
      for (const c of containers) {
        const scan = await scanContainer(ctx.containerPath(c));
        damaged += scan.damage.length + (scan.tail === undefined ? 0 : 1);
        for (const r of scan.records) {
          records++;
          yield {
            fingerprint: r.fingerprint,
            containerId: c.number,
            offset: r.offset,
            storedLength: r.storedLength,
            logicalLength: r.logicalLength,
          };
        }
      }
    }
    const result = await ctx.store.rebuildIndex(d.number, scanned());
    const report: DomainRebuild = {
      domain: d.name,
      containers: containers.length,
      records,
      chunks: result.chunks,
      duplicates: result.duplicates,
      damaged,
      repaired: result.repair,
    };
    ctx.logger?.info(report, "domain index rebuilt from its containers");
    domains.push(report);
  }
  return { domains, durationMs: Date.now() - t0 };
}

export interface MapRebuildReport {
  /** Where the previous `meta/` went (undefined: there was none). */
  readonly movedAside: string | undefined;
  /** Step 1: each domain's index from its containers (what rebuildPool reports). */
  readonly domains: DomainRebuild[];
  /** Step 2: the map log replay. */
  readonly maps: Omit<ReplayResult, "failures"> & { failures: ReplayResult["failures"] };
  readonly volumes: number;
  /** Head grains mapped, and old versions kept for snapshots, after the rebuild. */
  readonly grains: number;
  readonly oldVersions: number;
  readonly snapshots: number;
  /** Step 3: the audit after the recount. */
  readonly audit: {
    readonly clean: boolean;
    readonly damage: number;
    readonly leaks: number;
    readonly orphans: number;
    readonly miscounts: number;
    readonly drift: number;
    readonly oldVersions: number;
  };
  /** A new checkpoint of the rebuilt maps (none when a record failed to replay). */
  readonly checkpoint: Pick<CheckpointResult, "seq" | "bytes" | "entries"> | undefined;
  readonly durationMs: number;
}

export async function rebuildPoolMaps(
  ctx: RebuildContext & { readonly movedAside: string | undefined },
): Promise<MapRebuildReport> {
  const t0 = Date.now();
  const { store, logger } = ctx;
  const index = await rebuildPool(ctx);
  const maps = await store.replayMapLog();
  logger?.info(
    {
      checkpointSeq: maps.checkpointSeq,
      checkpointEntries: maps.checkpointEntries,
      records: maps.records,
      lastSeq: maps.lastSeq,
      failed: maps.failed,
    },
    "block maps replayed from the map log",
  );
  if (maps.failed > 0) {
    logger?.error({ failures: maps.failures }, "map log records that failed to replay");
  }
  await store.repair();
  const audit = store.audit();
  let grains = 0;
  let oldVersions = 0;
  let snapshots = 0;
  const volumes = store.listVolumes();
  for (const { volume } of volumes) {
    grains += store.volumeUsage(volume)?.mappedGrains ?? 0;
    oldVersions += store.snapshotUsage(volume)?.oldVersions ?? 0;
    snapshots += store.listSnapshots(volume).length;
  }
  const checkpoint = maps.failed === 0 ? await store.checkpointNow() : undefined;
  const report: MapRebuildReport = {
    movedAside: ctx.movedAside,
    domains: index.domains,
    maps,
    volumes: volumes.length,
    grains,
    oldVersions,
    snapshots,
    audit: {
      clean: audit.clean,
      damage: audit.damage.count,
      leaks: audit.leaks.count,
      orphans: audit.orphans.count,
      miscounts: audit.miscounts.count,
      drift: audit.drift.length,
      oldVersions: audit.oldVersions.count,
    },
    checkpoint: checkpoint
      ? { seq: checkpoint.seq, bytes: checkpoint.bytes, entries: checkpoint.entries }
      : undefined,
    durationMs: Date.now() - t0,
  };
  (audit.clean ? logger?.info.bind(logger) : logger?.error.bind(logger))?.(
    { ...report, domains: undefined },
    "metadata store rebuilt from the containers and the map log",
  );
  return report;
}
