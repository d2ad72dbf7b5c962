/**
 * The connection engine, Buffer in / Buffer out: a scripted initiator on one side, a recording
 * SCSI nexus on the other. No sockets.
 */
import pino from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { ScsiCommand, ScsiResult } from "../scsi/types.js";
import { type ConnectionIo, IscsiConnection } from "./connection.js";
import { Opcode, RESERVED_TAG, RejectReason, TmfFunction, TmfResponse } from "./constants.js";
import { PduReader, serializePdu } from "./framing.js";
import { encodeTextKeys, parseTextKeys } from "./login/text.js";
import { type OutPdu, opcodeOf, type RawPdu } from "./pdu.js";
import {
  decodeDataIn,
  decodeLoginResponse,
  decodeLogoutResponse,
  decodeNopIn,
  decodeR2T,
  decodeReject,
  decodeScsiResponse,
  decodeTaskMgmtResponse,
  decodeTextResponse,
  encodeDataOut,
  encodeLoginRequest,
  encodeLogoutRequest,
  encodeNopOut,
  encodeScsiCommand,
  encodeSnack,
  encodeTaskMgmtRequest,
  encodeTextRequest,
} from "./pdu-initiator.js";
import { DEFAULT_TUNING, type NexusPort, type TargetServices } from "./services.js";
import { SessionRegistry } from "./sessions.js";

const TARGET = "iqn.2026-11.io.sanmux:unit";
const INITIATOR = "iqn.2026-11.test:unit";

/** A nexus that records commands; READ(10)-like CDBs (0x28) return a counting pattern. */
class RecordingNexus implements NexusPort {
  readonly commands: ScsiCommand[] = [];
  hold: Promise<void> | undefined;
  resets: number[] = [];
  /** Commands the connection reported as aborted. */
  readonly aborted: ScsiCommand[] = [];
  /** Called by `abortTask`: a test can settle the held command there, as SANITIZE does. */
  onAbort: (() => void) | undefined;
  /** Commands reported by `sent`, and what the connection had written at that moment. */
  readonly sentLog: Array<{ cmd: ScsiCommand; written: number }> = [];
  written = 0;
  abortTask(cmd: ScsiCommand): void {
    this.aborted.push(cmd);
    this.onAbort?.();
  }
  async execute(cmd: ScsiCommand): Promise<ScsiResult> {
    this.commands.push(cmd);
    if (this.hold) await this.hold;
    if (cmd.cdb[0] === 0x28) {
      const length = cmd.cdb.readUInt16BE(7) * 512;
      const data = Buffer.alloc(length);
      for (let i = 0; i < length; i++) data[i] = i & 0xff;
      return { status: 0, data };
    }
    if (cmd.cdb[0] === 0x2a) return { status: 0, dataOutLength: cmd.cdb.readUInt16BE(7) * 512 };
    return { status: 0 };
  }
  lunReset(lun: number): void {
    this.resets.push(lun);
  }
  targetReset(): void {}
  close(): void {}
}

/** A RecordingNexus that also reports when responses have left (NexusPort.sent). */
class SentNexus extends RecordingNexus {
  sent(cmd: ScsiCommand): void {
    this.sentLog.push({ cmd, written: this.written });
  }
}

function harness(
  options: {
    maxRecv?: number;
    initialR2T?: boolean;
    nopInterval?: number;
    queueDepthFor?: (initiatorName: string) => number | undefined;
    /** Use a nexus with `sent`, and hold the write callbacks until `flushWrites()`. */
    reportSent?: boolean;
  } = {},
) {
  const nexus = options.reportSent ? new SentNexus() : new RecordingNexus();
  const pendingFlushes: Array<() => void> = [];
  const out: RawPdu[] = [];
  let ended = false;
  const reader = new PduReader({
    settings: { headerDigest: false, dataDigest: false, maxDataSegmentLength: 1 << 24 },
    onPdu: (p) => out.push(p),
    onError: (e) => {
      throw e;
    },
  });
  const io: ConnectionIo = {
    remoteAddress: "127.0.0.1:5000",
    localAddress: "127.0.0.1",
    write(buffers, onFlushed) {
      reader.push(Buffer.concat(buffers));
      nexus.written++;
      if (onFlushed) {
        if (options.reportSent) pendingFlushes.push(onFlushed);
        else onFlushed();
      }
      return true;
    },
    end() {
      ended = true;
    },
    destroy() {
      ended = true;
    },
  };
  const services: TargetServices = {
    loginPolicy: {
      targetName: TARGET,
      portalGroupTag: 1,
      limits: { maxRecvDataSegmentLength: 8192, maxBurstLength: 16384, firstBurstLength: 4096 },
      lookupInitiator: (name: string) => (name === INITIATOR ? {} : undefined),
    },
    openNexus: () => nexus,
    ...(options.queueDepthFor ? { queueDepthFor: options.queueDepthFor } : {}),
    hasLun: (_i, lun) => lun === 0,
    sendTargets: () => [{ name: TARGET, addresses: ["127.0.0.1:3260,1"] }],
    logger: pino({ level: "silent" }),
    tuning: {
      ...DEFAULT_TUNING,
      queueDepth: 4,
      nopInterval: options.nopInterval ?? 0,
      nopTimeout: 3,
    },
  };
  const conn = new IscsiConnection(io, services, new SessionRegistry());
  const send = (pdu: OutPdu) => {
    conn.receive(Buffer.concat(serializePdu(pdu, { header: false, data: false })));
  };
  const login = () => {
    send(
      encodeLoginRequest({
        transit: true,
        csg: 1,
        nsg: 3,
        isid: Buffer.from([0x80, 0, 0, 1, 2, 3]),
        itt: 1,
        cmdSN: 10,
        expStatSN: 0,
        data: encodeTextKeys([
          ["InitiatorName", INITIATOR],
          ["TargetName", TARGET],
          ["SessionType", "Normal"],
          ["MaxRecvDataSegmentLength", String(options.maxRecv ?? 8192)],
          ["InitialR2T", options.initialR2T === false ? "No" : "Yes"],
          ["ImmediateData", "Yes"],
          ["FirstBurstLength", "4096"],
          ["MaxBurstLength", "16384"],
        ]),
      }),
    );
    const r = decodeLoginResponse(out.shift()!);
    expect(r.statusClass).toBe(0);
    expect(r.transit && r.nsg === 3).toBe(true);
    expect(r.tsih).not.toBe(0);
    return r;
  };
  const flush = () => new Promise((resolve) => setImmediate(resolve));
  const flushWrites = () => {
    for (const f of pendingFlushes.splice(0)) f();
  };
  return { conn, nexus, out, send, login, flush, flushWrites, ended: () => ended };
}

const read10 = (blocks: number) => {
  const cdb = Buffer.alloc(16);
  cdb[0] = 0x28;
  cdb.writeUInt16BE(blocks, 7);
  return cdb;
};
const write10 = (blocks: number) => {
  const cdb = Buffer.alloc(16);
  cdb[0] = 0x2a;
  cdb.writeUInt16BE(blocks, 7);
  return cdb;
};

afterEach(() => {
  vi.useRealTimers();
});

describe("IscsiConnection", () => {
  it("pings an idle initiator with NOP-In and drops it when no answer comes", () => {
    vi.useFakeTimers();
    const h = harness({ nopInterval: 2 });
    h.login();
    // Interval 2 s: the first ping leaves after 2-3 s of silence.
    vi.advanceTimersByTime(3000);
    const ping = decodeNopIn(h.out.shift()!);
    expect(ping.itt).toBe(RESERVED_TAG);
    expect(ping.ttt).not.toBe(RESERVED_TAG);
    // Answering keeps the session alive ...
    h.send(
      encodeNopOut({ immediate: true, itt: RESERVED_TAG, ttt: ping.ttt, cmdSN: 10, expStatSN: 1 }),
    );
    vi.advanceTimersByTime(2500);
    expect(h.ended()).toBe(false);
    const second = decodeNopIn(h.out.shift()!);
    // ... silence past the 3 s timeout ends it.
    expect(second.itt).toBe(RESERVED_TAG);
    vi.advanceTimersByTime(5000);
    expect(h.ended()).toBe(true);
  });

  it("logs in and advertises a CmdSN window of the queue depth", () => {
    const h = harness();
    const r = h.login();
    expect(r.expCmdSN).toBe(10);
    expect(r.maxCmdSN).toBe(13); // queue depth 4: CmdSN 10..13
  });

  it("opens the CmdSN window of the initiator's agent at the end of login, and changes it live", async () => {
    const asked: string[] = [];
    const h = harness({
      queueDepthFor: (name) => {
        asked.push(name);
        return 2;
      },
    });
    const r = h.login();
    expect(asked).toEqual([INITIATOR]);
    expect(r.maxCmdSN).toBe(11); // queue depth 2 instead of the target's 4: CmdSN 10..11
    let release!: () => void;
    h.nexus.hold = new Promise((resolve) => {
      release = resolve;
    });
    const nop = (cmdSN: number) =>
      h.send(encodeNopOut({ itt: 100 + cmdSN, ttt: RESERVED_TAG, cmdSN, expStatSN: 1 }));
    const read = (cmdSN: number) =>
      h.send(
        encodeScsiCommand({
          read: true,
          itt: cmdSN,
          edtl: 512,
          cmdSN,
          expStatSN: 1,
          cdb: read10(1),
        }),
      );
    // Two commands fill the window: the NOP-In answering a third shows it closed (MaxCmdSN 11
    // while ExpCmdSN is 12). CmdSN 12 itself is outside the window: dropped.
    read(10);
    read(11);
    nop(12);
    await h.flush();
    expect(h.nexus.commands).toHaveLength(2);
    expect(h.out).toHaveLength(0); // the NOP-Out, outside the window, was dropped too
    // A reload gives the agent a depth of 6: the window opens at the next PDU we send.
    h.conn.setQueueDepth(6);
    release();
    await h.flush();
    const answers = h.out.splice(0).map(decodeDataIn);
    expect(answers.map((a) => a.itt)).toEqual([10, 11]);
    // ExpCmdSN 12, nothing in flight: MaxCmdSN 12 + 6 - 1.
    expect(answers[1]?.maxCmdSN).toBe(17);
    // Back to 1: MaxCmdSN never moves backwards, so the window closes as CmdSNs are used.
    h.conn.setQueueDepth(1);
    nop(12);
    await h.flush();
    expect(decodeNopIn(h.out.shift()!).maxCmdSN).toBe(17);
    h.conn.setQueueDepth(0); // ignored: not a queue depth
    for (let sn = 13; sn <= 17; sn++) nop(sn);
    await h.flush();
    const last = h.out.splice(0).map(decodeNopIn).at(-1);
    expect(last?.expCmdSN).toBe(18);
    expect(last?.maxCmdSN).toBe(18); // depth 1: one command at a time from now on
  });

  it("uses the target's queue depth when the agent has none", () => {
    const h = harness({ queueDepthFor: () => undefined });
    expect(h.login().maxCmdSN).toBe(13);
  });

  it("tells the nexus when a response has left, after its last PDU was written", async () => {
    const h = harness({ reportSent: true, maxRecv: 1024 });
    h.login();
    h.send(
      encodeScsiCommand({
        read: true,
        itt: 7,
        edtl: 4096,
        cmdSN: 10,
        expStatSN: 1,
        cdb: read10(8),
      }),
    );
    h.send(encodeScsiCommand({ itt: 8, edtl: 0, cmdSN: 11, expStatSN: 1, cdb: read10(0) }));
    await h.flush();
    expect(h.out).toHaveLength(5); // 4 Data-In for the read, 1 SCSI Response
    const nexus = h.nexus as SentNexus;
    expect(nexus.sentLog).toEqual([]); // written, not yet flushed
    h.flushWrites();
    expect(nexus.sentLog.map((s) => s.cmd)).toEqual(nexus.commands);
    // A command aborted while it runs: no response, reported at once when it settles.
    let release!: () => void;
    h.nexus.hold = new Promise((resolve) => {
      release = resolve;
    });
    h.send(
      encodeScsiCommand({ read: true, itt: 9, edtl: 512, cmdSN: 12, expStatSN: 1, cdb: read10(1) }),
    );
    h.send(
      encodeTaskMgmtRequest({
        immediate: true,
        function: TmfFunction.AbortTask,
        itt: 60,
        rtt: 9,
        cmdSN: 13,
        expStatSN: 1,
        refCmdSN: 12,
        expDataSN: 0,
      }),
    );
    await h.flush();
    release();
    await h.flush();
    await h.flush();
    expect(nexus.sentLog.map((s) => s.cmd)).toEqual(nexus.commands);
    expect(h.out.slice(5).map((p) => opcodeOf(p.bhs))).toEqual([Opcode.TaskMgmtResponse]);
  });

  it("splits Data-In at the initiator's MaxRecvDataSegmentLength with status in the last PDU", async () => {
    const h = harness({ maxRecv: 1024 });
    h.login();
    h.send(
      encodeScsiCommand({
        read: true,
        itt: 7,
        edtl: 4096,
        cmdSN: 10,
        expStatSN: 1,
        cdb: read10(8),
      }),
    );
    await h.flush();
    const pdus = h.out.map(decodeDataIn);
    expect(pdus.map((p) => [p.dataSN, p.bufferOffset, p.data.length])).toEqual([
      [0, 0, 1024],
      [1, 1024, 1024],
      [2, 2048, 1024],
      [3, 3072, 1024],
    ]);
    expect(pdus.map((p) => p.statusPresent)).toEqual([false, false, false, true]);
    expect(pdus[3]?.final).toBe(true);
    expect(pdus[3]?.residualCount).toBe(0);
    expect(pdus[3]?.data[5]).toBe((3072 + 5) & 0xff); // the pattern continues across PDUs
  });

  it("reports underflow when the command returns less than EDTL, and overflow when more", async () => {
    const h = harness();
    h.login();
    h.send(
      encodeScsiCommand({
        read: true,
        itt: 1,
        edtl: 2048,
        cmdSN: 10,
        expStatSN: 1,
        cdb: read10(1),
      }),
    );
    h.send(
      encodeScsiCommand({ read: true, itt: 2, edtl: 512, cmdSN: 11, expStatSN: 1, cdb: read10(2) }),
    );
    await h.flush();
    const [a, b] = h.out.map(decodeDataIn);
    expect(a).toMatchObject({ itt: 1, underflow: true, overflow: false, residualCount: 1536 });
    expect(a?.data.length).toBe(512);
    expect(b).toMatchObject({ itt: 2, underflow: false, overflow: true, residualCount: 512 });
    expect(b?.data.length).toBe(512);
  });

  it("collects immediate data and R2T-solicited bursts into one write", async () => {
    const h = harness();
    h.login();
    // 20 blocks = 10240 bytes: 1024 immediate, the rest in R2Ts of at most MaxBurstLength.
    const payload = Buffer.alloc(10240);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff;
    h.send(
      encodeScsiCommand({
        write: true,
        itt: 3,
        edtl: 10240,
        cmdSN: 10,
        expStatSN: 1,
        cdb: write10(20),
        data: payload.subarray(0, 1024),
      }),
    );
    const r2t = decodeR2T(h.out.shift()!);
    expect(r2t).toMatchObject({
      itt: 3,
      r2tSN: 0,
      bufferOffset: 1024,
      desiredDataTransferLength: 9216,
    });
    // Send it in 8 KiB-or-less Data-Out PDUs with DataSN 0, 1.
    h.send(
      encodeDataOut({
        final: false,
        itt: 3,
        ttt: r2t.ttt,
        expStatSN: 1,
        dataSN: 0,
        bufferOffset: 1024,
        data: payload.subarray(1024, 9216),
      }),
    );
    h.send(
      encodeDataOut({
        final: true,
        itt: 3,
        ttt: r2t.ttt,
        expStatSN: 1,
        dataSN: 1,
        bufferOffset: 9216,
        data: payload.subarray(9216),
      }),
    );
    await h.flush();
    expect(h.nexus.commands[0]?.dataOut).toEqual(payload);
    const rsp = decodeScsiResponse(h.out.shift()!);
    expect(rsp).toMatchObject({ itt: 3, status: 0, overflow: false, underflow: false });
  });

  it("accepts unsolicited Data-Out up to FirstBurstLength when InitialR2T=No", async () => {
    const h = harness({ initialR2T: false });
    h.login();
    const payload = Buffer.alloc(6144, 0x5a);
    h.send(
      encodeScsiCommand({
        write: true,
        final: false,
        itt: 4,
        edtl: 6144,
        cmdSN: 10,
        expStatSN: 1,
        cdb: write10(12),
      }),
    );
    // FirstBurstLength 4096 unsolicited; the R2T asks for the remaining 2048 at once.
    const r2t = decodeR2T(h.out.shift()!);
    expect(r2t).toMatchObject({ bufferOffset: 4096, desiredDataTransferLength: 2048 });
    h.send(
      encodeDataOut({
        final: true,
        itt: 4,
        ttt: RESERVED_TAG,
        expStatSN: 1,
        dataSN: 0,
        bufferOffset: 0,
        data: payload.subarray(0, 4096),
      }),
    );
    h.send(
      encodeDataOut({
        final: true,
        itt: 4,
        ttt: r2t.ttt,
        expStatSN: 1,
        dataSN: 0,
        bufferOffset: 4096,
        data: payload.subarray(4096),
      }),
    );
    await h.flush();
    expect(h.nexus.commands[0]?.dataOut).toEqual(payload);
    expect(decodeScsiResponse(h.out.shift()!).status).toBe(0);
  });

  it("delivers commands in CmdSN order and drops those outside the window", async () => {
    const h = harness();
    h.login();
    h.send(
      encodeScsiCommand({
        read: true,
        itt: 12,
        edtl: 512,
        cmdSN: 12,
        expStatSN: 1,
        cdb: read10(1),
      }),
    );
    h.send(
      encodeScsiCommand({
        read: true,
        itt: 99,
        edtl: 512,
        cmdSN: 40,
        expStatSN: 1,
        cdb: read10(1),
      }),
    );
    h.send(
      encodeScsiCommand({
        read: true,
        itt: 11,
        edtl: 512,
        cmdSN: 11,
        expStatSN: 1,
        cdb: read10(1),
      }),
    );
    await h.flush();
    expect(h.nexus.commands).toHaveLength(0); // 10 has not arrived: 11 and 12 wait
    h.send(
      encodeScsiCommand({
        read: true,
        itt: 10,
        edtl: 512,
        cmdSN: 10,
        expStatSN: 1,
        cdb: read10(1),
      }),
    );
    await h.flush();
    expect(h.out.map((p) => decodeDataIn(p).itt)).toEqual([10, 11, 12]);
    const last = decodeDataIn(h.out[2]!);
    expect(last.expCmdSN).toBe(13);
  });

  it("answers NOP-Out, rejects SNACK at ERL 0 and serves SendTargets", async () => {
    const h = harness();
    h.login();
    h.send(
      encodeNopOut({ immediate: true, itt: 20, cmdSN: 10, expStatSN: 1, data: Buffer.from("hi") }),
    );
    const nop = decodeNopIn(h.out.shift()!);
    expect(nop).toMatchObject({ itt: 20, ttt: RESERVED_TAG });
    expect(nop.data.toString()).toBe("hi");
    h.send(encodeSnack({ type: 0, itt: 1, expStatSN: 2, begRun: 0, runLength: 0 }));
    expect(decodeReject(h.out.shift()!).reason).toBe(RejectReason.SnackReject);
    h.send(
      encodeTextRequest({
        final: true,
        itt: 21,
        cmdSN: 10,
        expStatSN: 2,
        data: encodeTextKeys([["SendTargets", "All"]]),
      }),
    );
    const text = decodeTextResponse(h.out.shift()!);
    expect(parseTextKeys(text.data)).toEqual([
      ["TargetName", TARGET],
      ["TargetAddress", "127.0.0.1:3260,1"],
    ]);
  });

  it("aborts a write waiting for data: no SCSI response, then the TMF response", async () => {
    const h = harness();
    h.login();
    h.send(
      encodeScsiCommand({
        write: true,
        itt: 30,
        edtl: 8192,
        cmdSN: 10,
        expStatSN: 1,
        cdb: write10(16),
      }),
    );
    expect(opcodeOf(h.out.shift()!.bhs)).toBe(Opcode.R2T);
    h.send(
      encodeTaskMgmtRequest({
        immediate: true,
        function: TmfFunction.AbortTask,
        itt: 31,
        rtt: 30,
        cmdSN: 11,
        expStatSN: 1,
        refCmdSN: 10,
        expDataSN: 0,
      }),
    );
    await h.flush();
    const rsp = decodeTaskMgmtResponse(h.out.shift()!);
    expect(rsp).toMatchObject({ itt: 31, response: TmfResponse.FunctionComplete });
    expect(h.out).toHaveLength(0);
    expect(h.nexus.commands).toHaveLength(0);
  });

  it("waits for a running command before answering LUN RESET", async () => {
    const h = harness();
    h.login();
    let release!: () => void;
    h.nexus.hold = new Promise((r) => {
      release = r;
    });
    h.send(
      encodeScsiCommand({
        read: true,
        itt: 40,
        edtl: 512,
        cmdSN: 10,
        expStatSN: 1,
        cdb: read10(1),
      }),
    );
    h.send(
      encodeTaskMgmtRequest({
        immediate: true,
        function: TmfFunction.LunReset,
        itt: 41,
        rtt: RESERVED_TAG,
        cmdSN: 11,
        expStatSN: 1,
        refCmdSN: 0,
        expDataSN: 0,
      }),
    );
    await h.flush();
    expect(h.out).toHaveLength(0);
    release();
    await h.flush();
    await h.flush();
    expect(h.out.map((p) => opcodeOf(p.bhs))).toEqual([Opcode.TaskMgmtResponse]);
    expect(h.nexus.resets).toEqual([0]);
  });

  it("tells the nexus which running command ABORT TASK aborts; answers once it settles", async () => {
    const h = harness();
    h.login();
    let release!: () => void;
    h.nexus.hold = new Promise((r) => {
      release = r;
    });
    // As SANITIZE with IMMED=0 does: the command settles as soon as it is aborted.
    h.nexus.onAbort = () => release();
    h.send(encodeScsiCommand({ itt: 50, edtl: 0, cmdSN: 10, expStatSN: 1, cdb: read10(0) }));
    await h.flush();
    expect(h.out).toHaveLength(0);
    h.send(
      encodeTaskMgmtRequest({
        immediate: true,
        function: TmfFunction.AbortTask,
        itt: 51,
        rtt: 50,
        cmdSN: 11,
        expStatSN: 1,
        refCmdSN: 10,
        expDataSN: 0,
      }),
    );
    await h.flush();
    await h.flush();
    expect(h.nexus.aborted).toEqual([h.nexus.commands[0]]);
    // The TMF response, and no SCSI response for the aborted command.
    expect(h.out.map((p) => opcodeOf(p.bhs))).toEqual([Opcode.TaskMgmtResponse]);
    expect(decodeTaskMgmtResponse(h.out[0]!)).toMatchObject({
      itt: 51,
      response: TmfResponse.FunctionComplete,
    });
  });

  it("ABORT TASK of a command not received yet: FUNCTION COMPLETE, and the command is dropped when it comes", async () => {
    // libiscsi sends an immediate TMF ahead of the commands it has queued: RFC 7143 11.5.1,
    // the CmdSN in the window counts as received.
    const h = harness();
    h.login();
    h.send(
      encodeTaskMgmtRequest({
        immediate: true,
        function: TmfFunction.AbortTask,
        itt: 61,
        rtt: 60,
        cmdSN: 12,
        expStatSN: 1,
        refCmdSN: 11,
        expDataSN: 0,
      }),
    );
    await h.flush();
    expect(decodeTaskMgmtResponse(h.out.shift()!)).toMatchObject({
      itt: 61,
      response: TmfResponse.FunctionComplete,
    });
    for (const [itt, cmdSN] of [
      [59, 10],
      [60, 11],
      [62, 12],
    ] as const) {
      h.send(
        encodeScsiCommand({ read: true, itt, edtl: 512, cmdSN, expStatSN: 1, cdb: read10(1) }),
      );
    }
    await h.flush();
    // 60 never reached the nexus and got nothing; 59 and 62 were served.
    expect(h.nexus.commands).toHaveLength(2);
    expect(h.out.map((p) => decodeDataIn(p).itt)).toEqual([59, 62]);
    // A RefCmdSN outside the window names no task.
    h.send(
      encodeTaskMgmtRequest({
        immediate: true,
        function: TmfFunction.AbortTask,
        itt: 63,
        rtt: 99,
        cmdSN: 13,
        expStatSN: 1,
        refCmdSN: 500,
        expDataSN: 0,
      }),
    );
    await h.flush();
    expect(decodeTaskMgmtResponse(h.out.at(-1)!).response).toBe(TmfResponse.TaskDoesNotExist);
  });

  it("answers Logout and ends the connection", async () => {
    const h = harness();
    h.login();
    h.send(encodeLogoutRequest({ reasonCode: 0, itt: 50, cmdSN: 10, expStatSN: 1 }));
    await h.flush();
    expect(decodeLogoutResponse(h.out.shift()!)).toMatchObject({ itt: 50, response: 0 });
    expect(h.ended()).toBe(true);
  });

  it("refuses an initiator that is no agent's with authorization failure", () => {
    const h = harness();
    h.send(
      encodeLoginRequest({
        transit: true,
        csg: 1,
        nsg: 3,
        isid: Buffer.from([0x80, 0, 0, 1, 2, 4]),
        itt: 1,
        cmdSN: 1,
        expStatSN: 0,
        data: encodeTextKeys([
          ["InitiatorName", "iqn.2026-11.test:nobody"],
          ["TargetName", TARGET],
        ]),
      }),
    );
    const r = decodeLoginResponse(h.out.shift()!);
    expect([r.statusClass, r.statusDetail]).toEqual([2, 2]);
    expect(h.ended()).toBe(true);
  });
});
