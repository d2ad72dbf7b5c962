/**
 * Argument checks at the edge of MetaStore (they throw MetaError InvalidArgument) and small
 * helpers on chunk locations shared by the store's mutations. Internal to src/pool/meta.
 */
import {
  type ChunkLocation,
  FINGERPRINT_BYTES,
  isU32,
  locationProblem,
  MAX_GRAIN,
} from "./codec.js";
import type { CounterDeltas } from "./dbs.js";
import { MetaError, MetaErrorCode } from "./errors.js";

export function validGrainSize(n: number): boolean {
  return Number.isInteger(n) && n >= 4096 && n <= 65536 && (n & (n - 1)) === 0;
}

export function checkU32(name: string, n: number): void {
  if (!isU32(n)) throw new MetaError(MetaErrorCode.InvalidArgument, `${name} ${n} is not a u32`);
}

export function checkGrain(grain: number): void {
  if (!Number.isInteger(grain) || grain < 0 || grain >= MAX_GRAIN) {
    throw new MetaError(MetaErrorCode.InvalidArgument, `grain ${grain} out of range`);
  }
}

export function checkCount(count: number): void {
  if (!Number.isInteger(count) || count < 0) {
    throw new MetaError(MetaErrorCode.InvalidArgument, `grain count ${count}`);
  }
}

export function checkFingerprint(fp: Uint8Array): void {
  if (fp.length !== FINGERPRINT_BYTES) {
    throw new MetaError(
      MetaErrorCode.InvalidArgument,
      `fingerprint of ${fp.length} bytes, not ${FINGERPRINT_BYTES}`,
    );
  }
}

export function checkLocation(loc: ChunkLocation): ChunkLocation {
  const problem = locationProblem(loc);
  if (problem) throw new MetaError(MetaErrorCode.InvalidArgument, problem);
  return locationOf(loc);
}

export function sameLocation(a: ChunkLocation, b: ChunkLocation): boolean {
  return a.containerId === b.containerId && a.offset === b.offset;
}

export function locationOf(e: ChunkLocation): ChunkLocation {
  return {
    containerId: e.containerId,
    offset: e.offset,
    storedLength: e.storedLength,
    logicalLength: e.logicalLength,
  };
}

export function countStored(deltas: CounterDeltas, loc: ChunkLocation): void {
  const c = deltas.container(loc.containerId);
  c.storedChunks += 1;
  c.storedBytes += loc.storedLength;
}

/** A copy written to a container but not referenced by the index: dead from the start. */
export function countDuplicate(deltas: CounterDeltas, loc: ChunkLocation): void {
  countStored(deltas, loc);
  const c = deltas.container(loc.containerId);
  c.deadChunks += 1;
  c.deadBytes += loc.storedLength;
}

export function unknownVolume(volume: number): MetaError {
  return new MetaError(MetaErrorCode.UnknownVolume, `volume ${volume} is not registered`);
}
