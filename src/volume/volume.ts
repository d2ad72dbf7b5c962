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
 * as an internal failure by the layer above, except an abort (below).
 * Aborts: every operation takes an optional trailing options object with the command's
 * `signal` (CommandOptions), aborted when the command is (TMF ABORT TASK, ABORT TASK SET, CLEAR
 * TASK SET, a reset, the session going away). A volume or filter that has not started the
 * operation when it aborts may drop it and reject with an error named "AbortError"
 * (`isAbortError`), having changed nothing; once started, an operation runs to its end as if
 * there were no signal. Backends may ignore the signal altogether; filters pass the options on.
 */
export interface Volume {
  /** Stable identity of the volume (persists across restarts); used for VPD designators. */
  readonly id: string;
  /** Human name (the catalog name). */
  readonly name: string;
  /** Logical block size in bytes: 512 or 4096. */
  readonly blockSize: number;
  /**
   * The smallest unit the backend writes without a read-modify-write (READ CAPACITY (16)'s
   * physical block). Unset means the logical block size: the file backend writes any block.
   * The deduplicating pool will report its grain. Filters must forward it.
   */
  readonly physicalBlockSize?: number;
  /** Number of logical blocks (capacity). May grow while the volume is open. */
  blockCount(): number;
  read(lba: number, blocks: number, options?: CommandOptions): Promise<Buffer>;
  write(lba: number, data: Buffer, options?: WriteOptions): Promise<void>;
  /** Make every write that resolved before this call durable. */
  flush(options?: CommandOptions): Promise<void>;
  /** Deallocate blocks: afterwards they read as zeros and cost no space. */
  unmap(lba: number, blocks: number, options?: CommandOptions): Promise<void>;
  /**
   * Provisioning status of the extent starting at `lba`: whether it is mapped (holds data) or
   * deallocated, and how many consecutive blocks share that status (at least 1).
   */
  blockStatus(lba: number, options?: CommandOptions): Promise<BlockStatus>;
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
  /**
   * Optional, filters only: the volume this filter forwards its reads to. A backend that copies
   * by reference (`copyFrom`) looks through the source's filters with it: a copy by reference
   * reads no data, so the source channel's read-side rules (counters, rate limits) have nothing
   * to act on, while the destination's filters still account and guard the copy.
   */
  unwrap?(): Volume;
  /**
   * Optional: the largest `writeAtomic` this volume accepts, in blocks. 0 or undefined: the
   * volume makes no atomicity promise beyond what `write` guarantees (nothing, for a multi-block
   * write: a crash may leave any mix of old and new blocks), and `writeAtomic` must not be called.
   * A constant for the life of the volume object.
   */
  readonly atomicWriteMaxBlocks?: number;
  /**
   * Optional, present exactly when `atomicWriteMaxBlocks > 0`: write `data` (whole blocks, at
   * most `atomicWriteMaxBlocks` of them, any `lba`, no alignment) all or nothing.
   *
   * - Atomicity across a failure: whatever happens before the promise resolves (a crash,
   *   kill -9, power loss, an I/O error), the blocks hold afterwards, and after any restart,
   *   either all of their previous data or all of `data`, never a mix. A rejection does not say
   *   which: the write may or may not have taken effect, but not partly.
   * - Visibility: once it resolves, every later `read` on any channel returns `data`.
   * - Durability: as `write`: durable when it resolves if `fua` is set, otherwise once a later
   *   `flush` resolves. An implementation may make it durable earlier (the file backend makes
   *   every atomic write durable before it resolves; atomicity holds either way).
   * - Concurrency: the volume does not order it against overlapping operations that run at the
   *   same time (as for `write`); the caller keeps overlapping commands out while it runs (the
   *   SCSI layer's io-gate). Operations that start after it resolved are ordered after it, across
   *   a crash too: a later, acknowledged write to the same blocks is never undone by recovery.
   * - Errors: rejects as `write` does; a buffer longer than `atomicWriteMaxBlocks` blocks, or
   *   not a whole number of blocks, is a caller bug (StorageError Internal).
   * Ownership of `data` is as for `write`.
   */
  writeAtomic?(lba: number, data: Buffer, options?: WriteOptions): Promise<void>;
  /**
   * Optional, filters only (the arbiter's): reserve the turn of a write of `bytes` whose data
   * has not arrived yet, so that the transport asks for the data (iSCSI R2T) only once the write
   * may go. Resolves, when the write may go, with a WriteReservation; rejects with an
   * "AbortError" when `signal` aborts first (nothing is reserved then). The reservation belongs
   * to `signal`: the first `write`, `writeAtomic` or `copyFrom` on this volume called with that
   * signal goes at once, within it. The caller calls `started()` once the data is in and the
   * command handed on, and `release()` when the command ends (both always safe); the signal
   * aborting releases it too. Filters that cannot pass the reservation on must not forward it.
   */
  reserveWrite?(bytes: number, signal: CommandSignal): Promise<WriteReservation>;
}

/** A write's turn, reserved before its data arrived (Volume.reserveWrite). */
export interface WriteReservation {
  /**
   * The data is in and the command was handed on. If its write has not reached the reserving
   * filter yet (it waits in the layer above, e.g. behind an overlapping atomic command), the
   * filter gives back the share it held for it, so that nothing waits on a write that waits;
   * the write still goes at once when it comes.
   */
  started(): void;
  /** The command ended: give back whatever the write did not use. Idempotent. */
  release(): void;
}

/**
 * A command's abort signal, as much of an AbortSignal as operations use: a real AbortSignal is
 * one, and so is the iSCSI connection's per-task signal (src/iscsi/task-signal.ts), which costs
 * a few nanoseconds to create where an AbortController costs microseconds on Node 20 (measured
 * 6-8 µs with its signal, against ~24 µs of server CPU for a whole 4 KiB read).
 * Listeners are called once, when it aborts; none is called for a signal already aborted.
 */
export interface CommandSignal {
  readonly aborted: boolean;
  /** Why it aborted (the abort's argument), once aborted. */
  readonly reason?: unknown;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}

/** Per-command options every operation takes (see "Aborts" at the top). */
export interface CommandOptions {
  /** Aborted when the command is: a filter may then drop the operation if it has not started. */
  readonly signal?: CommandSignal;
}

export interface WriteOptions extends CommandOptions {
  /** Force Unit Access: the write is durable when the promise resolves. */
  readonly fua?: boolean;
}

export interface BlockStatus {
  readonly mapped: boolean;
  readonly blocks: number;
}
