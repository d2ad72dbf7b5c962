/**
 * Access control: who is who, and who sees what.
 *
 * Built from a validated SanmuxConfig plus the Catalog (which gives every mapping its channel).
 * Answers, without I/O and in O(1):
 * - which agent an initiator belongs to (`agentForInitiator`, exact match on the normalized
 *   name: RFC 7143 4.2.7.1 makes iSCSI names case-insensitive through stringprep);
 * - which LUNs an agent sees (`bindingsFor`: one ChannelBinding per mapping, sorted by LUN);
 * - the counters of a channel (`countersFor`).
 *
 * Live reload: `applyConfig` persists channel ids for new mappings first, then swaps the whole
 * state at once (readers never see half a config) and reports what changed, so that the server
 * can drop only the sessions and LUNs the change touches. Calls are serialized.
 */
import type { Catalog } from "./catalog.js";
import type { AccessMode, AgentConfig, SanmuxConfig } from "./config.js";
import { type ChannelCounters, newChannelCounters } from "./counters.js";
import { normalizeIscsiName } from "./iscsi-name.js";

export type { ChannelCounters } from "./counters.js";

/** An agent as configured: a host with one or more initiator names and optional CHAP. */
export type Agent = AgentConfig;

/** One mapping with its channel: agent `agent` sees `volume` at LUN `lun`. */
export interface ChannelBinding {
  readonly channel: number;
  readonly agent: string;
  readonly lun: number;
  readonly volume: string;
  readonly mode: AccessMode;
}

/** What `applyConfig` changed. Names and bindings are sorted (by name, by channel). */
export interface AccessChange {
  /** The target name changed: every session must go (initiators log in to a name). */
  readonly targetChanged: boolean;
  readonly agentsAdded: readonly string[];
  readonly agentsRemoved: readonly string[];
  /**
   * Agents kept whose initiators or CHAP credentials changed: their sessions were authenticated
   * under the old rules.
   */
  readonly agentsChanged: readonly string[];
  /** New mappings (new channels). */
  readonly bindingsAdded: readonly ChannelBinding[];
  /** Mappings gone (their channels are retired for good). */
  readonly bindingsRemoved: readonly ChannelBinding[];
  /** Mappings kept (same channel) whose mode changed; the new binding. */
  readonly bindingsChanged: readonly ChannelBinding[];
}

interface AccessState {
  readonly config: SanmuxConfig;
  readonly agents: ReadonlyMap<string, Agent>;
  readonly byInitiator: ReadonlyMap<string, Agent>;
  readonly bindingsByAgent: ReadonlyMap<string, readonly ChannelBinding[]>;
  readonly byChannel: ReadonlyMap<number, ChannelBinding>;
}

const NO_BINDINGS: readonly ChannelBinding[] = Object.freeze([]);

export class AccessControl {
  private state: AccessState;
  private readonly counters = new Map<number, ChannelCounters>();
  private tail: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly catalog: Catalog,
    state: AccessState,
  ) {
    this.state = state;
    for (const channel of state.byChannel.keys()) this.counters.set(channel, newChannelCounters());
  }

  /** Assign (and persist) channels for the config's mappings, then build the tables. */
  static async create(config: SanmuxConfig, catalog: Catalog): Promise<AccessControl> {
    const state = await buildState(config, catalog);
    return new AccessControl(catalog, state);
  }

  /** The config in force. */
  get config(): SanmuxConfig {
    return this.state.config;
  }

  get target(): string {
    return this.state.config.target;
  }

  agentForInitiator(initiatorName: string): Agent | undefined {
    return this.state.byInitiator.get(normalizeIscsiName(initiatorName));
  }

  agent(name: string): Agent | undefined {
    return this.state.agents.get(name);
  }

  allAgents(): readonly Agent[] {
    return this.state.config.agents;
  }

  /** The agent's mappings, sorted by LUN; empty for an unknown agent. */
  bindingsFor(agentName: string): readonly ChannelBinding[] {
    return this.state.bindingsByAgent.get(agentName) ?? NO_BINDINGS;
  }

  binding(channel: number): ChannelBinding | undefined {
    return this.state.byChannel.get(channel);
  }

  /** Every mapping, sorted by channel. */
  allBindings(): readonly ChannelBinding[] {
    return [...this.state.byChannel.values()].sort((a, b) => a.channel - b.channel);
  }

  /**
   * The counters of `channel`: one object per channel, kept for as long as the channel exists
   * (hold on to it on the I/O path). A channel not (or no longer) mapped gets a fresh object, so
   * that I/O racing with a reload never fails for want of counters.
   */
  countersFor(channel: number): ChannelCounters {
    let counters = this.counters.get(channel);
    if (counters === undefined) {
      counters = newChannelCounters();
      this.counters.set(channel, counters);
    }
    return counters;
  }

  /**
   * Switch to `config` (already validated) and report what changed. Channels of new mappings are
   * durable in the catalog before the new state becomes visible.
   */
  applyConfig(config: SanmuxConfig): Promise<AccessChange> {
    const run = this.tail.then(() => this.doApply(config));
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async doApply(config: SanmuxConfig): Promise<AccessChange> {
    const before = this.state;
    const after = await buildState(config, this.catalog);
    this.state = after;

    const bindingsAdded: ChannelBinding[] = [];
    const bindingsChanged: ChannelBinding[] = [];
    for (const [channel, binding] of after.byChannel) {
      const old = before.byChannel.get(channel);
      if (old === undefined) {
        bindingsAdded.push(binding);
        this.counters.set(channel, newChannelCounters());
      } else if (old.mode !== binding.mode) {
        bindingsChanged.push(binding);
      }
    }
    const bindingsRemoved: ChannelBinding[] = [];
    for (const [channel, binding] of before.byChannel) {
      if (!after.byChannel.has(channel)) {
        bindingsRemoved.push(binding);
        this.counters.delete(channel);
      }
    }
    const agentsAdded: string[] = [];
    const agentsChanged: string[] = [];
    for (const [name, agent] of after.agents) {
      const old = before.agents.get(name);
      if (old === undefined) agentsAdded.push(name);
      else if (agentFingerprint(old) !== agentFingerprint(agent)) agentsChanged.push(name);
    }
    const agentsRemoved = [...before.agents.keys()].filter((name) => !after.agents.has(name));
    const byChannel = (a: ChannelBinding, b: ChannelBinding) => a.channel - b.channel;
    return {
      targetChanged: before.config.target !== after.config.target,
      agentsAdded: agentsAdded.sort(),
      agentsRemoved: agentsRemoved.sort(),
      agentsChanged: agentsChanged.sort(),
      bindingsAdded: bindingsAdded.sort(byChannel),
      bindingsRemoved: bindingsRemoved.sort(byChannel),
      bindingsChanged: bindingsChanged.sort(byChannel),
    };
  }
}

async function buildState(config: SanmuxConfig, catalog: Catalog): Promise<AccessState> {
  const agents = new Map<string, Agent>();
  const byInitiator = new Map<string, Agent>();
  for (const agent of config.agents) {
    if (agents.has(agent.name)) throw new Error(`invalid config: agent "${agent.name}" twice`);
    agents.set(agent.name, agent);
    for (const initiator of agent.initiators) {
      const key = normalizeIscsiName(initiator);
      const owner = byInitiator.get(key);
      if (owner !== undefined && owner !== agent) {
        throw new Error(
          `invalid config: initiator "${initiator}" belongs to "${owner.name}" and "${agent.name}"`,
        );
      }
      byInitiator.set(key, agent);
    }
  }
  // Assert (the config file layer validated all this) before touching the catalog.
  const luns = new Set<string>();
  for (const m of config.mappings) {
    if (!agents.has(m.agent)) throw new Error(`invalid config: unknown agent "${m.agent}"`);
    const key = `${m.agent}\0${m.lun}`;
    if (luns.has(key)) throw new Error(`invalid config: agent "${m.agent}" has LUN ${m.lun} twice`);
    luns.add(key);
  }

  const records = await catalog.syncChannels(config.mappings);
  const bindingsByAgent = new Map<string, ChannelBinding[]>();
  const byChannel = new Map<number, ChannelBinding>();
  config.mappings.forEach((m, i) => {
    const channel = (records[i] as { channel: number }).channel;
    const binding: ChannelBinding = Object.freeze({
      channel,
      agent: m.agent,
      lun: m.lun,
      volume: m.volume,
      mode: m.mode,
    });
    let list = bindingsByAgent.get(m.agent);
    if (list === undefined) {
      list = [];
      bindingsByAgent.set(m.agent, list);
    }
    list.push(binding);
    byChannel.set(channel, binding);
  });
  for (const list of bindingsByAgent.values()) {
    list.sort((a, b) => a.lun - b.lun);
    Object.freeze(list);
  }
  return { config, agents, byInitiator, bindingsByAgent, byChannel };
}

/** What about an agent affects its sessions: its initiators and its CHAP credentials. */
function agentFingerprint(agent: Agent): string {
  return JSON.stringify([
    agent.initiators.map(normalizeIscsiName).sort(),
    agent.chap?.user ?? null,
    agent.chap?.secret ?? null,
    agent.chap?.targetUser ?? null,
    agent.chap?.targetSecret ?? null,
  ]);
}
