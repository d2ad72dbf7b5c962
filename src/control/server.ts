/**
 * The sanmux server: wires the layers together. Config + catalog → access control → channel
 * filters over volumes → SCSI target → iSCSI portal. Nothing below this file knows about the
 * others beyond its own contracts.
 */

import type { KeyObject } from "node:crypto";
import { existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Logger } from "pino";
import { AccessControl, type ChannelBinding } from "../access/access.js";
import { Catalog } from "../access/catalog.js";
import { loadConfig, type SanmuxConfig } from "../access/config.js";
import { CountingFilter } from "../access/filters/counting.js";
import { ReadOnlyFilter } from "../access/filters/read-only.js";
import { Arbiter, arbiterPolicy, type MetricsServer, serveMetrics } from "../arbiter/index.js";
import { cryptoImplementationInfo } from "../crypto/native.js";
import type { LoginPolicy } from "../iscsi/login/login.js";
import { Portal, type PortalAddress } from "../iscsi/portal.js";
import {
  DEFAULT_TUNING,
  type IscsiTuning,
  type NexusPort,
  type TargetServices,
} from "../iscsi/services.js";
import { Pool, PoolVolume } from "../pool/pool.js";
import { ScsiTarget } from "../scsi/target.js";
import type { LunEntry, LunView, NexusIdentity, ScsiCommand } from "../scsi/types.js";
import type { Volume } from "../volume/volume.js";
import { type AgentUsage, usageByAgent } from "./agent-usage.js";
import { ControlApi } from "./control-api.js";
import { type DataDirLock, lockDataDir } from "./data-lock.js";
import { EventLog } from "./events.js";
import { FileReservationStore } from "./pr-store.js";
import { openConfiguredVolume } from "./volumes.js";

/** Where the pool lives inside the data directory. */
export function poolDir(dataDir: string): string {
  return path.join(dataDir, "pool");
}

export interface ServerOptions {
  readonly dataDir: string;
  readonly config: SanmuxConfig;
  readonly portal: PortalAddress;
  readonly logger: Logger;
  readonly tuning?: Partial<IscsiTuning>;
  /** Host name reported in VPD 0xC0 (default: os.hostname()). */
  readonly hostName?: string;
  /** The master key; required when the config has pool volumes or the pool exists. */
  readonly masterKey?: KeyObject;
  /** The config file, for `reload()` (SIGHUP, `sanmux reload`, edits when watched). */
  readonly configPath?: string;
  /** Serve Prometheus metrics over HTTP on this address. */
  readonly metrics?: PortalAddress;
}

/** What a reload changed (logged, and returned to `sanmux reload`). */
export interface ReloadReport {
  readonly agentsAdded: readonly string[];
  readonly agentsRemoved: readonly string[];
  readonly agentsChanged: readonly string[];
  readonly mappingsAdded: number;
  readonly mappingsRemoved: number;
  readonly mappingsChanged: number;
  readonly volumesOpened: readonly string[];
  readonly volumesGrown: readonly string[];
  readonly sessionsEnded: number;
}

/** A channel's filter stack, built once per (channel, mode) and shared by its sessions. */
interface CachedEntry {
  readonly mode: string;
  readonly volume: Volume;
  readonly entry: LunEntry;
}

/** Seconds between background GC passes when `pool.gc_interval` is not set. */
const DEFAULT_GC_INTERVAL_S = 600;

export const PRODUCT = { vendor: "SANMUX", product: "sanmux volume", revision: "0001" } as const;

/**
 * `SANMUX_ARBITER=off`: channels bypass the arbiter (no speed limits, no shares, no demand
 * figures; capacity rules still apply); `off:AGENT,AGENT`: only those agents' channels, so that
 * one server can be measured with and without it side by side. A benchmarking switch, to
 * measure what arbitration costs (bench/arbitration.mjs), and nothing else.
 */
const ARBITER_SWITCH = process.env.SANMUX_ARBITER ?? "";
const ARBITER_OFF = ARBITER_SWITCH === "off";
const ARBITER_OFF_FOR = new Set(
  ARBITER_SWITCH.startsWith("off:") ? ARBITER_SWITCH.slice(4).split(",") : [],
);

export class SanmuxServer {
  private readonly volumes = new Map<string, Volume>();
  private pool: Pool | undefined;
  private lock: DataDirLock | undefined;
  private control: ControlApi | undefined;
  private readonly startedAt = Date.now();
  private gcTimer: NodeJS.Timeout | undefined;
  private gcIntervalS = DEFAULT_GC_INTERVAL_S;
  private stopping = false;
  /** What `sanmux events` shows (events.ts). */
  readonly events = new EventLog();
  private metricsServer: MetricsServer | undefined;
  private arbiter!: Arbiter;
  /** LUN entries by channel; views read through it, so a reload reaches live sessions. */
  private readonly entries = new Map<number, CachedEntry>();
  private reloading: Promise<unknown> = Promise.resolve();
  private capacityCheck: NodeJS.Timeout | undefined;
  private access!: AccessControl;
  private scsi!: ScsiTarget;
  private portal!: Portal;
  address: PortalAddress | undefined;

  private constructor(private readonly options: ServerOptions) {}

  static async start(options: ServerOptions): Promise<SanmuxServer> {
    const server = new SanmuxServer(options);
    try {
      await server.init();
    } catch (error) {
      await server.pool?.close().catch(() => undefined);
      await server.lock?.release();
      throw error;
    }
    return server;
  }

  private async openPool(): Promise<void> {
    const { config, dataDir, logger, masterKey } = this.options;
    const wanted = config.volumes.some((v) => v.backend === "pool");
    // File volumes only: the pool is opened when it exists and the key is at hand (status).
    if (!wanted && (masterKey === undefined || !existsSync(poolDir(dataDir)))) return;
    if (masterKey === undefined) {
      throw new Error(
        "the pool needs the master key: give --key-file (created by `sanmux init`) or set SANMUX_MASTER_KEY",
      );
    }
    this.pool = await Pool.open({
      dir: poolDir(dataDir),
      masterKey,
      logger: logger.child({ layer: "pool" }),
      devices: [...config.pool.devices],
      maxBytes: config.pool.maxSize,
      grainCacheBytes: config.pool.cacheSize,
    });
  }

  private async init(): Promise<void> {
    const { config, dataDir, logger } = this.options;
    this.lock = await lockDataDir(dataDir);
    const catalog = await Catalog.open(dataDir);
    await this.openPool();
    for (const v of config.volumes) {
      const { volume } = await openConfiguredVolume(v, {
        dataDir,
        pool: this.pool,
        logger,
        current: undefined,
      });
      this.volumes.set(v.name, volume);
    }
    await this.openSnapshotVolumes(config, false); // reservations: loaded below with the others
    this.access = await AccessControl.create(config, catalog);
    this.arbiter = this.createArbiter(config);
    this.pool?.setAllocationGuard((volume, bytes) => this.admitAllocation(volume, bytes));
    this.scheduleGc(config.pool.gcInterval);
    const hostName = this.options.hostName ?? os.hostname();
    this.scsi = new ScsiTarget(
      { ...PRODUCT, hostName, targetName: config.target },
      {
        logger: logger.child({ layer: "scsi" }),
        reservationStore: new FileReservationStore(dataDir),
      },
    );
    // APTPL persistent reservations are back before the first command can arrive. A volume
    // whose saved state cannot be read answers HARDWARE ERROR until it can (logged here).
    for (const volume of this.volumes.values()) {
      await this.scsi.loadReservations(volume.id).catch((err: unknown) => {
        logger.error({ err, volume: volume.name }, "cannot load persistent reservations");
      });
    }
    const i = config.iscsi;
    const fromConfig: Partial<IscsiTuning> = {
      ...(i.queueDepth === undefined ? {} : { queueDepth: i.queueDepth }),
      ...(i.nopInterval === undefined ? {} : { nopInterval: i.nopInterval }),
      ...(i.nopTimeout === undefined ? {} : { nopTimeout: i.nopTimeout }),
    };
    const tuning = { ...DEFAULT_TUNING, ...fromConfig, ...this.options.tuning };
    const services: TargetServices = {
      loginPolicy: this.loginPolicy(),
      openNexus: (identity) => this.openNexus(identity),
      queueDepthFor: (initiatorName) => this.access.agentForInitiator(initiatorName)?.queueDepth,
      hasLun: (initiatorName, lun) => {
        const agent = this.access.agentForInitiator(initiatorName);
        return (
          agent !== undefined && this.access.bindingsFor(agent.name).some((b) => b.lun === lun)
        );
      },
      sendTargets: (_initiatorName, localAddress) => [
        {
          name: config.target,
          addresses: [
            `${formatHost(localAddress || this.address?.host || "127.0.0.1")}:${this.address?.port ?? 3260},1`,
          ],
        },
      ],
      logger: logger.child({ layer: "iscsi" }),
      tuning,
    };
    this.portal = new Portal(services);
    this.address = await this.portal.listen(this.options.portal);
    this.control = await ControlApi.listen(
      dataDir,
      {
        status: async () => this.status(),
        events: async (since) => this.events.list(since),
        reload: async () => this.reload(),
        scrub: async () => this.scrubPool(),
        check: async () => this.requirePool().check(),
        gc: async () => this.gcPool(),
        addDevice: async (dir) => {
          await this.requirePool().addDevice(dir);
          return this.requirePool().usage();
        },
        createSnapshot: async (volume, name) => this.requirePool().createSnapshot(volume, name),
        listSnapshots: async (volume) => this.requirePool().listSnapshots(volume),
        deleteSnapshot: async (volume, name) => this.deleteSnapshot(volume, name),
        deleteVolume: async (name) => this.deleteVolume(name),
        cloneSnapshot: async (volume, name, newVolume) => {
          const clone = await this.requirePool().cloneSnapshot(volume, name, newVolume);
          return { volume: clone.name, sizeBytes: clone.sizeBytes, blockSize: clone.blockSize };
        },
      },
      logger.child({ layer: "control" }),
    );
    if (this.options.metrics) {
      this.metricsServer = await serveMetrics(
        this.options.metrics.host,
        this.options.metrics.port,
        this.arbiter.metrics.registry,
      );
      const m = this.metricsServer.address;
      logger.info({ metrics: `http://${formatHost(m.host)}:${m.port}/metrics` }, "serving metrics");
    }
    this.arbiter.startSampling(10_000);
    if (ARBITER_OFF || ARBITER_OFF_FOR.size > 0) {
      logger.warn(
        { agents: ARBITER_OFF ? "all" : [...ARBITER_OFF_FOR] },
        `SANMUX_ARBITER=${ARBITER_SWITCH}: no speed limits, no fair shares (for benchmarking only)`,
      );
    }
    // Which AES-GCM / HMAC code seals and opens the pool's chunks: the native addon, or
    // node:crypto (same bytes, ≈ 3× the CPU per grain) and why (src/crypto/README.md).
    const crypto = cryptoImplementationInfo();
    const cryptoLine = { crypto: crypto.implementation, detail: crypto.detail };
    if (crypto.implementation === "native") logger.info(cryptoLine, "pool crypto");
    else logger.warn(cryptoLine, "pool crypto: native addon not in use, node:crypto is slower");
    if (this.pool !== undefined) {
      // The memory reads may take (config pool.cache_size; src/pool/README.md "Read path").
      const c = this.pool.readCache();
      logger.info(
        { byVolume: c.byVolume.bytes, byChunk: c.byChunk.bytes, hints: c.hints.bytes },
        "pool read cache (bytes, taken as it fills)",
      );
    }
    logger.info(
      {
        portal: `${this.address.host}:${this.address.port}`,
        target: config.target,
        agents: config.agents.length,
        volumes: config.volumes.length,
        mappings: config.mappings.length,
        crypto: crypto.implementation,
      },
      "listening",
    );
  }

  private loginPolicy(): LoginPolicy {
    const iscsi = this.options.config.iscsi;
    const access = () => this.access;
    return {
      get targetName() {
        return access().target;
      },
      portalGroupTag: 1,
      limits: {
        maxRecvDataSegmentLength: iscsi.maxRecvDataSegmentLength ?? 262144,
        maxBurstLength: iscsi.maxBurstLength ?? 16 * 1024 * 1024,
        firstBurstLength: iscsi.firstBurstLength ?? 262144,
        maxOutstandingR2T: iscsi.maxOutstandingR2T ?? 16,
        immediateData: iscsi.immediateData ?? true,
        initialR2T: iscsi.initialR2T ?? false,
      },
      lookupInitiator: (initiatorName: string) => {
        const agent = this.access.agentForInitiator(initiatorName);
        if (!agent) return undefined;
        return agent.chap ? { chap: agent.chap } : {};
      },
    };
  }

  /**
   * The LUNs an initiator may address, as its agent's mappings say at the time of each call:
   * a reload that adds or removes a mapping reaches sessions already logged in.
   */
  private lunView(initiatorName: string): LunView {
    // Resolved once per config in force (a reload swaps the config object), not per command.
    let resolvedFor: SanmuxConfig | undefined;
    let resolved: readonly ChannelBinding[] = [];
    const bindings = () => {
      if (resolvedFor !== this.access.config) {
        resolvedFor = this.access.config;
        const agent = this.access.agentForInitiator(initiatorName);
        resolved = agent ? this.access.bindingsFor(agent.name) : [];
      }
      return resolved;
    };
    return {
      list: () => {
        const out: LunEntry[] = [];
        for (const b of bindings()) {
          const e = this.entryFor(b);
          if (e) out.push(e);
        }
        return out;
      },
      get: (lun) => {
        const b = bindings().find((x) => x.lun === lun);
        return b ? this.entryFor(b) : undefined;
      },
    };
  }

  /**
   * The LUN entry of a mapping. Filters stack like nbdkit's: the arbiter (limits, shares) on
   * the volume, the read-only guard above it (so refused writes take no tokens), and the
   * counter on top (so refused writes count as errors of the channel too).
   */
  private entryFor(b: ChannelBinding): LunEntry | undefined {
    const base = this.volumes.get(b.volume);
    if (!base) return undefined;
    const cached = this.entries.get(b.channel);
    if (cached && cached.mode === b.mode && cached.volume === base) return cached.entry;
    const bypass = ARBITER_OFF || ARBITER_OFF_FOR.has(b.agent);
    const arbitrated = bypass ? base : this.arbiter.filter(base, b);
    const guarded: Volume = b.mode === "ro" ? new ReadOnlyFilter(arbitrated) : arbitrated;
    const volume = new CountingFilter(guarded, this.access.countersFor(b.channel));
    const entry: LunEntry = {
      lun: b.lun,
      channel: b.channel,
      readOnly: b.mode === "ro",
      volume,
      volumeId: base.id,
    };
    this.entries.set(b.channel, { mode: b.mode, volume: base, entry });
    return entry;
  }

  private createArbiter(config: SanmuxConfig): Arbiter {
    const pool = this.pool;
    const logger = this.options.logger;
    return new Arbiter({
      policy: arbiterPolicy(config),
      ...(pool
        ? {
            pool: {
              agentLogicalBytes: (agent: string) => this.agentLogicalBytes(agent),
              poolFreeBytes: () => pool.capacity().freeBytes,
              poolTotalBytes: () => pool.capacity().totalBytes,
            },
          }
        : {}),
      onThreshold: (event) => {
        const message =
          event.scope === "agent"
            ? `agent ${event.agent} crossed its soft capacity threshold`
            : "the pool crossed its soft capacity threshold";
        logger.warn({ ...event }, message);
        this.events.record("capacity.soft-threshold", "warning", message, { ...event });
        if (event.scope === "pool") this.scheduleGc(this.gcIntervalS, true);
        const initiators =
          event.scope === "agent"
            ? new Set(
                (this.access.agent(event.agent ?? "")?.initiators ?? []).map((i) =>
                  i.toLowerCase(),
                ),
              )
            : undefined;
        this.scsi.notifySoftThreshold((name) => initiators?.has(name.toLowerCase()) ?? true);
      },
    });
  }

  /**
   * Open the snapshot views the config's snapshot mappings show, under their mapping key
   * (`volume@snapshot`); returns the keys opened. A missing snapshot fails with the mapping named.
   */
  private async openSnapshotVolumes(
    config: SanmuxConfig,
    loadReservations: boolean,
  ): Promise<string[]> {
    const opened: string[] = [];
    for (const m of config.mappings) {
      if (m.snapshot === undefined) continue;
      const current = this.volumes.get(m.volume);
      if (current instanceof PoolVolume && !current.isClosed) continue;
      const pool = this.pool;
      if (pool === undefined) throw new Error(`mapping of "${m.volume}": the pool is not open`);
      const { volume, name } = m.snapshot;
      let view: PoolVolume;
      try {
        view = await pool.openSnapshot(volume, name);
      } catch (error) {
        throw new Error(
          `mapping of agent "${m.agent}" at LUN ${m.lun} (volume ${volume}, snapshot ${name}): ` +
            `${(error as Error).message} (create it with \`sanmux snapshot create ${volume} ${name}\`)`,
          { cause: error },
        );
      }
      this.volumes.set(m.volume, view);
      opened.push(m.volume);
      if (!loadReservations) continue;
      await this.scsi.loadReservations(view.id).catch((err: unknown) => {
        this.options.logger.error({ err, volume: m.volume }, "cannot load persistent reservations");
      });
    }
    return opened;
  }

  /** Refuse to delete a snapshot the running config maps; else delete it and forget its view. */
  private async deleteSnapshot(volume: string, name: string): Promise<{ deleted: string }> {
    const key = `${volume}@${name}`;
    const mapped = this.access.allBindings().find((b) => b.volume === key);
    if (mapped !== undefined) {
      throw new Error(
        `snapshot ${key} is mapped to agent "${mapped.agent}" at LUN ${mapped.lun}: ` +
          "remove the mapping from the config and reload first",
      );
    }
    await this.requirePool().deleteSnapshot(volume, name);
    this.volumes.delete(key);
    return { deleted: key };
  }

  /**
   * Delete a pool volume online: refused while the running config declares it (remove it and
   * its mappings, reload, then delete: the config is the desired state, and a volume still in
   * it would be created again empty at the next reload). Its space comes back at the next GC.
   */
  private async deleteVolume(name: string): Promise<{ deleted: string }> {
    if (this.access.config.volumes.some((v) => v.name === name)) {
      throw new Error(
        `volume "${name}" is in the running config: remove it (and its mappings) from the ` +
          "config and reload first",
      );
    }
    const open = this.volumes.get(name);
    await this.requirePool().deleteVolume(name);
    this.volumes.delete(name);
    await open?.close().catch(() => undefined);
    this.events.record("pool.volume-deleted", "info", `volume ${name} deleted`, { volume: name });
    return { deleted: name };
  }

  /**
   * The pool's allocation guard: a write that maps `bytes` of new grains of `volume` is
   * admitted by the capacity rules for every agent that maps the volume read-write (the volume
   * counts in each one's logical bytes, agentLogicalBytes); a volume no agent writes is checked
   * against the pool's free space only. Throws QuotaExceeded / PoolFull (27h/07h on the wire).
   */
  private admitAllocation(volume: string, bytes: number): void {
    const capacity = this.arbiter.capacity;
    if (capacity === undefined) return;
    const agents = new Set<string>();
    for (const b of this.access.allBindings()) {
      if (b.volume === volume && b.mode === "rw") agents.add(b.agent);
    }
    if (agents.size === 0) capacity.admit("", bytes);
    for (const agent of agents) capacity.admit(agent, bytes);
    this.scheduleCapacityCheck();
  }

  /**
   * Look for soft-threshold crossings shortly after allocating writes (the periodic sampling
   * runs every 10 s): one check at most every 300 ms, so the unit attention follows the write
   * that crossed the threshold closely.
   */
  private scheduleCapacityCheck(): void {
    if (this.capacityCheck !== undefined) return;
    this.capacityCheck = setTimeout(() => {
      this.capacityCheck = undefined;
      this.arbiter.sampleCapacity();
    }, 300);
    this.capacityCheck.unref();
  }

  /** Logical bytes held by the volumes an agent writes (its read-write mappings). */
  private agentLogicalBytes(agent: string): number {
    let total = 0;
    for (const b of this.access.bindingsFor(agent)) {
      if (b.mode !== "rw") continue;
      total += this.pool?.volumeLogicalBytes(b.volume) ?? 0;
    }
    return total;
  }

  private openNexus(login: NexusIdentity): NexusPort {
    const view = this.lunView(login.initiatorName);
    const keyBy = this.access.agentForInitiator(login.initiatorName)?.reservations?.keyBy;
    const identity: NexusIdentity = keyBy ? { ...login, reservationKeyBy: keyBy } : login;
    const nexus = this.scsi.openNexus(identity, view);
    const access = this.access;
    const scheduler = ARBITER_OFF ? undefined : this.arbiter.scheduler;
    // Commands whose Data-In is being sent keep their share of the arbiter's budget until the
    // connection says it left (src/arbiter/scheduler.ts, "Responses being sent").
    const sending = new Map<ScsiCommand, () => void>();
    return {
      async execute(cmd) {
        const entry = view.get(cmd.lun);
        const counters = entry ? access.countersFor(entry.channel) : undefined;
        // Volume errors are counted by the channel's CountingFilter; here only commands.
        if (counters) counters.commands++;
        const result = await nexus.execute(cmd);
        if (scheduler && entry && result.data !== undefined && result.data.length > 0) {
          sending.set(cmd, scheduler.hold(entry.channel));
        }
        return result;
      },
      sent(cmd) {
        const release = sending.get(cmd);
        if (release === undefined) return;
        sending.delete(cmd);
        release();
      },
      abortTask: (cmd) => nexus.abortTask(cmd),
      // A write's turn in the arbiter, taken before its data is solicited (R2T).
      admitWrite: (lun, bytes, signal) => nexus.admitWrite(lun, bytes, signal),
      // A reset reaches the commands still waiting in the arbiter's queues too: they end
      // without touching the volume (SAM-5: a LUN reset aborts every task of the logical unit).
      lunReset: (lun) => {
        this.abortQueuedFor(view.get(lun));
        nexus.lunReset(lun);
      },
      targetReset: () => {
        for (const entry of view.list()) this.abortQueuedFor(entry);
        nexus.targetReset();
      },
      close: () => {
        for (const release of sending.values()) release();
        sending.clear();
        nexus.close();
      },
    };
  }

  /** Abort the commands waiting in the arbiter for the volume behind `entry` (every channel). */
  private abortQueuedFor(entry: LunEntry | undefined): void {
    const volume = entry ? this.access.binding(entry.channel)?.volume : undefined;
    if (volume !== undefined) this.arbiter.scheduler.abortQueued({ volume });
  }

  /**
   * Apply the config file again: new agents, volumes, mappings and limits take effect without
   * dropping the sessions the change does not touch. Sessions of removed agents, or of agents
   * whose initiators or CHAP secrets changed, end (they logged in under other rules); every
   * session of an agent whose mappings changed gets REPORTED LUNS DATA HAS CHANGED. A bad file
   * changes nothing (the error says why). Reloads run one at a time.
   */
  reload(): Promise<ReloadReport> {
    const run = this.reloading.then(() => this.doReload());
    this.reloading = run.catch((error: unknown) => {
      this.events.record(
        "config.rejected",
        "error",
        `configuration not reloaded: ${(error as Error).message}`,
      );
    });
    return run;
  }

  private async doReload(): Promise<ReloadReport> {
    const { configPath, logger, dataDir } = this.options;
    if (configPath === undefined) throw new Error("this server was started without a config file");
    const config = await loadConfig(configPath);
    if (config.volumes.some((v) => v.backend === "pool") && this.pool === undefined) {
      throw new Error("the new config has pool volumes but the pool is not open: restart sanmux");
    }
    const volumesOpened: string[] = [];
    const volumesGrown: string[] = [];
    for (const v of config.volumes) {
      const current = this.volumes.get(v.name);
      const { volume, grew } = await openConfiguredVolume(v, {
        dataDir,
        pool: this.pool,
        logger,
        current,
      });
      if (current === undefined) {
        this.volumes.set(v.name, volume);
        volumesOpened.push(v.name);
        await this.scsi.loadReservations(volume.id).catch((err: unknown) => {
          logger.error({ err, volume: v.name }, "cannot load persistent reservations");
        });
      } else if (grew) {
        volumesGrown.push(v.name);
        this.scsi.notifyVolumeChanged(volume.id, "capacity-changed");
      }
    }
    volumesOpened.push(...(await this.openSnapshotVolumes(config, true)));
    this.pool?.setMaxBytes(config.pool.maxSize);
    this.pool?.setGrainCacheBytes(config.pool.cacheSize);
    if ((config.pool.gcInterval ?? DEFAULT_GC_INTERVAL_S) !== this.gcIntervalS) {
      this.scheduleGc(config.pool.gcInterval);
    }
    const change = await this.access.applyConfig(config);
    this.arbiter.configure(arbiterPolicy(config));
    for (const b of change.bindingsRemoved) {
      this.arbiter.dropChannel(b.channel);
      this.entries.delete(b.channel);
    }
    // Queue depths (MaxCmdSN) of the sessions that stay; the agent's, else the target's.
    for (const session of this.portal.sessions.list()) {
      session.setQueueDepth?.(this.access.agentForInitiator(session.initiatorName)?.queueDepth);
    }
    // Sessions that logged in under rules that no longer hold.
    const ended = new Set(
      change.targetChanged
        ? this.portal.sessions.list().map((s) => s.initiatorName.toLowerCase())
        : [],
    );
    const gone = new Set([...change.agentsRemoved, ...change.agentsChanged]);
    let sessionsEnded = 0;
    for (const session of this.portal.sessions.list()) {
      const name = session.initiatorName.toLowerCase();
      const agent = this.access.agentForInitiator(session.initiatorName);
      if (ended.has(name) || agent === undefined || gone.has(agent.name)) {
        session.terminate("the configuration no longer allows this session");
        sessionsEnded++;
      }
    }
    const touched = new Set(
      [...change.bindingsAdded, ...change.bindingsRemoved, ...change.bindingsChanged].map(
        (b) => b.agent,
      ),
    );
    for (const session of this.portal.sessions.list()) {
      const agent = this.access.agentForInitiator(session.initiatorName);
      if (agent && touched.has(agent.name)) this.scsi.notifyLunsChanged(session.initiatorName);
    }
    const report: ReloadReport = {
      agentsAdded: change.agentsAdded,
      agentsRemoved: change.agentsRemoved,
      agentsChanged: change.agentsChanged,
      mappingsAdded: change.bindingsAdded.length,
      mappingsRemoved: change.bindingsRemoved.length,
      mappingsChanged: change.bindingsChanged.length,
      volumesOpened,
      volumesGrown,
      sessionsEnded,
    };
    logger.info({ config: configPath, ...report }, "configuration reloaded");
    this.events.record("config.reloaded", "info", "configuration reloaded", { ...report });
    return report;
  }

  /** Per-channel counters, for status reports and the final log line. */
  channelReport(): Array<Record<string, number | string>> {
    return this.access.allBindings().map((b) => ({
      channel: b.channel,
      agent: b.agent,
      lun: b.lun,
      volume: b.volume,
      ...this.access.countersFor(b.channel),
    }));
  }

  /** Scrub through the API; damage found is an event (and a log line, from the pool). */
  private async scrubPool(): Promise<Awaited<ReturnType<Pool["scrub"]>>> {
    const report = await this.requirePool().scrub();
    if (report.damaged.length > 0 || report.missing.length > 0) {
      this.events.record(
        "pool.damage",
        "error",
        `scrub found ${report.damaged.length} damaged record(s) and ${report.missing.length} missing container(s)`,
        { damaged: report.damaged.length, missing: report.missing.length },
      );
    }
    return report;
  }

  private async gcPool(): Promise<Awaited<ReturnType<Pool["gc"]>>> {
    const report = await this.requirePool().gc();
    this.events.record("pool.gc", "info", "garbage collection pass done", { ...report });
    return report;
  }

  /**
   * Background GC (issue "The shared pool": containers are compacted by dead space in the
   * background): a pass every `pool.gc_interval` (default 10 minutes; 0 or "off" for none),
   * and one soon after the pool crosses its soft threshold, when the space matters most. Passes
   * yield between containers (gc.ts), so I/O goes on. A pass that freed something is an event.
   */
  private scheduleGc(intervalSeconds = DEFAULT_GC_INTERVAL_S, soon = false): void {
    clearTimeout(this.gcTimer);
    this.gcTimer = undefined;
    this.gcIntervalS = intervalSeconds;
    if (this.pool === undefined || (intervalSeconds <= 0 && !soon)) return;
    const delayMs = soon ? 1000 : intervalSeconds * 1000;
    this.gcTimer = setTimeout(() => void this.backgroundGc(), delayMs);
    this.gcTimer.unref();
  }

  private async backgroundGc(): Promise<void> {
    const pool = this.pool;
    if (pool === undefined || this.stopping) return;
    try {
      const report = await pool.gc();
      if (report.containersDeleted > 0 || report.chunksReclaimed > 0) {
        this.options.logger.info({ ...report }, "background GC pass");
        this.events.record("pool.gc", "info", "background garbage collection pass", { ...report });
      }
    } catch (err) {
      if (this.stopping) return;
      this.options.logger.error({ err }, "background GC pass failed");
      this.events.record("pool.gc-failed", "error", `background GC failed: ${String(err)}`);
    }
    if (!this.stopping) this.scheduleGc(this.gcIntervalS);
  }

  private requirePool(): Pool {
    if (this.pool === undefined) throw new Error("this server has no pool (no pool volumes)");
    return this.pool;
  }

  /** What `sanmux status` prints: the server, the pool's capacity accounting, the channels. */
  status(): Record<string, unknown> {
    return {
      server: {
        pid: process.pid,
        portal: this.address ? `${this.address.host}:${this.address.port}` : undefined,
        target: this.options.config.target,
        uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      },
      ...(this.pool ? { pool: this.poolUsage(this.pool), readCache: this.pool.readCache() } : {}),
      arbiter: this.arbiter.statusJson(),
      channels: this.channelReport(),
    };
  }

  /** The pool's figures, plus the same figures per agent (agent-usage.ts). */
  private poolUsage(pool: Pool): ReturnType<Pool["usage"]> & { agents: AgentUsage[] } {
    const usage = pool.usage();
    const agents = this.access.allAgents().map((a) => a.name);
    return { ...usage, agents: usageByAgent(usage, agents, this.access.allBindings()) };
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.gcTimer);
    await this.control?.close();
    await this.metricsServer?.close();
    await this.portal.close();
    this.arbiter.close();
    this.options.logger.info({ channels: this.channelReport() }, "channel counters");
    for (const v of this.volumes.values()) {
      await v.flush();
      await v.close();
    }
    await this.pool?.close();
    await this.lock?.release();
    this.options.logger.info("stopped");
  }
}

function formatHost(host: string): string {
  const h = host.startsWith("::ffff:") ? host.slice(7) : host;
  return h.includes(":") ? `[${h}]` : h;
}
