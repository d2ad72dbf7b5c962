/**
 * The operator's arbitration rules, as the arbiter consumes them: speed limits, weights,
 * capacity limits and reservations, pool threshold and the balance mode.
 *
 * The config file layer (src/access/config.ts) parses and validates the YAML and produces these
 * shapes; `arbiterPolicy` resolves the defaults. Units: bytes, bytes per second, commands per
 * second, seconds, and fractions (0.8 for 80%).
 */

/** Read, write and total limits, each a token bucket. Unset: unlimited. */
export interface SpeedLimits {
  /** Read commands per second. */
  readonly readIops?: number;
  /** Write commands per second. */
  readonly writeIops?: number;
  /** Read + write commands per second. */
  readonly iops?: number;
  /** Bytes read per second. */
  readonly readBps?: number;
  /** Bytes written per second. */
  readonly writeBps?: number;
  /** Bytes read + written per second. */
  readonly bps?: number;
  /** Seconds of each rate a bucket holds (what an idle agent may send at once). Default 1. */
  readonly burst?: number;
}

export interface CapacityRules {
  /** The most logical bytes the agent may hold across its volumes. Unset: no limit. */
  readonly limit?: number;
  /** Pool bytes held back for the agent: other agents cannot fill the pool into them. */
  readonly reserved?: number;
  /** Fraction of `limit` at which the soft-threshold warning fires. Default 0.8. */
  readonly softThreshold?: number;
}

export type BalanceMode = "auto" | "off";

export const DEFAULT_WEIGHT = 1;
export const DEFAULT_AGENT_SOFT_THRESHOLD = 0.8;
export const DEFAULT_POOL_SOFT_THRESHOLD = 0.8;

export interface AgentPolicy {
  readonly name: string;
  /** Share of the server under contention, relative to the other agents' weights; > 0. */
  readonly weight: number;
  readonly limits?: SpeedLimits;
  readonly capacity?: CapacityRules;
}

export interface VolumePolicy {
  readonly name: string;
  readonly limits?: SpeedLimits;
}

export interface ArbiterPolicy {
  readonly agents: readonly AgentPolicy[];
  readonly volumes: readonly VolumePolicy[];
  /** Fraction of the pool at which the pool soft-threshold warning fires. */
  readonly poolSoftThreshold: number;
  readonly balance: BalanceMode;
  /**
   * Commands in the volumes, or with their response being sent, at once, server-wide
   * (`pool.concurrency`). Absent: the scheduler's own default (64, or what it was built with).
   */
  readonly concurrency?: number;
}

/**
 * What `arbiterPolicy` reads: structurally a `SanmuxConfig` (src/access/config.ts), so that the
 * server passes its validated config as it is, and the arbiter does not import the layer above.
 */
export interface ArbiterConfigSource {
  readonly agents: readonly {
    readonly name: string;
    readonly weight?: number;
    readonly limits?: SpeedLimits;
    readonly capacity?: CapacityRules;
  }[];
  readonly volumes: readonly { readonly name: string; readonly limits?: SpeedLimits }[];
  readonly pool?: {
    readonly softThreshold?: number;
    readonly balance?: BalanceMode;
    readonly concurrency?: number;
  };
}

/** The policy a validated config describes, with every default applied. */
export function arbiterPolicy(config: ArbiterConfigSource): ArbiterPolicy {
  return {
    agents: config.agents.map((a) => ({
      name: a.name,
      weight: a.weight ?? DEFAULT_WEIGHT,
      ...(a.limits && hasLimit(a.limits) ? { limits: a.limits } : {}),
      ...(a.capacity ? { capacity: a.capacity } : {}),
    })),
    volumes: config.volumes.map((v) => ({
      name: v.name,
      ...(v.limits && hasLimit(v.limits) ? { limits: v.limits } : {}),
    })),
    poolSoftThreshold: config.pool?.softThreshold ?? DEFAULT_POOL_SOFT_THRESHOLD,
    balance: config.pool?.balance ?? "off",
    ...(config.pool?.concurrency === undefined ? {} : { concurrency: config.pool.concurrency }),
  };
}

/** Whether any rate is set (a burst alone limits nothing). */
export function hasLimit(limits: SpeedLimits): boolean {
  return (
    limits.readIops !== undefined ||
    limits.writeIops !== undefined ||
    limits.iops !== undefined ||
    limits.readBps !== undefined ||
    limits.writeBps !== undefined ||
    limits.bps !== undefined
  );
}

/** What a volume operation is, for limits and accounting: flush, unmap, block status are "other". */
export type IoKind = "read" | "write" | "other";
