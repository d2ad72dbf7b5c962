/**
 * The file backend: one sparse file per volume, the simplest thing that implements `Volume`.
 *
 * Layout under the data directory:
 *   volumes/<name>.img    the blocks, byte for byte (block N at offset N * blockSize)
 *   volumes/<name>.json   { id, name, blockSize, size }, replaced atomically; `id` is a random
 *                         UUID made when the volume is created and never changed
 *
 * Contract (beyond `Volume`):
 * - `openFileVolume` creates the volume when neither file exists, else opens it. A larger
 *   configured size grows the volume (`grownFrom` tells by how much); a smaller one is refused
 *   (it would destroy data), and so is a different block size (every LBA would move).
 * - Durability: `write` resolves once the data is in the page cache. `flush()` and FUA writes
 *   run `fdatasync`; concurrent flushes share one fdatasync (group commit). A failed fdatasync
 *   poisons the volume for writes and flushes: Linux may drop the dirty pages and clear the error,
 *   so a later fdatasync could succeed while data is lost (PostgreSQL's "fsyncgate"); only
 *   reopening the volume clears the state.
 * - Thin provisioning is partial. Node has no fallocate(PUNCH_HOLE) and no lseek(SEEK_DATA), so:
 *   `unmap` of a range that reaches the end of the volume truncates the file and extends it again
 *   (a real hole); any other range is overwritten with zeros, except 1 MiB pieces that already
 *   read as zeros (so never-written areas stay holes). Space freed by the guest is therefore
 *   not returned, and `blockStatus` reports every block as mapped. Reads are always correct:
 *   unmapped blocks read as zeros.
 * - Concurrency: operations may overlap freely; overlapping writes land in an unspecified order
 *   (as SCSI allows for simple tasks). `close()` waits for operations in flight, then syncs.
 */
import { randomUUID } from "node:crypto";
import { type FileHandle, mkdir, open } from "node:fs/promises";
import { join } from "node:path";
import { isErrnoException, readJsonFile, writeJsonAtomic } from "../../util/atomic-file.js";
import { isValidName, NAME_RULE } from "../../util/names.js";
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import type { BlockStatus, Volume, WriteOptions } from "../../volume/volume.js";

export interface FileVolumeOptions {
  readonly name: string;
  /** Capacity in bytes: positive, a multiple of `blockSize`. */
  readonly size: number;
  /** 512 or 4096. */
  readonly blockSize: number;
}

/** What `<name>.json` holds. */
export interface FileVolumeMeta {
  readonly id: string;
  readonly name: string;
  readonly blockSize: number;
  /** Capacity in bytes. */
  readonly size: number;
}

/** A configuration the backend refuses (bad size, shrink, block size change, lost data). */
export class FileVolumeError extends Error {
  override readonly name = "FileVolumeError";
}

/** Largest piece written or read at once by `unmap` (and the size of the shared zero buffer). */
const UNMAP_PIECE = 1 << 20;
let zeroPiece: Buffer | undefined;
function zeros(): Buffer {
  zeroPiece ??= Buffer.alloc(UNMAP_PIECE);
  return zeroPiece;
}

export function volumeFilePaths(dataDir: string, name: string): { image: string; meta: string } {
  const dir = join(dataDir, "volumes");
  return { image: join(dir, `${name}.img`), meta: join(dir, `${name}.json`) };
}

/**
 * Create or open the file volume `options.name` under `dataDir/volumes/`. Rejects with
 * FileVolumeError for a refused configuration and with the system error for I/O failures.
 */
export async function openFileVolume(
  dataDir: string,
  options: FileVolumeOptions,
): Promise<FileVolume> {
  const { name, size, blockSize } = options;
  if (!isValidName(name)) {
    throw new FileVolumeError(`volume name "${name}" is not valid: use ${NAME_RULE}`);
  }
  if (blockSize !== 512 && blockSize !== 4096) {
    throw new FileVolumeError(`volume "${name}": block size ${blockSize} is not 512 or 4096`);
  }
  if (!Number.isSafeInteger(size) || size <= 0 || size % blockSize !== 0) {
    throw new FileVolumeError(
      `volume "${name}": size ${size} is not a positive multiple of the block size ${blockSize}`,
    );
  }
  const paths = volumeFilePaths(dataDir, name);
  await mkdir(join(dataDir, "volumes"), { recursive: true });
  const meta = parseMeta(await readJsonFile(paths.meta), paths.meta);

  let handle: FileHandle;
  let created = false;
  try {
    handle = await open(paths.image, "r+");
  } catch (error) {
    if (!isErrnoException(error) || error.code !== "ENOENT") throw error;
    if (meta !== undefined) {
      throw new FileVolumeError(
        `volume "${name}": ${paths.meta} exists but its data file ${paths.image} is missing; ` +
          "refusing to create an empty volume under the same identity",
      );
    }
    handle = await open(paths.image, "wx+", 0o600);
    created = true;
  }

  try {
    if (meta !== undefined) {
      if (meta.name !== name) {
        throw new FileVolumeError(`${paths.meta} names volume "${meta.name}", not "${name}"`);
      }
      if (meta.blockSize !== blockSize) {
        throw new FileVolumeError(
          `volume "${name}" has block size ${meta.blockSize}; changing it to ${blockSize} would ` +
            "move every block (create a new volume instead)",
        );
      }
    }
    // Without metadata the image is either new (created just above) or was left by a crash
    // during creation, or put there by hand: adopt it, and the file length is its size.
    const fileSize = (await handle.stat()).size;
    const current = meta?.size ?? fileSize;
    if (size < current) {
      throw new FileVolumeError(
        `volume "${name}" holds ${current} bytes; shrinking it to ${size} would destroy data ` +
          "(sanmux never shrinks a volume)",
      );
    }
    // Grow (or create) the image first, then record the size: a crash in between leaves a
    // larger image than recorded, which the next open repairs the same way.
    if (fileSize < size) {
      await handle.truncate(size);
      await handle.datasync();
    }
    const record: FileVolumeMeta = { id: meta?.id ?? randomUUID(), name, blockSize, size };
    if (meta === undefined || meta.size !== size) await writeJsonAtomic(paths.meta, record);
    return new FileVolume(handle, paths.meta, record, created ? undefined : current);
  } catch (error) {
    await handle.close();
    throw error;
  }
}

function parseMeta(value: unknown, path: string): FileVolumeMeta | undefined {
  if (value === undefined) return undefined;
  const v = value as Partial<Record<keyof FileVolumeMeta, unknown>> | null;
  if (
    v === null ||
    typeof v !== "object" ||
    typeof v.id !== "string" ||
    v.id === "" ||
    typeof v.name !== "string" ||
    typeof v.blockSize !== "number" ||
    typeof v.size !== "number" ||
    !Number.isSafeInteger(v.size)
  ) {
    throw new FileVolumeError(`${path}: not valid volume metadata`);
  }
  return { id: v.id, name: v.name, blockSize: v.blockSize, size: v.size };
}

export class FileVolume implements Volume {
  readonly id: string;
  readonly name: string;
  readonly blockSize: number;
  /**
   * When this open grew the volume: its previous size in bytes. `undefined` when the volume was
   * created or opened at its recorded size.
   */
  readonly grownFrom: number | undefined;

  private sizeBytes: number;
  private blocks: number;
  private closed = false;
  /** Set once an fdatasync failed: writes and flushes are refused from then on. */
  private syncFailure: StorageError | undefined;
  /** The fdatasync running now, if any. */
  private syncRunning: Promise<void> | undefined;
  /** The fdatasync queued behind the running one, shared by every flush that arrives meanwhile. */
  private syncQueued: Promise<void> | undefined;
  private inFlight = 0;
  private idle: (() => void) | undefined;
  private closing: Promise<void> | undefined;

  /** Use `openFileVolume`. */
  constructor(
    private readonly handle: FileHandle,
    private readonly metaPath: string,
    meta: FileVolumeMeta,
    grownFrom: number | undefined,
  ) {
    this.id = meta.id;
    this.name = meta.name;
    this.blockSize = meta.blockSize;
    this.sizeBytes = meta.size;
    this.blocks = meta.size / meta.blockSize;
    this.grownFrom = grownFrom !== undefined && grownFrom < meta.size ? grownFrom : undefined;
  }

  blockCount(): number {
    return this.blocks;
  }

  /** Capacity in bytes. */
  size(): number {
    return this.sizeBytes;
  }

  /**
   * Grow the open volume to `size` bytes (live config change). Resolves `true` when it grew,
   * `false` when it already had that size; rejects (FileVolumeError) on a shrink.
   */
  async grow(size: number): Promise<boolean> {
    if (!Number.isSafeInteger(size) || size % this.blockSize !== 0) {
      throw new FileVolumeError(
        `volume "${this.name}": size ${size} is not a multiple of the block size ${this.blockSize}`,
      );
    }
    if (size < this.sizeBytes) {
      throw new FileVolumeError(
        `volume "${this.name}" holds ${this.sizeBytes} bytes; shrinking it to ${size} would ` +
          "destroy data (sanmux never shrinks a volume)",
      );
    }
    if (size === this.sizeBytes) return false;
    this.enter();
    try {
      await this.handle.truncate(size);
      await this.handle.datasync();
      await writeJsonAtomic(this.metaPath, {
        id: this.id,
        name: this.name,
        blockSize: this.blockSize,
        size,
      } satisfies FileVolumeMeta);
      this.sizeBytes = size;
      this.blocks = size / this.blockSize;
      return true;
    } finally {
      this.leave();
    }
  }

  async read(lba: number, blocks: number): Promise<Buffer> {
    this.check(lba, blocks);
    const length = blocks * this.blockSize;
    // allocUnsafe is safe here: every byte is either read from the file or zero-filled below.
    const buffer = Buffer.allocUnsafe(length);
    const position = lba * this.blockSize;
    this.enter();
    try {
      let done = 0;
      while (done < length) {
        const { bytesRead } = await this.handle.read(buffer, done, length - done, position + done);
        if (bytesRead === 0) {
          // Past the end of the file (it is shorter than the volume): sparse area, zeros.
          buffer.fill(0, done);
          break;
        }
        done += bytesRead;
      }
    } catch (error) {
      throw ioError(StorageErrorCode.MediumError, `read of ${blocks} block(s)`, this, lba, error);
    } finally {
      this.leave();
    }
    return buffer;
  }

  async write(lba: number, data: Buffer, options?: WriteOptions): Promise<void> {
    if (data.length % this.blockSize !== 0) {
      throw new StorageError(
        StorageErrorCode.Internal,
        `write of ${data.length} bytes is not a whole number of ${this.blockSize}-byte blocks`,
        lba,
      );
    }
    this.check(lba, data.length / this.blockSize);
    if (this.syncFailure !== undefined) throw this.syncFailure;
    this.enter();
    try {
      await this.writeAt(data, lba * this.blockSize, lba);
    } finally {
      this.leave();
    }
    if (options?.fua === true) await this.flush();
  }

  flush(): Promise<void> {
    if (this.closed) return Promise.reject(notReady(this));
    if (this.syncFailure !== undefined) return Promise.reject(this.syncFailure);
    if (this.syncRunning === undefined) return this.startSync();
    // An fdatasync is running, but it may have started before the caller's writes completed:
    // queue one more behind it, shared by everyone who arrives until it starts.
    // The queued sync counts as in flight, so that close() waits for it.
    if (this.syncQueued === undefined) {
      this.enter();
      this.syncQueued = this.syncRunning.then(
        () => this.afterQueue(),
        () => this.afterQueue(),
      );
    }
    return this.syncQueued;
  }

  private afterQueue(): Promise<void> {
    this.syncQueued = undefined;
    try {
      if (this.syncFailure !== undefined) return Promise.reject(this.syncFailure);
      return this.startSync();
    } finally {
      this.leave();
    }
  }

  private startSync(): Promise<void> {
    this.enter();
    const running: Promise<void> = this.handle.datasync().then(
      () => {
        if (this.syncRunning === running) this.syncRunning = undefined;
        this.leave();
      },
      (error: unknown) => {
        if (this.syncRunning === running) this.syncRunning = undefined;
        this.syncFailure ??= ioError(StorageErrorCode.WriteFault, "fdatasync", this, 0, error);
        this.leave();
        throw this.syncFailure;
      },
    );
    this.syncRunning = running;
    return running;
  }

  async unmap(lba: number, blocks: number): Promise<void> {
    this.check(lba, blocks);
    if (this.syncFailure !== undefined) throw this.syncFailure;
    if (blocks === 0) return;
    const start = lba * this.blockSize;
    const end = start + blocks * this.blockSize;
    this.enter();
    try {
      if (end >= this.sizeBytes) {
        // The range reaches the end: cut the file there and extend it again, which leaves a
        // hole (the only hole punching Node offers).
        await this.handle.truncate(start);
        await this.handle.truncate(this.sizeBytes);
        return;
      }
      const scratch = Buffer.allocUnsafe(Math.min(UNMAP_PIECE, end - start));
      const zero = zeros();
      for (let offset = start; offset < end; offset += UNMAP_PIECE) {
        const length = Math.min(UNMAP_PIECE, end - offset);
        const piece = scratch.subarray(0, length);
        const { bytesRead } = await this.handle.read(piece, 0, length, offset);
        // Already zero (typically a hole): writing zeros would only allocate space.
        if (bytesRead === length && piece.equals(zero.subarray(0, length))) continue;
        await this.writeAt(zero.subarray(0, length), offset, offset / this.blockSize);
      }
    } catch (error) {
      if (error instanceof StorageError) throw error;
      throw ioError(StorageErrorCode.WriteFault, `unmap of ${blocks} block(s)`, this, lba, error);
    } finally {
      this.leave();
    }
  }

  async blockStatus(lba: number): Promise<BlockStatus> {
    this.check(lba, 1);
    // Without lseek(SEEK_DATA) the backend cannot tell holes from data: all mapped.
    return { mapped: true, blocks: this.blocks - lba };
  }

  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.closed = true;
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        this.idle = resolve;
      });
    }
    try {
      if (this.syncFailure === undefined) await this.handle.datasync();
    } finally {
      await this.handle.close();
    }
  }

  /** Write all of `data` at byte `position`; `lba` is for error reports. */
  private async writeAt(data: Buffer, position: number, lba: number): Promise<void> {
    try {
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await this.handle.write(
          data,
          done,
          data.length - done,
          position + done,
        );
        done += bytesWritten;
      }
    } catch (error) {
      throw ioError(
        StorageErrorCode.WriteFault,
        `write of ${data.length / this.blockSize} block(s)`,
        this,
        lba,
        error,
      );
    }
  }

  /** Range check; also refuses any operation on a closed volume. */
  private check(lba: number, blocks: number): void {
    if (this.closed) throw notReady(this);
    if (
      !Number.isSafeInteger(lba) ||
      !Number.isSafeInteger(blocks) ||
      lba < 0 ||
      blocks < 0 ||
      lba + blocks > this.blocks
    ) {
      throw new StorageError(
        StorageErrorCode.OutOfRange,
        `blocks ${lba}..${lba + blocks - 1} are outside volume "${this.name}" (${this.blocks} blocks)`,
        Number.isSafeInteger(lba) && lba >= 0 && lba < this.blocks ? this.blocks : lba,
      );
    }
  }

  private enter(): void {
    this.inFlight++;
  }

  private leave(): void {
    if (--this.inFlight === 0 && this.idle !== undefined) {
      const idle = this.idle;
      this.idle = undefined;
      idle();
    }
  }
}

function notReady(volume: FileVolume): StorageError {
  return new StorageError(StorageErrorCode.NotReady, `volume "${volume.name}" is closed`);
}

function ioError(
  code: StorageErrorCode,
  what: string,
  volume: FileVolume,
  lba: number,
  cause: unknown,
): StorageError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new StorageError(code, `${what} on volume "${volume.name}" failed: ${reason}`, lba, {
    cause,
  });
}
