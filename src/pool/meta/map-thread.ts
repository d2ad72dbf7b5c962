/**
 * The map transactions of the pool's group commits (MetaStore.writeGrainsMany, called by
 * write-back.ts) run on a thread of their own.
 *
 * Why: on the event loop, that transaction was a third of the main thread's time during a
 * unique-data write (CPU profile, docs/performance.md "ninth session"), and the main thread is
 * what bounds that write: it ran or waited to run 86 % of the time while the machine stayed 28 %
 * idle. Here a worker thread opens the same LMDB environment (as apply-thread.ts does) and runs
 * the same `writeMapInTxn` per write; the main thread packs the updates (12 numbers and 16
 * fingerprint bytes a grain) and reads the answer.
 *
 * What the main thread keeps owning, and how the thread gets its part (MetaStore.writeGrainsMany):
 * - **Order.** A batch starts only once every map transaction queued before it has committed,
 *   and map transactions queued meanwhile wait for its commit. So the map log's and the refcount
 *   journal's sequence numbers still follow commit order.
 * - **The map log.** The current segment is lent to the thread (`MapLog.lend`): it appends each
 *   write's record inside the transaction, as `mapTxn` does, and the main thread takes the new
 *   length back. A batch that did not commit is cut off the segment again.
 * - **The journal's next sequence number** goes with the batch and comes back.
 * - **The index token.** Calls that remove index entries wait for a batch in flight, and a batch
 *   sent while one runs trusts no token (meta/README.md "The index token").
 *
 * One transaction per batch, committed before the answer: a write whose checks fail (an unknown
 * volume, ChunkMissing) is rejected alone and writes nothing, as `writeMapInTxn` reads and checks
 * everything before writing; any other failure aborts the whole batch.
 *
 * The worker script is this module compiled (`map-thread.js`); without it (the TypeScript sources
 * under the test runner) or once the thread died, batches run on the event loop as before. The
 * batches' packing and transaction body are map-batch.ts; the thread's plumbing worker-thread.ts.
 */
import { fileURLToPath } from "node:url";
import type { OpenEnvOptions } from "./dbs.js";
import { type MapBatch, type MapBatchResult, writeBatchInTxn } from "./map-batch.js";
import { MetaWorkerThread, serveRequests } from "./worker-thread.js";

const ROLE = "sanmux-map-writer";

/** The main thread's side: one worker, one batch at a time (MetaStore serialises them). */
export class MapWriteThread {
  private constructor(private readonly thread: MetaWorkerThread<MapBatch, MapBatchResult>) {}

  /**
   * Starts the thread for the environment `env` (the options the main thread opened it with),
   * or returns undefined when the compiled worker script is not there. `script`: for tests.
   * `onDeath`: told once when the thread dies unasked (batches then run on the event loop).
   */
  static start(
    env: OpenEnvOptions,
    script?: string,
    onDeath?: (error: Error) => void,
  ): MapWriteThread | undefined {
    const file = script ?? fileURLToPath(new URL("./map-thread.js", import.meta.url));
    const thread = MetaWorkerThread.start<MapBatch, MapBatchResult>(
      file,
      ROLE,
      "map write thread",
      env,
      onDeath,
    );
    return thread && new MapWriteThread(thread);
  }

  /** Whether batches can go to the thread (false once it died: the caller writes inline). */
  get alive(): boolean {
    return this.thread.alive;
  }

  /**
   * Runs the batch in one transaction on the thread (its packed arrays are transferred);
   * resolves once committed. Rejects with a MetaError when the transaction failed (nothing
   * committed), or with the thread's death (then whether it committed is unknown: MetaStore
   * reads it back).
   */
  write(batch: MapBatch): Promise<MapBatchResult> {
    const { numbers, fingerprints } = batch.writes;
    return this.thread.request(batch, [numbers.buffer, fingerprints.buffer]);
  }

  /** Ends the thread now, as if it died (tests). */
  kill(): Promise<void> {
    return this.thread.kill();
  }

  /** Waits for a batch in flight, then stops the thread (worker-thread.ts). */
  close(): Promise<void> {
    return this.thread.close();
  }
}

// The worker side: run batches until told to close.
serveRequests<MapBatch, MapBatchResult>(ROLE, "map batch", writeBatchInTxn);
