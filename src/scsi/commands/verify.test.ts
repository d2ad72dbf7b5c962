import { describe, expect, it } from "vitest";
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import { Asc } from "../asc.js";
import { SenseKey } from "../constants.js";
import { Cdb } from "../testing/cdb-builders.js";
import { expectGood, expectSense, pattern, setup } from "../testing/harness.js";
import { firstDifference } from "./verify.js";

describe.each([
  ["(10)", Cdb.verify10, 0xffffffffn],
  ["(12)", Cdb.verify12, 0xffffffffn],
  ["(16)", Cdb.verify16, 2n ** 64n - 1n],
] as const)("VERIFY%s", (_name, build, maxLba) => {
  it("BYTCHK=0 reads the medium and needs no Data-Out", async () => {
    const { run, volume } = setup();
    expectGood(await run(build({ lba: 10, blocks: 4 })));
    expect(volume.calls).toEqual([{ op: "read", lba: 10, blocks: 4 }]);
  });

  it("BYTCHK=0 reports a medium error with its LBA", async () => {
    const { run, volume } = setup();
    volume.failNext("read", new StorageError(StorageErrorCode.MediumError, "tag mismatch", 12));
    const s = expectSense(
      await run(build({ lba: 10, blocks: 4 })),
      SenseKey.MEDIUM_ERROR,
      Asc.UNRECOVERED_READ_ERROR,
    );
    expect(s.information).toBe(12);
  });

  it("BYTCHK=1 compares with the Data-Out buffer", async () => {
    const { run } = setup();
    const data = pattern(3, 0x3c);
    expectGood(await run(Cdb.write10({ lba: 5, blocks: 3 }), data));
    const r = await run(build({ lba: 5, blocks: 3, bytchk: 1 }), data);
    expectGood(r);
    expect(r.dataOutLength).toBe(3 * 512);
    const other = Buffer.from(data);
    other[700] = 0;
    const s = expectSense(
      await run(build({ lba: 5, blocks: 3, bytchk: 1 }), other),
      SenseKey.MISCOMPARE,
      Asc.MISCOMPARE_DURING_VERIFY,
    );
    expect(s.valid).toBe(true);
    expect(s.information).toBe(700);
  });

  it("BYTCHK=3 compares every block with one block", async () => {
    const { run } = setup();
    expectGood(await run(Cdb.write10({ lba: 0, blocks: 4 }), pattern(4, 0x11)));
    expectGood(await run(build({ lba: 0, blocks: 4, bytchk: 3 }), pattern(1, 0x11)));
    expectGood(await run(Cdb.write10({ lba: 2, blocks: 1 }), pattern(1, 0x12)));
    const s = expectSense(
      await run(build({ lba: 0, blocks: 4, bytchk: 3 }), pattern(1, 0x11)),
      SenseKey.MISCOMPARE,
      Asc.MISCOMPARE_DURING_VERIFY,
    );
    expect(s.information).toBe(2 * 512);
  });

  it("BYTCHK=2 is reserved", async () => {
    const { run } = setup();
    const s = expectSense(
      await run(build({ lba: 0, blocks: 1, bytchk: 2 })),
      5,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(s.fieldPointer).toEqual({ inCdb: true, byte: 1, bit: 2 });
  });

  it("refuses a short Data-Out buffer", async () => {
    const { run, volume } = setup();
    expectSense(
      await run(build({ lba: 0, blocks: 2, bytchk: 1 }), pattern(1, 0)),
      5,
      Asc.INVALID_FIELD_IN_COMMAND_IU,
    );
    expect(volume.calls).toEqual([]);
  });

  it.each([
    [0, 0, true],
    [1023, 1, true],
    [1024, 0, true],
    [1024, 1, false],
    [1023, 2, false],
  ])("checks the range (lba %i, blocks %i)", async (lba, blocks, ok) => {
    const { run } = setup({ blocks: 1024 });
    const r = await run(build({ lba, blocks }));
    if (ok) expectGood(r);
    else expectSense(r, 5, Asc.LBA_OUT_OF_RANGE);
    expectSense(await run(build({ lba: maxLba, blocks: 1 })), 5, Asc.LBA_OUT_OF_RANGE);
  });

  it("accepts DPO, refuses VRPROTECT, and works on read-only mappings", async () => {
    const { run } = setup({ readOnly: true });
    expectGood(await run(build({ lba: 0, blocks: 1, dpo: true })));
    expectSense(await run(build({ lba: 0, blocks: 1, protect: 1 })), 5, Asc.INVALID_FIELD_IN_CDB);
  });
});

describe("firstDifference", () => {
  it("finds the first differing byte anywhere", () => {
    const a = Buffer.alloc(2000, 7);
    expect(firstDifference(a, Buffer.from(a))).toBe(-1);
    for (const at of [0, 1, 511, 512, 1999]) {
      const b = Buffer.from(a);
      b[at] = 8;
      expect(firstDifference(a, b)).toBe(at);
    }
  });
});
