/**
 * Binary layout of every key and value the pool metadata keeps in LMDB.
 *
 * All integers are big-endian, so that LMDB's byte-wise key order is numeric order: a range scan
 * over `map` visits one volume's grains in ascending grain order, and a range scan over `dead`
 * visits one container's dead chunks together. Nothing here touches LMDB; these are pure
 * functions over Buffers so that tests and the rebuild tools can reason about the layout.
 *
 * Sub-databases (one LMDB environment, named databases):
 *
 * | db          | key                                        | value                                   |
 * | ----------- | ------------------------------------------ | --------------------------------------- |
 * | `fp`        | domain u32 · fingerprint[32]          (36) | container u32 · offset u48 · stored u24 · logical u24 · refcount u48 (22) |
 * | `map`       | volume u32 · grain u64                (12) | fingerprint[32] (· birth u32 once the volume had a snapshot) |
 * | `mapold`    | volume u32 · grain u64 · birth u32    (16) | fingerprint[32] · death u32 (36)         |
 * | `mapdeath`  | volume u32 · death u32 · grain u64    (16) | birth u32                                |
 * | `snapshot`  | volume u32 · snapshot u32              (8) | state u8 (0 live, 1 being deleted)       |
 * | `journal`   | sequence u64                           (8) | domain u32 · n u32 · n × (fingerprint[32] · delta i32) |
 * | `dead`      | container u32 · domain u32 · fingerprint[32] (40) | stored u32                       |
 * | `volume`    | volume u32                             (4) | domain u32 · mappedGrains u64 · referencedBytes u64 (· snapshot state, see VolumeSnapshots) |
 * | `domain`    | domain u32                             (4) | 9 × u64 counters (see DomainCounters; older records hold 7) |
 * | `container` | container u32                          (4) | 4 × u64 counters (see ContainerCounters) |
 * | `meta`      | ASCII name                                 | per name (format version, grain size, rebuild markers) |
 *
 * u64 fields hold JavaScript safe integers (< 2^53); they are written as two u32 halves.
 */

export const FINGERPRINT_BYTES = 32;
export const META_FORMAT_VERSION = 1;
/**
 * Written by the first snapshot of a store: from then on old versions live in `mapold`, which a
 * build without snapshots would not count (its audit would report leaks and its repair would
 * drop references). Such a build refuses the store; this one opens both.
 */
export const SNAPSHOT_FORMAT_VERSION = 2;

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

export const FP_KEY_BYTES = 4 + FINGERPRINT_BYTES;
export const FP_VALUE_BYTES = 22;

export function fpKey(domainId: number, fingerprint: Uint8Array): Buffer {
  const key = Buffer.allocUnsafe(FP_KEY_BYTES);
  key.writeUInt32BE(domainId, 0);
  key.set(fingerprint, 4);
  return key;
}

/** Domain and fingerprint of an `fp` key (the fingerprint is a copy). */
export function decodeFpKey(key: Uint8Array): { domainId: number; fingerprint: Buffer } {
  const b = asBuffer(key);
  return { domainId: b.readUInt32BE(0), fingerprint: Buffer.from(b.subarray(4, FP_KEY_BYTES)) };
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

export function encodeChunk(entry: ChunkEntry): Buffer {
  const v = Buffer.allocUnsafe(FP_VALUE_BYTES);
  v.writeUInt32BE(entry.containerId, 0);
  v.writeUIntBE(entry.offset, 4, 6);
  v.writeUIntBE(entry.storedLength, 10, 3);
  v.writeUIntBE(entry.logicalLength, 13, 3);
  v.writeUIntBE(Math.min(Math.max(entry.refcount, 0), MAX_U48), 16, 6);
  return v;
}

export function decodeChunk(value: Uint8Array): ChunkEntry {
  const v = asBuffer(value);
  return {
    containerId: v.readUInt32BE(0),
    offset: v.readUIntBE(4, 6),
    storedLength: v.readUIntBE(10, 3),
    logicalLength: v.readUIntBE(13, 3),
    refcount: v.readUIntBE(16, 6),
  };
}

// ---------------------------------------------------------------------------------------------
// Block maps

export const MAP_KEY_BYTES = 12;
/** Grain indexes are safe integers (2^53 grains of 4 KiB is far beyond any volume). */
export const MAX_GRAIN = Number.MAX_SAFE_INTEGER;

export function mapKey(volume: number, grain: number): Buffer {
  const key = Buffer.allocUnsafe(MAP_KEY_BYTES);
  key.writeUInt32BE(volume, 0);
  key.writeUInt32BE(Math.floor(grain / TWO_32), 4);
  key.writeUInt32BE(grain >>> 0, 8);
  return key;
}

/** The first key after every grain of `volume` (the end of its range), or undefined for the last u32. */
export function mapVolumeEnd(volume: number): Buffer | undefined {
  if (volume === MAX_U32) return undefined;
  const key = Buffer.alloc(4);
  key.writeUInt32BE(volume + 1, 0);
  return key;
}

export function decodeMapKey(key: Uint8Array): { volume: number; grain: number } {
  const b = asBuffer(key);
  return { volume: b.readUInt32BE(0), grain: b.readUInt32BE(4) * TWO_32 + b.readUInt32BE(8) };
}

/**
 * A map value is the fingerprint, optionally followed by a u32 birth generation: the volume's
 * generation when the entry was written (absent = 0). Volumes that never had a snapshot write
 * the bare fingerprint. Readers that only want the data take the first 32 bytes.
 */
export function mapValueFingerprint(value: Uint8Array): Buffer {
  return Buffer.from(asBuffer(value).subarray(0, FINGERPRINT_BYTES));
}

export function mapValueBirth(value: Uint8Array): number {
  return value.length >= FINGERPRINT_BYTES + 4 ? readU32(value, FINGERPRINT_BYTES) : 0;
}

/** The map value of a fingerprint born at `birth` (the bare fingerprint for birth 0). */
export function encodeMapValue(fingerprint: Uint8Array, birth: number): Buffer {
  if (birth === 0) return Buffer.from(fingerprint);
  const v = Buffer.allocUnsafe(FINGERPRINT_BYTES + 4);
  v.set(fingerprint, 0);
  v.writeUInt32BE(birth, FINGERPRINT_BYTES);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Snapshots: old versions, their death list, snapshot records

export const OLD_KEY_BYTES = 16;

/** `mapold` key: one old version of a grain, found by the birth of that version. */
export function oldKey(volume: number, grain: number, birth: number): Buffer {
  const key = Buffer.allocUnsafe(OLD_KEY_BYTES);
  key.writeUInt32BE(volume, 0);
  key.writeUInt32BE(Math.floor(grain / TWO_32), 4);
  key.writeUInt32BE(grain >>> 0, 8);
  key.writeUInt32BE(birth, 12);
  return key;
}

export function decodeOldKey(key: Uint8Array): { volume: number; grain: number; birth: number } {
  const b = asBuffer(key);
  return {
    volume: b.readUInt32BE(0),
    grain: b.readUInt32BE(4) * TWO_32 + b.readUInt32BE(8),
    birth: b.readUInt32BE(12),
  };
}

/** `mapold` value: the fingerprint and the generation that overwrote or unmapped it. */
export function encodeOldValue(fingerprint: Uint8Array, death: number): Buffer {
  const v = Buffer.allocUnsafe(FINGERPRINT_BYTES + 4);
  v.set(fingerprint, 0);
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
  const key = Buffer.allocUnsafe(OLD_KEY_BYTES);
  key.writeUInt32BE(volume, 0);
  key.writeUInt32BE(death, 4);
  key.writeUInt32BE(Math.floor(grain / TWO_32), 8);
  key.writeUInt32BE(grain >>> 0, 12);
  return key;
}

export function decodeDeathKey(key: Uint8Array): { volume: number; death: number; grain: number } {
  const b = asBuffer(key);
  return {
    volume: b.readUInt32BE(0),
    death: b.readUInt32BE(4),
    grain: b.readUInt32BE(8) * TWO_32 + b.readUInt32BE(12),
  };
}

/** `snapshot` key. */
export function snapshotKey(volume: number, snapshot: number): Buffer {
  const key = Buffer.allocUnsafe(8);
  key.writeUInt32BE(volume, 0);
  key.writeUInt32BE(snapshot, 4);
  return key;
}

export const SnapshotState = { live: 0, deleting: 1 } as const;
export type SnapshotState = (typeof SnapshotState)[keyof typeof SnapshotState];

/** The smallest key above `key` (keys of one db have a fixed length): a cursor that excludes it. */
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
    v.set(d.fingerprint, at);
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
  key.set(fingerprint, 8);
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
