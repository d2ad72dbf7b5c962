/**
 * Byte layouts of a chunk container (FORMAT.md): file header §2, record header §3, AAD §3,
 * directory §4, footer §5. Pure functions, no I/O and no keys: what can be checked without keys
 * (magic, consistency, CRC32C) is checked here.
 */
import { crc32c } from "@node-rs/crc32";
import {
  FINGERPRINT_BYTES,
  ID_BYTES,
  idFromBytes,
  idToBytes,
  NONCE_BYTES,
  TAG_BYTES,
} from "../../crypto/index.js";

export const FORMAT_VERSION = 1;

/** FORMAT.md §2 */
export const FILE_MAGIC = Buffer.from("SANMUXCT", "ascii");
export const FILE_HEADER_BYTES = 64;
/** FORMAT.md §3 */
export const RECORD_MAGIC = Buffer.from("RC", "ascii");
export const RECORD_HEADER_BYTES = 60;
export const AAD_BYTES = 64;
/** Largest grain a record may hold (a sanity bound for scanners, far above any grain size). */
export const MAX_LOGICAL_BYTES = 16 * 1024 * 1024;
/** FORMAT.md §4 */
export const DIRECTORY_MAGIC = Buffer.from("SXDR", "ascii");
export const DIRECTORY_FIXED_BYTES = 12;
export const DIRECTORY_ENTRY_BYTES = 48;
/** FORMAT.md §5 */
export const FOOTER_MAGIC = Buffer.from("SANMUXFT", "ascii");
export const FOOTER_BYTES = 64;

/** FORMAT.md §3, codec byte. */
export const Codec = { None: 0, Zstd: 1 } as const;
export type Codec = (typeof Codec)[keyof typeof Codec];

/**
 * Why a part of a container failed a check (FORMAT.md §3, §6). Stable strings: scrub reports and
 * tests use them.
 */
export const DamageReason = {
  /** The file header is missing, torn or inconsistent. */
  FileHeader: "file-header",
  /** A record header is inconsistent (magic, codec, flags, lengths). */
  Header: "header",
  /** A record extends past the end of the file (or of the record area). */
  Truncated: "truncated",
  /** CRC32C mismatch. */
  Crc: "crc",
  /** The record is not the fingerprint asked for, or its plaintext does not hash to it. */
  Fingerprint: "fingerprint",
  /** AES-GCM tag mismatch: tampered, moved, or sealed under another key. */
  Tag: "tag",
  /** Authenticated payload that does not decode to the logical length (zstd failure). */
  Content: "content",
  /** The directory of a sealed container is damaged. */
  Directory: "directory",
  /** The footer is damaged (the container then reads as unsealed). */
  Footer: "footer",
  /** A record does not match its directory entry, or the entries do not tile the record area. */
  Mismatch: "mismatch",
} as const;
export type DamageReason = (typeof DamageReason)[keyof typeof DamageReason];

/** A layout check failed; `reason` says which. Caught by readers and turned into their errors. */
export class FormatError extends Error {
  override readonly name = "FormatError";
  constructor(
    readonly reason: DamageReason,
    message: string,
  ) {
    super(message);
  }
}

function u64(buf: Buffer, at: number): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new FormatError(DamageReason.Header, `64-bit field at ${at} out of range: ${v}`);
  }
  return Number(v);
}

// ---------------------------------------------------------------------------------------------
// File header (FORMAT.md §2)

export interface ContainerHeader {
  readonly version: number;
  readonly containerId: string;
  readonly domainId: string;
  /** Creation time, ms since the Unix epoch. */
  readonly createdAt: number;
}

export function encodeFileHeader(h: Omit<ContainerHeader, "version">): Buffer {
  const buf = Buffer.alloc(FILE_HEADER_BYTES);
  FILE_MAGIC.copy(buf, 0);
  buf.writeUInt16LE(FORMAT_VERSION, 8);
  buf.writeUInt16LE(FILE_HEADER_BYTES, 10);
  idToBytes(h.containerId).copy(buf, 16);
  idToBytes(h.domainId).copy(buf, 32);
  buf.writeBigUInt64LE(BigInt(h.createdAt), 48);
  buf.writeUInt32LE(crc32c(buf.subarray(0, 60)), 60);
  return buf;
}

export function decodeFileHeader(buf: Buffer): ContainerHeader {
  const bad = (what: string) => new FormatError(DamageReason.FileHeader, `file header: ${what}`);
  if (buf.length < FILE_HEADER_BYTES) throw bad(`only ${buf.length} of ${FILE_HEADER_BYTES} bytes`);
  if (!buf.subarray(0, 8).equals(FILE_MAGIC)) throw bad("not a sanmux container (bad magic)");
  if (buf.readUInt32LE(60) !== crc32c(buf.subarray(0, 60))) throw bad("CRC32C mismatch");
  const version = buf.readUInt16LE(8);
  if (version !== FORMAT_VERSION) throw bad(`unsupported format version ${version}`);
  if (buf.readUInt16LE(10) !== FILE_HEADER_BYTES) throw bad("unexpected header length");
  if (buf.readUInt32LE(12) !== 0) throw bad("unknown flags");
  return {
    version,
    containerId: idFromBytes(buf.subarray(16, 32)),
    domainId: idFromBytes(buf.subarray(32, 48)),
    createdAt: u64(buf, 48),
  };
}

// ---------------------------------------------------------------------------------------------
// Record header (FORMAT.md §3)

/**
 * Bytes of a fingerprint that identify a chunk to a reader: the pool's metadata keys and
 * references chunks by the first 16 bytes of the 32-byte fingerprint a record header holds
 * (src/pool/meta/README.md, "Fingerprints: 16 bytes"). The header keeps all 32, and the GCM tag
 * still authenticates all 32 (they are in the AAD).
 */
export const FINGERPRINT_MATCH_BYTES = 16;

/**
 * Whether a record holding `recordFingerprint` (32 bytes, from its header) is the chunk `asked`
 * names: their first FINGERPRINT_MATCH_BYTES agree. `asked` may be the full fingerprint (the write
 * path, a container directory) or the metadata's 16 bytes (the index, a map entry); a slot
 * longer than 16 bytes is compared on its first 16 only, whatever follows.
 */
export function fingerprintMatches(recordFingerprint: Uint8Array, asked: Uint8Array): boolean {
  if (asked.length < FINGERPRINT_MATCH_BYTES || recordFingerprint.length < FINGERPRINT_MATCH_BYTES)
    return false;
  for (let i = 0; i < FINGERPRINT_MATCH_BYTES; i++) {
    if (recordFingerprint[i] !== asked[i]) return false;
  }
  return true;
}

export interface RecordHeader {
  readonly codec: Codec;
  readonly flags: number;
  readonly logicalLength: number;
  readonly storedLength: number;
  /** A view into the buffer the header was decoded from (copy it to keep it). */
  readonly fingerprint: Buffer;
  /** A view into the buffer the header was decoded from. */
  readonly nonce: Buffer;
  readonly crc: number;
}

/** Write a record header at `buf[at..at+60)`, CRC field excluded (see `finishRecordCrc`). */
export function writeRecordHeader(
  buf: Buffer,
  at: number,
  h: Omit<RecordHeader, "crc" | "fingerprint" | "nonce"> & {
    fingerprint: Uint8Array;
    nonce: Uint8Array;
  },
): void {
  RECORD_MAGIC.copy(buf, at);
  buf[at + 2] = h.codec;
  buf[at + 3] = h.flags;
  buf.writeUInt32LE(h.logicalLength, at + 4);
  buf.writeUInt32LE(h.storedLength, at + 8);
  buf.set(h.fingerprint, at + 12);
  buf.set(h.nonce, at + 44);
}

/**
 * Compute and store the CRC32C of a complete record (header bytes 0..55 then the payload) laid
 * out in `record` (header at 0, payload right after).
 */
export function finishRecordCrc(record: Buffer): void {
  record.writeUInt32LE(recordCrc(record), 56);
}

/** CRC32C of a complete record as FORMAT.md §3 defines it. */
export function recordCrc(record: Buffer): number {
  const head = crc32c(record.subarray(0, 56));
  return crc32c(record.subarray(RECORD_HEADER_BYTES), head);
}

/**
 * Decode and check the consistency of the record header at `buf[at..]` (FORMAT.md §3 rules).
 * Throws FormatError (reason Header or Truncated). Does not check the CRC.
 */
export function decodeRecordHeader(buf: Buffer, at = 0): RecordHeader {
  if (buf.length - at < RECORD_HEADER_BYTES) {
    throw new FormatError(DamageReason.Truncated, "record header cut short");
  }
  const bad = (what: string) => new FormatError(DamageReason.Header, `record header: ${what}`);
  if (buf[at] !== RECORD_MAGIC[0] || buf[at + 1] !== RECORD_MAGIC[1]) throw bad("bad magic");
  const codec = buf[at + 2]!;
  const flags = buf[at + 3]!;
  const logicalLength = buf.readUInt32LE(at + 4);
  const storedLength = buf.readUInt32LE(at + 8);
  if (codec !== Codec.None && codec !== Codec.Zstd) throw bad(`unknown codec ${codec}`);
  if (flags !== 0) throw bad(`unknown flags ${flags}`);
  if (logicalLength === 0 || logicalLength > MAX_LOGICAL_BYTES) {
    throw bad(`logical length ${logicalLength} out of range`);
  }
  if (
    codec === Codec.None
      ? storedLength !== logicalLength + TAG_BYTES
      : storedLength <= TAG_BYTES || storedLength >= logicalLength + TAG_BYTES
  ) {
    throw bad(
      `stored length ${storedLength} inconsistent with codec ${codec} and logical length ${logicalLength}`,
    );
  }
  return {
    codec,
    flags,
    logicalLength,
    storedLength,
    fingerprint: buf.subarray(at + 12, at + 12 + FINGERPRINT_BYTES),
    nonce: buf.subarray(at + 44, at + 44 + NONCE_BYTES),
    crc: buf.readUInt32LE(at + 56),
  };
}

/** FORMAT.md §3: the AAD that binds a payload to its container, offset and header. */
export function recordAad(
  containerId: Buffer,
  offset: number,
  fingerprint: Uint8Array,
  codec: Codec,
  flags: number,
  logicalLength: number,
): Buffer {
  return recordAadInto(
    Buffer.alloc(AAD_BYTES),
    containerId,
    offset,
    fingerprint,
    codec,
    flags,
    logicalLength,
  );
}

/** `recordAad` written into `aad` (64 bytes, every byte rewritten), which it returns. */
export function recordAadInto(
  aad: Buffer,
  containerId: Buffer,
  offset: number,
  fingerprint: Uint8Array,
  codec: Codec,
  flags: number,
  logicalLength: number,
): Buffer {
  containerId.copy(aad, 0, 0, ID_BYTES);
  // Offsets are below 2^53: two 32-bit halves, no BigInt.
  aad.writeUInt32LE(offset >>> 0, 16);
  aad.writeUInt32LE(Math.floor(offset / 0x1_0000_0000), 20);
  aad.set(fingerprint, 24);
  aad[56] = codec;
  aad[57] = flags;
  aad[58] = 0;
  aad[59] = 0;
  aad.writeUInt32LE(logicalLength, 60);
  return aad;
}

// ---------------------------------------------------------------------------------------------
// Directory (FORMAT.md §4) and footer (§5)

export interface DirectoryEntry {
  readonly fingerprint: Buffer;
  readonly offset: number;
  readonly logicalLength: number;
  readonly storedLength: number;
}

/** Bytes a record occupies in the file (header + payload). */
export function recordBytes(storedLength: number): number {
  return RECORD_HEADER_BYTES + storedLength;
}

export function directoryBytes(count: number): number {
  return DIRECTORY_FIXED_BYTES + DIRECTORY_ENTRY_BYTES * count;
}

export function encodeDirectory(entries: readonly DirectoryEntry[]): Buffer {
  const builder = new DirectoryBuilder(entries.length);
  for (const e of entries) builder.add(e.fingerprint, e.offset, e.logicalLength, e.storedLength);
  return builder.encode();
}

/**
 * A container's directory as its records are appended: the entries kept in their encoding
 * (FORMAT.md §4, 48 bytes each) in one growing buffer, so that an open container costs the
 * heap no object and no fingerprint copy per record (they lived until the seal, long enough
 * for V8 to move them to the old generation and mark them again and again).
 */
export class DirectoryBuilder {
  private buf: Buffer;
  private n = 0;

  constructor(capacity = 1024) {
    this.buf = Buffer.allocUnsafe(directoryBytes(Math.max(1, capacity)));
  }

  get count(): number {
    return this.n;
  }

  add(fingerprint: Uint8Array, offset: number, logicalLength: number, storedLength: number): void {
    let at = DIRECTORY_FIXED_BYTES - 4 + this.n * DIRECTORY_ENTRY_BYTES;
    if (at + DIRECTORY_ENTRY_BYTES + 4 > this.buf.length) {
      const grown = Buffer.allocUnsafe(directoryBytes(this.n * 2));
      this.buf.copy(grown, 0, 0, at);
      this.buf = grown;
    }
    this.buf.set(fingerprint.length === 32 ? fingerprint : fingerprint.subarray(0, 32), at);
    at += 32;
    // A u64 without BigInt (offsets stay below 2^53).
    this.buf.writeUInt32LE(offset % 0x1_0000_0000, at);
    this.buf.writeUInt32LE(Math.floor(offset / 0x1_0000_0000), at + 4);
    this.buf.writeUInt32LE(logicalLength, at + 8);
    this.buf.writeUInt32LE(storedLength, at + 12);
    this.n++;
  }

  /** The directory block (magic, count, entries, CRC32C): a copy of its own. */
  encode(): Buffer {
    const out = Buffer.alloc(directoryBytes(this.n));
    const end = directoryBytes(this.n) - 4;
    this.buf.copy(out, 0, 0, end);
    DIRECTORY_MAGIC.copy(out, 0);
    out.writeUInt32LE(this.n, 4);
    out.writeUInt32LE(crc32c(out.subarray(0, end)), end);
    return out;
  }
}

/** Decode a directory block occupying all of `buf`. Throws FormatError (reason Directory). */
export function decodeDirectory(buf: Buffer): { entries: DirectoryEntry[]; crc: number } {
  const bad = (what: string) => new FormatError(DamageReason.Directory, `directory: ${what}`);
  if (buf.length < DIRECTORY_FIXED_BYTES) throw bad("cut short");
  if (!buf.subarray(0, 4).equals(DIRECTORY_MAGIC)) throw bad("bad magic");
  const count = buf.readUInt32LE(4);
  if (buf.length !== directoryBytes(count)) throw bad(`length does not match ${count} entries`);
  const end = buf.length - 4;
  const crc = buf.readUInt32LE(end);
  if (crc !== crc32c(buf.subarray(0, end))) throw bad("CRC32C mismatch");
  const entries: DirectoryEntry[] = [];
  for (let at = 8; at < end; at += DIRECTORY_ENTRY_BYTES) {
    entries.push({
      fingerprint: Buffer.from(buf.subarray(at, at + 32)),
      offset: u64(buf, at + 32),
      logicalLength: buf.readUInt32LE(at + 40),
      storedLength: buf.readUInt32LE(at + 44),
    });
  }
  return { entries, crc };
}

export interface Footer {
  readonly directoryOffset: number;
  readonly entryCount: number;
  readonly directoryCrc: number;
  readonly sealedAt: number;
  readonly containerId: string;
}

export function encodeFooter(f: Footer): Buffer {
  const buf = Buffer.alloc(FOOTER_BYTES);
  FOOTER_MAGIC.copy(buf, 0);
  buf.writeBigUInt64LE(BigInt(f.directoryOffset), 8);
  buf.writeUInt32LE(f.entryCount, 16);
  buf.writeUInt32LE(f.directoryCrc, 20);
  buf.writeBigUInt64LE(BigInt(f.sealedAt), 24);
  idToBytes(f.containerId).copy(buf, 32);
  buf.writeUInt32LE(crc32c(buf.subarray(0, 60)), 60);
  return buf;
}

/**
 * Decode the footer in the last 64 bytes of a file of `fileSize` bytes and check it against the
 * file (FORMAT.md §5). Throws FormatError (reason Footer).
 */
export function decodeFooter(buf: Buffer, fileSize: number): Footer {
  const bad = (what: string) => new FormatError(DamageReason.Footer, `footer: ${what}`);
  if (buf.length !== FOOTER_BYTES) throw bad("cut short");
  if (!buf.subarray(0, 8).equals(FOOTER_MAGIC)) throw bad("bad magic");
  if (buf.readUInt32LE(60) !== crc32c(buf.subarray(0, 60))) throw bad("CRC32C mismatch");
  const footer: Footer = {
    directoryOffset: u64(buf, 8),
    entryCount: buf.readUInt32LE(16),
    directoryCrc: buf.readUInt32LE(20),
    sealedAt: u64(buf, 24),
    containerId: idFromBytes(buf.subarray(32, 48)),
  };
  if (
    footer.directoryOffset < FILE_HEADER_BYTES ||
    footer.directoryOffset + directoryBytes(footer.entryCount) + FOOTER_BYTES !== fileSize
  ) {
    throw bad("directory offset and entry count do not match the file size");
  }
  return footer;
}

/** True when `buf` starts with a footer's magic (used to tell a damaged footer from no footer). */
export function looksLikeFooter(buf: Buffer): boolean {
  return (
    buf.length >= FOOTER_MAGIC.length && buf.subarray(0, FOOTER_MAGIC.length).equals(FOOTER_MAGIC)
  );
}
