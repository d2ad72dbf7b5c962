import { describe, expect, it } from "vitest";
import { Asc } from "../asc.js";
import { Cdb } from "../testing/cdb-builders.js";
import { expectGood, expectSense, setup } from "../testing/harness.js";
import { physicalBlockExponent } from "./capacity.js";

describe("READ CAPACITY (10)", () => {
  it.each([
    [1024, 512, 1023],
    [1, 4096, 0],
    [2 ** 32 - 1, 512, 0xfffffffe],
    [2 ** 32, 512, 0xffffffff],
    [2 ** 40, 512, 0xffffffff],
  ])("%i blocks of %i bytes → last LBA %i", async (blocks, blockSize, last) => {
    const { run } = setup({ blocks, blockSize });
    const r = await run(Cdb.readCapacity10());
    expectGood(r);
    expect(r.data?.length).toBe(8);
    expect(r.data?.readUInt32BE(0)).toBe(last);
    expect(r.data?.readUInt32BE(4)).toBe(blockSize);
  });

  it("needs the obsolete LBA field zero unless PMI is set", async () => {
    const { run } = setup();
    expectSense(await run(Cdb.readCapacity10({ lba: 5 })), 5, Asc.INVALID_FIELD_IN_CDB);
    expectGood(await run(Cdb.readCapacity10({ lba: 5, pmi: true })));
  });
});

describe("READ CAPACITY (16)", () => {
  it("reports 64-bit capacity, thin provisioning and the physical block", async () => {
    const { run } = setup({ blocks: 2 ** 40 });
    const r = await run(Cdb.readCapacity16());
    expectGood(r);
    const d = r.data!;
    expect(d.length).toBe(32);
    expect(d.readBigUInt64BE(0)).toBe(2n ** 40n - 1n);
    expect(d.readUInt32BE(8)).toBe(512);
    expect(d[12]! & 0x01).toBe(0); // PROT_EN
    expect(d[13]! & 0x0f).toBe(0); // the test volume writes single blocks: 1 per physical block
    expect(d[14]! & 0x80).toBe(0x80); // LBPME
    expect(d[14]! & 0x40).toBe(0x40); // LBPRZ
    expect(d.readUInt16BE(14) & 0x3fff).toBe(0); // LOWEST ALIGNED LBA
  });

  it("has exponent 0 for 4096-byte blocks", async () => {
    const { run } = setup({ blockSize: 4096 });
    expect((await run(Cdb.readCapacity16())).data?.[13]).toBe(0);
    expect(physicalBlockExponent(512)).toBe(0);
    expect(physicalBlockExponent(512, 4096)).toBe(3);
    expect(physicalBlockExponent(4096, 4096)).toBe(0);
  });

  it.each([0, 1, 12, 31, 32, 64])("honours allocation length %i", async (n) => {
    const { run } = setup();
    const r = await run(Cdb.readCapacity16(n));
    expectGood(r);
    expect(r.data?.length).toBe(Math.min(n, 32));
  });

  it("refuses an unknown SERVICE ACTION IN(16) service action", async () => {
    const { run } = setup();
    const cdb = Cdb.readCapacity16();
    cdb[1] = 0x11;
    const s = expectSense(await run(cdb), 5, Asc.INVALID_FIELD_IN_CDB);
    expect(s.fieldPointer).toEqual({ inCdb: true, byte: 1, bit: 4 });
  });
});
