/**
 * An in-memory `Volume` for tests (of this layer and of others). Sparse: only written blocks
 * take memory, so huge capacities (2^40 blocks) are cheap.
 *
 * Observability, all opt-in or read-only:
 *  - `calls`: every call made to the volume, in order (op, lba, blocks, fua);
 *  - `trackDurability`: writes without FUA (and unmaps) stay volatile until `flush`; `crash()`
 *    drops everything volatile and `readDurable()` shows what would survive a crash;
 *  - `failNext(op, error)`: make the next call of `op` reject with `error`;
 *  - `resize(blocks)`: change the capacity (as a grown volume would).
 *
 * It enforces the Volume contract's error semantics (StorageError OUT_OF_RANGE, NOT_READY after
 * close) so that callers are tested against them.
 */
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import type { BlockStatus, Volume, WriteOptions } from "../../volume/volume.js";

export type VolumeOp = "read" | "write" | "flush" | "unmap" | "blockStatus";

export interface VolumeCall {
  readonly op: VolumeOp;
  readonly lba?: number;
  readonly blocks?: number;
  readonly fua?: boolean;
}

export interface MemoryVolumeOptions {
  readonly id?: string;
  readonly name?: string;
  /** 512 (default) or 4096. */
  readonly blockSize?: number;
  /** Capacity in logical blocks. */
  readonly blocks: number;
  /** Keep a durable image separate from the visible one (see the module comment). */
  readonly trackDurability?: boolean;
}

let counter = 0;

export class MemoryVolume implements Volume {
  readonly id: string;
  readonly name: string;
  readonly blockSize: number;
  readonly calls: VolumeCall[] = [];
  /** Number of `flush` calls that resolved. */
  flushCount = 0;
  /** Number of `write` calls with `fua: true` that resolved. */
  fuaWriteCount = 0;
  private capacity: number;
  private readonly visible = new Map<number, Buffer>();
  private durable: Map<number, Buffer> | undefined;
  private readonly failures = new Map<VolumeOp, unknown[]>();
  private closed = false;

  constructor(options: MemoryVolumeOptions) {
    counter++;
    this.id = options.id ?? `00000000-0000-4000-8000-${counter.toString(16).padStart(12, "0")}`;
    this.name = options.name ?? `memory-${counter}`;
    this.blockSize = options.blockSize ?? 512;
    this.capacity = options.blocks;
    if (options.trackDurability) this.durable = new Map();
  }

  blockCount(): number {
    return this.capacity;
  }

  /** Change the capacity; blocks beyond a smaller capacity are dropped. */
  resize(blocks: number): void {
    this.capacity = blocks;
    for (const lba of this.visible.keys()) if (lba >= blocks) this.visible.delete(lba);
  }

  /** The next call of `op` rejects with `error` (queued: several calls fail in order). */
  failNext(op: VolumeOp, error: unknown): void {
    const queue = this.failures.get(op) ?? [];
    queue.push(error);
    this.failures.set(op, queue);
  }

  async read(lba: number, blocks: number): Promise<Buffer> {
    this.calls.push({ op: "read", lba, blocks });
    this.check("read", lba, blocks);
    return this.copyOut(this.visible, lba, blocks);
  }

  async write(lba: number, data: Buffer, options?: WriteOptions): Promise<void> {
    const fua = options?.fua === true;
    if (data.length % this.blockSize !== 0) {
      throw new StorageError(StorageErrorCode.Internal, "write length is not a whole block");
    }
    const blocks = data.length / this.blockSize;
    this.calls.push({ op: "write", lba, blocks, fua });
    this.check("write", lba, blocks);
    for (let i = 0; i < blocks; i++) {
      const block = Buffer.from(data.subarray(i * this.blockSize, (i + 1) * this.blockSize));
      this.visible.set(lba + i, block);
      if (fua) this.durable?.set(lba + i, block);
    }
    if (fua) this.fuaWriteCount++;
  }

  async flush(): Promise<void> {
    this.calls.push({ op: "flush" });
    this.check("flush", 0, 0);
    if (this.durable) this.durable = new Map(this.visible);
    this.flushCount++;
  }

  async unmap(lba: number, blocks: number): Promise<void> {
    this.calls.push({ op: "unmap", lba, blocks });
    this.check("unmap", lba, blocks);
    for (let i = 0; i < blocks; i++) this.visible.delete(lba + i);
  }

  async blockStatus(lba: number): Promise<BlockStatus> {
    this.calls.push({ op: "blockStatus", lba });
    this.check("blockStatus", lba, 1);
    const mapped = this.visible.has(lba);
    let blocks = 1;
    while (lba + blocks < this.capacity && this.visible.has(lba + blocks) === mapped) blocks++;
    return { mapped, blocks };
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** What the volume holds right now, without recording a call. */
  peek(lba: number, blocks: number): Buffer {
    return this.copyOut(this.visible, lba, blocks);
  }

  /** What would survive a crash now (requires `trackDurability`). */
  readDurable(lba: number, blocks: number): Buffer {
    if (!this.durable) throw new Error("trackDurability is off");
    return this.copyOut(this.durable, lba, blocks);
  }

  /** Simulate a crash: everything not yet durable is lost (requires `trackDurability`). */
  crash(): void {
    if (!this.durable) throw new Error("trackDurability is off");
    this.visible.clear();
    for (const [lba, block] of this.durable) this.visible.set(lba, block);
  }

  /** Number of blocks currently holding data. */
  get mappedBlocks(): number {
    return this.visible.size;
  }

  private check(op: VolumeOp, lba: number, blocks: number): void {
    const queue = this.failures.get(op);
    if (queue && queue.length > 0) throw queue.shift();
    if (this.closed) throw new StorageError(StorageErrorCode.NotReady, "volume is closed");
    if (lba < 0 || blocks < 0 || lba + blocks > this.capacity) {
      throw new StorageError(StorageErrorCode.OutOfRange, "range beyond the volume", lba);
    }
  }

  private copyOut(source: Map<number, Buffer>, lba: number, blocks: number): Buffer {
    const out = Buffer.alloc(blocks * this.blockSize);
    for (let i = 0; i < blocks; i++) {
      source.get(lba + i)?.copy(out, i * this.blockSize);
    }
    return out;
  }
}
