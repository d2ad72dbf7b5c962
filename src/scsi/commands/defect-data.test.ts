import { describe, expect, it } from "vitest";
import { Asc } from "../asc.js";
import { SenseKey } from "../constants.js";
import { CopyCdb } from "../testing/copy-builders.js";
import { expectGood, expectSense, setup } from "../testing/harness.js";

describe("READ DEFECT DATA (10)/(12)", () => {
  it("(10): a 4-byte header, empty list, in the requested format", async () => {
    const { run } = setup();
    for (const format of [0, 3, 4, 5, 6]) {
      const r = await run(CopyCdb.readDefectData10({ plist: true, glist: true, format }));
      expectGood(r);
      expect([...r.data!]).toEqual([0, 0x18 | format, 0, 0]);
    }
    const none = await run(CopyCdb.readDefectData10());
    expect([...none.data!]).toEqual([0, 0, 0, 0]);
    const glist = await run(CopyCdb.readDefectData10({ glist: true, format: 5 }));
    expect([...glist.data!]).toEqual([0, 0x08 | 5, 0, 0]);
  });

  it("(12): an 8-byte header, whatever the ADDRESS DESCRIPTOR INDEX", async () => {
    const { run } = setup();
    const r = await run(CopyCdb.readDefectData12({ plist: true, format: 4, index: 99 }));
    expectGood(r);
    expect([...r.data!]).toEqual([0, 0x10 | 4, 0, 0, 0, 0, 0, 0]);
  });

  it("honours the allocation length", async () => {
    const { run } = setup();
    const r = await run(CopyCdb.readDefectData12({ glist: true, allocationLength: 2 }));
    expect([...r.data!]).toEqual([0, 0x08]);
    const zero = await run(CopyCdb.readDefectData10({ allocationLength: 0 }));
    expect(zero.data!.length).toBe(0);
  });

  it("refuses the reserved format 111b", async () => {
    const { run } = setup();
    const s10 = expectSense(
      await run(CopyCdb.readDefectData10({ format: 7 })),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(s10.fieldPointer).toEqual({ inCdb: true, byte: 2, bit: 2 });
    const s12 = expectSense(
      await run(CopyCdb.readDefectData12({ format: 7 })),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(s12.fieldPointer).toEqual({ inCdb: true, byte: 1, bit: 2 });
  });

  it("works on read-only mappings and touches no block", async () => {
    const { run, volume } = setup({ readOnly: true });
    expectGood(await run(CopyCdb.readDefectData10({ plist: true })));
    expect(volume.calls).toEqual([]);
  });
});
