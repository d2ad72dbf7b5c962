/**
 * A temporary pool per test (vitest): call at the top of a test file; each call of the function it
 * returns makes a pool that is closed and deleted after the test. Apart from helpers.ts, which the
 * crash children import outside vitest.
 */
import { afterEach } from "vitest";
import { type TempPool, tempPool } from "./helpers.js";

export function tempPoolPerTest(): (options?: Parameters<typeof tempPool>[0]) => Promise<TempPool> {
  const made: TempPool[] = [];
  afterEach(async () => {
    for (const t of made.splice(0)) await t.cleanup();
  });
  return async (options) => {
    const t = await tempPool(options);
    made.push(t);
    return t;
  };
}
