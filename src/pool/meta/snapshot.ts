/**
 * Snapshots of block maps: creation in O(1), reads as of a snapshot, deletion in time
 * proportional to what changed, and the release of a deleted volume's old versions. The design
 * (generations, birth and death, why each transaction keeps the invariant) is in README.md
 * "Snapshots"; the map mutations that preserve old versions are in mapwrite.ts.
 *
 * Visibility: snapshot `s` of a volume sees the head entry of a grain if its birth ≤ s, else the
 * old version with birth ≤ s < death (at most one per grain: a grain's versions follow one
 * another), else a hole.
 */
import { checkU32, unknownVolume } from "./checks.js";
import {
  deathKey,
  decodeDeathKey,
  decodeMapKey,
  decodeOldKey,
  decodeOldValue,
  decodeSnapshotKey,
  decodeVolume,
  encodeVolume,
  keyAfter,
  MAX_U32,
  META_FORMAT_VERSION,
  mapKey,
  mapValueBirth,
  mapValueFingerprint,
  mapVolumeEnd,
  mapVolumeStart,
  oldKey,
  readU32,
  SNAPSHOT_FORMAT_VERSION,
  SnapshotState,
  snapshotKey,
  u32Key,
  u32Value,
  zeroSnapshots,
} from "./codec.js";
import type { JournalState, MetaDbs, ReadOpts } from "./dbs.js";
import { MetaError, MetaErrorCode } from "./errors.js";
import type { MapRecord } from "./maplog-codec.js";
import { type OldVersion, releaseOldVersionsInTxn } from "./mapwrite.js";

/** Old versions visited per deleteSnapshot / deleteVolume transaction (default). */
export const RELEASE_BATCH = 8192;

export interface DeleteSnapshotOptions {
  /** Old versions visited per transaction. Default 8192. */
  readonly batchSize?: number;
  /**
   * Stop after this many release transactions (bounded background work); call again to go on.
   * Default: until done.
   */
  readonly maxBatches?: number;
}

export interface DeleteSnapshotResult {
  /** Old versions released by this call (their −1 journaled). */
  readonly released: number;
  /** The snapshot record is gone: the deletion is complete. */
  readonly finished: boolean;
}

/** The host of these functions (MetaStore), as far as they need it. */
export interface SnapshotHost {
  readonly dbs: MetaDbs;
  readonly journalState: JournalState;
  checkOpen(): void;
  notifyJournal(): void;
  /**
   * Runs a map transaction body as a child transaction and, when the map log is on, appends
   * `record(result)` (if any) to it inside the same transaction (MetaStore.mapTxn).
   */
  mapTxn<T>(body: () => T, record: (result: T) => MapRecord | undefined): Promise<T>;
}

function volumeSnapshotRange(volume: number, ro: ReadOpts) {
  const end = mapVolumeEnd(volume);
  return { start: mapVolumeStart(volume), ...(end ? { end } : {}), ...(ro ?? {}) };
}

/** Every snapshot record of a volume, ascending, with its state. */
export function snapshotRecords(
  dbs: MetaDbs,
  volume: number,
  ro: ReadOpts,
): { snapshot: number; state: number }[] {
  const out: { snapshot: number; state: number }[] = [];
  for (const { key, value } of dbs.snapshots.getRange(volumeSnapshotRange(volume, ro))) {
    out.push({ snapshot: decodeSnapshotKey(key).snapshot, state: value[0] ?? SnapshotState.live });
  }
  return out;
}

/** Live snapshots of a volume, ascending. */
export function liveSnapshots(dbs: MetaDbs, volume: number, ro: ReadOpts): number[] {
  return snapshotRecords(dbs, volume, ro)
    .filter((r) => r.state === SnapshotState.live)
    .map((r) => r.snapshot);
}

/** Throws UnknownSnapshot unless `snapshot` is a live snapshot of the volume. */
export function checkLiveSnapshot(
  dbs: MetaDbs,
  volume: number,
  snapshot: number,
  ro: ReadOpts,
): void {
  checkU32("snapshot", snapshot);
  const raw = dbs.snapshots.get(snapshotKey(volume, snapshot), ro);
  if (!raw || raw[0] !== SnapshotState.live) {
    throw new MetaError(
      MetaErrorCode.UnknownSnapshot,
      raw
        ? `snapshot ${snapshot} of volume ${volume} is being deleted`
        : `volume ${volume} has no snapshot ${snapshot}`,
    );
  }
}

/** Whether a live snapshot (sorted) falls in [birth, death): someone still sees the version. */
export function seenByAny(live: readonly number[], birth: number, death: number): boolean {
  let lo = 0;
  let hi = live.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (live[mid]! < birth) lo = mid + 1;
    else hi = mid;
  }
  return lo < live.length && live[lo]! < death;
}

// ---------------------------------------------------------------------------------------------
// Create

/**
 * Inside a write transaction: records snapshot `s` = the volume's generation and bumps the
 * generation. Two puts (three for the store's very first snapshot, which marks the format).
 */
export function createSnapshotInTxn(dbs: MetaDbs, volume: number): number {
  const volKey = u32Key(volume);
  const raw = dbs.volumes.get(volKey);
  if (!raw) throw unknownVolume(volume);
  const rec = decodeVolume(raw);
  const snap = rec.snap ?? zeroSnapshots();
  if (snap.gen >= MAX_U32) {
    throw new MetaError(MetaErrorCode.InvalidArgument, `volume ${volume} is out of generations`);
  }
  const s = snap.gen;
  if (s === 0) {
    const format = Buffer.from("format");
    const f = dbs.meta.get(format);
    if (!f || readU32(f) === META_FORMAT_VERSION)
      dbs.meta.putSync(format, u32Value(SNAPSHOT_FORMAT_VERSION));
  }
  dbs.snapshots.putSync(snapshotKey(volume, s), Buffer.from([SnapshotState.live]));
  dbs.volumes.putSync(
    volKey,
    encodeVolume({ ...rec, snap: { ...snap, gen: s + 1, newest: s, live: snap.live + 1 } }),
  );
  return s;
}

// ---------------------------------------------------------------------------------------------
// Read

/** The fingerprint snapshot `s` sees at a grain, or undefined for a hole. */
export function snapshotGrain(
  dbs: MetaDbs,
  volume: number,
  s: number,
  grain: number,
  ro: ReadOpts,
): Buffer | undefined {
  const head = dbs.map.get(mapKey(volume, grain), ro);
  if (head && mapValueBirth(head) <= s) return mapValueFingerprint(head);
  // The version with the largest birth ≤ s (reverse: start inclusive, end exclusive; the 12-byte
  // map key of the grain sorts before all of its 16-byte old-version keys).
  const range = { start: oldKey(volume, grain, s), end: mapKey(volume, grain), reverse: true };
  for (const { value } of dbs.mapold.getRange({ ...range, limit: 1, ...(ro ?? {}) })) {
    const old = decodeOldValue(value);
    return old.death > s ? old.fingerprint : undefined;
  }
  return undefined;
}

/**
 * Entries snapshot `s` sees in [first, end), ascending: the head entries born by `s` merged
 * with the old versions alive at `s`. Consume it within one read transaction (`ro`) or inside a
 * write transaction; a grain appears once.
 */
export function* snapshotEntries(
  dbs: MetaDbs,
  volume: number,
  s: number,
  first: number,
  end: number,
  ro: ReadOpts,
): Generator<{ grain: number; fingerprint: Buffer }> {
  const heads = dbs.map
    .getRange({ start: mapKey(volume, first), end: mapKey(volume, end), ...(ro ?? {}) })
    [Symbol.iterator]();
  const olds = dbs.mapold
    .getRange({ start: oldKey(volume, first, 0), end: oldKey(volume, end, 0), ...(ro ?? {}) })
    [Symbol.iterator]();
  const nextHead = (): { grain: number; fingerprint: Buffer } | undefined => {
    for (;;) {
      const r = heads.next();
      if (r.done) return undefined;
      if (mapValueBirth(r.value.value) <= s)
        return {
          grain: decodeMapKey(r.value.key).grain,
          fingerprint: mapValueFingerprint(r.value.value),
        };
    }
  };
  const nextOld = (): { grain: number; fingerprint: Buffer } | undefined => {
    for (;;) {
      const r = olds.next();
      if (r.done) return undefined;
      const k = decodeOldKey(r.value.key);
      if (k.birth > s) continue;
      const v = decodeOldValue(r.value.value);
      if (v.death > s) return { grain: k.grain, fingerprint: v.fingerprint };
    }
  };
  try {
    let h = nextHead();
    let o = nextOld();
    while (h || o) {
      if (h && (!o || h.grain <= o.grain)) {
        yield h;
        if (o && o.grain === h.grain) o = nextOld(); // cannot happen in a consistent store
        h = nextHead();
      } else if (o) {
        yield o;
        o = nextOld();
      }
    }
  } finally {
    heads.return?.();
    olds.return?.();
  }
}

// ---------------------------------------------------------------------------------------------
// Delete

/**
 * Deletes snapshot `s` of a volume. First transaction: the snapshot is marked as being deleted
 * (reads of it fail from then on, and writes stop preserving versions for it). Then, in
 * transactions of `batchSize` listings each, walks the old versions that died after `s` and up
 * to the next live snapshot (the only ones `s` could be the last to see) and releases those that
 * no live snapshot sees; the last of these transactions removes the snapshot record. Each
 * transaction keeps the invariant; after a crash, calling again finishes the deletion.
 */
export async function deleteSnapshot(
  host: SnapshotHost,
  volume: number,
  s: number,
  options: DeleteSnapshotOptions = {},
): Promise<DeleteSnapshotResult> {
  host.checkOpen();
  checkU32("volume", volume);
  checkU32("snapshot", s);
  const batch = Math.max(1, Math.floor(options.batchSize ?? RELEASE_BATCH));
  const maxBatches = options.maxBatches ?? Number.POSITIVE_INFINITY;
  const { dbs } = host;
  await host.mapTxn(
    () => markSnapshotDeletingInTxn(dbs, volume, s),
    (marked) => (marked ? { op: "snapshotMarkDelete", volume, snapshot: s } : undefined),
  );
  let cursor: Buffer = deathKey(volume, s + 1, 0);
  let released = 0;
  for (let n = 0; n < maxBatches; n++) {
    const from = cursor;
    const step = await host.mapTxn(
      () => deleteSnapshotStepInTxn(dbs, host.journalState, volume, s, from, batch),
      () => ({ op: "snapshotDeleteStep", volume, snapshot: s, batch, cursor: from }),
    );
    if (step.journaled) host.notifyJournal();
    released += step.released;
    if (step.done) return { released, finished: true };
    cursor = step.next;
  }
  return { released, finished: false };
}

/**
 * deleteSnapshot's first transaction: marks `s` as being deleted and recomputes the volume's
 * live snapshot state. Returns false when it was marked already (resuming a deletion).
 */
export function markSnapshotDeletingInTxn(dbs: MetaDbs, volume: number, s: number): boolean {
  const key = snapshotKey(volume, s);
  const raw = dbs.snapshots.get(key);
  if (!raw) {
    throw new MetaError(MetaErrorCode.UnknownSnapshot, `volume ${volume} has no snapshot ${s}`);
  }
  if (raw[0] !== SnapshotState.live) return false; // resuming an interrupted deletion
  const volKey = u32Key(volume);
  const rawRec = dbs.volumes.get(volKey);
  if (!rawRec) throw unknownVolume(volume);
  dbs.snapshots.putSync(key, Buffer.from([SnapshotState.deleting]));
  const rec = decodeVolume(rawRec);
  const live = liveSnapshots(dbs, volume, undefined);
  const snap = rec.snap ?? zeroSnapshots();
  dbs.volumes.putSync(
    volKey,
    encodeVolume({ ...rec, snap: { ...snap, live: live.length, newest: live.at(-1) ?? 0 } }),
  );
  return true;
}

/**
 * One release transaction of deleteSnapshot: walks up to `batch` death listings from `cursor`
 * and releases the versions no live snapshot sees; the one that finds the range exhausted
 * removes the snapshot record. Deterministic in its arguments and the state (map log replay).
 */
export function deleteSnapshotStepInTxn(
  dbs: MetaDbs,
  journal: JournalState,
  volume: number,
  s: number,
  cursor: Buffer,
  batch: number,
): { done: boolean; released: number; journaled: boolean; next: Buffer } {
  const key = snapshotKey(volume, s);
  if (!dbs.snapshots.doesExist(key))
    return { done: true, released: 0, journaled: false, next: cursor };
  const live = liveSnapshots(dbs, volume, undefined);
  // Versions that died after the next live snapshot are seen by it: not ours to release.
  const next = live.find((x) => x > s);
  const end = next !== undefined ? deathKey(volume, next + 1, 0) : mapVolumeEnd(volume);
  const listed: { key: Buffer; birth: number }[] = [];
  for (const { key: k, value } of dbs.mapdeath.getRange({
    start: cursor,
    ...(end ? { end } : {}),
    limit: batch,
  })) {
    listed.push({ key: Buffer.from(k), birth: readU32(value) });
  }
  const versions: OldVersion[] = [];
  for (const { key: k, birth } of listed) {
    const { death, grain } = decodeDeathKey(k);
    if (seenByAny(live, birth, death)) continue;
    const old = dbs.mapold.get(oldKey(volume, grain, birth));
    versions.push({
      grain,
      birth,
      death,
      fingerprint: old ? decodeOldValue(old).fingerprint : undefined,
    });
  }
  const r = releaseOldVersionsInTxn(dbs, journal, volume, versions);
  const done = listed.length < batch;
  if (done) dbs.snapshots.removeSync(key);
  return {
    done,
    ...r,
    next: done ? cursor : keyAfter(listed[listed.length - 1]!.key),
  };
}

/**
 * For deleteVolume: marks every snapshot of the volume as being deleted, so that the unmaps
 * that follow release references instead of preserving old versions.
 */
export function retireSnapshotsInTxn(dbs: MetaDbs, volume: number): boolean {
  const volKey = u32Key(volume);
  const rawRec = dbs.volumes.get(volKey);
  if (!rawRec) return false;
  const rec = decodeVolume(rawRec);
  let changed = false;
  for (const r of snapshotRecords(dbs, volume, undefined)) {
    if (r.state === SnapshotState.live) {
      dbs.snapshots.putSync(snapshotKey(volume, r.snapshot), Buffer.from([SnapshotState.deleting]));
      changed = true;
    }
  }
  if (rec.snap && rec.snap.live > 0) {
    dbs.volumes.putSync(volKey, encodeVolume({ ...rec, snap: { ...rec.snap, live: 0 } }));
    changed = true;
  }
  return changed;
}

/** For deleteVolume: releases up to `batch` old versions of the volume; returns how many. */
export function releaseSomeOldVersionsInTxn(
  dbs: MetaDbs,
  journal: JournalState,
  volume: number,
  batch: number,
): { released: number; visited: number; journaled: boolean } {
  const versions: OldVersion[] = [];
  const end = mapVolumeEnd(volume);
  for (const { key, value } of dbs.mapold.getRange({
    start: mapVolumeStart(volume),
    ...(end ? { end } : {}),
    limit: batch,
  })) {
    const { grain, birth } = decodeOldKey(key);
    const { fingerprint, death } = decodeOldValue(value);
    versions.push({ grain, birth, death, fingerprint });
  }
  const r = releaseOldVersionsInTxn(dbs, journal, volume, versions);
  return { ...r, visited: versions.length };
}

/**
 * For deleteVolume, last step: when neither head nor old versions are left, removes the
 * snapshot records, stray listings and the volume record. Returns false when entries remain.
 */
export function forgetVolumeInTxn(dbs: MetaDbs, volume: number): boolean {
  const end = mapVolumeEnd(volume);
  const range = { start: mapVolumeStart(volume), ...(end ? { end } : {}) };
  for (const _ of dbs.map.getKeys({ ...range, limit: 1 })) return false;
  for (const _ of dbs.mapold.getKeys({ ...range, limit: 1 })) return false;
  for (const k of [...dbs.snapshots.getKeys(range)]) dbs.snapshots.removeSync(k);
  for (const k of [...dbs.mapdeath.getKeys(range)]) dbs.mapdeath.removeSync(k);
  dbs.volumes.removeSync(u32Key(volume));
  return true;
}

/** Snapshots being deleted (interrupted deletions: finish them with deleteSnapshot). */
export function unfinishedSnapshotDeletions(dbs: MetaDbs): { volume: number; snapshot: number }[] {
  const out: { volume: number; snapshot: number }[] = [];
  for (const { key, value } of dbs.snapshots.getRange()) {
    if (value[0] !== SnapshotState.live) out.push(decodeSnapshotKey(key));
  }
  return out;
}
