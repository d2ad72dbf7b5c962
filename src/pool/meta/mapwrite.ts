/**
 * The body of every map mutation (writeGrains, unmapGrains, copyGrains, deleteVolume) and the
 * release of old versions (deleteSnapshot, deleteVolume), run inside a write transaction the
 * caller opened. Each keeps the invariant of README.md on its own: the map entries (head and old
 * versions), the journal record with their reference deltas, inserted index entries and the
 * volume, domain and container counters move together.
 *
 * Snapshots (README "Snapshots"): an entry born at or before the volume's newest live snapshot is
 * still seen by that snapshot. Overwriting or unmapping it moves it, with its reference, to
 * `mapold` (plus its `mapdeath` listing) instead of journaling −1. Entries are written with the
 * volume's generation as their birth once the volume had a snapshot; before, as the bare
 * fingerprint (birth 0), so that a store without snapshots writes exactly what it always did.
 */
import { countDuplicate, countStored, sameLocation, unknownVolume } from "./checks.js";
import {
  type ChunkEntry,
  type ChunkLocation,
  deathKey,
  decodeChunk,
  decodeMapKey,
  decodeVolume,
  encodeChunk,
  encodeDomain,
  encodeJournalRecord,
  encodeMapValue,
  encodeOldValue,
  encodeVolume,
  fpKey,
  type JournalDelta,
  journalKey,
  keyString,
  mapKey,
  mapValueBirth,
  mapValueFingerprint,
  oldKey,
  u32Key,
  u32Value,
  type VolumeRecord,
  zeroDomain,
} from "./codec.js";
import { CounterDeltas, FpReader, type JournalState, type MetaDbs } from "./dbs.js";
import { MetaError, MetaErrorCode } from "./errors.js";
import { setChunkState } from "./refcount.js";

export interface PreparedUpdate {
  readonly grain: number;
  readonly key: Buffer;
  readonly fingerprint: Buffer | undefined;
  readonly chunk: ChunkLocation | undefined;
  /** The caller's index entry for `fingerprint` (GrainUpdate.indexed), valid at `token`. */
  readonly known?: ChunkEntry;
  readonly token?: number;
}

export interface TxnWriteResult {
  readonly changed: number;
  readonly inserted: number;
  readonly duplicates: number;
  /** Map entries moved to the old versions (seen by a snapshot). */
  readonly preserved: number;
  readonly journaled: boolean;
}

/** One old version, as found in `mapold` / `mapdeath`. */
export interface OldVersion {
  readonly grain: number;
  readonly birth: number;
  readonly death: number;
  /** Undefined when the `mapold` entry is missing (a stale listing: only the listing goes). */
  readonly fingerprint: Buffer | undefined;
}

/** Sums of reference deltas per fingerprint, appended as one journal record. */
export class RefDeltas {
  /** Fingerprint (latin1) → the first buffer given for it (not modified later) and the sum. */
  private readonly sums = new Map<string, { fingerprint: Buffer; delta: number }>();

  bump(fp: Buffer, by: number, k = keyString(fp)): void {
    const sum = this.sums.get(k);
    if (sum === undefined) this.sums.set(k, { fingerprint: fp, delta: by });
    else sum.delta += by;
  }

  /** The sum for `key` (keyString of the fingerprint), which is then not journaled; 0 if none. */
  take(key: string): number {
    const sum = this.sums.get(key);
    if (sum === undefined) return 0;
    this.sums.delete(key);
    return sum.delta;
  }

  /** Appends the non-zero sums as one record; returns whether one was written. */
  append(dbs: MetaDbs, journal: JournalState, domainId: number): boolean {
    const deltas: JournalDelta[] = [];
    for (const sum of this.sums.values()) if (sum.delta !== 0) deltas.push(sum);
    if (deltas.length === 0 || journal.suppressed) return false;
    const seq = journal.nextSeq++;
    dbs.journal.putSync(journalKey(seq), encodeJournalRecord({ domainId, deltas }));
    journal.pending++;
    return true;
  }
}

export interface WriteMapOptions {
  /**
   * Map log replay (replay.ts): a fingerprint the index lacks is mapped anyway (its chunk may
   * have been collected after a later overwrite; the final audit reports a surviving one as
   * damage) instead of rejecting with ChunkMissing.
   */
  readonly tolerateMissing?: boolean;
  /**
   * The store's index epoch as the transaction runs (MetaStore.indexToken): an update whose
   * `known` entry was looked up at this epoch uses it instead of reading the index. Equal
   * epochs mean no transaction that removes or moves index entries ran in between, so the
   * entry is still there with the same stored length (all the map write takes from it).
   */
  readonly indexEpoch?: number;
}

/**
 * A chunk `loc` names, at refcount 0: an object literal rather than a spread, which V8 builds
 * through a generic clone (a tenth of the map thread's time went to the two spreads of a unique
 * write's insert).
 */
function unreferenced(loc: ChunkLocation): ChunkEntry {
  return {
    containerId: loc.containerId,
    offset: loc.offset,
    storedLength: loc.storedLength,
    logicalLength: loc.logicalLength,
    refcount: 0,
  };
}

/**
 * Read and check everything first (it may throw), then write (it must not throw), so that a
 * rejection changes nothing. `prepared` is sorted by grain, one update per grain.
 */
export function writeMapInTxn(
  dbs: MetaDbs,
  journal: JournalState,
  volume: number,
  prepared: readonly PreparedUpdate[],
  options: WriteMapOptions = {},
): TxnWriteResult {
  const volKey = u32Key(volume);
  const rawRec = dbs.volumes.get(volKey);
  if (!rawRec) throw unknownVolume(volume);
  const rec = decodeVolume(rawRec);
  const domainId = rec.domainId;
  const snap = rec.snap;
  const gen = snap?.gen ?? 0;
  // Entries born at or before this generation are seen by the newest live snapshot.
  const keepUpTo = snap && snap.live > 0 ? snap.newest : -1;

  // Plan. The current entries of a dense run of grains (a multi-grain write) come from one
  // range scan, which for a write into holes finds nothing at once; sparse updates use gets.
  const first = prepared[0]!.grain;
  const last = prepared[prepared.length - 1]!.grain;
  let current: Map<number, Buffer> | undefined;
  if (prepared.length > 1 && last - first < 2 * prepared.length) {
    current = new Map();
    const range = { start: mapKey(volume, first), end: mapKey(volume, last + 1) };
    for (const { key, value } of dbs.map.getRange(range)) {
      current.set(decodeMapKey(key).grain, value);
    }
  }
  const entries = new Map<string, ChunkEntry | null>();
  const index = new FpReader(dbs.fp, domainId);
  /** `k`: keyString(fp), when the caller has it. */
  const lookup = (fp: Buffer, k = keyString(fp)): ChunkEntry | null => {
    let e = entries.get(k);
    if (e === undefined) {
      e = index.get(fp) ?? null;
      entries.set(k, e);
    }
    return e;
  };
  /** keyString(fingerprint) → the chunk this call inserts, with its fingerprint buffer. */
  const inserts = new Map<string, { fingerprint: Buffer; loc: ChunkLocation }>();
  const duplicates = new Map<string, ChunkLocation>();
  const missing: string[] = [];
  const changes: {
    grain: number;
    key: Buffer;
    oldFp: Buffer | undefined;
    newFp: Buffer | undefined;
    /** keyString(newFp), computed once per update. */
    newKey: string | undefined;
    oldStored: number;
    newStored: number;
    /** False when the map already holds newFp (healing a dangling entry: only the +1). */
    writeMap: boolean;
    /** False when the old chunk was not in the index: its reference was never counted. */
    releaseOld: boolean;
    /** The old entry moves to `mapold` (a snapshot sees it), born at `oldBirth`. */
    preserve: boolean;
    oldBirth: number;
  }[] = [];
  const epoch = options.indexEpoch;
  for (const p of prepared) {
    let newEntry: ChunkEntry | null = null;
    // The fingerprint as a Map key, made once: every map below is keyed by it.
    const newKey = p.fingerprint ? keyString(p.fingerprint) : undefined;
    if (p.fingerprint && newKey !== undefined) {
      newEntry =
        p.known !== undefined && epoch !== undefined && p.token === epoch && !p.chunk
          ? p.known
          : lookup(p.fingerprint, newKey);
      if (!newEntry && p.chunk) {
        newEntry = unreferenced(p.chunk);
        entries.set(newKey, newEntry);
        inserts.set(newKey, { fingerprint: p.fingerprint, loc: p.chunk });
      } else if (!newEntry && !options.tolerateMissing) {
        missing.push(p.fingerprint.toString("hex"));
        continue;
      } else if (newEntry && p.chunk && !sameLocation(newEntry, p.chunk)) {
        duplicates.set(`${p.chunk.containerId}:${p.chunk.offset}`, p.chunk);
      }
    }
    const oldRaw = current ? current.get(p.grain) : dbs.map.get(p.key);
    const oldFp = oldRaw ? mapValueFingerprint(oldRaw) : undefined;
    const unchanged =
      oldFp !== undefined && p.fingerprint !== undefined
        ? oldFp.equals(p.fingerprint)
        : oldFp === undefined && p.fingerprint === undefined;
    if (unchanged) {
      // Rewriting a dangling entry with its own data re-inserted: the entry now counts.
      if (p.fingerprint && newKey !== undefined && inserts.has(newKey)) {
        changes.push({
          grain: p.grain,
          key: p.key,
          oldFp: undefined,
          newFp: p.fingerprint,
          newKey,
          oldStored: 0,
          newStored: newEntry?.storedLength ?? 0,
          writeMap: false,
          releaseOld: false,
          preserve: false,
          oldBirth: 0,
        });
      }
      continue;
    }
    // A chunk inserted by this very call was not in the index before: whatever pointed at it
    // was a dangling entry whose reference no refcount holds.
    const oldEntry = oldFp && !inserts.has(keyString(oldFp)) ? lookup(oldFp) : null;
    const oldBirth = oldRaw ? mapValueBirth(oldRaw) : 0;
    changes.push({
      grain: p.grain,
      key: p.key,
      // Every property present, no spreads: one object shape, and no generic clone per grain.
      oldFp,
      newFp: p.fingerprint,
      newKey,
      oldStored: oldEntry?.storedLength ?? 0,
      newStored: newEntry?.storedLength ?? 0,
      writeMap: true,
      releaseOld: oldEntry !== null,
      preserve: oldFp !== undefined && oldBirth <= keepUpTo,
      oldBirth,
    });
  }
  if (missing.length > 0) {
    throw new MetaError(
      MetaErrorCode.ChunkMissing,
      `${missing.length} fingerprint(s) not in domain ${domainId}'s index`,
      missing,
    );
  }

  // Write.
  const deltas = new CounterDeltas();
  for (const loc of duplicates.values()) countDuplicate(deltas, loc);
  const refs = new RefDeltas();
  let mapped = 0;
  let referenced = 0;
  let oldGrains = 0;
  let oldBytes = 0;
  for (const c of changes) {
    if (c.newFp) refs.bump(c.newFp, 1, c.newKey);
    if (c.oldFp && c.preserve) {
      // The snapshot now owns the old entry's reference: no −1. An entry that dangled until
      // this call inserted its chunk names an indexed chunk from now on, so it starts counting.
      if (inserts.has(keyString(c.oldFp))) refs.bump(c.oldFp, 1);
      dbs.mapold.putSync(oldKey(volume, c.grain, c.oldBirth), encodeOldValue(c.oldFp, gen));
      dbs.mapdeath.putSync(deathKey(volume, gen, c.grain), u32Value(c.oldBirth));
      oldGrains += 1;
      oldBytes += lookup(c.oldFp)?.storedLength ?? 0;
    } else if (c.oldFp && c.releaseOld) {
      refs.bump(c.oldFp, -1);
    }
    referenced += c.newStored - c.oldStored;
    if (!c.writeMap) continue;
    if (c.newFp) dbs.map.putSync(c.key, gen === 0 ? c.newFp : encodeMapValue(c.newFp, gen));
    else dbs.map.removeSync(c.key);
    mapped += (c.newFp ? 1 : 0) - (c.oldFp ? 1 : 0);
  }
  // A chunk this call inserts starts at the references this call gives it, instead of 0 and a
  // journal delta applied later (what a unique write paid: a journal record, then a read and a
  // write of its index entry again in the batch). Equivalent: nothing older can have counted
  // it, since the index did not hold it, and the journal's deltas are only ever added.
  for (const [k, { fingerprint, loc }] of inserts) {
    const key = fpKey(domainId, fingerprint);
    const initial = refs.take(k);
    if (initial > 0) {
      setChunkState(dbs, deltas, domainId, fingerprint, unreferenced(loc), initial, false, key);
    } else {
      dbs.fp.putSync(key, encodeChunk(unreferenced(loc)));
    }
    countStored(deltas, loc);
  }
  const journaled = refs.append(dbs, journal, domainId);
  if (mapped !== 0 || referenced !== 0 || oldGrains !== 0) {
    const next: VolumeRecord = {
      domainId,
      mappedGrains: rec.mappedGrains + mapped,
      referencedBytes: rec.referencedBytes + referenced,
      ...(snap
        ? {
            snap: {
              ...snap,
              oldGrains: snap.oldGrains + oldGrains,
              oldBytes: snap.oldBytes + oldBytes,
            },
          }
        : {}),
    };
    dbs.volumes.putSync(volKey, encodeVolume(next));
    const d = deltas.domain(domainId);
    d.mappedGrains += mapped;
    d.referencedBytes += referenced;
    d.snapshotGrains += oldGrains;
    d.snapshotBytes += oldBytes;
  }
  deltas.writeTo(dbs);
  return {
    changed: changes.length,
    inserted: inserts.size,
    duplicates: duplicates.size,
    preserved: oldGrains,
    journaled,
  };
}

/**
 * Drops old versions of a volume that no snapshot needs any more: each `mapold` entry and its
 * `mapdeath` listing go, and its reference is released (−1 journaled) when its chunk is in the
 * index (an entry whose chunk the index lacks held no counted reference).
 */
export function releaseOldVersionsInTxn(
  dbs: MetaDbs,
  journal: JournalState,
  volume: number,
  versions: readonly OldVersion[],
): { released: number; journaled: boolean } {
  if (versions.length === 0) return { released: 0, journaled: false };
  const volKey = u32Key(volume);
  const rawRec = dbs.volumes.get(volKey);
  if (!rawRec) throw unknownVolume(volume);
  const rec = decodeVolume(rawRec);
  const domainId = rec.domainId;
  const stored = new Map<string, number>();
  const storedOf = (fp: Buffer): number => {
    const k = keyString(fp);
    let n = stored.get(k);
    if (n === undefined) {
      const raw = dbs.fp.get(fpKey(domainId, fp));
      n = raw ? decodeChunk(raw).storedLength : -1;
      stored.set(k, n);
    }
    return n;
  };
  const refs = new RefDeltas();
  let released = 0;
  let bytes = 0;
  for (const v of versions) {
    dbs.mapdeath.removeSync(deathKey(volume, v.death, v.grain));
    if (!v.fingerprint) continue;
    dbs.mapold.removeSync(oldKey(volume, v.grain, v.birth));
    released++;
    const n = storedOf(v.fingerprint);
    if (n >= 0) {
      refs.bump(v.fingerprint, -1);
      bytes += n;
    }
  }
  const journaled = refs.append(dbs, journal, domainId);
  if (released > 0) {
    const snap = rec.snap;
    if (snap) {
      dbs.volumes.putSync(
        volKey,
        encodeVolume({
          ...rec,
          snap: { ...snap, oldGrains: snap.oldGrains - released, oldBytes: snap.oldBytes - bytes },
        }),
      );
    }
    const deltas = new CounterDeltas();
    const d = deltas.domain(domainId);
    d.snapshotGrains -= released;
    d.snapshotBytes -= bytes;
    deltas.writeTo(dbs);
  }
  return { released, journaled };
}

/**
 * Registers a volume in a domain (createVolume's transaction body). Returns whether it created
 * anything; throws VolumeExists for a volume of another domain.
 */
export function createVolumeInTxn(dbs: MetaDbs, volume: number, domainId: number): boolean {
  const key = u32Key(volume);
  const existing = dbs.volumes.get(key);
  if (existing) {
    const rec = decodeVolume(existing);
    if (rec.domainId !== domainId) {
      throw new MetaError(
        MetaErrorCode.VolumeExists,
        `volume ${volume} exists in domain ${rec.domainId}`,
      );
    }
    return false;
  }
  dbs.volumes.putSync(key, encodeVolume({ domainId, mappedGrains: 0, referencedBytes: 0 }));
  const dk = u32Key(domainId);
  if (!dbs.domains.doesExist(dk)) dbs.domains.putSync(dk, encodeDomain(zeroDomain()));
  return true;
}
