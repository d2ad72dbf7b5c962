/**
 * Reuse of large data buffers: write payloads (the iSCSI layer) and read results (the volumes).
 * At hundreds of MB/s, allocating a fresh 128 KiB ArrayBuffer per PDU makes V8 collect garbage
 * constantly (a fifth of the main thread in a profile of 128 KiB sequential writes, 16 % in one of
 * reads). Buffers of at least MIN_POOLED bytes come from here and go back once the command that
 * used them has completed.
 *
 * Buffers asked for as `shared` are views of a SharedArrayBuffer: the chunk worker threads decrypt
 * a read's grains straight into the buffer that is then sent (src/pool/chunk-worker.ts, `OpenJob.out`),
 * instead of into a shared buffer of their own that the main thread then copies (a fresh
 * SharedArrayBuffer per 128 KiB read also kept V8's helper threads zeroing and sweeping them).
 * Nothing transfers or clones these buffers to another thread except as such an `out`.
 * (chunk-worker.ts's `JobArena` keeps a `BufferPool` of its own for the grains and records of
 * fingerprint and seal jobs.)
 *
 * Contract: `release(buf)` only when nothing references `buf` any more (for Data-Out: after the
 * SCSI layer's promise for the command settled — see ScsiCommand.dataOut; for a read's result:
 * once its Data-In has left, src/iscsi/connection.ts `complete`). Only whole buffers that this
 * pool handed out are taken back; anything else is ignored.
 */

export const MIN_POOLED = 16 * 1024;
/** Bytes kept idle in the pool at most; beyond that released buffers are left to the GC. */
const MAX_IDLE_BYTES = 64 * 1024 * 1024;

export class BufferPool {
  /** Idle buffers by size: plain ones under `size`, shared ones under `-size`. */
  private readonly free = new Map<number, Buffer[]>();
  private readonly issued = new WeakSet<ArrayBufferLike>();
  private idle = 0;

  /** Bytes of released buffers waiting for reuse. */
  get idleBytes(): number {
    return this.idle;
  }

  /**
   * A buffer of `size` bytes; `shared`: a view of a SharedArrayBuffer (module comment), which
   * only a buffer a worker thread writes into needs: V8 copies to and from shared memory with
   * relaxed atomics, at about half the speed of a plain copy (3.6 against 7.2 µs for 32 grains).
   */
  acquire(size: number, shared = false): Buffer {
    if (size < MIN_POOLED) return Buffer.allocUnsafe(size);
    const list = this.free.get(shared ? -size : size);
    const reused = list?.pop();
    if (reused) {
      this.idle -= size;
      return reused;
    }
    // A buffer of its own, never a slice of Node's shared pool.
    const buf = shared ? Buffer.from(new SharedArrayBuffer(size)) : Buffer.allocUnsafeSlow(size);
    this.issued.add(buf.buffer);
    return buf;
  }

  release(buf: Buffer): void {
    const size = buf.length;
    if (size < MIN_POOLED || buf.byteOffset !== 0 || !this.issued.has(buf.buffer)) return;
    if (this.idle + size > MAX_IDLE_BYTES) return;
    const key = buf.buffer instanceof SharedArrayBuffer ? -size : size;
    let list = this.free.get(key);
    if (!list) {
      list = [];
      this.free.set(key, list);
    }
    list.push(buf);
    this.idle += size;
  }
}

/** One pool for the process: buffers move freely between connections. */
export const dataBuffers = new BufferPool();
