/**
 * Reading chunks back from a container (FORMAT.md §3) and reading a sealed container's directory
 * (§4, §5) without a scan.
 *
 * Contract: `read` resolves with the exact plaintext grain that was appended at that offset under
 * that fingerprint, or rejects with a `ContainerIntegrityError` (a StorageError with code
 * MediumError); it never returns other bytes. A reader may be opened on a container that a writer
 * is still appending to: records whose `append` has resolved are readable.
 */
import { type FileHandle, open } from "node:fs/promises";
import { Decompressor } from "zstd-napi";
import { type DomainKeys, TAG_BYTES } from "../../crypto/index.js";
import { ContainerIntegrityError } from "./errors.js";
import {
  type ContainerHeader,
  DamageReason,
  type DirectoryEntry,
  decodeDirectory,
  decodeFileHeader,
  decodeFooter,
  decodeRecordHeader,
  FILE_HEADER_BYTES,
  FOOTER_BYTES,
  type Footer,
  FormatError,
  RECORD_HEADER_BYTES,
} from "./format.js";
import { type ContainerKeys, containerKeys, openRecord } from "./record.js";

export interface ContainerReaderOptions {
  /**
   * Recompute HMAC(plaintext) on every read and compare it with the fingerprint (default true).
   * The GCM tag already proves the record is what a key holder wrote for this fingerprint; this
   * also catches a writer that was handed a wrong fingerprint, at about 1 µs per 4 KiB.
   */
  readonly verifyFingerprint?: boolean | undefined;
}

/** A 4 KiB grain stored uncompressed: the first guess of a record's size. */
const DEFAULT_READ_HINT = RECORD_HEADER_BYTES + 4096 + TAG_BYTES;

async function readAt(
  handle: FileHandle,
  buf: Buffer,
  start: number,
  position: number,
): Promise<number> {
  let got = start;
  while (got < buf.length) {
    const { bytesRead } = await handle.read(buf, got, buf.length - got, position + got - start);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

function integrity(
  path: string,
  offset: number | undefined,
  error: unknown,
): ContainerIntegrityError {
  if (error instanceof FormatError) {
    return new ContainerIntegrityError(path, offset, error.reason, error.message, { cause: error });
  }
  throw error;
}

export class ContainerReader {
  private readonly decompressor = new Decompressor();
  private readHint = DEFAULT_READ_HINT;
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly header: ContainerHeader,
    private readonly keys: ContainerKeys,
    private readonly verifyFingerprint: boolean,
  ) {}

  /**
   * Open the container at `path` for reading with its domain's keys. Rejects with a
   * ContainerIntegrityError when the file header is damaged, and with an Error when the
   * container belongs to another domain (a caller bug, not damage).
   */
  static async open(
    path: string,
    keys: DomainKeys,
    options: ContainerReaderOptions = {},
  ): Promise<ContainerReader> {
    const handle = await open(path, "r");
    try {
      const buf = Buffer.alloc(FILE_HEADER_BYTES);
      const got = await readAt(handle, buf, 0, 0);
      let header: ContainerHeader;
      try {
        header = decodeFileHeader(buf.subarray(0, got));
      } catch (error) {
        throw integrity(path, 0, error);
      }
      if (header.domainId !== keys.domainId) {
        throw new Error(
          `container ${path} belongs to domain ${header.domainId}, not ${keys.domainId}`,
        );
      }
      return new ContainerReader(
        path,
        handle,
        header,
        containerKeys(keys, header.containerId),
        options.verifyFingerprint ?? true,
      );
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  get containerId(): string {
    return this.header.containerId;
  }

  /**
   * The plaintext of the record at `offset`, which must hold `fingerprint`. `recordLength` (from
   * the writer's AppendResult or the directory: 60 + stored length) saves a second read when the
   * record is larger than the last one read; it is only a hint.
   */
  async read(offset: number, fingerprint: Uint8Array, recordLength?: number): Promise<Buffer> {
    if (this.closed) throw new Error(`container ${this.path}: reader is closed`);
    if (!Number.isSafeInteger(offset) || offset < FILE_HEADER_BYTES) {
      throw new ContainerIntegrityError(
        this.path,
        offset,
        DamageReason.Header,
        "no record can start there",
      );
    }
    const guess = Math.max(RECORD_HEADER_BYTES, recordLength ?? this.readHint);
    let buf = Buffer.allocUnsafe(guess);
    const got = await readAt(this.handle, buf, 0, offset);
    let length: number;
    try {
      length = RECORD_HEADER_BYTES + decodeRecordHeader(buf.subarray(0, got), 0).storedLength;
    } catch (error) {
      throw integrity(this.path, offset, error);
    }
    if (length > got) {
      if (got < guess) {
        throw new ContainerIntegrityError(
          this.path,
          offset,
          DamageReason.Truncated,
          "record runs past the end of the file",
        );
      }
      const whole = Buffer.allocUnsafe(length);
      buf.copy(whole, 0, 0, got);
      if ((await readAt(this.handle, whole, got, offset + got)) < length) {
        throw new ContainerIntegrityError(
          this.path,
          offset,
          DamageReason.Truncated,
          "record runs past the end of the file",
        );
      }
      buf = whole;
    }
    this.readHint = length;
    try {
      return openRecord(this.keys, offset, buf.subarray(0, length), {
        expectFingerprint: fingerprint,
        verifyFingerprint: this.verifyFingerprint,
        decompressor: this.decompressor,
      });
    } catch (error) {
      throw integrity(this.path, offset, error);
    }
  }

  /** The directory of a sealed container (FORMAT.md §4), or undefined when it is not sealed. */
  async directory(): Promise<readonly DirectoryEntry[] | undefined> {
    return (await readSealedDirectory(this.handle, this.path))?.entries;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }
}

/** The file header of a container, without keys. Rejects with ContainerIntegrityError if damaged. */
export async function readContainerHeader(path: string): Promise<ContainerHeader> {
  const handle = await open(path, "r");
  try {
    const buf = Buffer.alloc(FILE_HEADER_BYTES);
    const got = await readAt(handle, buf, 0, 0);
    try {
      return decodeFileHeader(buf.subarray(0, got));
    } catch (error) {
      throw integrity(path, 0, error);
    }
  } finally {
    await handle.close();
  }
}

export interface SealedDirectory {
  readonly header: ContainerHeader;
  readonly footer: Footer;
  readonly entries: readonly DirectoryEntry[];
}

/**
 * Without keys and without a scan: the header, footer and directory of a sealed container, what
 * an index rebuild needs. Resolves undefined when the container is not sealed (no valid footer:
 * scan it instead); rejects with ContainerIntegrityError when the header or the directory of a
 * sealed container is damaged.
 */
export async function readDirectory(path: string): Promise<SealedDirectory | undefined> {
  const handle = await open(path, "r");
  try {
    return await readSealedDirectory(handle, path);
  } finally {
    await handle.close();
  }
}

async function readSealedDirectory(
  handle: FileHandle,
  path: string,
): Promise<SealedDirectory | undefined> {
  const size = (await handle.stat()).size;
  if (size < FILE_HEADER_BYTES + FOOTER_BYTES) return undefined;
  const head = Buffer.alloc(FILE_HEADER_BYTES);
  await readAt(handle, head, 0, 0);
  let header: ContainerHeader;
  try {
    header = decodeFileHeader(head);
  } catch (error) {
    throw integrity(path, 0, error);
  }
  const tail = Buffer.alloc(FOOTER_BYTES);
  await readAt(handle, tail, 0, size - FOOTER_BYTES);
  let footer: Footer;
  try {
    footer = decodeFooter(tail, size);
  } catch {
    return undefined;
  }
  if (footer.containerId !== header.containerId) return undefined;
  const dir = Buffer.alloc(size - FOOTER_BYTES - footer.directoryOffset);
  await readAt(handle, dir, 0, footer.directoryOffset);
  try {
    const { entries, crc } = decodeDirectory(dir);
    if (crc !== footer.directoryCrc || entries.length !== footer.entryCount) {
      throw new FormatError(DamageReason.Directory, "directory does not match the footer");
    }
    return { header, footer, entries };
  } catch (error) {
    throw integrity(path, footer.directoryOffset, error);
  }
}
