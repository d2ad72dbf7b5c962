import { describe, expect, it } from "vitest";
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import { Asc } from "../asc.js";
import { SenseKey } from "../constants.js";
import { Cdb } from "../testing/cdb-builders.js";
import { expectGood, expectSense, pattern, setup } from "../testing/harness.js";

/** An UNMAP parameter list (SBC-4) built from (lba, blocks) pairs. */
function unmapList(
  ranges: [number | bigint, number][],
  o: { bdLength?: number; extra?: number } = {},
): Buffer {
  const list = Buffer.alloc(8 + 16 * ranges.length + (o.extra ?? 0));
  list.writeUInt16BE(list.length - 2, 0);
  list.writeUInt16BE(o.bdLength ?? 16 * ranges.length, 2);
  ranges.forEach(([lba, blocks], i) => {
    list.writeBigUInt64BE(BigInt(lba), 8 + 16 * i);
    list.writeUInt32BE(blocks, 16 + 16 * i);
  });
  return list;
}

describe("UNMAP", () => {
  it("deallocates every range of the list", async () => {
    const { run, volume } = setup();
    expectGood(await run(Cdb.write10({ lba: 0, blocks: 64 }), pattern(64, 0xee)));
    const list = unmapList([
      [0, 8],
      [32, 16],
      [63, 1],
    ]);
    const r = await run(Cdb.unmap(list.length), list);
    expectGood(r);
    expect(r.dataOutLength).toBe(list.length);
    expect(volume.calls.filter((c) => c.op === "unmap")).toEqual([
      { op: "unmap", lba: 0, blocks: 8 },
      { op: "unmap", lba: 32, blocks: 16 },
      { op: "unmap", lba: 63, blocks: 1 },
    ]);
    expect(volume.mappedBlocks).toBe(64 - 25);
    expect(volume.peek(32, 16).equals(pattern(16, 0))).toBe(true);
  });

  it("accepts zero-length descriptors, at the end of the LUN too, and no descriptors", async () => {
    const { run, volume } = setup({ blocks: 1024 });
    for (const list of [
      unmapList([[5, 0]]),
      unmapList([[1024, 0]]),
      unmapList([]),
      unmapList([
        [0, 0],
        [0, 0],
      ]),
    ]) {
      expectGood(await run(Cdb.unmap(list.length), list));
    }
    expectGood(await run(Cdb.unmap(0)));
    expect(volume.calls).toEqual([]);
  });

  it("refuses a parameter list of 1..7 bytes", async () => {
    const { run } = setup();
    expectSense(await run(Cdb.unmap(7), Buffer.alloc(7)), 5, Asc.PARAMETER_LIST_LENGTH_ERROR);
  });

  it("ignores an incomplete trailing descriptor and a block descriptor length beyond the list", async () => {
    const { run, volume } = setup();
    const truncated = unmapList([[1, 1]], { extra: 10, bdLength: 26 });
    expectGood(await run(Cdb.unmap(truncated.length), truncated));
    const overstated = unmapList([[2, 1]], { bdLength: 400 });
    expectGood(await run(Cdb.unmap(overstated.length), overstated));
    expect(volume.calls).toEqual([
      { op: "unmap", lba: 1, blocks: 1 },
      { op: "unmap", lba: 2, blocks: 1 },
    ]);
  });

  it("refuses ranges beyond the capacity, before unmapping anything", async () => {
    const { run, volume } = setup({ blocks: 1024 });
    for (const bad of [
      [1024, 1],
      [1000, 25],
      [2n ** 64n - 1n, 1],
    ] as [number | bigint, number][]) {
      const list = unmapList([[0, 8], bad]);
      expectSense(await run(Cdb.unmap(list.length), list), 5, Asc.LBA_OUT_OF_RANGE);
    }
    expect(volume.calls).toEqual([]);
  });

  it("refuses more descriptors or blocks than the Block Limits page allows", async () => {
    const { run } = setup({ blocks: 1 << 24 });
    const many = unmapList(Array.from({ length: 257 }, (_, i) => [i, 1] as [number, number]));
    expectSense(await run(Cdb.unmap(many.length), many), 5, Asc.INVALID_FIELD_IN_PARAMETER_LIST);
    const ok = unmapList(Array.from({ length: 256 }, (_, i) => [i, 1] as [number, number]));
    expectGood(await run(Cdb.unmap(ok.length), ok));
    const big = unmapList([
      [0, 1048576],
      [1048576, 1],
    ]);
    const s = expectSense(
      await run(Cdb.unmap(big.length), big),
      5,
      Asc.INVALID_FIELD_IN_PARAMETER_LIST,
    );
    expect(s.fieldPointer).toEqual({ inCdb: false, byte: 8 + 16 + 8 });
  });

  it("refuses ANCHOR, read-only mappings and short Data-Out", async () => {
    const { run } = setup();
    const list = unmapList([[0, 1]]);
    expectSense(await run(Cdb.unmap(list.length, true), list), 5, Asc.INVALID_FIELD_IN_CDB);
    expectSense(
      await run(Cdb.unmap(list.length), list.subarray(0, 20)),
      5,
      Asc.INVALID_FIELD_IN_COMMAND_IU,
    );
    const ro = setup({ readOnly: true });
    expectSense(
      await ro.run(Cdb.unmap(list.length), list),
      SenseKey.DATA_PROTECT,
      Asc.WRITE_PROTECTED,
    );
  });

  it("flushes after unmapping when the write cache is disabled, and reports failures", async () => {
    const { run, volume, target } = setup();
    target.unitOf(volume.id).writeCacheEnabled = false;
    const list = unmapList([[0, 1]]);
    expectGood(await run(Cdb.unmap(list.length), list));
    expect(volume.calls.map((c) => c.op)).toEqual(["unmap", "flush"]);
    volume.failNext("unmap", new StorageError(StorageErrorCode.NotReady, "closing"));
    expectSense(
      await run(Cdb.unmap(list.length), list),
      SenseKey.NOT_READY,
      Asc.LOGICAL_UNIT_NOT_READY,
    );
  });
});
