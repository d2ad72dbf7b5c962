import { describe, expect, it } from "vitest";
import { BufferPool, MIN_POOLED } from "./buffer-pool.js";

describe("BufferPool", () => {
  it("hands out shared memory for pooled sizes and takes it back for reuse", () => {
    const pool = new BufferPool();
    const a = pool.acquire(128 * 1024);
    // Shared: a chunk worker thread can open a read's grains straight into it (OpenJob.out).
    expect(a.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(a.length).toBe(128 * 1024);
    pool.release(a);
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
