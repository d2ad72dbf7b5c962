import { describe, expect, it } from "vitest";
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import { Asc } from "../asc.js";
import { decodeWriteSame10, decodeWriteSame16 } from "../cdb.js";
import { SenseKey } from "../constants.js";
import type { LunContext, NexusContext } from "../context.js";
import { CheckCondition, checkConditionResult } from "../sense.js";
import { Cdb } from "../testing/cdb-builders.js";
import { command, expectGood, expectSense, pattern, setup } from "../testing/harness.js";
import type { ScsiResult } from "../types.js";
import { WSNZ, writeSameHandler } from "./write-same.js";

describe.each([
  ["(10)", Cdb.writeSame10, 7, 0xffffffffn, decodeWriteSame10],
  ["(16)", Cdb.writeSame16, 10, 2n ** 64n - 1n, decodeWriteSame16],
] as const)("WRITE SAME%s", (_name, build, lengthByte, maxLba, decode) => {
  it("writes the block to every block of the range", async () => {
    const { run, volume } = setup();
    const block = pattern(1, 0x5e);
    const r = await run(build({ lba: 100, blocks: 7 }), block);
    expectGood(r);
    expect(r.dataOutLength).toBe(512);
    expect(volume.peek(100, 7).equals(pattern(7, 0x5e))).toBe(true);
    expect(volume.peek(99, 1).equals(pattern(1, 0))).toBe(true);
    expect(volume.peek(107, 1).equals(pattern(1, 0))).toBe(true);
  });

  it("writes large ranges in 1 MiB chunks", async () => {
    const { run, volume } = setup({ blocks: 1 << 16 });
    expectGood(await run(build({ lba: 0, blocks: 5000 }), pattern(1, 1)));
    expect(volume.calls.map((c) => c.blocks)).toEqual([2048, 2048, 904]);
    expect(volume.peek(4999, 1).equals(pattern(1, 1))).toBe(true);
  });

  it("with UNMAP and a zero block deallocates the range", async () => {
    const { run, volume } = setup();
    expectGood(await run(Cdb.write10({ lba: 0, blocks: 16 }), pattern(16, 0xff)));
    expectGood(await run(build({ lba: 4, blocks: 8, unmap: true }), pattern(1, 0)));
    expect(volume.calls.at(-1)).toEqual({ op: "unmap", lba: 4, blocks: 8 });
    expect(volume.mappedBlocks).toBe(8);
    expect(volume.peek(4, 8).equals(pattern(8, 0))).toBe(true);
  });

  it("with UNMAP deallocates whatever the block holds (SBC-4: a thin LU should deallocate)", async () => {
    const { run, volume } = setup();
    expectGood(await run(Cdb.write10({ lba: 0, blocks: 4 }), pattern(4, 0x11)));
    expectGood(await run(build({ lba: 0, blocks: 2, unmap: true }), pattern(1, 0xaa)));
    expect(volume.calls.at(-1)).toEqual({ op: "unmap", lba: 0, blocks: 2 });
    // LBPRZ=1: the range reads as zeros, not as the pattern.
    expect(volume.peek(0, 2).equals(pattern(2, 0))).toBe(true);
    expect(volume.peek(2, 2).equals(pattern(2, 0x11))).toBe(true);
  });

  it("without UNMAP writes a block of zeros like any other pattern", async () => {
    const { run, volume } = setup();
    expectGood(await run(Cdb.write10({ lba: 0, blocks: 2 }), pattern(2, 0x11)));
    expectGood(await run(build({ lba: 0, blocks: 2 }), pattern(1, 0)));
    expect(volume.calls.at(-1)).toMatchObject({ op: "write", lba: 0, blocks: 2 });
    expect(volume.peek(0, 2).equals(pattern(2, 0))).toBe(true);
  });

  it("refuses more than MAXIMUM WRITE SAME LENGTH blocks", async () => {
    const { run, volume } = setup({ blocks: 1 << 22 });
    if (lengthByte === 10) {
      const over = await run(build({ lba: 0, blocks: 0x10000 }), pattern(1, 0));
      const s = expectSense(over, 5, Asc.INVALID_FIELD_IN_CDB);
      expect(s.fieldPointer).toEqual({ inCdb: true, byte: lengthByte });
    }
    expectGood(await run(build({ lba: 0, blocks: 0xffff, unmap: true }), pattern(1, 0)));
    expect(volume.calls.map((c) => c.op)).toEqual(["unmap"]);
  });

  it("offers NUMBER OF LOGICAL BLOCKS 0 (WSNZ=0 in the Block Limits page)", async () => {
    expect(WSNZ).toBe(false);
    const { run, volume } = setup({ blocks: 1024 });
    const vpd = await run(Cdb.inquiry({ evpd: true, page: 0xb0 }));
    expect(vpd.data![4]! & 0x01).toBe(0);
    expectGood(await run(build({ lba: 1020, blocks: 0 }), pattern(1, 0x33)));
    expect(volume.peek(1020, 4).equals(pattern(4, 0x33))).toBe(true);
  });

  it("refuses NUMBER OF LOGICAL BLOCKS 0 when built with WSNZ=1", async () => {
    const { writeSame, volume } = setupWith(true);
    const s = expectSense(
      await writeSame(build({ lba: 1000, blocks: 0 }), pattern(1, 0)),
      5,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(s.fieldPointer).toEqual({ inCdb: true, byte: lengthByte });
    expect(volume.calls).toEqual([]);
  });

  /** The handler built with this WSNZ, called directly on LUN 0 of a `setup()`. */
  function setupWith(wsnz: boolean, o: { blocks?: number; readOnly?: boolean } = {}) {
    const s = setup(o);
    const handler = writeSameHandler(decode, lengthByte, wsnz);
    const lu: LunContext = {
      nexus: s.nexus as unknown as NexusContext,
      entry: s.view.get(0)!,
      unit: s.target.unitOf(s.volume.id),
    };
    const writeSame = async (cdb: Buffer, dataOut?: Buffer): Promise<ScsiResult> => {
      try {
        return await handler(command(0, cdb, dataOut), lu);
      } catch (err) {
        if (!(err instanceof CheckCondition)) throw err;
        return checkConditionResult(err.sense, err.dataOutLength);
      }
    };
    return { ...s, writeSame };
  }
  const setupWsnz0 = (o: { blocks?: number; readOnly?: boolean } = {}) => setupWith(false, o);

  describe("NUMBER OF LOGICAL BLOCKS 0 (to the end of the medium)", () => {
    it("writes every block from the LBA to the end of the medium", async () => {
      const { writeSame, volume } = setupWsnz0({ blocks: 1024 });
      expectGood(await writeSame(build({ lba: 1000, blocks: 0 }), pattern(1, 0x6b)));
      expect(volume.calls).toEqual([{ op: "write", lba: 1000, blocks: 24, fua: false }]);
      expect(volume.peek(1000, 24).equals(pattern(24, 0x6b))).toBe(true);
      expect(volume.peek(999, 1).equals(pattern(1, 0))).toBe(true);
      expectGood(await writeSame(build({ lba: 1023, blocks: 0 }), pattern(1, 0x6c)));
      expect(volume.peek(1023, 1).equals(pattern(1, 0x6c))).toBe(true);
    });

    it("with UNMAP and a zero block deallocates to the end of the medium", async () => {
      const { run, writeSame, volume } = setupWsnz0({ blocks: 1024 });
      expectGood(await run(Cdb.write10({ lba: 1000, blocks: 24 }), pattern(24, 0xff)));
      expectGood(await writeSame(build({ lba: 1008, blocks: 0, unmap: true }), pattern(1, 0)));
      expect(volume.calls.at(-1)).toEqual({ op: "unmap", lba: 1008, blocks: 16 });
      expect(volume.mappedBlocks).toBe(8);
      expect(volume.peek(1008, 16).equals(pattern(16, 0))).toBe(true);
    });

    it("with UNMAP and any other block deallocates to the end of the medium", async () => {
      // libiscsi WriteSame10.UnmapUntilEnd: FFh blocks written, then UNMAP with an FFh block.
      const { run, writeSame, volume } = setupWsnz0({ blocks: 1024 });
      expectGood(await run(Cdb.write10({ lba: 1020, blocks: 4 }), pattern(4, 0xff)));
      expectGood(await writeSame(build({ lba: 1020, blocks: 0, unmap: true }), pattern(1, 0xff)));
      expect(volume.calls.at(-1)).toEqual({ op: "unmap", lba: 1020, blocks: 4 });
      expect(volume.peek(1020, 4).equals(pattern(4, 0))).toBe(true);
    });

    it("counts the rest of the medium against MAXIMUM WRITE SAME LENGTH", async () => {
      const { writeSame, volume } = setupWsnz0({ blocks: 0x20000 });
      // 0x20000 - 0xffff = 0x10001: from there to the end is exactly FFFFh blocks.
      for (const lba of [0, 0x10000]) {
        const s = expectSense(
          await writeSame(build({ lba, blocks: 0 }), pattern(1, 1)),
          5,
          Asc.INVALID_FIELD_IN_CDB,
        );
        expect(s.fieldPointer).toEqual({ inCdb: true, byte: lengthByte });
      }
      expect(volume.calls).toEqual([]);
      expectGood(await writeSame(build({ lba: 0x10001, blocks: 0, unmap: true }), pattern(1, 0)));
      expect(volume.calls).toEqual([{ op: "unmap", lba: 0x10001, blocks: 0xffff }]);
    });

    it("writes a long range in 1 MiB chunks, one at a time", async () => {
      const { writeSame, volume } = setupWsnz0({ blocks: 0x20000 });
      expectGood(await writeSame(build({ lba: 0x10001, blocks: 0 }), pattern(1, 3)));
      const writes = volume.calls.filter((c) => c.op === "write");
      expect(writes.every((c) => c.blocks! <= 2048)).toBe(true);
      expect(writes.reduce((n, c) => n + c.blocks!, 0)).toBe(0xffff);
      expect(writes[0]?.lba).toBe(0x10001);
      expect(volume.peek(0x1ffff, 1).equals(pattern(1, 3))).toBe(true);
    });

    it("needs an LBA on the medium", async () => {
      const { writeSame, volume } = setupWsnz0({ blocks: 1024 });
      for (const lba of [1024, 1025, maxLba]) {
        expectSense(
          await writeSame(build({ lba, blocks: 0 }), pattern(1, 1)),
          5,
          Asc.LBA_OUT_OF_RANGE,
        );
      }
      expect(volume.calls).toEqual([]);
    });

    it("is refused on read-only mappings", async () => {
      const { writeSame, volume } = setupWsnz0({ readOnly: true });
      expectSense(
        await writeSame(build({ lba: 0, blocks: 0 }), pattern(1, 0)),
        SenseKey.DATA_PROTECT,
        Asc.WRITE_PROTECTED,
      );
      expect(volume.calls).toEqual([]);
    });
  });

  it("refuses ANCHOR (ANC_SUP=0), with or without UNMAP", async () => {
    const { run } = setup();
    for (const unmap of [false, true]) {
      const s = expectSense(
        await run(build({ lba: 0, blocks: 1, anchor: true, unmap }), pattern(1, 0)),
        5,
        Asc.INVALID_FIELD_IN_CDB,
      );
      expect(s.fieldPointer).toEqual({ inCdb: true, byte: 1, bit: 4 });
    }
  });

  it("refuses a Data-Out buffer that is not exactly one block", async () => {
    const { run, volume } = setup();
    for (const bytes of [0, 256, 1024]) {
      const r = await run(build({ lba: 0, blocks: 1, unmap: true }), Buffer.alloc(bytes));
      expectSense(r, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_COMMAND_IU);
      expect(r.dataOutLength).toBe(512);
    }
    expect(volume.calls).toEqual([]);
  });

  it.each([
    [1016, 8, true],
    [1023, 1, true],
    [1024, 1, false],
    [1020, 5, false],
  ])("checks the range (lba %i, blocks %i)", async (lba, blocks, ok) => {
    const { run } = setup({ blocks: 1024 });
    const r = await run(build({ lba, blocks }), pattern(1, 1));
    if (ok) expectGood(r);
    else expectSense(r, 5, Asc.LBA_OUT_OF_RANGE);
    expectSense(
      await run(build({ lba: maxLba, blocks: 1 }), pattern(1, 1)),
      5,
      Asc.LBA_OUT_OF_RANGE,
    );
  });

  it("refuses read-only mappings", async () => {
    const { run, volume } = setup({ readOnly: true });
    expectSense(
      await run(build({ lba: 0, blocks: 1, unmap: true }), pattern(1, 0)),
      SenseKey.DATA_PROTECT,
      Asc.WRITE_PROTECTED,
    );
    expect(volume.calls).toEqual([]);
  });

  it("completes durably when the write cache is disabled", async () => {
    const { run, volume, target } = setup();
    target.unitOf(volume.id).writeCacheEnabled = false;
    expectGood(await run(build({ lba: 0, blocks: 2 }), pattern(1, 1)));
    expect(volume.calls.at(-1)).toMatchObject({ op: "write", fua: true });
    expectGood(await run(build({ lba: 0, blocks: 2, unmap: true }), pattern(1, 0)));
    expect(volume.calls.slice(-2).map((c) => c.op)).toEqual(["unmap", "flush"]);
  });

  it("reports a full pool", async () => {
    const { run, volume } = setup();
    volume.failNext("write", new StorageError(StorageErrorCode.PoolFull, "full"));
    expectSense(
      await run(build({ lba: 0, blocks: 2 }), pattern(1, 1)),
      SenseKey.DATA_PROTECT,
      Asc.SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
    );
  });
});

describe("WRITE SAME(16) NDOB", () => {
  it("needs no Data-Out and unmaps with UNMAP, writes zeros without", async () => {
    const { run, volume } = setup();
    expectGood(await run(Cdb.write10({ lba: 0, blocks: 4 }), pattern(4, 9)));
    expectGood(await run(Cdb.writeSame16({ lba: 0, blocks: 2, ndob: true, unmap: true })));
    expect(volume.calls.at(-1)).toEqual({ op: "unmap", lba: 0, blocks: 2 });
    expectGood(await run(Cdb.writeSame16({ lba: 2, blocks: 2, ndob: true })));
    expect(volume.peek(0, 4).equals(pattern(4, 0))).toBe(true);
    expectSense(
      await run(Cdb.writeSame16({ lba: 0, blocks: 1, ndob: true }), pattern(1, 0)),
      5,
      Asc.INVALID_FIELD_IN_COMMAND_IU,
    );
  });
});
