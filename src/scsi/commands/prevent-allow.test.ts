import { describe, expect, it } from "vitest";
import { Asc } from "../asc.js";
import { SenseKey } from "../constants.js";
import { Cdb } from "../testing/cdb-builders.js";
import { CopyCdb } from "../testing/copy-builders.js";
import { expectGood, expectSense, setup } from "../testing/harness.js";
import { preventAllowAccess } from "./prevent-allow.js";

describe("PREVENT ALLOW MEDIUM REMOVAL", () => {
  it("accepts PREVENT 00b and 01b on a non-removable unit, and changes nothing", async () => {
    const { run, volume } = setup();
    expectGood(await run(CopyCdb.preventAllow(1)));
    expectGood(await run(CopyCdb.preventAllow(0)));
    // Still not removable: the standard INQUIRY data has RMB=0, and LOEJ stays refused.
    const inquiry = await run(Cdb.inquiry({ allocationLength: 96 }));
    expect(inquiry.data![1]! & 0x80).toBe(0);
    expectSense(
      await run(Cdb.startStopUnit({ start: false, loej: true })),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(volume.calls).toEqual([]);
  });

  it.each([2, 3])("refuses the obsolete PREVENT value %i", async (prevent) => {
    const { run } = setup();
    const s = expectSense(
      await run(CopyCdb.preventAllow(prevent)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(s.fieldPointer).toEqual({ inCdb: true, byte: 4, bit: 1 });
  });

  it("is allowed under a reservation only when it allows removal (SPC-4 table 65)", () => {
    expect(preventAllowAccess(CopyCdb.preventAllow(0))).toBe("allowed");
    expect(preventAllowAccess(CopyCdb.preventAllow(1))).toBe("write");
  });
});
