/**
 * Where the chunks of recently written grains are, by volume address: (volume, grain) →
 * (fingerprint, container, offset, stored length), or "a hole". A read of data nobody has read
 * yet takes its grains' chunks from here instead of resolving them in LMDB (a map cursor and one
 * fingerprint-index get per grain: ≈ 100 µs of server CPU per 128 KiB read, a third of a cold
 * read's cost; docs/performance.md "Location hints"). Only the head of a volume is hinted.
 *
 * Filled when a staged write lands (write-back.ts `landed`), for the grains no later write has
 * staged since: what the map now says, with where the write stored the chunk or where dedup
 * found it. Emptied for a range by every change of the map, in the same place as the read cache
 * (pool-volume.ts `uncache`: staged writes, unmaps, copies), by a volume's deletion and by scrub
 * finding damage. So a hint never names another fingerprint than the map does.
 *
 * The location may be stale: GC moves live chunks to new containers and deletes the old ones,
 * and healing moves a damaged chunk. A chunk's content never changes, so a stale location that
 * still holds the record reads the right bytes (every record is checked against the fingerprint
 * asked for, FORMAT.md §3); one that does not fails the read, which then resolves again in LMDB
 * before it calls anything damage (volume-read.ts `readGrains`). Containers GC deletes are
 * dropped from the hints too (`dropContainer`).
 *
 * Memory: 32 bytes per hinted grain, in blocks of 1024 grains, at most `bytes` (the least
 * recently used block goes first).
 */
import { type ChunkLocation, FINGERPRINT_BYTES } from "./meta/index.js";

const GRAIN = 4096;
/** Grains per block. */
const BLOCK = 1024;
/** Bytes per hinted grain: fingerprint prefix, container, stored length, offset. */
export const HINT_BYTES = FINGERPRINT_BYTES + 16;
/** `containers` values below the first container: no hint, and a hole. */
const NONE = 0;
const HOLE = 1;
const FIRST = 2;

interface Block {
  readonly volume: number;
  readonly index: number;
  /** Per grain: NONE, HOLE, or container id + FIRST. */
  readonly containers: Uint32Array;
  readonly offsets: Float64Array;
  readonly storedLengths: Uint32Array;
  readonly fingerprints: Uint8Array;
  /** Grains hinted in this block. */
  count: number;
}

/** A grain as the hints have it: the fields of MetaStore.resolveGrains that reads use. */
export interface HintedGrain {
  readonly fingerprint: Buffer;
  readonly chunk: ChunkLocation;
}

export class LocationHints {
  readonly maxBlocks: number;
  private readonly volumes = new Map<number, Map<number, Block>>();
  /** Every block, least recently used first. */
  private readonly lru = new Set<Block>();
  /** The block `block` returned last (still held). */
  private last: Block | undefined;
  /** Reads resolved from the hints, and reads that found a grain without one. */
  hits = 0;
  misses = 0;

  /** `bytes`: what the hints may take (0: none are kept). */
  constructor(bytes: number) {
    this.maxBlocks = LocationHints.blocksFor(bytes);
  }

  /** Blocks the hints may hold in `bytes`. */
  static blocksFor(bytes: number): number {
    return Math.max(0, Math.floor(bytes / (HINT_BYTES * BLOCK)));
  }

  /** What the hints may take at most. */
  get bytes(): number {
    return this.maxBlocks * BLOCK * HINT_BYTES;
  }

  /** Grains hinted now. */
  get size(): number {
    let n = 0;
    for (const b of this.lru) n += b.count;
    return n;
  }

  /**
   * Grain `grain` of `volume` maps to `fingerprint`, stored at `at`; or is a hole (`fingerprint`
   * null). Only what the map says at this moment (module comment).
   */
  set(
    volume: number,
    grain: number,
    fingerprint: Uint8Array | null,
    at: ChunkLocation | undefined,
  ): void {
    if (this.maxBlocks === 0) return;
    if (
      fingerprint !== null &&
      (at === undefined || at.logicalLength !== GRAIN || at.containerId + FIRST > 0xffff_ffff)
    ) {
      this.invalidate(volume, grain, 1);
      return;
    }
    const b = this.block(volume, Math.floor(grain / BLOCK));
    const i = grain % BLOCK;
    if (b.containers[i] === NONE) b.count++;
    if (fingerprint === null || at === undefined) {
      b.containers[i] = HOLE;
      return;
    }
    b.containers[i] = at.containerId + FIRST;
    b.offsets[i] = at.offset;
    b.storedLengths[i] = at.storedLength;
    // A fingerprint is 32 bytes: set it as it is (a subarray per landed grain was garbage).
    b.fingerprints.set(
      fingerprint.length === FINGERPRINT_BYTES
        ? fingerprint
        : fingerprint.subarray(0, FINGERPRINT_BYTES),
      i * FINGERPRINT_BYTES,
    );
  }

  /**
   * Grains `first .. first+count` of `volume` as hinted, holes as undefined; grains for which
   * `skip(i)` is true are left out (staged, or in the read cache). Undefined when any other grain
   * has no hint: the caller resolves the range in LMDB then.
   */
  resolve(
    volume: number,
    first: number,
    count: number,
    skip: (i: number) => boolean,
  ): (HintedGrain | undefined)[] | undefined {
    const blocks = this.volumes.get(volume);
    if (blocks === undefined) return undefined;
    const out = new Array<HintedGrain | undefined>(count);
    // One copy of the fingerprints for the whole read: a block's bytes change when a later
    // write lands, and the read uses them after it has waited for its reads.
    const fps = Buffer.allocUnsafe(count * FINGERPRINT_BYTES);
    let b: Block | undefined;
    for (let k = 0; k < count; k++) {
      if (skip(k)) continue;
      const grain = first + k;
      const index = Math.floor(grain / BLOCK);
      if (b === undefined || b.index !== index) {
        b = blocks.get(index);
        if (b === undefined) {
          this.misses++;
          return undefined;
        }
        this.lru.delete(b);
        this.lru.add(b);
      }
      const i = grain % BLOCK;
      const c = b.containers[i]!;
      if (c === NONE) {
        this.misses++;
        return undefined;
      }
      if (c === HOLE) continue;
      const from = i * FINGERPRINT_BYTES;
      fps.set(b.fingerprints.subarray(from, from + FINGERPRINT_BYTES), k * FINGERPRINT_BYTES);
      out[k] = {
        fingerprint: fps.subarray(k * FINGERPRINT_BYTES, (k + 1) * FINGERPRINT_BYTES),
        chunk: {
          containerId: c - FIRST,
          offset: b.offsets[i]!,
          storedLength: b.storedLengths[i]!,
          logicalLength: GRAIN,
        },
      };
    }
    this.hits++;
    return out;
  }

  /** Grains `first .. first+count` of `volume` changed (or are changing): forget them. */
  invalidate(volume: number, first: number, count: number): void {
    const blocks = this.volumes.get(volume);
    if (blocks === undefined) return;
    const end = first + count;
    if (count > blocks.size * BLOCK) {
      // A range larger than what is hinted (an unmap of a whole volume): walk the blocks.
      for (const b of [...blocks.values()]) {
        const from = Math.max(first, b.index * BLOCK);
        const to = Math.min(end, (b.index + 1) * BLOCK);
        if (from < to) this.clearRange(b, from, to);
      }
      return;
    }
    for (let g = first; g < end; ) {
      const index = Math.floor(g / BLOCK);
      const to = Math.min(end, (index + 1) * BLOCK);
      const b = blocks.get(index);
      if (b !== undefined) this.clearRange(b, g, to);
      g = to;
    }
  }

  /** Forget a volume (deleted: its number may come back as another volume). */
  dropVolume(volume: number): void {
    const blocks = this.volumes.get(volume);
    if (blocks === undefined) return;
    for (const b of blocks.values()) this.lru.delete(b);
    this.volumes.delete(volume);
    if (this.last?.volume === volume) this.last = undefined;
  }

  /** Forget every hint that names container `containerId` (GC deletes it). */
  dropContainer(containerId: number): void {
    const value = containerId + FIRST;
    for (const b of [...this.lru]) {
      for (let i = 0; i < BLOCK; i++) {
        if (b.containers[i] === value) {
          b.containers[i] = NONE;
          b.count--;
        }
      }
      if (b.count === 0) this.remove(b);
    }
  }

  /** Forget everything. */
  clear(): void {
    this.volumes.clear();
    this.lru.clear();
    this.last = undefined;
  }

  private clearRange(b: Block, from: number, to: number): void {
    for (let g = from; g < to; g++) {
      const i = g % BLOCK;
      if (b.containers[i] !== NONE) {
        b.containers[i] = NONE;
        b.count--;
      }
    }
    if (b.count === 0) this.remove(b);
  }

  /** Block `index` of `volume`, made when missing (the least recently used may go for it). */
  private block(volume: number, index: number): Block {
    // A write sets its grains one after another: mostly the block of the grain before.
    const last = this.last;
    if (last !== undefined && last.volume === volume && last.index === index) return last;
    let blocks = this.volumes.get(volume);
    let b = blocks?.get(index);
    if (b !== undefined) {
      this.lru.delete(b);
      this.lru.add(b);
      this.last = b;
      return b;
    }
    if (blocks === undefined) {
      blocks = new Map();
      this.volumes.set(volume, blocks);
    }
    b = {
      volume,
      index,
      containers: new Uint32Array(BLOCK),
      offsets: new Float64Array(BLOCK),
      storedLengths: new Uint32Array(BLOCK),
      fingerprints: new Uint8Array(BLOCK * FINGERPRINT_BYTES),
      count: 0,
    };
    blocks.set(index, b);
    this.lru.add(b);
    while (this.lru.size > this.maxBlocks) {
      const oldest = this.lru.values().next().value as Block;
      this.remove(oldest);
    }
    this.last = b;
    return b;
  }

  private remove(b: Block): void {
    if (this.last === b) this.last = undefined;
    this.lru.delete(b);
    const blocks = this.volumes.get(b.volume);
    if (blocks?.get(b.index) !== b) return;
    blocks.delete(b.index);
    if (blocks.size === 0) this.volumes.delete(b.volume);
  }
}
