/**
 * Capacity rules: per-agent limits and reservations of pool space, and soft-threshold warnings.
 *
 * The pool knows which writes allocate (a new grain, not an overwrite of a mapped one) and how
 * much; it asks `check(agent, newBytes)` (or `admit`, which throws) before it allocates, and the
 * answer is one of:
 * - allowed;
 * - QuotaExceeded: the agent's logical bytes plus `newBytes` would exceed its `limit`;
 * - PoolFull: the pool's free bytes, less the unused reservations of the OTHER agents
 *   (`reserved - logical bytes held`, when positive), are fewer than `newBytes`. An agent may
 *   always use its own reservation, and nobody else can.
 * The quota is checked first (it is the more specific answer). The SCSI layer turns both into
 * DATA PROTECT / SPACE ALLOCATION FAILED WRITE PROTECT (27h/07h) through src/scsi/sense-map.ts.
 * The rules hold no state about allocations: once space is freed (UNMAP, a snapshot deleted),
 * the numbers the pool reports drop and writes that fit are allowed again.
 *
 * Units: whatever the pool reports and allocates, consistently. Reservations and limits are
 * written in logical bytes; when the pool passes logical bytes for `newBytes` and compares with
 * physical free space, dedup and compression only make the check conservative.
 *
 * Soft thresholds: `evaluate()` compares each agent's logical bytes with its `softThreshold` ×
 * `limit` (default 80%) and the pool's used bytes with the pool soft threshold × total (default
 * 80%, as the issue asks). Each upward crossing emits one ThresholdEvent (to `onThreshold`, and in the returned
 * list); the alarm re-arms only when usage drops below the threshold minus the hysteresis (1% of
 * the limit or pool by default), so usage wobbling around the line does not repeat it. The
 * server calls `evaluate` after allocating writes or periodically and turns each event into a
 * THIN PROVISIONING SOFT THRESHOLD REACHED unit attention (38h/07h) for the agent's sessions
 * (an agent event) or for every session (a pool event), and a log line.
 */
import { StorageError, StorageErrorCode } from "../volume/errors.js";
import {
  type ArbiterPolicy,
  type CapacityRules as CapacityConfig,
  DEFAULT_AGENT_SOFT_THRESHOLD,
  DEFAULT_POOL_SOFT_THRESHOLD,
} from "./policy.js";

/**
 * What the rules need to know about the pool (implemented by the server over the pool). Called
 * on every allocating write (once per agent that holds a reservation, plus once for the writer):
 * each should be O(1), a counter the pool keeps up to date.
 */
export interface PoolCapacity {
  /** Logical bytes the agent holds across its volumes (mapped grains × grain size). */
  agentLogicalBytes(agent: string): number;
  poolFreeBytes(): number;
  poolTotalBytes(): number;
}

export type CapacityDecision =
  | { readonly allowed: true }
  | {
      readonly allowed: false;
      readonly code: typeof StorageErrorCode.QuotaExceeded | typeof StorageErrorCode.PoolFull;
      readonly message: string;
    };

export interface ThresholdEvent {
  readonly scope: "agent" | "pool";
  /** The agent, for an agent event. */
  readonly agent?: string;
  /** Logical bytes (agent) or used bytes (pool) now. */
  readonly usedBytes: number;
  /** The agent's limit, or the pool's total. */
  readonly limitBytes: number;
  /** The threshold crossed, as a fraction of `limitBytes`. */
  readonly threshold: number;
}

export interface CapacityOptions {
  /** Re-arm a threshold once usage drops this fraction of the limit below it. Default 0.01. */
  readonly hysteresis?: number;
  readonly onThreshold?: (event: ThresholdEvent) => void;
}

interface AgentRule {
  readonly limit: number | undefined;
  readonly reserved: number;
  readonly soft: number;
  /** The soft-threshold alarm may fire (usage was below it, less the hysteresis). */
  armed: boolean;
}

/** One agent's capacity figures, for status and metrics. */
export interface AgentCapacityStatus {
  readonly agent: string;
  readonly logicalBytes: number;
  readonly limitBytes?: number;
  readonly reservedBytes: number;
  /** Reservation not yet used: held back from the other agents. */
  readonly unusedReservedBytes: number;
  readonly softThreshold: number;
  /** Above the soft threshold now (the alarm has fired and not re-armed). */
  readonly aboveSoftThreshold: boolean;
}

export interface PoolCapacityStatus {
  readonly totalBytes: number;
  readonly freeBytes: number;
  readonly reservedBytes: number;
  /** Sum of every agent's unused reservation. */
  readonly unusedReservedBytes: number;
  readonly softThreshold: number;
  readonly aboveSoftThreshold: boolean;
}

export class CapacityRules {
  private rules = new Map<string, AgentRule>();
  private poolSoft = DEFAULT_POOL_SOFT_THRESHOLD;
  private poolArmed = true;
  private readonly hysteresis: number;
  private readonly onThreshold: ((event: ThresholdEvent) => void) | undefined;

  constructor(
    private readonly pool: PoolCapacity,
    policy?: ArbiterPolicy,
    options: CapacityOptions = {},
  ) {
    this.hysteresis = options.hysteresis ?? 0.01;
    this.onThreshold = options.onThreshold;
    if (policy) this.configure(policy);
  }

  /** Apply new limits, reservations and thresholds; alarm states of kept agents are kept. */
  configure(policy: ArbiterPolicy): void {
    const rules = new Map<string, AgentRule>();
    for (const a of policy.agents) {
      const c: CapacityConfig = a.capacity ?? {};
      const old = this.rules.get(a.name);
      const soft = c.softThreshold ?? DEFAULT_AGENT_SOFT_THRESHOLD;
      rules.set(a.name, {
        limit: c.limit,
        reserved: c.reserved ?? 0,
        soft,
        armed: old !== undefined && old.limit === c.limit && old.soft === soft ? old.armed : true,
      });
    }
    this.rules = rules;
    if (policy.poolSoftThreshold !== this.poolSoft) this.poolArmed = true;
    this.poolSoft = policy.poolSoftThreshold;
  }

  /** Whether `agent` may allocate `newBytes` more. */
  check(agent: string, newBytes: number): CapacityDecision {
    if (!(newBytes > 0)) return ALLOWED;
    const rule = this.rules.get(agent);
    if (rule?.limit !== undefined) {
      const used = this.pool.agentLogicalBytes(agent);
      if (used + newBytes > rule.limit) {
        return {
          allowed: false,
          code: StorageErrorCode.QuotaExceeded,
          message: `agent "${agent}" holds ${used} bytes; ${newBytes} more would exceed its capacity limit of ${rule.limit} bytes`,
        };
      }
    }
    const free = this.pool.poolFreeBytes();
    const heldForOthers = this.unusedReservations(agent);
    if (free - heldForOthers < newBytes) {
      return {
        allowed: false,
        code: StorageErrorCode.PoolFull,
        message:
          heldForOthers > 0
            ? `the pool has ${free} bytes free, ${heldForOthers} of them reserved for other agents: not enough for ${newBytes} bytes of agent "${agent}"`
            : `the pool has ${free} bytes free: not enough for ${newBytes} bytes of agent "${agent}"`,
      };
    }
    return ALLOWED;
  }

  /** `check`, throwing StorageError(QuotaExceeded or PoolFull) when refused. */
  admit(agent: string, newBytes: number): void {
    const decision = this.check(agent, newBytes);
    if (!decision.allowed) throw new StorageError(decision.code, decision.message);
  }

  /** Sum of the unused reservations of every agent but `except`. */
  unusedReservations(except?: string): number {
    let sum = 0;
    for (const [name, rule] of this.rules) {
      if (name === except || rule.reserved <= 0) continue;
      const unused = rule.reserved - this.pool.agentLogicalBytes(name);
      if (unused > 0) sum += unused;
    }
    return sum;
  }

  /**
   * Compare usage with the soft thresholds (of `agent` only, and the pool, when an agent is
   * named; of every agent and the pool otherwise). Returns the crossings found, each also given
   * to `onThreshold`.
   */
  evaluate(agent?: string): ThresholdEvent[] {
    const events: ThresholdEvent[] = [];
    const one = (name: string, rule: AgentRule) => {
      if (rule.limit === undefined) return;
      const used = this.pool.agentLogicalBytes(name);
      const crossed = this.step(rule, used, rule.limit, rule.soft);
      if (crossed) {
        events.push({
          scope: "agent",
          agent: name,
          usedBytes: used,
          limitBytes: rule.limit,
          threshold: rule.soft,
        });
      }
    };
    if (agent !== undefined) {
      const rule = this.rules.get(agent);
      if (rule) one(agent, rule);
    } else {
      for (const [name, rule] of this.rules) one(name, rule);
    }
    const total = this.pool.poolTotalBytes();
    if (total > 0) {
      const used = total - this.pool.poolFreeBytes();
      const state = { armed: this.poolArmed };
      const crossed = this.step(state, used, total, this.poolSoft);
      this.poolArmed = state.armed;
      if (crossed) {
        events.push({
          scope: "pool",
          usedBytes: used,
          limitBytes: total,
          threshold: this.poolSoft,
        });
      }
    }
    if (this.onThreshold) for (const e of events) this.onThreshold(e);
    return events;
  }

  /** Reservations that cannot all be honoured: their sum exceeds the pool. */
  reservationProblems(): string[] {
    let sum = 0;
    for (const rule of this.rules.values()) sum += rule.reserved;
    const total = this.pool.poolTotalBytes();
    return sum > total
      ? [`agents reserve ${sum} bytes in all, more than the pool's ${total} bytes`]
      : [];
  }

  agentStatus(): AgentCapacityStatus[] {
    return [...this.rules].map(([agent, rule]) => {
      const used = this.pool.agentLogicalBytes(agent);
      return {
        agent,
        logicalBytes: used,
        ...(rule.limit === undefined ? {} : { limitBytes: rule.limit }),
        reservedBytes: rule.reserved,
        unusedReservedBytes: Math.max(0, rule.reserved - used),
        softThreshold: rule.soft,
        aboveSoftThreshold: !rule.armed,
      };
    });
  }

  poolStatus(): PoolCapacityStatus {
    let reserved = 0;
    for (const rule of this.rules.values()) reserved += rule.reserved;
    return {
      totalBytes: this.pool.poolTotalBytes(),
      freeBytes: this.pool.poolFreeBytes(),
      reservedBytes: reserved,
      unusedReservedBytes: this.unusedReservations(),
      softThreshold: this.poolSoft,
      aboveSoftThreshold: !this.poolArmed,
    };
  }

  /** Advance one alarm; true on an upward crossing. */
  private step(state: { armed: boolean }, used: number, limit: number, soft: number): boolean {
    const ratio = used / limit;
    if (state.armed && ratio >= soft) {
      state.armed = false;
      return true;
    }
    if (!state.armed && ratio < soft - this.hysteresis) state.armed = true;
    return false;
  }
}

const ALLOWED: CapacityDecision = { allowed: true };
