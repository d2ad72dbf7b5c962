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
import { AccessControl } from "../access/access.js";
import { Catalog } from "../access/catalog.js";
import type { SanmuxConfig } from "../access/config.js";
import { CountingFilter } from "../access/filters/counting.js";
import { ReadOnlyFilter } from "../access/filters/read-only.js";
import type { LoginPolicy } from "../iscsi/login/login.js";
import { Portal, type PortalAddress } from "../iscsi/portal.js";
import {
  DEFAULT_TUNING,
  type IscsiTuning,
  type NexusPort,
  type TargetServices,
} from "../iscsi/services.js";
import { openFileVolume } from "../pool/file/file-volume.js";
import { Pool } from "../pool/pool.js";
import { ScsiTarget } from "../scsi/target.js";
import type { LunEntry, LunView, NexusIdentity } from "../scsi/types.js";
import type { Volume } from "../volume/volume.js";
import { ControlApi } from "./control-api.js";
import { type DataDirLock, lockDataDir } from "./data-lock.js";
import { FileReservationStore } from "./pr-store.js";

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
}

export const PRODUCT = { vendor: "SANMUX", product: "sanmux volume", revision: "0001" } as const;

export class SanmuxServer {
  private readonly volumes = new Map<string, Volume>();
  private pool: Pool | undefined;
  private lock: DataDirLock | undefined;
  private control: ControlApi | undefined;
  private readonly startedAt = Date.now();
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
    });
  }

  private async init(): Promise<void> {
    const { config, dataDir, logger } = this.options;
    this.lock = await lockDataDir(dataDir);
    const catalog = await Catalog.open(dataDir);
    await this.openPool();
    for (const v of config.volumes) {
      if (v.backend === "pool") {
        const pool = this.pool as Pool;
        this.volumes.set(
          v.name,
          await pool.ensureVolume({
            name: v.name,
            size: v.size,
            blockSize: v.blockSize,
            domain: v.domain,
            writeCache: v.writeCache,
          }),
        );
        continue;
      }
      const volume = await openFileVolume(dataDir, {
        name: v.name,
        size: v.size,
        blockSize: v.blockSize,
      });
      if (volume.recoveredAtomicWrite !== undefined) {
        logger.warn(
          { volume: v.name, ...volume.recoveredAtomicWrite },
          "completed an atomic write interrupted by a crash, from the volume's journal",
        );
      }
      if (volume.discardedAtomicJournal !== undefined) {
        logger.warn(
          { volume: v.name, ...volume.discardedAtomicJournal },
          "dropped the atomic write journal: it held no complete record of this volume",
        );
      }
      this.volumes.set(v.name, volume);
    }
    this.access = await AccessControl.create(config, catalog);
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
        scrub: async () => this.requirePool().scrub(),
        check: async () => this.requirePool().check(),
        gc: async () => this.requirePool().gc(),
        addDevice: async (dir) => {
          await this.requirePool().addDevice(dir);
          return this.requirePool().usage();
        },
      },
      logger.child({ layer: "control" }),
    );
    logger.info(
      {
        portal: `${this.address.host}:${this.address.port}`,
        target: config.target,
        agents: config.agents.length,
        volumes: config.volumes.length,
        mappings: config.mappings.length,
      },
      "listening",
    );
  }

  private loginPolicy(): LoginPolicy {
    const iscsi = this.options.config.iscsi;
    return {
      targetName: this.options.config.target,
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

  /** The LUNs an initiator may address right now, as its agent's mappings say. */
  private lunView(initiatorName: string): LunView {
    const agent = this.access.agentForInitiator(initiatorName);
    const entries = new Map<number, LunEntry>();
    if (agent) {
      for (const b of this.access.bindingsFor(agent.name)) {
        const base = this.volumes.get(b.volume);
        if (!base) continue;
        // Filters stack like nbdkit's: the counter sits on top so that refused writes count as
        // errors of the channel too.
        const guarded: Volume = b.mode === "ro" ? new ReadOnlyFilter(base) : base;
        const volume = new CountingFilter(guarded, this.access.countersFor(b.channel));
        entries.set(b.lun, {
          lun: b.lun,
          channel: b.channel,
          readOnly: b.mode === "ro",
          volume,
          volumeId: base.id,
        });
      }
    }
    const list = [...entries.values()].sort((a, b) => a.lun - b.lun);
    return { list: () => list, get: (lun) => entries.get(lun) };
  }

  private openNexus(login: NexusIdentity): NexusPort {
    const view = this.lunView(login.initiatorName);
    const keyBy = this.access.agentForInitiator(login.initiatorName)?.reservations?.keyBy;
    const identity: NexusIdentity = keyBy ? { ...login, reservationKeyBy: keyBy } : login;
    const nexus = this.scsi.openNexus(identity, view);
    const access = this.access;
    return {
      async execute(cmd) {
        const entry = view.get(cmd.lun);
        const counters = entry ? access.countersFor(entry.channel) : undefined;
        // Volume errors are counted by the channel's CountingFilter; here only commands.
        if (counters) counters.commands++;
        return nexus.execute(cmd);
      },
      lunReset: (lun) => nexus.lunReset(lun),
      targetReset: () => nexus.targetReset(),
      close: () => nexus.close(),
    };
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
      ...(this.pool ? { pool: this.pool.usage() } : {}),
      channels: this.channelReport(),
    };
  }

  async stop(): Promise<void> {
    await this.control?.close();
    await this.portal.close();
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
