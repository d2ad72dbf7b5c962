/**
 * Arbiter filter: routes a channel's volume commands through the server's I/O scheduler
 * (./scheduler.ts), which applies the agent's and the volume's speed limits and the agents' fair
 * shares, and records each command in the demand series of its agent and channel.
 *
 * Contract:
 * - Each call goes to the scheduler with its kind and data length, and is forwarded unchanged to
 *   the inner volume when the scheduler lets it go; the inner outcome is passed back unchanged.
 *   `read`: kind read, `blocks * blockSize` bytes. `write`, `writeAtomic`: kind write, the data
 *   length. `copyFrom` (a copy by reference into this volume): kind write, `blocks * blockSize`
 *   bytes, so that an agent's write limit holds whether the copy moves data or not. `flush`,
 *   `unmap`, `blockStatus`: kind other (no limit applies; they take a share under contention).
 * - A command may wait (for a rate limit, or for a share when the server is busy): it is never
 *   failed for that. It fails without reaching the inner volume only when it is aborted while it
 *   waits (ArbiterAbortError: see below) or when the filter or the scheduler closes first
 *   (StorageError NotReady).
 * - The optional members exist exactly when the inner volume has them: `atomicWriteMaxBlocks`
 *   (copied once: it is constant) and `writeAtomic`, `copyFrom`; `physicalBlockSize` is
 *   forwarded. `copyFrom` passes its `source` on unchanged (as the counting filter does): the
 *   copy is charged to this, the destination, channel.
 * - Filters do not own the volume below them: `close()` marks this filter closed (later calls
 *   reject with NotReady) and aborts its waiting commands, and never closes the inner volume.
 *
 * - `reserveWrite(bytes, signal)` (Volume.reserveWrite): an admission of kind write for a write
 *   whose data has not arrived (IoScheduler "Writes whose data has not arrived"); the first
 *   `write`, `writeAtomic` or `copyFrom` with that signal then goes at once, within it.
 *
 * Aborts (TMF ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LUN RESET, a session going away). Two
 * ways reach a command that still waits here:
 * - per command: every method takes the Volume contract's trailing options with the task's
 *   `signal`, which the SCSI layer passes and the iSCSI connection aborts with the task:
 *   aborting it removes the command if it has not started (its tokens are given back);
 * - per filter: `abortQueued(reason)` removes every waiting command of this filter (one I_T
 *   nexus on one LUN: what LUN RESET or the end of the session needs), and
 *   `IoScheduler.abortQueued({ channel })` those of every nexus on the channel.
 * A removed command rejects with ArbiterAbortError and never reaches the volume; the SCSI layer
 * then answers it as aborted (no status for ABORT TASK, TASK ABORTED for the others). A command
 * already in the volume completes normally.
 */
import { StorageError, StorageErrorCode } from "../volume/errors.js";
import type {
  BlockStatus,
  CommandOptions,
  CommandSignal,
  Volume,
  WriteOptions,
  WriteReservation,
} from "../volume/volume.js";
import type { ChannelHandle } from "./scheduler.js";

/** Per-command options (the Volume contract's): aborting `signal` removes a waiting command. */
export type { CommandOptions };

export class ArbiterFilter implements Volume {
  readonly id: string;
  readonly name: string;
  readonly blockSize: number;
  readonly physicalBlockSize?: number;
  readonly atomicWriteMaxBlocks?: number;
  readonly writeAtomic?: (lba: number, data: Buffer, options?: WriteOptions) => Promise<void>;
  readonly copyFrom?: (
    source: Volume,
    sourceLba: number,
    lba: number,
    blocks: number,
    options?: WriteOptions,
  ) => Promise<boolean>;
  private closed = false;

  constructor(
    private readonly inner: Volume,
    readonly handle: ChannelHandle,
  ) {
    this.id = inner.id;
    this.name = inner.name;
    this.blockSize = inner.blockSize;
    if (inner.physicalBlockSize !== undefined) this.physicalBlockSize = inner.physicalBlockSize;
    const atomicMax = inner.atomicWriteMaxBlocks ?? 0;
    if (inner.writeAtomic !== undefined && atomicMax > 0) {
      this.atomicWriteMaxBlocks = atomicMax;
      this.writeAtomic = (lba, data, options) => {
        if (this.closed) return this.rejectClosed();
        return this.handle.run(
          "write",
          data.length,
          () => this.inner.writeAtomic!(lba, data, options),
          options?.signal,
          this,
        );
      };
    }
    if (inner.copyFrom !== undefined) {
      this.copyFrom = (source, sourceLba, lba, blocks, options) => {
        if (this.closed) return this.rejectClosed();
        return this.handle.run(
          "write",
          blocks * this.blockSize,
          () => this.inner.copyFrom!(source, sourceLba, lba, blocks, options),
          options?.signal,
          this,
        );
      };
    }
  }

  /** The volume below (Volume.unwrap): copies by reference look through this filter. */
  unwrap(): Volume {
    return this.inner;
  }

  blockCount(): number {
    return this.inner.blockCount();
  }

  read(lba: number, blocks: number, options?: CommandOptions): Promise<Buffer> {
    if (this.closed) return this.rejectClosed();
    return this.handle.run(
      "read",
      blocks * this.blockSize,
      () => this.inner.read(lba, blocks, options),
      options?.signal,
      this,
    );
  }

  write(lba: number, data: Buffer, options?: WriteOptions): Promise<void> {
    if (this.closed) return this.rejectClosed();
    return this.handle.run(
      "write",
      data.length,
      () => this.inner.write(lba, data, options),
      options?.signal,
      this,
    );
  }

  flush(options?: CommandOptions): Promise<void> {
    if (this.closed) return this.rejectClosed();
    return this.handle.run("other", 0, () => this.inner.flush(options), options?.signal, this);
  }

  unmap(lba: number, blocks: number, options?: CommandOptions): Promise<void> {
    if (this.closed) return this.rejectClosed();
    return this.handle.run(
      "other",
      0,
      () => this.inner.unmap(lba, blocks, options),
      options?.signal,
      this,
    );
  }

  blockStatus(lba: number, options?: CommandOptions): Promise<BlockStatus> {
    if (this.closed) return this.rejectClosed();
    return this.handle.run(
      "other",
      0,
      () => this.inner.blockStatus(lba, options),
      options?.signal,
      this,
    );
  }

  /** Volume.reserveWrite: the write's turn, taken before its data arrives. */
  reserveWrite(bytes: number, signal: CommandSignal): Promise<WriteReservation> {
    if (this.closed) return this.rejectClosed();
    return this.handle.admit("write", bytes, signal, this);
  }

  /** Abort this filter's waiting commands (LUN RESET, session end). Returns how many. */
  abortQueued(reason?: unknown): number {
    return this.handle.abortQueued(this, reason);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.handle.abortQueued(this, "channel closed");
  }

  private rejectClosed<T>(): Promise<T> {
    return Promise.reject(
      new StorageError(StorageErrorCode.NotReady, `channel of volume "${this.name}" is closed`),
    );
  }
}
