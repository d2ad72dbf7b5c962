import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { commitFailed, openDbs } from "./dbs.js";
import { MetaError, MetaErrorCode } from "./errors.js";

describe("lmdb-js commit failures", () => {
  it("become MetaError(CommitFailed) carrying the LMDB error", async () => {
    const lmdbError = new Error("MDB_BAD_TXN: reserved freelist had a data entry with zero-size");
    const commitError = Promise.reject(lmdbError);
    commitError.catch(() => undefined);
    const failure = Object.assign(new Error("Commit failed (see commitError for details)"), {
      commitError,
    });
    const e = await commitFailed(failure).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(MetaError);
    expect((e as MetaError).code).toBe(MetaErrorCode.CommitFailed);
    expect((e as MetaError).message).toMatch(/metadata commit failed: MDB_BAD_TXN/);
    expect((e as MetaError).cause).toBe(lmdbError);
  });

  it("leave other errors as they are", async () => {
    const other = new Error("something else");
    await expect(commitFailed(other)).rejects.toBe(other);
  });

  it("child transactions still commit and return their value through the wrapper", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sanmux-dbs-"));
    try {
      const dbs = openDbs({ path: dir, mapSize: 64 * 1024 * 1024 });
      const value = await dbs.root.childTransaction(() => {
        void dbs.meta.put(Buffer.from("k"), Buffer.from("v"));
        return 42;
      });
      expect(value).toBe(42);
      expect(dbs.meta.get(Buffer.from("k"))?.toString()).toBe("v");
      await dbs.root.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
