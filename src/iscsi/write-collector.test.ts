import { describe, expect, it } from "vitest";
import { WriteCollector } from "./write-collector.js";

const UNSOLICITED = 0xffffffff;

function ttts() {
  let n = 100;
  return () => n++;
}

describe("WriteCollector", () => {
  it("completes from immediate data alone", () => {
    const c = new WriteCollector(8, 8, 1024, 1);
    c.acceptImmediate(Buffer.from("abcdefgh"));
    expect(c.complete).toBe(true);
    expect(c.buffer.toString()).toBe("abcdefgh");
    expect(c.nextR2T(ttts())).toBeUndefined();
  });

  it("solicits the rest after immediate data in MaxBurstLength pieces, one at a time", () => {
    // EDTL 10, 2 bytes immediate (InitialR2T=Yes), MaxBurstLength 4, MaxOutstandingR2T 1:
    // R2Ts must ask for [2,6), [6,10) in turn.
    const c = new WriteCollector(10, 2, 4, 1);
    const next = ttts();
    c.acceptImmediate(Buffer.from("ab"));
    const r1 = c.nextR2T(next);
    expect(r1).toEqual({ ttt: 100, r2tSN: 0, offset: 2, length: 4 });
    expect(c.nextR2T(next)).toBeUndefined(); // window of one outstanding R2T
    expect(c.accept(100, 0, 2, Buffer.from("cd"), false)).toBeUndefined();
    expect(c.accept(100, 1, 4, Buffer.from("ef"), true)).toBeUndefined();
    const r2 = c.nextR2T(next);
    expect(r2).toEqual({ ttt: 101, r2tSN: 1, offset: 6, length: 4 });
    expect(c.accept(101, 0, 6, Buffer.from("ghij"), true)).toBeUndefined();
    expect(c.complete).toBe(true);
    expect(c.buffer.toString()).toBe("abcdefghij");
  });

  it("takes unsolicited Data-Out up to FirstBurstLength and checks its DataSN", () => {
    const c = new WriteCollector(6, 4, 16, 4);
    const next = ttts();
    // R2T for the part beyond the first burst may go out at once.
    expect(c.nextR2T(next)).toEqual({ ttt: 100, r2tSN: 0, offset: 4, length: 2 });
    expect(c.accept(UNSOLICITED, 0, 0, Buffer.from("ab"), false)).toBeUndefined();
    expect(c.accept(UNSOLICITED, 2, 2, Buffer.from("cd"), true)).toMatch(/DataSN 2, expected 1/);
  });

  it("rejects data outside the R2T, unknown tags and sequences that end short", () => {
    const c = new WriteCollector(8, 0, 8, 1);
    const r = c.nextR2T(ttts())!;
    expect(c.accept(r.ttt, 0, 6, Buffer.from("xxxx"), true)).toMatch(/outside its R2T/);
    expect(c.accept(999, 0, 0, Buffer.from("x"), true)).toMatch(/unknown Target Transfer Tag/);
    expect(c.accept(r.ttt, 0, 0, Buffer.from("xx"), true)).toMatch(/2?6 bytes missing|missing/);
    expect(c.accept(UNSOLICITED, 0, 0, Buffer.from("x"), true)).toMatch(/unsolicited/);
  });

  it("solicits the rest of a first burst the initiator ended early", () => {
    const c = new WriteCollector(8, 8, 8, 1);
    const next = ttts();
    expect(c.nextR2T(next)).toBeUndefined();
    expect(c.accept(UNSOLICITED, 0, 0, Buffer.from("abc"), true)).toBeUndefined();
    expect(c.nextR2T(next)).toEqual({ ttt: 100, r2tSN: 0, offset: 3, length: 5 });
    expect(c.accept(100, 0, 3, Buffer.from("defgh"), true)).toBeUndefined();
    expect(c.buffer.toString()).toBe("abcdefgh");
  });
});
