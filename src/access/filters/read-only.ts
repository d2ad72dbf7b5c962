/**
 * Read-only filter: the volume as a read-only mapping sees it.
 *
 * Contract:
 * - `write` and `unmap` reject with `StorageError(WriteProtected)` without reaching the inner
 *   volume (the SCSI layer normally refuses them earlier, from `LunEntry.readOnly`; this is the
 *   guarantee underneath).
 * - Everything else (`read`, `flush`, `blockStatus`, `blockCount`, identity) is forwarded
 *   unchanged. `flush` is forwarded because SYNCHRONIZE CACHE must succeed on a read-only LUN
 *   and makes other channels' writes durable as the Volume contract says.
 * - Filters do not own the volume below them: the base volume is shared by every channel that
 *   maps it, so `close()` only marks this filter closed (later calls reject with NotReady) and
 *   never closes the inner volume. Whoever opened the base volume closes it.
 * - No allocation on the forwarding path.
 */
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import type { BlockStatus, Volume, WriteOptions } from "../../volume/volume.js";

export class ReadOnlyFilter implements Volume {
  readonly id: string;
  readonly name: string;
  readonly blockSize: number;
  private closed = false;

  constructor(private readonly inner: Volume) {
    this.id = inner.id;
    this.name = inner.name;
    this.blockSize = inner.blockSize;
  }

  blockCount(): number {
    return this.inner.blockCount();
  }

  read(lba: number, blocks: number): Promise<Buffer> {
    if (this.closed) return this.rejectClosed();
    return this.inner.read(lba, blocks);
  }

  write(lba: number, _data: Buffer, _options?: WriteOptions): Promise<void> {
    if (this.closed) return this.rejectClosed();
    return Promise.reject(
      new StorageError(
        StorageErrorCode.WriteProtected,
        `volume "${this.name}" is mapped read-only`,
        lba,
      ),
    );
  }

  flush(): Promise<void> {
    if (this.closed) return this.rejectClosed();
    return this.inner.flush();
  }

  unmap(lba: number, _blocks: number): Promise<void> {
    return this.write(lba, EMPTY);
  }

  blockStatus(lba: number): Promise<BlockStatus> {
    if (this.closed) return this.rejectClosed();
    return this.inner.blockStatus(lba);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private rejectClosed<T>(): Promise<T> {
    return Promise.reject(
      new StorageError(StorageErrorCode.NotReady, `channel of volume "${this.name}" is closed`),
    );
  }
}

const EMPTY = Buffer.alloc(0);
