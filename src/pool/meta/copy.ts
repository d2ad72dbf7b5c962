/**
 * Map copies: destination grains made to point at the source grains' chunks (EXTENDED COPY by
 * reference, clones). No data moves: each copied entry is a +1 journaled, whatever the
 * destination held is released (or preserved for its snapshots) exactly as a write would, holes
 * copy as holes. Source and destination must be in the same dedup domain.
 *
 * Large ranges run as several transactions (windows of at most `batchSize` source entries and
 * as many destination entries, so that sparse ranges cost what is mapped, not their length).
 * Each transaction reads its whole source window before writing, and when a copy within one
 * volume's head overlaps forward (destination above source) the windows go from the end down,
 * like memmove: the result is the same as if the source range had been read whole first. A copy
 * of more than one window is not atomic (like UNMAP): a crash leaves a prefix (or suffix) copied.
 */
import { checkCount, checkGrain, checkU32, unknownVolume } from "./checks.js";
import {
  decodeMapKey,
  decodeVolume,
  MAX_GRAIN,
  mapKey,
  mapValueFingerprint,
  mapVolumeStart,
  u32Key,
} from "./codec.js";
import type { JournalState, MetaDbs } from "./dbs.js";
import { MetaError, MetaErrorCode } from "./errors.js";
import { type PreparedUpdate, writeMapInTxn } from "./mapwrite.js";
import { checkLiveSnapshot, type SnapshotHost, snapshotEntries } from "./snapshot.js";

/** The source of a copy: a volume's head, or one of its snapshots. */
export interface CopySource {
  readonly volume: number;
  readonly snapshot?: number;
}

export interface CopyOptions {
  /** Source (and destination) entries per transaction. Default 16384. */
  readonly batchSize?: number;
}

export interface CopyResult {
  /** Source grains holding data that were copied (holes not counted). */
  readonly copied: number;
}

export const COPY_BATCH = 16384;

export async function copyGrains(
  host: SnapshotHost,
  src: CopySource,
  srcFirst: number,
  dstVolume: number,
  dstFirst: number,
  count: number,
  options: CopyOptions = {},
): Promise<CopyResult> {
  host.checkOpen();
  checkU32("volume", src.volume);
  if (src.snapshot !== undefined) checkU32("snapshot", src.snapshot);
  checkU32("volume", dstVolume);
  checkGrain(srcFirst);
  checkGrain(dstFirst);
  checkCount(count);
  if (srcFirst + count > MAX_GRAIN || dstFirst + count > MAX_GRAIN) {
    throw new MetaError(MetaErrorCode.InvalidArgument, `copy of ${count} grains out of range`);
  }
  const batch = Math.max(1, Math.floor(options.batchSize ?? COPY_BATCH));
  const descending =
    src.snapshot === undefined &&
    src.volume === dstVolume &&
    dstFirst > srcFirst &&
    dstFirst < srcFirst + count;
  const job: CopyJob = { src, srcFirst, dstVolume, dstFirst, lo: 0, hi: count, descending, batch };
  let copied = 0;
  do {
    const step = await host.mapTxn(
      () => copyWindowInTxn(host.dbs, host.journalState, job),
      (r) =>
        r.hi > r.lo
          ? {
              op: "copy",
              srcVolume: src.volume,
              snapshot: src.snapshot,
              srcFirst: srcFirst + r.lo,
              dstVolume,
              dstFirst: dstFirst + r.lo,
              count: r.hi - r.lo,
            }
          : undefined,
    );
    if (step.journaled) host.notifyJournal();
    copied += step.copied;
  } while (job.lo < job.hi);
  return { copied };
}

interface CopyJob {
  readonly src: CopySource;
  readonly srcFirst: number;
  readonly dstVolume: number;
  readonly dstFirst: number;
  /** Offsets (from srcFirst / dstFirst) still to copy: [lo, hi). */
  lo: number;
  hi: number;
  readonly descending: boolean;
  /** Entries per window; undefined: the whole range in one window (map log replay). */
  readonly batch: number | undefined;
  readonly tolerateMissing?: boolean;
}

/**
 * Map log replay of one logged copy window: dst[dstFirst, +count) := src[srcFirst, +count), in
 * one transaction, the source read whole first.
 */
export function copyRangeInTxn(
  dbs: MetaDbs,
  journal: JournalState,
  src: CopySource,
  srcFirst: number,
  dstVolume: number,
  dstFirst: number,
  count: number,
): void {
  const job: CopyJob = {
    src,
    srcFirst,
    dstVolume,
    dstFirst,
    lo: 0,
    hi: count,
    descending: false,
    batch: undefined,
    tolerateMissing: true,
  };
  copyWindowInTxn(dbs, journal, job);
}

/** One window of a copy, inside a write transaction; advances `job` on success. */
function copyWindowInTxn(
  dbs: MetaDbs,
  journal: JournalState,
  job: CopyJob,
): { copied: number; journaled: boolean; lo: number; hi: number } {
  const { src, srcFirst, dstVolume, dstFirst, batch } = job;
  const srcRaw = dbs.volumes.get(u32Key(src.volume));
  if (!srcRaw) throw unknownVolume(src.volume);
  const dstRaw = dbs.volumes.get(u32Key(dstVolume));
  if (!dstRaw) throw unknownVolume(dstVolume);
  const srcDomain = decodeVolume(srcRaw).domainId;
  const dstDomain = decodeVolume(dstRaw).domainId;
  if (srcDomain !== dstDomain) {
    throw new MetaError(
      MetaErrorCode.CrossDomain,
      `volume ${src.volume} (domain ${srcDomain}) and volume ${dstVolume} (domain ${dstDomain}) do not share a dedup domain`,
    );
  }
  if (src.snapshot !== undefined) checkLiveSnapshot(dbs, src.volume, src.snapshot, undefined);

  // The window: as many grains from the walking end as hold at most `batch` source entries and
  // at most `batch` destination entries.
  let lo = job.lo;
  let hi = job.hi;
  const source = new Map<number, Buffer>(); // offset → fingerprint
  const dstOffsets: number[] = [];
  if (!job.descending) {
    const entries =
      src.snapshot !== undefined
        ? snapshotEntries(dbs, src.volume, src.snapshot, srcFirst + lo, srcFirst + hi, undefined)
        : headEntries(dbs, src.volume, srcFirst + lo, srcFirst + hi);
    for (const e of entries) {
      source.set(e.grain - srcFirst, e.fingerprint);
      if (source.size === batch) {
        hi = e.grain - srcFirst + 1;
        break;
      }
    }
    for (const key of dbs.map.getKeys({
      start: mapKey(dstVolume, dstFirst + lo),
      end: mapKey(dstVolume, dstFirst + hi),
      ...(batch !== undefined ? { limit: batch } : {}),
    })) {
      dstOffsets.push(decodeMapKey(key).grain - dstFirst);
    }
    if (dstOffsets.length === batch) hi = Math.min(hi, dstOffsets[dstOffsets.length - 1]! + 1);
  } else {
    for (const e of headEntriesDown(dbs, src.volume, srcFirst + hi, srcFirst + lo)) {
      source.set(e.grain - srcFirst, e.fingerprint);
      if (source.size === batch) {
        lo = e.grain - srcFirst;
        break;
      }
    }
    for (const e of headEntriesDown(dbs, dstVolume, dstFirst + hi, dstFirst + lo)) {
      dstOffsets.push(e.grain - dstFirst);
      if (dstOffsets.length === batch) {
        lo = Math.max(lo, e.grain - dstFirst);
        break;
      }
    }
  }

  const updates = new Map<number, Buffer | undefined>();
  for (const off of dstOffsets) if (off >= lo && off < hi) updates.set(off, undefined);
  let copied = 0;
  for (const [off, fingerprint] of source) {
    if (off < lo || off >= hi) continue;
    updates.set(off, fingerprint);
    copied++;
  }
  const prepared: PreparedUpdate[] = [...updates.keys()]
    .sort((a, b) => a - b)
    .map((off) => ({
      grain: dstFirst + off,
      key: mapKey(dstVolume, dstFirst + off),
      fingerprint: updates.get(off),
      chunk: undefined,
    }));
  const r =
    prepared.length > 0
      ? writeMapInTxn(dbs, journal, dstVolume, prepared, {
          tolerateMissing: job.tolerateMissing === true,
        })
      : { journaled: false };
  if (job.descending) job.hi = lo;
  else job.lo = hi;
  return { copied, journaled: r.journaled, lo, hi };
}

/** Head entries of a volume in [first, end), ascending (inside a write transaction). */
function* headEntries(
  dbs: MetaDbs,
  volume: number,
  first: number,
  end: number,
): Generator<{ grain: number; fingerprint: Buffer }> {
  for (const { key, value } of dbs.map.getRange({
    start: mapKey(volume, first),
    end: mapKey(volume, end),
  })) {
    yield { grain: decodeMapKey(key).grain, fingerprint: mapValueFingerprint(value) };
  }
}

/** Head entries of a volume in [low, high), descending. */
function* headEntriesDown(
  dbs: MetaDbs,
  volume: number,
  high: number,
  low: number,
): Generator<{ grain: number; fingerprint: Buffer }> {
  if (high <= low) return;
  // Reverse ranges: start inclusive, end exclusive. The volume's id alone sorts before every
  // grain key of the volume.
  for (const { key, value } of dbs.map.getRange({
    start: mapKey(volume, high - 1),
    end: mapVolumeStart(volume),
    reverse: true,
  })) {
    const grain = decodeMapKey(key).grain;
    if (grain < low) return;
    yield { grain, fingerprint: mapValueFingerprint(value) };
  }
}
