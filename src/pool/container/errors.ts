/**
 * Integrity errors of containers. A record (or a container) that fails any check of FORMAT.md §3
 * is reported as a `ContainerIntegrityError`, a `StorageError` with code MediumError, so that the
 * SCSI layer answers MEDIUM ERROR and never returns wrong data. `reason` and `offset` say what
 * failed where, for scrub reports and logs.
 */
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import type { DamageReason } from "./format.js";

export class ContainerIntegrityError extends StorageError {
  constructor(
    /** Path of the container file. */
    readonly path: string,
    /** Offset of the record (or structure) that failed, when known. */
    readonly offset: number | undefined,
    readonly reason: DamageReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(
      StorageErrorCode.MediumError,
      `container ${path}${offset === undefined ? "" : ` at offset ${offset}`}: ${message}`,
      undefined,
      options,
    );
  }
}

/** A write or fdatasync of a container failed; the writer accepts nothing more. */
export function writeFailure(path: string, error: unknown): StorageError {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return new StorageError(
    code === "ENOSPC" || code === "EDQUOT"
      ? StorageErrorCode.PoolFull
      : StorageErrorCode.WriteFault,
    `container ${path}: write failed: ${(error as Error | undefined)?.message ?? String(error)}`,
    undefined,
    { cause: error },
  );
}
