/**
 * One iSCSI connection (= one session: MaxConnections=1, ErrorRecoveryLevel=0), as a protocol
 * engine that never touches a socket: bytes come in through `receive()`, bytes leave through the
 * `ConnectionIo.write` callback. The transport (portal.ts) owns the socket.
 *
 * Phases (RFC 7143 6.3): login, then full feature phase until logout or close.
 */
import type { Logger } from "pino";
import { Asc } from "../scsi/asc.js";
import { ScsiStatus, SenseKey } from "../scsi/constants.js";
import { decodeLun } from "../scsi/lun.js";
import { checkConditionResult } from "../scsi/sense.js";
import type { ScsiCommand, ScsiResult } from "../scsi/types.js";
import { dataBuffers, MIN_POOLED } from "../util/buffer-pool.js";
import type { WriteReservation } from "../volume/volume.js";
import { Opcode, RESERVED_TAG, RejectReason, TmfFunction, TmfResponse } from "./constants.js";
import { type FramingError, PduReader, serializePdu } from "./framing.js";
import { LoginNegotiator, type SessionParams } from "./login/login.js";
import { encodeTextKeys, parseTextKeys } from "./login/text.js";
import {
  decodeDataOut,
  decodeLoginRequest,
  decodeLogoutRequest,
  decodeNopOut,
  decodeScsiCommand,
  decodeTaskMgmtRequest,
  decodeTextRequest,
  encodeAsyncMessage,
  encodeDataIn,
  encodeLoginResponse,
  encodeLogoutResponse,
  encodeNopIn,
  encodeR2T,
  encodeReject,
  encodeScsiResponse,
  encodeTaskMgmtResponse,
  encodeTextResponse,
  isImmediate,
  type OutPdu,
  opcodeOf,
  type RawPdu,
  senseDataSegment,
} from "./pdu.js";
import { snAdd, snGreaterThan } from "./serial.js";
import type { NexusPort, TargetServices } from "./services.js";
import type { LiveSession, SessionRegistry } from "./sessions.js";
import { TaskSignal } from "./task-signal.js";
import { WriteCollector } from "./write-collector.js";

export interface ConnectionIo {
  /**
   * Queue buffers for the peer, in order. Returns false when the peer is slow (backpressure).
   * `onFlushed`, when given, is called once the last buffer has been handed to the network (or
   * could not be: the socket closed).
   */
  write(buffers: Buffer[], onFlushed?: () => void): boolean;
  /** Close the connection after what was written has been flushed. */
  end(): void;
  /** Close at once. */
  destroy(): void;
  readonly remoteAddress: string;
  readonly localAddress: string;
}

enum Phase {
  Login = 0,
  FullFeature = 1,
  Closed = 2,
}

/** A command between its arrival and its response. */
interface Task {
  readonly itt: number;
  /** Sent with the I bit: it holds no slot of the CmdSN window. */
  readonly immediate: boolean;
  readonly lun: number;
  readonly lunField: Buffer;
  readonly cmdSN: number;
  readonly cdb: Buffer;
  readonly edtl: number;
  readonly read: boolean;
  readonly write: boolean;
  readonly taskAttribute: number;
  collector: WriteCollector | undefined;
  aborted: boolean;
  /**
   * Settles when the SCSI layer is done with the command. It cannot be cancelled mid-flight;
   * only a command whose remaining work belongs to the logical unit settles early when aborted
   * (NexusPort.abortTask).
   */
  running: Promise<void> | undefined;
  /** What was handed to the SCSI layer (the key for NexusPort.abortTask). */
  command: ScsiCommand | undefined;
  /**
   * Aborted with the task (abortTask): the SCSI layer passes its signal to every volume call, so
   * that a call still waiting in the arbiter's queue leaves at once. Created when the task first
   * needs it (admission of a write, or execution).
   */
  signal: TaskSignal | undefined;
  /** A write waiting for its turn before its R2Ts (NexusPort.admitWrite). */
  admitting: boolean;
  /**
   * The write's turn in the arbiter (NexusPort.admitWrite): `started()` once handed to the
   * SCSI layer, `release()` by `forget`.
   */
  reservation: WriteReservation | undefined;
}

export class IscsiConnection implements LiveSession {
  private phase: Phase = Phase.Login;
  private readonly reader: PduReader;
  private readonly login: LoginNegotiator;
  private params: SessionParams | undefined;
  private nexus: NexusPort | undefined;
  private log: Logger;

  initiatorName = "";
  isid = "";
  tsih = 0;

  // Sequence numbers (RFC 7143 4.2.2).
  private statSN = 1;
  private expCmdSN = 0;
  private maxCmdSNAdvertised = 0;
  /**
   * The CmdSN window: 1 during login (only immediate login PDUs flow, and MaxCmdSN may never
   * move backwards, so the window must not open before we know whose session it is), then the
   * agent's queue depth (`TargetServices.queueDepthFor`) or the target's.
   */
  private queueDepth = 1;
  /** Non-immediate commands currently being served: they hold a slot of the CmdSN window. */
  private inFlight = 0;
  /** Commands that arrived ahead of ExpCmdSN, held until the gap fills. */
  private readonly heldBack = new Map<number, RawPdu>();
  /**
   * CmdSNs of commands aborted before they arrived (ABORT TASK with a RefCmdSN in the window,
   * RFC 7143 11.5.1): considered received, so ExpCmdSN moves over them, and the command is
   * dropped if it comes after all (libiscsi sends an immediate TMF ahead of queued commands).
   */
  private readonly consideredReceived = new Set<number>();

  private readonly tasks = new Map<number, Task>();
  /** Tasks waiting for Data-Out, by the Target Transfer Tag of their current R2T. */
  private readonly byTtt = new Map<number, Task>();
  private nextTtt = 1;

  // Keepalive (RFC 7143 11.19: target-initiated NOP-In with a TTT, answered by NOP-Out).
  private lastActivity = Date.now();
  private pingTtt: number | undefined;
  private pingSentAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private loginTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly io: ConnectionIo,
    private readonly services: TargetServices,
    private readonly sessions: SessionRegistry,
  ) {
    this.log = services.logger.child({ peer: io.remoteAddress });
    this.login = new LoginNegotiator(services.loginPolicy);
    this.reader = new PduReader({
      settings: { headerDigest: false, dataDigest: false, maxDataSegmentLength: 65536 },
      onPdu: (pdu) => this.onPdu(pdu),
      onError: (error) => this.onFramingError(error),
    });
    this.loginTimer = setTimeout(() => {
      if (this.phase === Phase.Login) this.fail("login did not complete in time");
    }, services.tuning.loginTimeout * 1000);
    this.loginTimer.unref();
  }

  /** Bytes from the peer. */
  receive(chunk: Buffer): void {
    if (this.phase === Phase.Closed) return;
    this.lastActivity = Date.now();
    this.reader.push(chunk);
  }

  /** The transport saw the socket close. */
  closed(): void {
    if (this.phase === Phase.Closed) return;
    this.shutdown("connection closed by peer");
  }

  /** LiveSession: end this session (reinstatement, target shutdown). */
  terminate(reason: string): void {
    if (this.phase === Phase.Closed) return;
    this.log.info({ reason }, "terminating session");
    this.shutdown(reason);
    this.io.end();
  }

  /** LiveSession: the agent's queue depth changed (reload). See LiveSession.setQueueDepth. */
  setQueueDepth(depth: number | undefined): void {
    if (this.phase !== Phase.FullFeature) return;
    const next = depth ?? this.services.tuning.queueDepth;
    if (Number.isInteger(next) && next >= 1) this.queueDepth = next;
  }

  /** Ask the initiator to log out (RFC 7143 11.9.1, AsyncEvent 1), e.g. before shutdown. */
  requestLogout(seconds: number): void {
    if (this.phase !== Phase.FullFeature) return;
    this.send(
      encodeAsyncMessage({
        lun: Buffer.alloc(8),
        statSN: this.statSN,
        expCmdSN: this.expCmdSN,
        maxCmdSN: this.maxCmdSN(),
        asyncEvent: 1,
        asyncVCode: 0,
        parameter1: 0,
        parameter2: 0,
        parameter3: seconds,
        data: Buffer.alloc(0),
      }),
    );
  }

  // ---------------------------------------------------------------- framing

  private onFramingError(error: FramingError): void {
    switch (error.kind) {
      case "data-digest":
        // RFC 7143 7.8: the PDU is discarded; at ERL 0 a Reject with reason "data digest error"
        // tells the initiator, which then recovers at session level.
        this.log.warn({ opcode: error.bhs ? opcodeOf(error.bhs) : undefined }, "data digest error");
        if (error.bhs) this.reject(RejectReason.DataDigestError, error.bhs);
        return;
      case "oversize":
        this.log.warn({ detail: error.message }, "data segment larger than negotiated: rejecting");
        if (error.bhs) this.reject(RejectReason.ProtocolError, error.bhs);
        this.fail("oversize data segment");
        return;
      default:
        this.fail(`framing error (${error.kind}): ${error.message}`);
    }
  }

  private onPdu(pdu: RawPdu): void {
    if (this.phase === Phase.Closed) return;
    try {
      if (this.phase === Phase.Login) this.onLoginPdu(pdu);
      else this.onFullFeaturePdu(pdu);
    } catch (err) {
      this.log.error({ err }, "internal error handling a PDU");
      this.fail("internal error");
    }
  }

  // ---------------------------------------------------------------- login (RFC 7143 6)

  private onLoginPdu(pdu: RawPdu): void {
    if (opcodeOf(pdu.bhs) !== Opcode.LoginRequest) {
      this.log.warn({ opcode: opcodeOf(pdu.bhs) }, "non-login PDU during login phase");
      this.fail("protocol error: non-login PDU during login");
      return;
    }
    const req = decodeLoginRequest(pdu);
    if (this.isid === "") {
      this.isid = req.isid.toString("hex");
      // The login request carries the initial CmdSN, which the first command reuses
      // (RFC 7143 11.12.8: login requests are immediate).
      this.expCmdSN = req.cmdSN;
      this.maxCmdSNAdvertised = snAdd(req.cmdSN, this.queueDepth - 1);
    }
    const step = this.login.step(req);
    let tsih = req.tsih;
    if (step.done) {
      this.params = step.done.params;
      this.initiatorName = step.done.params.initiatorName;
      tsih = this.sessions.allocateTsih();
      // The final login response opens the window (RFC 7143 4.2.2.1): the queue depth of the
      // initiator's agent, which is how per-agent queue depth is enforced.
      const own =
        step.done.params.sessionType === "Normal"
          ? this.services.queueDepthFor?.(this.initiatorName)
          : undefined;
      this.queueDepth = own ?? this.services.tuning.queueDepth;
    }
    const r = step.response;
    this.send(
      encodeLoginResponse({
        transit: r.transit,
        cont: r.cont,
        csg: r.csg,
        nsg: r.nsg,
        versionMax: r.versionMax,
        versionActive: r.versionActive,
        isid: req.isid,
        tsih: step.done ? tsih : 0,
        itt: req.itt,
        statSN: this.nextStatSN(),
        expCmdSN: this.expCmdSN,
        maxCmdSN: this.maxCmdSN(),
        statusClass: r.statusClass,
        statusDetail: r.statusDetail,
        data: r.keys,
      }),
    );
    if (step.failed) {
      this.log.warn(
        {
          initiator: step.failed.initiatorName ?? this.initiatorName,
          statusClass: r.statusClass,
          statusDetail: r.statusDetail,
        },
        `login refused: ${step.failed.reason}`,
      );
      this.phase = Phase.Closed;
      this.io.end();
      return;
    }
    if (step.done) this.enterFullFeature(step.done.params, tsih);
  }

  private enterFullFeature(params: SessionParams, tsih: number): void {
    this.phase = Phase.FullFeature;
    this.tsih = tsih;
    if (this.loginTimer) clearTimeout(this.loginTimer);
    this.log = this.services.logger.child({
      peer: this.io.remoteAddress,
      initiator: params.initiatorName,
      isid: this.isid,
      tsih,
    });
    // Digests and segment limits apply from the first PDU after the final login response
    // (RFC 7143 13.1, 13.12).
    this.reader.settings = {
      headerDigest: params.headerDigest,
      dataDigest: params.dataDigest,
      maxDataSegmentLength: params.targetMaxRecvDataSegmentLength,
    };
    if (params.sessionType === "Normal") {
      this.nexus = this.services.openNexus({
        initiatorName: params.initiatorName,
        isid: this.isid,
        targetName: this.services.loginPolicy.targetName,
        tpgt: this.services.loginPolicy.portalGroupTag,
      });
    }
    this.sessions.add(this);
    this.log.info(
      {
        sessionType: params.sessionType,
        headerDigest: params.headerDigest,
        dataDigest: params.dataDigest,
        maxRecvDataSegmentLength: params.maxRecvDataSegmentLength,
        maxBurstLength: params.maxBurstLength,
        firstBurstLength: params.firstBurstLength,
        immediateData: params.immediateData,
        initialR2T: params.initialR2T,
      },
      "login complete",
    );
    this.startKeepalive();
  }

  // ---------------------------------------------------------------- full feature phase

  private onFullFeaturePdu(pdu: RawPdu): void {
    const opcode = opcodeOf(pdu.bhs);
    switch (opcode) {
      case Opcode.DataOut:
        this.onDataOut(pdu);
        return;
      case Opcode.ScsiCommand:
      case Opcode.NopOut:
      case Opcode.TaskMgmtRequest:
      case Opcode.TextRequest:
      case Opcode.LogoutRequest:
        this.orderCommand(pdu);
        return;
      case Opcode.Snack:
        // SNACK needs ErrorRecoveryLevel > 0, which we never negotiate (RFC 7143 11.16).
        this.reject(RejectReason.SnackReject, pdu.bhs);
        return;
      default:
        this.log.warn({ opcode }, "unknown or unexpected opcode: rejecting");
        this.reject(RejectReason.CommandNotSupported, pdu.bhs);
    }
  }

  /**
   * CmdSN ordering (RFC 7143 4.2.2.1 and 3.2.2.1): immediate commands go at once; others are
   * delivered in CmdSN order; a CmdSN outside [ExpCmdSN, MaxCmdSN] is silently dropped, also
   * CmdSN = ExpCmdSN while the window is closed (MaxCmdSN = ExpCmdSN - 1: the queue depth is
   * used up), which is what makes the queue depth a limit and not a hint.
   */
  private orderCommand(pdu: RawPdu): void {
    const cmdSN = pdu.bhs.readUInt32BE(24);
    if (isImmediate(pdu.bhs)) {
      this.dispatchCommand(pdu, true);
      return;
    }
    if (cmdSN === this.expCmdSN && !snGreaterThan(cmdSN, this.maxCmdSNAdvertised)) {
      this.expCmdSN = snAdd(this.expCmdSN, 1);
      if (this.consideredReceived.delete(cmdSN)) {
        this.log.debug({ cmdSN }, "command aborted before it arrived: dropped");
      } else {
        this.dispatchCommand(pdu, false);
      }
      this.deliverHeldBack();
      return;
    }
    if (snGreaterThan(cmdSN, this.expCmdSN) && !snGreaterThan(cmdSN, this.maxCmdSNAdvertised)) {
      this.heldBack.set(cmdSN, pdu);
      return;
    }
    this.log.warn(
      { cmdSN, expCmdSN: this.expCmdSN, maxCmdSN: this.maxCmdSNAdvertised },
      "command outside the CmdSN window: dropped",
    );
  }

  /** Deliver what was waiting for the gap that just filled, in CmdSN order. */
  private deliverHeldBack(): void {
    for (;;) {
      const sn = this.expCmdSN;
      if (this.consideredReceived.delete(sn)) {
        this.heldBack.delete(sn);
        this.expCmdSN = snAdd(sn, 1);
        continue;
      }
      const next = this.heldBack.get(sn);
      if (next === undefined) return;
      this.heldBack.delete(sn);
      this.expCmdSN = snAdd(sn, 1);
      this.dispatchCommand(next, false);
    }
  }

  private dispatchCommand(pdu: RawPdu, immediate: boolean): void {
    switch (opcodeOf(pdu.bhs)) {
      case Opcode.ScsiCommand:
        this.onScsiCommand(pdu, immediate);
        return;
      case Opcode.NopOut:
        this.onNopOut(pdu);
        return;
      case Opcode.TaskMgmtRequest:
        void this.onTaskMgmt(pdu);
        return;
      case Opcode.TextRequest:
        this.onText(pdu);
        return;
      case Opcode.LogoutRequest:
        void this.onLogout(pdu);
        return;
    }
  }

  // ---------------------------------------------------------------- SCSI commands (RFC 7143 11.3)

  private onScsiCommand(pdu: RawPdu, immediate: boolean): void {
    const cmd = decodeScsiCommand(pdu);
    const nexus = this.nexus;
    if (!nexus || this.params === undefined) {
      // Discovery sessions carry no SCSI commands (RFC 7143 4.3).
      this.reject(RejectReason.ProtocolError, pdu.bhs);
      return;
    }
    if (this.tasks.has(cmd.itt)) {
      this.log.warn({ itt: cmd.itt }, "SCSI command reuses the tag of a live task: rejecting");
      this.reject(RejectReason.TaskInProgress, pdu.bhs);
      return;
    }
    if (!immediate) this.inFlight++;
    const task: Task = {
      itt: cmd.itt,
      immediate,
      lun: decodeLun(cmd.lun),
      lunField: cmd.lun,
      cmdSN: cmd.cmdSN,
      cdb: cmd.cdb,
      edtl: cmd.edtl,
      read: cmd.read,
      write: cmd.write,
      taskAttribute: cmd.taskAttribute,
      collector: undefined,
      aborted: false,
      running: undefined,
      command: undefined,
      signal: undefined,
      admitting: false,
      reservation: undefined,
    };
    this.tasks.set(task.itt, task);

    if (cmd.read && cmd.write) {
      // Bidirectional commands: none of the commands we implement use them.
      this.complete(task, checkConditionResult(INVALID_FIELD_IN_CDB));
      return;
    }
    if (!cmd.write) {
      if (cmd.data.length > 0)
        this.log.warn({ itt: cmd.itt }, "immediate data on a non-write command ignored");
      this.execute(task, EMPTY);
      return;
    }
    const p = this.params;
    if (cmd.edtl > this.services.tuning.maxTransferLength) {
      // Do not allocate the buffer; unsolicited Data-Out for this tag will find no task and be
      // dropped.
      this.log.warn({ itt: cmd.itt, edtl: cmd.edtl }, "write larger than the transfer limit");
      // Larger than the MAXIMUM TRANSFER LENGTH that VPD 0xB0 advertises.
      this.complete(task, checkConditionResult(INVALID_FIELD_IN_CDB));
      return;
    }
    if (cmd.data.length > cmd.edtl || cmd.data.length > p.firstBurstLength) {
      this.log.warn({ itt: cmd.itt, immediate: cmd.data.length }, "too much immediate data");
      this.reject(RejectReason.ProtocolError, pdu.bhs);
      this.forget(task);
      return;
    }
    if (cmd.data.length === cmd.edtl) {
      // Everything came as immediate data (the common case for small writes): the PDU owns its
      // data buffer, so hand it straight to the SCSI layer without a copy.
      this.execute(task, cmd.data);
      return;
    }
    const unsolicited = p.initialR2T ? cmd.data.length : Math.min(p.firstBurstLength, cmd.edtl);
    const collector = new WriteCollector(
      cmd.edtl,
      unsolicited,
      p.maxBurstLength,
      p.maxOutstandingR2T,
    );
    task.collector = collector;
    if (cmd.data.length > 0) collector.acceptImmediate(cmd.data);
    if (cmd.edtl > unsolicited) this.admitWrite(task, nexus);
    this.continueWrite(task);
  }

  /**
   * A write whose data must be solicited: ask for its turn first (the arbiter, through
   * NexusPort.admitWrite), so that R2Ts go out, and the data flows, in the order and at the rate
   * the arbiter decides. Unsolicited data (immediate, and up to FirstBurstLength with
   * InitialR2T=No) cannot be held back: it is collected meanwhile.
   */
  private admitWrite(task: Task, nexus: NexusPort): void {
    if (nexus.admitWrite === undefined) return;
    const signal = new TaskSignal();
    task.signal = signal;
    const admission = nexus.admitWrite(task.lun, task.edtl, signal);
    if (admission === undefined) return;
    task.admitting = true;
    admission.then(
      (reservation) => {
        if (task.aborted || this.tasks.get(task.itt) !== task) {
          reservation.release();
          return;
        }
        task.reservation = reservation;
        task.admitting = false;
        this.continueWrite(task);
      },
      (err: unknown) => {
        if (task.aborted || this.tasks.get(task.itt) !== task) return;
        // Not aborted by us (the arbiter is closing): go on; the volume call will answer.
        this.log.debug({ err, itt: task.itt }, "write admission failed: soliciting anyway");
        task.admitting = false;
        this.continueWrite(task);
      },
    );
  }

  /** Send R2Ts as the window allows, or execute once every byte has arrived. */
  private continueWrite(task: Task): void {
    const c = task.collector;
    if (!c || task.admitting) return;
    if (c.complete) {
      task.collector = undefined;
      this.execute(task, c.buffer);
      return;
    }
    for (
      let r2t = c.nextR2T(() => this.allocateTtt());
      r2t;
      r2t = c.nextR2T(() => this.allocateTtt())
    ) {
      this.byTtt.set(r2t.ttt, task);
      this.send(
        encodeR2T({
          lun: task.lunField,
          itt: task.itt,
          ttt: r2t.ttt,
          statSN: this.statSN,
          expCmdSN: this.expCmdSN,
          maxCmdSN: this.maxCmdSN(),
          r2tSN: r2t.r2tSN,
          bufferOffset: r2t.offset,
          desiredDataTransferLength: r2t.length,
        }),
      );
    }
  }

  private allocateTtt(): number {
    const ttt = this.nextTtt;
    this.nextTtt = this.nextTtt >= 0x7fffffff ? 1 : this.nextTtt + 1;
    return ttt;
  }

  /** RFC 7143 11.7: solicited (TTT of an R2T) or unsolicited (TTT 0xffffffff) data. */
  private onDataOut(pdu: RawPdu): void {
    const d = decodeDataOut(pdu);
    const task = d.ttt === RESERVED_TAG ? this.tasks.get(d.itt) : this.byTtt.get(d.ttt);
    if (!task || task.itt !== d.itt || !task.collector) {
      // Data for a task that was aborted or already failed: dropped (RFC 7143 4.2.3.3? the
      // initiator learns the outcome from the task's response or the TMF response).
      this.log.debug({ itt: d.itt, ttt: d.ttt }, "Data-Out for no waiting task: dropped");
      return;
    }
    const problem = task.collector.accept(d.ttt, d.dataSN, d.bufferOffset, d.data, d.final);
    if (problem) {
      this.log.warn({ itt: d.itt, ttt: d.ttt, dataSN: d.dataSN, offset: d.bufferOffset }, problem);
      this.reject(RejectReason.ProtocolError, pdu.bhs);
      this.fail(`protocol error in Data-Out: ${problem}`);
      return;
    }
    if (d.final && d.ttt !== RESERVED_TAG) this.byTtt.delete(d.ttt);
    this.continueWrite(task);
  }

  private execute(task: Task, dataOut: Buffer): void {
    const nexus = this.nexus!;
    if (task.signal === undefined) task.signal = new TaskSignal();
    const command: ScsiCommand = {
      lun: task.lun,
      cdb: task.cdb,
      dataOut,
      expectedLength: task.edtl,
      taskAttribute: task.taskAttribute,
      signal: task.signal,
    };
    task.command = command;
    const running = nexus.execute(command);
    // Most writes reached the arbiter synchronously, within their reservation; one that did
    // not (it waits in the SCSI layer) must not hold a share meanwhile.
    task.reservation?.started();
    task.running = running.then(
      (result) => {
        // The SCSI layer is done with the payload once its promise settled (ScsiCommand).
        if (dataOut.length > 0) dataBuffers.release(dataOut);
        this.complete(task, result);
      },
      (err: unknown) => {
        this.log.error({ err, itt: task.itt }, "SCSI layer failed a command");
        this.complete(task, checkConditionResult(INTERNAL_TARGET_FAILURE));
      },
    );
  }

  /** Send a command's Data-In and status (RFC 7143 11.4, 11.7), with residuals (11.4.5). */
  private complete(task: Task, result: ScsiResult): void {
    this.forget(task);
    // Tell the nexus when the response has left (NexusPort.sent): the arbiter counts the time
    // spent sending Data-In as work of the command.
    const nexus = this.nexus;
    const command = task.command;
    const told =
      nexus?.sent !== undefined && command !== undefined ? () => nexus.sent!(command) : undefined;
    // Read data from the shared pool of data buffers goes back to it once it has left (the
    // volume handed it over with the result; src/util/buffer-pool.ts: others are ignored).
    const payload = result.data;
    const sent =
      payload === undefined || payload.length < MIN_POOLED
        ? told
        : () => {
            told?.();
            dataBuffers.release(payload);
          };
    if (task.aborted || this.phase !== Phase.FullFeature) {
      sent?.();
      return;
    }
    const edtl = task.edtl;
    let residualCount = 0;
    let overflow = false;
    let underflow = false;
    let data = result.data;
    if (task.read || (data && data.length > 0)) {
      const produced = data ? data.length : 0;
      if (produced > edtl) {
        overflow = true;
        residualCount = produced - edtl;
        data = data!.subarray(0, edtl);
      } else if (produced < edtl) {
        underflow = true;
        residualCount = edtl - produced;
      }
      if (!task.read) data = undefined;
    } else if (result.dataOutLength !== undefined) {
      if (result.dataOutLength > edtl) {
        overflow = true;
        residualCount = result.dataOutLength - edtl;
      } else if (result.dataOutLength < edtl) {
        underflow = true;
        residualCount = edtl - result.dataOutLength;
      }
    } else if (edtl > 0) {
      underflow = true;
      residualCount = edtl;
    }

    const good = result.status === ScsiStatus.GOOD && !result.sense;
    if (data && data.length > 0) {
      const max = this.params!.maxRecvDataSegmentLength;
      let dataSN = 0;
      for (let offset = 0; offset < data.length; offset += max) {
        const end = Math.min(offset + max, data.length);
        const last = end === data.length;
        // Phase collapse: status rides in the last Data-In when there is no sense (11.7.4).
        const withStatus = last && good;
        this.send(
          encodeDataIn({
            final: last,
            acknowledge: false,
            statusPresent: withStatus,
            overflow: withStatus && overflow,
            underflow: withStatus && underflow,
            status: withStatus ? result.status : 0,
            lun: task.lunField,
            itt: task.itt,
            ttt: RESERVED_TAG,
            statSN: withStatus ? this.nextStatSN() : 0,
            expCmdSN: this.expCmdSN,
            maxCmdSN: this.maxCmdSN(),
            dataSN: dataSN++,
            bufferOffset: offset,
            residualCount: withStatus ? residualCount : 0,
            data: data.subarray(offset, end),
          }),
          withStatus ? sent : undefined,
        );
      }
      if (good) return;
    }
    this.send(
      encodeScsiResponse({
        overflow,
        underflow,
        bidiOverflow: false,
        bidiUnderflow: false,
        response: 0,
        status: result.status,
        itt: task.itt,
        snackTag: 0,
        statSN: this.nextStatSN(),
        expCmdSN: this.expCmdSN,
        maxCmdSN: this.maxCmdSN(),
        expDataSN: 0,
        bidiResidualCount: 0,
        residualCount,
        data: result.sense ? senseDataSegment(result.sense) : EMPTY,
      }),
      sent,
    );
  }

  /**
   * Mark a task aborted: no response will be sent. Its signal aborts, so that whatever of it
   * still waits in the arbiter (its volume call, or its write's admission) leaves at once and
   * the command settles without reaching the volume; one already in the volume runs to its end.
   * Tell the SCSI layer if it has the command.
   */
  private abortTask(task: Task): void {
    task.aborted = true;
    task.signal?.abort();
    if (task.command !== undefined) this.nexus?.abortTask?.(task.command);
  }

  /** Remove a task from the tables and release its CmdSN window slot. */
  private forget(task: Task): void {
    if (this.tasks.get(task.itt) !== task) return;
    this.tasks.delete(task.itt);
    if (task.reservation !== undefined) {
      task.reservation.release();
      task.reservation = undefined;
    }
    if (task.collector) {
      for (const ttt of task.collector.outstandingTtts()) this.byTtt.delete(ttt);
      task.collector = undefined;
    }
    if (!task.immediate) this.inFlight--;
  }

  // ---------------------------------------------------------------- NOP (RFC 7143 11.18, 11.19)

  private onNopOut(pdu: RawPdu): void {
    const nop = decodeNopOut(pdu);
    if (nop.itt === RESERVED_TAG) {
      // The answer to one of our pings.
      if (nop.ttt === this.pingTtt) this.pingTtt = undefined;
      return;
    }
    this.send(
      encodeNopIn({
        lun: nop.lun,
        itt: nop.itt,
        ttt: RESERVED_TAG,
        statSN: this.nextStatSN(),
        expCmdSN: this.expCmdSN,
        maxCmdSN: this.maxCmdSN(),
        data: nop.data,
      }),
    );
  }

  private startKeepalive(): void {
    const { nopInterval, nopTimeout } = this.services.tuning;
    if (nopInterval <= 0) return;
    this.timer = setInterval(() => {
      const now = Date.now();
      if (this.pingTtt !== undefined) {
        if (
          now - this.pingSentAt > nopTimeout * 1000 &&
          now - this.lastActivity > nopTimeout * 1000
        ) {
          this.log.warn(
            { seconds: nopTimeout },
            "initiator did not answer the NOP-In ping: closing",
          );
          this.fail("keepalive timeout");
        }
        return;
      }
      if (now - this.lastActivity < nopInterval * 1000) return;
      this.pingTtt = this.allocateTtt();
      this.pingSentAt = now;
      // A ping: ITT reserved, TTT set, StatSN not advanced (RFC 7143 11.19.1).
      this.send(
        encodeNopIn({
          lun: Buffer.alloc(8),
          itt: RESERVED_TAG,
          ttt: this.pingTtt,
          statSN: this.statSN,
          expCmdSN: this.expCmdSN,
          maxCmdSN: this.maxCmdSN(),
          data: EMPTY,
        }),
      );
    }, 1000);
    this.timer.unref();
  }

  // ---------------------------------------------------------------- Text (RFC 7143 11.10, 11.11)

  private textBuffer: Buffer[] = [];

  private onText(pdu: RawPdu): void {
    const req = decodeTextRequest(pdu);
    if (req.cont) {
      // The initiator continues its text in the next request: acknowledge with an empty one.
      this.textBuffer.push(req.data);
      this.sendText(req.itt, req.lun, EMPTY, true);
      return;
    }
    const data = Buffer.concat([...this.textBuffer, req.data]);
    this.textBuffer = [];
    let keys: Array<[string, string]>;
    try {
      keys = parseTextKeys(data);
    } catch (err) {
      this.log.warn({ err }, "malformed text request");
      this.reject(RejectReason.ProtocolError, pdu.bhs);
      return;
    }
    const answer: Array<[string, string]> = [];
    for (const [key, value] of keys) {
      if (key === "SendTargets") {
        const targets = this.services.sendTargets(this.initiatorName, this.io.localAddress);
        const wanted =
          value === "All"
            ? targets
            : value === ""
              ? targets.filter((t) => t.name === this.services.loginPolicy.targetName)
              : targets.filter((t) => t.name === value);
        for (const t of wanted) {
          answer.push(["TargetName", t.name]);
          for (const a of t.addresses) answer.push(["TargetAddress", a]);
        }
      } else {
        // Renegotiation in full feature phase is not supported: say so per key (6.2).
        answer.push([key, "NotUnderstood"]);
      }
    }
    this.sendText(req.itt, req.lun, encodeTextKeys(answer), false);
  }

  private sendText(itt: number, lun: Buffer, data: Buffer, cont: boolean): void {
    this.send(
      encodeTextResponse({
        final: !cont,
        cont: false,
        lun,
        itt,
        ttt: cont ? this.allocateTtt() : RESERVED_TAG,
        statSN: this.nextStatSN(),
        expCmdSN: this.expCmdSN,
        maxCmdSN: this.maxCmdSN(),
        data,
      }),
    );
  }

  // ---------------------------------------------------------------- Task management (11.5, 11.6)

  private async onTaskMgmt(pdu: RawPdu): Promise<void> {
    const req = decodeTaskMgmtRequest(pdu);
    const lun = decodeLun(req.lun);
    let response: number = TmfResponse.FunctionComplete;
    let victims: Task[] = [];
    const fn = req.function;
    this.log.info({ function: fn, lun, rtt: req.rtt }, "task management request");
    switch (fn) {
      case TmfFunction.AbortTask: {
        const task = this.tasks.get(req.rtt);
        if (task && task.lun === lun) victims = [task];
        else if (
          !task &&
          snGreaterThan(req.refCmdSN, snAdd(this.expCmdSN, -1)) &&
          !snGreaterThan(req.refCmdSN, this.maxCmdSNAdvertised) &&
          (req.immediate || snGreaterThan(req.cmdSN, req.refCmdSN))
        ) {
          // Not received yet, in the window and before this request: "consider the CmdSN as
          // received" (RFC 7143 11.5.1): ExpCmdSN moves over it and the command, should it
          // still come (an initiator may send an immediate TMF ahead of queued commands), is
          // dropped. Nothing to wait for.
          this.consideredReceived.add(req.refCmdSN);
          if (req.refCmdSN === this.expCmdSN) this.deliverHeldBack();
          response = TmfResponse.FunctionComplete;
        } else response = TmfResponse.TaskDoesNotExist;
        break;
      }
      case TmfFunction.AbortTaskSet:
      case TmfFunction.ClearTaskSet:
        victims = [...this.tasks.values()].filter((t) => t.lun === lun);
        break;
      case TmfFunction.LunReset:
        if (!this.services.hasLun(this.initiatorName, lun)) {
          response = TmfResponse.LunDoesNotExist;
          break;
        }
        victims = [...this.tasks.values()].filter((t) => t.lun === lun);
        break;
      case TmfFunction.TargetWarmReset:
      case TmfFunction.TargetColdReset:
        victims = [...this.tasks.values()];
        break;
      default:
        response = TmfResponse.FunctionNotSupported;
    }
    for (const t of victims) this.abortTask(t);
    // A task that reached the SCSI layer cannot be cancelled: wait until it finishes so that
    // nothing it does happens after our response (RFC 7143 4.2.3.3, SAM-5 7.3). The SCSI layer
    // settles at once the few whose remaining work belongs to the logical unit (SANITIZE).
    await Promise.all(victims.map((t) => t.running));
    for (const t of victims) this.forget(t);
    if (response === TmfResponse.FunctionComplete && this.nexus) {
      if (fn === TmfFunction.LunReset) this.nexus.lunReset(lun);
      if (fn === TmfFunction.TargetWarmReset || fn === TmfFunction.TargetColdReset)
        this.nexus.targetReset();
    }
    if (this.phase !== Phase.FullFeature) return;
    this.send(
      encodeTaskMgmtResponse({
        response,
        itt: req.itt,
        statSN: this.nextStatSN(),
        expCmdSN: this.expCmdSN,
        maxCmdSN: this.maxCmdSN(),
      }),
    );
    if (fn === TmfFunction.TargetColdReset && response === TmfResponse.FunctionComplete) {
      this.terminate("target cold reset");
    }
  }

  // ---------------------------------------------------------------- Logout (11.14, 11.15)

  private async onLogout(pdu: RawPdu): Promise<void> {
    const req = decodeLogoutRequest(pdu);
    this.log.info({ reason: req.reasonCode }, "logout requested");
    // Outstanding tasks end with the session (RFC 7143 6.4 at ERL 0): let running ones finish
    // so that the logout response follows every write already acknowledged.
    const running = [...this.tasks.values()].map((t) => t.running);
    await Promise.all(running);
    if (this.phase !== Phase.FullFeature) return;
    this.send(
      encodeLogoutResponse({
        response: 0,
        itt: req.itt,
        statSN: this.nextStatSN(),
        expCmdSN: this.expCmdSN,
        maxCmdSN: this.maxCmdSN(),
        time2Wait: 0,
        time2Retain: 0,
      }),
    );
    this.shutdown("logout");
    this.io.end();
  }

  // ---------------------------------------------------------------- helpers

  private nextStatSN(): number {
    const sn = this.statSN;
    this.statSN = snAdd(this.statSN, 1);
    return sn;
  }

  /**
   * MaxCmdSN: the window closes as commands queue up, so the initiator's queue depth is bounded
   * (flow control, RFC 7143 4.2.2.1). It never moves backwards.
   */
  private maxCmdSN(): number {
    const proposed = snAdd(this.expCmdSN, this.queueDepth - 1 - this.inFlight);
    if (snGreaterThan(proposed, this.maxCmdSNAdvertised)) this.maxCmdSNAdvertised = proposed;
    return this.maxCmdSNAdvertised;
  }

  private reject(reason: number, bhs: Buffer): void {
    // A Reject carries StatSN but does not advance it (RFC 7143 11.17.?: "StatSN ... the
    // Reject PDU is not a status"; libiscsi and Linux treat it so).
    this.send(
      encodeReject({
        reason,
        statSN: this.statSN,
        expCmdSN: this.expCmdSN,
        maxCmdSN: this.maxCmdSN(),
        dataSN: 0,
        data: Buffer.from(bhs.subarray(0, 48)),
      }),
    );
  }

  /** Write a PDU; `onFlushed` once it has left (or at once when it will never be sent). */
  private send(pdu: OutPdu, onFlushed?: () => void): void {
    if (this.phase === Phase.Closed && opcodeOf(pdu.bhs) !== Opcode.LoginResponse) {
      onFlushed?.();
      return;
    }
    const digests =
      this.phase === Phase.FullFeature && this.params
        ? { header: this.params.headerDigest, data: this.params.dataDigest }
        : NO_DIGESTS;
    this.io.write(serializePdu(pdu, digests), onFlushed);
  }

  /** Protocol failure: log why and drop the connection (ERL 0 recovery is at session level). */
  private fail(reason: string): void {
    if (this.phase === Phase.Closed) return;
    this.log.warn({ reason }, "closing connection");
    this.shutdown(reason);
    this.io.destroy();
  }

  private shutdown(reason: string): void {
    const wasFullFeature = this.phase === Phase.FullFeature;
    this.phase = Phase.Closed;
    if (this.timer) clearInterval(this.timer);
    if (this.loginTimer) clearTimeout(this.loginTimer);
    for (const t of this.tasks.values()) this.abortTask(t);
    this.heldBack.clear();
    this.consideredReceived.clear();
    this.sessions.remove(this);
    if (this.nexus) {
      const nexus = this.nexus;
      this.nexus = undefined;
      // Let running commands finish before the nexus goes away.
      void Promise.all([...this.tasks.values()].map((t) => t.running)).then(() => nexus.close());
    }
    if (wasFullFeature) this.log.info({ reason }, "session ended");
  }
}

const EMPTY = Buffer.alloc(0);
const NO_DIGESTS = { header: false, data: false } as const;

/** The few conditions decided in this layer, built by the SCSI layer's sense encoder. */
const INVALID_FIELD_IN_CDB = {
  key: SenseKey.ILLEGAL_REQUEST,
  asc: Asc.INVALID_FIELD_IN_CDB,
} as const;
const INTERNAL_TARGET_FAILURE = {
  key: SenseKey.HARDWARE_ERROR,
  asc: Asc.INTERNAL_TARGET_FAILURE,
} as const;
