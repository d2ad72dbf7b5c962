/**
 * The public shapes of MetaStore's arguments and results (re-exported by store.ts and index.ts).
 */
import type { ChunkEntry, ChunkLocation, ContainerCounters } from "./codec.js";

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
  /**
   * The entry `lookupChunk` returned for `fingerprint`, with `indexToken`: what
   * `MetaStore.indexToken()` returned in the same synchronous turn, before that lookup. While
   * no index entry was removed or moved since (the token still current when the map
   * transaction runs), the transaction uses this entry instead of reading the index again; else
   * it reads it as always (and rejects with ChunkMissing if it is gone). Ignored with `chunk`.
   * The pool also keeps it as the grain's location hint once the write lands
   * (src/pool/location-hints.ts); without a token it is used for that alone.
   */
  readonly indexed?: ChunkEntry;
  readonly indexToken?: number;
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

/** Reads as of a snapshot: omit `snapshot` to read the head (the volume as it is now). */
export interface ReadOptions {
  /** A live snapshot of the volume (createSnapshot's number); UnknownSnapshot otherwise. */
  readonly snapshot?: number;
}

/**
 * What a volume's snapshots hold beyond its head: the old versions (map entries that only
 * snapshots see, each holding one reference). Like VolumeUsage, referenced bytes count shared
 * chunks in full and physical bytes are the attributed share of the domain's physical bytes, so
 * that head + snapshots over a domain's volumes add up to the domain.
 */
export interface SnapshotUsage {
  readonly volume: number;
  readonly domainId: number;
  /** Live snapshots. */
  readonly snapshots: number;
  /** Old versions: grains overwritten or unmapped since a snapshot that still sees them. */
  readonly oldVersions: number;
  /** oldVersions × grain size. */
  readonly logicalBytes: number;
  /** Stored bytes of the chunks old versions point at (shared chunks in full). */
  readonly referencedBytes: number;
  /** Attributed share of the domain's physical bytes. */
  readonly physicalBytes: number;
}

/** The old versions of a whole domain (see SnapshotUsage). */
export interface DomainSnapshotUsage {
  readonly domainId: number;
  readonly oldVersions: number;
  readonly logicalBytes: number;
  readonly referencedBytes: number;
  /** Attributed share of the domain's physical bytes (referenced × physical / all referenced). */
  readonly physicalBytes: number;
}
