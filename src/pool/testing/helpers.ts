/**
 * Test fixtures for the pool: a pool in a temporary directory with a random master key, and
 * deterministic grain contents. Tests only (nothing in the server imports this).
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { masterKeyFromBytes } from "../../crypto/index.js";
import { Pool, type PoolOpenOptions } from "../pool.js";

export interface TempPool {
  readonly dir: string;
  readonly keyBytes: Buffer;
  pool: Pool;
  /** Close and open again on the same directory (and key, unless another is given). */
  reopen(options?: Partial<PoolOpenOptions>): Promise<Pool>;
  cleanup(): Promise<void>;
}

export async function tempPool(options: Partial<PoolOpenOptions> = {}): Promise<TempPool> {
  const dir = mkdtempSync(join(tmpdir(), "sanmux-pool-"));
  const keyBytes = randomBytes(32);
  const open = (o: Partial<PoolOpenOptions> = {}) =>
    Pool.open({
      dir: join(dir, "pool"),
      masterKey: masterKeyFromBytes(keyBytes),
      ...options,
      ...o,
    });
  const t: TempPool = {
    dir,
    keyBytes,
    pool: await open(),
    async reopen(o) {
      await t.pool.close();
      t.pool = await open(o);
      return t.pool;
    },
    async cleanup() {
      await t.pool.close().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return t;
}

/** `length` bytes that depend only on `label`: distinct labels, distinct (incompressible) data. */
export function pattern(label: string | number, length: number): Buffer {
  const out = Buffer.alloc(length);
  let block = createHash("sha256").update(`pattern:${label}`).digest();
  for (let at = 0; at < length; at += block.length) {
    block.copy(out, at);
    block = createHash("sha256").update(block).digest();
  }
  return out;
}

/** The grain the crash worker's markers live in (no other operation touches it). */
export const MARKER_GRAIN = 511;
const MAGIC = Buffer.from("SXCRASH1", "latin1");

/**
 * A self-describing grain of version `version`: 8 sectors of 512 bytes, each holding a magic,
 * the version, its sector number and bytes derived from both, so that any sector read back is
 * either zeros, or exactly sector `k` of some version, or garbage (`parseSector` tells which).
 */
export function versioned(version: number): Buffer {
  const out = Buffer.alloc(4096);
  for (let k = 0; k < 8; k++) {
    const s = out.subarray(k * 512, (k + 1) * 512);
    MAGIC.copy(s, 0);
    s.writeDoubleLE(version, 8);
    s.writeUInt32LE(k, 16);
    pattern(`${version}:${k}`, 512 - 20).copy(s, 20);
  }
  return out;
}

/** "zero", a { version, sector }, or "garbage". */
export function parseSector(s: Buffer): "zero" | "garbage" | { version: number; sector: number } {
  if (s.every((b) => b === 0)) return "zero";
  if (!s.subarray(0, 8).equals(MAGIC)) return "garbage";
  const version = s.readDoubleLE(8);
  const sector = s.readUInt32LE(16);
  if (sector > 7 || !s.subarray(20).equals(pattern(`${version}:${sector}`, 512 - 20))) {
    return "garbage";
  }
  return { version, sector };
}
