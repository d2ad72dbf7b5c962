/**
 * The LMDB environment of the pool metadata and small helpers shared by the store, the journal
 * apply, the audit and the rebuild. Internal to src/pool/meta: everything outside goes through
 * MetaStore.
 *
 * Reads inside a write transaction callback see that transaction's writes (lmdb-js routes them
 * to the write transaction); reads elsewhere see the last committed state, or the snapshot of an
 * explicit read transaction passed as `ro`.
 */
import { type Database, open, type RootDatabase, type Transaction } from "lmdb";
import {
  CONTAINER_FIELDS,
  type ContainerCounters,
  DB_NAMES,
  DOMAIN_FIELDS,
  type DomainCounters,
  decodeContainer,
  decodeDomain,
  encodeContainer,
  encodeDomain,
  u32Key,
  zeroContainer,
  zeroDomain,
} from "./codec.js";

export type BinDb = Database<Buffer, Buffer>;

export interface MetaDbs {
  readonly root: RootDatabase<Buffer, Buffer>;
  readonly fp: BinDb;
  readonly map: BinDb;
  readonly journal: BinDb;
  readonly dead: BinDb;
  readonly volumes: BinDb;
  readonly domains: BinDb;
  readonly containers: BinDb;
  readonly meta: BinDb;
  /** Old versions of map entries that snapshots still see. */
  readonly mapold: BinDb;
  /** The old versions again, by the generation that ended them (what deleting a snapshot walks). */
  readonly mapdeath: BinDb;
  readonly snapshots: BinDb;
}

export interface OpenEnvOptions {
  readonly path: string;
  /** Skip fsync (benchmarks and tests of logic only: a power loss may corrupt the store). */
  readonly noSync?: boolean;
  /** Initial map size in bytes (LMDB grows it as needed). Default 256 GiB (address space). */
  readonly mapSize?: number;
}

/** Initial map size: 256 GiB of address space (metadata of ≈ 1 billion unique grains). */
const DEFAULT_MAP_SIZE = 256 * 1024 ** 3;

export function openDbs(options: OpenEnvOptions): MetaDbs {
  const root = open<Buffer, Buffer>({
    path: options.path,
    maxDbs: 16,
    encoding: "binary",
    keyEncoding: "binary",
    // lmdb-js' overlapping sync (its default on Linux) failed a commit with "MDB_BAD_TXN:
    // reserved freelist had a data entry with zero-size" about once in 130 restarts after
    // SIGKILL in bench/crash-loop (3 in 400), and the process died of the rejection; with
    // classic synchronous commits, 250 kill/restart iterations ran clean (seed 777).
    overlappingSync: false,
    ...(options.noSync ? { noSync: true } : {}),
    // Address space, not memory. lmdb-js otherwise starts with a 128 KiB map and doubles it as
    // the file grows, keeping every earlier mapping: the pages touched through each of them count
    // in the RSS again (10 mappings, 635 MiB of RSS for a 263 MiB data.mdb after 5 GiB written,
    // bench/pool-vs-tgt.sh BIG=1). Beyond this size it grows as before.
    mapSize: options.mapSize ?? DEFAULT_MAP_SIZE,
  });
  const sub = (name: string): BinDb =>
    root.openDB<Buffer, Buffer>({ name, encoding: "binary", keyEncoding: "binary" });
  return {
    root,
    fp: sub(DB_NAMES.fingerprints),
    map: sub(DB_NAMES.maps),
    journal: sub(DB_NAMES.journal),
    dead: sub(DB_NAMES.dead),
    volumes: sub(DB_NAMES.volumes),
    domains: sub(DB_NAMES.domains),
    containers: sub(DB_NAMES.containers),
    meta: sub(DB_NAMES.meta),
    mapold: sub(DB_NAMES.oldVersions),
    mapdeath: sub(DB_NAMES.deathList),
    snapshots: sub(DB_NAMES.snapshots),
  };
}

/** Journal bookkeeping shared by every mutation that appends or applies records. */
export interface JournalState {
  nextSeq: number;
  /** Records in the journal (exact unless a commit failed after its callback ran; a hint). */
  pending: number;
}

/** Read options for an explicit snapshot, or undefined for the default (current) view. */
export type ReadOpts = { transaction: Transaction } | undefined;

export function readDomain(dbs: MetaDbs, domainId: number, ro?: ReadOpts): DomainCounters {
  const v = dbs.domains.get(u32Key(domainId), ro);
  return v ? decodeDomain(v) : zeroDomain();
}

export function readContainer(
  dbs: MetaDbs,
  containerId: number,
  ro?: ReadOpts,
): ContainerCounters | undefined {
  const v = dbs.containers.get(u32Key(containerId), ro);
  return v ? decodeContainer(v) : undefined;
}

/**
 * Counter changes gathered during one write transaction and written once at its end, so that a
 * batch touching thousands of chunks rewrites each counter record once.
 */
export class CounterDeltas {
  private readonly domains = new Map<number, DomainCounters>();
  private readonly containers = new Map<number, ContainerCounters>();

  domain(domainId: number): DomainCounters {
    let d = this.domains.get(domainId);
    if (!d) {
      d = zeroDomain();
      this.domains.set(domainId, d);
    }
    return d;
  }

  container(containerId: number): ContainerCounters {
    let c = this.containers.get(containerId);
    if (!c) {
      c = zeroContainer();
      this.containers.set(containerId, c);
    }
    return c;
  }

  /** Adds the gathered deltas to the stored records. Call inside the write transaction. */
  writeTo(dbs: MetaDbs): void {
    for (const [id, delta] of this.domains) {
      if (DOMAIN_FIELDS.every((f) => delta[f] === 0)) continue;
      const cur = readDomain(dbs, id);
      for (const f of DOMAIN_FIELDS) cur[f] += delta[f];
      dbs.domains.putSync(u32Key(id), encodeDomain(cur));
    }
    for (const [id, delta] of this.containers) {
      if (CONTAINER_FIELDS.every((f) => delta[f] === 0)) continue;
      const cur = readContainer(dbs, id) ?? zeroContainer();
      for (const f of CONTAINER_FIELDS) cur[f] += delta[f];
      dbs.containers.putSync(u32Key(id), encodeContainer(cur));
    }
    this.domains.clear();
    this.containers.clear();
  }
}
