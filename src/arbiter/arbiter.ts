/**
 * The arbiter as the server wires it: one object holding the I/O scheduler, the demand
 * tracker, the capacity rules and the metrics, configured from the validated config.
 *
 *   const arbiter = new Arbiter({ policy: arbiterPolicy(config), pool: poolCapacity });
 *   const volume = arbiter.filter(base, { agent, channel, volume: name });   // per LUN view
 *   arbiter.capacity?.admit(agent, newBytes);                                // in the pool
 *   arbiter.startSampling();                                                 // capacity trends
 *   arbiter.configure(arbiterPolicy(newConfig));                             // live reload
 *   await serveMetrics(host, port, arbiter.metrics.registry);                // --metrics
 *   arbiter.statusJson();                                                    // status --json
 *   arbiter.close();
 *
 * See the modules for the rules: ./scheduler.ts (limits, shares, aborts, balance),
 * ./capacity.ts (quotas, reservations, soft thresholds), ./demand.ts, ./metrics.ts, ./filter.ts.
 */
import type { Registry } from "prom-client";
import type { Volume } from "../volume/volume.js";
import { CapacityRules, type PoolCapacity, type ThresholdEvent } from "./capacity.js";
import { type Clock, systemClock, systemTimers, type Timers } from "./clock.js";
import { DemandTracker, type TrendOptions } from "./demand.js";
import { ArbiterFilter } from "./filter.js";
import { ArbiterMetrics, type ArbiterStatus } from "./metrics.js";
import type { ArbiterPolicy } from "./policy.js";
import { IoScheduler } from "./scheduler.js";

export interface ArbiterOptions {
  readonly policy: ArbiterPolicy;
  /**
   * The pool's capacity figures. Absent (no pool: file volumes only): no capacity rules, and
   * `capacity` is undefined.
   */
  readonly pool?: PoolCapacity;
  /** Called for each soft-threshold crossing found by `evaluate`/sampling. */
  readonly onThreshold?: (event: ThresholdEvent) => void;
  /** Commands in the volumes or being sent at once, server-wide (`pool.concurrency`). Default 64. */
  readonly concurrency?: number;
  /** Registry to register the metrics in (default: a new one). */
  readonly registry?: Registry;
  readonly trend?: TrendOptions;
  readonly clock?: Clock;
  readonly timers?: Timers;
}

/** A channel's identity, as the access layer's ChannelBinding gives it. */
export interface ChannelRef {
  readonly agent: string;
  readonly channel: number;
  readonly volume: string;
}

export class Arbiter {
  readonly scheduler: IoScheduler;
  readonly demand: DemandTracker;
  readonly capacity: CapacityRules | undefined;
  readonly metrics: ArbiterMetrics;
  private policy: ArbiterPolicy;
  private readonly clock: Clock;
  private readonly timers: Timers;
  private sampler: unknown;

  constructor(private readonly options: ArbiterOptions) {
    this.clock = options.clock ?? systemClock;
    this.timers = options.timers ?? systemTimers;
    this.policy = options.policy;
    this.demand = new DemandTracker(options.trend);
    this.scheduler = new IoScheduler({
      clock: this.clock,
      timers: this.timers,
      demand: this.demand,
      policy: options.policy,
      ...(options.concurrency === undefined ? {} : { concurrency: options.concurrency }),
    });
    this.capacity =
      options.pool === undefined
        ? undefined
        : new CapacityRules(
            options.pool,
            options.policy,
            options.onThreshold ? { onThreshold: options.onThreshold } : {},
          );
    this.metrics = new ArbiterMetrics(
      {
        scheduler: this.scheduler,
        clock: this.clock,
        ...(this.capacity ? { capacity: this.capacity } : {}),
      },
      options.registry,
    );
  }

  /** Apply a new policy (live reload): weights, limits, capacity rules, balance. */
  configure(policy: ArbiterPolicy): void {
    this.policy = policy;
    this.scheduler.configure(policy);
    this.capacity?.configure(policy);
  }

  /** Wrap a channel's volume (read-only and counting filters may sit above or below). */
  filter(volume: Volume, ref: ChannelRef): ArbiterFilter {
    return new ArbiterFilter(volume, this.scheduler.channel(ref.agent, ref.channel, ref.volume));
  }

  /** Forget a channel whose mapping was removed (its waiting commands are aborted). */
  dropChannel(channel: number): void {
    this.scheduler.dropChannel(channel);
  }

  /**
   * Sample each configured agent's logical bytes and the pool's usage into the capacity trends,
   * then look for soft-threshold crossings (returned, and given to `onThreshold`).
   */
  sampleCapacity(): ThresholdEvent[] {
    const pool = this.options.pool;
    if (pool === undefined || this.capacity === undefined) return [];
    const now = this.clock.now();
    for (const a of this.policy.agents) {
      this.demand.sampleAgentBytes(a.name, pool.agentLogicalBytes(a.name), now);
    }
    const total = pool.poolTotalBytes();
    this.demand.samplePool(total - pool.poolFreeBytes(), total, now);
    return this.capacity.evaluate();
  }

  /** Call `sampleCapacity` every `intervalMs` (default 60 s) until `close`. */
  startSampling(intervalMs = 60_000): void {
    if (this.sampler !== undefined) return;
    const tick = () => {
      this.sampler = this.timers.set(tick, intervalMs, true);
      this.sampleCapacity();
    };
    tick();
  }

  statusJson(): ArbiterStatus {
    return this.metrics.statusJson();
  }

  /** Stop sampling; waiting commands reject with NotReady. */
  close(): void {
    if (this.sampler !== undefined) this.timers.clear(this.sampler);
    this.sampler = undefined;
    this.scheduler.close();
  }
}
