import { describe, expect, it } from "vitest";
import { StorageError, StorageErrorCode } from "../volume/errors.js";
import { Asc } from "./asc.js";
import { SenseKey } from "./constants.js";
import { STORAGE_ERROR_SENSE, senseForFailure } from "./sense-map.js";

const context = { volumeId: "v", lun: 3, opcode: 0x2a };

function collect() {
  const logs: { obj: object; msg: string }[] = [];
  return { logs, logger: { warn: (obj: object, msg: string) => logs.push({ obj, msg }) } };
}

describe("StorageError → sense (the one translation table)", () => {
  it.each([
    [StorageErrorCode.OutOfRange, SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE, false],
    [StorageErrorCode.WriteProtected, SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED, false],
    [
      StorageErrorCode.PoolFull,
      SenseKey.DATA_PROTECT,
      Asc.SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
      false,
    ],
    [
      StorageErrorCode.QuotaExceeded,
      SenseKey.DATA_PROTECT,
      Asc.SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
      false,
    ],
    [StorageErrorCode.MediumError, SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR, true],
    [StorageErrorCode.WriteFault, SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR, true],
    [StorageErrorCode.NotReady, SenseKey.NOT_READY, Asc.LOGICAL_UNIT_NOT_READY, true],
    [StorageErrorCode.Miscompare, SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, false],
    [StorageErrorCode.Internal, SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE, true],
  ])("%s → key %i asc %s", (code, key, asc, logged) => {
    const { logs, logger } = collect();
    const err = new StorageError(code, "because");
    expect(senseForFailure(err, logger, context)).toEqual({ key, asc });
    expect(logs.length).toBe(logged ? 1 : 0);
    if (logged) expect(logs[0]?.obj).toMatchObject({ err, code, ...context });
  });

  it("has a row for every StorageErrorCode", () => {
    expect(Object.keys(STORAGE_ERROR_SENSE).sort()).toEqual(Object.values(StorageErrorCode).sort());
  });

  it("puts the LBA of a medium error in INFORMATION", () => {
    const { logger } = collect();
    const sense = senseForFailure(
      new StorageError(StorageErrorCode.MediumError, "crc", 1234),
      logger,
      context,
    );
    expect(sense.information).toBe(1234);
  });

  it("puts the miscompare offset in INFORMATION", () => {
    const { logger } = collect();
    const err = Object.assign(new StorageError(StorageErrorCode.Miscompare, "differs"), {
      offset: 77,
    });
    expect(senseForFailure(err, logger, context).information).toBe(77);
  });

  it("turns anything else into a logged INTERNAL TARGET FAILURE", () => {
    const { logs, logger } = collect();
    const cause = new Error("ENOSPC in a place nobody expected");
    expect(senseForFailure(cause, logger, context)).toEqual({
      key: SenseKey.HARDWARE_ERROR,
      asc: Asc.INTERNAL_TARGET_FAILURE,
    });
    expect(logs[0]?.obj).toMatchObject({ err: cause, code: "UNEXPECTED" });
    expect(senseForFailure("a string", logger, context).key).toBe(SenseKey.HARDWARE_ERROR);
  });
});
