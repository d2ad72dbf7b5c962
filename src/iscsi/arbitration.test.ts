/**
 * The connection, the SCSI layer and the arbiter together, Buffer in / Buffer out: a scripted
 * initiator, a real ScsiTarget nexus, an ArbiterFilter over an in-memory volume, and a manual
 * clock for the arbiter's rate limits.
 *
 * - ABORT TASK of a command waiting in the arbiter's queue answers FUNCTION COMPLETE at once,
 *   sends nothing for the aborted task, and gives its tokens back (it never reaches the volume);
 * - a write whose data must be solicited gets its R2T only once the arbiter admits it, and an
 *   ABORT TASK while it waits for that ends it without any R2T.
 */
import pino from "pino";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../arbiter/clock.js";
import { ArbiterFilter } from "../arbiter/filter.js";
import { arbiterPolicy, type SpeedLimits } from "../arbiter/policy.js";
import { IoScheduler } from "../arbiter/scheduler.js";
import { ScsiTarget } from "../scsi/target.js";
import { identity, lunEntry, MutableView, TEST_INFO } from "../scsi/testing/harness.js";
import { MemoryVolume } from "../scsi/testing/memory-volume.js";
import { type ConnectionIo, IscsiConnection } from "./connection.js";
import { Opcode, TmfFunction, TmfResponse } from "./constants.js";
import { PduReader, serializePdu } from "./framing.js";
import { encodeTextKeys } from "./login/text.js";
import { type OutPdu, opcodeOf, type RawPdu } from "./pdu.js";
import {
  decodeDataIn,
  decodeLoginResponse,
  decodeR2T,
  decodeScsiResponse,
  decodeTaskMgmtResponse,
  encodeDataOut,
  encodeLoginRequest,
  encodeScsiCommand,
  encodeTaskMgmtRequest,
} from "./pdu-initiator.js";
import { DEFAULT_TUNING, type NexusPort, type TargetServices } from "./services.js";
import { SessionRegistry } from "./sessions.js";

const TARGET = "iqn.2026-11.io.sanmux:unit";
const INITIATOR = "iqn.2026-11.test:unit";

function harness(limits: SpeedLimits) {
  const clock = new ManualClock();
  const scheduler = new IoScheduler({
    clock,
    timers: clock,
    policy: arbiterPolicy({ agents: [{ name: "a", limits }], volumes: [] }),
  });
  const volume = new MemoryVolume({ blocks: 1024 });
  const filter = new ArbiterFilter(volume, scheduler.channel("a", 1, volume.name));
  const target = new ScsiTarget(TEST_INFO);
  const scsi = target.openNexus(
    identity({ initiatorName: INITIATOR }),
    new MutableView([lunEntry(0, filter)]),
  );
  const admitted: number[] = [];
  const port: NexusPort = {
    execute: (cmd) => scsi.execute(cmd),
    abortTask: (cmd) => scsi.abortTask(cmd),
    admitWrite: (lun, bytes, signal) => {
      admitted.push(bytes);
      return scsi.admitWrite(lun, bytes, signal);
    },
    lunReset: (lun) => scsi.lunReset(lun),
    targetReset: () => scsi.targetReset(),
    close: () => scsi.close(),
  };
  const out: RawPdu[] = [];
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
      onFlushed?.();
      return true;
    },
    end() {},
    destroy() {},
  };
  const services: TargetServices = {
    loginPolicy: {
      targetName: TARGET,
      portalGroupTag: 1,
      limits: { maxRecvDataSegmentLength: 8192, maxBurstLength: 16384, firstBurstLength: 4096 },
      lookupInitiator: (name: string) => (name === INITIATOR ? {} : undefined),
    },
    openNexus: () => port,
    hasLun: (_i, lun) => lun === 0,
    sendTargets: () => [],
    logger: pino({ level: "silent" }),
    tuning: { ...DEFAULT_TUNING, queueDepth: 16, nopInterval: 0 },
  };
  const conn = new IscsiConnection(io, services, new SessionRegistry());
  const send = (pdu: OutPdu) =>
    conn.receive(Buffer.concat(serializePdu(pdu, { header: false, data: false })));
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
        ["MaxRecvDataSegmentLength", "8192"],
        ["InitialR2T", "Yes"],
        ["ImmediateData", "Yes"],
        ["FirstBurstLength", "4096"],
        ["MaxBurstLength", "16384"],
      ]),
    }),
  );
  expect(decodeLoginResponse(out.shift()!).statusClass).toBe(0);
  /** Let every pending promise reaction run. */
  const flush = async () => {
    for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
  };
  /** Move the arbiter's clock, then let what it released run. */
  const advance = async (ms: number) => {
    clock.advance(ms);
    await flush();
  };
  const take = () => out.splice(0);
  return { clock, scheduler, volume, filter, send, flush, advance, take, admitted };
}

const read10 = (lba: number, blocks: number) => {
  const cdb = Buffer.alloc(16);
  cdb[0] = 0x28;
  cdb.writeUInt32BE(lba, 2);
  cdb.writeUInt16BE(blocks, 7);
  return cdb;
};
const write10 = (lba: number, blocks: number) => {
  const cdb = Buffer.alloc(16);
  cdb[0] = 0x2a;
  cdb.writeUInt32BE(lba, 2);
  cdb.writeUInt16BE(blocks, 7);
  return cdb;
};

const abortTask = (itt: number, rtt: number, refCmdSN: number, cmdSN: number) =>
  encodeTaskMgmtRequest({
    immediate: true,
    function: TmfFunction.AbortTask,
    itt,
    rtt,
    cmdSN,
    expStatSN: 1,
    refCmdSN,
    expDataSN: 0,
  });

/** The ITT of each SCSI status (Data-In with status, or SCSI Response) among `pdus`. */
function statusOf(pdus: RawPdu[]): number[] {
  const itts: number[] = [];
  for (const p of pdus) {
    const op = opcodeOf(p.bhs);
    if (op === Opcode.DataIn) {
      const d = decodeDataIn(p);
      if (d.statusPresent) itts.push(d.itt);
    } else if (op === Opcode.ScsiResponse) {
      itts.push(decodeScsiResponse(p).itt);
    }
  }
  return itts;
}

describe("TMF aborts reach commands waiting in the arbiter", () => {
  it("ABORT TASK of a queued READ: FUNCTION COMPLETE at once, no status, tokens given back", async () => {
    // read_iops 1, burst 1 s: READ 20 takes the one token and runs; READ 21 is due at 1 s,
    // READ 22 at 2 s. ABORT TASK of 21 removes it at once and gives its token back; 22 keeps
    // its due time (2 s). A READ 23 sent afterwards gets 21's token back: due at 2 s, not 3 s.
    const h = harness({ readIops: 1 });
    for (const [i, itt] of [20, 21, 22].entries()) {
      h.send(
        encodeScsiCommand({
          read: true,
          itt,
          edtl: 512,
          cmdSN: 10 + i,
          expStatSN: 1,
          cdb: read10(i, 1),
        }),
      );
    }
    await h.flush();
    expect(statusOf(h.take())).toEqual([20]);
    expect(h.scheduler.throttledCount).toBe(2);

    h.send(abortTask(30, 21, 11, 13));
    await h.flush();
    const answer = h.take();
    expect(answer.map((p) => opcodeOf(p.bhs))).toEqual([Opcode.TaskMgmtResponse]);
    expect(decodeTaskMgmtResponse(answer[0]!)).toMatchObject({
      itt: 30,
      response: TmfResponse.FunctionComplete,
    });
    expect(h.scheduler.throttledCount).toBe(1);
    expect(h.filter.handle.demand.totals.aborted).toBe(1);

    h.send(
      encodeScsiCommand({
        read: true,
        itt: 23,
        edtl: 512,
        cmdSN: 13,
        expStatSN: 1,
        cdb: read10(3, 1),
      }),
    );
    await h.advance(1000);
    expect(statusOf(h.take())).toEqual([]);
    await h.advance(1000);
    expect(statusOf(h.take())).toEqual([22, 23]);
    await h.advance(5000);
    expect(h.take()).toEqual([]);
    // 21 never reached the volume.
    expect(h.volume.calls.filter((c) => c.op === "read").map((c) => c.lba)).toEqual([0, 2, 3]);
  });

  it("ABORT TASK SET ends every queued command of the session, none reaches the volume", async () => {
    const h = harness({ readIops: 1 });
    for (const [i, itt] of [40, 41, 42].entries()) {
      h.send(
        encodeScsiCommand({
          read: true,
          itt,
          edtl: 512,
          cmdSN: 10 + i,
          expStatSN: 1,
          cdb: read10(i, 1),
        }),
      );
    }
    await h.flush();
    expect(statusOf(h.take())).toEqual([40]);
    h.send(
      encodeTaskMgmtRequest({
        immediate: true,
        function: TmfFunction.AbortTaskSet,
        itt: 50,
        rtt: 0xffffffff,
        cmdSN: 13,
        expStatSN: 1,
        refCmdSN: 0,
        expDataSN: 0,
      }),
    );
    await h.flush();
    const answer = h.take();
    expect(answer.map((p) => opcodeOf(p.bhs))).toEqual([Opcode.TaskMgmtResponse]);
    expect(decodeTaskMgmtResponse(answer[0]!).response).toBe(TmfResponse.FunctionComplete);
    expect(h.scheduler.throttledCount).toBe(0);
    await h.advance(5000);
    expect(h.take()).toEqual([]);
    expect(h.volume.calls.filter((c) => c.op === "read")).toHaveLength(1);
  });
});

describe("writes are admitted by the arbiter before their data is solicited", () => {
  it("sends the R2T only once the write is admitted, and charges the write once", async () => {
    // write_iops 1, burst 1 s. WRITE 60 (all immediate data) takes the token. WRITE 61 (10240
    // bytes, 1024 immediate) needs an R2T: its admission is due at 1 s, so no R2T before then.
    const h = harness({ writeIops: 1 });
    h.send(
      encodeScsiCommand({
        write: true,
        itt: 60,
        edtl: 512,
        cmdSN: 10,
        expStatSN: 1,
        cdb: write10(0, 1),
        data: Buffer.alloc(512, 1),
      }),
    );
    const payload = Buffer.alloc(10240, 7);
    h.send(
      encodeScsiCommand({
        write: true,
        itt: 61,
        edtl: 10240,
        cmdSN: 11,
        expStatSN: 1,
        cdb: write10(8, 20),
        data: payload.subarray(0, 1024),
      }),
    );
    await h.flush();
    expect(statusOf(h.take())).toEqual([60]);
    expect(h.admitted).toEqual([10240]);
    await h.advance(999);
    expect(h.take()).toEqual([]);
    await h.advance(1);
    const r2t = decodeR2T(h.take()[0]!);
    expect(r2t).toMatchObject({ itt: 61, bufferOffset: 1024, desiredDataTransferLength: 9216 });
    // In two PDUs: the target's MaxRecvDataSegmentLength is 8192.
    for (const [dataSN, from, to] of [
      [0, 1024, 9216],
      [1, 9216, 10240],
    ] as const) {
      h.send(
        encodeDataOut({
          final: to === 10240,
          itt: 61,
          ttt: r2t.ttt,
          expStatSN: 1,
          dataSN,
          bufferOffset: from,
          data: payload.subarray(from, to),
        }),
      );
    }
    await h.flush();
    // The write ran within its admission: no second wait for a token (the next is due at 2 s).
    expect(statusOf(h.take())).toEqual([61]);
    expect(h.scheduler.inFlight).toBe(0);
    expect(h.filter.handle.demand.totals).toMatchObject({ writeOps: 2, writeBytes: 512 + 10240 });
    expect((await h.volume.read(8, 20)).equals(payload)).toBe(true);
  });

  it("ABORT TASK of a write waiting for admission: no R2T, FUNCTION COMPLETE at once", async () => {
    const h = harness({ writeIops: 1 });
    h.send(
      encodeScsiCommand({
        write: true,
        itt: 70,
        edtl: 512,
        cmdSN: 10,
        expStatSN: 1,
        cdb: write10(0, 1),
        data: Buffer.alloc(512, 1),
      }),
    );
    h.send(
      encodeScsiCommand({
        write: true,
        itt: 71,
        edtl: 8192,
        cmdSN: 11,
        expStatSN: 1,
        cdb: write10(8, 16),
      }),
    );
    await h.flush();
    expect(statusOf(h.take())).toEqual([70]);
    expect(h.scheduler.throttledCount).toBe(1);
    h.send(abortTask(80, 71, 11, 12));
    await h.flush();
    const answer = h.take();
    expect(answer.map((p) => opcodeOf(p.bhs))).toEqual([Opcode.TaskMgmtResponse]);
    expect(decodeTaskMgmtResponse(answer[0]!).response).toBe(TmfResponse.FunctionComplete);
    expect(h.scheduler.throttledCount).toBe(0);
    await h.advance(5000);
    expect(h.take()).toEqual([]);
    expect(h.scheduler.inFlight).toBe(0);
  });
});
