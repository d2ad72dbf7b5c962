/**
 * Counting filter: accounts a channel's I/O in its ChannelCounters.
 *
 * Contract:
 * - Every call is forwarded unchanged to the inner volume, and its outcome is passed back
 *   unchanged (same value, same rejection).
 * - On success: `read` adds 1 to `readOps` and the returned length to `readBytes`; `write` and
 *   `writeAtomic` add 1 to `writeOps` and the data length to `writtenBytes`; `copyFrom` that
 *   copied (resolved `true`) adds 1 to `writeOps` and `blocks * blockSize` to `writtenBytes`,
 *   one that declined (`false`) counts nothing, as the caller then copies with `read` and
 *   `write`, which count. `unmap`, `flush` and `blockStatus` count no bytes and no ops.
 * - The optional members exist exactly when the inner volume has them: `atomicWriteMaxBlocks`
 *   (copied once: it is constant) and `writeAtomic` when it does atomic writes, `copyFrom` when
 *   it copies by reference. `copyFrom` passes its `source` on unchanged: this filter accounts
 *   the destination channel only, and the source's own stack stays in the way (the inner
 *   volume declines a source it cannot see through, and the fallback's `read` counts there).
 * - On failure (the inner promise rejects, or the inner call throws): `errors` += 1, nothing
 *   else; except a call dropped because its command was aborted (an "AbortError", Volume
 *   "Aborts"), which counts nothing (the arbiter counts it as aborted).
 * - `commands` is not touched: it counts SCSI commands, which the layer above sees.
 * - Per-command options (the abort `signal`) are passed on unchanged with every call;
 *   `reserveWrite` exists exactly when the inner volume has it and is forwarded unchanged (it
 *   counts nothing: the write that uses the reservation counts).
 * - Filters do not own the volume below them: `close()` only marks this filter closed (later
 *   calls reject with NotReady); the owner of the base volume closes it.
 * - No closure or object is created per call beyond the promise each async method returns.
 */
import { isAbortError, StorageError, StorageErrorCode } from "../../volume/errors.js";
import type {
  BlockStatus,
  CommandOptions,
  CommandSignal,
  Volume,
  WriteOptions,
  WriteReservation,
} from "../../volume/volume.js";
import type { ChannelCounters } from "../counters.js";

export class CountingFilter implements Volume {
  readonly id: string;
  readonly name: string;
  readonly blockSize: number;
  readonly atomicWriteMaxBlocks?: number;
  readonly writeAtomic?: (lba: number, data: Buffer, options?: WriteOptions) => Promise<void>;
  readonly copyFrom?: (
    source: Volume,
    sourceLba: number,
    lba: number,
    blocks: number,
    options?: WriteOptions,
  ) => Promise<boolean>;
  readonly reserveWrite?: (bytes: number, signal: CommandSignal) => Promise<WriteReservation>;
  private closed = false;

  constructor(
    private readonly inner: Volume,
    readonly counters: ChannelCounters,
  ) {
    this.id = inner.id;
    this.name = inner.name;
    this.blockSize = inner.blockSize;
    const atomicMax = inner.atomicWriteMaxBlocks ?? 0;
    if (inner.writeAtomic !== undefined && atomicMax > 0) {
      this.atomicWriteMaxBlocks = atomicMax;
      this.writeAtomic = (lba, data, options) => this.forwardWriteAtomic(lba, data, options);
    }
    if (inner.copyFrom !== undefined) {
      this.copyFrom = (source, sourceLba, lba, blocks, options) =>
        this.forwardCopyFrom(source, sourceLba, lba, blocks, options);
    }
    if (inner.reserveWrite !== undefined) {
      this.reserveWrite = async (bytes, signal) => {
        this.checkOpen();
        return this.inner.reserveWrite!(bytes, signal);
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

  async read(lba: number, blocks: number, options?: CommandOptions): Promise<Buffer> {
    this.checkOpen();
    let data: Buffer;
    try {
      data = await this.inner.read(lba, blocks, options);
    } catch (error) {
      if (!isAbortError(error)) this.counters.errors++;
      throw error;
    }
    this.counters.readOps++;
    this.counters.readBytes += data.length;
    return data;
  }

  async write(lba: number, data: Buffer, options?: WriteOptions): Promise<void> {
    this.checkOpen();
    // Read the length now: the buffer belongs to the inner volume until the promise settles.
    const length = data.length;
    try {
      await this.inner.write(lba, data, options);
    } catch (error) {
      if (!isAbortError(error)) this.counters.errors++;
      throw error;
    }
    this.counters.writeOps++;
    this.counters.writtenBytes += length;
  }

  private async forwardWriteAtomic(
    lba: number,
    data: Buffer,
    options?: WriteOptions,
  ): Promise<void> {
    this.checkOpen();
    const length = data.length;
    try {
      await this.inner.writeAtomic!(lba, data, options);
    } catch (error) {
      if (!isAbortError(error)) this.counters.errors++;
      throw error;
    }
    this.counters.writeOps++;
    this.counters.writtenBytes += length;
  }

  private async forwardCopyFrom(
    source: Volume,
    sourceLba: number,
    lba: number,
    blocks: number,
    options?: WriteOptions,
  ): Promise<boolean> {
    this.checkOpen();
    let copied: boolean;
    try {
      copied = await this.inner.copyFrom!(source, sourceLba, lba, blocks, options);
    } catch (error) {
      if (!isAbortError(error)) this.counters.errors++;
      throw error;
    }
    if (copied) {
      this.counters.writeOps++;
      this.counters.writtenBytes += blocks * this.blockSize;
    }
    return copied;
  }

  async flush(options?: CommandOptions): Promise<void> {
    this.checkOpen();
    try {
      await this.inner.flush(options);
    } catch (error) {
      if (!isAbortError(error)) this.counters.errors++;
      throw error;
    }
  }

  async unmap(lba: number, blocks: number, options?: CommandOptions): Promise<void> {
    this.checkOpen();
    try {
      await this.inner.unmap(lba, blocks, options);
    } catch (error) {
      if (!isAbortError(error)) this.counters.errors++;
      throw error;
    }
  }

  async blockStatus(lba: number, options?: CommandOptions): Promise<BlockStatus> {
    this.checkOpen();
    try {
      return await this.inner.blockStatus(lba, options);
    } catch (error) {
      if (!isAbortError(error)) this.counters.errors++;
      throw error;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private checkOpen(): void {
    if (this.closed) {
      throw new StorageError(
        StorageErrorCode.NotReady,
        `channel of volume "${this.name}" is closed`,
      );
    }
  }
}
