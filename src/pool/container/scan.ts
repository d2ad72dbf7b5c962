/**
 * The container scanner: walks every record of a container file and checks it (FORMAT.md §6).
 *
 * Without keys it checks structure and CRC32C only: what scrub runs, and what rebuilds the index
 * of an unsealed container. With the domain's keys it also authenticates (GCM tag) and decodes
 * every payload and checks its fingerprint.
 *
 * - A sealed container (valid footer and directory) is walked by its directory, so a damaged
 *   record header does not hide the records after it.
 * - An unsealed one is walked by record headers. Where the walk stops, the scanner searches for a
 *   later intact record: if there is one, the bytes between are damage; if not, they are the torn
 *   tail of an interrupted append (or seal), and `validEnd` says where to truncate.
 *
 * The scanner never modifies the file; what to do about damage or a tail is the pool's decision.
 */
import { type FileHandle, open } from "node:fs/promises";
import { Decompressor } from "zstd-napi";
import type { DomainKeys } from "../../crypto/index.js";
import {
  type Codec,
  type ContainerHeader,
  DamageReason,
  DIRECTORY_MAGIC,
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
  RECORD_MAGIC,
  type RecordHeader,
} from "./format.js";
import { type ContainerKeys, checkRecord, containerKeys, openRecord } from "./record.js";

/** An intact record (structure and CRC32C verified; tag and content too when keys were given). */
export interface ScannedRecord {
  readonly offset: number;
  /** Bytes the record occupies: header + payload. */
  readonly recordLength: number;
  readonly fingerprint: Buffer;
  readonly logicalLength: number;
  readonly storedLength: number;
  readonly codec: Codec;
}

/** A range of the file that failed a check. */
export interface Damage {
  readonly offset: number;
  readonly length: number;
  readonly reason: DamageReason;
  readonly message: string;
  /**
   * The fingerprint of the damaged record when it is known from a trusted source (the CRC-checked
   * directory of a sealed container, or a record whose CRC verified but whose tag did not).
   */
  readonly fingerprint?: Buffer | undefined;
}

/** Trailing bytes of an unsealed container that hold no intact record. */
export interface TornTail {
  readonly offset: number;
  readonly length: number;
  /** "seal" when the tail starts with a directory (a seal was interrupted or its footer damaged). */
  readonly kind: "append" | "seal";
}

export interface ScanResult {
  readonly path: string;
  readonly fileSize: number;
  /** Undefined when the file header is damaged (then `damage` says so). */
  readonly header: ContainerHeader | undefined;
  /** A valid footer was found (FORMAT.md §5). */
  readonly sealed: boolean;
  readonly footer: Footer | undefined;
  /** The directory, when the container is sealed and its directory intact. */
  readonly directory: readonly DirectoryEntry[] | undefined;
  /** Intact records in file order. */
  readonly records: readonly ScannedRecord[];
  /** Damaged ranges in file order. Empty for a healthy container. */
  readonly damage: readonly Damage[];
  /** Unsealed only: the torn tail, if any. */
  readonly tail: TornTail | undefined;
  /** Where the valid data ends: the tail's offset when there is one, else the file size. */
  readonly validEnd: number;
  /** Whether GCM tags and payloads were checked too (keys given and file header intact). */
  readonly tagsVerified: boolean;
}

export interface ScanOptions {
  /** Called now and then with the bytes scanned so far and the file size (scrub progress). */
  readonly onProgress?: ((scanned: number, total: number) => void) | undefined;
  /** With keys: also check HMAC(plaintext) = fingerprint (default true). */
  readonly verifyFingerprint?: boolean | undefined;
}

const WINDOW_BYTES = 4 * 1024 * 1024;
const PROGRESS_EVERY = 16 * 1024 * 1024;

/**
 * Sequential reads through a window: one large read serves many small records. Returned views
 * stay valid (each refill allocates a new buffer).
 */
class FileWindow {
  private buf = Buffer.alloc(0);
  private start = 0;

  constructor(
    private readonly handle: FileHandle,
    readonly size: number,
  ) {}

  /** Up to `len` bytes at `pos` (fewer only at the end of the file). */
  async get(pos: number, len: number): Promise<Buffer> {
    const want = Math.max(0, Math.min(len, this.size - pos));
    if (pos >= this.start && pos + want <= this.start + this.buf.length) {
      return this.buf.subarray(pos - this.start, pos - this.start + want);
    }
    const n = Math.min(Math.max(want, WINDOW_BYTES), this.size - pos);
    const buf = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const { bytesRead } = await this.handle.read(buf, got, n - got, pos + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    this.buf = buf.subarray(0, got);
    this.start = pos;
    return this.buf.subarray(0, Math.min(want, got));
  }
}

type Attempt =
  | { readonly ok: true; readonly header: RecordHeader; readonly bytes: Buffer }
  | { readonly ok: false; readonly reason: DamageReason; readonly message: string };

/**
 * Scan the container at `path`. Pass the domain's keys to verify tags and payloads too (the
 * container's domain must be theirs). Rejects only when the file cannot be read at all; every
 * problem with its content is reported in the result.
 */
export async function scanContainer(
  path: string,
  keys?: DomainKeys,
  options: ScanOptions = {},
): Promise<ScanResult> {
  const handle = await open(path, "r");
  try {
    return await new Scan(path, handle, (await handle.stat()).size, keys, options).run();
  } finally {
    await handle.close();
  }
}

class Scan {
  private readonly win: FileWindow;
  private readonly records: ScannedRecord[] = [];
  private readonly damage: Damage[] = [];
  private header: ContainerHeader | undefined;
  private crypto: ContainerKeys | undefined;
  private decompressor: Decompressor | undefined;
  private lastProgress = 0;

  constructor(
    private readonly path: string,
    handle: FileHandle,
    private readonly size: number,
    private readonly keys: DomainKeys | undefined,
    private readonly options: ScanOptions,
  ) {
    this.win = new FileWindow(handle, size);
  }

  async run(): Promise<ScanResult> {
    const { size } = this;
    if (size < FILE_HEADER_BYTES) {
      this.addDamage(0, size, DamageReason.FileHeader, `file header cut short (${size} bytes)`);
      return this.result(false, undefined, undefined, undefined);
    }
    try {
      this.header = decodeFileHeader(await this.win.get(0, FILE_HEADER_BYTES));
    } catch (error) {
      if (!(error instanceof FormatError)) throw error;
      this.addDamage(0, FILE_HEADER_BYTES, error.reason, error.message);
    }
    if (this.keys !== undefined && this.header !== undefined) {
      if (this.header.domainId !== this.keys.domainId) {
        throw new Error(
          `container ${this.path} belongs to domain ${this.header.domainId}, not ${this.keys.domainId}`,
        );
      }
      this.crypto = containerKeys(this.keys, this.header.containerId);
      this.decompressor = new Decompressor();
    }

    const sealed = await this.readSeal();
    if (sealed !== undefined && sealed.directory !== undefined) {
      await this.walkDirectory(sealed.directory, sealed.footer.directoryOffset);
      return this.result(true, sealed.footer, sealed.directory, undefined);
    }
    if (sealed !== undefined) {
      // Sealed, but the directory is damaged: walk by headers up to it; no tail is possible.
      await this.walkHeaders(sealed.footer.directoryOffset, true);
      return this.result(true, sealed.footer, undefined, undefined);
    }
    const tail = await this.walkHeaders(size, false);
    return this.result(false, undefined, undefined, tail);
  }

  private result(
    sealed: boolean,
    footer: Footer | undefined,
    directory: DirectoryEntry[] | undefined,
    tail: TornTail | undefined,
  ): ScanResult {
    this.options.onProgress?.(this.size, this.size);
    return {
      path: this.path,
      fileSize: this.size,
      header: this.header,
      sealed,
      footer,
      directory,
      records: this.records,
      damage: this.damage,
      tail,
      validEnd: tail?.offset ?? this.size,
      tagsVerified: this.crypto !== undefined,
    };
  }

  private addDamage(
    offset: number,
    length: number,
    reason: DamageReason,
    message: string,
    fingerprint?: Buffer,
  ): void {
    this.damage.push({ offset, length, reason, message, fingerprint });
  }

  private progress(pos: number): void {
    if (this.options.onProgress !== undefined && pos - this.lastProgress >= PROGRESS_EVERY) {
      this.lastProgress = pos;
      this.options.onProgress(pos, this.size);
    }
  }

  /** FORMAT.md §5: footer, then directory. Undefined when there is no valid footer. */
  private async readSeal(): Promise<
    { footer: Footer; directory: DirectoryEntry[] | undefined } | undefined
  > {
    if (this.size < FILE_HEADER_BYTES + FOOTER_BYTES) return undefined;
    let footer: Footer;
    try {
      footer = decodeFooter(await this.win.get(this.size - FOOTER_BYTES, FOOTER_BYTES), this.size);
    } catch (error) {
      if (error instanceof FormatError) return undefined; // unsealed (or footer damaged: a tail)
      throw error;
    }
    if (this.header !== undefined && footer.containerId !== this.header.containerId) {
      return undefined; // someone else's footer: not a seal of this container
    }
    const dirOffset = footer.directoryOffset;
    const dirLength = this.size - FOOTER_BYTES - dirOffset;
    try {
      const { entries, crc } = decodeDirectory(await this.win.get(dirOffset, dirLength));
      if (crc !== footer.directoryCrc || entries.length !== footer.entryCount) {
        throw new FormatError(DamageReason.Directory, "directory does not match the footer");
      }
      return { footer, directory: entries };
    } catch (error) {
      if (!(error instanceof FormatError)) throw error;
      this.addDamage(dirOffset, dirLength, DamageReason.Directory, error.message);
      return { footer, directory: undefined };
    }
  }

  /** Structure and CRC32C of the record at `pos`, which must end by `end`. */
  private async attempt(pos: number, end: number): Promise<Attempt> {
    const head = await this.win.get(pos, Math.min(RECORD_HEADER_BYTES, end - pos));
    let header: RecordHeader;
    try {
      header = decodeRecordHeader(head, 0);
      const length = RECORD_HEADER_BYTES + header.storedLength;
      if (pos + length > end) {
        throw new FormatError(DamageReason.Truncated, `record of ${length} bytes runs past ${end}`);
      }
      const bytes = await this.win.get(pos, length);
      return { ok: true, header: checkRecord(bytes), bytes };
    } catch (error) {
      if (!(error instanceof FormatError)) throw error;
      return { ok: false, reason: error.reason, message: error.message };
    }
  }

  /** With keys: authenticate and decode an intact record; undefined when it passes. */
  private authenticate(pos: number, bytes: Buffer): FormatError | undefined {
    if (this.crypto === undefined || this.decompressor === undefined) return undefined;
    try {
      openRecord(this.crypto, pos, bytes, {
        verifyFingerprint: this.options.verifyFingerprint ?? true,
        decompressor: this.decompressor,
      });
      return undefined;
    } catch (error) {
      if (error instanceof FormatError) return error;
      throw error;
    }
  }

  private accept(pos: number, header: RecordHeader, bytes: Buffer): void {
    const fingerprint = Buffer.from(header.fingerprint);
    const failure = this.authenticate(pos, bytes);
    if (failure !== undefined) {
      this.addDamage(pos, bytes.length, failure.reason, failure.message, fingerprint);
      return;
    }
    this.records.push({
      offset: pos,
      recordLength: bytes.length,
      fingerprint,
      logicalLength: header.logicalLength,
      storedLength: header.storedLength,
      codec: header.codec,
    });
  }

  /** Sealed container: the directory says where every record is (FORMAT.md §4). */
  private async walkDirectory(entries: readonly DirectoryEntry[], end: number): Promise<void> {
    let expected = FILE_HEADER_BYTES;
    for (const e of entries) {
      const length = RECORD_HEADER_BYTES + e.storedLength;
      if (e.offset !== expected) {
        const from = Math.min(expected, e.offset);
        this.addDamage(
          from,
          Math.abs(e.offset - expected),
          DamageReason.Mismatch,
          `directory entry at ${e.offset} where the previous record ends at ${expected}`,
        );
      }
      expected = Math.max(expected, e.offset + length);
      if (e.offset < FILE_HEADER_BYTES || e.offset + length > end) {
        this.addDamage(
          e.offset,
          length,
          DamageReason.Mismatch,
          "directory entry outside the record area",
          e.fingerprint,
        );
        continue;
      }
      const bytes = await this.win.get(e.offset, length);
      let header: RecordHeader;
      try {
        const h = decodeRecordHeader(bytes, 0);
        if (h.logicalLength !== e.logicalLength || h.storedLength !== e.storedLength) {
          throw new FormatError(
            DamageReason.Mismatch,
            "record lengths differ from its directory entry",
          );
        }
        header = checkRecord(bytes);
        if (!header.fingerprint.equals(e.fingerprint)) {
          throw new FormatError(
            DamageReason.Mismatch,
            "record fingerprint differs from its directory entry",
          );
        }
      } catch (error) {
        if (!(error instanceof FormatError)) throw error;
        this.addDamage(e.offset, length, error.reason, error.message, e.fingerprint);
        continue;
      }
      this.accept(e.offset, header, bytes);
      this.progress(e.offset + length);
    }
    if (expected !== end) {
      this.addDamage(
        Math.min(expected, end),
        Math.abs(end - expected),
        DamageReason.Mismatch,
        `directory entries end at ${expected}, the directory starts at ${end}`,
      );
    }
  }

  /**
   * Walk records by their headers from the file header to `end`. `bounded` (a sealed container
   * with a damaged directory): everything before `end` must be records, so a failure with no
   * intact record after it is damage. Otherwise it is a torn tail, returned.
   */
  private async walkHeaders(end: number, bounded: boolean): Promise<TornTail | undefined> {
    let pos = FILE_HEADER_BYTES;
    while (pos < end) {
      const at = await this.attempt(pos, end);
      if (at.ok) {
        this.accept(pos, at.header, at.bytes);
        pos += at.bytes.length;
        this.progress(pos);
        continue;
      }
      const next = await this.findIntact(pos + 1, end);
      if (next === undefined) {
        if (bounded) {
          this.addDamage(pos, end - pos, at.reason, at.message);
          return undefined;
        }
        const start = await this.win.get(pos, DIRECTORY_MAGIC.length);
        return {
          offset: pos,
          length: end - pos,
          kind: start.equals(DIRECTORY_MAGIC) ? "seal" : "append",
        };
      }
      this.addDamage(pos, next - pos, at.reason, at.message);
      pos = next;
    }
    return undefined;
  }

  /** The offset of the first structurally intact record at or after `from`, before `end`. */
  private async findIntact(from: number, end: number): Promise<number | undefined> {
    let pos = from;
    while (pos + RECORD_HEADER_BYTES <= end) {
      const view = await this.win.get(pos, Math.min(WINDOW_BYTES, end - pos));
      const i = view.indexOf(RECORD_MAGIC);
      if (i < 0) {
        // The magic may straddle the end of the view: step back one byte.
        pos += Math.max(1, view.length - (RECORD_MAGIC.length - 1));
        continue;
      }
      const candidate = pos + i;
      if ((await this.attempt(candidate, end)).ok) return candidate;
      pos = candidate + 1;
    }
    return undefined;
  }
}
