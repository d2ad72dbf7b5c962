import { describe, expect, it } from "vitest";
import { CopyCdb } from "../testing/copy-builders.js";
import { expectGood, setup } from "../testing/harness.js";

describe("REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", () => {
  it("reports ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET, TARGET RESET", async () => {
    const { run } = setup();
    const r = await run(CopyCdb.reportTmf());
    expectGood(r);
    const d = r.data!;
    expect(d.length).toBe(4);
    // ATS ATSS CACAS CTSS LURS QTS TRS WAKES
    expect(d[0]).toBe(0b1101_1010);
    expect(d[1]).toBe(0); // no QUERY TASK SET / QUERY UNIT ATTENTION / I_T NEXUS RESET
  });

  it("returns the extended form for REPD=1, without timeouts", async () => {
    const { run } = setup();
    const d = (await run(CopyCdb.reportTmf({ repd: true }))).data!;
    expect(d.length).toBe(16);
    expect(d[0]).toBe(0b1101_1010);
    expect(d[3]).toBe(0x0c); // ADDITIONAL DATA LENGTH
    expect(d[4]! & 1).toBe(0); // TMFTMOV
    expect(d.subarray(4).equals(Buffer.alloc(12))).toBe(true);
  });

  it("honours the allocation length", async () => {
    const { run } = setup();
    expect((await run(CopyCdb.reportTmf({ allocationLength: 1 }))).data!.length).toBe(1);
  });
});
