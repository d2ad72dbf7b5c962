import { describe, expect, it } from "vitest";
import { Asc } from "../asc.js";
import { SenseKey } from "../constants.js";
import { ScsiTarget } from "../target.js";
import { Cdb } from "../testing/cdb-builders.js";
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

interface ModeData {
  mediumType: number;
  dsp: number;
  longLba: boolean;
  blockDescriptor: Buffer;
  pages: Map<number, Buffer>;
  order: number[];
}

/** Parse MODE SENSE data (SPC-4 7.5.4 header, block descriptors, pages). */
function parseMode(data: Buffer, ten: boolean): ModeData {
  const dataLength = ten ? data.readUInt16BE(0) + 2 : data[0]! + 1;
  expect(dataLength).toBe(data.length);
  const headerLength = ten ? 8 : 4;
  const bdLength = ten ? data.readUInt16BE(6) : data[3]!;
  const pages = new Map<number, Buffer>();
  const order: number[] = [];
  let at = headerLength + bdLength;
  while (at < data.length) {
    const length = data[at + 1]! + 2;
    pages.set(data[at]! & 0x3f, data.subarray(at, at + length));
    order.push(data[at]! & 0x3f);
    at += length;
  }
  expect(at).toBe(data.length);
  return {
    mediumType: ten ? data[2]! : data[1]!,
    dsp: ten ? data[3]! : data[2]!,
    longLba: ten ? (data[4]! & 1) === 1 : false,
    blockDescriptor: data.subarray(headerLength, headerLength + bdLength),
    pages,
    order,
  };
}

/** A MODE SELECT parameter list: header (no block descriptor) + pages. */
function selectList(ten: boolean, ...pages: Buffer[]): Buffer {
  return Buffer.concat([Buffer.alloc(ten ? 8 : 4), ...pages]);
}

describe("MODE SENSE", () => {
  it("(6) returns all pages in order with a short block descriptor", async () => {
    const { run } = setup({ blocks: 1000 });
    const r = await run(Cdb.modeSense6({ page: 0x3f }));
    expectGood(r);
    const m = parseMode(r.data!, false);
    expect(m.order).toEqual([0x02, 0x08, 0x0a, 0x1a, 0x1c]);
    expect(m.mediumType).toBe(0);
    expect(m.dsp).toBe(0x10); // DPOFUA, not write protected
    expect(m.blockDescriptor.length).toBe(8);
    expect(m.blockDescriptor.readUInt32BE(0)).toBe(1000);
    expect(m.blockDescriptor.readUIntBE(5, 3)).toBe(512);
    expect([...m.pages.values()].map((p) => p.length)).toEqual([16, 20, 12, 40, 12]);
    expect(m.pages.get(0x08)![2]! & 0x04).toBe(0x04); // WCE=1
    expect(m.pages.get(0x08)![2]! & 0x01).toBe(0); // RCD=0
    const control = m.pages.get(0x0a)!;
    expect(control[2]! & 0x04).toBe(0); // D_SENSE=0
    expect(control[2]! >> 5).toBe(0); // TST
    expect(control[3]! >> 4).toBe(1); // QUEUE ALGORITHM MODIFIER
    expect((control[3]! >> 1) & 3).toBe(0); // QERR
    expect(control[4]! & 0x08).toBe(0); // SWP
    expect(m.pages.get(0x1c)![2]! & 0x08).toBe(0x08); // DEXCPT
  });

  it("(10) with LLBAA returns a long LBA block descriptor", async () => {
    const { run } = setup({ blocks: 2 ** 40 });
    const m = parseMode((await run(Cdb.modeSense10({ page: 0x08, llbaa: true }))).data!, true);
    expect(m.longLba).toBe(true);
    expect(m.blockDescriptor.length).toBe(16);
    expect(m.blockDescriptor.readBigUInt64BE(0)).toBe(2n ** 40n);
    expect(m.blockDescriptor.readUInt32BE(12)).toBe(512);
    expect(m.order).toEqual([0x08]);
  });

  it("clamps the short block descriptor to FFFFFFFFh", async () => {
    const { run } = setup({ blocks: 2 ** 40 });
    const m = parseMode((await run(Cdb.modeSense10({ page: 0x08 }))).data!, true);
    expect(m.blockDescriptor.length).toBe(8);
    expect(m.blockDescriptor.readUInt32BE(0)).toBe(0xffffffff);
  });

  it("omits block descriptors with DBD", async () => {
    const { run } = setup();
    for (const cdb of [
      Cdb.modeSense6({ dbd: true }),
      Cdb.modeSense10({ dbd: true, llbaa: true }),
    ]) {
      const ten = cdb[0] === 0x5a;
      expect(parseMode((await run(cdb)).data!, ten).blockDescriptor.length).toBe(0);
    }
  });

  it("returns each page alone exactly as within all pages (6 and 10)", async () => {
    const { run } = setup();
    const all = parseMode((await run(Cdb.modeSense6({ page: 0x3f }))).data!, false);
    const all10 = parseMode(
      (await run(Cdb.modeSense10({ page: 0x3f, subpage: 0xff }))).data!,
      true,
    );
    for (const [code, page] of all.pages) {
      const one = parseMode((await run(Cdb.modeSense6({ page: code }))).data!, false);
      expect(one.order).toEqual([code]);
      expect(one.pages.get(code)?.equals(page)).toBe(true);
      expect(all10.pages.get(code)?.equals(page)).toBe(true);
    }
  });

  it("reports WCE and SWP as the only changeable fields, and WCE=1 by default", async () => {
    const { run } = setup();
    const changeable = parseMode((await run(Cdb.modeSense6({ pc: 1 }))).data!, false);
    for (const [code, page] of changeable.pages) {
      const expected = Buffer.alloc(page.length);
      expected[0] = code;
      expected[1] = page.length - 2;
      if (code === 0x08) expected[2] = 0x04;
      if (code === 0x0a) expected[4] = 0x08; // SWP (./swp.test.ts)
      expect(page.equals(expected), `page ${code}`).toBe(true);
    }
    expect(changeable.blockDescriptor.equals(Buffer.alloc(8))).toBe(true);
    const defaults = parseMode((await run(Cdb.modeSense6({ pc: 2, page: 0x08 }))).data!, false);
    expect(defaults.pages.get(0x08)![2]).toBe(0x04);
  });

  it("refuses saved values: SAVING PARAMETERS NOT SUPPORTED", async () => {
    const { run } = setup();
    expectSense(await run(Cdb.modeSense6({ pc: 3 })), 5, Asc.SAVING_PARAMETERS_NOT_SUPPORTED);
    expectSense(
      await run(Cdb.modeSense10({ pc: 3, page: 0x08 })),
      5,
      Asc.SAVING_PARAMETERS_NOT_SUPPORTED,
    );
  });

  it("refuses unknown pages and subpages with a field pointer", async () => {
    const { run } = setup();
    const s = expectSense(await run(Cdb.modeSense6({ page: 0x01 })), 5, Asc.INVALID_FIELD_IN_CDB);
    expect(s.fieldPointer).toEqual({ inCdb: true, byte: 2, bit: 5 });
    const t = expectSense(
      await run(Cdb.modeSense6({ page: 0x08, subpage: 1 })),
      5,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(t.fieldPointer).toEqual({ inCdb: true, byte: 3 });
    expectSense(await run(Cdb.modeSense6({ page: 0x3f, subpage: 1 })), 5, Asc.INVALID_FIELD_IN_CDB);
  });

  it("sets WP and SWP for a read-only mapping", async () => {
    const { run } = setup({ readOnly: true });
    const m = parseMode((await run(Cdb.modeSense10())).data!, true);
    expect(m.dsp).toBe(0x90);
    expect(m.pages.get(0x0a)![4]! & 0x08).toBe(0x08);
    const changeable = parseMode((await run(Cdb.modeSense6({ pc: 1, page: 0x08 }))).data!, false);
    expect(changeable.pages.get(0x08)![2]).toBe(0);
  });

  it("truncates to the allocation length (4 bytes: no residual overflow)", async () => {
    const { run } = setup();
    const full = (await run(Cdb.modeSense6())).data!;
    const r = await run(Cdb.modeSense6({ allocationLength: 4 }));
    expect(r.data?.equals(full.subarray(0, 4))).toBe(true);
    expect(r.data?.[0]).toBe(full.length - 1);
  });
});

describe("MODE SELECT", () => {
  async function cachingPage(run: ReturnType<typeof setup>["run"]): Promise<Buffer> {
    const m = parseMode((await run(Cdb.modeSense6({ page: 0x08, dbd: true }))).data!, false);
    return Buffer.from(m.pages.get(0x08)!);
  }

  it.each([false, true])(
    "round-trips WCE (MODE SELECT(%s ? 10 : 6)) and writes through when off",
    async (ten) => {
      const { run, volume } = setup();
      const page = await cachingPage(run);
      page[2] = page[2]! & ~0x04;
      const list = selectList(ten, page);
      const cdb = ten ? Cdb.modeSelect10(list.length) : Cdb.modeSelect6(list.length);
      const r = await run(cdb, list);
      expectGood(r);
      expect(r.dataOutLength).toBe(list.length);
      expect((await cachingPage(run))[2]! & 0x04).toBe(0);
      expectGood(await run(Cdb.write10({ lba: 0, blocks: 1 }), pattern(1, 1)));
      expect(volume.calls.at(-1)).toMatchObject({ op: "write", fua: true });
      page[2] = page[2]! | 0x04;
      expectGood(await run(cdb, selectList(ten, page)));
      expect((await cachingPage(run))[2]! & 0x04).toBe(0x04);
    },
  );

  it("shares WCE across nexuses and raises MODE PARAMETERS CHANGED on the others only", async () => {
    const target = new ScsiTarget(TEST_INFO);
    const volume = new MemoryVolume({ blocks: 100 });
    const other = new MemoryVolume({ blocks: 100 });
    const a = target.openNexus(identity(), new MutableView([lunEntry(0, volume)]));
    const b = target.openNexus(
      identity({ initiatorName: "iqn.b" }),
      new MutableView([lunEntry(4, volume)]),
    );
    const c = target.openNexus(
      identity({ initiatorName: "iqn.c" }),
      new MutableView([lunEntry(0, other)]),
    );
    const sensed = parseMode(
      (await exec(a, Cdb.modeSense6({ page: 0x08, dbd: true }))).data!,
      false,
    );
    const page = Buffer.from(sensed.pages.get(0x08)!);
    page[2] = 0;
    const list = selectList(false, page);
    expectGood(await exec(a, Cdb.modeSelect6(list.length), list));
    expectGood(await exec(a, Cdb.testUnitReady()));
    expectSense(
      await exec(b, Cdb.testUnitReady(), undefined, 4),
      SenseKey.UNIT_ATTENTION,
      Asc.MODE_PARAMETERS_CHANGED,
    );
    expectGood(await exec(c, Cdb.testUnitReady()));
    const seenByB = parseMode(
      (await exec(b, Cdb.modeSense6({ page: 0x08 }), undefined, 4)).data!,
      false,
    );
    expect(seenByB.pages.get(0x08)![2]).toBe(0);
    // Selecting the same value again changes nothing and raises nothing.
    expectGood(await exec(a, Cdb.modeSelect6(list.length), list));
    expectGood(await exec(b, Cdb.testUnitReady(), undefined, 4));
  });

  it("accepts a list with only a header, and a zero-length list", async () => {
    const { run } = setup();
    expectGood(await run(Cdb.modeSelect6(4), Buffer.alloc(4)));
    expectGood(await run(Cdb.modeSelect10(0)));
  });

  it("accepts a block descriptor that keeps the block length, refuses one that changes it", async () => {
    const { run } = setup();
    const page = await cachingPage(run);
    const bd = Buffer.alloc(8);
    bd.writeUIntBE(512, 5, 3);
    const header = Buffer.from([0, 0, 0, 8]);
    const ok = Buffer.concat([header, bd, page]);
    expectGood(await run(Cdb.modeSelect6(ok.length), ok));
    bd.writeUIntBE(4096, 5, 3);
    const bad = Buffer.concat([header, bd, page]);
    const s = expectSense(
      await run(Cdb.modeSelect6(bad.length), bad),
      5,
      Asc.INVALID_FIELD_IN_PARAMETER_LIST,
    );
    expect(s.fieldPointer).toEqual({ inCdb: false, byte: 9 });
    const long = Buffer.alloc(8 + 16);
    long[4] = 1;
    long.writeUInt16BE(16, 6);
    long.writeUInt32BE(512, 8 + 12);
    expectGood(await run(Cdb.modeSelect10(long.length), long));
  });

  it("refuses SP=1 and PF=0 with pages", async () => {
    const { run } = setup();
    const list = selectList(false, await cachingPage(run));
    const sp = expectSense(
      await run(Cdb.modeSelect6(list.length, { sp: true }), list),
      5,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(sp.fieldPointer).toEqual({ inCdb: true, byte: 1, bit: 0 });
    const pf = expectSense(
      await run(Cdb.modeSelect6(list.length, { pf: false }), list),
      5,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(pf.fieldPointer).toEqual({ inCdb: true, byte: 1, bit: 4 });
  });

  it("refuses truncated parameter lists: PARAMETER LIST LENGTH ERROR", async () => {
    const { run } = setup();
    const page = await cachingPage(run);
    expectSense(await run(Cdb.modeSelect6(3), Buffer.alloc(3)), 5, Asc.PARAMETER_LIST_LENGTH_ERROR);
    const cut = selectList(false, page).subarray(0, 4 + 10);
    expectSense(await run(Cdb.modeSelect6(cut.length), cut), 5, Asc.PARAMETER_LIST_LENGTH_ERROR);
    const bdTooLong = Buffer.from([0, 0, 0, 8, 0, 0]);
    expectSense(
      await run(Cdb.modeSelect6(bdTooLong.length), bdTooLong),
      5,
      Asc.PARAMETER_LIST_LENGTH_ERROR,
    );
  });

  it("refuses Data-Out shorter than the parameter list length", async () => {
    const { run } = setup();
    const list = selectList(false, await cachingPage(run));
    const r = await run(Cdb.modeSelect6(list.length), list.subarray(0, 10));
    expectSense(r, 5, Asc.INVALID_FIELD_IN_COMMAND_IU);
    expect(r.dataOutLength).toBe(list.length);
  });

  it.each([
    ["an unknown page", (p: Buffer) => p.fill(0, 0, 1).fill(0x01, 0, 1), 4, 5],
    ["a subpage format page", (p: Buffer) => p.fill(0x48, 0, 1), 4, 6],
    ["a wrong page length", (p: Buffer) => p.fill(0x11, 1, 2), 5, undefined],
    ["RCD changed", (p: Buffer) => p.fill(0x05, 2, 3), 6, 0],
    ["a non-changeable byte changed", (p: Buffer) => p.fill(0x80, 12, 13), 16, 7],
  ])("refuses %s with INVALID FIELD IN PARAMETER LIST", async (_what, mutate, byte, bit) => {
    const { run, target, volume } = setup();
    const page = await cachingPage(run);
    page[2] = 0; // also ask to clear WCE: nothing may be applied
    mutate(page);
    const list = selectList(false, page);
    const s = expectSense(
      await run(Cdb.modeSelect6(list.length), list),
      5,
      Asc.INVALID_FIELD_IN_PARAMETER_LIST,
    );
    expect(s.fieldPointer).toEqual(
      bit === undefined ? { inCdb: false, byte } : { inCdb: false, byte, bit },
    );
    expect(target.unitOf(volume.id).writeCacheEnabled).toBe(true);
  });

  it("refuses a non-zero medium type", async () => {
    const { run } = setup();
    const list = Buffer.from([0, 1, 0, 0]);
    expectSense(await run(Cdb.modeSelect6(4), list), 5, Asc.INVALID_FIELD_IN_PARAMETER_LIST);
  });

  it("applies nothing when a later page is invalid", async () => {
    const { run, target, volume } = setup();
    const page = await cachingPage(run);
    page[2] = 0;
    const control = parseMode((await run(Cdb.modeSense6({ page: 0x0a }))).data!, false).pages.get(
      0x0a,
    )!;
    const badControl = Buffer.from(control);
    badControl[2] = 0x04; // D_SENSE is not changeable
    const list = selectList(false, page, badControl);
    expectSense(
      await run(Cdb.modeSelect6(list.length), list),
      5,
      Asc.INVALID_FIELD_IN_PARAMETER_LIST,
    );
    expect(target.unitOf(volume.id).writeCacheEnabled).toBe(true);
  });

  it("accepts unchanged pages of every kind, ignoring PS", async () => {
    const { run } = setup();
    const all = parseMode((await run(Cdb.modeSense10({ dbd: true }))).data!, true);
    const pages = [...all.pages.values()].map((p) => {
      const copy = Buffer.from(p);
      copy[0] = copy[0]! | 0x80;
      return copy;
    });
    const list = selectList(true, ...pages);
    expectGood(await run(Cdb.modeSelect10(list.length), list));
  });

  it("does not let a read-only mapping change WCE", async () => {
    const { run, target, volume } = setup({ readOnly: true });
    const page = await cachingPage(run);
    page[2] = 0;
    const list = selectList(false, page);
    expectSense(
      await run(Cdb.modeSelect6(list.length), list),
      5,
      Asc.INVALID_FIELD_IN_PARAMETER_LIST,
    );
    expect(target.unitOf(volume.id).writeCacheEnabled).toBe(true);
  });
});
