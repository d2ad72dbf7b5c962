/**
 * Argument checks at the edge of MetaStore (they throw MetaError InvalidArgument) and small
 * helpers on chunk locations shared by the store's mutations. Internal to src/pool/meta.
 */
import {
  type ChunkLocation,
  FINGERPRINT_BYTES,
  FULL_FINGERPRINT_BYTES,
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

/**
 * A fingerprint argument: the full one (32 bytes, as the write path and container records have
 * it) or the metadata's (16, as map reads return it); only the first 16 bytes are kept.
 */
export function checkFingerprint(fp: Uint8Array): void {
  if (fp.length !== FULL_FINGERPRINT_BYTES && fp.length !== FINGERPRINT_BYTES) {
    throw new MetaError(
      MetaErrorCode.InvalidArgument,
      `fingerprint of ${fp.length} bytes, not ${FULL_FINGERPRINT_BYTES} or ${FINGERPRINT_BYTES}`,
    );
  }
}

/** A checked fingerprint argument as the metadata keeps it: a copy of its first 16 bytes. */
export function ownFingerprint(fp: Uint8Array): Buffer {
  checkFingerprint(fp);
  return Buffer.from(fp.subarray(0, FINGERPRINT_BYTES));
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
