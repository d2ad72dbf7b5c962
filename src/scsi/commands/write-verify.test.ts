import { describe, expect, it } from "vitest";
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import { Asc } from "../asc.js";
import { SenseKey } from "../constants.js";
import { CopyCdb } from "../testing/copy-builders.js";
import { command, expectGood, expectSense, pattern, setup } from "../testing/harness.js";

describe.each([
  ["(10)", CopyCdb.writeVerify10, 7, 0xffffffff],
  ["(12)", CopyCdb.writeVerify12, 6, 0xffffffff],
  ["(16)", CopyCdb.writeVerify16, 10, 2 ** 53],
] as const)("WRITE AND VERIFY%s", (_name, build, lengthByte, farLba) => {
  it("BYTCHK=0 writes to the medium, then reads the blocks back", async () => {
    const { run, volume } = setup({ trackDurability: true });
    const r = await run(build({ lba: 8, blocks: 2 }), pattern(2, 0x5a));
    expectGood(r);
    expect(r.dataOutLength).toBe(1024);
    expect(volume.readDurable(8, 2).equals(pattern(2, 0x5a))).toBe(true);
    expect(volume.calls).toEqual([
      { op: "write", lba: 8, blocks: 2, fua: true },
      { op: "read", lba: 8, blocks: 2 },
    ]);
  });

  it("BYTCHK=1 compares what was written with the Data-Out buffer", async () => {
    const { run, volume } = setup();
    expectGood(await run(build({ lba: 0, blocks: 3, bytchk: 1 }), pattern(3, 0x11)));
    expect(volume.peek(0, 3).equals(pattern(3, 0x11))).toBe(true);
  });

  it("BYTCHK=1 reports a medium that returns other data as MISCOMPARE", async () => {
    const { run, volume } = setup();
    const original = volume.read.bind(volume);
    volume.read = async (lba, blocks) => {
      const data = await original(lba, blocks);
      data[700] = 0xee;
      return data;
    };
    const s = expectSense(
      await run(build({ lba: 0, blocks: 2, bytchk: 1 }), pattern(2, 0x11)),
      SenseKey.MISCOMPARE,
      Asc.MISCOMPARE_DURING_VERIFY,
    );
    expect(s.information).toBe(700);
  });

  it("reports a block that cannot be read back as MEDIUM ERROR", async () => {
    const { run, volume } = setup();
    volume.failNext("read", new StorageError(StorageErrorCode.MediumError, "tag", 9));
    const s = expectSense(
      await run(build({ lba: 9, blocks: 1 }), pattern(1, 1)),
      SenseKey.MEDIUM_ERROR,
      Asc.UNRECOVERED_READ_ERROR,
    );
    expect(s.information).toBe(9);
  });

  it.each([2, 3])("BYTCHK=%i is reserved", async (bytchk) => {
    const { run, volume } = setup();
    const s = expectSense(
      await run(build({ lba: 0, blocks: 1, bytchk }), pattern(1, 1)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(s.fieldPointer).toEqual({ inCdb: true, byte: 1, bit: 2 });
    expect(volume.calls).toEqual([]);
  });

  it("checks the transfer length, the range and write protection", async () => {
    const { run } = setup({ blocks: 1 << 20 });
    const s = expectSense(
      await run(build({ lba: 0, blocks: 32769 })),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(s.fieldPointer).toEqual({ inCdb: true, byte: lengthByte });
    expectSense(
      await run(build({ lba: farLba, blocks: 1 }), pattern(1, 0)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.LBA_OUT_OF_RANGE,
    );
    const ro = setup({ readOnly: true });
    expectSense(
      await ro.run(build({ lba: 0, blocks: 1 }), pattern(1, 0)),
      SenseKey.DATA_PROTECT,
      Asc.WRITE_PROTECTED,
    );
  });

  it("TRANSFER LENGTH 0 writes nothing", async () => {
    const { run, volume } = setup();
    expectGood(await run(build({ lba: 0, blocks: 0 })));
    expect(volume.calls).toEqual([]);
  });

  it("handles Data-Out residuals as WRITE does", async () => {
    const { nexus, volume } = setup();
    await volume.write(0, pattern(2, 0x61));
    // EDTL one block for two: the first block is written and verified, the second untouched.
    const r = await nexus.execute(command(0, build({ lba: 0, blocks: 2 }), pattern(1, 0x62)));
    expectGood(r);
    expect(r.dataOutLength).toBe(1024);
    expect(volume.peek(0, 2).equals(Buffer.concat([pattern(1, 0x62), pattern(1, 0x61)]))).toBe(
      true,
    );
    // A partial block is refused.
    expectSense(
      await nexus.execute(command(0, build({ lba: 0, blocks: 1 }), Buffer.alloc(200))),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_COMMAND_IU,
    );
  });

  it("accepts DPO and refuses WRPROTECT", async () => {
    const { run } = setup();
    expectGood(await run(build({ lba: 0, blocks: 1, dpo: true }), pattern(1, 0)));
    expectSense(
      await run(build({ lba: 0, blocks: 1, protect: 2 }), pattern(1, 0)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
  });
});
