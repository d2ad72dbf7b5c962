import { describe, expect, it } from "vitest";
import { Asc } from "../asc.js";
import { SenseKey } from "../constants.js";
import { decodeLun } from "../lun.js";
import { ScsiTarget } from "../target.js";
import { Cdb } from "../testing/cdb-builders.js";
import {
  exec,
  expectGood,
  expectSense,
  identity,
  lunEntry,
  MutableView,
  TEST_INFO,
} from "../testing/harness.js";
import { MemoryVolume } from "../testing/memory-volume.js";
import type { LunEntry } from "../types.js";

function parse(data: Buffer): { listLength: number; luns: number[] } {
  const listLength = data.readUInt32BE(0);
  const luns: number[] = [];
  for (let at = 8; at + 8 <= data.length; at += 8) luns.push(decodeLun(data, at));
  return { listLength, luns };
}

function viewOf(luns: number[]): { view: MutableView; entries: LunEntry[] } {
  const entries = luns.map((lun) => lunEntry(lun, new MemoryVolume({ blocks: 8 })));
  return { view: new MutableView(entries), entries };
}

describe("REPORT LUNS", () => {
  it.each([
    ["no LUNs", [] as number[]],
    ["one LUN", [0]],
    ["many LUNs, unsorted, peripheral and flat", [300, 5, 0, 255, 256, 16383, 42]],
  ])("reports %s", async (_what, luns) => {
    const target = new ScsiTarget(TEST_INFO);
    const { view } = viewOf(luns);
    const nexus = target.openNexus(identity(), view);
    const r = await exec(nexus, Cdb.reportLuns(), undefined, luns[0] ?? 0);
    expectGood(r);
    const parsed = parse(r.data!);
    expect(parsed.listLength).toBe(8 * luns.length);
    expect(parsed.luns).toEqual([...luns].sort((a, b) => a - b));
    expect(r.data?.readUInt32BE(4)).toBe(0);
  });

  it("uses peripheral addressing below 256 and flat addressing above", async () => {
    const target = new ScsiTarget(TEST_INFO);
    const nexus = target.openNexus(identity(), viewOf([1, 400]).view);
    const d = (await exec(nexus, Cdb.reportLuns())).data!;
    expect([...d.subarray(8, 16)]).toEqual([0, 1, 0, 0, 0, 0, 0, 0]);
    expect([...d.subarray(16, 24)]).toEqual([0x41, 0x90, 0, 0, 0, 0, 0, 0]);
  });

  it("works from a LUN outside the view", async () => {
    const target = new ScsiTarget(TEST_INFO);
    const nexus = target.openNexus(identity(), viewOf([3]).view);
    const r = await exec(nexus, Cdb.reportLuns(), undefined, 0);
    expect(parse(r.data!).luns).toEqual([3]);
  });

  it("keeps LUN LIST LENGTH whole when the allocation length truncates", async () => {
    const target = new ScsiTarget(TEST_INFO);
    const nexus = target.openNexus(identity(), viewOf([0, 1, 2, 3]).view);
    for (const n of [0, 4, 8, 15, 16, 17, 39, 40]) {
      const r = await exec(nexus, Cdb.reportLuns(n));
      expectGood(r);
      expect(r.data?.length).toBe(Math.min(n, 40));
      if (n >= 4) expect(r.data?.readUInt32BE(0)).toBe(32);
    }
  });

  it("SELECT REPORT 01h (well known only) is empty, 02h is everything, 03h is invalid", async () => {
    const target = new ScsiTarget(TEST_INFO);
    const nexus = target.openNexus(identity(), viewOf([0, 1]).view);
    expect(parse((await exec(nexus, Cdb.reportLuns(4096, 1))).data!).luns).toEqual([]);
    expect(parse((await exec(nexus, Cdb.reportLuns(4096, 2))).data!).luns).toEqual([0, 1]);
    const s = expectSense(await exec(nexus, Cdb.reportLuns(4096, 3)), 5, Asc.INVALID_FIELD_IN_CDB);
    expect(s.fieldPointer).toEqual({ inCdb: true, byte: 2 });
  });

  it("clears REPORTED LUNS DATA HAS CHANGED on every LUN, and no other unit attention", async () => {
    const target = new ScsiTarget(TEST_INFO);
    const { view, entries } = viewOf([0, 1]);
    const nexus = target.openNexus(identity(), view);
    target.notifyLunsChanged("iqn.2025-01.com.example:host1");
    target.notifyVolumeChanged(entries[1]!.volumeId, "capacity-changed");
    expectGood(await exec(nexus, Cdb.reportLuns()));
    expectGood(await exec(nexus, Cdb.testUnitReady(), undefined, 0));
    expectSense(
      await exec(nexus, Cdb.testUnitReady(), undefined, 1),
      SenseKey.UNIT_ATTENTION,
      Asc.CAPACITY_DATA_HAS_CHANGED,
    );
    expectGood(await exec(nexus, Cdb.testUnitReady(), undefined, 1));
  });
});
