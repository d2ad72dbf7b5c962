/**
 * A byte-rate pacer for background work of the logical units (SANITIZE OVERWRITE passes): each
 * piece of work asks for its bytes before it runs, and waits until the rate allows them. One
 * pacer is shared by every unit of a ScsiTarget, so the rate bounds the target's background I/O
 * as a whole, however many units sanitize at once; pieces are served in the order they asked.
 *
 * There is no burst: time the pacer was not used is not saved up, so the rate holds from the
 * first piece on. The first piece runs at once; a piece of n bytes delays the next one by
 * n / rate seconds. A rate of 0 (or Infinity) means unpaced.
 *
 * Why pace at all: a sanitize writes the whole volume, and the pool serves every other agent
 * from the same devices. Unpaced, one agent's sanitize would take the pool's write bandwidth
 * from everyone until it is done; paced, it takes a bounded share and simply lasts longer, which
 * SBC-4 provides for (IMMED=1, progress indication in REQUEST SENSE).
 */

export interface PacerClock {
  /** Milliseconds, monotonic. */
  now(): number;
  sleep(ms: number): Promise<void>;
}

const REAL_CLOCK: PacerClock = {
  now: () => performance.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

export class Pacer {
  /** When the next piece may start (clock milliseconds). */
  private next = Number.NEGATIVE_INFINITY;

  constructor(
    /** Bytes per second; 0 or Infinity: unpaced. */
    readonly bytesPerSecond: number,
    private readonly clock: PacerClock = REAL_CLOCK,
  ) {
    if (!(bytesPerSecond >= 0)) throw new RangeError(`invalid rate ${bytesPerSecond}`);
  }

  /** True when `take` never waits. */
  get unpaced(): boolean {
    return this.bytesPerSecond === 0 || this.bytesPerSecond === Number.POSITIVE_INFINITY;
  }

  /** Resolves when `bytes` may be written. */
  take(bytes: number): Promise<void> {
    if (this.unpaced) return Promise.resolve();
    const now = this.clock.now();
    const start = Math.max(now, this.next);
    this.next = start + (bytes * 1000) / this.bytesPerSecond;
    return start > now ? this.clock.sleep(start - now) : Promise.resolve();
  }
}

/** A pacer that never waits. */
export const UNPACED = new Pacer(0);
