import { describe, expect, it } from "vitest";
import { Asc } from "../asc.js";
import { SenseKey } from "../constants.js";
import { Cdb } from "../testing/cdb-builders.js";
import { expectGood, expectSense, setup } from "../testing/harness.js";
import { STANDARD_INQUIRY_LENGTH, VERSION_DESCRIPTORS } from "./inquiry.js";

describe("standard INQUIRY data (SPC-4 6.6.2)", () => {
  it("describes an SPC-4 direct access block device", async () => {
    const { run } = setup();
    const r = await run(Cdb.inquiry({ allocationLength: 255 }));
    expectGood(r);
    const d = r.data!;
    expect(d.length).toBe(STANDARD_INQUIRY_LENGTH);
    expect(d[0]).toBe(0x00); // qualifier 000b, type 00h
    expect(d[1]).toBe(0x00); // not removable
    expect(d[2]).toBe(0x06); // SPC-4
    expect(d[3]! & 0x0f).toBe(2); // RESPONSE DATA FORMAT
    expect(d[3]! & 0x10).toBe(0x10); // HISUP
    expect(d[3]! & 0xc0).toBe(0); // AERC/TRMTSK clear
    expect(d[4]).toBe(d.length - 5); // ADDITIONAL LENGTH
    expect((d[5]! >> 4) & 3).toBe(0); // TPGS
    expect(d[5]! & 0x08).toBe(0x08); // 3PC: EXTENDED COPY is supported
    expect(d[5]! & 0x01).toBe(0); // PROTECT
    expect(d[7]! & 0x02).toBe(0x02); // CMDQUE
    expect(d.subarray(8, 16).toString("ascii")).toBe("SANMUX  ");
    expect(d.subarray(16, 32).toString("ascii")).toBe("sanmux volume   ");
    expect(d.subarray(32, 36).toString("ascii")).toBe("0.1 ");
    const versions = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => d.readUInt16BE(58 + 2 * i));
    expect(versions).toEqual([...VERSION_DESCRIPTORS, 0, 0, 0]);
    expect(versions.slice(0, 5)).toEqual([0x00a0, 0x0960, 0x0460, 0x04c0, 0x0600]);
  });

  it("honours every allocation length from 0 to 300", async () => {
    const { run } = setup();
    const full = (await run(Cdb.inquiry({ allocationLength: 4096 }))).data!;
    for (let n = 0; n <= 300; n++) {
      const r = await run(Cdb.inquiry({ allocationLength: n }));
      expectGood(r);
      expect(r.data?.equals(full.subarray(0, Math.min(n, full.length)))).toBe(true);
    }
  });

  it("refuses a page code without EVPD, and the obsolete CMDDT bit", async () => {
    const { run } = setup();
    const s = expectSense(await run(Cdb.inquiry({ page: 0x80 })), 5, Asc.INVALID_FIELD_IN_CDB);
    expect(s.fieldPointer).toEqual({ inCdb: true, byte: 2 });
    const cmddt = Cdb.inquiry();
    cmddt[1] = 0x02;
    expectSense(await run(cmddt), 5, Asc.INVALID_FIELD_IN_CDB);
  });

  it("answers for a LUN outside the view with qualifier 011b / type 1Fh", async () => {
    const { run } = setup();
    const r = await run(Cdb.inquiry(), undefined, 7);
    expectGood(r);
    expect(r.data?.[0]).toBe(0x7f);
    expect(r.data?.[2]).toBe(0x06);
  });

  it("serves only the supported pages list for a LUN outside the view", async () => {
    const { run } = setup();
    const r = await run(Cdb.inquiry({ evpd: true, page: 0 }), undefined, 7);
    expect([...r.data!]).toEqual([0x7f, 0x00, 0x00, 0x01, 0x00]);
    expectSense(
      await run(Cdb.inquiry({ evpd: true, page: 0x83 }), undefined, 7),
      5,
      Asc.INVALID_FIELD_IN_CDB,
    );
  });

  it("does not report or clear a pending unit attention", async () => {
    const { run, target, volume } = setup();
    target.notifyVolumeChanged(volume.id, "capacity-changed");
    expectGood(await run(Cdb.inquiry()));
    expectSense(
      await run(Cdb.testUnitReady()),
      SenseKey.UNIT_ATTENTION,
      Asc.CAPACITY_DATA_HAS_CHANGED,
    );
    expectGood(await run(Cdb.testUnitReady()));
  });
});
