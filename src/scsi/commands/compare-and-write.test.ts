import { describe, expect, it } from "vitest";
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import { Asc } from "../asc.js";
import { SenseKey } from "../constants.js";
import { CopyCdb } from "../testing/copy-builders.js";
import { expectGood, expectSense, pattern, setup } from "../testing/harness.js";
import { decodeCompareAndWrite } from "./compare-and-write.js";

const caw = CopyCdb.compareAndWrite;

/** Verify data then write data, `blocks` blocks each. */
function halves(blocks: number, verify: number, write: number, blockSize = 512): Buffer {
  return Buffer.concat([pattern(blocks, verify, blockSize), pattern(blocks, write, blockSize)]);
}

describe("COMPARE AND WRITE (SBC-4 5.2)", () => {
  it.each([512, 4096])("writes when the blocks match (%i-byte blocks)", async (blockSize) => {
    const { run, volume } = setup({ blockSize });
    volume.resize(1024);
    await volume.write(10, pattern(3, 0x41, blockSize));
    const r = await run(caw({ lba: 10, blocks: 3 }), halves(3, 0x41, 0x42, blockSize));
    expectGood(r);
    expect(r.dataOutLength).toBe(6 * blockSize);
    expect(volume.peek(10, 3).equals(pattern(3, 0x42, blockSize))).toBe(true);
  });

  it("reports MISCOMPARE with the offset of the first differing byte and writes nothing", async () => {
    const { run, volume } = setup();
    await volume.write(0, pattern(4, 0x41));
    const data = halves(4, 0x41, 0x42);
    data[4 * 512 - 27] = 0x43; // byte 27 from the end of the verify half
    const s = expectSense(
      await run(caw({ lba: 0, blocks: 4 }), data),
      SenseKey.MISCOMPARE,
      Asc.MISCOMPARE_DURING_VERIFY,
    );
    expect(s.valid).toBe(true);
    expect(s.information).toBe(4 * 512 - 27);
    expect(volume.peek(0, 4).equals(pattern(4, 0x41))).toBe(true);
    expect(volume.calls.filter((c) => c.op === "write")).toHaveLength(1); // the setup write only
  });

  it("miscompares against unwritten blocks (they read as zeros)", async () => {
    const { run, volume } = setup();
    const s = expectSense(
      await run(caw({ lba: 7, blocks: 1 }), halves(1, 0x25, 0x42)),
      SenseKey.MISCOMPARE,
      Asc.MISCOMPARE_DURING_VERIFY,
    );
    expect(s.information).toBe(0);
    expect(volume.mappedBlocks).toBe(0);
  });

  it("NUMBER OF LOGICAL BLOCKS 0 does nothing and is not an error", async () => {
    const { run, volume } = setup();
    const r = await run(caw({ lba: 3, blocks: 0 }));
    expectGood(r);
    expect(r.dataOutLength).toBe(0);
    expect(volume.calls).toEqual([]);
  });

  it("accepts up to MAXIMUM COMPARE AND WRITE LENGTH, 255 blocks (all an 8-bit field holds)", async () => {
    const { run, volume } = setup({ blocks: 4096 });
    expectGood(await run(caw({ lba: 0, blocks: 255 }), halves(255, 0, 1)));
    expect(volume.peek(254, 1).equals(pattern(1, 1))).toBe(true);
  });

  it.each([
    ["too short", 1, 1],
    ["too long", 3, 2],
    ["for 0 blocks (256 blocks encoded in 8 bits)", 0, 512],
  ])(
    "refuses a Data-Out buffer %s with INVALID FIELD IN CDB and touches nothing",
    async (_what, blocks, sentBlocks) => {
      const { run, volume } = setup();
      const s = expectSense(
        await run(caw({ lba: 0, blocks }), pattern(sentBlocks, 0)),
        SenseKey.ILLEGAL_REQUEST,
        Asc.INVALID_FIELD_IN_CDB,
      );
      expect(s.fieldPointer).toEqual({ inCdb: true, byte: 13 });
      expect(volume.calls).toEqual([]);
    },
  );

  it("checks the range before anything else", async () => {
    const { run } = setup({ blocks: 100 });
    expectSense(
      await run(caw({ lba: 99, blocks: 2 }), halves(2, 0, 0)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.LBA_OUT_OF_RANGE,
    );
    expectSense(
      await run(caw({ lba: 2n ** 63n, blocks: 1 }), halves(1, 0, 0)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.LBA_OUT_OF_RANGE,
    );
    expectGood(await run(caw({ lba: 99, blocks: 1 }), halves(1, 0, 1)));
  });

  it("is refused on a read-only mapping", async () => {
    const { run, volume } = setup({ readOnly: true });
    expectSense(
      await run(caw({ lba: 0, blocks: 1 }), halves(1, 0, 1)),
      SenseKey.DATA_PROTECT,
      Asc.WRITE_PROTECTED,
    );
    expect(volume.calls).toEqual([]);
  });

  it("writes through with FUA, or when the write cache is disabled; accepts DPO", async () => {
    const { run, volume, target } = setup({ trackDurability: true });
    expectGood(await run(caw({ lba: 0, blocks: 1, fua: true, dpo: true }), halves(1, 0, 1)));
    expect(volume.readDurable(0, 1).equals(pattern(1, 1))).toBe(true);
    expectGood(await run(caw({ lba: 1, blocks: 1 }), halves(1, 0, 2)));
    expect(volume.readDurable(1, 1).equals(pattern(1, 0))).toBe(true);
    // WCE=0 through the Caching mode page: every write is forced.
    target.unitOf(volume.id).writeCacheEnabled = false;
    expectGood(await run(caw({ lba: 2, blocks: 1 }), halves(1, 0, 3)));
    expect(volume.readDurable(2, 1).equals(pattern(1, 3))).toBe(true);
  });

  it("refuses WRPROTECT through its usage map", async () => {
    const { run } = setup();
    const s = expectSense(
      await run(caw({ lba: 0, blocks: 1, protect: 1 }), halves(1, 0, 0)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(s.fieldPointer).toEqual({ inCdb: true, byte: 1, bit: 5 });
  });

  it("reports a failing read as the volume's error, and writes nothing", async () => {
    const { run, volume } = setup();
    volume.failNext("read", new StorageError(StorageErrorCode.MediumError, "bad", 4));
    const s = expectSense(
      await run(caw({ lba: 4, blocks: 1 }), halves(1, 0, 1)),
      SenseKey.MEDIUM_ERROR,
      Asc.UNRECOVERED_READ_ERROR,
    );
    expect(s.information).toBe(4);
    expect(volume.mappedBlocks).toBe(0);
  });

  it("decodes its CDB", () => {
    expect(decodeCompareAndWrite(caw({ lba: 0x1_0000_0002, blocks: 9, fua: true }))).toEqual({
      lba: 0x1_0000_0002,
      blocks: 9,
      dpo: false,
      fua: true,
    });
  });
});
