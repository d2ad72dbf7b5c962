/**
 * Time sources of the arbiter, injectable so that every rule can be tested deterministically.
 *
 * `Clock.now()` is a monotonic time in milliseconds (fractions allowed): `performance.now()` in
 * production. `Timers` is the subset of timer functions the scheduler needs; the default is
 * node's own. A command waiting for a rate limit is work in progress and keeps the process
 * alive, like any pending I/O; a background timer (periodic sampling) does not.
 */
export interface Clock {
  now(): number;
}

export interface Timers {
  /**
   * Call `fn` once after `ms` milliseconds; returns a handle for `clear`. A `background` timer
   * does not keep the process alive by itself.
   */
  set(fn: () => void, ms: number, background?: boolean): unknown;
  clear(handle: unknown): void;
}

export const systemClock: Clock = { now: () => performance.now() };

export const systemTimers: Timers = {
  set(fn, ms, background = false) {
    const t = setTimeout(fn, ms);
    if (background) t.unref();
    return t;
  },
  clear(handle) {
    clearTimeout(handle as NodeJS.Timeout);
  },
};

/**
 * A manual clock with timers, for tests and simulations: time moves only through `advance`
 * (or `advanceTo`), which fires due timers in time order, each at its own due time.
 */
export class ManualClock implements Clock, Timers {
  private t: number;
  private seq = 0;
  private readonly pending = new Map<number, { at: number; fn: () => void }>();

  constructor(start = 0) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  set(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.pending.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  }

  clear(handle: unknown): void {
    this.pending.delete(handle as number);
  }

  /** Number of timers not yet fired. */
  get timerCount(): number {
    return this.pending.size;
  }

  /** The due time of the earliest timer, if any. */
  nextTimer(): number | undefined {
    let next: number | undefined;
    for (const { at } of this.pending.values()) if (next === undefined || at < next) next = at;
    return next;
  }

  /** Move time forward by `ms`, firing every timer that falls due on the way. */
  advance(ms: number): void {
    this.advanceTo(this.t + ms);
  }

  advanceTo(target: number): void {
    for (;;) {
      let due: { id: number; at: number; fn: () => void } | undefined;
      for (const [id, timer] of this.pending) {
        if (timer.at <= target && (due === undefined || timer.at < due.at)) due = { id, ...timer };
      }
      if (due === undefined) break;
      this.pending.delete(due.id);
      if (due.at > this.t) this.t = due.at;
      due.fn();
    }
    if (target > this.t) this.t = target;
  }
}
