/**
 * Test fixtures for the pool metadata: temporary stores, deterministic fingerprints and
 * locations, raw access to the LMDB environment for planting damage.
 */
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ChunkLocation } from "../codec.js";
import { type MetaDbs, openDbs } from "../dbs.js";
import { MetaStore, type MetaStoreOptions } from "../store.js";

/** A fingerprint derived from a label (tests only: the pool's is a keyed SHA-256 of the data). */
export function fp(label: string | number): Buffer {
  return createHash("sha256").update(`chunk:${label}`).digest();
}

/**
 * The metadata's form of `fp(label)`: its first 16 bytes (codec.ts FINGERPRINT_BYTES), as the
 * store returns fingerprints (it takes the full 32 bytes or these).
 */
export function sfp(label: string | number): Buffer {
  return fp(label).subarray(0, 16);
}

/** A location in `containerId`; offsets advance per call so that copies are distinct. */
export function loc(
  containerId: number,
  offset: number,
  storedLength = 2000,
  logicalLength = 4096,
): ChunkLocation {
  return { containerId, offset, storedLength, logicalLength };
}

/**
 * Two dead chunks for GC tests: "a" and "b" in container 3 (offsets 0 and 2000), mapped at grains
 * 0 and 1 of volume 1, then unmapped, with the journal applied (their refcounts 0).
 */
export async function twoDeadChunks(store: MetaStore): Promise<void> {
  await store.writeGrains(1, [
    { grain: 0, fingerprint: fp("a"), chunk: loc(3, 0) },
    { grain: 1, fingerprint: fp("b"), chunk: loc(3, 2000) },
  ]);
  await store.unmapGrains(1, 0, 2);
  await store.applyJournal();
}

export function tempDir(prefix = "sanmux-meta-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface TempStore {
  readonly dir: string;
  store: MetaStore;
  /** Closes and opens the store again on the same directory. */
  reopen(): Promise<MetaStore>;
  /** Closes the store and removes the directory. */
  cleanup(): Promise<void>;
}

export async function tempStore(options: Partial<MetaStoreOptions> = {}): Promise<TempStore> {
  const dir = tempDir();
  const open = () => MetaStore.open({ path: dir, noSync: true, ...options });
  const t: TempStore = {
    dir,
    store: await open(),
    async reopen() {
      await t.store.close();
      t.store = await open();
      return t.store;
    },
    async cleanup() {
      await t.store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return t;
}

/** Opens the environment directly (the store must be closed), runs `fn`, closes it. */
export async function withRawDbs(dir: string, fn: (dbs: MetaDbs) => void): Promise<void> {
  const dbs = openDbs({ path: dir, noSync: true });
  try {
    dbs.root.transactionSync(() => fn(dbs));
  } finally {
    await dbs.root.close();
  }
}

/**
 * A reproducible random source for randomized tests and fixtures: `rand(n)` in [0, n), from
 * xorshift32 (Marsaglia), so that a seed printed by a failing run replays the same history.
 */
export function xorshift32(seed: number): (n: number) => number {
  let s = seed >>> 0 || 1;
  return (n: number) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s % n;
  };
}
