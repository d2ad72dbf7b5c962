/**
 * What the metadata store's worker threads share (apply-thread.ts, map-thread.ts): a worker that
 * opens the same LMDB environment as the main thread (lmdb-js shares one environment between the
 * threads of a process; LMDB's writer lock orders their transactions) and answers requests, one
 * write transaction each, committed before the answer.
 *
 * The main thread's side (`MetaWorkerThread`): requests by id; the worker referenced only while a
 * request is in flight (an idle one does not keep the process alive, a busy or closing one does);
 * a death told once, with every request in flight rejected. The worker's side (`serveRequests`):
 * the environment opened from `workerData`, each request run in `transactionSync`, a failure
 * answered as a MetaError (nothing was committed).
 */
import { existsSync } from "node:fs";
import {
  isMainThread,
  parentPort,
  type Transferable,
  Worker,
  workerData,
} from "node:worker_threads";
import { type MetaDbs, type OpenEnvOptions, openDbs } from "./dbs.js";
import { MetaError, MetaErrorCode } from "./errors.js";

interface Reply<R> {
  readonly id: number;
  readonly result?: R;
  readonly error?: { readonly message: string; readonly code?: string };
}

/** The main thread's side of one metadata worker thread. */
export class MetaWorkerThread<Q, R> {
  private readonly pending = new Map<number, { resolve(r: R): void; reject(e: Error): void }>();
  private nextId = 1;
  private readonly inflight = new Set<Promise<unknown>>();
  private dead: Error | undefined;
  private readonly exited: Promise<void>;
  private closing = false;

  private constructor(
    private readonly worker: Worker,
    what: string,
    /** Told once when the thread dies unasked (its work then runs on the event loop). */
    onDeath?: (error: Error) => void,
  ) {
    worker.unref(); // referenced only while a request is in flight
    worker.on("message", (m: Reply<R>) => {
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
        p.resolve(m.result!);
      }
    });
    const fail = (error: Error) => {
      if (this.dead === undefined && !this.closing) onDeath?.(error);
      this.dead ??= error;
      for (const p of this.pending.values()) p.reject(error);
      this.pending.clear();
    };
    worker.on("error", fail);
    this.exited = new Promise((resolve) => {
      worker.on("exit", (code) => {
        fail(new Error(`${what} exited with code ${code}`));
        resolve();
      });
    });
  }

  /**
   * Starts the worker script `file` (a compiled module that calls `serveRequests` with `role`)
   * for the environment `env` (the options the main thread opened it with), or returns undefined
   * when the script is not there (the TypeScript sources under the test runner).
   */
  static start<Q, R>(
    file: string,
    role: string,
    what: string,
    env: OpenEnvOptions,
    onDeath?: (error: Error) => void,
  ): MetaWorkerThread<Q, R> | undefined {
    if (!existsSync(file)) return undefined;
    const data = { role, env: { path: env.path, noSync: env.noSync, mapSize: env.mapSize } };
    return new MetaWorkerThread<Q, R>(new Worker(file, { workerData: data }), what, onDeath);
  }

  /** Whether requests can go to the thread (false once it died). */
  get alive(): boolean {
    return this.dead === undefined;
  }

  /**
   * Sends `request`; resolves with the answer once its transaction committed. Rejects with a
   * MetaError when the transaction failed (nothing committed), or with the thread's death (then
   * whether it committed is unknown).
   */
  request(request: Q, transfer: readonly Transferable[] = []): Promise<R> {
    if (this.dead !== undefined) return Promise.reject(this.dead);
    const id = this.nextId++;
    const done = new Promise<R>((resolve, reject) => {
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, request }, transfer);
    });
    this.inflight.add(done);
    const settled = () => this.inflight.delete(done);
    done.then(settled, settled);
    return done;
  }

  /** Ends the thread now, as if it died (tests of what follows a death). */
  async kill(): Promise<void> {
    await this.worker.terminate();
    await this.exited;
  }

  /**
   * Waits for the requests in flight, then stops the thread. Its environment handle closes with
   * the thread; the main thread closes the environment afterwards.
   */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.allSettled([...this.inflight]);
    // Referenced while it closes: an unreferenced worker would let the process exit first.
    this.worker.ref();
    if (this.dead === undefined) this.worker.postMessage({ close: true });
    await Promise.race([this.exited, new Promise((r) => setTimeout(r, 5000).unref())]);
    if (this.dead === undefined) await this.worker.terminate();
  }
}

/**
 * The worker's side: when this thread was started for `role`, opens the environment and answers
 * every request with `run(dbs, request)` inside one write transaction, until told to close.
 * `what`: the work, for the message of a failed commit.
 */
export function serveRequests<Q, R>(
  role: string,
  what: string,
  run: (dbs: MetaDbs, request: Q) => R,
): void {
  const data = workerData as { role?: string; env?: OpenEnvOptions } | null;
  if (isMainThread || parentPort === null || data?.role !== role || !data.env) return;
  const port = parentPort;
  const dbs = openDbs(data.env);
  port.on("message", (m: { id: number; request: Q } | { close: true }) => {
    if ("close" in m) {
      // Closing this thread's handle leaves the environment open for the main thread.
      Promise.resolve(dbs.root.close()).finally(() => port.close());
      return;
    }
    try {
      const result = dbs.root.transactionSync(() => run(dbs, m.request));
      port.postMessage({ id: m.id, result } satisfies Reply<R>);
    } catch (error) {
      // Nothing was committed. A MetaError keeps its code; anything else (LMDB's) is a failed
      // commit, as on the main thread (dbs.ts commitFailed).
      const message =
        error instanceof MetaError
          ? error.message
          : `metadata commit failed (${what}): ${(error as Error).message}`;
      const code = error instanceof MetaError ? error.code : MetaErrorCode.CommitFailed;
      port.postMessage({ id: m.id, error: { message, code } } satisfies Reply<R>);
    }
  });
}
