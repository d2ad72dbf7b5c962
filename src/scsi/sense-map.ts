/**
 * The one table that turns a failure from below (a `StorageError` semantic code, or anything
 * else a volume threw) into SCSI status + sense. Nothing else in the SCSI layer inspects
 * storage error codes.
 *
 * Real causes are logged before they are reduced to a wire code (nbdkit style); expected,
 * host-induced conditions (out of range, write protected, space exhausted) are not logged as
 * warnings, since the initiator sees them and they are accounted elsewhere.
 */
import { StorageError, type StorageErrorCode } from "../volume/errors.js";
import { Asc } from "./asc.js";
import { SenseKey } from "./constants.js";
import type { SenseSpec } from "./sense.js";

export interface ScsiLogger {
  warn(obj: object, msg: string): void;
}

interface Translation {
  readonly key: SenseKey;
  readonly asc: number;
  /** What goes in the INFORMATION field. */
  readonly information: "none" | "lba" | "offset";
  /** Log the cause at warn level before answering. */
  readonly log: boolean;
}

/** StorageErrorCode → sense. Keyed by the code so that a new code fails to typecheck here. */
export const STORAGE_ERROR_SENSE: Readonly<Record<StorageErrorCode, Translation>> = {
  OUT_OF_RANGE: {
    key: SenseKey.ILLEGAL_REQUEST,
    asc: Asc.LBA_OUT_OF_RANGE,
    information: "none",
    log: false,
  },
  WRITE_PROTECTED: {
    key: SenseKey.DATA_PROTECT,
    asc: Asc.WRITE_PROTECTED,
    information: "none",
    log: false,
  },
  // SBC-4 4.7 (logical block provisioning, thin provisioning resource exhaustion): a write that needs an allocation
  // the pool or quota cannot satisfy fails with SPACE ALLOCATION FAILED WRITE PROTECT.
  POOL_FULL: {
    key: SenseKey.DATA_PROTECT,
    asc: Asc.SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
    information: "none",
    log: false,
  },
  QUOTA_EXCEEDED: {
    key: SenseKey.DATA_PROTECT,
    asc: Asc.SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
    information: "none",
    log: false,
  },
  MEDIUM_ERROR: {
    key: SenseKey.MEDIUM_ERROR,
    asc: Asc.UNRECOVERED_READ_ERROR,
    information: "lba",
    log: true,
  },
  WRITE_FAULT: {
    key: SenseKey.MEDIUM_ERROR,
    asc: Asc.WRITE_ERROR,
    information: "lba",
    log: true,
  },
  // 04h/00h rather than MEDIUM NOT PRESENT: a volume that is closing or being re-opened is a
  // transient state, and initiators retry NOT READY / LOGICAL UNIT NOT READY. A removed
  // mapping disappears from the LUN view and is announced by REPORTED LUNS DATA HAS CHANGED.
  NOT_READY: {
    key: SenseKey.NOT_READY,
    asc: Asc.LOGICAL_UNIT_NOT_READY,
    information: "none",
    log: true,
  },
  MISCOMPARE: {
    key: SenseKey.MISCOMPARE,
    asc: Asc.MISCOMPARE_DURING_VERIFY,
    information: "offset",
    log: false,
  },
  INTERNAL: {
    key: SenseKey.HARDWARE_ERROR,
    asc: Asc.INTERNAL_TARGET_FAILURE,
    information: "none",
    log: true,
  },
};

const UNKNOWN_FAILURE: Translation = STORAGE_ERROR_SENSE.INTERNAL;

/** Context logged with a failure. */
export interface FailureContext {
  readonly volumeId: string;
  readonly lun: number;
  readonly opcode: number;
}

/**
 * Translate anything a volume rejected with into sense data, logging the real cause when the
 * table says so (always for exceptions that are not `StorageError`s).
 */
export function senseForFailure(
  err: unknown,
  logger: ScsiLogger,
  context: FailureContext,
): SenseSpec {
  const storage = err instanceof StorageError ? err : undefined;
  const row = storage ? (STORAGE_ERROR_SENSE[storage.code] ?? UNKNOWN_FAILURE) : UNKNOWN_FAILURE;
  if (row.log) {
    logger.warn(
      { err, code: storage?.code ?? "UNEXPECTED", ...context },
      storage ? "volume reported a storage error" : "unexpected failure below the SCSI layer",
    );
  }
  const information = pickInformation(row.information, storage);
  return information === undefined
    ? { key: row.key, asc: row.asc }
    : { key: row.key, asc: row.asc, information };
}

function pickInformation(
  what: Translation["information"],
  err: StorageError | undefined,
): number | undefined {
  if (!err || what === "none") return undefined;
  if (what === "offset") {
    // The Miscompare contract names an offset; accept it as a property, else the lba field.
    const offset = (err as unknown as { offset?: unknown }).offset;
    if (typeof offset === "number") return offset;
  }
  return err.lba;
}
