/**
 * Plaintext of recently read grains, by where their chunk lies (container number, record offset):
 * for the grains many readers want at once — a snapshot mapped read-only to many agents, a golden
 * image every host boots from — which then cost one pread and one GCM open, not one per reader.
 * It does not speed up a scan larger than itself, so it is no answer to a sequential benchmark;
 * and it must not slow one down: a grain is admitted only when it is read a second time while the
 * first read is still remembered (a "ghost" table of recent locations, one slot per cache slot, no
 * data), so a scan, which reads each grain once, stores nothing. Copying every grain of a scan
 * into the slab cost 3 µs per grain (bench/pool-volume.mjs, sequential reads: 12 → 15 µs).
 *
 * A location never changes content while the process runs: records are appended, never rewritten
 * in place (FORMAT.md §1; a torn tail is truncated at open, before any read), and container
 * numbers are never reused (registry.ts). Entries of a container are dropped when it is deleted
 * (ChunkReader.drop). Only grains that passed every check (header, fingerprint, GCM tag, codec)
 * are stored, and reads of records scrub found damaged bypass the cache.
 *
 * Memory: one slab of `bytes` allocated on first use (no per-grain buffers for the GC to trace),
 * plus a Map entry per grain. CLOCK replacement: a hit sets the grain's bit; the hand clears bits
 * until it finds a grain without one, and reuses its slot.
 */
const GRAIN = 4096;

export class GrainCache {
  readonly slots: number;
  private slab: Buffer | undefined;
  /** container number → record offset → slot */
  private readonly where = new Map<number, Map<number, number>>();
  private readonly slotContainer: Float64Array;
  private readonly slotOffset: Float64Array;
  private readonly referenced: Uint8Array;
  private hand = 0;
  /** Locations read once recently, direct-mapped by hash: container + 1 (0 = empty), offset. */
  private readonly ghostContainer: Float64Array;
  private readonly ghostOffset: Float64Array;
  /** Grains served. */
  hits = 0;

  /** `bytes`: capacity (rounded down to whole grains); 0 keeps nothing. */
  constructor(bytes: number) {
    this.slots = Math.max(0, Math.floor(bytes / GRAIN));
    this.slotContainer = new Float64Array(this.slots).fill(-1);
    this.slotOffset = new Float64Array(this.slots);
    this.referenced = new Uint8Array(this.slots);
    this.ghostContainer = new Float64Array(this.slots);
    this.ghostOffset = new Float64Array(this.slots);
  }

  /** Whether the grain of (`container`, `offset`) is held. */
  has(container: number, offset: number): boolean {
    return this.where.get(container)?.has(offset) ?? false;
  }

  /** Copy the grain of the record at (`container`, `offset`) into `out` at `at`, if held. */
  get(container: number, offset: number, out: Uint8Array, at: number): boolean {
    const slot = this.where.get(container)?.get(offset);
    if (slot === undefined || this.slab === undefined) return false;
    this.referenced[slot] = 1;
    out.set(this.slab.subarray(slot * GRAIN, (slot + 1) * GRAIN), at);
    this.hits++;
    return true;
  }

  /**
   * Offer `src[at..at+4096)`, the plaintext of the record at (`container`, `offset`), just read:
   * kept when the location was read recently already (see the module comment).
   */
  put(container: number, offset: number, src: Uint8Array, at: number): void {
    if (this.slots === 0) return;
    let inContainer = this.where.get(container);
    if (inContainer?.has(offset)) return;
    const g = (Math.imul(container ^ (offset / GRAIN), 0x9e3779b1) >>> 0) % this.slots;
    if (this.ghostContainer[g] !== container + 1 || this.ghostOffset[g] !== offset) {
      this.ghostContainer[g] = container + 1;
      this.ghostOffset[g] = offset;
      return;
    }
    this.ghostContainer[g] = 0;
    this.slab ??= Buffer.allocUnsafeSlow(this.slots * GRAIN);
    while (this.referenced[this.hand] === 1) {
      this.referenced[this.hand] = 0;
      this.hand = (this.hand + 1) % this.slots;
    }
    const slot = this.hand;
    this.hand = (this.hand + 1) % this.slots;
    const old = this.slotContainer[slot]!;
    if (old >= 0) {
      const m = this.where.get(old);
      m?.delete(this.slotOffset[slot]!);
      if (m?.size === 0) this.where.delete(old);
    }
    if (inContainer === undefined) {
      inContainer = new Map();
      this.where.set(container, inContainer);
    }
    inContainer.set(offset, slot);
    this.slotContainer[slot] = container;
    this.slotOffset[slot] = offset;
    this.slab.set(src.subarray(at, at + GRAIN), slot * GRAIN);
  }

  /** Forget every grain of a container (before its file is deleted). */
  dropContainer(container: number): void {
    const m = this.where.get(container);
    if (m === undefined) return;
    for (const slot of m.values()) {
      this.slotContainer[slot] = -1;
      this.referenced[slot] = 0;
    }
    this.where.delete(container);
  }

  /** Grains held now. */
  get size(): number {
    let n = 0;
    for (const m of this.where.values()) n += m.size;
    return n;
  }
}
