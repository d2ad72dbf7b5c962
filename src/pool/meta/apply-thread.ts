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
 * event loop as before.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { CounterDeltas, type MetaDbs, type OpenEnvOptions, openDbs } from "./dbs.js";
import { MetaError, MetaErrorCode } from "./errors.js";
import { type ApplyResult, applyJournalInTxn } from "./refcount.js";

const ROLE = "sanmux-journal-apply";

type Request = { readonly op: "apply"; readonly id: number; readonly maxRecords: number };

interface Reply {
  readonly id: number;
  readonly result?: ApplyResult;
  readonly error?: { readonly message: string; readonly code?: string };
}

/** One batch, in one write transaction: the journal records, the index and the counters. */
export function applyBatch(dbs: MetaDbs, maxRecords: number): ApplyResult {
  const deltas = new CounterDeltas();
  const result = applyJournalInTxn(dbs, deltas, maxRecords);
  deltas.writeTo(dbs);
  return result;
}

/** The main thread's side: one worker, one batch at a time (callers are serialised by it). */
export class JournalApplyThread {
  private readonly pending = new Map<
    number,
    { resolve(r: ApplyResult): void; reject(e: Error): void }
  >();
  private nextId = 1;
  private readonly inflight = new Set<Promise<unknown>>();
  private dead: Error | undefined;
  private readonly exited: Promise<void>;

  private closing = false;

  private constructor(
    private readonly worker: Worker,
    /** Told once when the thread dies unasked (batches then run on the event loop). */
    private readonly onDeath?: (error: Error) => void,
  ) {
    worker.unref(); // referenced only while a batch is in flight
    worker.on("message", (m: Reply) => {
      const p = this.pending.get(m.id);
      if (p === undefined) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) worker.unref();
      if (m.error !== undefined) {
        p.reject(
          new MetaError(
            (m.error.code ?? MetaErrorCode.CommitFailed) as MetaErrorCode,
            m.error.message,
          ),
        );
      } else {
        p.resolve(revive(m.result!));
      }
    });
    const fail = (error: Error) => {
      if (this.dead === undefined && !this.closing) this.onDeath?.(error);
      this.dead ??= error;
      for (const p of this.pending.values()) p.reject(error);
      this.pending.clear();
    };
    worker.on("error", fail);
    this.exited = new Promise((resolve) => {
      worker.on("exit", (code) => {
        fail(new Error(`journal apply thread exited with code ${code}`));
        resolve();
      });
    });
  }

  /**
   * Starts the thread for the environment `env` (the options the main thread opened it with),
   * or returns undefined when the compiled worker script is not there. `script`: for tests.
   */
  static start(
    env: OpenEnvOptions,
    script?: string,
    onDeath?: (error: Error) => void,
  ): JournalApplyThread | undefined {
    const file = script ?? fileURLToPath(new URL("./apply-thread.js", import.meta.url));
    if (!existsSync(file)) return undefined;
    const data = { role: ROLE, env: { path: env.path, noSync: env.noSync, mapSize: env.mapSize } };
    return new JournalApplyThread(new Worker(file, { workerData: data }), onDeath);
  }

  /** Whether batches can go to the thread (false once it died: the caller applies inline). */
  get alive(): boolean {
    return this.dead === undefined;
  }

  /** Applies up to `maxRecords` journal records on the thread; resolves once committed. */
  apply(maxRecords: number): Promise<ApplyResult> {
    if (this.dead !== undefined) return Promise.reject(this.dead);
    const id = this.nextId++;
    const batch = new Promise<ApplyResult>((resolve, reject) => {
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ op: "apply", id, maxRecords } satisfies Request);
    });
    this.inflight.add(batch);
    const settled = () => this.inflight.delete(batch);
    batch.then(settled, settled);
    return batch;
  }

  /**
   * Waits for a batch in flight, then stops the thread. Its environment handle closes with the
   * thread; the main thread closes the environment afterwards.
   */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.allSettled([...this.inflight]);
    // Referenced while it closes: an unreferenced worker would let the process exit first.
    this.worker.ref();
    if (this.dead === undefined) this.worker.postMessage({ op: "close" });
    await Promise.race([this.exited, new Promise((r) => setTimeout(r, 5000).unref())]);
    if (this.dead === undefined) await this.worker.terminate();
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
const data = workerData as { role?: string; env?: OpenEnvOptions } | null;
if (!isMainThread && parentPort !== null && data?.role === ROLE && data.env) {
  const port = parentPort;
  const dbs = openDbs(data.env);
  port.on("message", (m: Request | { op: "close" }) => {
    if (m.op === "close") {
      // Closing this thread's handle leaves the environment open for the main thread.
      Promise.resolve(dbs.root.close()).finally(() => port.close());
      return;
    }
    try {
      const result = dbs.root.transactionSync(() => applyBatch(dbs, m.maxRecords));
      port.postMessage({ id: m.id, result } satisfies Reply);
    } catch (error) {
      // Nothing was committed. A MetaError keeps its code; anything else (LMDB's) is a failed
      // commit of the batch, as on the main thread (dbs.ts commitFailed).
      const message =
        error instanceof MetaError
          ? error.message
          : `metadata commit failed (journal batch): ${(error as Error).message}`;
      const code = error instanceof MetaError ? error.code : MetaErrorCode.CommitFailed;
      port.postMessage({ id: m.id, error: { message, code } } satisfies Reply);
    }
  });
}
