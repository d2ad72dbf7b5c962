/**
 * Map log replay (README.md "Map log"), for `sanmux pool rebuild`: into a new environment, load
 * the newest checkpoint's entries, then run every logged map transaction after it again, in seq
 * order. A record is the parameters of a deterministic transaction body; run on the state the
 * original ran on (the checkpoint, then every earlier record), it makes the same map changes.
 *
 * What differs from the original run is derived data only: the index comes from the containers
 * (a chunk GC collected since is absent, so the replayed bodies map fingerprints the index lacks
 * instead of failing: `tolerateMissing`), no journal records are written, and the counters are
 * wrong until the repair that follows recounts everything from the maps.
 *
 * A log written with 32-byte fingerprints (formats 3–4: version 1 frames, "SMXCKPT1" checkpoints)
 * replays like any other: the decoders hand its fingerprints over cut to 16 bytes
 * (maplog-codec.ts, checkpoint.ts fromLongFingerprints), so this is how `sanmux pool rebuild`
 * converts an older pool.
 */

import {
  CheckpointTag,
  dbOfTag,
  encodeSeq,
  MAPLOG_SEQ_KEY,
  readCheckpoint,
  verifyCheckpoint,
} from "./checkpoint.js";
import { decodeMapKey, decodeVolume, encodeDomain, mapKey, u32Key, zeroDomain } from "./codec.js";
import { copyRangeInTxn } from "./copy.js";
import type { JournalState, MetaDbs } from "./dbs.js";
import { MetaError, MetaErrorCode } from "./errors.js";
import { MapLog } from "./maplog.js";
import type { MapRecord } from "./maplog-codec.js";
import { createVolumeInTxn, type PreparedUpdate, writeMapInTxn } from "./mapwrite.js";
import {
  createSnapshotInTxn,
  deleteSnapshotStepInTxn,
  forgetVolumeInTxn,
  markSnapshotDeletingInTxn,
  releaseSomeOldVersionsInTxn,
  retireSnapshotsInTxn,
} from "./snapshot.js";
import type { MetaStore } from "./store.js";

export interface ReplayOptions {
  /** Called after each batch of replayed records (progress). */
  readonly onProgress?: (p: { records: number; lastSeq: number }) => void;
}

export interface ReplayResult {
  /** The checkpoint loaded (undefined: the log starts at record 1, replayed from empty). */
  readonly checkpointSeq: number | undefined;
  readonly checkpointEntries: number;
  readonly records: number;
  /** Bytes of the replayed records (framing included). */
  readonly recordBytes: number;
  readonly lastSeq: number;
  /** Records whose transaction failed on replay (the maps may differ from the original there). */
  readonly failed: number;
  readonly failures: { seq: number; op: string; error: string }[];
  readonly durationMs: number;
}

/**
 * Whether the maps can be rebuilt from the map log in `dir`: a checkpoint whose CRC checks (or a
 * log that starts at record 1) and records without a gap after it. For `pool rebuild`, before
 * it moves anything aside. Opening the log cuts a torn tail of its last segment, as any open does.
 */
export async function checkRebuildable(
  dir: string,
): Promise<
  { ok: true; checkpointSeq: number | undefined; lastSeq: number } | { ok: false; reason: string }
> {
  let log: MapLog;
  try {
    log = await MapLog.open(dir);
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
  try {
    const ckpt = log.newestCheckpoint;
    let after = 0;
    if (ckpt) {
      try {
        after = (await verifyCheckpoint(ckpt.path)).seq;
      } catch (err) {
        return { ok: false, reason: (err as Error).message };
      }
    } else if (log.lastSeq > 0 && log.segments[0]?.firstSeq !== 1) {
      return {
        ok: false,
        reason: `the map log in ${dir} has no checkpoint and does not start at record 1`,
      };
    } else if (log.lastSeq === 0 && log.segments.length === 0) {
      return { ok: false, reason: `there is no map log in ${dir}` };
    }
    const gap = log.gapAfter(after);
    if (gap !== undefined) {
      return { ok: false, reason: `the map log has no record ${gap} (lost before a checkpoint)` };
    }
    return { ok: true, checkpointSeq: ckpt ? after : undefined, lastSeq: log.lastSeq };
  } finally {
    await log.close();
  }
}

export async function replayMapLog(
  store: MetaStore,
  options: ReplayOptions = {},
): Promise<ReplayResult> {
  const t0 = Date.now();
  const log = store.mapLog;
  if (!log) throw new MetaError(MetaErrorCode.MapLogUnusable, "no map log configured");
  const dbs = store.dbs;
  let after = 0;
  let checkpointSeq: number | undefined;
  let checkpointEntries = 0;
  const ckpt = log.newestCheckpoint;
  if (ckpt) {
    const domains = new Set<number>();
    const r = await readCheckpoint(ckpt.path, async (batch) => {
      await dbs.root.childTransaction(() => {
        for (const e of batch) {
          const db = dbOfTag(dbs, e.tag);
          if (!db) {
            throw new MetaError(
              MetaErrorCode.MapLogCorrupt,
              `checkpoint ${ckpt.path}: unknown table ${e.tag}`,
            );
          }
          if (e.tag === CheckpointTag.volume) domains.add(decodeVolume(e.value).domainId);
          db.putSync(e.key, e.value);
        }
      });
    });
    await dbs.root.childTransaction(() => {
      for (const d of domains) {
        const k = u32Key(d);
        if (!dbs.domains.doesExist(k)) dbs.domains.putSync(k, encodeDomain(zeroDomain()));
      }
    });
    after = r.seq;
    checkpointSeq = r.seq;
    checkpointEntries = r.entries;
  } else if (log.lastSeq > 0 && log.segments[0]?.firstSeq !== 1) {
    throw new MetaError(
      MetaErrorCode.MapLogUnusable,
      `the map log in ${log.dir} has no checkpoint and does not start at record 1: the maps ` +
        "cannot be rebuilt from it",
    );
  }
  const journal = store.journalState;
  store.logMaps = false;
  journal.suppressed = true;
  let records = 0;
  let recordBytes = 0;
  let lastSeq = after;
  const failures: { seq: number; op: string; error: string }[] = [];
  let failed = 0;
  try {
    const r = await log.replay(after, async (recs) => {
      const results = await Promise.allSettled(
        recs.map((x) => dbs.root.childTransaction(() => applyRecordInTxn(dbs, journal, x.record))),
      );
      for (const [i, res] of results.entries()) {
        if (res.status === "rejected") {
          failed++;
          if (failures.length < 20) {
            failures.push({
              seq: recs[i]!.seq,
              op: recs[i]!.record.op,
              error: (res.reason as Error)?.message ?? String(res.reason),
            });
          }
        }
        recordBytes += recs[i]!.bytes;
      }
      records += recs.length;
      lastSeq = recs[recs.length - 1]!.seq;
      options.onProgress?.({ records, lastSeq });
    });
    lastSeq = Math.max(lastSeq, r.lastSeq);
  } finally {
    journal.suppressed = false;
  }
  await dbs.root.childTransaction(() => {
    dbs.meta.putSync(MAPLOG_SEQ_KEY, encodeSeq(lastSeq));
  });
  return {
    checkpointSeq,
    checkpointEntries,
    records,
    recordBytes,
    lastSeq,
    failed,
    failures,
    durationMs: Date.now() - t0,
  };
}

/** Runs one logged map transaction's body again (inside a write transaction). */
export function applyRecordInTxn(dbs: MetaDbs, journal: JournalState, rec: MapRecord): void {
  switch (rec.op) {
    case "volumeCreate":
      createVolumeInTxn(dbs, rec.volume, rec.domainId);
      return;
    case "write": {
      const prepared: PreparedUpdate[] = rec.grains.map((g) => ({
        grain: g.grain,
        key: mapKey(rec.volume, g.grain),
        fingerprint: g.fingerprint,
        chunk: undefined,
      }));
      if (prepared.length > 0)
        writeMapInTxn(dbs, journal, rec.volume, prepared, { tolerateMissing: true });
      return;
    }
    case "unmap": {
      const prepared: PreparedUpdate[] = [];
      for (const key of dbs.map.getKeys({
        start: mapKey(rec.volume, rec.first),
        end: mapKey(rec.volume, rec.end),
      })) {
        prepared.push({
          grain: decodeMapKey(key).grain,
          key: Buffer.from(key),
          fingerprint: undefined,
          chunk: undefined,
        });
      }
      if (prepared.length > 0)
        writeMapInTxn(dbs, journal, rec.volume, prepared, { tolerateMissing: true });
      return;
    }
    case "copy":
      copyRangeInTxn(
        dbs,
        journal,
        rec.snapshot === undefined
          ? { volume: rec.srcVolume }
          : { volume: rec.srcVolume, snapshot: rec.snapshot },
        rec.srcFirst,
        rec.dstVolume,
        rec.dstFirst,
        rec.count,
      );
      return;
    case "snapshotCreate": {
      const s = createSnapshotInTxn(dbs, rec.volume);
      if (s !== rec.snapshot) {
        throw new MetaError(
          MetaErrorCode.MapLogCorrupt,
          `replayed snapshot of volume ${rec.volume} is ${s}, the log says ${rec.snapshot}`,
        );
      }
      return;
    }
    case "snapshotMarkDelete":
      markSnapshotDeletingInTxn(dbs, rec.volume, rec.snapshot);
      return;
    case "snapshotDeleteStep":
      deleteSnapshotStepInTxn(dbs, journal, rec.volume, rec.snapshot, rec.cursor, rec.batch);
      return;
    case "volumeRetire":
      retireSnapshotsInTxn(dbs, rec.volume);
      return;
    case "volumeReleaseOld":
      releaseSomeOldVersionsInTxn(dbs, journal, rec.volume, rec.batch);
      return;
    case "volumeForget":
      forgetVolumeInTxn(dbs, rec.volume);
      return;
  }
}
