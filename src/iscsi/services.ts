/**
 * What the iSCSI layer needs from the layers wired above it. The iSCSI layer knows nothing of
 * agents, volumes or the pool: it asks these questions and talks to a SCSI nexus.
 */
import type { Logger } from "pino";
import type { NexusIdentity } from "../scsi/types.js";
import type { LoginPolicy } from "./login/login.js";

/** The SCSI side of one session (an I_T nexus), as provided by src/scsi. */
export interface NexusPort {
  execute(
    cmd: import("../scsi/types.js").ScsiCommand,
  ): Promise<import("../scsi/types.js").ScsiResult>;
  /**
   * This command, the very object given to `execute`, was aborted (TMF or connection loss).
   * Most commands still settle only when done; a few (SANITIZE with IMMED=0, whose work goes on
   * in the logical unit) settle at once (src/scsi/target.ts, ScsiNexus.abortTask). A wrapper
   * around a ScsiNexus must forward it, or ABORT TASK of such a command waits for its end
   * (optional only so that the wrappers and fakes that predate it still compile).
   */
  abortTask?(cmd: import("../scsi/types.js").ScsiCommand): void;
  /**
   * The response of this command (the very object given to `execute`, whose promise settled)
   * has left: its last PDU was written to the socket, or it will never be sent (the task was
   * aborted, the connection closed). Called at most once per command, for every command whose
   * `execute` settled while the connection was up. The server's arbiter counts a response
   * being sent as work in progress (src/arbiter/scheduler.ts, "Responses being sent").
   */
  sent?(cmd: import("../scsi/types.js").ScsiCommand): void;
  /**
   * A write of `bytes` on `lun` waits for Data-Out the connection must solicit (R2T): reserve
   * its turn first (src/scsi/target.ts, ScsiNexus.admitWrite). `signal` is the one the command
   * will carry (ScsiCommand.signal). Undefined: solicit at once. Else the connection sends its
   * R2Ts only once the promise resolves, calls the reservation's `started()` right after
   * handing the command to `execute` and `release()` when the task ends; a rejection (the task
   * was aborted, the arbiter closed) lets the write go on unadmitted.
   */
  admitWrite?(
    lun: number,
    bytes: number,
    signal: import("../volume/volume.js").CommandSignal,
  ): Promise<import("../volume/volume.js").WriteReservation> | undefined;
  lunReset(lun: number): void;
  targetReset(): void;
  close(): void;
}

export interface TargetServices {
  /** Login decisions: our target name, who may log in, with which credentials. */
  readonly loginPolicy: LoginPolicy;
  /** Open the SCSI nexus of a new normal session. */
  openNexus(identity: NexusIdentity): NexusPort;
  /**
   * The CmdSN window of this initiator's sessions (its agent's `queue_depth`); undefined: the
   * target's `tuning.queueDepth`. Asked when a normal session's login completes; a reload
   * changes live sessions through `LiveSession.setQueueDepth`.
   */
  queueDepthFor?(initiatorName: string): number | undefined;
  /** Does this LUN exist for this initiator (for TMF "LUN does not exist")? */
  hasLun(initiatorName: string, lun: number): boolean;
  /**
   * SendTargets answer (RFC 7143 Appendix C): the targets this initiator may use, each with its
   * portal addresses ("ip:port,tpgt"). Called only for initiators that passed login.
   */
  sendTargets(
    initiatorName: string,
    localAddress: string,
  ): Array<{ name: string; addresses: string[] }>;
  readonly logger: Logger;
  readonly tuning: IscsiTuning;
}

export interface IscsiTuning {
  /**
   * Commands a session may have outstanding (the CmdSN window, RFC 7143 4.2.2.1), unless
   * `queueDepthFor` says otherwise for its initiator.
   */
  readonly queueDepth: number;
  /** Seconds of silence before the target pings with a NOP-In; 0 disables keepalive. */
  readonly nopInterval: number;
  /** Seconds to wait for the NOP-Out answer before dropping the connection. */
  readonly nopTimeout: number;
  /** Largest EDTL accepted for one command, in bytes. */
  readonly maxTransferLength: number;
  /** Seconds a login may take before the connection is dropped. */
  readonly loginTimeout: number;
}

export const DEFAULT_TUNING: IscsiTuning = {
  queueDepth: 128,
  nopInterval: 10,
  nopTimeout: 15,
  maxTransferLength: 16 * 1024 * 1024,
  loginTimeout: 15,
};
