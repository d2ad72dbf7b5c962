/**
 * The file backend: one sparse file per volume, the simplest thing that implements `Volume`.
 *
 * Layout under the data directory:
 *   volumes/<name>.img    the blocks, byte for byte (block N at offset N * blockSize)
 *   volumes/<name>.json   { id, name, blockSize, size }, replaced atomically; `id` is a random
 *                         UUID made when the volume is created and never changed
 *   volumes/<name>.atomic the atomic write journal: empty, except while a `writeAtomic` runs
 *                         (or after a crash during one); see "Atomic writes" below
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
 *
 * Atomic writes (`writeAtomic`, up to `ATOMIC_WRITE_MAX_BYTES`): a positional write of more than
 * one page can be torn by a crash (the kernel writes dirty pages back one by one), so a write
 * that must be all or nothing goes through a double-write journal, one per volume, and atomic
 * writes of a volume run one at a time:
 *   1. write one record (header + data, see `encodeJournalHeader`) at the start of the empty
 *      journal, then fdatasync the journal. Once that returns, the write is committed: a crash
 *      from here on is repaired by replaying the record, and before it the image is untouched;
 *   2. write the data into the image, fdatasync the image;
 *   3. truncate the journal to 0 bytes, fdatasync the journal; only then resolve.
 * Why this order: the image must be durable (2) before the record is dropped (3), else a crash
 * could leave neither a complete image nor a record to repair it from. And the empty journal
 * must be durable before the write resolves: as soon as it has resolved, a later write to the
 * same blocks may be acknowledged and flushed, and a record still in the journal at a crash
 * would be replayed over it, undoing an acknowledged write. Hence every atomic write is durable
 * when it resolves, FUA or not (three fdatasyncs: the price of atomicity on a plain file).
 * Recovery (`openFileVolume`): a complete record with a valid CRC32C that belongs to this
 * volume is written into the image again (idempotent: the same bytes at the same place),
 * the image is synced and the journal emptied; the volume reports it (`recoveredAtomicWrite`).
 * Anything else in the journal is dropped (`discardedAtomicJournal`): a record torn by a crash
 * during step 1, whose write never reached the image, or the leftover of a deleted volume of the
 * same name (the record carries a tag of the volume id). A failure after the commit point
 * (or any fdatasync failure) poisons the volume as a failed flush does; reopening it repairs
 * the image from the journal.
 */
import { createHash, randomUUID } from "node:crypto";
import { type FileHandle, mkdir, open } from "node:fs/promises";
import { dirname, join } from "node:path";
import { crc32c } from "@node-rs/crc32";
import {
  fsyncDirectory,
  isErrnoException,
  readJsonFile,
  writeJsonAtomic,
} from "../../util/atomic-file.js";
import { dataBuffers } from "../../util/buffer-pool.js";
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

/**
 * Largest atomic write, in bytes (`atomicWriteMaxBlocks` = this / blockSize: 2048 blocks of 512
 * bytes, 256 of 4 KiB). It bounds the journal file, the data written twice and the time an atomic
 * write holds its blocks against other commands; it covers database pages and Linux untorn
 * writes many times over, and 256 blocks at any block size (what libiscsi's conformance test
 * writes). It is far below the SCSI MAXIMUM TRANSFER LENGTH (16 MiB), which the SCSI layer
 * applies on top.
 */
export const ATOMIC_WRITE_MAX_BYTES = 1 << 20;

/** An atomic write that `openFileVolume` completed from the journal (byte offset and length). */
export interface RecoveredAtomicWrite {
  readonly offset: number;
  readonly length: number;
}

/** Journal content that `openFileVolume` dropped because it was no complete record of ours. */
export interface DiscardedAtomicJournal {
  /** Size of the journal file that was dropped. */
  readonly bytes: number;
  readonly reason: string;
}

/**
 * Journal record header, little-endian, followed by `length` bytes of data:
 *   0  8  magic "SANMUXAW"
 *   8  4  version (1)
 *  12  4  reserved (0)
 *  16 16  volume tag: the first 16 bytes of SHA-256(volume id), so that a journal left behind
 *         by a deleted volume is never replayed into a new volume of the same name
 *  32  8  byte offset in the volume
 *  40  4  length of the data in bytes
 *  44  4  CRC32C of bytes 0-43 followed by the data
 */
export const JOURNAL_HEADER_BYTES = 48;
const JOURNAL_MAGIC = Buffer.from("SANMUXAW", "latin1");
const JOURNAL_VERSION = 1;
const CRC_FIELD = 44;

/** The volume tag of the journal header for volume id `id`. */
export function journalVolumeTag(id: string): Buffer {
  return createHash("sha256").update(id, "utf8").digest().subarray(0, 16);
}

/** The header of a journal record writing `data` at byte `offset` of the tagged volume. */
export function encodeJournalHeader(volumeTag: Buffer, offset: number, data: Buffer): Buffer {
  const header = Buffer.alloc(JOURNAL_HEADER_BYTES);
  JOURNAL_MAGIC.copy(header, 0);
  header.writeUInt32LE(JOURNAL_VERSION, 8);
  volumeTag.copy(header, 16, 0, 16);
  header.writeBigUInt64LE(BigInt(offset), 32);
  header.writeUInt32LE(data.length, 40);
  header.writeUInt32LE(crc32c(data, crc32c(header.subarray(0, CRC_FIELD))) >>> 0, CRC_FIELD);
  return header;
}

/** Largest piece written or read at once by `unmap` (and the size of the shared zero buffer). */
const UNMAP_PIECE = 1 << 20;
let zeroPiece: Buffer | undefined;
function zeros(): Buffer {
  zeroPiece ??= Buffer.alloc(UNMAP_PIECE);
  return zeroPiece;
}

export function volumeFilePaths(
  dataDir: string,
  name: string,
): { image: string; meta: string; journal: string } {
  const dir = join(dataDir, "volumes");
  return {
    image: join(dir, `${name}.img`),
    meta: join(dir, `${name}.json`),
    journal: join(dir, `${name}.atomic`),
  };
}

/**
 * Create or open the file volume `options.name` under `dataDir/volumes/`, completing an atomic
 * write that a crash interrupted (see the module comment; the result tells what it did in
 * `recoveredAtomicWrite` and `discardedAtomicJournal`, for the opener to log). Rejects with
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
    const journal = await openJournal(paths.journal);
    try {
      const recovery = await recoverAtomicWrite(handle, journal, record, current);
      return new FileVolume(
        handle,
        journal,
        paths.meta,
        record,
        created ? undefined : current,
        recovery,
      );
    } catch (error) {
      await journal.close();
      throw error;
    }
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** Open the journal, creating it (durably: its directory entry too) when it is missing. */
async function openJournal(path: string): Promise<FileHandle> {
  try {
    return await open(path, "r+");
  } catch (error) {
    if (!isErrnoException(error) || error.code !== "ENOENT") throw error;
  }
  const handle = await open(path, "wx+", 0o600);
  try {
    await fsyncDirectory(dirname(path));
  } catch (error) {
    await handle.close();
    throw error;
  }
  return handle;
}

interface AtomicRecovery {
  readonly recovered?: RecoveredAtomicWrite;
  readonly discarded?: DiscardedAtomicJournal;
}

/**
 * Replay the journal's record into the image when it is complete, valid and ours (`size` is the
 * volume's size before this open: the record was written within it); drop anything else. Either
 * way the journal is empty, durably, when this resolves.
 */
async function recoverAtomicWrite(
  image: FileHandle,
  journal: FileHandle,
  meta: FileVolumeMeta,
  size: number,
): Promise<AtomicRecovery> {
  const bytes = (await journal.stat()).size;
  if (bytes === 0) return {};
  const reason = await (async (): Promise<string | RecoveredAtomicWrite> => {
    if (bytes < JOURNAL_HEADER_BYTES) return "torn record (short header)";
    const header = Buffer.alloc(JOURNAL_HEADER_BYTES);
    await readFully(journal, header, 0);
    if (!header.subarray(0, 8).equals(JOURNAL_MAGIC)) return "not a journal record (bad magic)";
    const version = header.readUInt32LE(8);
    if (version !== JOURNAL_VERSION) return `unknown journal record version ${version}`;
    const offset = Number(header.readBigUInt64LE(32));
    const length = header.readUInt32LE(40);
    if (bytes < JOURNAL_HEADER_BYTES + length) return "torn record (short data)";
    const data = Buffer.alloc(length);
    await readFully(journal, data, JOURNAL_HEADER_BYTES);
    const crc = crc32c(data, crc32c(header.subarray(0, CRC_FIELD))) >>> 0;
    if (crc !== header.readUInt32LE(CRC_FIELD)) return "torn record (CRC mismatch)";
    // Checked after the CRC: a valid record of another volume is a leftover, not a torn write.
    if (!header.subarray(16, 32).equals(journalVolumeTag(meta.id))) {
      return "record of another volume with this name";
    }
    if (
      length === 0 ||
      length % meta.blockSize !== 0 ||
      offset % meta.blockSize !== 0 ||
      offset + length > size
    ) {
      return `record outside the volume (offset ${offset}, length ${length})`;
    }
    await writeFully(image, data, offset);
    await image.datasync();
    return { offset, length };
  })();
  await journal.truncate(0);
  await journal.datasync();
  return typeof reason === "string" ? { discarded: { bytes, reason } } : { recovered: reason };
}

async function readFully(handle: FileHandle, buffer: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buffer.length) {
    const { bytesRead } = await handle.read(buffer, done, buffer.length - done, position + done);
    if (bytesRead === 0) throw new Error(`unexpected end of file at ${position + done}`);
    done += bytesRead;
  }
}

async function writeFully(handle: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
    done += bytesWritten;
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
  /** `ATOMIC_WRITE_MAX_BYTES / blockSize`. */
  readonly atomicWriteMaxBlocks: number;
  /** When this open completed an atomic write from the journal: which bytes it wrote. */
  readonly recoveredAtomicWrite: RecoveredAtomicWrite | undefined;
  /** When this open dropped what the journal held (a record torn by a crash): what and why. */
  readonly discardedAtomicJournal: DiscardedAtomicJournal | undefined;

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
  /** The last atomic write queued: atomic writes run one at a time (one journal). */
  private atomicTail: Promise<void> = Promise.resolve();
  private readonly volumeTag: Buffer;

  /** Use `openFileVolume`. */
  constructor(
    private readonly handle: FileHandle,
    private readonly journal: FileHandle,
    private readonly metaPath: string,
    meta: FileVolumeMeta,
    grownFrom: number | undefined,
    recovery: AtomicRecovery = {},
  ) {
    this.id = meta.id;
    this.name = meta.name;
    this.blockSize = meta.blockSize;
    this.sizeBytes = meta.size;
    this.blocks = meta.size / meta.blockSize;
    this.grownFrom = grownFrom !== undefined && grownFrom < meta.size ? grownFrom : undefined;
    this.atomicWriteMaxBlocks = ATOMIC_WRITE_MAX_BYTES / meta.blockSize;
    this.recoveredAtomicWrite = recovery.recovered;
    this.discardedAtomicJournal = recovery.discarded;
    this.volumeTag = journalVolumeTag(meta.id);
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
    // Unzeroed memory is safe here: every byte is either read from the file or zero-filled
    // below. From the shared data-buffer pool: the iSCSI layer gives it back once sent.
    const buffer = dataBuffers.acquire(length);
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

  /**
   * Atomic write through the journal (module comment, "Atomic writes"): durable when it
   * resolves, whatever `options` say. Waits for the atomic writes queued before it.
   */
  async writeAtomic(lba: number, data: Buffer, _options?: WriteOptions): Promise<void> {
    if (data.length % this.blockSize !== 0 || data.length > ATOMIC_WRITE_MAX_BYTES) {
      throw new StorageError(
        StorageErrorCode.Internal,
        `atomic write of ${data.length} bytes is not a whole number of ${this.blockSize}-byte ` +
          `blocks, or longer than ${this.atomicWriteMaxBlocks} blocks`,
        lba,
      );
    }
    this.check(lba, data.length / this.blockSize);
    if (this.syncFailure !== undefined) throw this.syncFailure;
    if (data.length === 0) return;
    this.enter();
    try {
      const run = this.atomicTail.then(() => this.commitAtomic(lba, data));
      this.atomicTail = run.then(noop, noop);
      await run;
    } finally {
      this.leave();
    }
  }

  /** Steps 1-3 of the module comment. Runs alone (`atomicTail`). */
  private async commitAtomic(lba: number, data: Buffer): Promise<void> {
    if (this.syncFailure !== undefined) throw this.syncFailure;
    const offset = lba * this.blockSize;
    const blocks = data.length / this.blockSize;
    const what = `atomic write of ${blocks} block(s)`;
    // 1. The record. Until the journal's fdatasync returns, a crash leaves a torn or no record
    // and an untouched image; a failed write leaves an incomplete record, dropped here (and
    // durably so, or the volume is poisoned: a record that landed after all must never outlive
    // this failure, it would be replayed over later writes).
    try {
      await writeFully(this.journal, encodeJournalHeader(this.volumeTag, offset, data), 0);
      await writeFully(this.journal, data, JOURNAL_HEADER_BYTES);
    } catch (error) {
      try {
        await this.journal.truncate(0);
        await this.journal.datasync();
      } catch (cleanup) {
        throw this.poison(`${what}: dropping the journal record`, lba, cleanup);
      }
      throw ioError(StorageErrorCode.WriteFault, `${what} (journal)`, this, lba, error);
    }
    try {
      await this.journal.datasync();
    } catch (error) {
      throw this.poison(`${what}: fdatasync of the journal`, lba, error);
    }
    // Committed. From here on a failure leaves the image possibly torn and the record in the
    // journal: the volume refuses writes until it is reopened, which replays the record.
    try {
      await this.writeAt(data, offset, lba);
    } catch (error) {
      throw this.poison(`${what}: writing the image`, lba, error);
    }
    // 2. The image is durable before the record goes (`sync` poisons the volume on failure).
    await this.sync();
    // 3. Empty the journal, durably, before resolving: afterwards a later acknowledged write to
    // these blocks could be clobbered by a replay of this record.
    try {
      await this.journal.truncate(0);
      await this.journal.datasync();
    } catch (error) {
      throw this.poison(`${what}: emptying the journal`, lba, error);
    }
  }

  /** Refuse writes and flushes from now on (as after a failed fdatasync); returns the error. */
  private poison(what: string, lba: number, cause: unknown): StorageError {
    this.syncFailure ??= ioError(StorageErrorCode.WriteFault, what, this, lba, cause);
    return this.syncFailure;
  }

  flush(): Promise<void> {
    if (this.closed) return Promise.reject(notReady(this));
    return this.sync();
  }

  /** `flush` without the closed check: atomic writes in flight when `close` starts finish. */
  private sync(): Promise<void> {
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
      try {
        await this.handle.close();
      } finally {
        await this.journal.close();
      }
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

function noop(): void {}

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
