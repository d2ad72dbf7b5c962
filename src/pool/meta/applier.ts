/**
 * RefcountApplier: the background group commit of reference counts.
 *
 * Map updates only append journal records; this applies them in batches: every `intervalMs`,
 * and as soon as `highWater` records are pending (so a write burst does not grow the journal
 * without bound). One batch at a time; each batch is one LMDB transaction (MetaStore.applyJournal).
 *
 * `onApplied` sees every batch's result (dead chunks for GC, anomalies to log). A failing batch is
 * reported to `onError` and retried at the next tick; nothing is lost, the records stay in the
 * journal.
 *
 * Stop it (`await applier.stop()`) before closing the store.
 */
import type { ApplyResult, MetaStore } from "./store.js";

export interface RefcountApplierOptions {
  /** Apply pending records at least this often, in milliseconds. Default 100. */
  readonly intervalMs?: number;
  /** Apply at once when this many records are pending. Default 1024. */
  readonly highWater?: number;
  /** Records per batch. Default 65536. */
  readonly maxRecords?: number;
  readonly onApplied?: (result: ApplyResult) => void;
  readonly onError?: (err: unknown) => void;
}

export class RefcountApplier {
  private readonly intervalMs: number;
  private readonly highWater: number;
  private readonly maxRecords: number;
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = true;
  /** Batches applied since start. */
  batches = 0;
  /** Records applied since start. */
  records = 0;

  constructor(
    private readonly store: MetaStore,
    private readonly options: RefcountApplierOptions = {},
  ) {
    this.intervalMs = options.intervalMs ?? 100;
    this.highWater = options.highWater ?? 1024;
    this.maxRecords = options.maxRecords ?? 65536;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.timer = setInterval(() => this.kick(), this.intervalMs);
    this.timer.unref();
    this.unsubscribe = this.store.onJournalRecord((pending) => {
      if (pending >= this.highWater) this.kick();
    });
  }

  /** Starts a batch now unless one is running (then another follows it). */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.store.pendingJournalRecords === 0) return;
    this.running = this.runBatches().finally(() => {
      this.running = undefined;
    });
  }

  /**
   * Stops the timer and waits for a running batch. With `drain`, then applies every pending
   * record (a clean shutdown leaves an empty journal; a crash leaves it for the next start).
   */
  async stop(options: { drain?: boolean } = {}): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    await this.running;
    if (options.drain) {
      while (this.store.pendingJournalRecords > 0) {
        const r = await this.store.applyJournal({ maxRecords: this.maxRecords });
        this.account(r);
        if (r.records === 0) break;
      }
    }
  }

  private async runBatches(): Promise<void> {
    do {
      this.again = false;
      try {
        const r = await this.store.applyJournal({ maxRecords: this.maxRecords });
        this.account(r);
        if (r.records === this.maxRecords) this.again = true;
      } catch (err) {
        this.options.onError?.(err);
        return;
      }
    } while (this.again && !this.stopped && this.store.pendingJournalRecords > 0);
  }

  private account(r: ApplyResult): void {
    if (r.records === 0) return;
    this.batches++;
    this.records += r.records;
    this.options.onApplied?.(r);
  }
}
