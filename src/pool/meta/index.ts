/**
 * Pool metadata: fingerprint index, block maps, refcount journal, capacity accounting, audit and
 * rebuild, in LMDB. See README.md for the key layout and the crash-consistency design.
 */
export { RefcountApplier, type RefcountApplierOptions } from "./applier.js";
export type {
  AuditChunk,
  AuditOptions,
  AuditReport,
  CounterDrift,
  DanglingReference,
  Finding,
  OldVersionProblem,
  RepairReport,
  StaleDead,
} from "./audit.js";
export { DB_NAMES, FINGERPRINT_BYTES, FULL_FINGERPRINT_BYTES, shortFingerprint } from "./codec.js";
export { MetaError, MetaErrorCode } from "./errors.js";
export type { ContainerRecord, RebuildOptions, RebuildResult } from "./rebuild.js";
export {
  type ApplyOptions,
  type ApplyResult,
  type CheckpointResult,
  type ChunkEntry,
  type ChunkLocation,
  type ContainerUsage,
  type CopyOptions,
  type CopyResult,
  type CopySource,
  type DeadChunk,
  type DeleteSnapshotOptions,
  type DeleteSnapshotResult,
  type DomainSnapshotUsage,
  type DomainUsage,
  type ExtentStatus,
  type GrainUpdate,
  type InsertResult,
  type MapEntry,
  type MapLogConfig,
  type MapLogLogger,
  MetaStore,
  type MetaStoreOptions,
  type PoolUsage,
  type ReadOptions,
  type RefcountAnomaly,
  type RelocateResult,
  type Relocation,
  type ReplayOptions,
  type ReplayResult,
  type ResolvedGrain,
  type SnapshotUsage,
  type VolumeUsage,
  type WriteResult,
} from "./store.js";
