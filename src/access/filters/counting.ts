/**
 * Counting filter: accounts a channel's I/O in its ChannelCounters.
 *
 * Contract:
 * - Every call is forwarded unchanged to the inner volume, and its outcome is passed back
 *   unchanged (same value, same rejection).
 * - On success: `read` adds 1 to `readOps` and the returned length to `readBytes`; `write` adds
 *   1 to `writeOps` and the data length to `writtenBytes`. `unmap`, `flush` and `blockStatus`
 *   count no bytes and no ops.
 * - On failure (the inner promise rejects, or the inner call throws): `errors` += 1, nothing
 *   else.
 * - `commands` is not touched: it counts SCSI commands, which the layer above sees.
 * - Filters do not own the volume below them: `close()` only marks this filter closed (later
 *   calls reject with NotReady); the owner of the base volume closes it.
 * - No closure or object is created per call beyond the promise each async method returns.
 */
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import type { BlockStatus, Volume, WriteOptions } from "../../volume/volume.js";
import type { ChannelCounters } from "../counters.js";

export class CountingFilter implements Volume {
  readonly id: string;
  readonly name: string;
  readonly blockSize: number;
  private closed = false;

  constructor(
    private readonly inner: Volume,
    readonly counters: ChannelCounters,
  ) {
    this.id = inner.id;
    this.name = inner.name;
    this.blockSize = inner.blockSize;
  }

  blockCount(): number {
    return this.inner.blockCount();
  }

  async read(lba: number, blocks: number): Promise<Buffer> {
    this.checkOpen();
    let data: Buffer;
    try {
      data = await this.inner.read(lba, blocks);
    } catch (error) {
      this.counters.errors++;
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
      this.counters.errors++;
      throw error;
    }
    this.counters.writeOps++;
    this.counters.writtenBytes += length;
  }

  async flush(): Promise<void> {
    this.checkOpen();
    try {
      await this.inner.flush();
    } catch (error) {
      this.counters.errors++;
      throw error;
    }
  }

  async unmap(lba: number, blocks: number): Promise<void> {
    this.checkOpen();
    try {
      await this.inner.unmap(lba, blocks);
    } catch (error) {
      this.counters.errors++;
      throw error;
    }
  }

  async blockStatus(lba: number): Promise<BlockStatus> {
    this.checkOpen();
    try {
      return await this.inner.blockStatus(lba);
    } catch (error) {
      this.counters.errors++;
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
