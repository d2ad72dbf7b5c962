import { describe, expect, it } from "vitest";
import { BufferPool, MIN_POOLED } from "./buffer-pool.js";

describe("BufferPool", () => {
  it("hands out plain or shared buffers of pooled sizes and takes them back for reuse", () => {
    const pool = new BufferPool();
    const a = pool.acquire(128 * 1024);
    expect(a.buffer).toBeInstanceOf(ArrayBuffer);
    // Shared: a chunk worker thread can open a read's grains straight into it (OpenJob.out).
    const s = pool.acquire(128 * 1024, true);
    expect(s.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(s.length).toBe(128 * 1024);
    pool.release(a);
    pool.release(s);
    expect(pool.acquire(128 * 1024, true)).toBe(s); // each kind comes back as itself
    expect(pool.acquire(128 * 1024)).toBe(a);
    expect(pool.acquire(128 * 1024)).not.toBe(a); // given out again: a new one
  });

  it("leaves small buffers, views and foreign buffers to the GC", () => {
    const pool = new BufferPool();
    const small = pool.acquire(MIN_POOLED - 1);
    expect(small.buffer).not.toBeInstanceOf(SharedArrayBuffer);
    pool.release(small);
    const big = pool.acquire(MIN_POOLED);
    pool.release(big.subarray(1)); // a view, not the buffer handed out
    const foreign = Buffer.alloc(MIN_POOLED);
    pool.release(foreign);
    const next = pool.acquire(MIN_POOLED);
    expect(next).not.toBe(big);
    expect(next).not.toBe(foreign);
  });
});
