/**
 * Binary layout of every key and value the pool metadata keeps in LMDB.
 *
 * Keys sort byte-wise in numeric order: fixed-width integers are big-endian, and the volume and
 * domain numbers that start most keys are written as an *ordered id* (`idPrefix`: 1 byte below
 * 128, 2 below 16384, ... 5 at most; the first byte says how many, and byte order is numeric
 * order). A range scan over `map` visits one volume's grains in ascending grain order, and a range
 * scan over `dead` visits one container's dead chunks together. Values that are never range
 * scanned by content (the `fp` index value) use LEB128 varints. Nothing here touches LMDB; these
 * are pure functions over Buffers so that tests and the rebuild tools can reason about the layout.
 *
 * Sub-databases (one LMDB environment, named databases); sizes for ids below 128. `fingerprint[16]`
 * is the first 16 bytes of the chunk's 32-byte keyed SHA-256 (FINGERPRINT_BYTES; README.md
 * "Fingerprints: 16 bytes"):
 *
 * | db          | key                                        | value                                   |
 * | ----------- | ------------------------------------------ | --------------------------------------- |
 * | `fp`        | domain id · fingerprint[16]           (17) | varints: container · offset · stored×2+x (· logical if x) · refcount (8–10 typical) |
 * | `map`       | volume id · grain u56                  (8) | fingerprint[16] (· birth u32 once the volume had a snapshot) |
 * | `mapold`    | volume id · grain u56 · birth u32     (12) | fingerprint[16] · death u32 (20)         |
 * | `mapdeath`  | volume id · death u32 · grain u56     (12) | birth u32                                |
 * | `snapshot`  | volume id · snapshot u32               (5) | state u8 (0 live, 1 being deleted)       |
 * | `journal`   | sequence u64                           (8) | domain u32 · n u32 · n × (fingerprint[16] · delta i32) |
 * | `dead`      | container u32 · domain u32 · fingerprint[16] (24) | stored u32                       |
 * | `volume`    | volume u32                             (4) | domain u32 · mappedGrains u64 · referencedBytes u64 (· snapshot state, see VolumeSnapshots) |
 * | `domain`    | domain u32                             (4) | 9 × u64 counters (see DomainCounters; older records hold 7) |
 * | `container` | container u32                          (4) | 4 × u64 counters (see ContainerCounters) |
 * | `meta`      | ASCII name                                 | per name (format version, grain size, rebuild markers) |
 *
 * u64 fields hold JavaScript safe integers (< 2^53); they are written as two u32 halves.
 */

/**
 * Bytes of a chunk's fingerprint that the metadata keeps and compares: the first 16 of the 32-byte
 * keyed SHA-256 that container record headers hold (README.md "Fingerprints: 16 bytes": why 128
 * bits are enough). Every key, map value, old version, journal delta, dead-table key, map log
 * record and checkpoint entry carries these 16 bytes.
 */
export const FINGERPRINT_BYTES = 16;
/**
 * The full fingerprint (container record headers, the write path): MetaStore takes either length
 * and keeps the first FINGERPRINT_BYTES; what it returns is always FINGERPRINT_BYTES long.
 */
export const FULL_FINGERPRINT_BYTES = 32;

/**
 * The metadata's form of a fingerprint, full or already short: a view of its first
 * FINGERPRINT_BYTES (not a copy).
 */
export function shortFingerprint(fingerprint: Uint8Array): Buffer {
  return asBuffer(fingerprint).subarray(0, FINGERPRINT_BYTES);
}

/**
 * The layout above. Formats 1 and 2 (fixed-width `fp` values, u32 id prefixes, u64 grains) were
 * never released: a store written in them is refused, not converted. Formats 3 and 4 are this
 * layout with 32-byte fingerprints (LONG_FINGERPRINT_FORMATS): refused, and `sanmux pool
 * rebuild` converts them (the index from the containers, the maps from the map log, whose
 * 32-byte records and checkpoints replay cut to 16 bytes).
 */
export const META_FORMAT_VERSION = 5;
/**
 * Written by the first snapshot of a store: from then on old versions live in `mapold`, which a
 * build without snapshots would not count (its audit would report leaks and its repair would
 * drop references). Such a build refuses the store; this one opens both.
 */
export const SNAPSHOT_FORMAT_VERSION = 6;
/** The formats of the same layout with 32-byte fingerprints: 3, and 4 once a snapshot was taken. */
export const LONG_FINGERPRINT_FORMATS = { plain: 3, snapshots: 4 } as const;

/**
 * The format marker a store rebuilt from a checkpoint of `format` gets: a 32-byte-fingerprint
 * format becomes its 16-byte equivalent; anything else is kept.
 */
export function currentFormatOf(format: number): number {
  if (format === LONG_FINGERPRINT_FORMATS.plain) return META_FORMAT_VERSION;
  if (format === LONG_FINGERPRINT_FORMATS.snapshots) return SNAPSHOT_FORMAT_VERSION;
  return format;
}

/** Names of the LMDB sub-databases (exported for tests and offline tools). */
export const DB_NAMES = {
  fingerprints: "fp",
  maps: "map",
  journal: "journal",
  dead: "dead",
  volumes: "volume",
  domains: "domain",
  containers: "container",
  meta: "meta",
  oldVersions: "mapold",
  deathList: "mapdeath",
  snapshots: "snapshot",
} as const;

const TWO_32 = 0x1_0000_0000;
export const MAX_U32 = 0xffff_ffff;
export const MAX_U24 = 0xff_ffff;
export const MAX_U48 = 0xffff_ffff_ffff;

// ---------------------------------------------------------------------------------------------
// Integer helpers

export function isU32(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= MAX_U32;
}

export function writeU64(buf: Buffer, offset: number, n: number): void {
  // Counters never go below zero; a negative value here is a bookkeeping bug that the audit
  // reports as drift. Clamping keeps a write transaction from failing half way.
  const v = n > 0 ? Math.min(n, Number.MAX_SAFE_INTEGER) : 0;
  buf.writeUInt32BE(Math.floor(v / TWO_32), offset);
  buf.writeUInt32BE(v >>> 0, offset + 4);
}

export function readU64(buf: Uint8Array, offset: number): number {
  const view = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  return view.readUInt32BE(offset) * TWO_32 + view.readUInt32BE(offset + 4);
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

// ---------------------------------------------------------------------------------------------
// Ordered ids: u32 numbers at the start of keys, in as few bytes as their size needs

/** Bytes of the ordered id that starts with `first`, or 0 if no id starts with that byte. */
function idLength(first: number): number {
  if (first < 0x80) return 1;
  if (first < 0xc0) return 2;
  if (first < 0xe0) return 3;
  if (first < 0xf0) return 4;
  return first === 0xf0 ? 5 : 0;
}

function idBytes(n: number): number {
  if (n < 0x80) return 1;
  if (n < 0x4000) return 2;
  if (n < 0x20_0000) return 3;
  if (n < 0x1000_0000) return 4;
  return 5;
}

/** Writes the ordered id of the u32 `n` at `at`; returns the offset after it. */
function writeId(buf: Buffer, at: number, n: number): number {
  switch (idBytes(n)) {
    case 1:
      buf[at] = n;
      return at + 1;
    case 2:
      buf[at] = 0x80 | (n >>> 8);
      buf[at + 1] = n & 0xff;
      return at + 2;
    case 3:
      buf[at] = 0xc0 | (n >>> 16);
      buf.writeUInt16BE(n & 0xffff, at + 1);
      return at + 3;
    case 4:
      buf.writeUInt32BE((0xe000_0000 | n) >>> 0, at);
      return at + 4;
    default:
      buf[at] = 0xf0;
      buf.writeUInt32BE(n, at + 1);
      return at + 5;
  }
}

/**
 * The ordered id at `at` and its length; throws RangeError when the bytes are not one (unknown
 * first byte, truncated, or not the shortest form: every number has exactly one encoding).
 */
function readId(b: Buffer, at: number): { id: number; length: number } {
  const first = b[at];
  const length = first === undefined ? 0 : idLength(first);
  if (length === 0 || at + length > b.length) throw new RangeError("malformed id in a key");
  let id: number;
  if (length === 1) id = first!;
  else if (length === 2) id = ((first! & 0x3f) << 8) | b[at + 1]!;
  else if (length === 3) id = (first! & 0x1f) * 0x1_0000 + b.readUInt16BE(at + 1);
  else if (length === 4) id = b.readUInt32BE(at) & 0x0fff_ffff;
  else id = b.readUInt32BE(at + 1);
  if (idBytes(id) !== length) throw new RangeError("id in a key not in its shortest form");
  return { id, length };
}

/**
 * The ordered id of the u32 `n` alone: a key prefix. Every key that starts with a number's id
 * sorts after the id alone and before the id of the next number (ids are prefix-free).
 */
export function idPrefix(n: number): Buffer {
  const b = Buffer.allocUnsafe(idBytes(n));
  writeId(b, 0, n);
  return b;
}

/** The first key after every key that starts with the id of `n`, or undefined for the last u32. */
export function idPrefixEnd(n: number): Buffer | undefined {
  return n === MAX_U32 ? undefined : idPrefix(n + 1);
}

// ---------------------------------------------------------------------------------------------
// LEB128 varints (values only: their byte order is not numeric order)

function varintBytes(n: number): number {
  let len = 1;
  for (let v = n; v >= 0x80; v = Math.floor(v / 0x80)) len++;
  return len;
}

/** Writes the non-negative safe integer `n` at `at`; returns the offset after it. */
function writeVarint(buf: Buffer, at: number, n: number): number {
  let v = n;
  let i = at;
  while (v >= 0x80) {
    buf[i++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  buf[i++] = v;
  return i;
}

/** The varint at `at` and the offset after it; throws RangeError on a truncated or overlong one. */
/** Where the last `readVarint` stopped (module state: the readers below are synchronous). */
let varintEnd = 0;

/** The varint at `at` of the first `n` bytes of `b`; `varintEnd` is set to the byte after it. */
function readVarint(b: Uint8Array, at: number, n: number): number {
  let v = 0;
  let scale = 1;
  const stop = Math.min(n, at + 8);
  for (let i = at; i < stop; i++) {
    const byte = b[i]!;
    v += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      varintEnd = i + 1;
      return v;
    }
    scale *= 0x80;
  }
  throw new RangeError("malformed varint in a value");
}

// ---------------------------------------------------------------------------------------------
// Fingerprint index

export interface ChunkLocation {
  /** The container (append-only file) holding the sealed chunk. */
  readonly containerId: number;
  /** Byte offset of the chunk's record inside the container. */
  readonly offset: number;
  /** Bytes the chunk occupies in the container (after compression, with its sealing overhead). */
  readonly storedLength: number;
  /** Plaintext bytes of the chunk: the grain size. */
  readonly logicalLength: number;
}

export interface ChunkEntry extends ChunkLocation {
  /** Applied reference count: map entries pointing at the chunk, minus journal records not yet applied. */
  readonly refcount: number;
}

/** `fp` key: domain id · the first FINGERPRINT_BYTES of `fingerprint` (full or short). */
export function fpKey(domainId: number, fingerprint: Uint8Array): Buffer {
  const key = Buffer.allocUnsafe(idBytes(domainId) + FINGERPRINT_BYTES);
  key.set(fingerprint.subarray(0, FINGERPRINT_BYTES), writeId(key, 0, domainId));
  return key;
}

/** Domain and fingerprint of an `fp` key (the fingerprint is a copy), or undefined if malformed. */
export function decodeFpKey(
  key: Uint8Array,
): { domainId: number; fingerprint: Buffer } | undefined {
  const b = asBuffer(key);
  let id: { id: number; length: number };
  try {
    id = readId(b, 0);
  } catch {
    return undefined;
  }
  if (b.length !== id.length + FINGERPRINT_BYTES) return undefined;
  return { domainId: id.id, fingerprint: Buffer.from(b.subarray(id.length)) };
}

/**
 * Key range of a domain's index entries whose fingerprint starts with a byte in [lo, hi)
 * (0 ≤ lo < hi ≤ 256): the whole domain for [0, 256).
 */
export function fpRange(domainId: number, lo: number, hi: number): { start: Buffer; end?: Buffer } {
  const prefix = idPrefix(domainId);
  const start = Buffer.concat([prefix, Buffer.from([lo])]);
  if (hi < 256) return { start, end: Buffer.concat([prefix, Buffer.from([hi])]) };
  const end = idPrefixEnd(domainId);
  return end ? { start, end } : { start };
}

/** Why a location cannot be stored, or undefined when it fits the layout. */
export function locationProblem(loc: ChunkLocation): string | undefined {
  if (!isU32(loc.containerId)) return `containerId ${loc.containerId} is not a u32`;
  if (!Number.isInteger(loc.offset) || loc.offset < 0 || loc.offset > MAX_U48)
    return `offset ${loc.offset} is not a u48`;
  if (!Number.isInteger(loc.storedLength) || loc.storedLength < 1 || loc.storedLength > MAX_U24)
    return `storedLength ${loc.storedLength} is not in 1..2^24-1`;
  if (!Number.isInteger(loc.logicalLength) || loc.logicalLength < 1 || loc.logicalLength > MAX_U24)
    return `logicalLength ${loc.logicalLength} is not in 1..2^24-1`;
  return undefined;
}

/**
 * The logical length an `fp` value leaves out: the default grain size. A chunk of another length
 * (a store with larger grains) carries it explicitly, 2 or 3 bytes more.
 */
export const IMPLIED_LOGICAL_LENGTH = 4096;

/**
 * An `fp` value: LEB128 varints `containerId · offset · storedLength×2+x · [logicalLength] ·
 * refcount`, where x = 1 says the logical length follows (x = 0: it is IMPLIED_LOGICAL_LENGTH).
 * 8 to 10 bytes for a 4 KiB chunk in a container below 256 MiB (fixed widths took 22).
 */
export function encodeChunk(entry: ChunkEntry): Buffer {
  const explicit = entry.logicalLength === IMPLIED_LOGICAL_LENGTH ? 0 : 1;
  const stored = entry.storedLength * 2 + explicit;
  const refcount = Math.min(Math.max(entry.refcount, 0), MAX_U48);
  const v = Buffer.allocUnsafe(
    varintBytes(entry.containerId) +
      varintBytes(entry.offset) +
      varintBytes(stored) +
      (explicit ? varintBytes(entry.logicalLength) : 0) +
      varintBytes(refcount),
  );
  let at = writeVarint(v, 0, entry.containerId);
  at = writeVarint(v, at, entry.offset);
  at = writeVarint(v, at, stored);
  if (explicit) at = writeVarint(v, at, entry.logicalLength);
  writeVarint(v, at, refcount);
  return v;
}

/** Decodes an `fp` value; throws RangeError when it is not one (truncated or trailing bytes). */
export function decodeChunk(value: Uint8Array): ChunkEntry {
  // Read on every dedup lookup, map write and journal apply: no tuple per varint.
  const n = value.length;
  const containerId = readVarint(value, 0, n);
  const offset = readVarint(value, varintEnd, n);
  const stored = readVarint(value, varintEnd, n);
  const logicalLength = stored % 2 === 1 ? readVarint(value, varintEnd, n) : IMPLIED_LOGICAL_LENGTH;
  const refcount = readVarint(value, varintEnd, n);
  if (varintEnd !== n) throw new RangeError(`fp value of ${n} bytes has trailing bytes`);
  return { containerId, offset, storedLength: Math.floor(stored / 2), logicalLength, refcount };
}

// ---------------------------------------------------------------------------------------------
// Block maps

/** Grain indexes are safe integers (2^53 grains of 4 KiB is far beyond any volume). */
export const MAX_GRAIN = Number.MAX_SAFE_INTEGER;
const GRAIN_BYTES = 7;

/** Writes a grain (< 2^56) as 7 big-endian bytes at `at`. */
function writeGrain(buf: Buffer, at: number, grain: number): void {
  const high = Math.floor(grain / TWO_32);
  buf[at] = high >>> 16;
  buf.writeUInt16BE(high & 0xffff, at + 1);
  buf.writeUInt32BE(grain >>> 0, at + 3);
}

function readGrain(b: Buffer, at: number): number {
  return (b[at]! * 0x1_0000 + b.readUInt16BE(at + 1)) * TWO_32 + b.readUInt32BE(at + 3);
}

/** `map` key: volume id · grain u56 (8 bytes for a volume below 128). */
export function mapKey(volume: number, grain: number): Buffer {
  const key = Buffer.allocUnsafe(idBytes(volume) + GRAIN_BYTES);
  writeGrain(key, writeId(key, 0, volume), grain);
  return key;
}

/**
 * The first key of `volume` in a db keyed by volume first (`map`, `mapold`, `mapdeath`,
 * `snapshot`): the volume's id alone, below every key of the volume.
 */
export function mapVolumeStart(volume: number): Buffer {
  return idPrefix(volume);
}

/** The first key after every key of `volume` (the end of its range), or undefined for the last u32. */
export function mapVolumeEnd(volume: number): Buffer | undefined {
  return idPrefixEnd(volume);
}

export function decodeMapKey(key: Uint8Array): { volume: number; grain: number } {
  const b = asBuffer(key);
  const { id, length } = readId(b, 0);
  return { volume: id, grain: readGrain(b, length) };
}

/**
 * A map value is the fingerprint, optionally followed by a u32 birth generation: the volume's
 * generation when the entry was written (absent = 0). Volumes that never had a snapshot write
 * the bare fingerprint. Readers that only want the data take the first FINGERPRINT_BYTES.
 */
export function mapValueFingerprint(value: Uint8Array): Buffer {
  return Buffer.from(asBuffer(value).subarray(0, FINGERPRINT_BYTES));
}

export function mapValueBirth(value: Uint8Array): number {
  return value.length >= FINGERPRINT_BYTES + 4 ? readU32(value, FINGERPRINT_BYTES) : 0;
}

/** The map value of a fingerprint born at `birth` (the bare fingerprint for birth 0). */
export function encodeMapValue(fingerprint: Uint8Array, birth: number): Buffer {
  if (birth === 0) return Buffer.from(fingerprint.subarray(0, FINGERPRINT_BYTES));
  const v = Buffer.allocUnsafe(FINGERPRINT_BYTES + 4);
  v.set(fingerprint.subarray(0, FINGERPRINT_BYTES), 0);
  v.writeUInt32BE(birth, FINGERPRINT_BYTES);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Snapshots: old versions, their death list, snapshot records

/** `mapold` key: one old version of a grain, found by the birth of that version. */
export function oldKey(volume: number, grain: number, birth: number): Buffer {
  const key = Buffer.allocUnsafe(idBytes(volume) + GRAIN_BYTES + 4);
  const at = writeId(key, 0, volume);
  writeGrain(key, at, grain);
  key.writeUInt32BE(birth, at + GRAIN_BYTES);
  return key;
}

export function decodeOldKey(key: Uint8Array): { volume: number; grain: number; birth: number } {
  const b = asBuffer(key);
  const { id, length } = readId(b, 0);
  return {
    volume: id,
    grain: readGrain(b, length),
    birth: b.readUInt32BE(length + GRAIN_BYTES),
  };
}

/** `mapold` value: the fingerprint and the generation that overwrote or unmapped it. */
export function encodeOldValue(fingerprint: Uint8Array, death: number): Buffer {
  const v = Buffer.allocUnsafe(FINGERPRINT_BYTES + 4);
  v.set(fingerprint.subarray(0, FINGERPRINT_BYTES), 0);
  v.writeUInt32BE(death, FINGERPRINT_BYTES);
  return v;
}

export function decodeOldValue(value: Uint8Array): { fingerprint: Buffer; death: number } {
  return {
    fingerprint: Buffer.from(asBuffer(value).subarray(0, FINGERPRINT_BYTES)),
    death: readU32(value, FINGERPRINT_BYTES),
  };
}

/** `mapdeath` key: old versions grouped by the generation that ended them (value: birth u32). */
export function deathKey(volume: number, death: number, grain: number): Buffer {
  const key = Buffer.allocUnsafe(idBytes(volume) + 4 + GRAIN_BYTES);
  const at = writeId(key, 0, volume);
  key.writeUInt32BE(death, at);
  writeGrain(key, at + 4, grain);
  return key;
}

export function decodeDeathKey(key: Uint8Array): { volume: number; death: number; grain: number } {
  const b = asBuffer(key);
  const { id, length } = readId(b, 0);
  return {
    volume: id,
    death: b.readUInt32BE(length),
    grain: readGrain(b, length + 4),
  };
}

/** `snapshot` key: volume id · snapshot u32. */
export function snapshotKey(volume: number, snapshot: number): Buffer {
  const key = Buffer.allocUnsafe(idBytes(volume) + 4);
  key.writeUInt32BE(snapshot, writeId(key, 0, volume));
  return key;
}

export function decodeSnapshotKey(key: Uint8Array): { volume: number; snapshot: number } {
  const b = asBuffer(key);
  const { id, length } = readId(b, 0);
  return { volume: id, snapshot: b.readUInt32BE(length) };
}

export const SnapshotState = { live: 0, deleting: 1 } as const;
export type SnapshotState = (typeof SnapshotState)[keyof typeof SnapshotState];

/** The smallest key above `key` (in byte order): a cursor that excludes it. */
export function keyAfter(key: Uint8Array): Buffer {
  const next = Buffer.alloc(key.length + 1);
  next.set(key, 0);
  return next;
}

// ---------------------------------------------------------------------------------------------
// Reference-count journal

export interface JournalDelta {
  readonly fingerprint: Buffer;
  readonly delta: number;
}

export interface JournalRecord {
  readonly domainId: number;
  readonly deltas: readonly JournalDelta[];
}

const JOURNAL_DELTA_BYTES = FINGERPRINT_BYTES + 4;

export function journalKey(seq: number): Buffer {
  const key = Buffer.allocUnsafe(8);
  writeU64(key, 0, seq);
  return key;
}

export function encodeJournalRecord(record: JournalRecord): Buffer {
  const v = Buffer.allocUnsafe(8 + record.deltas.length * JOURNAL_DELTA_BYTES);
  v.writeUInt32BE(record.domainId, 0);
  v.writeUInt32BE(record.deltas.length, 4);
  let at = 8;
  for (const d of record.deltas) {
    v.set(d.fingerprint.subarray(0, FINGERPRINT_BYTES), at);
    v.writeInt32BE(d.delta, at + FINGERPRINT_BYTES);
    at += JOURNAL_DELTA_BYTES;
  }
  return v;
}

/** Decodes a journal value; throws on a truncated record (the caller reports it as corrupt). */
export function decodeJournalRecord(value: Uint8Array): JournalRecord {
  const v = asBuffer(value);
  if (v.length < 8) throw new RangeError(`journal record of ${v.length} bytes`);
  const n = v.readUInt32BE(4);
  if (v.length !== 8 + n * JOURNAL_DELTA_BYTES)
    throw new RangeError(`journal record of ${v.length} bytes announces ${n} deltas`);
  const deltas: JournalDelta[] = [];
  for (let i = 0, at = 8; i < n; i++, at += JOURNAL_DELTA_BYTES) {
    deltas.push({
      fingerprint: Buffer.from(v.subarray(at, at + FINGERPRINT_BYTES)),
      delta: v.readInt32BE(at + FINGERPRINT_BYTES),
    });
  }
  return { domainId: v.readUInt32BE(0), deltas };
}

// ---------------------------------------------------------------------------------------------
// Dead chunks

export const DEAD_KEY_BYTES = 8 + FINGERPRINT_BYTES;

export function deadKey(containerId: number, domainId: number, fingerprint: Uint8Array): Buffer {
  const key = Buffer.allocUnsafe(DEAD_KEY_BYTES);
  key.writeUInt32BE(containerId, 0);
  key.writeUInt32BE(domainId, 4);
  key.set(fingerprint.subarray(0, FINGERPRINT_BYTES), 8);
  return key;
}

export function decodeDeadKey(key: Uint8Array): {
  containerId: number;
  domainId: number;
  fingerprint: Buffer;
} {
  const b = asBuffer(key);
  return {
    containerId: b.readUInt32BE(0),
    domainId: b.readUInt32BE(4),
    fingerprint: Buffer.from(b.subarray(8, DEAD_KEY_BYTES)),
  };
}

export function u32Key(n: number): Buffer {
  const key = Buffer.allocUnsafe(4);
  key.writeUInt32BE(n, 0);
  return key;
}

export function u32Value(n: number): Buffer {
  return u32Key(n);
}

export function readU32(bytes: Uint8Array, offset = 0): number {
  return asBuffer(bytes).readUInt32BE(offset);
}

// ---------------------------------------------------------------------------------------------
// Counters

export interface VolumeRecord {
  readonly domainId: number;
  /** Map entries (grains holding data). */
  readonly mappedGrains: number;
  /** Sum of the stored lengths of the chunks the map entries point at (shared chunks in full). */
  readonly referencedBytes: number;
  /** Present once the volume had a snapshot (appended to the value; absent = all zero). */
  readonly snap?: VolumeSnapshots;
}

/** The snapshot state of a volume, appended to its record (28 bytes). */
export interface VolumeSnapshots {
  /** Current generation: the birth of entries written now, the number of the next snapshot. */
  readonly gen: number;
  /** The newest live snapshot (meaningful when `live` > 0). */
  readonly newest: number;
  /** Live snapshots (snapshots being deleted excluded). */
  readonly live: number;
  /** Old versions (`mapold` entries) of the volume. */
  readonly oldGrains: number;
  /** Sum of the stored lengths of the chunks old versions point at. */
  readonly oldBytes: number;
}

const VOLUME_BASE_BYTES = 20;
const VOLUME_SNAP_BYTES = VOLUME_BASE_BYTES + 28;

export function zeroSnapshots(): VolumeSnapshots {
  return { gen: 0, newest: 0, live: 0, oldGrains: 0, oldBytes: 0 };
}

export function encodeVolume(r: VolumeRecord): Buffer {
  const v = Buffer.allocUnsafe(r.snap ? VOLUME_SNAP_BYTES : VOLUME_BASE_BYTES);
  v.writeUInt32BE(r.domainId, 0);
  writeU64(v, 4, r.mappedGrains);
  writeU64(v, 12, r.referencedBytes);
  if (r.snap) {
    v.writeUInt32BE(r.snap.gen, 20);
    v.writeUInt32BE(r.snap.newest, 24);
    v.writeUInt32BE(r.snap.live, 28);
    writeU64(v, 32, r.snap.oldGrains);
    writeU64(v, 40, r.snap.oldBytes);
  }
  return v;
}

export function decodeVolume(value: Uint8Array): VolumeRecord {
  const base = {
    domainId: readU32(value, 0),
    mappedGrains: readU64(value, 4),
    referencedBytes: readU64(value, 12),
  };
  if (value.length < VOLUME_SNAP_BYTES) return base;
  return {
    ...base,
    snap: {
      gen: readU32(value, 20),
      newest: readU32(value, 24),
      live: readU32(value, 28),
      oldGrains: readU64(value, 32),
      oldBytes: readU64(value, 40),
    },
  };
}

export interface DomainCounters {
  /** Map entries over every volume of the domain (maintained with the maps). */
  mappedGrains: number;
  /** Sum of stored lengths over every map entry (maintained with the maps). */
  referencedBytes: number;
  /** Chunks with refcount > 0 (maintained by the journal apply). */
  liveChunks: number;
  /** Sum of logical lengths of live chunks. */
  uniqueLogicalBytes: number;
  /** Sum of stored lengths of live chunks. */
  physicalBytes: number;
  /** Chunks whose refcount fell to 0, not yet reclaimed by GC. */
  deadChunks: number;
  /** Sum of stored lengths of dead chunks. */
  deadBytes: number;
  /** Old versions (`mapold` entries) over every volume of the domain (maintained with the maps). */
  snapshotGrains: number;
  /** Sum of stored lengths over old versions (maintained with the maps). */
  snapshotBytes: number;
}

export const DOMAIN_FIELDS = [
  "mappedGrains",
  "referencedBytes",
  "liveChunks",
  "uniqueLogicalBytes",
  "physicalBytes",
  "deadChunks",
  "deadBytes",
  "snapshotGrains",
  "snapshotBytes",
] as const satisfies readonly (keyof DomainCounters)[];

export function zeroDomain(): DomainCounters {
  return {
    mappedGrains: 0,
    referencedBytes: 0,
    liveChunks: 0,
    uniqueLogicalBytes: 0,
    physicalBytes: 0,
    deadChunks: 0,
    deadBytes: 0,
    snapshotGrains: 0,
    snapshotBytes: 0,
  };
}

export function encodeDomain(c: DomainCounters): Buffer {
  const v = Buffer.allocUnsafe(DOMAIN_FIELDS.length * 8);
  DOMAIN_FIELDS.forEach((f, i) => {
    writeU64(v, i * 8, c[f]);
  });
  return v;
}

/** Decodes a domain record; fields a shorter (older) record lacks are zero. */
export function decodeDomain(value: Uint8Array): DomainCounters {
  const c = zeroDomain();
  DOMAIN_FIELDS.forEach((f, i) => {
    if (value.length >= (i + 1) * 8) c[f] = readU64(value, i * 8);
  });
  return c;
}

export interface ContainerCounters {
  /** Chunk records written to the container and recorded here (duplicates included). */
  storedChunks: number;
  storedBytes: number;
  /** Of those, records no map references any more (dead chunks and losing duplicate copies). */
  deadChunks: number;
  deadBytes: number;
}

export const CONTAINER_FIELDS = [
  "storedChunks",
  "storedBytes",
  "deadChunks",
  "deadBytes",
] as const satisfies readonly (keyof ContainerCounters)[];

export function zeroContainer(): ContainerCounters {
  return { storedChunks: 0, storedBytes: 0, deadChunks: 0, deadBytes: 0 };
}

export function encodeContainer(c: ContainerCounters): Buffer {
  const v = Buffer.allocUnsafe(CONTAINER_FIELDS.length * 8);
  CONTAINER_FIELDS.forEach((f, i) => {
    writeU64(v, i * 8, c[f]);
  });
  return v;
}

export function decodeContainer(value: Uint8Array): ContainerCounters {
  const c = zeroContainer();
  CONTAINER_FIELDS.forEach((f, i) => {
    c[f] = readU64(value, i * 8);
  });
  return c;
}

/** Order-preserving string form of a binary key (latin1: one char per byte). */
export function keyString(key: Uint8Array): string {
  return asBuffer(key).toString("latin1");
}

export function keyFromString(s: string): Buffer {
  return Buffer.from(s, "latin1");
}
