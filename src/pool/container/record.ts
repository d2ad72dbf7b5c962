/**
 * Sealing and checking one chunk record (FORMAT.md §3). Pure and synchronous (no I/O), so that
 * the data pipeline can run it in a worker thread.
 */
import type { KeyObject } from "node:crypto";
import { createRequire } from "node:module";
import type { Decompressor } from "zstd-napi";
import {
  chunkFingerprint,
  containerDataKey,
  type DomainKeys,
  FINGERPRINT_BYTES,
  idToBytes,
  NONCE_BYTES,
  open,
  openInto,
  randomNonce,
  randomNonces,
  sealInto,
  sealPlainRecordsNative,
  TAG_BYTES,
} from "../../crypto/index.js";
import { CompressibilityProbe } from "./compressibility.js";
import {
  AAD_BYTES,
  Codec,
  DamageReason,
  decodeRecordHeader,
  FormatError,
  fingerprintMatches,
  MAX_LOGICAL_BYTES,
  RECORD_HEADER_BYTES,
  type RecordHeader,
  recordAad,
  recordAadInto,
  recordCrc,
  writeRecordHeader,
} from "./format.js";

/** What sealing and opening the records of one container needs. */
export interface ContainerKeys {
  readonly containerId: string;
  readonly containerIdBytes: Buffer;
  /** The container key: HKDF(domain data key, container id) (src/crypto/README.md). */
  readonly key: KeyObject;
  /** The domain's fingerprint key, to check that a plaintext hashes to its fingerprint. */
  readonly fingerprintKey: KeyObject;
}

export function containerKeys(domain: DomainKeys, containerId: string): ContainerKeys {
  return {
    containerId,
    containerIdBytes: idToBytes(containerId),
    key: containerDataKey(domain.dataKey, containerId),
    fingerprintKey: domain.fingerprintKey,
  };
}

/**
 * zstd pays only when it saves at least 1/32 of the grain (FORMAT.md §3, "Compression"): for less
 * the stored bytes barely change but every read pays for a decompression.
 */
export function zstdPays(logicalLength: number, compressedLength: number): boolean {
  return compressedLength <= logicalLength - Math.ceil(logicalLength / 32);
}

/** zstd level of record payloads (FORMAT.md §3). */
export const ZSTD_LEVEL = 1;

// zstd-napi's low-level binding (its CommonJS entry; the package has no ESM one for it).
const zstd = createRequire(import.meta.url)(
  "zstd-napi/binding",
) as typeof import("zstd-napi/binding.js");

/**
 * A zstd compressor at the level FORMAT.md §3 names (the library's default is 3) that compresses
 * into one buffer it keeps. zstd-napi's `Compressor.compress` returns a new buffer per call whose
 * size is the bound (more than 4 KiB for a grain): for every incompressible grain that was a
 * malloc, a typed array, and a backing store for V8 to sweep later. A grain whose sampled bytes
 * show that zstd cannot pay is not given to it (compressibility.ts). Not shared between threads.
 */
export class RecordCompressor {
  private readonly cctx = new zstd.CCtx();
  private readonly probe = new CompressibilityProbe();
  private out = Buffer.alloc(0);

  constructor() {
    this.cctx.setParameter(zstd.CParameter.compressionLevel, ZSTD_LEVEL);
  }

  /**
   * Compresses `src` (one zstd frame); the result is a view of the compressor's own buffer,
   * valid until its next call. Undefined, without trying, when `src` looks incompressible.
   */
  compress(src: Uint8Array): Buffer | undefined {
    if (!this.probe.worthTrying(src)) return undefined;
    return this.compressUnprobed(src);
  }

  /** `compress` of a grain the probe has judged already (worth trying). */
  compressUnprobed(src: Uint8Array): Buffer {
    const bound = zstd.compressBound(src.length);
    if (this.out.length < bound) this.out = Buffer.allocUnsafeSlow(bound);
    return this.out.subarray(0, this.cctx.compress2(this.out, src));
  }
}

/** A compressor for sealing records (`RecordCompressor`). */
export function newRecordCompressor(): RecordCompressor {
  return new RecordCompressor();
}

export interface EncodedRecord {
  /** The whole record: header and payload, ready to be written at `offset`. */
  readonly bytes: Buffer;
  readonly codec: Codec;
  readonly storedLength: number;
}

/**
 * Build the record of `grain` for position `offset` of the container: compress (zstd level 1
 * when it pays), seal with AES-256-GCM under a fresh random nonce, add header and CRC32C.
 * `grain` is read synchronously and not retained.
 */
export function encodeRecord(
  keys: ContainerKeys,
  offset: number,
  fingerprint: Uint8Array,
  grain: Uint8Array,
  compressor: RecordCompressor,
): EncodedRecord {
  const bytes = Buffer.allocUnsafe(RECORD_HEADER_BYTES + grain.length + TAG_BYTES);
  const r = sealRecordInto(bytes, 0, keys, offset, fingerprint, grain, compressor);
  const length = RECORD_HEADER_BYTES + r.storedLength;
  return { ...r, bytes: length === bytes.length ? bytes : bytes.subarray(0, length) };
}

/**
 * `encodeRecord` into `out` at `at` (room for header + grain + tag needed); returns the codec and
 * the stored length (the record takes 60 + storedLength bytes).
 */
/** The AAD of the record being sealed (`sealRecordInto`): used and done with synchronously. */
const sealAad = Buffer.alloc(AAD_BYTES);

function sealRecordInto(
  out: Buffer,
  at: number,
  keys: ContainerKeys,
  offset: number,
  fingerprint: Uint8Array,
  grain: Uint8Array,
  compressor: RecordCompressor,
  probed = false,
): { codec: Codec; storedLength: number } {
  const logicalLength = grain.length;
  if (logicalLength === 0 || logicalLength > MAX_LOGICAL_BYTES) {
    throw new RangeError(`a grain has 1 to ${MAX_LOGICAL_BYTES} bytes, got ${logicalLength}`);
  }
  if (fingerprint.length !== FINGERPRINT_BYTES) {
    throw new TypeError(`a fingerprint has ${FINGERPRINT_BYTES} bytes, got ${fingerprint.length}`);
  }
  let codec: Codec = Codec.None;
  let body: Uint8Array = grain;
  const compressed = probed ? compressor.compressUnprobed(grain) : compressor.compress(grain);
  if (compressed !== undefined && zstdPays(logicalLength, compressed.length)) {
    codec = Codec.Zstd;
    body = compressed;
  }
  const flags = 0;
  const nonce = randomNonce();
  // Into one scratch buffer: sealing reads the AAD synchronously (a new zeroed buffer per record
  // was an allocation and a backing store per grain for the worker's GC).
  const aad = recordAadInto(
    sealAad,
    keys.containerIdBytes,
    offset,
    fingerprint,
    codec,
    flags,
    logicalLength,
  );
  const storedLength = body.length + TAG_BYTES;
  const end = at + RECORD_HEADER_BYTES + storedLength;
  sealInto(out, at + RECORD_HEADER_BYTES, keys.key, nonce, body, aad);
  writeRecordHeader(out, at, { codec, flags, logicalLength, storedLength, fingerprint, nonce });
  out.writeUInt32LE(recordCrc(out.subarray(at, end)), at + 56);
  return { codec, storedLength };
}

/** Records sealed back to back (`sealRecords`). */
export interface SealedRecords {
  /** The records, contiguous, the first one for `base`: one write. */
  readonly bytes: Uint8Array;
  /** Stored length (payload + tag) of each record, in order. */
  readonly storedLengths: Uint32Array;
  /** Codec of each record, in order. */
  readonly codecs: Uint8Array;
  /**
   * When `bytes` is a view of a pooled buffer (chunk-worker.ts, `JobArena`): gives it back. The
   * consumer (ContainerWriter.appendBatch) calls it once the bytes are written or dropped, and
   * reads them no more.
   */
  readonly release?: (() => void) | undefined;
}

/**
 * Seal `grains` (each with the fingerprint at the same index) as contiguous records starting at
 * container offset `base`, into one buffer: what `encodeRecord` does per grain, with the offsets
 * following one another (FORMAT.md §1). Pure; runs on a worker thread (chunk-worker.ts).
 * `into`: the buffer to write them to (room for header + grain + tag per grain needed; nothing
 * beyond the records is written); default a new one.
 */
export function sealRecords(
  keys: ContainerKeys,
  base: number,
  fingerprints: readonly Uint8Array[],
  grains: readonly Uint8Array[],
  compressor: RecordCompressor,
  into?: Buffer,
): SealedRecords {
  let bound = 0;
  for (const g of grains) bound += RECORD_HEADER_BYTES + g.length + TAG_BYTES;
  if (into !== undefined && into.length < bound) {
    throw new RangeError(
      `sealing ${grains.length} grains needs ${bound} bytes, got ${into.length}`,
    );
  }
  const out = into ?? Buffer.allocUnsafeSlow(bound); // own ArrayBuffer: transferable
  const storedLengths = new Uint32Array(grains.length);
  const codecs = new Uint8Array(grains.length);
  let at = 0;
  for (let i = 0; i < grains.length; i++) {
    const r = sealRecordInto(out, at, keys, base + at, fingerprints[i]!, grains[i]!, compressor);
    at += RECORD_HEADER_BYTES + r.storedLength;
    storedLengths[i] = r.storedLength;
    codecs[i] = r.codec;
  }
  return { bytes: out.subarray(0, at), storedLengths, codecs };
}

/** Nonces for `sealPackedRecords`' native runs (reused: filled afresh for every batch). */
let packedNonces = Buffer.alloc(0);

/**
 * `sealRecords` of grains lying back to back in `data` (`grainBytes` each; fingerprint i at
 * fps[32i..]), the form a worker's seal job has them in. Where the native addon is loaded, the
 * grains that look incompressible (compressibility.ts, the same probe in C) are sealed by it a
 * run at a time, whole records in one call (header, AES-256-GCM, CRC32C), and only the others
 * go through zstd here: the same records `sealRecords` makes, less glue per grain.
 */
export function sealPackedRecords(
  keys: ContainerKeys,
  base: number,
  data: Uint8Array,
  grainBytes: number,
  fps: Uint8Array,
  compressor: RecordCompressor,
  into?: Buffer,
): SealedRecords {
  const n = Math.floor(data.length / grainBytes);
  if (n * grainBytes !== data.length || fps.length < n * FINGERPRINT_BYTES) {
    throw new RangeError("sealPackedRecords: data and fps do not hold the same whole grains");
  }
  const plain = RECORD_HEADER_BYTES + grainBytes + TAG_BYTES;
  const bound = n * plain;
  if (into !== undefined && into.length < bound) {
    throw new RangeError(`sealing ${n} grains needs ${bound} bytes, got ${into.length}`);
  }
  const out = into ?? Buffer.allocUnsafeSlow(bound); // own ArrayBuffer: transferable
  const storedLengths = new Uint32Array(n);
  const codecs = new Uint8Array(n);
  if (packedNonces.length < n * NONCE_BYTES) packedNonces = Buffer.allocUnsafe(n * NONCE_BYTES);
  const nonces = randomNonces(n, packedNonces);
  let at = 0;
  for (let i = 0; i < n; ) {
    const sealed = sealPlainRecordsNative(
      keys.key,
      keys.containerIdBytes,
      base + at,
      data.subarray(i * grainBytes, n * grainBytes),
      grainBytes,
      fps.subarray(i * FINGERPRINT_BYTES, n * FINGERPRINT_BYTES),
      nonces.subarray(i * NONCE_BYTES, n * NONCE_BYTES),
      out,
      at,
      true,
    );
    if (sealed !== undefined) {
      storedLengths.fill(grainBytes + TAG_BYTES, i, i + sealed);
      codecs.fill(Codec.None, i, i + sealed);
      at += sealed * plain;
      i += sealed;
      if (i >= n) break;
    }
    // Grain i: zstd may pay on it (or no addon: every grain comes here, probed by the compressor).
    const fp = fps.subarray(i * FINGERPRINT_BYTES, (i + 1) * FINGERPRINT_BYTES);
    const grain = data.subarray(i * grainBytes, (i + 1) * grainBytes);
    const r = sealRecordInto(out, at, keys, base + at, fp, grain, compressor, sealed !== undefined);
    at += RECORD_HEADER_BYTES + r.storedLength;
    storedLengths[i] = r.storedLength;
    codecs[i] = r.codec;
    i++;
  }
  return { bytes: out.subarray(0, at), storedLengths, codecs };
}

/**
 * Check a whole record (header + payload, exactly) without keys: header consistency and CRC32C.
 * Throws FormatError (Header, Truncated or Crc).
 */
export function checkRecord(record: Buffer): RecordHeader {
  const header = decodeRecordHeader(record, 0);
  const length = RECORD_HEADER_BYTES + header.storedLength;
  if (record.length < length) {
    throw new FormatError(DamageReason.Truncated, "record payload cut short");
  }
  const whole = record.length === length ? record : record.subarray(0, length);
  if (recordCrc(whole) !== header.crc) {
    throw new FormatError(DamageReason.Crc, "record CRC32C mismatch");
  }
  return header;
}

export interface OpenRecordOptions {
  /**
   * The fingerprint the caller expects (the index's: 16 bytes, or a full one); a record whose
   * fingerprint does not start with its first 16 bytes is an error (format.ts fingerprintMatches).
   */
  readonly expectFingerprint?: Uint8Array | undefined;
  /** Recompute HMAC(plaintext) and compare with the record's fingerprint. */
  readonly verifyFingerprint: boolean;
  readonly decompressor: Decompressor;
  /**
   * Check the CRC32C before the tag (default true). False (the read path, chunk-worker.ts): the
   * GCM tag authenticates every byte the CRC covers (FORMAT.md §3, "Reading without the CRC"), so
   * the CRC is computed only when another check fails, to report the damage as `crc` as before.
   */
  readonly checkCrc?: boolean | undefined;
  /** Reused for the AAD (64 bytes) instead of a new buffer per record. */
  readonly aad?: Buffer | undefined;
  /**
   * Where an uncompressed record's plaintext goes (`into` from byte `intoAt`, which must have
   * room for the logical length): decrypted in place of a new buffer and a copy (the read path
   * opens most grains straight into the reply). A compressed record ignores it. On failure the
   * bytes written there are zeros.
   */
  readonly into?: Buffer | undefined;
  readonly intoAt?: number | undefined;
}

/**
 * Check and open the record at `offset` of the container (`record` holds exactly its bytes):
 * header, CRC32C, expected fingerprint, GCM tag, codec, and (optionally) the fingerprint of the
 * plaintext. Returns the plaintext grain; throws FormatError and returns nothing on any failure.
 */
export function openRecord(
  keys: ContainerKeys,
  offset: number,
  record: Buffer,
  options: OpenRecordOptions,
): Buffer {
  if (options.checkCrc ?? true) {
    return openChecked(keys, offset, checkRecord(record), record, options);
  }
  const h = decodeRecordHeader(record, 0);
  const length = RECORD_HEADER_BYTES + h.storedLength;
  if (record.length < length) {
    throw new FormatError(DamageReason.Truncated, "record payload cut short");
  }
  try {
    return openChecked(keys, offset, h, record, options);
  } catch (error) {
    // Report damage as the CRC-first order did: a record whose CRC fails is `crc` damage.
    const whole = record.length === length ? record : record.subarray(0, length);
    if (error instanceof FormatError && recordCrc(whole) !== h.crc) {
      throw new FormatError(DamageReason.Crc, "record CRC32C mismatch");
    }
    throw error;
  }
}

function openChecked(
  keys: ContainerKeys,
  offset: number,
  h: RecordHeader,
  record: Buffer,
  options: OpenRecordOptions,
): Buffer {
  if (
    options.expectFingerprint !== undefined &&
    !fingerprintMatches(h.fingerprint, options.expectFingerprint)
  ) {
    throw new FormatError(
      DamageReason.Fingerprint,
      "the record at this offset holds another fingerprint than the one asked for",
    );
  }
  const aad =
    options.aad === undefined
      ? recordAad(keys.containerIdBytes, offset, h.fingerprint, h.codec, h.flags, h.logicalLength)
      : recordAadInto(
          options.aad,
          keys.containerIdBytes,
          offset,
          h.fingerprint,
          h.codec,
          h.flags,
          h.logicalLength,
        );
  const payload = record.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + h.storedLength);
  const target = options.into;
  const at = options.intoAt ?? 0;
  const direct =
    target !== undefined &&
    h.codec !== Codec.Zstd &&
    payload.length - TAG_BYTES === h.logicalLength &&
    at + h.logicalLength <= target.length;
  let body: Buffer;
  try {
    if (direct) {
      const n = openInto(target, at, keys.key, h.nonce, payload, aad);
      body = target.subarray(at, at + n);
    } else {
      body = open(keys.key, h.nonce, payload, aad);
    }
  } catch {
    throw new FormatError(
      DamageReason.Tag,
      "AES-GCM tag mismatch (record tampered with, moved, or sealed under another key)",
    );
  }
  let plaintext = body;
  if (h.codec === Codec.Zstd) {
    try {
      plaintext = options.decompressor.decompress(body);
    } catch (error) {
      throw new FormatError(
        DamageReason.Content,
        `zstd payload does not decode: ${(error as Error).message}`,
      );
    }
  }
  if (plaintext.length !== h.logicalLength) {
    throw new FormatError(
      DamageReason.Content,
      `payload decodes to ${plaintext.length} bytes, the header says ${h.logicalLength}`,
    );
  }
  if (
    options.verifyFingerprint &&
    !chunkFingerprint(keys.fingerprintKey, plaintext).equals(h.fingerprint)
  ) {
    throw new FormatError(
      DamageReason.Fingerprint,
      "the plaintext does not hash to the record's fingerprint",
    );
  }
  return plaintext;
}

/** A record's payload opened for re-sealing (`openPayload`): still compressed if it was. */
export interface OpenedPayload {
  readonly fingerprint: Buffer;
  readonly codec: Codec;
  readonly flags: number;
  readonly logicalLength: number;
  /** The codec's output (zstd frame, or the grain): what the record sealed. */
  readonly body: Buffer;
}

/**
 * GC compaction (src/pool/gc.ts) moves records to another container. A record cannot be copied
 * byte for byte: its AAD binds container id and offset, and the container key derives from the
 * container id (§3). `openPayload` checks a record like `openRecord` up to the GCM tag (header,
 * CRC32C, expected fingerprint, tag) and returns its payload without decompressing it;
 * `sealPayloads` seals such payloads again for their new places. Codec, logical and stored lengths
 * do not change (the index's figures for the chunk stay exact), and no zstd work is done. Throws
 * FormatError on any failure.
 */
export function openPayload(
  keys: ContainerKeys,
  offset: number,
  record: Buffer,
  expectFingerprint: Uint8Array,
): OpenedPayload {
  const h = checkRecord(record);
  if (!fingerprintMatches(h.fingerprint, expectFingerprint)) {
    throw new FormatError(
      DamageReason.Fingerprint,
      "the record at this offset holds another fingerprint than the one asked for",
    );
  }
  const aad = recordAad(
    keys.containerIdBytes,
    offset,
    h.fingerprint,
    h.codec,
    h.flags,
    h.logicalLength,
  );
  const payload = record.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + h.storedLength);
  try {
    const body = open(keys.key, h.nonce, payload, aad);
    const { codec, flags, logicalLength } = h;
    return { fingerprint: Buffer.from(h.fingerprint), codec, flags, logicalLength, body };
  } catch {
    throw new FormatError(DamageReason.Tag, "AES-GCM tag mismatch");
  }
}

/**
 * Seal opened payloads (`openPayload`) as contiguous records from container offset `base`, each
 * under a fresh nonce and the AAD of its new place: the `seal` callback of ContainerWriter's
 * appendBatch. Pure.
 */
export function sealPayloads(
  keys: ContainerKeys,
  base: number,
  payloads: readonly OpenedPayload[],
): SealedRecords {
  let bound = 0;
  for (const p of payloads) bound += RECORD_HEADER_BYTES + p.body.length + TAG_BYTES;
  const out = Buffer.allocUnsafeSlow(bound);
  const storedLengths = new Uint32Array(payloads.length);
  const codecs = new Uint8Array(payloads.length);
  let at = 0;
  payloads.forEach((p, i) => {
    const { codec, flags, logicalLength, fingerprint } = p;
    const aad = recordAad(
      keys.containerIdBytes,
      base + at,
      fingerprint,
      codec,
      flags,
      logicalLength,
    );
    const storedLength = p.body.length + TAG_BYTES;
    const end = at + RECORD_HEADER_BYTES + storedLength;
    const nonce = randomNonce();
    sealInto(out, at + RECORD_HEADER_BYTES, keys.key, nonce, p.body, aad);
    writeRecordHeader(out, at, { codec, flags, logicalLength, storedLength, fingerprint, nonce });
    out.writeUInt32LE(recordCrc(out.subarray(at, end)), at + 56);
    storedLengths[i] = storedLength;
    codecs[i] = codec;
    at = end;
  });
  return { bytes: out.subarray(0, at), storedLengths, codecs };
}
