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
  type ChunkEntry,
  CONTAINER_FIELDS,
  type ContainerCounters,
  DB_NAMES,
  DOMAIN_FIELDS,
  type DomainCounters,
  decodeChunk,
  decodeContainer,
  decodeDomain,
  encodeContainer,
  encodeDomain,
  FINGERPRINT_BYTES,
  fpKey,
  u32Key,
  zeroContainer,
  zeroDomain,
} from "./codec.js";
import { MetaError, MetaErrorCode } from "./errors.js";

export type BinDb = Database<Buffer, Buffer>;

/**
 * Reads one domain's `fp` entries without allocating anything but the decoded entry: one key
 * buffer reused for every fingerprint, and lmdb-js' reused value buffer (`getBinaryFast`),
 * decoded before the next read. The hot paths (dedup lookups, map writes, journal apply) read
 * an entry per grain. Reads see what `get` would (the write transaction inside a callback).
 */
export class FpReader {
  private readonly key: Buffer;
  private readonly at: number;

  constructor(
    private readonly db: BinDb,
    readonly domainId: number,
  ) {
    this.key = fpKey(domainId, new Uint8Array(FINGERPRINT_BYTES));
    this.at = this.key.length - FINGERPRINT_BYTES;
  }

  /** The entry of a fingerprint (16 bytes or more: the first 16 are used), if indexed. */
  get(fingerprint: Uint8Array): ChunkEntry | undefined {
    return this.getAt(fingerprint, 0);
  }

  /** `get` of the fingerprint at fingerprints[from..] (no view made for it). */
  getAt(fingerprints: Uint8Array, from: number): ChunkEntry | undefined {
    const key = this.key;
    for (let i = 0, at = this.at; i < FINGERPRINT_BYTES; i++) key[at + i] = fingerprints[from + i]!;
    const raw = this.db.getBinaryFast(key);
    return raw === undefined ? undefined : decodeChunk(raw);
  }
}

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

/**
 * lmdb-js 3.5.6 keeps LMDB's free-page list in memory between commits and rewrites only the part
 * a commit changed (mdb.c, mdb_freelist_save). When the commit's own reservations hand overflow
 * pages back to that list, the changed range is not widened, the first record stays unwritten,
 * and the check that follows reads an uninitialised `data.mv_size` before it tests for
 * MDB_NOTFOUND: on a fresh thread stack that value is 0 and the commit fails with "MDB_BAD_TXN:
 * reserved freelist had a data entry with zero-size" (the first commits after a start: about 1
 * in 400 SIGKILL restarts of bench/crash-loop; 6 in 3000 restarts of a standalone reproduction).
 * With `maxFreeSpaceToRetain: 0` the list is dropped after every commit, as upstream LMDB does,
 * and every commit reloads and rewrites it whole: 0 failures in 3000 restarts, and 0 in 36 742
 * commits of a replay harness that fails every occurrence (21 in 18 158 without it). Read by
 * lmdb-js' native open, absent from its typings, hence a spread.
 */
const LMDB_FREELIST_OPTIONS: Record<string, unknown> = { maxFreeSpaceToRetain: 0 };

/** How lmdb-js rejects the writes of a failed commit: `commitError` rejects with the LMDB error. */
type CommitFailure = Error & { commitError: Promise<unknown> };

function isCommitFailure(err: unknown): err is CommitFailure {
  const c = (err as { commitError?: { then?: unknown } } | null)?.commitError;
  return err instanceof Error && typeof c?.then === "function";
}

let commitGuardInstalled = false;

/**
 * A failed commit must not kill the process: lmdb-js rejects, besides the writes' own promises,
 * one promise per failed commit that no caller holds (the start of its event-turn batch, whose
 * result it ignores), and Node ends the process on that unhandled rejection. This listener
 * swallows exactly those (lmdb-js has printed the cause); any other unhandled rejection is
 * rethrown and ends the process as before.
 */
function installCommitFailureGuard(): void {
  if (commitGuardInstalled) return;
  commitGuardInstalled = true;
  process.on("unhandledRejection", (reason) => {
    if (!isCommitFailure(reason)) throw reason;
    reason.commitError.catch(() => undefined);
  });
}

/** lmdb-js' "Commit failed" as MetaError(CommitFailed), with the LMDB error as its cause. */
export async function commitFailed(err: unknown): Promise<never> {
  if (!isCommitFailure(err)) throw err;
  let cause: unknown;
  try {
    await err.commitError;
  } catch (e) {
    cause = e;
  }
  const detail = cause instanceof Error ? cause.message.trim() : String(cause);
  throw new MetaError(MetaErrorCode.CommitFailed, `metadata commit failed: ${detail}`, undefined, {
    cause,
  });
}

export function openDbs(options: OpenEnvOptions): MetaDbs {
  installCommitFailureGuard();
  const root = open<Buffer, Buffer>({
    path: options.path,
    maxDbs: 16,
    encoding: "binary",
    keyEncoding: "binary",
    // Classic synchronous commits: the write path orders container fdatasyncs before the
    // commits that name them (src/pool/README.md, "Write path").
    overlappingSync: false,
    ...LMDB_FREELIST_OPTIONS,
    ...(options.noSync ? { noSync: true } : {}),
    // Address space, not memory. lmdb-js otherwise starts with a 128 KiB map and doubles it as
    // the file grows, keeping every earlier mapping: the pages touched through each of them count
    // in the RSS again (10 mappings, 635 MiB of RSS for a 263 MiB data.mdb after 5 GiB written,
    // bench/pool-vs-tgt.sh BIG=1). Beyond this size it grows as before.
    mapSize: options.mapSize ?? DEFAULT_MAP_SIZE,
  });
  // Every mutation goes through root.childTransaction (store, snapshots, copies, relocation):
  // a failed commit becomes a MetaError the pool maps to a failed command. Inside a write
  // transaction it returns the callback's value synchronously: that is left alone.
  const childTransaction = root.childTransaction.bind(root);
  root.childTransaction = ((fn: () => unknown) => {
    const r: unknown = childTransaction(fn);
    return typeof (r as { then?: unknown } | null)?.then === "function"
      ? Promise.resolve(r).catch(commitFailed)
      : r;
  }) as typeof root.childTransaction;
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
  /**
   * Map log replay: map transactions append no journal records (the rebuild recounts every
   * reference from the maps at the end).
   */
  suppressed?: boolean;
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
