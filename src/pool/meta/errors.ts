/**
 * Errors of the pool metadata. Stable codes; the pool layer above turns them into StorageError
 * (src/volume/errors.ts) or retries, as each code says.
 */
export const MetaErrorCode = {
  /**
   * A map update names a fingerprint the domain's index does not hold (and no location to insert
   * it was given), typically because GC reclaimed the chunk between the writer's lookup and its
   * map update. Nothing was changed: the writer stores the chunk again and retries.
   */
  ChunkMissing: "CHUNK_MISSING",
  /** The volume number is not registered (createVolume). */
  UnknownVolume: "UNKNOWN_VOLUME",
  /** createVolume for a number that exists (with another domain). */
  VolumeExists: "VOLUME_EXISTS",
  /**
   * The volume has no such snapshot, or it is being deleted (a deletion interrupted by a crash
   * is finished by calling deleteSnapshot again: see unfinishedSnapshotDeletions).
   */
  UnknownSnapshot: "UNKNOWN_SNAPSHOT",
  /**
   * A map copy (copyGrains, cloneVolume) between volumes of different dedup domains: a domain's
   * fingerprints mean nothing in another's index, so the data has to be read and written.
   */
  CrossDomain: "CROSS_DOMAIN",
  /** A caller bug: an argument outside its range (grain, fingerprint length, location field). */
  InvalidArgument: "INVALID_ARGUMENT",
  /** The store was opened with a grain size or format it was not created with. */
  Incompatible: "INCOMPATIBLE",
  /** The store is closed. */
  Closed: "CLOSED",
  /**
   * The LMDB commit that carried the mutation failed (lmdb-js "Commit failed"): nothing of it,
   * nor of the other mutations in that commit, was applied; the store stays usable and the next
   * commit runs normally. The request fails; nothing of it was acknowledged.
   */
  CommitFailed: "COMMIT_FAILED",
  /** The map log (maplog.ts) is damaged before its last segment, or has a gap. */
  MapLogCorrupt: "MAP_LOG_CORRUPT",
  /**
   * The maps cannot be rebuilt from the map log (no checkpoint yet), or the store and the map log
   * disagree in a way only `sanmux pool rebuild` can settle.
   */
  MapLogUnusable: "MAP_LOG_UNUSABLE",
} as const;
export type MetaErrorCode = (typeof MetaErrorCode)[keyof typeof MetaErrorCode];

export class MetaError extends Error {
  override readonly name = "MetaError";
  constructor(
    readonly code: MetaErrorCode,
    message: string,
    /**
     * For ChunkMissing: the fingerprints (hex) that were missing, as the caller gave them to
     * writeGrains (32 or 16 bytes); 16 bytes when they came from a map (a copy).
     */
    readonly fingerprints?: readonly string[],
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
