import { describe, expect, it } from "vitest";
import { decodeLun, encodeLun, MAX_LUN } from "./lun.js";

describe("LUN encoding (SAM-5 single level)", () => {
  it.each([
    [0, [0, 0, 0, 0, 0, 0, 0, 0]],
    [1, [0, 1, 0, 0, 0, 0, 0, 0]],
    [255, [0, 0xff, 0, 0, 0, 0, 0, 0]],
    [256, [0x41, 0x00, 0, 0, 0, 0, 0, 0]],
    [0x1234, [0x52, 0x34, 0, 0, 0, 0, 0, 0]],
    [MAX_LUN, [0x7f, 0xff, 0, 0, 0, 0, 0, 0]],
  ])("LUN %i ⇄ %j", (lun, bytes) => {
    expect([...encodeLun(lun)]).toEqual(bytes);
    expect(decodeLun(Buffer.from(bytes))).toBe(lun);
  });

  it("round-trips every LUN", () => {
    for (let lun = 0; lun <= MAX_LUN; lun++) expect(decodeLun(encodeLun(lun))).toBe(lun);
  });

  it("decodes flat addressing of small LUNs too", () => {
    expect(decodeLun(Buffer.from([0x40, 5, 0, 0, 0, 0, 0, 0]))).toBe(5);
  });

  it.each([-1, 16384, 1.5, Number.NaN])("refuses to encode %s", (lun) => {
    expect(() => encodeLun(lun)).toThrow(RangeError);
  });

  it.each([
    ["a second level", [0, 1, 0, 2, 0, 0, 0, 0]],
    ["a bus identifier", [0x01, 1, 0, 0, 0, 0, 0, 0]],
    ["logical unit addressing", [0x80, 1, 0, 0, 0, 0, 0, 0]],
    ["extended addressing", [0xc0, 1, 0, 0, 0, 0, 0, 0]],
  ])("decodes %s as -1", (_what, bytes) => {
    expect(decodeLun(Buffer.from(bytes))).toBe(-1);
  });

  it("decodes at an offset", () => {
    const buf = Buffer.concat([Buffer.alloc(3), encodeLun(300)]);
    expect(decodeLun(buf, 3)).toBe(300);
  });
});
