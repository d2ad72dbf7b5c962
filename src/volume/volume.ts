/**
 * The Volume contract: what the SCSI layer needs from whatever stores a logical unit's blocks.
 *
 * Everything below the SCSI layer (file backend, the deduplicated pool, access and arbiter
 * filters) implements this interface; filters wrap a Volume and forward to it (nbdkit-style).
 *
 * Units: addresses and lengths are in logical blocks of `blockSize` bytes.
 * Ownership: a Buffer passed to `write` belongs to the volume until the promise settles; the
 * caller must not reuse it before. A Buffer returned by `read` belongs to the caller.
 * Durability: `write` resolving means the data is visible to every later `read` on any channel;
 * it survives a crash only once a later `flush` resolves, or immediately when `fua` was set.
 * Errors: implementations reject with `StorageError` (see ./errors.ts); anything else is treated
 * as an internal failure by the layer above.
 */
export interface Volume {
  /** Stable identity of the volume (persists across restarts); used for VPD designators. */
  readonly id: string;
  /** Human name (the catalog name). */
  readonly name: string;
  /** Logical block size in bytes: 512 or 4096. */
  readonly blockSize: number;
  /** Number of logical blocks (capacity). May grow while the volume is open. */
  blockCount(): number;
  read(lba: number, blocks: number): Promise<Buffer>;
  write(lba: number, data: Buffer, options?: WriteOptions): Promise<void>;
  /** Make every write that resolved before this call durable. */
  flush(): Promise<void>;
  /** Deallocate blocks: afterwards they read as zeros and cost no space. */
  unmap(lba: number, blocks: number): Promise<void>;
  /**
   * Provisioning status of the extent starting at `lba`: whether it is mapped (holds data) or
   * deallocated, and how many consecutive blocks share that status (at least 1).
   */
  blockStatus(lba: number): Promise<BlockStatus>;
  /** Release resources. The volume is unusable afterwards. */
  close(): Promise<void>;
  /**
   * Optional: copy `blocks` blocks of `source`, starting at `sourceLba`, to this volume at
   * `lba`, by reference: the blocks come to share the source's stored chunks and no data moves
   * through the caller (EXTENDED COPY, clones). Both volumes have the same block size (the
   * caller checks). `source` may be this very volume; overlapping ranges copy as if the source
   * range had been read whole before any block was written.
   *
   * Resolves `true` once the copy is done, with a write's visibility and durability (durable at
   * once with `fua`). Resolves `false`, having changed nothing, when this volume cannot copy from
   * `source` by reference (another backend, another dedup domain, a filter in between): the
   * caller then copies with `read` + `write`. Rejects as `write` does (OutOfRange,
   * WriteProtected, PoolFull, QuotaExceeded, ...), or as `read` does for the source. The
   * caller uses it only when both volumes provide it. Filters that cannot account or guard
   * such a copy must not forward it, so that the copy falls back to their `read` and `write`.
   */
  copyFrom?(
    source: Volume,
    sourceLba: number,
    lba: number,
    blocks: number,
    options?: WriteOptions,
  ): Promise<boolean>;
}

export interface WriteOptions {
  /** Force Unit Access: the write is durable when the promise resolves. */
  readonly fua?: boolean;
}

export interface BlockStatus {
  readonly mapped: boolean;
  readonly blocks: number;
}
