/**
 * Software write protect: SWP of the Control mode page (SPC-4 7.5.8), changeable through a
 * read-write mapping, shared by every I_T nexus of the logical unit, and enforced on every
 * command that writes to the medium (DATA PROTECT / WRITE PROTECTED), with WP in the mode
 * parameter header. libiscsi's Sanitize.Readonly and ModeSense6.Control-SWP rely on it.
 */
import { describe, expect, it } from "vitest";
import { Asc } from "../asc.js";
import { ScsiStatus, SenseKey } from "../constants.js";
import { decodeFixedSense } from "../sense.js";
import { type ScsiNexus, ScsiTarget } from "../target.js";
import { Cdb } from "../testing/cdb-builders.js";
import {
  blockSegment,
  CopyCdb,
  copyParameterList,
  identificationCscd,
} from "../testing/copy-builders.js";
import {
  exec,
  expectGood,
  expectSense,
  identity,
  lunEntry,
  MutableView,
  pattern,
  setup,
  TEST_INFO,
} from "../testing/harness.js";
import { MemoryVolume } from "../testing/memory-volume.js";
import { SANITIZE, SanitizeAction } from "./sanitize.js";

const SWP = 0x08;
const WP = 0x80;

/** The Control page as MODE SENSE (6) returns it for page control `pc`, and the header DSP. */
async function controlPage(nexus: ScsiNexus, pc = 0, lun = 0) {
  const r = await exec(nexus, Cdb.modeSense6({ page: 0x0a, dbd: true, pc }), undefined, lun);
  expectGood(r);
  const d = r.data!;
  return { dsp: d[2]!, page: Buffer.from(d.subarray(4, 4 + 12)) };
}

/** MODE SELECT (6) of the current Control page with SWP set as asked. */
async function selectSwp(nexus: ScsiNexus, swp: boolean, lun = 0) {
  const { page } = await controlPage(nexus, 0, lun);
  page[4] = swp ? page[4]! | SWP : page[4]! & ~SWP;
  const list = Buffer.concat([Buffer.alloc(4), page]);
  return exec(nexus, Cdb.modeSelect6(list.length), list, lun);
}

function twoNexuses() {
  const target = new ScsiTarget(TEST_INFO);
  const volume = new MemoryVolume({ blocks: 1024, trackDurability: true });
  const other = new MemoryVolume({ blocks: 1024 });
  const a = target.openNexus(identity(), new MutableView([lunEntry(0, volume)]));
  const b = target.openNexus(
    identity({ initiatorName: "iqn.2025-01.com.example:host2" }),
    new MutableView([lunEntry(3, volume), lunEntry(4, other)]),
  );
  return { target, volume, other, a, b };
}

function sanitizeCdb(action: number, length = 0): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = SANITIZE;
  cdb[1] = action;
  cdb.writeUInt16BE(length, 7);
  return cdb;
}

/** Every command that writes to the medium, with its Data-Out. */
function writers(): [string, Buffer, Buffer?][] {
  const overwrite = Buffer.alloc(8);
  overwrite[0] = 1;
  overwrite.writeUInt16BE(4, 2);
  const caw = Buffer.alloc(16);
  caw[0] = 0x89;
  caw[13] = 1;
  const orwrite = Cdb.write16({ lba: 0, blocks: 1 });
  orwrite[0] = 0x8b;
  const writeVerify = Cdb.write10({ lba: 0, blocks: 1 });
  writeVerify[0] = 0x2e;
  const atomic = Buffer.alloc(16);
  atomic[0] = 0x9c;
  atomic[13] = 1;
  const unmap = Buffer.alloc(24);
  unmap.writeUInt16BE(22, 0);
  unmap.writeUInt16BE(16, 2);
  unmap.writeUInt32BE(1, 16);
  return [
    ["WRITE(6)", Cdb.write6({ lba: 0, blocks: 1 }), pattern(1, 1)],
    ["WRITE(10)", Cdb.write10({ lba: 0, blocks: 1 }), pattern(1, 1)],
    ["WRITE(12)", Cdb.write12({ lba: 0, blocks: 1 }), pattern(1, 1)],
    ["WRITE(16)", Cdb.write16({ lba: 0, blocks: 1 }), pattern(1, 1)],
    ["WRITE SAME(10)", Cdb.writeSame10({ lba: 0, blocks: 2 }), pattern(1, 1)],
    ["WRITE SAME(16) UNMAP", Cdb.writeSame16({ lba: 0, blocks: 2, unmap: true }), pattern(1, 0)],
    ["UNMAP", Cdb.unmap(unmap.length), unmap],
    ["COMPARE AND WRITE", caw, pattern(2, 0)],
    ["ORWRITE(16)", orwrite, pattern(1, 1)],
    ["WRITE AND VERIFY(10)", writeVerify, pattern(1, 1)],
    ["WRITE ATOMIC(16)", atomic, pattern(1, 1)],
    ["SANITIZE OVERWRITE", sanitizeCdb(SanitizeAction.OVERWRITE, 8), overwrite],
    ["SANITIZE BLOCK ERASE", sanitizeCdb(SanitizeAction.BLOCK_ERASE)],
  ];
}

describe("SWP (Control mode page)", () => {
  it("is changeable through a read-write mapping, 0 by default", async () => {
    const { nexus } = setup();
    expect((await controlPage(nexus, 1)).page[4]).toBe(SWP);
    expect((await controlPage(nexus, 2)).page[4]! & SWP).toBe(0);
    const current = await controlPage(nexus);
    expect(current.page[4]! & SWP).toBe(0);
    expect(current.dsp & WP).toBe(0);
  });

  it("set by MODE SELECT: MODE SENSE reports SWP and WP (6 and 10) until it is cleared", async () => {
    const { nexus, target, volume } = setup();
    expectGood(await selectSwp(nexus, true));
    expect(target.unitOf(volume.id).softwareWriteProtect).toBe(true);
    const current = await controlPage(nexus);
    expect(current.page[4]! & SWP).toBe(SWP);
    expect(current.dsp & WP).toBe(WP);
    const ten = (await exec(nexus, Cdb.modeSense10({ page: 0x0a, dbd: true }))).data!;
    expect(ten[3]! & WP).toBe(WP);
    expectGood(await selectSwp(nexus, false));
    expect((await controlPage(nexus)).dsp & WP).toBe(0);
    expectGood(await exec(nexus, Cdb.write10({ lba: 0, blocks: 1 }), pattern(1, 7)));
  });

  it("refuses every command that writes to the medium, before the volume is touched", async () => {
    const { nexus, volume } = setup();
    expectGood(await selectSwp(nexus, true));
    volume.calls.length = 0;
    for (const [name, cdb, dataOut] of writers()) {
      const r = await exec(nexus, cdb, dataOut);
      expect(r.status, name).toBe(ScsiStatus.CHECK_CONDITION);
      const s = decodeFixedSense(r.sense!);
      expect([s.key, s.asc], name).toEqual([SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED]);
    }
    expect(volume.calls.filter((c) => c.op !== "flush")).toEqual([]);
  });

  it("lets reads, VERIFY, SYNCHRONIZE CACHE and TEST UNIT READY through", async () => {
    const { nexus, volume } = setup();
    await volume.write(0, pattern(1, 0x3c));
    expectGood(await selectSwp(nexus, true));
    const read = await exec(nexus, Cdb.read10({ lba: 0, blocks: 1 }));
    expectGood(read);
    expect(read.data!.equals(pattern(1, 0x3c))).toBe(true);
    expectGood(await exec(nexus, Cdb.verify10({ lba: 0, blocks: 1 })));
    expectGood(await exec(nexus, Cdb.syncCache10()));
    expectGood(await exec(nexus, Cdb.testUnitReady()));
  });

  it("belongs to the logical unit: every nexus of the volume is protected, and told", async () => {
    const { a, b } = twoNexuses();
    expectGood(await selectSwp(a, true));
    // The other initiator hears MODE PARAMETERS CHANGED first, then sees SWP and is refused.
    expectSense(
      await exec(b, Cdb.testUnitReady(), undefined, 3),
      SenseKey.UNIT_ATTENTION,
      Asc.MODE_PARAMETERS_CHANGED,
    );
    expect((await controlPage(b, 0, 3)).dsp & WP).toBe(WP);
    expectSense(
      await exec(b, Cdb.write10({ lba: 0, blocks: 1 }), pattern(1, 1), 3),
      SenseKey.DATA_PROTECT,
      Asc.WRITE_PROTECTED,
    );
    // Another volume of the same initiator is not protected.
    expectGood(await exec(b, Cdb.write10({ lba: 0, blocks: 1 }), pattern(1, 1), 4));
    // Whoever may change it can clear it: here the other nexus (the libiscsi tests do that).
    expectGood(await selectSwp(b, false, 3));
    expectSense(
      await exec(a, Cdb.testUnitReady()),
      SenseKey.UNIT_ATTENTION,
      Asc.MODE_PARAMETERS_CHANGED,
    );
    expectGood(await exec(a, Cdb.write10({ lba: 0, blocks: 1 }), pattern(1, 1)));
  });

  it("flushes what was written before answering the MODE SELECT that sets it", async () => {
    const { a, volume } = twoNexuses();
    expectGood(await exec(a, Cdb.write10({ lba: 5, blocks: 1 }), pattern(1, 0x99)));
    expect(volume.readDurable(5, 1).equals(pattern(1, 0))).toBe(true);
    expectGood(await selectSwp(a, true));
    expect(volume.readDurable(5, 1).equals(pattern(1, 0x99))).toBe(true);
    // Clearing it, or selecting it again, needs no flush.
    const flushes = volume.flushCount;
    expectGood(await selectSwp(a, true));
    expectGood(await selectSwp(a, false));
    expect(volume.flushCount).toBe(flushes);
  });

  it("cannot be changed through a read-only mapping, which always reads SWP=1", async () => {
    const { nexus, target, volume } = setup({ readOnly: true });
    expect((await controlPage(nexus, 1)).page[4]).toBe(0);
    expect((await controlPage(nexus)).page[4]! & SWP).toBe(SWP);
    // Repeating the current SWP=1 is accepted and leaves the unit's own SWP alone.
    expectGood(await selectSwp(nexus, true));
    expect(target.unitOf(volume.id).softwareWriteProtect).toBe(false);
    const s = expectSense(await selectSwp(nexus, false), 5, Asc.INVALID_FIELD_IN_PARAMETER_LIST);
    expect(s.fieldPointer).toEqual({ inCdb: false, byte: 8, bit: 3 });
  });

  it("makes EXTENDED COPY into the unit fail on the destination with WRITE PROTECTED", async () => {
    const target = new ScsiTarget(TEST_INFO);
    const src = new MemoryVolume({ blocks: 64 });
    const dst = new MemoryVolume({ blocks: 64 });
    const nexus = target.openNexus(
      identity(),
      new MutableView([lunEntry(0, src), lunEntry(1, dst)]),
    );
    expectGood(await selectSwp(nexus, true, 1));
    const list = copyParameterList({
      cscds: [identificationCscd(src.id, 512), identificationCscd(dst.id, 512)],
      segments: [
        blockSegment({ source: 0, destination: 1, blocks: 1, sourceLba: 0, destinationLba: 0 }),
      ],
    });
    const r = await exec(nexus, CopyCdb.extendedCopy(list.length), list);
    expect(r.status).toBe(ScsiStatus.CHECK_CONDITION);
    const raw = r.sense!;
    expect(decodeFixedSense(raw).key).toBe(SenseKey.COPY_ABORTED);
    const destination = decodeFixedSense(raw.subarray(raw[9]!));
    expect([destination.key, destination.asc]).toEqual([
      SenseKey.DATA_PROTECT,
      Asc.WRITE_PROTECTED,
    ]);
    expect(dst.calls.filter((c) => c.op === "write")).toEqual([]);
  });
});
