/** The arbiter layer: see ./arbiter.ts for how the server uses it, and docs/arbitration.md. */
export { Arbiter, type ArbiterOptions, type ChannelRef } from "./arbiter.js";
export {
  type AgentCapacityStatus,
  type CapacityDecision,
  CapacityRules,
  type PoolCapacity,
  type PoolCapacityStatus,
  type ThresholdEvent,
} from "./capacity.js";
export { type Clock, ManualClock, systemClock, systemTimers, type Timers } from "./clock.js";
export {
  type CapacityForecast,
  CapacityTrend,
  DemandSeries,
  DemandTracker,
  type WindowStats,
} from "./demand.js";
export { ArbiterFilter, type CommandOptions } from "./filter.js";
export {
  ArbiterMetrics,
  type ArbiterStatus,
  type MetricsServer,
  serveMetrics,
} from "./metrics.js";
export {
  type ArbiterConfigSource,
  type ArbiterPolicy,
  arbiterPolicy,
  type BalanceMode,
  type CapacityRules as CapacityConfig,
  type IoKind,
  type SpeedLimits,
} from "./policy.js";
export {
  type AbortSelector,
  ArbiterAbortError,
  ChannelHandle,
  IoScheduler,
  type SchedulerOptions,
  type WriteReservation,
} from "./scheduler.js";
export { TokenBucket } from "./token-bucket.js";
