/**
 * Semantic storage errors raised below the SCSI layer. The SCSI layer translates each code into
 * status + sense data in exactly one table (src/scsi/sense-map.ts); nothing below knows SCSI.
 */
export const StorageErrorCode = {
  /** The address range lies (partly) outside the volume. */
  OutOfRange: "OUT_OF_RANGE",
  /** The mapping is read-only (or the volume is a snapshot). */
  WriteProtected: "WRITE_PROTECTED",
  /** The pool has no space left for a new allocation. */
  PoolFull: "POOL_FULL",
  /** The agent's capacity limit forbids a new allocation. */
  QuotaExceeded: "QUOTA_EXCEEDED",
  /** Stored data failed its integrity check (CRC or AEAD tag): never return it. */
  MediumError: "MEDIUM_ERROR",
  /** The backing store failed a write. */
  WriteFault: "WRITE_FAULT",
  /** The volume was removed or is being closed. */
  NotReady: "NOT_READY",
  /** COMPARE AND WRITE found different data; `offset` is the first differing byte. */
  Miscompare: "MISCOMPARE",
  /** Anything else: an internal failure. */
  Internal: "INTERNAL",
} as const;
export type StorageErrorCode = (typeof StorageErrorCode)[keyof typeof StorageErrorCode];

export class StorageError extends Error {
  override readonly name = "StorageError";
  constructor(
    readonly code: StorageErrorCode,
    message: string,
    /** For OutOfRange and MediumError: the first logical block affected, when known. */
    readonly lba?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * Whether a volume rejected because the command's signal aborted before the operation started
 * (Volume, "Aborts"): any error named "AbortError" (DOMException's, the arbiter's). Nothing was
 * changed; the SCSI layer answers TASK ABORTED (or nothing, when the transport aborted the task).
 */
export function isAbortError(err: unknown): boolean {
  return err instanceof Error && err.name === "AbortError";
}
