import { describe, expect, it } from "vitest";
import { EventLog } from "./events.js";

describe("EventLog", () => {
  it("numbers events from 1 and lists those after `since`, oldest first", () => {
    const log = new EventLog();
    log.record("a", "info", "first");
    log.record("b", "warning", "second", { agent: "x" });
    log.record("c", "error", "third");
    expect(log.list().map((e) => e.id)).toEqual([1, 2, 3]);
    expect(log.list(1).map((e) => e.kind)).toEqual(["b", "c"]);
    expect(log.list(3)).toEqual([]);
    expect(log.list(1)[0]).toMatchObject({ severity: "warning", details: { agent: "x" } });
    expect(Number.isNaN(Date.parse(log.list()[0]?.time ?? ""))).toBe(false);
  });

  it("keeps only the newest events, and `since` still works across the dropped ones", () => {
    const log = new EventLog(3);
    for (let i = 0; i < 10; i++) log.record("k", "info", `e${i}`);
    expect(log.list().map((e) => e.id)).toEqual([8, 9, 10]);
    expect(log.list(2).map((e) => e.id)).toEqual([8, 9, 10]);
    expect(log.list(9).map((e) => e.id)).toEqual([10]);
  });
});
