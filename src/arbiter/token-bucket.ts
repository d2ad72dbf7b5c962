/**
 * A token bucket: `rate` units per second, holding at most `burst` seconds' worth of them.
 *
 * Reservation style (as Go's `rate.Limiter.Reserve`): `take(n)` debits `n` units at once, even
 * when the bucket holds fewer, and answers how long the caller must wait before using them.
 * The level may go below zero (a debt); later takes queue up behind it, so that commands leave
 * in the order they asked, each exactly when the rate allows it. A request larger than the burst
 * is never refused: it waits for the tokens it lacks.
 *
 * No drift: the level is recomputed from the clock at every call (`level += elapsed * rate`,
 * capped at the burst), not from timer firings, so a late timer delays one command but does not
 * lose or create tokens. Over any interval of T seconds the units taken without waiting are at
 * most `rate * T + burst` (plus the level at the start, at most the burst).
 *
 * Units are whatever the caller counts: commands (IOPS) or bytes (bytes per second).
 */
import { type Clock, systemClock } from "./clock.js";

/** Burst used when none is given: one second of the rate. */
export const DEFAULT_BURST_SECONDS = 1;

export class TokenBucket {
  private level: number;
  private last: number;
  private perMs: number;
  private cap: number;

  /**
   * @param rate units per second, > 0
   * @param burstSeconds how many seconds of `rate` the bucket holds, > 0 (default 1)
   * @param clock time source (milliseconds)
   * @param full start full (an idle agent may burst at once, the default) or empty
   */
  constructor(
    rate: number,
    burstSeconds: number = DEFAULT_BURST_SECONDS,
    private readonly clock: Clock = systemClock,
    full = true,
  ) {
    checkRate(rate, burstSeconds);
    this.perMs = rate / 1000;
    this.cap = rate * burstSeconds;
    this.level = full ? this.cap : 0;
    this.last = clock.now();
  }

  /** Units per second. */
  get rate(): number {
    return this.perMs * 1000;
  }

  /** Most units the bucket holds (rate × burst seconds). */
  get capacity(): number {
    return this.cap;
  }

  /** Current level: negative when commands already wait for tokens. */
  available(now: number = this.clock.now()): number {
    this.refill(now);
    return this.level;
  }

  /**
   * Debit `n` units now; returns the milliseconds to wait before using them (0: at once). The
   * caller must wait that long; if it gives up (an aborted command), it calls `refund(n)`.
   */
  take(n: number, now: number = this.clock.now()): number {
    this.refill(now);
    this.level -= n;
    return this.level >= 0 ? 0 : -this.level / this.perMs;
  }

  /** Give back units taken by a command that will not run after all. */
  refund(n: number): void {
    this.level = Math.min(this.cap, this.level + n);
  }

  /**
   * Change the rate and burst, keeping the current level (capped at the new burst): a debt
   * stays a debt and is repaid at the new rate.
   */
  setRate(rate: number, burstSeconds: number = DEFAULT_BURST_SECONDS): void {
    checkRate(rate, burstSeconds);
    this.refill(this.clock.now());
    this.perMs = rate / 1000;
    this.cap = rate * burstSeconds;
    if (this.level > this.cap) this.level = this.cap;
  }

  private refill(now: number): void {
    const elapsed = now - this.last;
    if (elapsed > 0) {
      this.level = Math.min(this.cap, this.level + elapsed * this.perMs);
      this.last = now;
    }
  }
}

function checkRate(rate: number, burstSeconds: number): void {
  if (!(rate > 0) || !Number.isFinite(rate)) {
    throw new RangeError(`token bucket rate must be a positive number, got ${rate}`);
  }
  if (!(burstSeconds > 0) || !Number.isFinite(burstSeconds)) {
    throw new RangeError(
      `token bucket burst must be a positive number of seconds, got ${burstSeconds}`,
    );
  }
}
