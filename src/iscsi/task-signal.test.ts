import { describe, expect, it } from "vitest";
import { isAbortError } from "../volume/errors.js";
import { TaskSignal } from "./task-signal.js";

describe("TaskSignal", () => {
  it("calls each listener still registered once, in order, and none after the abort", () => {
    const s = new TaskSignal();
    const calls: string[] = [];
    const a = () => calls.push("a");
    const b = () => calls.push("b");
    const c = () => calls.push("c");
    s.addEventListener("abort", a);
    s.addEventListener("abort", b);
    s.addEventListener("abort", c);
    s.removeEventListener("abort", b);
    expect(s.aborted).toBe(false);
    s.abort();
    s.abort();
    expect(calls).toEqual(["a", "c"]);
    expect(s.aborted).toBe(true);
    expect(isAbortError(s.reason)).toBe(true);
    s.addEventListener("abort", a);
    s.abort("again");
    expect(calls).toEqual(["a", "c"]);
  });

  it("keeps the reason it was given", () => {
    const s = new TaskSignal();
    s.abort("ABORT TASK");
    expect(s.reason).toBe("ABORT TASK");
  });
});
