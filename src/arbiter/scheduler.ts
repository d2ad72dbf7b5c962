/**
 * The I/O scheduler: one per server. Every volume command of every channel passes through it
 * (`ChannelHandle.run`, or `IoScheduler.run`), and it decides when the command may reach the
 * volume:
 *
 * 1. Speed limits. The agent's and the volume's limits (read / write / total, IOPS and bytes per
 *    second) are token buckets (./token-bucket.ts). A command over a limit is debited at once and
 *    WAITS until its tokens are due (a timer queue ordered by due time); it is never failed for
 *    being rate-limited. Flush, unmap and block status ("other") pass no limit: they move no
 *    data, and a SYNCHRONIZE CACHE held behind throttled writes would only cover the writes that
 *    already completed anyway.
 * 2. Fair shares. At most `concurrency` commands are in the volumes, or have their response
 *    being sent (5. below), at once, server-wide. When more want to go, they queue per agent
 *    and the free slots are handed out by start-time fair queueing over the commands' costs
 *    (bytes + `opCostBytes`), weighted by the agents' weights: SFQ(D) of Jin, Chase and Kaur,
 *    "Interposed proportional sharing for a storage service utility" (SIGMETRICS 2004). It is
 *    work-conserving: only agents with queued commands take part, so an idle agent's share
 *    goes to the busy ones, and one busy agent gets everything. Under contention, each
 *    backlogged agent's dispatched cost follows its weight.
 * 3. Aborts. `run` takes the command's signal (a CommandSignal: an AbortSignal, or the iSCSI
 *    task's); a command still waiting (for tokens or for a share) when it aborts is removed, its
 *    tokens are given back, and it rejects with `ArbiterAbortError` without `fn` ever running.
 *    `abortQueued({ channel | agent | volume | tag })` does the same for every waiting command
 *    that matches (LUN RESET, a closing session). A command already in the volume runs to
 *    completion: the Volume contract cancels nothing that has started.
 * 4. Balance (`balance: auto`). Every `balanceIntervalMs`, the weight of agents that did not keep
 *    a queue (idle, or served at once) is lent to the agents whose queues backed up, in
 *    proportion to weight × average queue length, at most `balanceMaxBoost` times an agent's own
 *    weight; it is smoothed over intervals and returns when the queues drain. It changes only
 *    shares under contention: an agent's speed limits always apply.
 * 5. Responses being sent. A read is not over when the volume returns its data: its Data-In
 *    still has to leave through the agent's connection, and that (the copy into the socket,
 *    and waiting for the initiator to take it) is most of the work of a read on a fast volume.
 *    The transport says so through `hold(channel)`: from the volume's answer until the response
 *    has been written out, the command keeps its place in the budget (`sending`), without
 *    waiting for one. Without it, when the server is busy sending (CPU), commands would pile
 *    up as unsent responses outside the scheduler, the budget would never fill and weights
 *    would not apply; with it, they wait here, in their agent's queue, and leave by weight.
 *    An agent whose initiator reads slowly must not fill the budget with responses that only
 *    wait for it: while other agents queue, an agent's held responses count only up to its
 *    weighted share of the budget (concurrency × weight / the weights of it and the agents
 *    queued); the rest are sent as before, uncounted.
 * 6. Writes whose data has not arrived (`ChannelHandle.admit`). A write's data is most of its
 *    work (receiving and copying it), and iSCSI moves the data of a large write only when the
 *    target asks for it (R2T). The transport therefore asks here first, when the command
 *    arrives: `admit("write", bytes, signal)` takes the write's tokens and waits for its share
 *    exactly like a command, and resolves, once the write may go, with a WriteReservation. From
 *    then the write holds its place in the budget (counted in flight) while its data comes in;
 *    the first `run` of kind write on the same channel with the same `signal` (the volume write
 *    itself) starts at once within that place, without taking tokens again, and the place is
 *    free when it settles. `started()` (all the data is in and the command was handed on) gives
 *    the place back if the write has not reached the scheduler by then (it waits in the SCSI
 *    layer, e.g. behind an overlapping COMPARE AND WRITE, which may itself need a place: holding
 *    it could deadlock); it still goes at once when it comes, counted in flight again.
 *    `release()` (the command ended) gives back what was not used, tokens included, e.g. after
 *    a CHECK CONDITION before the write; so does the signal aborting. Without admission, a write
 *    would reach the scheduler only once all its data had arrived, and the data flow, the larger
 *    part of the work, would not be arbitrated.
 * 7. Fast path. A command of an unlimited agent on an unlimited volume, while fewer than
 *    `concurrency` commands are in flight and nobody queues, starts at once: no queue, no timer,
 *    no allocation but one `then` on fn's promise (to count it in flight and record its
 *    latency). With limits, the buckets are debited first and the fast path still applies when
 *    no wait is due.
 *
 * Every command completed is recorded in the demand series of its agent and its channel
 * (./demand.ts): wait (time in this scheduler) and service (time in the volume).
 *
 * Live changes: `configure(policy)` applies new weights and limits at once; commands already
 * waiting for tokens keep their due time (their debt is repaid at the old rate).
 */
import { StorageError, StorageErrorCode } from "../volume/errors.js";
import type { CommandSignal, WriteReservation } from "../volume/volume.js";
import { type Clock, systemClock, systemTimers, type Timers } from "./clock.js";
import { type DemandSeries, DemandTracker, latencyBucket } from "./demand.js";
import {
  type ArbiterPolicy,
  DEFAULT_WEIGHT,
  hasLimit,
  type IoKind,
  type SpeedLimits,
} from "./policy.js";
import { DEFAULT_BURST_SECONDS, TokenBucket } from "./token-bucket.js";

export type { WriteReservation };

export const DEFAULT_CONCURRENCY = 64;
/** Cost of a command in the fair queue on top of its bytes: per-command work of the backend. */
export const DEFAULT_OP_COST_BYTES = 32 * 1024;
export const DEFAULT_BALANCE_INTERVAL_MS = 1000;
export const DEFAULT_BALANCE_MAX_BOOST = 4;

/** A queued command removed by an abort: `fn` never ran. */
export class ArbiterAbortError extends Error {
  override readonly name = "AbortError";
  readonly code = "ABORT_ERR";
  constructor(message = "the command was aborted while it waited", options?: { cause?: unknown }) {
    super(message, options);
  }
}

export interface SchedulerOptions {
  readonly clock?: Clock;
  readonly timers?: Timers;
  /** Commands in the volumes or being sent at once, server-wide (>= 1). Default 64. */
  readonly concurrency?: number;
  /** Fair-queue cost of a command on top of its bytes. Default 32 KiB. */
  readonly opCostBytes?: number;
  readonly balanceIntervalMs?: number;
  /** With balance, an agent's effective weight is at most this times its own. Default 4. */
  readonly balanceMaxBoost?: number;
  /** Where completed commands are recorded; one is created when absent. */
  readonly demand?: DemandTracker;
  /** Initial policy; `configure` replaces it. */
  readonly policy?: ArbiterPolicy;
}

/** Which waiting commands `abortQueued` removes: all given fields must match. */
export interface AbortSelector {
  readonly agent?: string;
  readonly channel?: number;
  readonly volume?: string;
  /** The tag passed to `run`. */
  readonly tag?: unknown;
}

/** Scheduler figures of one agent, for status and metrics. */
export interface AgentSchedule {
  readonly name: string;
  readonly weight: number;
  /** The weight in force (differs from `weight` when balance lends it more). */
  readonly effectiveWeight: number;
  readonly limits?: SpeedLimits;
  readonly queued: number;
  readonly throttled: number;
  readonly inFlight: number;
}

// ---------------------------------------------------------------------------------------------
// Limits

/** The token buckets of one agent or volume. */
class LimitSet {
  readIops: TokenBucket | undefined;
  writeIops: TokenBucket | undefined;
  iops: TokenBucket | undefined;
  readBps: TokenBucket | undefined;
  writeBps: TokenBucket | undefined;
  bps: TokenBucket | undefined;

  constructor(
    limits: SpeedLimits,
    private readonly clock: Clock,
  ) {
    this.update(limits);
  }

  update(limits: SpeedLimits): void {
    const burst = limits.burst ?? DEFAULT_BURST_SECONDS;
    const one = (bucket: TokenBucket | undefined, rate: number | undefined) => {
      if (rate === undefined) return undefined;
      if (bucket === undefined) return new TokenBucket(rate, burst, this.clock);
      bucket.setRate(rate, burst);
      return bucket;
    };
    this.readIops = one(this.readIops, limits.readIops);
    this.writeIops = one(this.writeIops, limits.writeIops);
    this.iops = one(this.iops, limits.iops);
    this.readBps = one(this.readBps, limits.readBps);
    this.writeBps = one(this.writeBps, limits.writeBps);
    this.bps = one(this.bps, limits.bps);
  }

  /** Debit a command; the wait in ms before it may go (0: now). */
  take(kind: IoKind, bytes: number, now: number): number {
    if (kind === "other") return 0;
    let wait = 0;
    const ops = kind === "read" ? this.readIops : this.writeIops;
    const data = kind === "read" ? this.readBps : this.writeBps;
    if (ops !== undefined) wait = ops.take(1, now);
    if (this.iops !== undefined) wait = Math.max(wait, this.iops.take(1, now));
    if (data !== undefined) wait = Math.max(wait, data.take(bytes, now));
    if (this.bps !== undefined) wait = Math.max(wait, this.bps.take(bytes, now));
    return wait;
  }

  refund(kind: IoKind, bytes: number): void {
    if (kind === "other") return;
    (kind === "read" ? this.readIops : this.writeIops)?.refund(1);
    this.iops?.refund(1);
    (kind === "read" ? this.readBps : this.writeBps)?.refund(bytes);
    this.bps?.refund(bytes);
  }
}

// ---------------------------------------------------------------------------------------------
// State

const THROTTLED = 0;
const QUEUED = 1;
const RUNNING = 2;
const CANCELLED = 3;

/** A command on the slow path. */
interface Op {
  readonly handle: ChannelHandle;
  readonly kind: IoKind;
  readonly bytes: number;
  readonly cost: number;
  readonly fn: () => Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (reason: unknown) => void;
  readonly arrival: number;
  readyAt: number;
  /** Arrival order: ties of `readyAt` leave in it. */
  readonly seq: number;
  startTag: number;
  state: number;
  readonly signal: CommandSignal | undefined;
  onAbort: (() => void) | undefined;
  readonly tag: unknown;
  /** The buckets debited, for a refund on abort. */
  readonly agentLimits: LimitSet | null;
  readonly volumeLimits: LimitSet | null;
  /** An admission (`ChannelHandle.admit`): `fn` is unused; dispatch grants a ticket. */
  readonly admission: boolean;
}

/** Holds its place in the budget. */
const GRANTED = 0;
/** Gave its place back (`started`), still goes at once without tokens. */
const PREPAID = 1;
const USED = 2;
const ENDED = 3;

/** A write admitted before its data arrived: its place in the budget, until used or released. */
interface Ticket {
  readonly handle: ChannelHandle;
  readonly kind: IoKind;
  readonly bytes: number;
  readonly signal: CommandSignal;
  readonly waitMs: number;
  readonly t0: number;
  readonly agentLimits: LimitSet | null;
  readonly volumeLimits: LimitSet | null;
  state: number;
  onAbort: (() => void) | undefined;
}

class AgentState {
  weight = DEFAULT_WEIGHT;
  effectiveWeight = DEFAULT_WEIGHT;
  limits: LimitSet | null = null;
  limitsConfig: SpeedLimits | undefined;
  configured = false;
  /** Commands waiting for a share, in arrival order. */
  readonly queue: Op[] = [];
  /** SFQ finish tag of the last command queued. */
  lastFinish = 0;
  /** Responses being sent that count in the budget (IoScheduler.holdFor). */
  sending = 0;
  /** Integral of the queue length over time since the last balance (commands × ms). */
  queueArea = 0;
  areaSince = 0;

  constructor(
    readonly name: string,
    readonly demand: DemandSeries,
  ) {}

  touchArea(now: number): void {
    this.queueArea += this.queue.length * (now - this.areaSince);
    this.areaSince = now;
  }
}

class VolumeState {
  limits: LimitSet | null = null;
  constructor(readonly name: string) {}
}

/**
 * A channel's way into the scheduler: resolved once (agent, volume, demand series), then used
 * for every command of the channel. Obtained from `IoScheduler.channel`.
 */
export class ChannelHandle {
  /** @internal */
  constructor(
    private readonly sched: IoScheduler,
    /** @internal */ readonly agent: AgentState,
    /** @internal */ readonly volume: VolumeState,
    readonly channel: number,
    readonly demand: DemandSeries,
  ) {}

  get agentName(): string {
    return this.agent.name;
  }

  get volumeName(): string {
    return this.volume.name;
  }

  /**
   * Run `fn` (one volume command of `bytes` data) when the rules allow; resolves or rejects as
   * `fn` does. Rejects with ArbiterAbortError, without calling `fn`, when `signal` aborts first,
   * and with StorageError(NotReady) when the scheduler closes first. `tag` marks the command for
   * `abortQueued({ tag })`.
   */
  run<T>(
    kind: IoKind,
    bytes: number,
    fn: () => Promise<T>,
    signal?: CommandSignal,
    tag?: unknown,
  ): Promise<T> {
    return this.sched.submit(this, kind, bytes, fn, signal, tag);
  }

  /**
   * Reserve the turn of a command whose data has not arrived yet (a write before its R2T; see
   * "Writes whose data has not arrived" at the top of this file): takes its tokens and waits for
   * a share like `run`, then resolves with a WriteReservation. The place in the budget is held
   * until the first `run` of the same kind with the same `signal` on this channel settles (that
   * run starts at once and takes no tokens), or until `started()` is called before such a run
   * comes, or `release()`, or the signal aborts (these two give the tokens back too, unless the
   * run came). Rejects as `run` does
   * while waiting (ArbiterAbortError when `signal` aborts, or `abortQueued` matches `tag`;
   * NotReady when the scheduler closes).
   */
  admit(
    kind: IoKind,
    bytes: number,
    signal: CommandSignal,
    tag?: unknown,
  ): Promise<WriteReservation> {
    return this.sched.submit(this, kind, bytes, neverRun, signal, tag, true);
  }

  /**
   * A command of this channel left the volume and its response is now being sent: count it in
   * the server-wide budget, as if it were still in the volume, until the returned function is
   * called (when the response has been written out, or will never be). Never waits; calling the
   * release again does nothing. See "Responses being sent" at the top of this file.
   *
   * Between the volume's answer and this call the command's slot is free, and a queued command
   * may take it: the budget can be exceeded by the commands that are in that gap at once. In
   * the server that is one (each completion's promise chain, up to the hold, runs before the
   * next completion is handled).
   */
  hold(): () => void {
    return this.sched.holdFor(this.agent);
  }

  /** Abort this channel's waiting commands (those with `tag`, when given). Returns how many. */
  abortQueued(tag?: unknown, reason?: unknown): number {
    return this.sched.abortQueued(
      tag === undefined ? { channel: this.channel } : { channel: this.channel, tag },
      reason,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// The scheduler

export class IoScheduler {
  readonly demand: DemandTracker;
  private readonly clock: Clock;
  private readonly timers: Timers;
  private concurrency: number;
  /** The budget when the policy sets none (the constructor's). */
  private readonly defaultConcurrency: number;
  private readonly opCost: number;
  private readonly balanceIntervalMs: number;
  private readonly balanceMaxBoost: number;
  private balance = false;
  private lastBalance = 0;

  private readonly agents = new Map<string, AgentState>();
  private readonly volumes = new Map<string, VolumeState>();
  private readonly handles = new Map<number, ChannelHandle>();
  /** Agents with queued commands. */
  private readonly backlogged: AgentState[] = [];
  /** Commands waiting for tokens: a binary min-heap on `readyAt`. */
  private readonly heap: Op[] = [];
  private timer: unknown;
  private timerAt = Number.POSITIVE_INFINITY;
  /** SFQ virtual time: start tag of the last command dispatched. */
  private virtualTime = 0;
  private closed = false;
  private seq = 0;
  /** Admitted commands not yet run, by their signal (ChannelHandle.admit). */
  private readonly tickets = new Map<CommandSignal, Ticket>();

  /** Commands in the volumes now. */
  inFlight = 0;
  /** Commands whose response is being sent (`ChannelHandle.hold`): they count in the budget. */
  sending = 0;
  /** Commands waiting for a share now. */
  waiting = 0;
  /** Commands waiting for tokens now. */
  throttledCount = 0;

  constructor(options: SchedulerOptions = {}) {
    this.clock = options.clock ?? systemClock;
    this.timers = options.timers ?? systemTimers;
    this.concurrency = checkConcurrency(options.concurrency ?? DEFAULT_CONCURRENCY);
    this.defaultConcurrency = this.concurrency;
    this.opCost = options.opCostBytes ?? DEFAULT_OP_COST_BYTES;
    this.balanceIntervalMs = options.balanceIntervalMs ?? DEFAULT_BALANCE_INTERVAL_MS;
    this.balanceMaxBoost = options.balanceMaxBoost ?? DEFAULT_BALANCE_MAX_BOOST;
    this.demand = options.demand ?? new DemandTracker();
    this.lastBalance = this.clock.now();
    if (options.policy) this.configure(options.policy);
  }

  /** Whether `balance: auto` is in force. */
  get balancing(): boolean {
    return this.balance;
  }

  /** The server-wide budget of commands in flight. */
  get budget(): number {
    return this.concurrency;
  }

  /** Change the budget of commands in flight (>= 1); more may start at once. */
  setConcurrency(n: number): void {
    this.concurrency = checkConcurrency(n);
    this.pump(this.clock.now());
  }

  /**
   * Apply a policy: weights, agents' and volumes' speed limits, balance mode, budget. Agents and
   * volumes no longer listed fall back to weight 1 and no limit (their sessions are being
   * dropped); without a budget in the policy, the constructor's applies.
   */
  configure(policy: ArbiterPolicy): void {
    const now = this.clock.now();
    const budget = checkConcurrency(policy.concurrency ?? this.defaultConcurrency);
    const balance = policy.balance === "auto";
    if (balance !== this.balance) {
      this.balance = balance;
      this.lastBalance = now;
      for (const a of this.agents.values()) {
        a.touchArea(now);
        a.queueArea = 0;
      }
    }
    const seenAgents = new Set<string>();
    for (const p of policy.agents) {
      seenAgents.add(p.name);
      const a = this.agentState(p.name);
      a.configured = true;
      a.weight = p.weight;
      if (!this.balance) a.effectiveWeight = p.weight;
      else
        a.effectiveWeight = Math.min(
          Math.max(a.effectiveWeight, p.weight),
          p.weight * this.balanceMaxBoost,
        );
      a.limitsConfig = p.limits;
      a.limits = updateLimits(a.limits, p.limits, this.clock);
    }
    for (const a of this.agents.values()) {
      if (seenAgents.has(a.name)) continue;
      a.configured = false;
      a.weight = DEFAULT_WEIGHT;
      a.effectiveWeight = DEFAULT_WEIGHT;
      a.limits = null;
      a.limitsConfig = undefined;
    }
    const seenVolumes = new Set<string>();
    for (const p of policy.volumes) {
      seenVolumes.add(p.name);
      const v = this.volumeState(p.name);
      v.limits = updateLimits(v.limits, p.limits, this.clock);
    }
    for (const v of this.volumes.values()) if (!seenVolumes.has(v.name)) v.limits = null;
    if (budget !== this.concurrency) this.setConcurrency(budget);
  }

  /**
   * The handle of a channel (agent `agent` sees volume `volume` through mapping `channel`),
   * created on first use and kept until `dropChannel`. Filters hold on to it.
   */
  channel(agent: string, channel: number, volume: string): ChannelHandle {
    const h = this.handles.get(channel);
    if (h !== undefined && h.agentName === agent && h.volumeName === volume) return h;
    const a = this.agentState(agent);
    const v = this.volumeState(volume);
    const handle = new ChannelHandle(
      this,
      a,
      v,
      channel,
      this.demand.channel({ channel, agent, volume }),
    );
    this.handles.set(channel, handle);
    return handle;
  }

  /** Forget a channel whose mapping is gone (its waiting commands are aborted). */
  dropChannel(channel: number): void {
    this.abortQueued({ channel });
    this.handles.delete(channel);
    this.demand.dropChannel(channel);
  }

  /** `channel(agent, channel, volume).run(kind, bytes, fn, signal)`. */
  run<T>(
    agent: string,
    channel: number,
    volume: string,
    kind: IoKind,
    bytes: number,
    fn: () => Promise<T>,
    signal?: CommandSignal,
  ): Promise<T> {
    return this.channel(agent, channel, volume).run(kind, bytes, fn, signal);
  }

  /** Per-agent figures (configured agents, and others that still have commands). */
  agentSchedules(): AgentSchedule[] {
    const out: AgentSchedule[] = [];
    for (const a of this.agents.values()) {
      if (!a.configured && a.demand.depth === 0) continue;
      out.push({
        name: a.name,
        weight: a.weight,
        effectiveWeight: a.effectiveWeight,
        ...(a.limitsConfig ? { limits: a.limitsConfig } : {}),
        queued: a.demand.queued,
        throttled: a.demand.throttled,
        inFlight: a.demand.inFlight,
      });
    }
    return out.sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  }

  /**
   * Abort every waiting command that matches `selector` (all commands when it is empty): each
   * rejects with ArbiterAbortError (cause: `reason`) and never runs. Returns how many.
   */
  abortQueued(selector: AbortSelector, reason?: unknown): number {
    const victims: Op[] = [];
    const match = (op: Op) =>
      (selector.agent === undefined || op.handle.agent.name === selector.agent) &&
      (selector.channel === undefined || op.handle.channel === selector.channel) &&
      (selector.volume === undefined || op.handle.volume.name === selector.volume) &&
      (selector.tag === undefined || op.tag === selector.tag);
    for (const op of this.heap) if (op.state === THROTTLED && match(op)) victims.push(op);
    for (const a of this.backlogged) for (const op of a.queue) if (match(op)) victims.push(op);
    for (const op of victims) this.cancel(op, new ArbiterAbortError(undefined, { cause: reason }));
    return victims.length;
  }

  /** Stop: every waiting command rejects with StorageError(NotReady); no timer stays armed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const error = new StorageError(StorageErrorCode.NotReady, "the I/O scheduler is closing");
    const victims: Op[] = [];
    for (const op of this.heap) if (op.state === THROTTLED) victims.push(op);
    for (const a of this.backlogged) victims.push(...a.queue);
    for (const op of victims) this.cancel(op, error);
    this.heap.length = 0;
    if (this.timer !== undefined) this.timers.clear(this.timer);
    this.timer = undefined;
  }

  // -------------------------------------------------------------------------------------------
  // The command path

  /** @internal Called by ChannelHandle.run. */
  submit<T>(
    h: ChannelHandle,
    kind: IoKind,
    bytes: number,
    fn: () => Promise<T>,
    signal: CommandSignal | undefined,
    tag: unknown,
    admission = false,
  ): Promise<T> {
    if (signal?.aborted)
      return Promise.reject(new ArbiterAbortError(undefined, { cause: signal.reason }));
    if (signal !== undefined && this.tickets.size > 0 && !admission) {
      const ticket = this.tickets.get(signal);
      if (ticket !== undefined && ticket.handle === h && ticket.kind === kind) {
        return this.useTicket(ticket, fn);
      }
    }
    if (this.closed) return Promise.reject(closedError());
    const agentLimits = h.agent.limits;
    const volumeLimits = h.volume.limits;
    const now = this.clock.now();
    let wait = 0;
    if (agentLimits !== null) wait = agentLimits.take(kind, bytes, now);
    if (volumeLimits !== null) {
      const w = volumeLimits.take(kind, bytes, now);
      if (w > wait) wait = w;
    }
    if (wait === 0 && this.waiting === 0 && this.inFlight + this.sending < this.concurrency) {
      // Fast path.
      if (admission) {
        return Promise.resolve(
          this.grant(h, kind, bytes, signal!, 0, now, agentLimits, volumeLimits) as T,
        );
      }
      return this.start(h, kind, bytes, fn, 0, now);
    }
    let resolve!: (value: unknown) => void;
    let reject!: (reason: unknown) => void;
    const promise = new Promise<T>((res, rej) => {
      resolve = res as (value: unknown) => void;
      reject = rej;
    });
    const op: Op = {
      handle: h,
      kind,
      bytes,
      cost: bytes + this.opCost,
      fn,
      resolve,
      reject,
      arrival: now,
      readyAt: now + wait,
      seq: this.seq++,
      startTag: 0,
      state: THROTTLED,
      signal,
      onAbort: undefined,
      tag,
      agentLimits,
      volumeLimits,
      admission,
    };
    if (signal !== undefined) {
      op.onAbort = () =>
        this.cancel(op, new ArbiterAbortError(undefined, { cause: signal.reason }));
      signal.addEventListener("abort", op.onAbort, { once: true });
    }
    if (wait > 0) {
      this.throttledCount++;
      h.agent.demand.throttled++;
      h.demand.throttled++;
      h.agent.demand.totals.throttled++;
      h.demand.totals.throttled++;
      heapPush(this.heap, op);
      this.armTimer(now);
    } else {
      this.admit(op, now);
    }
    return promise;
  }

  /**
   * `ChannelHandle.hold` of the channel with this id (a command's response is being sent); for
   * a channel the scheduler does not know, a release that does nothing.
   */
  hold(channel: number): () => void {
    const h = this.handles.get(channel);
    return h === undefined ? noop : this.holdFor(h.agent);
  }

  /** @internal */
  holdFor(a: AgentState): () => void {
    if (this.backlogged.length > 0) {
      // Contention: count at most the agent's weighted share of the budget.
      let weights = a.effectiveWeight;
      for (const other of this.backlogged) if (other !== a) weights += other.effectiveWeight;
      if (a.sending >= (this.concurrency * a.effectiveWeight) / weights) return noop;
    }
    this.sending++;
    a.sending++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.sending--;
      a.sending--;
      if (this.waiting > 0) this.pump(this.clock.now());
    };
  }

  /** Run `fn` now, counting it in flight until it settles. */
  private start<T>(
    h: ChannelHandle,
    kind: IoKind,
    bytes: number,
    fn: () => Promise<T>,
    waitMs: number,
    t0: number,
  ): Promise<T> {
    this.inFlight++;
    h.agent.demand.inFlight++;
    h.demand.inFlight++;
    let p: Promise<T>;
    try {
      p = fn();
    } catch (error) {
      p = Promise.reject(error);
    }
    return p.then(
      (value) => {
        this.finish(h, kind, bytes, waitMs, t0, false);
        return value;
      },
      (error: unknown) => {
        this.finish(h, kind, bytes, waitMs, t0, true);
        throw error;
      },
    );
  }

  private finish(
    h: ChannelHandle,
    kind: IoKind,
    bytes: number,
    waitMs: number,
    t0: number,
    failed: boolean,
  ): void {
    const now = this.clock.now();
    const service = now - t0;
    this.inFlight--;
    const a = h.agent.demand;
    const c = h.demand;
    a.inFlight--;
    c.inFlight--;
    const bucket = latencyBucket(waitMs + service);
    a.record(kind, bytes, waitMs, service, now, bucket);
    c.record(kind, bytes, waitMs, service, now, bucket);
    if (failed) {
      a.totals.errors++;
      c.totals.errors++;
    }
    if (this.waiting > 0) this.pump(now);
  }

  /** A command whose tokens are due: start it, or queue it for a share. */
  private admit(op: Op, now: number): void {
    if (this.waiting === 0 && this.inFlight + this.sending < this.concurrency) {
      this.dispatch(op, now);
      return;
    }
    const a = op.handle.agent;
    if (this.waiting === 0) this.rebaseTags();
    if (this.balance) this.maybeRebalance(now);
    a.touchArea(now);
    const startTag = Math.max(this.virtualTime, a.lastFinish);
    op.startTag = startTag;
    a.lastFinish = startTag + op.cost / a.effectiveWeight;
    op.state = QUEUED;
    if (a.queue.length === 0) this.backlogged.push(a);
    a.queue.push(op);
    this.waiting++;
    a.demand.queued++;
    op.handle.demand.queued++;
  }

  /**
   * A busy period begins (nothing queued): start the virtual clock again from 0, so that tags
   * stay small numbers however long the server runs. Nobody is backlogged, so no order changes.
   */
  private rebaseTags(): void {
    this.virtualTime = 0;
    for (const a of this.agents.values()) a.lastFinish = 0;
  }

  /** Hand free slots to queued commands, smallest start tag first. */
  private pump(now: number): void {
    if (this.balance && this.waiting > 0) this.maybeRebalance(now);
    while (this.waiting > 0 && this.inFlight + this.sending < this.concurrency) {
      let best: AgentState | undefined;
      let bestIndex = -1;
      let bestTag = Number.POSITIVE_INFINITY;
      for (let i = 0; i < this.backlogged.length; i++) {
        const a = this.backlogged[i]!;
        const tag = a.queue[0]!.startTag;
        if (tag < bestTag) {
          bestTag = tag;
          best = a;
          bestIndex = i;
        }
      }
      if (best === undefined) break;
      best.touchArea(now);
      const op = best.queue.shift()!;
      if (best.queue.length === 0) this.backlogged.splice(bestIndex, 1);
      this.waiting--;
      best.demand.queued--;
      op.handle.demand.queued--;
      this.virtualTime = op.startTag;
      this.dispatch(op, now);
    }
  }

  private dispatch(op: Op, now: number): void {
    op.state = RUNNING;
    if (op.onAbort !== undefined) {
      op.signal!.removeEventListener("abort", op.onAbort);
      op.onAbort = undefined;
    }
    if (op.admission) {
      op.resolve(
        this.grant(
          op.handle,
          op.kind,
          op.bytes,
          op.signal!,
          now - op.arrival,
          now,
          op.agentLimits,
          op.volumeLimits,
        ),
      );
      return;
    }
    this.start(op.handle, op.kind, op.bytes, op.fn, now - op.arrival, now).then(
      op.resolve,
      op.reject,
    );
  }

  /**
   * An admitted command takes its place in the budget (counted in flight) until its run settles,
   * or `started`/`release` of the returned reservation (ChannelHandle.admit).
   */
  private grant(
    h: ChannelHandle,
    kind: IoKind,
    bytes: number,
    signal: CommandSignal,
    waitMs: number,
    t0: number,
    agentLimits: LimitSet | null,
    volumeLimits: LimitSet | null,
  ): WriteReservation {
    this.inFlight++;
    h.agent.demand.inFlight++;
    h.demand.inFlight++;
    const ticket: Ticket = {
      handle: h,
      kind,
      bytes,
      signal,
      waitMs,
      t0,
      agentLimits,
      volumeLimits,
      state: GRANTED,
      onAbort: undefined,
    };
    // One reservation per signal: a second one for the same signal replaces the first.
    const previous = this.tickets.get(signal);
    if (previous !== undefined) this.release(previous);
    this.tickets.set(signal, ticket);
    ticket.onAbort = () => this.release(ticket);
    signal.addEventListener("abort", ticket.onAbort, { once: true });
    return {
      started: () => this.prepay(ticket),
      release: () => this.release(ticket),
    };
  }

  /** A granted ticket gives its place back but stays usable (WriteReservation.started). */
  private prepay(ticket: Ticket): void {
    if (ticket.state !== GRANTED) return;
    ticket.state = PREPAID;
    const h = ticket.handle;
    this.inFlight--;
    h.agent.demand.inFlight--;
    h.demand.inFlight--;
    if (this.waiting > 0) this.pump(this.clock.now());
  }

  /** Run `fn` within an admitted command's place: no tokens, no wait. */
  private useTicket<T>(ticket: Ticket, fn: () => Promise<T>): Promise<T> {
    const { handle: h, kind, bytes, waitMs, t0 } = ticket;
    if (ticket.state === PREPAID) {
      // Counted in flight again while it runs (the budget may be exceeded by such writes).
      this.inFlight++;
      h.agent.demand.inFlight++;
      h.demand.inFlight++;
    }
    ticket.state = USED;
    this.tickets.delete(ticket.signal);
    ticket.signal.removeEventListener("abort", ticket.onAbort!);
    ticket.onAbort = undefined;
    let p: Promise<T>;
    try {
      p = fn();
    } catch (error) {
      p = Promise.reject(error);
    }
    return p.then(
      (value) => {
        ticket.state = ENDED;
        this.finish(h, kind, bytes, waitMs, t0, false);
        return value;
      },
      (error: unknown) => {
        ticket.state = ENDED;
        this.finish(h, kind, bytes, waitMs, t0, true);
        throw error;
      },
    );
  }

  /** Give back an admitted command's place and tokens, unless it was used (or already given). */
  private release(ticket: Ticket): void {
    if (ticket.state !== GRANTED && ticket.state !== PREPAID) return;
    const held = ticket.state === GRANTED;
    ticket.state = ENDED;
    if (this.tickets.get(ticket.signal) === ticket) this.tickets.delete(ticket.signal);
    if (ticket.onAbort !== undefined) {
      ticket.signal.removeEventListener("abort", ticket.onAbort);
      ticket.onAbort = undefined;
    }
    ticket.agentLimits?.refund(ticket.kind, ticket.bytes);
    ticket.volumeLimits?.refund(ticket.kind, ticket.bytes);
    if (!held) return;
    const h = ticket.handle;
    this.inFlight--;
    h.agent.demand.inFlight--;
    h.demand.inFlight--;
    if (this.waiting > 0) this.pump(this.clock.now());
  }

  /** Remove a waiting command and reject it with `error`; nothing if it already runs. */
  private cancel(op: Op, error: unknown): void {
    const h = op.handle;
    if (op.state === THROTTLED) {
      // Left in the heap: popped and skipped when due.
      this.throttledCount--;
      h.agent.demand.throttled--;
      h.demand.throttled--;
    } else if (op.state === QUEUED) {
      const a = h.agent;
      a.touchArea(this.clock.now());
      const i = a.queue.indexOf(op);
      if (i >= 0) a.queue.splice(i, 1);
      if (a.queue.length === 0) {
        const k = this.backlogged.indexOf(a);
        if (k >= 0) this.backlogged.splice(k, 1);
      }
      this.waiting--;
      a.demand.queued--;
      h.demand.queued--;
    } else {
      return;
    }
    op.state = CANCELLED;
    op.agentLimits?.refund(op.kind, op.bytes);
    op.volumeLimits?.refund(op.kind, op.bytes);
    if (op.onAbort !== undefined) {
      op.signal!.removeEventListener("abort", op.onAbort);
      op.onAbort = undefined;
    }
    h.agent.demand.totals.aborted++;
    h.demand.totals.aborted++;
    op.reject(error);
  }

  // -------------------------------------------------------------------------------------------
  // Timers

  private armTimer(now: number): void {
    const next = this.heap[0];
    if (next === undefined) return;
    if (this.timer !== undefined) {
      if (this.timerAt <= next.readyAt) return;
      this.timers.clear(this.timer);
    }
    this.timerAt = next.readyAt;
    this.timer = this.timers.set(() => this.onTimer(), Math.max(0, next.readyAt - now));
  }

  private onTimer(): void {
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    const now = this.clock.now();
    // Due now, or within 10 µs (a timer's whole-millisecond rounding must not spin).
    for (;;) {
      const op = this.heap[0];
      if (op === undefined || op.readyAt > now + 0.01) break;
      heapPop(this.heap);
      if (op.state !== THROTTLED) continue;
      this.throttledCount--;
      op.handle.agent.demand.throttled--;
      op.handle.demand.throttled--;
      this.admit(op, now);
    }
    // Drop cancelled commands from the top so that no timer is armed for them alone.
    while (this.heap[0] !== undefined && this.heap[0].state !== THROTTLED) heapPop(this.heap);
    this.armTimer(now);
  }

  // -------------------------------------------------------------------------------------------
  // Balance

  private maybeRebalance(now: number): void {
    const interval = now - this.lastBalance;
    if (interval < this.balanceIntervalMs) return;
    this.lastBalance = now;
    let unused = 0;
    let demand = 0;
    const pressure = new Map<AgentState, number>();
    for (const a of this.agents.values()) {
      a.touchArea(now);
      const avgQueue = a.queueArea / interval;
      a.queueArea = 0;
      if (avgQueue >= 1) {
        pressure.set(a, a.weight * avgQueue);
        demand += a.weight * avgQueue;
      } else if (a.configured) {
        unused += a.weight;
      }
    }
    for (const a of this.agents.values()) {
      let target = a.weight;
      const p = pressure.get(a);
      if (p !== undefined && unused > 0) {
        target = Math.min(a.weight + (unused * p) / demand, a.weight * this.balanceMaxBoost);
      }
      // Smoothed: half-way to the target each interval.
      a.effectiveWeight = (a.effectiveWeight + target) / 2;
    }
  }

  // -------------------------------------------------------------------------------------------

  private agentState(name: string): AgentState {
    let a = this.agents.get(name);
    if (a === undefined) {
      a = new AgentState(name, this.demand.agent(name));
      a.areaSince = this.clock.now();
      this.agents.set(name, a);
    }
    return a;
  }

  private volumeState(name: string): VolumeState {
    let v = this.volumes.get(name);
    if (v === undefined) {
      v = new VolumeState(name);
      this.volumes.set(name, v);
    }
    return v;
  }
}

function updateLimits(
  current: LimitSet | null,
  limits: SpeedLimits | undefined,
  clock: Clock,
): LimitSet | null {
  if (limits === undefined || !hasLimit(limits)) return null;
  if (current === null) return new LimitSet(limits, clock);
  current.update(limits);
  return current;
}

function checkConcurrency(n: number): number {
  if (!Number.isInteger(n) || n < 1) {
    throw new RangeError(`scheduler concurrency must be a whole number >= 1, got ${n}`);
  }
  return n;
}

function noop(): void {}

/** The `fn` of an admission: dispatch grants a ticket instead of running it. */
function neverRun(): Promise<WriteReservation> {
  return Promise.reject(new Error("an admission is granted, never run"));
}

function closedError(): StorageError {
  return new StorageError(StorageErrorCode.NotReady, "the I/O scheduler is closed");
}

// Binary min-heap on (readyAt, seq): commands due at the same time leave in arrival order.
function before(x: Op, y: Op): boolean {
  return x.readyAt < y.readyAt || (x.readyAt === y.readyAt && x.seq < y.seq);
}

function heapPush(heap: Op[], op: Op): void {
  heap.push(op);
  let i = heap.length - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (!before(op, heap[parent]!)) break;
    heap[i] = heap[parent]!;
    i = parent;
  }
  heap[i] = op;
}

function heapPop(heap: Op[]): Op | undefined {
  const top = heap[0];
  const last = heap.pop();
  if (top === undefined || last === undefined || heap.length === 0) return top;
  let i = 0;
  const n = heap.length;
  for (;;) {
    const l = 2 * i + 1;
    if (l >= n) break;
    const r = l + 1;
    const child = r < n && before(heap[r]!, heap[l]!) ? r : l;
    if (!before(heap[child]!, last)) break;
    heap[i] = heap[child]!;
    i = child;
  }
  heap[i] = last;
  return top;
}
