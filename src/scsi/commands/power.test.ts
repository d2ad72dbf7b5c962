import { describe, expect, it } from "vitest";
import { Asc } from "../asc.js";
import { Cdb } from "../testing/cdb-builders.js";
import { expectGood, expectSense, setup } from "../testing/harness.js";

describe.each([
  ["(10)", Cdb.preFetch10, 7],
  ["(16)", Cdb.preFetch16, 10],
] as const)("PRE-FETCH%s", (_name, build, lengthByte) => {
  it.each([
    [0, 1, true],
    [1000, 24, true],
    [1024, 0, true],
    [1024, 1, false],
    [1025, 0, false],
    [0xffffffff, 1, false],
  ])("checks the range (lba %i, blocks %i) and touches nothing", async (lba, blocks, ok) => {
    const { run, volume } = setup({ blocks: 1024 });
    const r = await run(build({ lba, blocks, immed: true }));
    if (ok) expectGood(r);
    else expectSense(r, 5, Asc.LBA_OUT_OF_RANGE);
    expect(volume.calls).toEqual([]);
  });

  it("refuses more than MAXIMUM PREFETCH LENGTH", async () => {
    const { run } = setup({ blocks: 1 << 20 });
    const s = expectSense(await run(build({ lba: 0, blocks: 32769 })), 5, Asc.INVALID_FIELD_IN_CDB);
    expect(s.fieldPointer).toEqual({ inCdb: true, byte: lengthByte });
  });
});

describe("START STOP UNIT", () => {
  it("start is a no-op, stop flushes and leaves the unit ready", async () => {
    const { run, volume } = setup();
    expectGood(await run(Cdb.startStopUnit({ start: true })));
    expect(volume.calls).toEqual([]);
    expectGood(await run(Cdb.startStopUnit({ start: false })));
    expect(volume.flushCount).toBe(1);
    expectGood(await run(Cdb.testUnitReady()));
    expectGood(await run(Cdb.read10({ lba: 0, blocks: 1 })));
  });

  it("stop with NO_FLUSH does not flush", async () => {
    const { run, volume } = setup();
    const cdb = Cdb.startStopUnit({ start: false });
    cdb[4] = cdb[4]! | 0x04;
    expectGood(await run(cdb));
    expect(volume.flushCount).toBe(0);
  });

  it("refuses LOEJ: the medium is not removable", async () => {
    const { run } = setup();
    for (const start of [false, true]) {
      const s = expectSense(
        await run(Cdb.startStopUnit({ loej: true, start, immed: true })),
        5,
        Asc.INVALID_FIELD_IN_CDB,
      );
      expect(s.fieldPointer).toEqual({ inCdb: true, byte: 4, bit: 1 });
    }
  });

  it("accepts defined power conditions as no-ops and refuses reserved ones", async () => {
    const { run, volume } = setup();
    for (const pc of [1, 2, 3, 7, 0xa, 0xb]) {
      expectGood(await run(Cdb.startStopUnit({ powerCondition: pc, loej: true, start: false })));
    }
    for (const pc of [4, 5, 6, 8, 9, 0xc, 0xf]) {
      expectSense(
        await run(Cdb.startStopUnit({ powerCondition: pc })),
        5,
        Asc.INVALID_FIELD_IN_CDB,
      );
    }
    expect(volume.calls).toEqual([]);
  });
});
