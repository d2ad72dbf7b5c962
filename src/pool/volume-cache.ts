/**
 * Plaintext of grains read, by volume address (volume number, grain): the pool's own page cache.
 * A hit costs a Map lookup and a 4 KiB copy, where a miss costs the map and index lookups in
 * LMDB, a pread and a GCM open. It is what lets a host read back what it, or a restore, read a
 * moment ago at memory speed, as tgt and LIO do through the kernel's page cache of their backing
 * files (docs/performance.md, "Read cache").
 *
 * Coherence (volume-read.ts, "Read cache"): the read path captures the volume's `epoch` in the
 * same turn as it looks at the staged grains and resolves the map; what it then reads is offered
 * with that epoch, and kept only when the epoch has not moved. Every operation that changes a
 * volume's map (a write, once its grains are staged; an unmap; a copy into it) calls `invalidate`
 * for its range once the change is visible and before it completes, which moves the epoch and
 * drops the range. So an entry never holds content older than a completed change, and a read
 * that raced with a change keeps nothing. Only the head is cached (snapshot views are not), and
 * only grains that passed every check of the read path.
 *
 * Memory: slabs of up to 1 GiB, allocated when their first slot is used and taken by the
 * system page by page as slots fill (an idle cache costs nothing but its bookkeeping arrays), up
 * to `bytes`. Replacement: while there are unused slots every read
 * grain is kept; once full, CLOCK (a hit sets the slot's bit; the hand clears bits until it
 * finds a slot without one) with ghost admission: a grain is admitted from its second read while
 * the first is remembered (one ghost slot per cache slot, no data), so a scan larger than the
 * cache does not flush what is read again.
 */
const GRAIN = 4096;
/**
 * Slots per slab: 1 GiB. Slabs are few and large because V8 counts each new ArrayBuffer as
 * external memory and collects garbage as it grows: 16 MiB slabs made filling a cache of 1 GiB
 * cost 45 collections (16 % of the main thread during a first sequential read), one slab one. The
 * memory is still taken page by page as it is written (the allocation is not zeroed).
 */
const SLAB_SLOTS = 262_144;

/** What the cache holds of one volume. */
export interface VolumeEntries {
  /** Moves on every invalidation (module comment); unique across volumes and their lifetimes. */
  epoch: number;
  /** grain → slot */
  readonly grains: Map<number, number>;
}

export class VolumeCache {
  readonly slots: number;
  private readonly slabs: Buffer[] = [];
  private readonly volumes = new Map<number, VolumeEntries>();
  /** Volume number + 1 of what a slot holds; 0 = free (no fill needed: fresh pages stay out). */
  private readonly slotVolume: Float64Array;
  private readonly slotGrain: Float64Array;
  private readonly referenced: Uint8Array;
  /** Slots freed by invalidation, used before the hand evicts anything. */
  private readonly free: number[] = [];
  /** Slots `fresh ..` have never been used. */
  private fresh = 0;
  private hand = 0;
  /** Grains read once recently, direct-mapped by hash: volume + 1 (0 = empty), grain. */
  private readonly ghostVolume: Float64Array;
  private readonly ghostGrain: Float64Array;
  private clock = 0;
  /** Grains served from the cache, and grains looked for and not found. */
  hits = 0;
  misses = 0;

  /** `bytes`: capacity (rounded down to whole grains); 0 keeps nothing. */
  constructor(bytes: number) {
    this.slots = Math.max(0, Math.floor(bytes / GRAIN));
    this.slotVolume = new Float64Array(this.slots);
    this.slotGrain = new Float64Array(this.slots);
    this.referenced = new Uint8Array(this.slots);
    this.ghostVolume = new Float64Array(this.slots);
    this.ghostGrain = new Float64Array(this.slots);
  }

  /** Grains held now. */
  get size(): number {
    return this.fresh - this.free.length;
  }

  /** Bytes of slab allocated so far. */
  get allocatedBytes(): number {
    let n = 0;
    for (const s of this.slabs) n += s.length;
    return n;
  }

  /** What is held of `volume`, if anything (for a run of `get`s). */
  entries(volume: number): VolumeEntries | undefined {
    return this.volumes.get(volume);
  }

  /** The epoch a read of `volume` starts at (module comment). */
  epoch(volume: number): number {
    let e = this.volumes.get(volume);
    if (e === undefined) {
      if (this.slots === 0) return -1;
      e = { epoch: ++this.clock, grains: new Map() };
      this.volumes.set(volume, e);
    }
    return e.epoch;
  }

  /** Copy grain `grain` of `entries` into `out` at `at`, if held. */
  get(entries: VolumeEntries, grain: number, out: Uint8Array, at: number): boolean {
    const slot = entries.grains.get(grain);
    if (slot === undefined) {
      this.misses++;
      return false;
    }
    this.referenced[slot] = 1;
    const slab = this.slabs[Math.floor(slot / SLAB_SLOTS)]!;
    const from = (slot % SLAB_SLOTS) * GRAIN;
    out.set(slab.subarray(from, from + GRAIN), at);
    this.hits++;
    return true;
  }

  /**
   * Copy grains `first .. first+count` of `entries` into `out` from `at`, if all are held; else
   * copy nothing and return false. Grains a sequential read filled lie in consecutive slots:
   * one copy for the lot (a 128 KiB copy costs a fraction of 32 copies of 4 KiB).
   */
  getRun(
    entries: VolumeEntries,
    first: number,
    count: number,
    out: Uint8Array,
    at: number,
  ): boolean {
    const { grains } = entries;
    const slot0 = grains.get(first);
    if (slot0 === undefined) return false;
    let consecutive =
      Math.floor(slot0 / SLAB_SLOTS) === Math.floor((slot0 + count - 1) / SLAB_SLOTS);
    for (let i = 1; i < count; i++) {
      const slot = grains.get(first + i);
      if (slot === undefined) return false;
      if (slot !== slot0 + i) consecutive = false;
    }
    if (!consecutive) {
      for (let i = 0; i < count; i++) this.get(entries, first + i, out, at + i * GRAIN);
      return true;
    }
    this.referenced.fill(1, slot0, slot0 + count);
    const slab = this.slabs[Math.floor(slot0 / SLAB_SLOTS)]!;
    const from = (slot0 % SLAB_SLOTS) * GRAIN;
    out.set(slab.subarray(from, from + count * GRAIN), at);
    this.hits += count;
    return true;
  }

  /**
   * Offer `src[at..at+4096)`, grain `grain` of `volume` as read by a read that started at
   * `epoch`: kept when the epoch still holds and there is room (module comment).
   */
  offer(volume: number, epoch: number, grain: number, src: Uint8Array, at: number): void {
    const slot = this.place(volume, epoch, grain);
    if (slot === undefined) return;
    this.slab(slot).set(src.subarray(at, at + GRAIN), (slot % SLAB_SLOTS) * GRAIN);
  }

  /**
   * `offer` of `count` grains from `grain`, back to back in `src` from `at`: where they get
   * consecutive slots (a cache filling up), one copy for the lot.
   */
  offerRun(
    volume: number,
    epoch: number,
    grain: number,
    count: number,
    src: Uint8Array,
    at: number,
  ): void {
    for (let i = 0; i < count; ) {
      const slot = this.place(volume, epoch, grain + i);
      if (slot === undefined) {
        i++;
        continue;
      }
      // Grains i .. i+n got slots slot .. slot+n-1 (in one slab); `other`: grain i+n got a
      // slot elsewhere (copied alone), or undefined.
      let n = 1;
      let other: number | undefined;
      const room = Math.min(count - i, SLAB_SLOTS - (slot % SLAB_SLOTS));
      while (n < room) {
        const next = this.place(volume, epoch, grain + i + n);
        if (next !== slot + n) {
          other = next;
          break;
        }
        n++;
      }
      const from = at + i * GRAIN;
      this.slab(slot).set(src.subarray(from, from + n * GRAIN), (slot % SLAB_SLOTS) * GRAIN);
      i += n;
      if (other !== undefined) {
        const o = at + i * GRAIN;
        this.slab(other).set(src.subarray(o, o + GRAIN), (other % SLAB_SLOTS) * GRAIN);
        i++;
      }
    }
  }

  /** A slot for grain `grain` of `volume`, now its own, when the read at `epoch` may keep it. */
  private place(volume: number, epoch: number, grain: number): number | undefined {
    const e = this.volumes.get(volume);
    if (e === undefined || e.epoch !== epoch || e.grains.has(grain)) return undefined;
    const slot = this.take(volume, grain);
    if (slot === undefined) return undefined;
    e.grains.set(grain, slot);
    this.slotVolume[slot] = volume + 1;
    this.slotGrain[slot] = grain;
    this.referenced[slot] = 0;
    return slot;
  }

  /** The slab holding `slot`, allocated on first use. */
  private slab(slot: number): Buffer {
    const s = Math.floor(slot / SLAB_SLOTS);
    let slab = this.slabs[s];
    if (slab === undefined) {
      slab = Buffer.allocUnsafeSlow(Math.min(SLAB_SLOTS, this.slots - s * SLAB_SLOTS) * GRAIN);
      this.slabs[s] = slab;
    }
    return slab;
  }

  /** Grains `first .. first+count` of `volume` changed (or are changing): drop them. */
  invalidate(volume: number, first: number, count: number): void {
    const e = this.volumes.get(volume);
    if (e === undefined) return;
    e.epoch = ++this.clock;
    const { grains } = e;
    if (grains.size === 0) return;
    const end = first + count;
    if (count <= grains.size) {
      for (let g = first; g < end; g++) {
        const slot = grains.get(g);
        if (slot === undefined) continue;
        grains.delete(g);
        this.release(slot);
      }
      return;
    }
    for (const [g, slot] of grains) {
      if (g < first || g >= end) continue;
      grains.delete(g);
      this.release(slot);
    }
  }

  /** Forget a volume (deleted): its number may come back as another volume. */
  dropVolume(volume: number): void {
    const e = this.volumes.get(volume);
    if (e === undefined) return;
    for (const slot of e.grains.values()) this.release(slot);
    this.volumes.delete(volume);
  }

  /** Forget everything (scrub found damage: a read of it must report it, not serve a copy). */
  clear(): void {
    for (const volume of [...this.volumes.keys()]) this.dropVolume(volume);
  }

  /** A slot for (`volume`, `grain`), or undefined when it is not admitted (module comment). */
  private take(volume: number, grain: number): number | undefined {
    if (this.slots === 0) return undefined;
    const freed = this.free.pop();
    if (freed !== undefined) return freed;
    if (this.fresh < this.slots) return this.fresh++;
    const g = (Math.imul(volume ^ grain, 0x9e3779b1) >>> 0) % this.slots;
    if (this.ghostVolume[g] !== volume + 1 || this.ghostGrain[g] !== grain) {
      this.ghostVolume[g] = volume + 1;
      this.ghostGrain[g] = grain;
      return undefined;
    }
    this.ghostVolume[g] = 0;
    while (this.referenced[this.hand] === 1) {
      this.referenced[this.hand] = 0;
      this.hand = (this.hand + 1) % this.slots;
    }
    const slot = this.hand;
    this.hand = (this.hand + 1) % this.slots;
    const owner = this.slotVolume[slot]! - 1;
    this.volumes.get(owner)?.grains.delete(this.slotGrain[slot]!);
    return slot;
  }

  private release(slot: number): void {
    this.slotVolume[slot] = 0;
    this.referenced[slot] = 0;
    this.free.push(slot);
  }
}
