/**
 * The SCSI target: the public entry point of the SCSI layer.
 *
 * The iSCSI layer opens one nexus per session (`openNexus`) and calls `execute` with complete
 * commands (all Data-Out collected); it calls `lunReset` / `targetReset` for task management
 * after it has aborted the affected tasks, and `close` when the session ends.
 *
 * Logical unit state is keyed by volume id and shared by every nexus, agent and channel that
 * maps the volume: the Caching page WCE, the RESERVE(6) holder, the persistent reservations,
 * and per nexus the pending unit attentions and deferred errors. Opening a nexus raises no POWER ON unit attention (as tgt
 * does), so that tools that send one command and leave (iscsi-inq, qemu-img) work at once.
 */

import type { CommandSignal, WriteReservation } from "../volume/volume.js";
import { Asc } from "./asc.js";
import type { NexusContext } from "./context.js";
import { Nexus, type NexusHost } from "./nexus.js";
import { Pacer } from "./pacer.js";
import type { ReservationStore } from "./pr/store.js";
import type { ScsiLogger } from "./sense-map.js";
import type { LunView, NexusIdentity, ScsiCommand, ScsiResult, TargetInfo } from "./types.js";
import { LogicalUnitState } from "./unit-state.js";

export interface ScsiNexus {
  /**
   * Execute one command. Never rejects: every failure is a status (CHECK CONDITION with sense,
   * RESERVATION CONFLICT). Commands may run concurrently; ordering is the transport's business.
   */
  execute(cmd: ScsiCommand): Promise<ScsiResult>;
  /**
   * The transport aborted this command (ABORT TASK, ABORT TASK SET, CLEAR TASK SET, a reset, the
   * nexus going away; SAM-5 7.2), `cmd` being the very object passed to `execute`. A command that
   * reached the SCSI layer runs to its end and its promise settles then, so that nothing it does
   * happens after the transport's TMF response, except a command whose remaining work belongs
   * to the logical unit, not to the task: SANITIZE with IMMED=0, whose sanitize operation goes on
   * (SBC-4). Its promise settles at once (status TASK ABORTED, which the transport drops).
   */
  abortTask(cmd: ScsiCommand): void;
  /**
   * A command with `bytes` of Data-Out that has not arrived yet will be executed on `lun`
   * (signal: the one its ScsiCommand will carry): reserve its turn before the transport asks for
   * the data (iSCSI R2T), so that the arbiter orders the data flow too (Volume.reserveWrite).
   * Undefined: nothing to wait for (no arbiter on that LUN, no such LUN, a read-only mapping).
   * Else resolves, once the data may come, with the reservation (Volume.reserveWrite): the
   * transport calls `started()` right after `execute`, and `release()` when the command ends;
   * rejects when the signal aborts first, or NotReady when the arbiter closes (the transport
   * then goes on).
   */
  admitWrite(
    lun: number,
    bytes: number,
    signal: CommandSignal,
  ): Promise<WriteReservation> | undefined;
  /** TMF LUN RESET (SAM-5 7.8): pending work is already aborted by the transport. */
  lunReset(lun: number): void;
  /** TMF TARGET WARM RESET. */
  targetReset(): void;
  /** The nexus is gone (session closed). */
  close(): void;
}

export interface ScsiTargetOptions {
  /** Where real causes of failures are logged before being reduced to sense data. */
  readonly logger?: ScsiLogger;
  /**
   * Where the persistent reservation state of a volume is kept while APTPL is set (SPC-4
   * 5.13.5). Without one, APTPL=1 is refused (PTPL_C=0) and nothing survives a restart.
   */
  readonly reservationStore?: ReservationStore;
  /**
   * How fast SANITIZE OVERWRITE may write, in bytes per second, for all the target's units
   * together (./pacer.ts says why); 0: unpaced. Default `DEFAULT_SANITIZE_BYTES_PER_SECOND`.
   */
  readonly sanitizeBytesPerSecond?: number;
}

/**
 * 64 MiB/s: a sanitize of a 1 TiB volume lasts about 4.5 hours, during which it takes at most
 * that share of the pool's write bandwidth (a fraction of one disk's sequential rate).
 */
export const DEFAULT_SANITIZE_BYTES_PER_SECOND = 64 * 1024 * 1024;

const SILENT: ScsiLogger = { warn() {} };

export class ScsiTarget {
  private readonly units = new Map<string, LogicalUnitState>();
  private readonly nexuses = new Set<Nexus>();
  private readonly host: NexusHost;
  private readonly logger: ScsiLogger;
  private readonly reservationStore: ReservationStore | undefined;
  private readonly sanitizePacer: Pacer;

  constructor(
    readonly info: TargetInfo,
    options: ScsiTargetOptions = {},
  ) {
    const logger = options.logger ?? SILENT;
    this.logger = logger;
    this.reservationStore = options.reservationStore;
    this.sanitizePacer = new Pacer(
      options.sanitizeBytesPerSecond ?? DEFAULT_SANITIZE_BYTES_PER_SECOND,
    );
    this.host = {
      info,
      logger,
      unitOf: (volumeId) => this.unitOf(volumeId),
      raiseUnitAttention: (volumeId, asc, except) => this.raise(volumeId, asc, except),
      resetUnit: (volumeId, asc) => this.unitOf(volumeId).reset(this.mapping(volumeId), asc),
      detach: (nexus) => this.detach(nexus),
    };
  }

  /** Open an I_T nexus (one iSCSI session). `view` says which LUNs this initiator may address. */
  openNexus(identity: NexusIdentity, view: LunView): ScsiNexus {
    const nexus = new Nexus(identity, view, this.host);
    this.nexuses.add(nexus);
    return nexus;
  }

  /**
   * Raise a unit attention on every nexus of a volume: CAPACITY DATA HAS CHANGED (2Ah/09h) or
   * MODE PARAMETERS CHANGED (2Ah/01h).
   */
  notifyVolumeChanged(volumeId: string, event: "capacity-changed" | "mode-changed"): void {
    const asc =
      event === "capacity-changed" ? Asc.CAPACITY_DATA_HAS_CHANGED : Asc.MODE_PARAMETERS_CHANGED;
    this.raise(volumeId, asc);
  }

  /**
   * Raise REPORTED LUNS DATA HAS CHANGED (3Fh/0Eh) on every nexus of this initiator, for every
   * logical unit of its (new) view; REPORT LUNS on that nexus clears it.
   */
  notifyLunsChanged(initiatorName: string): void {
    for (const nexus of this.nexuses) {
      if (nexus.identity.initiatorName !== initiatorName) continue;
      for (const entry of nexus.view.list()) {
        this.unitOf(entry.volumeId).addUnitAttention(nexus, Asc.REPORTED_LUNS_DATA_HAS_CHANGED);
      }
    }
  }

  /**
   * Raise THIN PROVISIONING SOFT THRESHOLD REACHED (38h/07h, SBC-4 4.7.3.8) on every logical
   * unit of every nexus whose initiator `which` selects: the pool or an agent's capacity limit
   * crossed its soft threshold.
   */
  notifySoftThreshold(which: (initiatorName: string) => boolean): void {
    for (const nexus of this.nexuses) {
      if (!which(nexus.identity.initiatorName)) continue;
      for (const entry of nexus.view.list()) {
        this.unitOf(entry.volumeId).addUnitAttention(
          nexus,
          Asc.THIN_PROVISIONING_SOFT_THRESHOLD_REACHED,
        );
      }
    }
  }

  /**
   * Shared state of a volume's logical unit (created on first use, kept for the process). Its
   * persistent reservations start loading from the store at once; commands to the unit wait
   * for them.
   */
  unitOf(volumeId: string): LogicalUnitState {
    let unit = this.units.get(volumeId);
    if (!unit) {
      unit = new LogicalUnitState(volumeId, {
        reservationStore: this.reservationStore,
        nexuses: () => this.mapping(volumeId),
        sanitizePacer: this.sanitizePacer,
      });
      this.units.set(volumeId, unit);
      unit.pr.load().catch((err: unknown) => {
        this.logger.warn({ err, volumeId }, "cannot load persistent reservations");
      });
    }
    return unit;
  }

  /**
   * Load a volume's saved persistent reservations now (the server calls this for every volume
   * before it accepts connections). Rejects when the saved state cannot be read; the unit then
   * answers HARDWARE ERROR, retrying the load on every command, until it can.
   */
  loadReservations(volumeId: string): Promise<void> {
    return this.unitOf(volumeId).pr.load();
  }

  /** Open nexuses whose view maps `volumeId`. */
  private mapping(volumeId: string): Nexus[] {
    return [...this.nexuses].filter((n) => n.maps(volumeId));
  }

  private raise(volumeId: string, asc: number, except?: NexusContext): void {
    const unit = this.unitOf(volumeId);
    for (const nexus of this.mapping(volumeId)) {
      if (nexus !== except) unit.addUnitAttention(nexus, asc);
    }
  }

  private detach(nexus: Nexus): void {
    this.nexuses.delete(nexus);
    for (const unit of this.units.values()) unit.forgetNexus(nexus);
  }
}
