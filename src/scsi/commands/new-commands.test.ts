/**
 * The commands of the atomic / verify / copy family as REPORT SUPPORTED OPERATION CODES
 * reports them: each with its CDB usage map and, with RCTD, a command timeouts descriptor.
 */
import { describe, expect, it } from "vitest";
import { Cdb } from "../testing/cdb-builders.js";
import { expectGood, setup } from "../testing/harness.js";

/** [name, opcode, service action or undefined, CDB usage map]. */
const NEW_COMMANDS: readonly [string, number, number | undefined, number[]][] = [
  ["PREVENT ALLOW MEDIUM REMOVAL", 0x1e, undefined, [0x1e, 0, 0, 0, 0x01, 0]],
  [
    "WRITE AND VERIFY(10)",
    0x2e,
    undefined,
    [0x2e, 0x16, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0],
  ],
  ["READ DEFECT DATA(10)", 0x37, undefined, [0x37, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0]],
  [
    "EXTENDED COPY(LID1)",
    0x83,
    0x00,
    [0x83, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0],
  ],
  [
    "RECEIVE COPY STATUS(LID1)",
    0x84,
    0x00,
    [0x84, 0x00, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0],
  ],
  [
    "RECEIVE COPY OPERATING PARAMETERS",
    0x84,
    0x03,
    [0x84, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0],
  ],
  [
    "RECEIVE COPY FAILED SEGMENT DETAILS",
    0x84,
    0x04,
    [0x84, 0x04, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0],
  ],
  [
    "COMPARE AND WRITE",
    0x89,
    undefined,
    [0x89, 0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0x3f, 0],
  ],
  [
    "ORWRITE(16)",
    0x8b,
    undefined,
    [0x8b, 0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0],
  ],
  [
    "WRITE AND VERIFY(16)",
    0x8e,
    undefined,
    [0x8e, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0],
  ],
  [
    "WRITE ATOMIC(16)",
    0x9c,
    undefined,
    [0x9c, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0xff, 0xff, 0x3f, 0],
  ],
  [
    "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS",
    0xa3,
    0x0d,
    [0xa3, 0x0d, 0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0],
  ],
  [
    "WRITE AND VERIFY(12)",
    0xae,
    undefined,
    [0xae, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0],
  ],
  [
    "READ DEFECT DATA(12)",
    0xb7,
    undefined,
    [0xb7, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0],
  ],
];

describe("REPORT SUPPORTED OPERATION CODES for the new commands", () => {
  it.each(NEW_COMMANDS)(
    "%s: usage map and timeouts descriptor",
    async (_name, opcode, sa, usage) => {
      const { run } = setup();
      const r = await run(
        Cdb.reportSupportedOpcodes({
          options: sa === undefined ? 0b001 : 0b010,
          opcode,
          serviceAction: sa ?? 0,
          rctd: true,
        }),
      );
      expectGood(r);
      const d = r.data!;
      expect(d[1]).toBe(0x80 | 0b011); // CTDP, SUPPORT: supported as the standard says
      expect(d.readUInt16BE(2)).toBe(usage.length);
      expect([...d.subarray(4, 4 + usage.length)]).toEqual(usage);
      expect(d.readUInt16BE(4 + usage.length)).toBe(0x0a); // command timeouts descriptor
    },
  );

  it("lists them all among the supported commands", async () => {
    const { run } = setup();
    const d = (await run(Cdb.reportSupportedOpcodes())).data!;
    const listed = new Set<string>();
    for (let at = 4; at < d.length; at += 8) {
      const servactv = (d[at + 5]! & 1) === 1;
      listed.add(`${d[at]}/${servactv ? d.readUInt16BE(at + 2) : "-"}`);
    }
    for (const [, opcode, sa] of NEW_COMMANDS) {
      expect(listed.has(`${opcode}/${sa ?? "-"}`)).toBe(true);
    }
  });
});
