import { describe, expect, it } from "vitest";
import { Asc } from "./asc.js";
import { ScsiStatus, SenseKey } from "./constants.js";
import { ScsiTarget } from "./target.js";
import { Cdb } from "./testing/cdb-builders.js";
import {
  command,
  exec,
  expectGood,
  expectSense,
  identity,
  lunEntry,
  MutableView,
  pattern,
  setup,
  TEST_INFO,
} from "./testing/harness.js";
import { MemoryVolume } from "./testing/memory-volume.js";

const UA = SenseKey.UNIT_ATTENTION;

/** A target with one volume mapped by three nexuses (two initiators), and an unrelated one. */
function shared() {
  const target = new ScsiTarget(TEST_INFO);
  const volume = new MemoryVolume({ blocks: 100 });
  const other = new MemoryVolume({ blocks: 100 });
  const a1 = target.openNexus(
    identity({ initiatorName: "iqn.a" }),
    new MutableView([lunEntry(0, volume)]),
  );
  const a2 = target.openNexus(
    identity({ initiatorName: "iqn.a" }),
    new MutableView([lunEntry(0, volume)]),
  );
  const b = target.openNexus(
    identity({ initiatorName: "iqn.b" }),
    new MutableView([lunEntry(2, volume), lunEntry(3, other)]),
  );
  const c = target.openNexus(
    identity({ initiatorName: "iqn.c" }),
    new MutableView([lunEntry(0, other)]),
  );
  return { target, volume, other, a1, a2, b, c };
}

describe("command routing", () => {
  it("raises no unit attention when a nexus opens", async () => {
    const { run } = setup();
    expectGood(await run(Cdb.testUnitReady()));
    expectGood(await run(Cdb.read10({ lba: 0, blocks: 1 })));
  });

  it("answers LOGICAL UNIT NOT SUPPORTED outside the view, except INQUIRY/REPORT LUNS/REQUEST SENSE", async () => {
    const { run } = setup();
    for (const cdb of [
      Cdb.testUnitReady(),
      Cdb.read10({ lba: 0, blocks: 1 }),
      Cdb.readCapacity10(),
      Buffer.from([0xff, 0, 0, 0, 0, 0]),
    ]) {
      expectSense(
        await run(cdb, undefined, 5),
        SenseKey.ILLEGAL_REQUEST,
        Asc.LOGICAL_UNIT_NOT_SUPPORTED,
      );
    }
    for (const cdb of [Cdb.inquiry(), Cdb.reportLuns(), Cdb.requestSense()])
      expectGood(await run(cdb, undefined, 5));
    // decodeLun() answers -1 for LUN structures we never hand out.
    expectSense(await run(Cdb.testUnitReady(), undefined, -1), 5, Asc.LOGICAL_UNIT_NOT_SUPPORTED);
  });

  it("answers INVALID COMMAND OPERATION CODE for opcodes it does not know", async () => {
    const { run } = setup();
    for (const opcode of [0x01, 0x04, 0x3b, 0x3c, 0x4c, 0x7f, 0xc0, 0xff]) {
      const s = expectSense(
        await run(Buffer.from([opcode, 0, 0, 0, 0, 0])),
        5,
        Asc.INVALID_COMMAND_OPERATION_CODE,
      );
      expect(s.fieldPointer).toEqual({ inCdb: true, byte: 0, bit: 7 });
    }
  });

  it("refuses NACA and LINK in the CONTROL byte", async () => {
    const { run } = setup();
    for (const control of [0x04, 0x01]) {
      const cdb = Cdb.read10({ lba: 0, blocks: 1 });
      cdb[9] = control;
      const s = expectSense(await run(cdb), 5, Asc.INVALID_FIELD_IN_CDB);
      expect(s.fieldPointer?.byte).toBe(9);
    }
  });

  it("refuses a CDB shorter than the command's length", async () => {
    const { nexus } = setup();
    const r = await nexus.execute({
      lun: 0,
      cdb: Cdb.read10({ lba: 0, blocks: 1 }).subarray(0, 6),
      dataOut: Buffer.alloc(0),
      expectedLength: 0,
      taskAttribute: 1,
    });
    expectSense(r, 5, Asc.INVALID_FIELD_IN_CDB);
    const empty = await nexus.execute({
      lun: 0,
      cdb: Buffer.alloc(0),
      dataOut: Buffer.alloc(0),
      expectedLength: 0,
      taskAttribute: 1,
    });
    expectSense(empty, 5, Asc.INVALID_COMMAND_OPERATION_CODE);
  });

  it("never rejects: a synchronous failure below becomes HARDWARE ERROR and is logged", async () => {
    const { nexus, volume, warnings } = setup();
    volume.blockCount = () => {
      throw new Error("catalog unavailable");
    };
    expectSense(
      await nexus.execute(command(0, Cdb.readCapacity10())),
      SenseKey.HARDWARE_ERROR,
      Asc.INTERNAL_TARGET_FAILURE,
    );
    expect(warnings.length).toBe(1);
  });

  it("follows view changes: removed LUNs disappear, new ones work", async () => {
    const { run, view, volume } = setup();
    const added = new MemoryVolume({ blocks: 10 });
    view.set([lunEntry(1, added)]);
    expectSense(await run(Cdb.testUnitReady(), undefined, 0), 5, Asc.LOGICAL_UNIT_NOT_SUPPORTED);
    expectGood(await run(Cdb.testUnitReady(), undefined, 1));
    view.set([lunEntry(0, volume, { readOnly: true })]);
    expectSense(
      await run(Cdb.write10({ lba: 0, blocks: 1 }), pattern(1, 0)),
      SenseKey.DATA_PROTECT,
      Asc.WRITE_PROTECTED,
    );
  });
});

describe("unit attentions (SAM-5 5.14)", () => {
  it("are reported once, before CDB validation, and not by INQUIRY / REPORT LUNS", async () => {
    const { run, target, volume } = setup();
    target.notifyVolumeChanged(volume.id, "capacity-changed");
    expectGood(await run(Cdb.inquiry()));
    expectGood(await run(Cdb.reportLuns()));
    const bad = Cdb.read10({ lba: 0, blocks: 1, protect: 1 });
    expectSense(await run(bad), UA, Asc.CAPACITY_DATA_HAS_CHANGED);
    expectSense(await run(bad), 5, Asc.INVALID_FIELD_IN_CDB);
  });

  it("are reported before INVALID COMMAND OPERATION CODE", async () => {
    const { run, target, volume } = setup();
    target.notifyVolumeChanged(volume.id, "mode-changed");
    expectSense(await run(Buffer.from([0xff, 0, 0, 0, 0, 0])), UA, Asc.MODE_PARAMETERS_CHANGED);
  });

  it("queue in order without duplicates", async () => {
    const { run, target, volume } = setup();
    target.notifyVolumeChanged(volume.id, "capacity-changed");
    target.notifyVolumeChanged(volume.id, "mode-changed");
    target.notifyVolumeChanged(volume.id, "capacity-changed");
    expectSense(await run(Cdb.testUnitReady()), UA, Asc.CAPACITY_DATA_HAS_CHANGED);
    expectSense(await run(Cdb.testUnitReady()), UA, Asc.MODE_PARAMETERS_CHANGED);
    expectGood(await run(Cdb.testUnitReady()));
  });

  it("capacity changes reach every nexus of the volume and only those", async () => {
    const { target, volume, a1, a2, b, c } = shared();
    volume.resize(200);
    target.notifyVolumeChanged(volume.id, "capacity-changed");
    expectSense(await exec(a1, Cdb.readCapacity10()), UA, Asc.CAPACITY_DATA_HAS_CHANGED);
    expect((await exec(a1, Cdb.readCapacity10())).data?.readUInt32BE(0)).toBe(199);
    expectSense(await exec(a2, Cdb.testUnitReady()), UA, Asc.CAPACITY_DATA_HAS_CHANGED);
    expectSense(
      await exec(b, Cdb.testUnitReady(), undefined, 2),
      UA,
      Asc.CAPACITY_DATA_HAS_CHANGED,
    );
    expectGood(await exec(b, Cdb.testUnitReady(), undefined, 3));
    expectGood(await exec(c, Cdb.testUnitReady()));
  });

  it("REPORTED LUNS DATA HAS CHANGED reaches every nexus of that initiator only", async () => {
    const { target, a1, a2, b } = shared();
    target.notifyLunsChanged("iqn.a");
    expectSense(await exec(a1, Cdb.testUnitReady()), UA, Asc.REPORTED_LUNS_DATA_HAS_CHANGED);
    expectGood(await exec(a2, Cdb.reportLuns()));
    expectGood(await exec(a2, Cdb.testUnitReady()));
    expectGood(await exec(b, Cdb.testUnitReady(), undefined, 2));
  });

  it("LUN reset: BUS DEVICE RESET FUNCTION OCCURRED on every nexus of the unit", async () => {
    const { target, volume, a1, a2, b, c } = shared();
    target.notifyVolumeChanged(volume.id, "mode-changed");
    a1.lunReset(0);
    // The reset condition takes precedence over older ones.
    expectSense(await exec(a1, Cdb.testUnitReady()), UA, Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED);
    expectSense(await exec(a1, Cdb.testUnitReady()), UA, Asc.MODE_PARAMETERS_CHANGED);
    expectSense(await exec(a2, Cdb.testUnitReady()), UA, Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED);
    expectSense(
      await exec(b, Cdb.testUnitReady(), undefined, 2),
      UA,
      Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED,
    );
    expectGood(await exec(b, Cdb.testUnitReady(), undefined, 3));
    expectGood(await exec(c, Cdb.testUnitReady()));
    a1.lunReset(9); // not in the view: nothing happens
  });

  it("target warm reset: 29h/00h on every unit the initiator can address", async () => {
    const { other, a1, b, c, target } = shared();
    b.targetReset();
    expectSense(await exec(b, Cdb.testUnitReady(), undefined, 2), UA, Asc.POWER_ON_RESET_OCCURRED);
    expectSense(await exec(b, Cdb.testUnitReady(), undefined, 3), UA, Asc.POWER_ON_RESET_OCCURRED);
    expectSense(await exec(a1, Cdb.testUnitReady()), UA, Asc.POWER_ON_RESET_OCCURRED);
    expectSense(await exec(c, Cdb.testUnitReady()), UA, Asc.POWER_ON_RESET_OCCURRED);
    expect(target.unitOf(other.id).pendingUnitAttentions(c as object)).toEqual([]);
  });

  it("a closed nexus keeps nothing and receives nothing", async () => {
    const { target, volume, a1, a2 } = shared();
    target.notifyVolumeChanged(volume.id, "mode-changed");
    a2.close();
    a2.close();
    expect(target.unitOf(volume.id).pendingUnitAttentions(a2 as object)).toEqual([]);
    target.notifyVolumeChanged(volume.id, "capacity-changed");
    expect(target.unitOf(volume.id).pendingUnitAttentions(a2 as object)).toEqual([]);
    expectSense(await exec(a1, Cdb.testUnitReady()), UA, Asc.MODE_PARAMETERS_CHANGED);
  });
});

describe("RESERVE(6) / RELEASE(6)", () => {
  it("gives the holder exclusive access; other nexuses get RESERVATION CONFLICT", async () => {
    const { a1, b } = shared();
    expectGood(await exec(a1, Cdb.reserve6()));
    expectGood(await exec(a1, Cdb.reserve6()));
    expect((await exec(b, Cdb.reserve6(), undefined, 2)).status).toBe(
      ScsiStatus.RESERVATION_CONFLICT,
    );
    expect((await exec(b, Cdb.modeSense6(), undefined, 2)).status).toBe(
      ScsiStatus.RESERVATION_CONFLICT,
    );
    expect((await exec(b, Cdb.read10({ lba: 0, blocks: 1 }), undefined, 2)).status).toBe(
      ScsiStatus.RESERVATION_CONFLICT,
    );
    for (const cdb of [
      Cdb.inquiry(),
      Cdb.reportLuns(),
      Cdb.requestSense(),
      Cdb.testUnitReady(),
      Cdb.readCapacity10(),
      Cdb.readCapacity16(),
    ]) {
      expectGood(await exec(b, cdb, undefined, 2));
    }
    expectGood(await exec(b, Cdb.release6(), undefined, 2)); // no-op from a non-holder
    expect((await exec(b, Cdb.modeSense6(), undefined, 2)).status).toBe(
      ScsiStatus.RESERVATION_CONFLICT,
    );
    expectGood(await exec(a1, Cdb.modeSense6()));
    expectGood(await exec(a1, Cdb.release6()));
    expectGood(await exec(b, Cdb.reserve6(), undefined, 2));
    expect((await exec(b, Cdb.testUnitReady(), undefined, 3)).status).toBe(ScsiStatus.GOOD);
  });

  it("is released by LUN reset, target reset and nexus loss", async () => {
    const { a1, a2, b } = shared();
    expectGood(await exec(a1, Cdb.reserve6()));
    b.lunReset(2);
    expectGood(await exec(a2, Cdb.requestSense()));
    expectGood(await exec(a2, Cdb.reserve6()));
    a2.targetReset();
    expectGood(await exec(b, Cdb.requestSense(), undefined, 2));
    expectGood(await exec(b, Cdb.reserve6(), undefined, 2));
    b.close();
    expectGood(await exec(a1, Cdb.requestSense()));
    expectGood(await exec(a1, Cdb.reserve6()));
  });

  it("reports a unit attention before a reservation conflict", async () => {
    const { target, volume, a1, b } = shared();
    expectGood(await exec(a1, Cdb.reserve6()));
    target.notifyVolumeChanged(volume.id, "mode-changed");
    expectSense(
      await exec(b, Cdb.read10({ lba: 0, blocks: 1 }), undefined, 2),
      UA,
      Asc.MODE_PARAMETERS_CHANGED,
    );
  });
});
