/**
 * Capacity accounting per agent (issue "The shared pool": per volume, per agent, per domain and
 * for the pool). An agent's figures are the sums over the pool volumes it maps — read-write or
 * read-only, each volume once however many LUNs show it — so a volume shared by two agents counts
 * in both (as it does for the arbiter's capacity rules when both write it). Snapshot mappings
 * (`vol@snap`) are views, not volumes: they add nothing. Physical bytes are the volumes'
 * attributed shares (src/pool/meta/README.md, "Capacity accounting"), so savings and ratios are
 * derived from the sums exactly as for a domain.
 */
import type { AccessMode } from "../access/config.js";
import { type PoolUsageReport, type UsageFigures, usageFigures } from "../pool/pool.js";

export interface AgentUsage extends UsageFigures {
  readonly agent: string;
  readonly volumes: readonly { readonly name: string; readonly mode: AccessMode }[];
}

export function usageByAgent(
  usage: Pick<PoolUsageReport, "volumes">,
  agents: readonly string[],
  bindings: readonly { agent: string; volume: string; mode: AccessMode }[],
): AgentUsage[] {
  const byName = new Map(usage.volumes.map((v) => [v.name, v]));
  return agents.map((agent) => {
    const modes = new Map<string, AccessMode>();
    for (const b of bindings) {
      if (b.agent !== agent || !byName.has(b.volume)) continue;
      // A volume mapped both ways counts once, as read-write.
      if (modes.get(b.volume) !== "rw") modes.set(b.volume, b.mode);
    }
    let provisioned = 0;
    let logical = 0;
    let referenced = 0;
    let physical = 0;
    for (const name of modes.keys()) {
      const v = byName.get(name);
      if (v === undefined) continue;
      provisioned += v.provisionedBytes;
      logical += v.logicalBytes;
      referenced += v.referencedBytes;
      physical += v.physicalBytes;
    }
    return {
      agent,
      volumes: [...modes].map(([name, mode]) => ({ name, mode })),
      ...usageFigures(provisioned, logical, referenced, physical),
    };
  });
}
