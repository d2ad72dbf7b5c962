/**
 * Observability of the arbiter: Prometheus text exposition (with prom-client) and the JSON that
 * `sanmux status --json` shows, per agent, per channel, and for the pool.
 *
 * Everything is read at scrape time from the scheduler, its demand series and the capacity
 * rules: the I/O path only bumps plain numbers. One snapshot serves every metric family of a
 * scrape (it is recomputed when older than 100 ms).
 *
 * Metric families (all prefixed `sanmux_`):
 * - per agent (`agent`) and per channel (`channel`, `agent`, `volume`), as `sanmux_agent_*` and
 *   `sanmux_channel_*`:
 *   `commands_total{kind}` and `bytes_total{kind}` (kind read / write / other; counters),
 *   `errors_total`, `aborted_total`, `throttled_total` (commands that waited for a rate limit),
 *   `wait_seconds_total` (time spent queued in the arbiter), `latency_seconds` (histogram of
 *   the time from arrival to completion), `queue_depth{state}` (queued, throttled, in_flight:
 *   now), `rate_commands{kind,window}` and `rate_bytes{kind,window}` (per second over the 1 s,
 *   10 s, 60 s windows), `avg_queue_depth{window}`, `latency_p50_seconds{window}` and
 *   `latency_p99_seconds{window}` (absent when the window saw no command);
 * - per agent only: `weight`, `effective_weight`, `limit{limit}` (configured speed limits, in
 *   commands or bytes per second), and with capacity rules `logical_bytes`,
 *   `capacity_limit_bytes`, `reserved_bytes`, `soft_threshold_reached` (0/1),
 *   `growth_bytes_per_day`, `seconds_until_limit` (+Inf: not growing);
 * - the pool, with capacity rules: `sanmux_pool_total_bytes`, `_free_bytes`, `_reserved_bytes`,
 *   `_unused_reserved_bytes`, `_soft_threshold_reached`, `_growth_bytes_per_day`,
 *   `_seconds_until_full`;
 * - the scheduler: `sanmux_scheduler_concurrency`, `_in_flight`, `_sending`, `_queued`,
 *   `_throttled`.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Registry } from "prom-client";
import type { AgentCapacityStatus, CapacityRules, PoolCapacityStatus } from "./capacity.js";
import { type Clock, systemClock } from "./clock.js";
import {
  type CapacityForecast,
  type ChannelLabels,
  type DemandSeries,
  type DemandTotals,
  LATENCY_BUCKETS,
  latencyBucketUpperMs,
  WINDOWS,
  type WindowStats,
} from "./demand.js";
import type { AgentSchedule, IoScheduler } from "./scheduler.js";

export interface MetricsSources {
  readonly scheduler: IoScheduler;
  /** Capacity rules (absent without a pool). */
  readonly capacity?: CapacityRules;
  readonly clock?: Clock;
}

/** One series (agent or channel) as status shows it. Rates per second; latencies in ms. */
export interface SeriesStatus {
  readonly queued: number;
  readonly throttled: number;
  readonly inFlight: number;
  readonly totals: DemandTotals;
  /** By window: "1s", "10s", "60s". Latencies are null when the window saw no command. */
  readonly windows: Readonly<Record<string, WindowStatus>>;
}

export type WindowStatus = Omit<WindowStats, "p50Ms" | "p99Ms" | "seconds"> & {
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
};

export interface ForecastStatus {
  readonly growthBytesPerDay: number | null;
  /** Null: unknown, or not growing. */
  readonly secondsUntilLimit: number | null;
  readonly limitReachedAt: string | null;
  readonly secondsUntilPoolFull: number | null;
  readonly poolFullAt: string | null;
}

export interface AgentStatus extends SeriesStatus {
  readonly name: string;
  readonly weight: number;
  readonly effectiveWeight: number;
  readonly limits?: AgentSchedule["limits"];
  readonly capacity?: Omit<AgentCapacityStatus, "agent">;
  readonly forecast: ForecastStatus;
}

export interface ChannelStatus extends SeriesStatus {
  readonly channel: number;
  readonly agent: string;
  readonly volume: string;
}

export interface ArbiterStatus {
  readonly scheduler: {
    readonly concurrency: number;
    readonly inFlight: number;
    /** Commands whose response is being sent: they count in `concurrency` too. */
    readonly sending: number;
    readonly queued: number;
    readonly throttled: number;
    readonly balance: "auto" | "off";
  };
  readonly agents: readonly AgentStatus[];
  readonly channels: readonly ChannelStatus[];
  readonly pool?: PoolCapacityStatus & { readonly forecast: ForecastStatus };
}

interface Snapshot {
  readonly at: number;
  readonly agents: readonly {
    readonly schedule: AgentSchedule;
    readonly series: DemandSeries;
    readonly windows: readonly WindowStats[];
    readonly capacity?: AgentCapacityStatus;
    readonly forecast: CapacityForecast;
  }[];
  readonly channels: readonly {
    readonly labels: ChannelLabels;
    readonly series: DemandSeries;
    readonly windows: readonly WindowStats[];
  }[];
  readonly pool?: PoolCapacityStatus;
  readonly poolForecast: CapacityForecast;
}

/** Histogram bucket bounds exported: every octave from 64 µs to 32 s (fine bucket indexes). */
const EXPORTED_BUCKETS: readonly number[] = Array.from(
  { length: LATENCY_BUCKETS },
  (_, i) => i,
).filter(
  (i) => (i + 1) % 4 === 0 && latencyBucketUpperMs(i) >= 0.064 && latencyBucketUpperMs(i) <= 40_000,
);

export class ArbiterMetrics {
  readonly registry: Registry;
  private readonly clock: Clock;
  private cached: Snapshot | undefined;

  constructor(
    private readonly sources: MetricsSources,
    registry: Registry = new Registry(),
  ) {
    this.registry = registry;
    this.clock = sources.clock ?? systemClock;
    this.register();
  }

  /** What `sanmux status --json` shows of the arbiter. */
  statusJson(): ArbiterStatus {
    const snap = this.snapshot(true);
    const s = this.sources.scheduler;
    const wall = Date.now();
    return {
      scheduler: {
        concurrency: s.budget,
        inFlight: s.inFlight,
        sending: s.sending,
        queued: s.waiting,
        throttled: s.throttledCount,
        balance: s.balancing ? "auto" : "off",
      },
      agents: snap.agents.map((a) => ({
        name: a.schedule.name,
        weight: a.schedule.weight,
        effectiveWeight: a.schedule.effectiveWeight,
        ...(a.schedule.limits ? { limits: a.schedule.limits } : {}),
        ...seriesStatus(a.series, a.windows),
        ...(a.capacity ? { capacity: withoutAgent(a.capacity) } : {}),
        forecast: forecastStatus(a.forecast, wall),
      })),
      channels: snap.channels.map((c) => ({
        channel: c.labels.channel,
        agent: c.labels.agent,
        volume: c.labels.volume,
        ...seriesStatus(c.series, c.windows),
      })),
      ...(snap.pool
        ? { pool: { ...snap.pool, forecast: forecastStatus(snap.poolForecast, wall) } }
        : {}),
    };
  }

  /** The Prometheus text exposition (what the metrics endpoint serves). */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  private snapshot(fresh = false): Snapshot {
    const now = this.clock.now();
    if (!fresh && this.cached !== undefined && now - this.cached.at < 100) return this.cached;
    const { scheduler, capacity } = this.sources;
    const demand = scheduler.demand;
    const capacities = new Map(capacity?.agentStatus().map((c) => [c.agent, c]) ?? []);
    const windows = (series: DemandSeries) => WINDOWS.map((w) => series.window(w, now));
    const agents = scheduler.agentSchedules().map((schedule) => {
      const series = demand.agent(schedule.name);
      const cap = capacities.get(schedule.name);
      return {
        schedule,
        series,
        windows: windows(series),
        ...(cap ? { capacity: cap } : {}),
        forecast: demand.agentForecast(schedule.name, cap?.limitBytes, now),
      };
    });
    const channels = [...demand.channels()]
      .sort(([a], [b]) => a.channel - b.channel)
      .map(([labels, series]) => ({ labels, series, windows: windows(series) }));
    this.cached = {
      at: now,
      agents,
      channels,
      ...(capacity ? { pool: capacity.poolStatus() } : {}),
      poolForecast: demand.poolForecast(now),
    };
    return this.cached;
  }

  private register(): void {
    const snap = () => this.snapshot();
    const add = (
      type: "gauge" | "counter",
      name: string,
      help: string,
      fill: (emit: Emit) => void,
    ) => this.registry.registerMetric(family(type, name, help, fill) as never);
    const gauge = (name: string, help: string, _labels: string[], fill: (emit: Emit) => void) =>
      add("gauge", name, help, fill);
    const counter = (name: string, help: string, _labels: string[], fill: (emit: Emit) => void) =>
      add("counter", name, help, fill);

    // I/O series: the same families for agents and channels.
    const scopes = [
      {
        prefix: "sanmux_agent",
        what: "agent",
        labels: ["agent"],
        list: () =>
          snap().agents.map((a) => ({
            labels: { agent: a.schedule.name } as Labels,
            series: a.series,
            windows: a.windows,
          })),
      },
      {
        prefix: "sanmux_channel",
        what: "channel",
        labels: ["channel", "agent", "volume"],
        list: () =>
          snap().channels.map((c) => ({
            labels: {
              channel: c.labels.channel,
              agent: c.labels.agent,
              volume: c.labels.volume,
            } as Labels,
            series: c.series,
            windows: c.windows,
          })),
      },
    ];
    for (const scope of scopes) {
      const { prefix, what, list } = scope;
      const l = scope.labels;
      counter(
        `${prefix}_commands_total`,
        `Volume commands completed per ${what}, by kind`,
        [...l, "kind"],
        (emit) => {
          for (const s of list()) {
            const t = s.series.totals;
            emit({ ...s.labels, kind: "read" }, t.readOps);
            emit({ ...s.labels, kind: "write" }, t.writeOps);
            emit({ ...s.labels, kind: "other" }, t.otherOps);
          }
        },
      );
      counter(
        `${prefix}_bytes_total`,
        `Bytes read and written per ${what}`,
        [...l, "kind"],
        (emit) => {
          for (const s of list()) {
            emit({ ...s.labels, kind: "read" }, s.series.totals.readBytes);
            emit({ ...s.labels, kind: "write" }, s.series.totals.writeBytes);
          }
        },
      );
      const totalCounter = (suffix: string, help: string, get: (t: DemandTotals) => number) =>
        counter(`${prefix}_${suffix}`, help, l, (emit) => {
          for (const s of list()) emit(s.labels, get(s.series.totals));
        });
      totalCounter("errors_total", `Volume commands that failed, per ${what}`, (t) => t.errors);
      totalCounter(
        "aborted_total",
        `Commands aborted while they waited, per ${what}`,
        (t) => t.aborted,
      );
      totalCounter(
        "throttled_total",
        `Commands that waited for a speed limit, per ${what}`,
        (t) => t.throttled,
      );
      totalCounter(
        "wait_seconds_total",
        `Time commands spent waiting in the arbiter, per ${what}`,
        (t) => t.waitMs / 1000,
      );
      this.registry.registerMetric(
        latencyHistogram(
          `${prefix}_latency_seconds`,
          `Command latency (arrival to completion) per ${what}`,
          list,
        ) as never,
      );
      gauge(
        `${prefix}_queue_depth`,
        `Commands of the ${what} now: queued for a share, throttled, in flight`,
        [...l, "state"],
        (emit) => {
          for (const s of list()) {
            emit({ ...s.labels, state: "queued" }, s.series.queued);
            emit({ ...s.labels, state: "throttled" }, s.series.throttled);
            emit({ ...s.labels, state: "in_flight" }, s.series.inFlight);
          }
        },
      );
      gauge(
        `${prefix}_rate_commands`,
        `Commands per second per ${what}, by kind and window`,
        [...l, "kind", "window"],
        (emit) => {
          for (const s of list()) {
            for (const w of s.windows) {
              const window = `${w.seconds}s`;
              emit({ ...s.labels, kind: "read", window }, w.readIops);
              emit({ ...s.labels, kind: "write", window }, w.writeIops);
              emit({ ...s.labels, kind: "other", window }, w.otherIops);
            }
          }
        },
      );
      gauge(
        `${prefix}_rate_bytes`,
        `Bytes per second per ${what}, by kind and window`,
        [...l, "kind", "window"],
        (emit) => {
          for (const s of list()) {
            for (const w of s.windows) {
              const window = `${w.seconds}s`;
              emit({ ...s.labels, kind: "read", window }, w.readBps);
              emit({ ...s.labels, kind: "write", window }, w.writeBps);
            }
          }
        },
      );
      gauge(
        `${prefix}_avg_queue_depth`,
        `Average commands queued + in flight per ${what}, by window`,
        [...l, "window"],
        (emit) => {
          for (const s of list())
            for (const w of s.windows)
              emit({ ...s.labels, window: `${w.seconds}s` }, w.avgQueued + w.avgInFlight);
        },
      );
      for (const [q, key] of [
        ["p50", "p50Ms"],
        ["p99", "p99Ms"],
      ] as const) {
        gauge(
          `${prefix}_latency_${q}_seconds`,
          `${q} command latency per ${what}, by window`,
          [...l, "window"],
          (emit) => {
            for (const s of list()) {
              for (const w of s.windows) {
                if (!Number.isNaN(w[key]))
                  emit({ ...s.labels, window: `${w.seconds}s` }, w[key] / 1000);
              }
            }
          },
        );
      }
    }

    // Agent policy and capacity.
    const agents = () => snap().agents;
    gauge("sanmux_agent_weight", "Configured weight of the agent", ["agent"], (emit) => {
      for (const a of agents()) emit({ agent: a.schedule.name }, a.schedule.weight);
    });
    gauge(
      "sanmux_agent_effective_weight",
      "Weight in force (with balance: auto, lent weight included)",
      ["agent"],
      (emit) => {
        for (const a of agents()) emit({ agent: a.schedule.name }, a.schedule.effectiveWeight);
      },
    );
    gauge(
      "sanmux_agent_limit",
      "Configured speed limit of the agent (commands or bytes per second)",
      ["agent", "limit"],
      (emit) => {
        for (const a of agents()) {
          const limits = a.schedule.limits ?? {};
          for (const [key, name] of LIMIT_NAMES) {
            const v = limits[key];
            if (v !== undefined) emit({ agent: a.schedule.name, limit: name }, v);
          }
        }
      },
    );
    const capGauge = (
      name: string,
      help: string,
      get: (c: AgentCapacityStatus) => number | undefined,
    ) =>
      gauge(name, help, ["agent"], (emit) => {
        for (const a of agents()) {
          const v = a.capacity ? get(a.capacity) : undefined;
          if (v !== undefined) emit({ agent: a.schedule.name }, v);
        }
      });
    capGauge("sanmux_agent_logical_bytes", "Logical bytes the agent holds", (c) => c.logicalBytes);
    capGauge(
      "sanmux_agent_capacity_limit_bytes",
      "Capacity limit of the agent",
      (c) => c.limitBytes,
    );
    capGauge(
      "sanmux_agent_reserved_bytes",
      "Pool bytes reserved for the agent",
      (c) => c.reservedBytes,
    );
    capGauge(
      "sanmux_agent_soft_threshold_reached",
      "1 while the agent is above its soft threshold",
      (c) => (c.aboveSoftThreshold ? 1 : 0),
    );
    gauge(
      "sanmux_agent_growth_bytes_per_day",
      "Growth of the agent's logical bytes (linear fit)",
      ["agent"],
      (emit) => {
        for (const a of agents()) {
          if (a.forecast.growthBytesPerDay !== undefined)
            emit({ agent: a.schedule.name }, a.forecast.growthBytesPerDay);
        }
      },
    );
    gauge(
      "sanmux_agent_seconds_until_limit",
      "Forecast time until the agent reaches its capacity limit (+Inf: not growing)",
      ["agent"],
      (emit) => {
        for (const a of agents()) {
          if (a.forecast.secondsUntilLimit !== undefined)
            emit({ agent: a.schedule.name }, a.forecast.secondsUntilLimit);
        }
      },
    );

    // The pool.
    const poolGauge = (name: string, help: string, get: (p: PoolCapacityStatus) => number) =>
      gauge(name, help, [], (emit) => {
        const p = snap().pool;
        if (p) emit({}, get(p));
      });
    poolGauge("sanmux_pool_total_bytes", "Bytes the pool can hold", (p) => p.totalBytes);
    poolGauge("sanmux_pool_free_bytes", "Bytes free in the pool", (p) => p.freeBytes);
    poolGauge(
      "sanmux_pool_reserved_bytes",
      "Sum of the agents' reservations",
      (p) => p.reservedBytes,
    );
    poolGauge(
      "sanmux_pool_unused_reserved_bytes",
      "Reserved bytes the agents do not use yet",
      (p) => p.unusedReservedBytes,
    );
    poolGauge(
      "sanmux_pool_soft_threshold_reached",
      "1 while the pool is above its soft threshold",
      (p) => (p.aboveSoftThreshold ? 1 : 0),
    );
    gauge(
      "sanmux_pool_growth_bytes_per_day",
      "Growth of the pool's used bytes (linear fit)",
      [],
      (emit) => {
        const g = snap().poolForecast.growthBytesPerDay;
        if (g !== undefined) emit({}, g);
      },
    );
    gauge(
      "sanmux_pool_seconds_until_full",
      "Forecast time until the pool fills (+Inf: not growing)",
      [],
      (emit) => {
        const s = snap().poolForecast.secondsUntilPoolFull;
        if (s !== undefined) emit({}, s);
      },
    );

    // The scheduler.
    const scheduler = this.sources.scheduler;
    gauge(
      "sanmux_scheduler_concurrency",
      "Commands allowed in the volumes or being sent at once",
      [],
      (emit) => emit({}, scheduler.budget),
    );
    gauge("sanmux_scheduler_in_flight", "Commands in the volumes now", [], (emit) =>
      emit({}, scheduler.inFlight),
    );
    gauge("sanmux_scheduler_sending", "Commands whose response is being sent now", [], (emit) =>
      emit({}, scheduler.sending),
    );
    gauge("sanmux_scheduler_queued", "Commands waiting for a share now", [], (emit) =>
      emit({}, scheduler.waiting),
    );
    gauge("sanmux_scheduler_throttled", "Commands waiting for a speed limit now", [], (emit) =>
      emit({}, scheduler.throttledCount),
    );
  }
}

type Labels = Record<string, string | number>;
type Emit = (labels: Labels, value: number) => void;

/**
 * A metric family computed at scrape time, registered with prom-client's registry (which does
 * the text exposition). prom-client's own Gauge and Counter keep values between scrapes and
 * show a 0 for a family without labels even when there is nothing to say (no pool); a family
 * here shows exactly the samples `fill` emits.
 */
function family(type: "gauge" | "counter", name: string, help: string, fill: (emit: Emit) => void) {
  const metric = {
    name,
    help,
    type,
    aggregator: "sum",
    get: async () => {
      const values: { labels: Labels; value: number }[] = [];
      fill((labels, value) => values.push({ labels, value }));
      return { name: metric.name, help, type, values, aggregator: "sum" };
    },
    reset() {},
  };
  return metric;
}

const LIMIT_NAMES = [
  ["readIops", "read_iops"],
  ["writeIops", "write_iops"],
  ["iops", "iops"],
  ["readBps", "read_bps"],
  ["writeBps", "write_bps"],
  ["bps", "bps"],
] as const;

/**
 * A histogram family read from the series' cumulative latency counters (prom-client's own
 * Histogram would observe every command on the I/O path; this one costs nothing until scraped).
 */
function latencyHistogram(
  name: string,
  help: string,
  list: () => { labels: Record<string, string | number>; series: DemandSeries }[],
) {
  const get = async () => {
    const values: { metricName: string; labels: Record<string, string | number>; value: number }[] =
      [];
    for (const s of list()) {
      const hist = s.series.latency;
      let cumulative = 0;
      let next = 0;
      for (const i of EXPORTED_BUCKETS) {
        while (next <= i) cumulative += hist[next++]!;
        values.push({
          metricName: `${name}_bucket`,
          labels: { ...s.labels, le: latencyBucketUpperMs(i) / 1000 },
          value: cumulative,
        });
      }
      while (next < LATENCY_BUCKETS) cumulative += hist[next++]!;
      values.push({
        metricName: `${name}_bucket`,
        labels: { ...s.labels, le: "+Inf" },
        value: cumulative,
      });
      const t = s.series.totals;
      values.push({
        metricName: `${name}_sum`,
        labels: s.labels,
        value: (t.waitMs + t.serviceMs) / 1000,
      });
      values.push({ metricName: `${name}_count`, labels: s.labels, value: cumulative });
    }
    return { name, help, type: "histogram", values, aggregator: "sum" };
  };
  return { name, help, type: "histogram", aggregator: "sum", get, reset() {} };
}

function seriesStatus(series: DemandSeries, windows: readonly WindowStats[]): SeriesStatus {
  const byWindow: Record<string, WindowStatus> = {};
  for (const w of windows) {
    const { seconds, p50Ms, p99Ms, ...rest } = w;
    byWindow[`${seconds}s`] = {
      ...rest,
      p50Ms: Number.isNaN(p50Ms) ? null : p50Ms,
      p99Ms: Number.isNaN(p99Ms) ? null : p99Ms,
    };
  }
  return {
    queued: series.queued,
    throttled: series.throttled,
    inFlight: series.inFlight,
    totals: { ...series.totals },
    windows: byWindow,
  };
}

function forecastStatus(f: CapacityForecast, wallNow: number): ForecastStatus {
  const finite = (x: number | undefined) => (x !== undefined && Number.isFinite(x) ? x : null);
  const date = (seconds: number | null) =>
    seconds === null ? null : new Date(wallNow + seconds * 1000).toISOString();
  const untilLimit = finite(f.secondsUntilLimit);
  const untilFull = finite(f.secondsUntilPoolFull);
  return {
    growthBytesPerDay: finite(f.growthBytesPerDay),
    secondsUntilLimit: untilLimit,
    limitReachedAt: date(untilLimit),
    secondsUntilPoolFull: untilFull,
    poolFullAt: date(untilFull),
  };
}

function withoutAgent(c: AgentCapacityStatus): Omit<AgentCapacityStatus, "agent"> {
  const { agent: _agent, ...rest } = c;
  return rest;
}

export interface MetricsServer {
  /** Where it listens (the port chosen when 0 was asked). */
  readonly address: { readonly host: string; readonly port: number };
  close(): Promise<void>;
}

/**
 * Serve `registry` in Prometheus text format at `GET /metrics` (and `/`) on `host:port`, for
 * `sanmux serve --metrics HOST:PORT`. Anything else is 404; a failing collection is 500 with the
 * error's message. Resolves once listening.
 */
export async function serveMetrics(
  host: string,
  port: number,
  registry: Registry,
): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (path !== "/metrics" && path !== "/") {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: try /metrics\n");
      return;
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { "content-type": registry.contentType });
        res.end(req.method === "HEAD" ? undefined : text);
      },
      (error: unknown) => {
        res.writeHead(500, { "content-type": "text/plain" }).end(`${(error as Error).message}\n`);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  return {
    address: { host: address.address, port: address.port },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}
