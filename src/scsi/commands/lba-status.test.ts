import { describe, expect, it } from "vitest";
import { Asc } from "../asc.js";
import { Cdb } from "../testing/cdb-builders.js";
import { expectGood, expectSense, pattern, setup } from "../testing/harness.js";

function parse(d: Buffer) {
  const length = d.readUInt32BE(0);
  const descriptors: { lba: number; blocks: number; status: number }[] = [];
  for (let at = 8; at + 16 <= d.length; at += 16) {
    descriptors.push({
      lba: Number(d.readBigUInt64BE(at)),
      blocks: d.readUInt32BE(at + 8),
      status: d[at + 12]! & 0x0f,
    });
  }
  return { length, descriptors };
}

describe("GET LBA STATUS", () => {
  it("describes mapped and deallocated extents from the requested LBA", async () => {
    const { run } = setup({ blocks: 100 });
    expectGood(await run(Cdb.write10({ lba: 10, blocks: 5 }), pattern(5, 1)));
    const r = await run(Cdb.getLbaStatus(8));
    expectGood(r);
    const p = parse(r.data!);
    expect(p.descriptors).toEqual([
      { lba: 8, blocks: 2, status: 1 },
      { lba: 10, blocks: 5, status: 0 },
      { lba: 15, blocks: 85, status: 1 },
    ]);
    expect(p.length).toBe(4 + 3 * 16);
  });

  it("returns as many descriptors as the allocation length holds (at least one computed)", async () => {
    const { run } = setup({ blocks: 100 });
    for (let lba = 0; lba < 100; lba += 2) {
      expectGood(await run(Cdb.write10({ lba, blocks: 1 }), pattern(1, 1)));
    }
    const one = await run(Cdb.getLbaStatus(0, 24));
    expect(one.data?.length).toBe(24);
    expect(parse(one.data!).descriptors).toEqual([{ lba: 0, blocks: 1, status: 0 }]);
    const short = await run(Cdb.getLbaStatus(0, 16));
    expect(short.data?.length).toBe(16);
    expect(short.data?.readUInt32BE(0)).toBe(4 + 16);
    const many = parse((await run(Cdb.getLbaStatus(0, 4096))).data!);
    expect(many.descriptors.length).toBe(64);
    expect(many.descriptors[63]).toEqual({ lba: 63, blocks: 1, status: 1 });
  });

  it("reports the last block, and refuses an LBA beyond it", async () => {
    const { run } = setup({ blocks: 100 });
    expect(parse((await run(Cdb.getLbaStatus(99))).data!).descriptors).toEqual([
      { lba: 99, blocks: 1, status: 1 },
    ]);
    expectSense(await run(Cdb.getLbaStatus(100)), 5, Asc.LBA_OUT_OF_RANGE);
    expectSense(await run(Cdb.getLbaStatus(2n ** 64n - 1n)), 5, Asc.LBA_OUT_OF_RANGE);
  });

  it("sees UNMAP take effect", async () => {
    const { run } = setup({ blocks: 64 });
    expectGood(await run(Cdb.write10({ lba: 0, blocks: 16 }), pattern(16, 1)));
    expectGood(await run(Cdb.writeSame10({ lba: 0, blocks: 8, unmap: true }), pattern(1, 0)));
    expect(parse((await run(Cdb.getLbaStatus(0, 24))).data!).descriptors).toEqual([
      { lba: 0, blocks: 8, status: 1 },
    ]);
    expect(parse((await run(Cdb.getLbaStatus(8, 24))).data!).descriptors).toEqual([
      { lba: 8, blocks: 8, status: 0 },
    ]);
  });
});
