/**
 * The contract between the iSCSI layer (above) and the SCSI command set (this folder).
 * The SCSI layer never sees sockets or PDUs: a command arrives with all its Data-Out already
 * collected, and leaves as status + data + sense.
 */
import type { CommandSignal, Volume } from "../volume/volume.js";

/** One SCSI command as delivered by a transport (SAM-5 "Execute Command"). */
export interface ScsiCommand {
  /** LUN number decoded from the 8-byte LUN field (see lun.ts). */
  readonly lun: number;
  /** The CDB (16 bytes as carried by iSCSI; extra bytes beyond the CDB length are ignored). */
  readonly cdb: Buffer;
  /**
   * Data-Out received for this command: at most `expectedLength` bytes (the transport collects
   * exactly what the initiator said it would send). Empty for commands without Data-Out.
   * Owned by the SCSI layer from the call of `execute` until its promise settles; afterwards
   * the transport reuses the buffer, so nothing may keep a reference to it (copy what must
   * outlive the command).
   */
  readonly dataOut: Buffer;
  /** The initiator's Expected Data Transfer Length (iSCSI EDTL), in bytes. */
  readonly expectedLength: number;
  /** SAM task attribute: 0 untagged/simple, 1 simple, 2 ordered, 3 head of queue, 4 ACA. */
  readonly taskAttribute: number;
  /**
   * Aborted by the transport when the task is (TMF ABORT TASK and the task-set and reset
   * functions, the session ending). Handlers pass it to the volume with every call (the Volume
   * contract's CommandOptions), so that a call still waiting in a filter (the arbiter's queue)
   * is dropped at once; a call already in the backend completes. Absent: nothing aborts.
   */
  readonly signal?: CommandSignal;
}

/** The outcome of a command (SAM-5 "Command Complete Received"). */
export interface ScsiResult {
  /** SAM status: GOOD 0x00, CHECK CONDITION 0x02, RESERVATION CONFLICT 0x18, ... */
  readonly status: number;
  /**
   * Data-In the command produced, already limited by the CDB's allocation length (not by EDTL:
   * the transport truncates to EDTL and reports the residual).
   */
  readonly data?: Buffer;
  /** Fixed-format sense data (SPC-4 4.5.3) when status is CHECK CONDITION. */
  readonly sense?: Buffer;
  /**
   * For commands that take Data-Out: how many bytes the CDB called for, so the transport can
   * report overflow/underflow residuals against EDTL.
   */
  readonly dataOutLength?: number;
}

/** Who is talking: identifies an I_T nexus (SAM-5 4.6). */
export interface NexusIdentity {
  readonly initiatorName: string;
  /** iSCSI initiator session id, as 12 hex digits. */
  readonly isid: string;
  readonly targetName: string;
  /** Target portal group tag; also the relative target port identifier here. */
  readonly tpgt: number;
  /**
   * How persistent reservation registrations made through this nexus are keyed (the agent's
   * `reservations.key_by`): "nexus" (default, SPC-4 5.13.7: initiator port = name + ISID, and
   * target port) or "initiator" (the initiator name and target port only, so that a re-login
   * with a new ISID keeps the registration). See src/scsi/pr/README.md.
   */
  readonly reservationKeyBy?: "nexus" | "initiator";
}

/** Facts about this target that inquiry data reports. */
export interface TargetInfo {
  /** T10 vendor identification (8 ASCII chars max), e.g. "SANMUX". */
  readonly vendor: string;
  /** Product identification (16 chars max). */
  readonly product: string;
  /** Product revision level (4 chars max). */
  readonly revision: string;
  /** This sanmux host's name, reported in vendor VPD page 0xC0. */
  readonly hostName: string;
  /** The iSCSI target name (for the SCSI target port designator in VPD 0x83). */
  readonly targetName: string;
}

/**
 * One LUN as one agent sees it: the channel's filtered volume plus the shared logical unit.
 * Built by the server wiring from the access layer's channel bindings.
 */
export interface LunEntry {
  readonly lun: number;
  /** The unique channel id of this mapping; every I/O on this LUN carries it. */
  readonly channel: number;
  /** Read-only mapping: the SCSI layer reports WP in mode data and refuses writes early. */
  readonly readOnly: boolean;
  /** The volume as this channel sees it (read-only, accounting, ... filters stacked on top). */
  readonly volume: Volume;
  /** Identity of the underlying volume, shared by every channel that maps it. */
  readonly volumeId: string;
}

/** The LUNs one initiator may address. May change while a session is open. */
export interface LunView {
  list(): readonly LunEntry[];
  get(lun: number): LunEntry | undefined;
}
