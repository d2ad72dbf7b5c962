import { describe, expect, it } from "vitest";
import { Asc } from "../asc.js";
import { SenseKey } from "../constants.js";
import { CopyCdb } from "../testing/copy-builders.js";
import { command, expectGood, expectSense, pattern, setup } from "../testing/harness.js";
import { atomicLimits } from "./write-atomic.js";

const atomic = CopyCdb.writeAtomic16;

describe("WRITE ATOMIC (16)", () => {
  it("limits atomic writes to one 4 KiB grain, aligned on a grain", () => {
    expect(atomicLimits(512)).toEqual({
      maxTransferLength: 8,
      alignment: 8,
      granularity: 0,
      maxTransferLengthWithBoundary: 0,
      maxBoundarySize: 0,
    });
    expect(atomicLimits(4096)).toMatchObject({ maxTransferLength: 1, alignment: 1 });
  });

  it.each([1, 2, 8])("writes %i block(s) inside one grain", async (blocks) => {
    const { run, volume } = setup();
    const r = await run(atomic({ lba: 16, blocks }), pattern(blocks, 0x3c));
    expectGood(r);
    expect(r.dataOutLength).toBe(blocks * 512);
    expect(volume.peek(16, blocks).equals(pattern(blocks, 0x3c))).toBe(true);
  });

  it("refuses a write longer than a grain or not aligned on one", async () => {
    const { run, volume } = setup();
    const long = expectSense(
      await run(atomic({ lba: 0, blocks: 9 }), pattern(9, 0)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(long.fieldPointer).toEqual({ inCdb: true, byte: 12 });
    const misaligned = expectSense(
      await run(atomic({ lba: 1, blocks: 1 }), pattern(1, 0)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(misaligned.fieldPointer).toEqual({ inCdb: true, byte: 2 });
    expect(volume.calls).toEqual([]);
  });

  it("on 4 KiB blocks, one block anywhere", async () => {
    const { run } = setup({ blockSize: 4096 });
    expectGood(await run(atomic({ lba: 3, blocks: 1 }), pattern(1, 1, 4096)));
    expectSense(
      await run(atomic({ lba: 4, blocks: 2 }), pattern(2, 1, 4096)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
  });

  it("reports LOGICAL BLOCK ADDRESS OUT OF RANGE before the atomic limits", async () => {
    const { run } = setup({ blocks: 1024 });
    for (const [lba, blocks] of [
      [1023, 2],
      [1000, 48],
      [2n ** 63n, 1],
      [1024 + 8, 0],
    ] as const) {
      expectSense(
        await run(atomic({ lba, blocks }), pattern(blocks, 0)),
        SenseKey.ILLEGAL_REQUEST,
        Asc.LBA_OUT_OF_RANGE,
      );
    }
  });

  it("TRANSFER LENGTH 0 writes nothing, aligned or not", async () => {
    const { run, volume } = setup();
    expectGood(await run(atomic({ lba: 0, blocks: 0 })));
    expectGood(await run(atomic({ lba: 3, blocks: 0 })));
    expect(volume.calls).toEqual([]);
  });

  it("refuses an ATOMIC BOUNDARY (not supported) and WRPROTECT", async () => {
    const { run } = setup();
    const s = expectSense(
      await run(atomic({ lba: 0, blocks: 8, boundary: 4 }), pattern(8, 0)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(s.fieldPointer?.byte).toBe(11);
    expectSense(
      await run(atomic({ lba: 0, blocks: 8, protect: 1 }), pattern(8, 0)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
  });

  it("needs every block of Data-Out: a short buffer writes nothing", async () => {
    const { nexus, volume } = setup();
    const s = expectSense(
      await nexus.execute(command(0, atomic({ lba: 0, blocks: 8 }), pattern(4, 1))),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_COMMAND_IU,
    );
    expect(s.key).toBe(SenseKey.ILLEGAL_REQUEST);
    expect(volume.calls).toEqual([]);
  });

  it("is refused on a read-only mapping; FUA makes it durable", async () => {
    const ro = setup({ readOnly: true });
    expectSense(
      await ro.run(atomic({ lba: 0, blocks: 1 }), pattern(1, 0)),
      SenseKey.DATA_PROTECT,
      Asc.WRITE_PROTECTED,
    );
    const { run, volume } = setup({ trackDurability: true });
    expectGood(await run(atomic({ lba: 8, blocks: 8, fua: true, dpo: true }), pattern(8, 9)));
    expect(volume.readDurable(8, 8).equals(pattern(8, 9))).toBe(true);
  });
});
