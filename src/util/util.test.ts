import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { readJsonFile, writeFileAtomic, writeJsonAtomic } from "./atomic-file.js";
import { childFor, createLogger } from "./log.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "sanmux-util-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("atomic files", () => {
  it("writes, replaces and reads JSON, leaving no temporary file", async () => {
    const path = join(dir, "x.json");
    expect(await readJsonFile(path)).toBeUndefined();
    await writeJsonAtomic(path, { a: 1 });
    await writeJsonAtomic(path, { a: 2, b: [1] });
    expect(await readJsonFile(path)).toEqual({ a: 2, b: [1] });
    expect(await readFile(path, "utf8")).toBe('{\n  "a": 2,\n  "b": [\n    1\n  ]\n}\n');
    expect(await readdir(dir)).toEqual(["x.json"]);
  });

  it("rejects a corrupt JSON file rather than treating it as missing", async () => {
    const path = join(dir, "bad.json");
    await writeFileAtomic(path, "{");
    await expect(readJsonFile(path)).rejects.toThrow(/not valid JSON/);
  });

  it("fails cleanly when the directory does not exist", async () => {
    await expect(writeJsonAtomic(join(dir, "no", "x.json"), 1)).rejects.toThrow(/ENOENT/);
  });
});

function sink(): { stream: Writable; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      chunks.push(String(chunk));
      callback();
    },
  });
  return {
    stream,
    lines: () =>
      chunks
        .join("")
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

describe("createLogger", () => {
  it("writes JSON lines at the level from SANMUX_LOG_LEVEL, with child bindings", () => {
    const out = sink();
    const log = createLogger({ destination: out.stream, env: { SANMUX_LOG_LEVEL: "warn" } });
    log.info("hidden");
    childFor(log, { initiator: "iqn.x", channel: 3 }).warn({ chap: { secret: "s3cr3t" } }, "shown");
    const lines = out.lines();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 40,
      name: "sanmux",
      initiator: "iqn.x",
      channel: 3,
      msg: "shown",
      chap: { secret: "[redacted]" },
    });
    expect(typeof lines[0]?.time).toBe("string");
  });

  it("defaults to info and survives an unknown level", () => {
    const out = sink();
    const log = createLogger({ destination: out.stream, env: { SANMUX_LOG_LEVEL: "loud" } });
    log.debug("hidden");
    log.info("shown");
    expect(out.lines().map((l) => l.msg)).toEqual([
      'unknown log level in SANMUX_LOG_LEVEL; using "info"',
      "shown",
    ]);
    expect(createLogger({ destination: out.stream, env: {} }).level).toBe("info");
  });
});
