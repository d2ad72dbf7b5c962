import { describe, expect, it } from "vitest";
import { Asc } from "../asc.js";
import { SenseKey } from "../constants.js";
import { decodeFixedSense } from "../sense.js";
import { Cdb } from "../testing/cdb-builders.js";
import { expectGood, setup } from "../testing/harness.js";

describe("REQUEST SENSE", () => {
  it("returns NO SENSE when nothing is pending", async () => {
    const { run } = setup();
    const r = await run(Cdb.requestSense());
    expectGood(r);
    expect(r.data?.length).toBe(18);
    expect(decodeFixedSense(r.data!)).toMatchObject({ responseCode: 0x70, key: 0, asc: 0 });
  });

  it("returns and clears a pending unit attention", async () => {
    const { run, target, volume } = setup();
    target.notifyVolumeChanged(volume.id, "capacity-changed");
    const first = decodeFixedSense((await run(Cdb.requestSense())).data!);
    expect(first).toMatchObject({
      key: SenseKey.UNIT_ATTENTION,
      asc: Asc.CAPACITY_DATA_HAS_CHANGED,
    });
    expect(decodeFixedSense((await run(Cdb.requestSense())).data!).key).toBe(0);
    expectGood(await run(Cdb.testUnitReady()));
  });

  it("returns descriptor format sense data with DESC=1", async () => {
    const { run, target, volume } = setup();
    target.notifyVolumeChanged(volume.id, "mode-changed");
    const d = (await run(Cdb.requestSense(252, true))).data!;
    expect([...d]).toEqual([0x72, 0x06, 0x2a, 0x01, 0, 0, 0, 0]);
  });

  it("honours the allocation length", async () => {
    const { run } = setup();
    expect((await run(Cdb.requestSense(8))).data?.length).toBe(8);
    expect((await run(Cdb.requestSense(0))).data?.length).toBe(0);
  });

  it("reports LOGICAL UNIT NOT SUPPORTED as data for a LUN outside the view", async () => {
    const { run } = setup();
    const r = await run(Cdb.requestSense(), undefined, 9);
    expectGood(r);
    expect(decodeFixedSense(r.data!)).toMatchObject({
      key: SenseKey.ILLEGAL_REQUEST,
      asc: Asc.LOGICAL_UNIT_NOT_SUPPORTED,
    });
  });
});
