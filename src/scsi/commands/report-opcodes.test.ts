import { describe, expect, it } from "vitest";
import { Asc } from "../asc.js";
import { supportedCommands } from "../dispatch.js";
import { Cdb } from "../testing/cdb-builders.js";
import { expectGood, expectSense, setup } from "../testing/harness.js";

interface Descriptor {
  opcode: number;
  serviceAction: number;
  servactv: boolean;
  ctdp: boolean;
  cdbLength: number;
}

function parseAll(d: Buffer, rctd: boolean): Descriptor[] {
  const length = d.readUInt32BE(0);
  expect(length).toBe(d.length - 4);
  const out: Descriptor[] = [];
  const size = rctd ? 20 : 8;
  for (let at = 4; at < d.length; at += size) {
    out.push({
      opcode: d[at]!,
      serviceAction: d.readUInt16BE(at + 2),
      servactv: (d[at + 5]! & 1) === 1,
      ctdp: (d[at + 5]! & 2) === 2,
      cdbLength: d.readUInt16BE(at + 6),
    });
    if (rctd) expect(d.readUInt16BE(at + 8)).toBe(0x0a);
  }
  return out;
}

describe("REPORT SUPPORTED OPERATION CODES", () => {
  it("lists every command of the dispatch table", async () => {
    const { run } = setup();
    const r = await run(Cdb.reportSupportedOpcodes());
    expectGood(r);
    const listed = parseAll(r.data!, false);
    expect(listed.map((d) => [d.opcode, d.serviceAction, d.servactv, d.cdbLength])).toEqual(
      supportedCommands().map((s) => [
        s.opcode,
        s.serviceAction ?? 0,
        s.serviceAction !== undefined,
        s.cdbLength,
      ]),
    );
    const opcodes = listed.map((d) => d.opcode);
    for (const op of [
      0x00, 0x03, 0x12, 0x1a, 0x25, 0x28, 0x2a, 0x35, 0x5a, 0x88, 0x8a, 0x9e, 0xa0, 0xa3,
    ]) {
      expect(opcodes).toContain(op);
    }
    expect(listed.find((d) => d.opcode === 0x9e && d.serviceAction === 0x10)?.servactv).toBe(true);
  });

  it("adds command timeouts descriptors with RCTD", async () => {
    const { run } = setup();
    const listed = parseAll((await run(Cdb.reportSupportedOpcodes({ rctd: true }))).data!, true);
    expect(listed.every((d) => d.ctdp)).toBe(true);
  });

  it("reports one command with its CDB usage data", async () => {
    const { run } = setup();
    const d = (await run(Cdb.reportSupportedOpcodes({ options: 1, opcode: 0x28 }))).data!;
    expect(d[1]! & 0x07).toBe(0b011);
    expect(d.readUInt16BE(2)).toBe(10);
    expect([...d.subarray(4)]).toEqual([
      0x28, 0x1e, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x00,
    ]);
    const unknown = (await run(Cdb.reportSupportedOpcodes({ options: 1, opcode: 0x04 }))).data!;
    expect([...unknown]).toEqual([0, 0b001, 0, 0]);
  });

  it("reports one command by service action", async () => {
    const { run } = setup();
    const d = (
      await run(Cdb.reportSupportedOpcodes({ options: 2, opcode: 0x9e, serviceAction: 0x10 }))
    ).data!;
    expect(d[1]! & 0x07).toBe(0b011);
    expect(d.readUInt16BE(2)).toBe(16);
    expect(d[4]).toBe(0x9e);
    expect(d[5]).toBe(0x10);
    const missing = (
      await run(Cdb.reportSupportedOpcodes({ options: 2, opcode: 0x9e, serviceAction: 0x13 }))
    ).data!;
    expect(missing[1]! & 0x07).toBe(0b001);
    const rctd = (await run(Cdb.reportSupportedOpcodes({ options: 3, opcode: 0x2a, rctd: true })))
      .data!;
    expect(rctd[1]).toBe(0x80 | 0b011);
    expect(rctd.length).toBe(4 + 10 + 12);
  });

  it("refuses mismatched options and reserved reporting options", async () => {
    const { run } = setup();
    expectSense(
      await run(Cdb.reportSupportedOpcodes({ options: 1, opcode: 0x9e })),
      5,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expectSense(
      await run(Cdb.reportSupportedOpcodes({ options: 2, opcode: 0x28 })),
      5,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expectSense(await run(Cdb.reportSupportedOpcodes({ options: 4 })), 5, Asc.INVALID_FIELD_IN_CDB);
  });

  it("honours the allocation length", async () => {
    const { run } = setup();
    const r = await run(Cdb.reportSupportedOpcodes({ allocationLength: 10 }));
    expect(r.data?.length).toBe(10);
  });
});
