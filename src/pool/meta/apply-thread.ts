/**
 * The refcount journal's batches (MetaStore.applyJournal, README.md "Refcount journal") applied on
 * a thread of their own.
 *
 * Why: a batch is one write transaction whose callback runs synchronously, an index read and
 * write per chunk. On the event loop it took 31 % of the main thread during a duplicate-data
 * write (CPU profile, docs/performance.md "eighth session"), and every batch stalled all I/O for
 * its whole length. Here it runs on a worker thread that opens the same LMDB environment
 * (lmdb-js shares one environment between the threads of a process; LMDB's writer lock orders
 * this thread's transactions with the main thread's), so the event loop only sends a request
 * and reads the result.
 *
 * Nothing else changes: the worker runs the same `applyJournalInTxn` and counter update in one
 * transaction (so a crash leaves the records or their effect, never both), and answers once it
 * has committed. The main thread's read snapshot is then renewed (`resetReadTxn`) so that what
 * follows the call sees the batch, as before. The journal's other state (next sequence number,
 * pending count) stays with the main thread, which alone appends records.
 *
 * The worker script is this module compiled (`apply-thread.js`); when it is not there (the
 * TypeScript sources under the test runner) or the thread dies, `MetaStore` applies on the
 * event loop as before. The thread's plumbing is worker-thread.ts.
 */
import { fileURLToPath } from "node:url";
import { CounterDeltas, type MetaDbs, type OpenEnvOptions } from "./dbs.js";
import { type ApplyResult, applyJournalInTxn } from "./refcount.js";
import { MetaWorkerThread, serveRequests } from "./worker-thread.js";

const ROLE = "sanmux-journal-apply";

/** What the thread is asked: apply up to `maxRecords` journal records. */
type Request = { readonly maxRecords: number };

/** One batch, in one write transaction: the journal records, the index and the counters. */
export function applyBatch(dbs: MetaDbs, maxRecords: number): ApplyResult {
  const deltas = new CounterDeltas();
  const result = applyJournalInTxn(dbs, deltas, maxRecords);
  deltas.writeTo(dbs);
  return result;
}

/** The main thread's side: one worker, one batch at a time (callers are serialised by it). */
export class JournalApplyThread {
  private constructor(private readonly thread: MetaWorkerThread<Request, ApplyResult>) {}

  /**
   * Starts the thread for the environment `env` (the options the main thread opened it with),
   * or returns undefined when the compiled worker script is not there. `script`: for tests.
   * `onDeath`: told once when the thread dies unasked (batches then run on the event loop).
   */
  static start(
    env: OpenEnvOptions,
    script?: string,
    onDeath?: (error: Error) => void,
  ): JournalApplyThread | undefined {
    const file = script ?? fileURLToPath(new URL("./apply-thread.js", import.meta.url));
    const thread = MetaWorkerThread.start<Request, ApplyResult>(
      file,
      ROLE,
      "journal apply thread",
      env,
      onDeath,
    );
    return thread && new JournalApplyThread(thread);
  }

  /** Whether batches can go to the thread (false once it died: the caller applies inline). */
  get alive(): boolean {
    return this.thread.alive;
  }

  /** Applies up to `maxRecords` journal records on the thread; resolves once committed. */
  async apply(maxRecords: number): Promise<ApplyResult> {
    return revive(await this.thread.request({ maxRecords }));
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

/** Buffers come back from the thread as plain Uint8Arrays (structured clone). */
function revive(r: ApplyResult): ApplyResult {
  return {
    ...r,
    dead: r.dead.map((d) => ({
      ...d,
      fingerprint: Buffer.from(
        d.fingerprint.buffer,
        d.fingerprint.byteOffset,
        d.fingerprint.length,
      ),
    })),
  };
}

// The worker side: apply batches until told to close.
serveRequests<Request, ApplyResult>(ROLE, "journal batch", (dbs, r) =>
  applyBatch(dbs, r.maxRecords),
);
