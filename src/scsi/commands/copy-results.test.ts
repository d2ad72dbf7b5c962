import { describe, expect, it } from "vitest";
import { Cdb } from "../testing/cdb-builders.js";
import { expectGood, setup } from "../testing/harness.js";
import { CopyLimits, transferCount } from "./copy-results.js";

/** The third-party copy descriptors of a VPD page 8Fh payload, by type. */
function descriptors(payload: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let at = 0;
  while (at < payload.length) {
    const type = payload.readUInt16BE(at);
    const length = payload.readUInt16BE(at + 2);
    expect(length % 4).toBe(0); // SPC-4 7.8.17: a multiple of four
    out.set(type, payload.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  expect(at).toBe(payload.length);
  return out;
}

describe("Third-party Copy VPD page (SPC-4 7.8.17)", () => {
  it("describes the LID1 copy manager with the descriptors SPC-4 requires", async () => {
    const { run } = setup();
    const r = await run(Cdb.inquiry({ evpd: true, page: 0x8f }));
    expectGood(r);
    const page = r.data!;
    expect(page[0]).toBe(0);
    expect(page[1]).toBe(0x8f);
    expect(page.readUInt16BE(2)).toBe(page.length - 4);
    const d = descriptors(page.subarray(4));
    expect([...d.keys()]).toEqual([0x0001, 0x0004, 0x0008, 0x000c, 0x8001]);

    // Supported Commands: 83h/00h and 84h/00h,03h,04h.
    const commands = d.get(0x0001)!;
    const listLength = commands[0]!;
    expect([...commands.subarray(1, 1 + listLength)]).toEqual([
      0x83, 1, 0x00, 0x84, 3, 0x00, 0x03, 0x04,
    ]);
    expect(commands.length).toBe((listLength + 1 + 3) & ~3);

    // Parameter Data: 28 bytes, counts and lengths as RECEIVE COPY OPERATING PARAMETERS.
    const parameters = d.get(0x0004)!;
    expect(parameters.length).toBe(0x1c);
    expect(parameters.readUInt32BE(0)).toBe(0);
    expect(parameters.readUInt16BE(4)).toBe(CopyLimits.MAX_CSCD_DESCRIPTORS);
    expect(parameters.readUInt16BE(6)).toBe(CopyLimits.MAX_SEGMENT_DESCRIPTORS);
    expect(parameters.readUInt32BE(8)).toBe(CopyLimits.MAX_DESCRIPTOR_LIST_LENGTH);
    expect(parameters.readUInt32BE(12)).toBe(0);

    // Supported Descriptors: block to block segments, identification CSCD descriptors.
    const supported = d.get(0x0008)!;
    expect([...supported.subarray(0, 3)]).toEqual([2, 0x02, 0xe4]);

    // Supported CSCD Descriptor IDs: none.
    expect([...d.get(0x000c)!]).toEqual([0, 0, 0, 0]);

    // General Copy Operations.
    const general = d.get(0x8001)!;
    expect(general.length).toBe(0x20);
    expect(general.readUInt32BE(0)).toBe(CopyLimits.TOTAL_CONCURRENT_COPIES);
    expect(general.readUInt32BE(4)).toBe(CopyLimits.MAX_IDENTIFIED_CONCURRENT_COPIES);
    expect(general.readUInt32BE(8)).toBe(CopyLimits.MAX_SEGMENT_LENGTH);
  });
});

describe("transferCount", () => {
  it("picks the smallest unit in which the count fits 32 bits", () => {
    expect(transferCount(0)).toEqual({ units: 0, count: 0 });
    expect(transferCount(0xffffffff)).toEqual({ units: 0, count: 0xffffffff });
    expect(transferCount(2 ** 32)).toEqual({ units: 1, count: 2 ** 22 });
    expect(transferCount(2 ** 45 + 5)).toEqual({ units: 2, count: 2 ** 25 });
  });
});
