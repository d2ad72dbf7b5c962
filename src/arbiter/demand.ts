/**
 * Demand tracking: what each agent and each channel asks of the server, over rolling windows of
 * 1 s, 10 s and 60 s, and how fast each agent's stored data grows.
 *
 * Per series (one per agent, one per channel), at every completed command (`record`):
 * - commands and bytes per second, read / write / other;
 * - latency as the initiator sees it (time queued in the arbiter + time in the volume), as
 *   p50 / p99 from a log-bucket histogram: 4 buckets per octave from 1 µs to 134 s, so a
 *   percentile is exact to within ±9 % (relative), in a fixed 108-counter array;
 * - average queue depth, split into queued (waiting for a rate limit or a share) and in flight,
 *   by Little's law: the average number of commands in the system over a window is the sum of
 *   their times in the system divided by the window. No per-command sampling is needed.
 * Windows are made of whole slots: the 1 s and 10 s windows of the last complete seconds, the
 * 60 s window of the last 6 complete 10-second slots; so a figure is at most one slot old.
 * Memory is fixed per series (two rings of 11 and 7 slots).
 *
 * Instantaneous gauges (`queued`, `throttled`, `inFlight`) are kept by the scheduler on the
 * series itself.
 *
 * Capacity growth: `sampleAgentBytes` / `samplePool` are fed periodically by the server from the
 * pool's usage (say every minute); a least-squares line over the samples of the last 7 days
 * (kept in a bounded ring, at most `maxSamples`, closer samples replace each other) gives the
 * growth per day and when the agent's limit and the pool will be reached.
 */
import type { IoKind } from "./policy.js";

// ---------------------------------------------------------------------------------------------
// Latency histogram

/** Buckets per octave. */
const SUB = 4;
/** Octaves covered from 1 µs: 2^27 µs = 134 s. */
const OCTAVES = 27;
export const LATENCY_BUCKETS = SUB * OCTAVES;

/** Histogram bucket of a latency in milliseconds. */
export function latencyBucket(ms: number): number {
  const us = ms * 1000;
  if (!(us > 1)) return 0;
  const i = Math.floor(Math.log2(us) * SUB);
  return i >= LATENCY_BUCKETS ? LATENCY_BUCKETS - 1 : i;
}

/** Upper bound of bucket `i`, in milliseconds. */
export function latencyBucketUpperMs(i: number): number {
  return 2 ** ((i + 1) / SUB) / 1000;
}

/**
 * The `q` quantile (0..1) of the counts in `hist[offset .. offset + LATENCY_BUCKETS)`, in
 * milliseconds: the geometric middle of the bucket holding it. NaN when there are no counts.
 */
export function quantileMs(hist: ArrayLike<number>, q: number, offset = 0, total?: number): number {
  let n = total ?? 0;
  if (total === undefined) for (let i = 0; i < LATENCY_BUCKETS; i++) n += hist[offset + i] ?? 0;
  if (n === 0) return Number.NaN;
  const rank = Math.max(1, Math.ceil(q * n));
  let seen = 0;
  for (let i = 0; i < LATENCY_BUCKETS; i++) {
    seen += hist[offset + i] ?? 0;
    if (seen >= rank) return 2 ** ((i + 0.5) / SUB) / 1000;
  }
  return 2 ** ((LATENCY_BUCKETS - 0.5) / SUB) / 1000;
}

// ---------------------------------------------------------------------------------------------
// Rolling slots

/** Fields of one slot, in a flat Float64Array. */
const F_EPOCH = 0;
const F_READ_OPS = 1;
const F_WRITE_OPS = 2;
const F_OTHER_OPS = 3;
const F_READ_BYTES = 4;
const F_WRITE_BYTES = 5;
const F_WAIT = 6;
const F_SERVICE = 7;
const FIELDS = 8;

/** A ring of `slots` slots of `widthMs` each: counters and a latency histogram per slot. */
class Ring {
  readonly fields: Float64Array;
  readonly hist: Uint32Array;

  constructor(
    readonly slots: number,
    readonly widthMs: number,
  ) {
    this.fields = new Float64Array(slots * FIELDS);
    for (let s = 0; s < slots; s++) this.fields[s * FIELDS + F_EPOCH] = -1;
    this.hist = new Uint32Array(slots * LATENCY_BUCKETS);
  }

  /** Base index of the slot of `epoch`, cleared if it held an older epoch. */
  private slot(epoch: number): number {
    const s = epoch % this.slots;
    const base = s * FIELDS;
    if (this.fields[base + F_EPOCH] !== epoch) {
      this.fields.fill(0, base, base + FIELDS);
      this.fields[base + F_EPOCH] = epoch;
      this.hist.fill(0, s * LATENCY_BUCKETS, (s + 1) * LATENCY_BUCKETS);
    }
    return base;
  }

  add(
    now: number,
    field: number,
    bytesField: number,
    bytes: number,
    wait: number,
    service: number,
    bucket: number,
  ): void {
    const epoch = Math.floor(now / this.widthMs);
    const base = this.slot(epoch);
    const f = this.fields;
    f[base + field]! += 1;
    if (bytesField !== 0) f[base + bytesField]! += bytes;
    f[base + F_WAIT]! += wait;
    f[base + F_SERVICE]! += service;
    this.hist[(epoch % this.slots) * LATENCY_BUCKETS + bucket]! += 1;
  }

  /** Sum of the `count` complete slots before the one holding `now`. */
  sum(now: number, count: number, out: Float64Array, hist: Float64Array): void {
    out.fill(0);
    hist.fill(0);
    const current = Math.floor(now / this.widthMs);
    for (let e = current - count; e < current; e++) {
      if (e < 0) continue;
      const s = e % this.slots;
      const base = s * FIELDS;
      if (this.fields[base + F_EPOCH] !== e) continue;
      for (let k = 1; k < FIELDS; k++) out[k]! += this.fields[base + k]!;
      const h = s * LATENCY_BUCKETS;
      for (let i = 0; i < LATENCY_BUCKETS; i++) hist[i]! += this.hist[h + i]!;
    }
  }
}

/** One rolling window's figures. Rates are per second; latencies in milliseconds (NaN: none). */
export interface WindowStats {
  readonly seconds: number;
  readonly readIops: number;
  readonly writeIops: number;
  readonly otherIops: number;
  readonly readBps: number;
  readonly writeBps: number;
  /** Average commands waiting in the arbiter (rate limit or share). */
  readonly avgQueued: number;
  /** Average commands in the volume. */
  readonly avgInFlight: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

/** Cumulative totals since the series was created (Prometheus counters). */
export interface DemandTotals {
  readOps: number;
  writeOps: number;
  otherOps: number;
  readBytes: number;
  writeBytes: number;
  /** Sum of the time commands waited in the arbiter, ms. */
  waitMs: number;
  /** Sum of the time commands spent in the volume, ms. */
  serviceMs: number;
  /** Commands that failed in the volume. */
  errors: number;
  /** Commands removed from a queue by an abort, before they ran. */
  aborted: number;
  /** Commands that had to wait for a rate limit. */
  throttled: number;
}

export const WINDOWS = [1, 10, 60] as const;
export type WindowSeconds = (typeof WINDOWS)[number];

/** The demand of one agent or one channel. */
export class DemandSeries {
  /** Commands waiting for a share of the server (set by the scheduler). */
  queued = 0;
  /** Commands waiting for a rate limit (set by the scheduler). */
  throttled = 0;
  /** Commands in the volume (set by the scheduler). */
  inFlight = 0;
  readonly totals: DemandTotals = {
    readOps: 0,
    writeOps: 0,
    otherOps: 0,
    readBytes: 0,
    writeBytes: 0,
    waitMs: 0,
    serviceMs: 0,
    errors: 0,
    aborted: 0,
    throttled: 0,
  };
  /** Cumulative latency histogram (LATENCY_BUCKETS counters). */
  readonly latency = new Float64Array(LATENCY_BUCKETS);
  private readonly seconds = new Ring(11, 1000);
  private readonly tens = new Ring(7, 10_000);

  constructor(readonly labels: Readonly<Record<string, string>>) {}

  /** Queued + in flight, now. */
  get depth(): number {
    return this.queued + this.throttled + this.inFlight;
  }

  /**
   * A command completed (or failed) at `now`, after `waitMs` in the arbiter and `serviceMs`
   * below. `bucket` is `latencyBucket(waitMs + serviceMs)`, when the caller has it already.
   */
  record(
    kind: IoKind,
    bytes: number,
    waitMs: number,
    serviceMs: number,
    now: number,
    bucket: number = latencyBucket(waitMs + serviceMs),
  ): void {
    const t = this.totals;
    let field: number;
    let bytesField: number;
    if (kind === "read") {
      t.readOps++;
      t.readBytes += bytes;
      field = F_READ_OPS;
      bytesField = F_READ_BYTES;
    } else if (kind === "write") {
      t.writeOps++;
      t.writeBytes += bytes;
      field = F_WRITE_OPS;
      bytesField = F_WRITE_BYTES;
    } else {
      t.otherOps++;
      field = F_OTHER_OPS;
      bytesField = 0;
    }
    t.waitMs += waitMs;
    t.serviceMs += serviceMs;
    this.latency[bucket]! += 1;
    this.seconds.add(now, field, bytesField, bytes, waitMs, serviceMs, bucket);
    this.tens.add(now, field, bytesField, bytes, waitMs, serviceMs, bucket);
  }

  /** The figures of the last `seconds` (1, 10 or 60) complete seconds before `now`. */
  window(seconds: WindowSeconds, now: number): WindowStats {
    const sums = new Float64Array(FIELDS);
    const hist = new Float64Array(LATENCY_BUCKETS);
    if (seconds === 60) this.tens.sum(now, 6, sums, hist);
    else this.seconds.sum(now, seconds, sums, hist);
    const per = (x: number) => x / seconds;
    return {
      seconds,
      readIops: per(sums[F_READ_OPS]!),
      writeIops: per(sums[F_WRITE_OPS]!),
      otherIops: per(sums[F_OTHER_OPS]!),
      readBps: per(sums[F_READ_BYTES]!),
      writeBps: per(sums[F_WRITE_BYTES]!),
      avgQueued: sums[F_WAIT]! / (seconds * 1000),
      avgInFlight: sums[F_SERVICE]! / (seconds * 1000),
      p50Ms: quantileMs(hist, 0.5),
      p99Ms: quantileMs(hist, 0.99),
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Capacity growth

const DAY_MS = 86_400_000;

export interface TrendOptions {
  /** Samples older than this are ignored by the fit. Default 7 days. */
  readonly windowMs?: number;
  /** Most samples kept. Default 2016 (one per 5 minutes over 7 days). */
  readonly maxSamples?: number;
  /** A fit needs samples spanning at least this long. Default 1 minute. */
  readonly minSpanMs?: number;
}

/** A bounded series of (time, bytes) samples with a least-squares growth rate. */
export class CapacityTrend {
  private readonly times: Float64Array;
  private readonly values: Float64Array;
  private start = 0;
  private count = 0;
  private readonly windowMs: number;
  private readonly minSpanMs: number;
  private readonly spacingMs: number;

  constructor(options: TrendOptions = {}) {
    this.windowMs = options.windowMs ?? 7 * DAY_MS;
    const max = options.maxSamples ?? 2016;
    this.minSpanMs = options.minSpanMs ?? 60_000;
    this.spacingMs = this.windowMs / max;
    this.times = new Float64Array(max);
    this.values = new Float64Array(max);
  }

  /** Record `bytes` at time `now` (ms). A sample closer than window/maxSamples to the last one replaces it. */
  sample(now: number, bytes: number): void {
    const max = this.times.length;
    if (this.count > 1) {
      const lastIdx = (this.start + this.count - 1) % max;
      const prevIdx = (this.start + this.count - 2) % max;
      if (now - this.times[prevIdx]! < this.spacingMs) {
        this.times[lastIdx] = now;
        this.values[lastIdx] = bytes;
        return;
      }
    }
    if (this.count === max) {
      this.start = (this.start + 1) % max;
      this.count--;
    }
    const idx = (this.start + this.count) % max;
    this.times[idx] = now;
    this.values[idx] = bytes;
    this.count++;
  }

  /** The latest sample, if any. */
  latest(): { at: number; bytes: number } | undefined {
    if (this.count === 0) return undefined;
    const idx = (this.start + this.count - 1) % this.times.length;
    return { at: this.times[idx]!, bytes: this.values[idx]! };
  }

  get size(): number {
    return this.count;
  }

  /** Growth in bytes per day over the window ending `now`; undefined without enough samples. */
  growthPerDay(now: number): number | undefined {
    const max = this.times.length;
    const from = now - this.windowMs;
    let n = 0;
    let t0 = Number.NaN;
    let sumT = 0;
    let sumV = 0;
    let sumTT = 0;
    let sumTV = 0;
    let first = Number.POSITIVE_INFINITY;
    let last = Number.NEGATIVE_INFINITY;
    for (let k = 0; k < this.count; k++) {
      const idx = (this.start + k) % max;
      const t = this.times[idx]!;
      if (t < from) continue;
      if (Number.isNaN(t0)) t0 = t;
      const x = (t - t0) / DAY_MS;
      const v = this.values[idx]!;
      n++;
      sumT += x;
      sumV += v;
      sumTT += x * x;
      sumTV += x * v;
      if (t < first) first = t;
      if (t > last) last = t;
    }
    if (n < 2 || last - first < this.minSpanMs) return undefined;
    const denominator = n * sumTT - sumT * sumT;
    if (denominator <= 0) return undefined;
    return (n * sumTV - sumT * sumV) / denominator;
  }

  /**
   * Seconds from `now` until the fitted line reaches `target` bytes: 0 when the latest sample
   * is already there, Infinity when it does not grow, undefined without enough samples.
   */
  secondsUntil(target: number, now: number): number | undefined {
    const latest = this.latest();
    if (latest === undefined) return undefined;
    if (latest.bytes >= target) return 0;
    const perDay = this.growthPerDay(now);
    if (perDay === undefined) return undefined;
    if (perDay <= 0) return Number.POSITIVE_INFINITY;
    return ((target - latest.bytes) / perDay) * 86_400;
  }
}

// ---------------------------------------------------------------------------------------------
// The tracker

export interface ChannelLabels {
  readonly channel: number;
  readonly agent: string;
  readonly volume: string;
}

/** Capacity outlook of an agent or the pool. Seconds: Infinity = never at this rate. */
export interface CapacityForecast {
  /** Latest logical (agent) or used (pool) bytes sampled. */
  readonly bytes?: number;
  readonly growthBytesPerDay?: number;
  /** When the agent reaches its limit (agent), or the pool fills (pool). */
  readonly secondsUntilLimit?: number;
  /** When the pool fills at its own growth rate (agent forecasts carry it too). */
  readonly secondsUntilPoolFull?: number;
}

/** Every demand series of the server: one per agent, one per channel, and the capacity trends. */
export class DemandTracker {
  private readonly agentSeries = new Map<string, DemandSeries>();
  private readonly channelSeries = new Map<number, DemandSeries>();
  private readonly channelLabels = new Map<number, ChannelLabels>();
  private readonly agentTrends = new Map<string, CapacityTrend>();
  readonly poolTrend: CapacityTrend;
  private poolTotal: number | undefined;

  constructor(private readonly trendOptions: TrendOptions = {}) {
    this.poolTrend = new CapacityTrend(trendOptions);
  }

  /** The series of `agent`, created on first use. */
  agent(name: string): DemandSeries {
    let s = this.agentSeries.get(name);
    if (s === undefined) {
      s = new DemandSeries({ agent: name });
      this.agentSeries.set(name, s);
    }
    return s;
  }

  /** The series of a channel, created on first use. */
  channel(labels: ChannelLabels): DemandSeries {
    let s = this.channelSeries.get(labels.channel);
    if (s === undefined) {
      s = new DemandSeries({
        channel: String(labels.channel),
        agent: labels.agent,
        volume: labels.volume,
      });
      this.channelSeries.set(labels.channel, s);
      this.channelLabels.set(labels.channel, labels);
    }
    return s;
  }

  /** Forget a channel (its mapping is gone). */
  dropChannel(channel: number): void {
    this.channelSeries.delete(channel);
    this.channelLabels.delete(channel);
  }

  /** Forget an agent (removed from the config). */
  dropAgent(name: string): void {
    this.agentSeries.delete(name);
    this.agentTrends.delete(name);
  }

  agents(): IterableIterator<[string, DemandSeries]> {
    return this.agentSeries.entries();
  }

  channels(): IterableIterator<[ChannelLabels, DemandSeries]> {
    const labels = this.channelLabels;
    const series = this.channelSeries;
    return (function* () {
      for (const [id, s] of series) yield [labels.get(id)!, s] as [ChannelLabels, DemandSeries];
    })();
  }

  /** A periodic sample of the logical bytes `agent` holds (time: `now`, ms). */
  sampleAgentBytes(agent: string, logicalBytes: number, now: number): void {
    let trend = this.agentTrends.get(agent);
    if (trend === undefined) {
      trend = new CapacityTrend(this.trendOptions);
      this.agentTrends.set(agent, trend);
    }
    trend.sample(now, logicalBytes);
  }

  /** A periodic sample of the pool's used and total bytes. */
  samplePool(usedBytes: number, totalBytes: number, now: number): void {
    this.poolTrend.sample(now, usedBytes);
    this.poolTotal = totalBytes;
  }

  /** Growth and time to the pool filling up. */
  poolForecast(now: number): CapacityForecast {
    const latest = this.poolTrend.latest();
    const growth = this.poolTrend.growthPerDay(now);
    const until =
      this.poolTotal === undefined ? undefined : this.poolTrend.secondsUntil(this.poolTotal, now);
    return {
      ...(latest ? { bytes: latest.bytes } : {}),
      ...(growth === undefined ? {} : { growthBytesPerDay: growth }),
      ...(until === undefined ? {} : { secondsUntilLimit: until, secondsUntilPoolFull: until }),
    };
  }

  /** Growth of `agent` and time until it reaches `limit` (when it has one) or the pool fills. */
  agentForecast(agent: string, limit: number | undefined, now: number): CapacityForecast {
    const trend = this.agentTrends.get(agent);
    const pool = this.poolForecast(now);
    const latest = trend?.latest();
    const growth = trend?.growthPerDay(now);
    const until = limit === undefined ? undefined : trend?.secondsUntil(limit, now);
    return {
      ...(latest ? { bytes: latest.bytes } : {}),
      ...(growth === undefined ? {} : { growthBytesPerDay: growth }),
      ...(until === undefined ? {} : { secondsUntilLimit: until }),
      ...(pool.secondsUntilPoolFull === undefined
        ? {}
        : { secondsUntilPoolFull: pool.secondsUntilPoolFull }),
    };
  }
}
