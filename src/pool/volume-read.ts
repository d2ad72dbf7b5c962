/**
 * The read path of a pool volume (pool-volume.ts), head or snapshot view.
 *
 * Which chunks: the map (MetaStore.resolveGrains, one read snapshot), or for the head the location
 * hints (location-hints.ts) when they have every grain of the read that is not staged or cached:
 * what the map says, kept by the write path when a write lands and dropped by every change
 * (pool-volume.ts `uncache`). The staged grains (write-back.ts `overlay`) win over both, looked at
 * in the same turn. Records lying back to back in one container are read with one pread
 * (ChunkReader.readRun), by the worker threads straight into the result buffer when the run's
 * grains are consecutive. A record that fails any check, or a map entry whose chunk the index
 * lacks, fails the read with MediumError and its LBA: never zeros, never other data. A failed
 * record is resolved again in the map once first: a location may be stale (GC moved the chunk, a
 * heal moved a damaged one), or an overwrite raced the read.
 *
 * Read cache (volume-cache.ts): reads of the head keep what they read, by volume address, and
 * serve it again without LMDB, pread or GCM. Coherent by an epoch per volume: a read takes it in
 * the turn it looks at the overlay and the map, and what it read is kept only if no change came
 * in between; every change to the map (writeBytes once staged, unmap, copyFrom) drops its range
 * and moves the epoch once visible and before it completes (`uncache`). A change is visible from
 * staging on through the overlay, and after its commit through the map, so no read that starts
 * after it completes can find older content, cached or not. A read all of whose grains are
 * cached, and none staged, is one copy per run of consecutive cache slots into a plain buffer.
 */
import { dataBuffers } from "../util/buffer-pool.js";
import { StorageError, StorageErrorCode } from "../volume/errors.js";
import type { RunRecord } from "./chunk-reader.js";
import type { ChunkLocation, MetaStore } from "./meta/index.js";
import type { PoolContext } from "./pool-volume.js";

const GRAIN = 4096;

/** What the read path needs of a volume (PoolVolume). */
export interface ReadSource {
  /** MetaStore volume number. */
  readonly number: number;
  /** The snapshot a view reads, undefined for the head. */
  readonly snapshot?: number | undefined;
  readonly ctx: PoolContext;
  /** The map as the volume sees it (the head, or its snapshot). */
  resolve(first: number, count: number): ReturnType<MetaStore["resolveGrains"]>;
  /** MediumError for `grain` (its first LBA at or after `fromLba`), logged. */
  mediumError(grain: number, why: string, fromLba?: number, cause?: unknown): StorageError;
}

/**
 * `count` grains from `first` of `v`, holes as zeros. Rejects with MediumError and the LBA of
 * the first unreadable block at or after `fromLba`.
 */
export async function readGrains(
  v: ReadSource,
  first: number,
  count: number,
  fromLba = 0,
  retried = false,
): Promise<Buffer> {
  // Staged grains win over the map and the cache; looked at in the same turn as the map is
  // resolved and the cache's epoch taken (write-back.ts `overlay`, "Read cache" above).
  const staged =
    v.snapshot === undefined ? v.ctx.writeBack.overlay(v.number, first, count) : undefined;
  const cache = v.snapshot === undefined ? v.ctx.chunks.reads.volumeCache : undefined;
  const epoch = cache?.epoch(v.number) ?? -1;
  const cached = cache?.entries(v.number);
  let out: Buffer | undefined;
  let hit: Uint8Array | undefined;
  if (cache !== undefined && cached !== undefined && cached.grains.size > 0) {
    // All of it held and nothing staged (a warm sequential read): a plain buffer, which the
    // cache fills with one copy when the grains lie in consecutive slots.
    if (staged === undefined) {
      const whole = dataBuffers.acquire(count * GRAIN);
      if (cache.getRun(cached, first, count, whole, 0)) return whole;
      dataBuffers.release(whole);
    }
    out = dataBuffers.acquire(count * GRAIN, true);
    hit = new Uint8Array(count);
    let missing = 0;
    for (let i = 0; i < count; i++) {
      if (staged?.[i] !== undefined) continue;
      if (cache.get(cached, first + i, out, i * GRAIN)) hit[i] = 1;
      else missing++;
    }
    if (missing === 0) {
      for (let i = 0; i < count; i++) {
        const s = staged?.[i];
        if (s === undefined) continue;
        if (s.plaintext === undefined) out.fill(0, i * GRAIN, (i + 1) * GRAIN);
        else s.plaintext.copy(out, i * GRAIN);
      }
      return out;
    }
  }
  // The grains' chunks: from the location hints when they have every grain left (a read of
  // what was written lately), else from the map and the index (module comment "Read path").
  const hints = v.snapshot === undefined && !retried ? v.ctx.chunks.reads.locations : undefined;
  const resolved =
    hints?.resolve(v.number, first, count, (i) => staged?.[i] !== undefined || hit?.[i] === 1) ??
    v.resolve(first, count);
  const fromStage: number[] = [];
  const holes: number[] = [];
  interface Run {
    container: number;
    end: number;
    records: RunRecord[];
    index: number[];
  }
  const runs: Run[] = [];
  let run: Run | undefined;
  for (let i = 0; i < count; i++) {
    const s = staged?.[i];
    if (s !== undefined) {
      if (s.plaintext === undefined) holes.push(i);
      else fromStage.push(i);
      continue;
    }
    if (hit?.[i] === 1) continue;
    const r = resolved[i];
    if (r === undefined) {
      holes.push(i);
      continue;
    }
    const c = r.chunk;
    if (c === undefined) {
      throw v.mediumError(
        first + i,
        "its map entry names a chunk the index does not hold",
        fromLba,
      );
    }
    if (c.logicalLength !== GRAIN) {
      throw v.mediumError(
        first + i,
        `its chunk holds ${c.logicalLength} bytes, not a grain`,
        fromLba,
      );
    }
    const record = { offset: c.offset, storedLength: c.storedLength, fingerprint: r.fingerprint };
    // Sequential writes put their grains back to back: one pread for the run (module comment).
    if (run !== undefined && run.container === c.containerId && run.end === c.offset) {
      run.records.push(record);
      run.index.push(i);
    } else {
      run = { container: c.containerId, end: 0, records: [record], index: [i] };
      runs.push(run);
    }
    run.end = c.offset + 60 + c.storedLength;
  }
  // The result buffer first: runs of consecutive grains are opened straight into it (by the
  // worker threads, util/buffer-pool.ts), the others are copied in below.
  out ??= dataBuffers.acquire(count * GRAIN, true);
  const target = out;
  const results = await Promise.all(
    runs.map((r) => {
      const from = r.index[0]!;
      const n = r.index.length;
      const into =
        r.index[n - 1] === from + n - 1
          ? target.subarray(from * GRAIN, (from + n) * GRAIN)
          : undefined;
      return v.ctx.chunks.reads.readRun(r.container, r.records, into).catch((error: unknown) => {
        const e = asMedium(error);
        return { grains: undefined, failures: new Map(r.records.map((_, j) => [j, e])) };
      });
    }),
  );
  let failed: { index: number; error: StorageError } | undefined;
  for (let k = 0; k < runs.length; k++) {
    const r = runs[k]!;
    const res = results[k]!;
    for (const [j, error] of res.failures) {
      const i = r.index[j]!;
      if (failed === undefined || i < failed.index) failed = { index: i, error };
    }
  }
  if (failed === undefined && cache !== undefined) {
    for (let k = 0; k < runs.length; k++) {
      const r = runs[k]!;
      const grains = results[k]!.grains!;
      const n = r.index.length;
      const from = r.index[0]!;
      if (r.index[n - 1] === from + n - 1) {
        cache.offerRun(v.number, epoch, first + from, n, grains, 0);
        continue;
      }
      for (let j = 0; j < n; j++) {
        cache.offer(v.number, epoch, first + r.index[j]!, grains, j * GRAIN);
      }
    }
  }
  for (const i of holes) out.fill(0, i * GRAIN, (i + 1) * GRAIN);
  // A copy: the caller may patch what it reads (read-modify-write); staged text never changes.
  for (const i of fromStage) staged![i]!.plaintext!.copy(out, i * GRAIN);
  if (failed === undefined) {
    for (let k = 0; k < runs.length; k++) {
      const r = runs[k]!;
      const grains = results[k]!.grains!;
      const at = r.index[0]! * GRAIN;
      if (grains.buffer === out.buffer && grains.byteOffset === out.byteOffset + at) continue;
      for (let j = 0; j < r.index.length; j++) {
        grains.copy(out, r.index[j]! * GRAIN, j * GRAIN, (j + 1) * GRAIN);
      }
    }
  }
  if (failed !== undefined) {
    const { index, error } = failed;
    // The map may have moved on while we read (an overwrite, or GC deleting a container whose
    // chunks no map uses any more): look again once before calling it damage.
    const now = v.resolve(first + index, 1)[0];
    const then = resolved[index];
    if (!retried && !sameResolution(now, then)) {
      // A stale location hint (GC moved the chunk), or a change: again, from the map.
      v.ctx.chunks.reads.locations.invalidate(v.number, first, count);
      return readGrains(v, first, count, fromLba, true);
    }
    throw v.mediumError(first + index, error.message, fromLba, error);
  }
  return out;
}

/** A grain as resolved by the map and index, or by the location hints. */
type Resolution = { readonly fingerprint: Buffer; readonly chunk: ChunkLocation | undefined };

function sameResolution(a: Resolution | undefined, b: Resolution | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (!a.fingerprint.equals(b.fingerprint)) return false;
  return a.chunk?.containerId === b.chunk?.containerId && a.chunk?.offset === b.chunk?.offset;
}

function asMedium(error: unknown): StorageError {
  if (error instanceof StorageError) return error;
  return new StorageError(
    StorageErrorCode.MediumError,
    `reading a container failed: ${(error as Error | undefined)?.message ?? String(error)}`,
    undefined,
    { cause: error },
  );
}
