/**
 * Mark-and-sweep audit of the refcounts against the block maps, and its repair.
 *
 * Mark: walk every map entry of the domain's volumes and count references per fingerprint.
 * Sweep: walk the domain's index and compare each chunk's effective refcount (applied refcount +
 * journal deltas not yet applied) with the references counted. Findings:
 * - leak: refcount > 0 but no map entry references the chunk (space never reclaimed);
 * - orphan: refcount 0, no reference, no pending delta, not listed dead (inserted but never mapped,
 *   e.g. a crash between the container write and the map update): also never reclaimed;
 * - miscount: referenced, but the refcount differs (too low is dangerous: GC could free live data);
 * - damage: a map entry names a fingerprint the index lacks (a read must fail, not return zeros);
 * - stale dead: a dead-table entry for a chunk that is live, gone, or elsewhere;
 * - drift: a maintained counter (volume or domain) differs from what the scan computes;
 * - old-version problems: an old version without its death listing (deleting a snapshot would
 *   never release it), a listing without its version, or a version no snapshot (live or being
 *   deleted) sees (its reference is held for nobody: a leak of space).
 *
 * References are counted over head entries and old versions alike: each holds exactly one.
 *
 * Memory: the mark phase keeps one counter per distinct referenced fingerprint of the partition
 * being checked; `partitions` splits the fingerprint space by first byte into that many passes
 * (each pass rereads the maps), so memory is divided by it.
 *
 * The audit reads one LMDB snapshot (a read transaction) and is safe while writes go on.
 * Repair takes write transactions: one per partition (apply the journal, set refcounts to the
 * references counted, fix the dead table), then one to recompute the domain's and its volumes'
 * counters. Each is consistent on its own (LMDB has one writer), so repair is safe online too.
 * Damage is reported, not repaired: the data has to come back from the containers
 * (rebuildIndex) or the grains stay unreadable.
 */
import {
  type ChunkEntry,
  DEAD_KEY_BYTES,
  DOMAIN_FIELDS,
  type DomainCounters,
  deadKey,
  deathKey,
  decodeChunk,
  decodeDeadKey,
  decodeDeathKey,
  decodeDomain,
  decodeFpKey,
  decodeJournalRecord,
  decodeMapKey,
  decodeOldKey,
  decodeOldValue,
  decodeVolume,
  encodeDomain,
  encodeVolume,
  FINGERPRINT_BYTES,
  fpKey,
  fpRange,
  idPrefixEnd,
  keyString,
  mapVolumeEnd,
  mapVolumeStart,
  oldKey,
  readU32,
  SnapshotState,
  u32Key,
  u32Value,
  type VolumeRecord,
  zeroDomain,
  zeroSnapshots,
} from "./codec.js";
import { CounterDeltas, type MetaDbs, type ReadOpts } from "./dbs.js";
import { applyJournalInTxn, setChunkState } from "./refcount.js";
import { seenByAny, snapshotRecords } from "./snapshot.js";
import type { MetaStore } from "./store.js";

export interface AuditOptions {
  /** Check one domain; default every domain. */
  readonly domainId?: number;
  /** Passes over the maps, each for a slice of the fingerprint space. Default: one per million index entries. */
  readonly partitions?: number;
  /** Findings listed per kind (the counts are always complete). Default 100. */
  readonly maxReported?: number;
}

export interface AuditChunk {
  readonly domainId: number;
  /** Hex. */
  readonly fingerprint: string;
  readonly containerId: number;
  readonly offset: number;
  readonly storedLength: number;
  /** Applied refcount. */
  readonly refcount: number;
  /** Sum of journal deltas not yet applied. */
  readonly pending: number;
  /** Map entries found referencing it. */
  readonly references: number;
}

export interface DanglingReference {
  readonly volume: number;
  readonly grain: number;
  readonly domainId: number;
  readonly fingerprint: string;
  /** Set for an old version (a snapshot's view): its birth generation. */
  readonly birth?: number;
}

export interface OldVersionProblem {
  readonly volume: number;
  readonly grain: number;
  readonly birth: number;
  readonly death: number;
  /**
   * unlisted: the version lacks its `mapdeath` listing; stale-listing: a listing names no
   * version; unseen: no snapshot (live or being deleted) sees the version.
   */
  readonly problem: "unlisted" | "stale-listing" | "unseen";
}

export interface StaleDead {
  readonly containerId: number;
  readonly domainId: number;
  readonly fingerprint: string;
}

export interface CounterDrift {
  readonly scope: "volume" | "domain";
  readonly id: number;
  readonly field: string;
  readonly recorded: number;
  readonly actual: number;
}

export interface Finding<T> {
  readonly count: number;
  readonly items: readonly T[];
}

export interface AuditReport {
  readonly domains: readonly number[];
  readonly mapEntries: number;
  readonly chunks: number;
  /** Journal records pending in the audited snapshot (all domains). */
  readonly pendingRecords: number;
  readonly leaks: Finding<AuditChunk>;
  readonly orphans: Finding<AuditChunk>;
  readonly miscounts: Finding<AuditChunk>;
  readonly damage: Finding<DanglingReference>;
  readonly staleDead: Finding<StaleDead>;
  readonly drift: readonly CounterDrift[];
  /** Old versions and death listings out of step (see OldVersionProblem). */
  readonly oldVersions: Finding<OldVersionProblem>;
  /** No finding of any kind. */
  readonly clean: boolean;
}

export interface RepairReport {
  readonly domains: readonly number[];
  /** Journal records applied on the way. */
  readonly journalRecords: number;
  /** Chunks whose refcount was changed to the references counted. */
  readonly refcountsFixed: number;
  /** Chunks newly listed dead (leaks and orphans now reclaimable). */
  readonly listedDead: number;
  /** Dead-table entries removed (chunk live again, gone, or elsewhere). */
  readonly unlisted: number;
  /** Counter records rewritten because they had drifted. */
  readonly countersRewritten: number;
  /** Old versions dropped because no snapshot saw them, and death listings added or removed. */
  readonly oldVersionsFixed: number;
}

const ENTRIES_PER_PARTITION = 1 << 20;

class Collector<T> {
  count = 0;
  readonly items: T[] = [];
  constructor(private readonly max: number) {}
  add(item: () => T): void {
    if (this.items.length < this.max) this.items.push(item());
    this.count++;
  }
  done(): Finding<T> {
    return { count: this.count, items: this.items };
  }
}

/**
 * Entries the audit visits between two yields of `auditSteps`: about 3 ms of work (≈ 3 µs an
 * entry: 131 072 map entries and 196 608 index entries took 0.95 s), the longest the event loop
 * then waits for `auditMetaYielding`.
 */
export const AUDIT_SLICE = 1024;

/** The audit, run to its end in one go (offline tools, tests). */
export function auditMeta(store: MetaStore, options: AuditOptions = {}): AuditReport {
  const steps = auditSteps(store, options);
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
  }
}

/**
 * The audit on a serving pool (`Pool.check`): the event loop runs between slices of
 * `AUDIT_SLICE` entries, so that I/O goes on while it walks every map. Run in one go, it held the
 * event loop about a second per million map entries. Its findings are those of one snapshot, as
 * `auditMeta`'s: the read transaction it opens first stays open until it ends, whatever commits
 * meanwhile. Rejects if the store is closed while it runs.
 */
export async function auditMetaYielding(
  store: MetaStore,
  options: AuditOptions & { readonly slice?: number } = {},
): Promise<AuditReport> {
  const steps = auditSteps(store, options);
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/**
 * One yield of the audit. If the store closed meanwhile it then stops: the throw runs its
 * `finally`, which ends the read transaction.
 */
function* pause(store: MetaStore): Generator<void, void, undefined> {
  yield;
  store.checkOpen();
}

/**
 * The mark-and-sweep audit as a generator that yields every `options.slice` (AUDIT_SLICE)
 * entries it visits; `auditMeta` and `auditMetaYielding` drive it.
 */
function* auditSteps(
  store: MetaStore,
  options: AuditOptions & { readonly slice?: number },
): Generator<void, AuditReport, undefined> {
  store.checkOpen();
  const slice = Math.max(1, options.slice ?? AUDIT_SLICE);
  let visited = 0;
  /** Counts one entry visited; true when a slice is over (the caller yields). */
  const sliceOver = (): boolean => ++visited % slice === 0;
  const dbs = store.dbs;
  const txn = dbs.root.useReadTransaction();
  const ro: ReadOpts = { transaction: txn };
  const max = options.maxReported ?? 100;
  const leaks = new Collector<AuditChunk>(max);
  const orphans = new Collector<AuditChunk>(max);
  const miscounts = new Collector<AuditChunk>(max);
  const damage = new Collector<DanglingReference>(max);
  const staleDead = new Collector<StaleDead>(max);
  const oldProblems = new Collector<OldVersionProblem>(max);
  const drift: CounterDrift[] = [];
  let mapEntries = 0;
  let chunks = 0;
  try {
    const domains = options.domainId !== undefined ? [options.domainId] : allDomains(dbs, ro);
    const partitions = partitionCount(dbs, options.partitions, ro);
    const pendingRecords = dbs.journal.getCount({ ...ro }); // getCount writes into its options: pass a copy
    for (const domainId of domains) {
      const volumes = volumesOf(dbs, domainId, ro);
      const pending = pendingDeltas(dbs, domainId, ro);
      const volActual = new Map<number, VolumeActual>();
      for (const v of volumes) {
        volActual.set(v, { mappedGrains: 0, referencedBytes: 0, oldGrains: 0, oldBytes: 0 });
        checkOldVersions(dbs, v, ro, oldProblems);
      }
      const actual = zeroDomain();
      for (let p = 0; p < partitions; p++) {
        const [lo, hi] = partitionBounds(p, partitions);
        const seen = new Map<string, { refs: number; stored: number }>();
        const reference = (fp: Buffer): number => {
          const k = keyString(fp);
          let info = seen.get(k);
          if (!info) {
            const raw = dbs.fp.get(fpKey(domainId, fp), ro);
            info = { refs: 0, stored: raw ? decodeChunk(raw).storedLength : -1 };
            seen.set(k, info);
          }
          info.refs++;
          mapEntries++;
          return info.stored;
        };
        for (const volume of volumes) {
          const va = volActual.get(volume)!;
          for (const { key, value } of dbs.map.getRange(volumeRange(volume, ro))) {
            if (sliceOver()) yield* pause(store);
            const b0 = value[0] ?? 0;
            if (b0 < lo || b0 >= hi) continue;
            const fp = value.subarray(0, FINGERPRINT_BYTES);
            const stored = reference(fp);
            va.mappedGrains++;
            if (stored >= 0) {
              va.referencedBytes += stored;
            } else {
              damage.add(() => ({
                volume,
                grain: decodeMapKey(key).grain,
                domainId,
                fingerprint: fp.toString("hex"),
              }));
            }
          }
          for (const { key, value } of dbs.mapold.getRange(volumeRange(volume, ro))) {
            if (sliceOver()) yield* pause(store);
            const b0 = value[0] ?? 0;
            if (b0 < lo || b0 >= hi) continue;
            const fp = value.subarray(0, FINGERPRINT_BYTES);
            const stored = reference(fp);
            va.oldGrains++;
            if (stored >= 0) {
              va.oldBytes += stored;
            } else {
              const { grain, birth } = decodeOldKey(key);
              damage.add(() => ({
                volume,
                grain,
                domainId,
                fingerprint: fp.toString("hex"),
                birth,
              }));
            }
          }
        }
        for (const { key, value } of dbs.fp.getRange({ ...indexRange(domainId, lo, hi), ...ro })) {
          if (sliceOver()) yield* pause(store);
          const fp = decodeFpKey(key)?.fingerprint;
          if (!fp) continue;
          chunks++;
          const k = keyString(fp);
          const e = decodeChunk(value);
          const refs = seen.get(k)?.refs ?? 0;
          const pend = pending.get(k) ?? 0;
          const effective = e.refcount + pend;
          if (e.refcount > 0) {
            actual.liveChunks++;
            actual.physicalBytes += e.storedLength;
            actual.uniqueLogicalBytes += e.logicalLength;
          }
          const finding = (): AuditChunk => describe(domainId, fp, e, pend, refs);
          if (refs === 0 && effective > 0) {
            leaks.add(finding);
          } else if (refs > 0 && effective !== refs) {
            miscounts.add(finding);
          } else if (
            refs === 0 &&
            e.refcount === 0 &&
            !pending.has(k) &&
            dbs.dead.get(deadKey(e.containerId, domainId, fp), ro) === undefined
          ) {
            orphans.add(finding);
          }
        }
      }
      for (const { key, value } of dbs.dead.getRange(ro ? { ...ro } : {})) {
        if (sliceOver()) yield* pause(store);
        if (key.length !== DEAD_KEY_BYTES) continue;
        const dk = decodeDeadKey(key);
        if (dk.domainId !== domainId) continue;
        actual.deadChunks++;
        actual.deadBytes += readU32(value);
        const raw = dbs.fp.get(fpKey(domainId, dk.fingerprint), ro);
        const e = raw ? decodeChunk(raw) : undefined;
        if (!e || e.containerId !== dk.containerId || e.refcount > 0) {
          staleDead.add(() => ({
            containerId: dk.containerId,
            domainId,
            fingerprint: dk.fingerprint.toString("hex"),
          }));
        }
      }
      for (const [volume, va] of volActual) {
        actual.mappedGrains += va.mappedGrains;
        actual.referencedBytes += va.referencedBytes;
        actual.snapshotGrains += va.oldGrains;
        actual.snapshotBytes += va.oldBytes;
        const raw = dbs.volumes.get(u32Key(volume), ro);
        if (!raw) continue;
        const rec = decodeVolume(raw);
        const snap = rec.snap ?? zeroSnapshots();
        const live = liveOf(dbs, volume, ro);
        const recorded = {
          mappedGrains: rec.mappedGrains,
          referencedBytes: rec.referencedBytes,
          oldGrains: snap.oldGrains,
          oldBytes: snap.oldBytes,
          liveSnapshots: snap.live,
          newestSnapshot: snap.live > 0 ? snap.newest : 0,
        };
        const computed = {
          ...va,
          liveSnapshots: live.length,
          newestSnapshot: live.at(-1) ?? 0,
        };
        for (const field of Object.keys(recorded) as (keyof typeof recorded)[]) {
          if (recorded[field] !== computed[field]) {
            drift.push({
              scope: "volume",
              id: volume,
              field,
              recorded: recorded[field],
              actual: computed[field],
            });
          }
        }
      }
      const rawDomain = dbs.domains.get(u32Key(domainId), ro);
      const recorded = rawDomain ? decodeDomain(rawDomain) : zeroDomain();
      for (const field of DOMAIN_FIELDS) {
        if (recorded[field] !== actual[field]) {
          drift.push({
            scope: "domain",
            id: domainId,
            field,
            recorded: recorded[field],
            actual: actual[field],
          });
        }
      }
    }
    const report = {
      domains,
      mapEntries,
      chunks,
      pendingRecords,
      leaks: leaks.done(),
      orphans: orphans.done(),
      miscounts: miscounts.done(),
      damage: damage.done(),
      staleDead: staleDead.done(),
      drift,
      oldVersions: oldProblems.done(),
    };
    const clean =
      leaks.count +
        orphans.count +
        miscounts.count +
        damage.count +
        staleDead.count +
        oldProblems.count +
        drift.length ===
      0;
    return { ...report, clean };
  } finally {
    txn.done();
  }
}

/**
 * Recomputes refcounts from the block maps (see the module comment). Leaks and orphans end at
 * refcount 0, listed dead (GC reclaims them); miscounts end at the references counted.
 */
export async function repairMeta(
  store: MetaStore,
  options: Pick<AuditOptions, "domainId" | "partitions"> = {},
): Promise<RepairReport> {
  store.checkOpen();
  const dbs = store.dbs;
  const domains = options.domainId !== undefined ? [options.domainId] : allDomains(dbs, undefined);
  const partitions = partitionCount(dbs, options.partitions, undefined);
  let journalRecords = 0;
  let refcountsFixed = 0;
  let listedDead = 0;
  let unlisted = 0;
  let countersRewritten = 0;
  let oldVersionsFixed = 0;
  for (const domainId of domains) {
    for (const volume of volumesOf(dbs, domainId, undefined)) {
      oldVersionsFixed += await dbs.root.childTransaction(() => fixOldVersions(dbs, volume));
    }
    for (let p = 0; p < partitions; p++) {
      const [lo, hi] = partitionBounds(p, partitions);
      await dbs.root.childTransaction(() => {
        const deltas = new CounterDeltas();
        const applied = applyJournalInTxn(dbs, deltas, Number.MAX_SAFE_INTEGER);
        journalRecords += applied.records;
        listedDead += applied.dead.length;
        unlisted += applied.revived;
        store.journalState.pending = Math.max(0, store.journalState.pending - applied.records);
        const refs = new Map<string, number>();
        for (const volume of volumesOf(dbs, domainId, undefined)) {
          for (const value of dbs.map
            .getRange(volumeRange(volume, undefined))
            .map((e) => e.value)) {
            const b0 = value[0] ?? 0;
            if (b0 < lo || b0 >= hi) continue;
            const k = keyString(value.subarray(0, FINGERPRINT_BYTES));
            refs.set(k, (refs.get(k) ?? 0) + 1);
          }
          for (const value of dbs.mapold
            .getRange(volumeRange(volume, undefined))
            .map((e) => e.value)) {
            const b0 = value[0] ?? 0;
            if (b0 < lo || b0 >= hi) continue;
            const k = keyString(value.subarray(0, FINGERPRINT_BYTES));
            refs.set(k, (refs.get(k) ?? 0) + 1);
          }
        }
        const fixes: { fp: Buffer; entry: ChunkEntry; refs: number; listed: boolean }[] = [];
        for (const { key, value } of dbs.fp.getRange(indexRange(domainId, lo, hi))) {
          const fp = decodeFpKey(key)?.fingerprint;
          if (!fp) continue;
          const entry = decodeChunk(value);
          const n = refs.get(keyString(fp)) ?? 0;
          const listed = dbs.dead.get(deadKey(entry.containerId, domainId, fp)) !== undefined;
          if (entry.refcount !== n || listed !== (n === 0))
            fixes.push({ fp, entry, refs: n, listed });
        }
        for (const f of fixes) {
          if (f.entry.refcount !== f.refs) refcountsFixed++;
          const change = setChunkState(dbs, deltas, domainId, f.fp, f.entry, f.refs, f.listed);
          if (change === "died") listedDead++;
          else if (change === "revived") unlisted++;
        }
        deltas.writeTo(dbs);
      });
    }
    countersRewritten += await dbs.root.childTransaction(() => {
      const r = recomputeCounters(dbs, domainId);
      unlisted += r.unlisted;
      return r.rewritten;
    });
  }
  return {
    domains,
    journalRecords,
    refcountsFixed,
    listedDead,
    unlisted,
    countersRewritten,
    oldVersionsFixed,
  };
}

/**
 * Inside a write transaction: drops dead-table entries that do not describe a dead chunk, then
 * recomputes the domain's counters and its volumes' records from the index, the dead table and
 * the maps. Returns how many records changed.
 */
function recomputeCounters(
  dbs: MetaDbs,
  domainId: number,
): { rewritten: number; unlisted: number } {
  const deltas = new CounterDeltas();
  const actual = zeroDomain();
  let unlisted = 0;
  const stale: Buffer[] = [];
  for (const { key, value } of dbs.dead.getRange()) {
    if (key.length !== DEAD_KEY_BYTES) continue;
    const dk = decodeDeadKey(key);
    if (dk.domainId !== domainId) continue;
    const raw = dbs.fp.get(fpKey(domainId, dk.fingerprint));
    const e = raw ? decodeChunk(raw) : undefined;
    const stored = readU32(value);
    if (!e || e.containerId !== dk.containerId || e.refcount > 0) {
      stale.push(Buffer.from(key));
      const c = deltas.container(dk.containerId);
      c.deadChunks -= 1;
      c.deadBytes -= stored;
    } else {
      actual.deadChunks++;
      actual.deadBytes += stored;
    }
  }
  for (const key of stale) {
    dbs.dead.removeSync(key);
    unlisted++;
  }
  for (const { key, value } of dbs.fp.getRange(indexRange(domainId, 0, 256))) {
    if (!decodeFpKey(key)) continue;
    const e = decodeChunk(value);
    if (e.refcount > 0) {
      actual.liveChunks++;
      actual.physicalBytes += e.storedLength;
      actual.uniqueLogicalBytes += e.logicalLength;
    }
  }
  let rewritten = 0;
  const storedOf = (fp: Uint8Array): number => {
    const raw = dbs.fp.get(fpKey(domainId, fp.subarray(0, FINGERPRINT_BYTES)));
    return raw ? decodeChunk(raw).storedLength : 0;
  };
  for (const volume of volumesOf(dbs, domainId, undefined)) {
    let mappedGrains = 0;
    let referencedBytes = 0;
    for (const { value } of dbs.map.getRange(volumeRange(volume, undefined))) {
      mappedGrains++;
      referencedBytes += storedOf(value);
    }
    let oldGrains = 0;
    let oldBytes = 0;
    for (const { value } of dbs.mapold.getRange(volumeRange(volume, undefined))) {
      oldGrains++;
      oldBytes += storedOf(value);
    }
    actual.mappedGrains += mappedGrains;
    actual.referencedBytes += referencedBytes;
    actual.snapshotGrains += oldGrains;
    actual.snapshotBytes += oldBytes;
    const vk = u32Key(volume);
    const rec = decodeVolume(dbs.volumes.get(vk)!);
    const live = liveOf(dbs, volume, undefined);
    const snap = rec.snap ?? zeroSnapshots();
    const next: VolumeRecord = {
      domainId,
      mappedGrains,
      referencedBytes,
      ...(rec.snap || oldGrains > 0 || live.length > 0
        ? {
            snap: {
              gen: snap.gen,
              newest: live.at(-1) ?? 0,
              live: live.length,
              oldGrains,
              oldBytes,
            },
          }
        : {}),
    };
    if (!encodeVolume(next).equals(encodeVolume(rec))) {
      dbs.volumes.putSync(vk, encodeVolume(next));
      rewritten++;
    }
  }
  deltas.writeTo(dbs);
  const dk = u32Key(domainId);
  const raw = dbs.domains.get(dk);
  const recorded: DomainCounters = raw ? decodeDomain(raw) : zeroDomain();
  if (!raw || DOMAIN_FIELDS.some((f) => recorded[f] !== actual[f])) {
    dbs.domains.putSync(dk, encodeDomain(actual));
    rewritten++;
  }
  return { rewritten, unlisted };
}

interface VolumeActual {
  mappedGrains: number;
  referencedBytes: number;
  oldGrains: number;
  oldBytes: number;
}

function liveOf(dbs: MetaDbs, volume: number, ro: ReadOpts): number[] {
  return snapshotRecords(dbs, volume, ro)
    .filter((r) => r.state === SnapshotState.live)
    .map((r) => r.snapshot);
}

/** Checks a volume's old versions against their death listings and its snapshot records. */
function checkOldVersions(
  dbs: MetaDbs,
  volume: number,
  ro: ReadOpts,
  problems: Collector<OldVersionProblem>,
): void {
  // Versions being released by an unfinished deletion are still legitimately there.
  const snapshots = snapshotRecords(dbs, volume, ro).map((r) => r.snapshot);
  for (const { key, value } of dbs.mapold.getRange(volumeRange(volume, ro))) {
    const { grain, birth } = decodeOldKey(key);
    const { death } = decodeOldValue(value);
    const listing = dbs.mapdeath.get(deathKey(volume, death, grain), ro);
    if (!listing || readU32(listing) !== birth)
      problems.add(() => ({ volume, grain, birth, death, problem: "unlisted" }));
    if (!seenByAny(snapshots, birth, death))
      problems.add(() => ({ volume, grain, birth, death, problem: "unseen" }));
  }
  for (const { key, value } of dbs.mapdeath.getRange(volumeRange(volume, ro))) {
    const { grain, death } = decodeDeathKey(key);
    const birth = readU32(value);
    const old = dbs.mapold.get(oldKey(volume, grain, birth), ro);
    if (!old || decodeOldValue(old).death !== death)
      problems.add(() => ({ volume, grain, birth, death, problem: "stale-listing" }));
  }
}

/**
 * Inside a write transaction: brings a volume's old versions and death listings back in step:
 * lists unlisted versions, drops stale listings, and drops versions no snapshot sees (the
 * recount that follows releases their references). Returns how many things changed.
 */
function fixOldVersions(dbs: MetaDbs, volume: number): number {
  const snapshots = snapshotRecords(dbs, volume, undefined).map((r) => r.snapshot);
  let fixed = 0;
  const versions = [...dbs.mapold.getRange(volumeRange(volume, undefined))].map((e) => ({
    key: Buffer.from(e.key),
    ...decodeOldKey(e.key),
    death: decodeOldValue(e.value).death,
  }));
  for (const v of versions) {
    const dk = deathKey(volume, v.death, v.grain);
    if (!seenByAny(snapshots, v.birth, v.death)) {
      dbs.mapold.removeSync(v.key);
      dbs.mapdeath.removeSync(dk);
      fixed++;
      continue;
    }
    const listing = dbs.mapdeath.get(dk);
    if (!listing || readU32(listing) !== v.birth) {
      dbs.mapdeath.putSync(dk, u32Value(v.birth));
      fixed++;
    }
  }
  const listings = [...dbs.mapdeath.getRange(volumeRange(volume, undefined))].map((e) => ({
    key: Buffer.from(e.key),
    ...decodeDeathKey(e.key),
    birth: readU32(e.value),
  }));
  for (const l of listings) {
    const old = dbs.mapold.get(oldKey(volume, l.grain, l.birth));
    if (!old || decodeOldValue(old).death !== l.death) {
      dbs.mapdeath.removeSync(l.key);
      fixed++;
    }
  }
  return fixed;
}

// ---------------------------------------------------------------------------------------------
// Helpers shared with rebuild.ts

/** Every domain that has a counter record, a volume or an index entry. */
export function allDomains(dbs: MetaDbs, ro: ReadOpts): number[] {
  const set = new Set<number>();
  for (const key of dbs.domains.getKeys(ro ? { ...ro } : {})) set.add(readU32(key));
  for (const { value } of dbs.volumes.getRange(ro ? { ...ro } : {}))
    set.add(decodeVolume(value).domainId);
  // Index domains: jump from one domain prefix to the next.
  let start: Buffer | undefined = Buffer.alloc(0);
  while (start) {
    let next: Buffer | undefined;
    for (const key of dbs.fp.getKeys({ start, limit: 1, ...(ro ?? {}) })) {
      const d = decodeFpKey(key)?.domainId;
      if (d === undefined) break; // not an index key: stop here rather than loop
      set.add(d);
      next = idPrefixEnd(d);
    }
    start = next;
  }
  return [...set].sort((a, b) => a - b);
}

export function volumesOf(dbs: MetaDbs, domainId: number, ro: ReadOpts): number[] {
  const out: number[] = [];
  for (const { key, value } of dbs.volumes.getRange(ro ? { ...ro } : {})) {
    if (decodeVolume(value).domainId === domainId) out.push(readU32(key));
  }
  return out;
}

/** Every key of a volume in a db keyed by volume first (map, mapold, mapdeath). */
function volumeRange(volume: number, ro: ReadOpts) {
  const end = mapVolumeEnd(volume);
  return { start: mapVolumeStart(volume), ...(end ? { end } : {}), ...(ro ?? {}) };
}

/** Key range of a domain's index entries whose fingerprint starts with a byte in [lo, hi). */
export function indexRange(
  domainId: number,
  lo: number,
  hi: number,
): { start: Buffer; end?: Buffer } {
  return fpRange(domainId, lo, hi);
}

function partitionBounds(p: number, partitions: number): [number, number] {
  return [Math.floor((256 * p) / partitions), Math.floor((256 * (p + 1)) / partitions)];
}

function partitionCount(dbs: MetaDbs, requested: number | undefined, ro: ReadOpts): number {
  if (requested !== undefined) return Math.min(256, Math.max(1, Math.floor(requested)));
  const entries = dbs.fp.getCount(ro ? { ...ro } : {});
  return Math.min(256, Math.max(1, Math.ceil(entries / ENTRIES_PER_PARTITION)));
}

function pendingDeltas(dbs: MetaDbs, domainId: number, ro: ReadOpts): Map<string, number> {
  const out = new Map<string, number>();
  for (const { value } of dbs.journal.getRange(ro ? { ...ro } : {})) {
    let record: ReturnType<typeof decodeJournalRecord>;
    try {
      record = decodeJournalRecord(value);
    } catch {
      continue;
    }
    if (record.domainId !== domainId) continue;
    for (const { fingerprint, delta } of record.deltas) {
      const k = keyString(fingerprint);
      out.set(k, (out.get(k) ?? 0) + delta);
    }
  }
  return out;
}

function describe(
  domainId: number,
  fp: Buffer,
  e: ChunkEntry,
  pending: number,
  references: number,
): AuditChunk {
  return {
    domainId,
    fingerprint: fp.toString("hex"),
    containerId: e.containerId,
    offset: e.offset,
    storedLength: e.storedLength,
    refcount: e.refcount,
    pending,
    references,
  };
}
