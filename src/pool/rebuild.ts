/**
 * `sanmux pool rebuild`: rebuild every domain's fingerprint index from its containers alone, then
 * recount every reference from the block maps (MetaStore.rebuildIndex, meta/README.md "Audit,
 * repair, rebuild"). Containers are self-describing (FORMAT.md §3: each record header names its
 * fingerprint and sizes, CRC-checked), so no key is needed to read them.
 *
 * What it cannot rebuild: the block maps (which grain holds which fingerprint) live only in the
 * LMDB environment, whose own copy-on-write commits keep them consistent across crashes; a lost
 * or damaged `meta/` directory loses the volumes' layout even though every chunk survives.
 *
 * Run it on a stopped pool (the CLI holds the data directory lock): it assumes no I/O.
 */
import type { Logger } from "pino";
import { scanContainer } from "./container/index.js";
import type { ContainerRecord as IndexRecord, MetaStore } from "./meta/index.js";
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
