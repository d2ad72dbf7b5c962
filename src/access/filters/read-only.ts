/**
 * Read-only filter: the volume as a read-only mapping sees it.
 *
 * Contract:
 * - `write`, `unmap`, `writeAtomic` and `copyFrom` (a copy *into* this volume) reject with
 *   `StorageError(WriteProtected)` without reaching the inner volume (the SCSI layer normally
 *   refuses them earlier, from `LunEntry.readOnly`; this is the guarantee underneath).
 * - The optional members exist exactly when the inner volume has them, so that the filter
 *   advertises the same capabilities: `atomicWriteMaxBlocks` (copied once: it is constant) and
 *   `writeAtomic` when the inner volume does atomic writes, `copyFrom` when it copies by
 *   reference. A copy *from* this volume is a read and stays allowed: the volume doing the copy
 *   receives this filter as its source and decides whether it can copy from it (a base volume
 *   does not see through a filter and declines, so the caller falls back to `read` + `write`).
 * - Everything else (`read`, `flush`, `blockStatus`, `blockCount`, identity) is forwarded
 *   unchanged, with its per-command options (the abort `signal`). `reserveWrite` is not
 *   forwarded: no write goes through this filter, so there is nothing to reserve a turn for. `flush` is forwarded because SYNCHRONIZE CACHE must succeed on a read-only LUN
 *   and makes other channels' writes durable as the Volume contract says.
 * - Filters do not own the volume below them: the base volume is shared by every channel that
 *   maps it, so `close()` only marks this filter closed (later calls reject with NotReady) and
 *   never closes the inner volume. Whoever opened the base volume closes it.
 * - No allocation on the forwarding path.
 */
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import type { BlockStatus, CommandOptions, Volume, WriteOptions } from "../../volume/volume.js";

export class ReadOnlyFilter implements Volume {
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
  private closed = false;

  constructor(private readonly inner: Volume) {
    this.id = inner.id;
    this.name = inner.name;
    this.blockSize = inner.blockSize;
    const atomicMax = inner.atomicWriteMaxBlocks ?? 0;
    if (inner.writeAtomic !== undefined && atomicMax > 0) {
      this.atomicWriteMaxBlocks = atomicMax;
      this.writeAtomic = (lba, data, options) => this.write(lba, data, options);
    }
    if (inner.copyFrom !== undefined) {
      this.copyFrom = (_source, _sourceLba, lba) => this.refuse<boolean>(lba);
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
    return this.inner.read(lba, blocks, options);
  }

  write(lba: number, _data: Buffer, _options?: WriteOptions): Promise<void> {
    return this.refuse(lba);
  }

  flush(options?: CommandOptions): Promise<void> {
    if (this.closed) return this.rejectClosed();
    return this.inner.flush(options);
  }

  unmap(lba: number, _blocks: number, _options?: CommandOptions): Promise<void> {
    return this.write(lba, EMPTY);
  }

  blockStatus(lba: number, options?: CommandOptions): Promise<BlockStatus> {
    if (this.closed) return this.rejectClosed();
    return this.inner.blockStatus(lba, options);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Every modification: NotReady once closed, else WriteProtected. */
  private refuse<T>(lba: number): Promise<T> {
    if (this.closed) return this.rejectClosed();
    return Promise.reject(
      new StorageError(
        StorageErrorCode.WriteProtected,
        `volume "${this.name}" is mapped read-only`,
        lba,
      ),
    );
  }

  private rejectClosed<T>(): Promise<T> {
    return Promise.reject(
      new StorageError(StorageErrorCode.NotReady, `channel of volume "${this.name}" is closed`),
    );
  }
}

const EMPTY = Buffer.alloc(0);
