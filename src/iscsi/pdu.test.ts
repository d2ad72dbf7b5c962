import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  AhsType,
  AsyncEvent,
  BHS_LENGTH,
  LoginStage,
  LoginStatus,
  LogoutReason,
  Opcode,
  RESERVED_TAG,
  RejectReason,
  ScsiResponseCode,
  SnackType,
  TmfFunction,
  TmfResponse,
} from "./constants.js";
import {
  ahsIsWellFormed,
  dataSegmentLengthOf,
  decodeDataOut,
  decodeLoginRequest,
  decodeLogoutRequest,
  decodeNopOut,
  decodeScsiCommand,
  decodeSnack,
  decodeTaskMgmtRequest,
  decodeTextRequest,
  EMPTY,
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
  findAhs,
  isImmediate,
  ittOf,
  type OutPdu,
  opcodeOf,
  senseDataSegment,
  totalAhsLengthOf,
} from "./pdu.js";
import {
  decodeAsyncMessage,
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
  senseOf,
  toRawPdu,
} from "./pdu-initiator.js";

// ---------------------------------------------------------------------------------------------
// Fixture builders
// ---------------------------------------------------------------------------------------------

/** A LUN field for LUN `n` (SAM peripheral device addressing, enough for tests). */
function lunField(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt16BE(n, 0);
  return b;
}

/** `n` bytes of a recognisable pattern. */
function pattern(n: number, seed = 1): Buffer {
  return Buffer.from(Array.from({ length: n }, (_, i) => (seed * 31 + i * 7) & 0xff));
}

const ISID = Buffer.from([0x80, 0x12, 0x34, 0x56, 0x78, 0x9a]);

/** The round trip: what the receiver decodes from what the sender encoded. */
function roundTrip<T>(pdu: OutPdu, decode: (raw: ReturnType<typeof toRawPdu>) => T): T {
  return decode(toRawPdu(pdu));
}

// ---------------------------------------------------------------------------------------------
// Common BHS fields
// ---------------------------------------------------------------------------------------------

describe("common BHS fields (RFC 7143 11.2.1)", () => {
  it("reads opcode, I bit, lengths and ITT", () => {
    const pdu = encodeScsiCommand({
      immediate: true,
      itt: 0xdeadbeef,
      edtl: 0,
      cmdSN: 1,
      expStatSN: 2,
      cdb: Buffer.from([0x00]),
      data: pattern(0x012345),
    });
    expect(pdu.bhs).toHaveLength(BHS_LENGTH);
    expect(opcodeOf(pdu.bhs)).toBe(Opcode.ScsiCommand);
    expect(isImmediate(pdu.bhs)).toBe(true);
    expect(pdu.bhs[0]).toBe(0x41);
    expect(dataSegmentLengthOf(pdu.bhs)).toBe(0x012345);
    expect([pdu.bhs[5], pdu.bhs[6], pdu.bhs[7]]).toEqual([0x01, 0x23, 0x45]);
    expect(totalAhsLengthOf(pdu.bhs)).toBe(0);
    expect(ittOf(pdu.bhs)).toBe(0xdeadbeef);
  });

  it("opcodeOf ignores the I bit and the reserved bit", () => {
    const bhs = Buffer.alloc(BHS_LENGTH);
    bhs[0] = 0x80 | 0x40 | Opcode.TextRequest;
    expect(opcodeOf(bhs)).toBe(Opcode.TextRequest);
    expect(isImmediate(bhs)).toBe(true);
  });

  it("target PDUs have the I bit clear and every opcode is right", () => {
    const cases: [OutPdu, number][] = [
      [encodeScsiResponse({ status: 0, itt: 1, statSN: 1, expCmdSN: 1, maxCmdSN: 1 }), 0x21],
      [encodeDataIn(dataInBase), 0x25],
      [encodeR2T(r2tBase), 0x31],
      [encodeNopIn({ itt: 1, ttt: 2, statSN: 3, expCmdSN: 4, maxCmdSN: 5 }), 0x20],
      [encodeLoginResponse(loginResponseBase), 0x23],
      [encodeTextResponse(textResponseBase), 0x24],
      [encodeLogoutResponse({ response: 0, itt: 1, statSN: 1, expCmdSN: 1, maxCmdSN: 1 }), 0x26],
      [encodeTaskMgmtResponse({ response: 0, itt: 1, statSN: 1, expCmdSN: 1, maxCmdSN: 1 }), 0x22],
      [encodeReject({ reason: 4, statSN: 1, expCmdSN: 1, maxCmdSN: 1, data: EMPTY }), 0x3f],
      [encodeAsyncMessage({ statSN: 1, expCmdSN: 1, maxCmdSN: 1, asyncEvent: 1 }), 0x32],
    ];
    for (const [pdu, opcode] of cases) {
      expect(pdu.bhs[0]).toBe(opcode);
      expect(pdu.bhs).toHaveLength(BHS_LENGTH);
    }
  });

  it("refuses a data segment longer than the 24-bit length field", () => {
    const data = Buffer.alloc(0x1000000);
    expect(() =>
      encodeNopIn({ itt: 1, ttt: 1, statSN: 1, expCmdSN: 1, maxCmdSN: 1, data }),
    ).toThrow(RangeError);
  });

  it("refuses out-of-range field values and a LUN that is not 8 bytes", () => {
    expect(() => encodeR2T({ ...r2tBase, itt: 2 ** 32 })).toThrow(RangeError);
    expect(() => encodeR2T({ ...r2tBase, ttt: -1 })).toThrow(RangeError);
    expect(() => encodeR2T({ ...r2tBase, lun: Buffer.alloc(4) })).toThrow(RangeError);
    expect(() => encodeLoginResponse({ ...loginResponseBase, isid: Buffer.alloc(5) })).toThrow(
      RangeError,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Round trips, target PDUs: encoded here, decoded by the initiator side
// ---------------------------------------------------------------------------------------------

const dataInBase = {
  final: false,
  acknowledge: false,
  statusPresent: false,
  status: 0,
  overflow: false,
  underflow: false,
  residualCount: 0,
  lun: lunField(3),
  itt: 0x11223344,
  ttt: RESERVED_TAG,
  statSN: 0,
  expCmdSN: 100,
  maxCmdSN: 131,
  dataSN: 7,
  bufferOffset: 0x70000,
  data: pattern(5),
};

const r2tBase = {
  lun: lunField(1),
  itt: 0x01020304,
  ttt: 0x0a0b0c0d,
  statSN: 55,
  expCmdSN: 66,
  maxCmdSN: 77,
  r2tSN: 2,
  bufferOffset: 65536,
  desiredDataTransferLength: 262144,
};

const loginResponseBase = {
  transit: true,
  cont: false,
  csg: LoginStage.Operational,
  nsg: LoginStage.FullFeature,
  versionMax: 0,
  versionActive: 0,
  isid: ISID,
  tsih: 0x1234,
  itt: 0xfeedface,
  statSN: 0xffffffff,
  expCmdSN: 1,
  maxCmdSN: 64,
  statusClass: LoginStatus.Success.statusClass,
  statusDetail: LoginStatus.Success.statusDetail,
  data: Buffer.from("HeaderDigest=None\0DataDigest=None\0"),
};

const textResponseBase = {
  final: true,
  cont: false,
  lun: lunField(0),
  itt: 9,
  ttt: RESERVED_TAG,
  statSN: 10,
  expCmdSN: 11,
  maxCmdSN: 12,
  data: Buffer.from("TargetName=iqn.2024-01.test:t\0"),
};

describe("round trips: target PDUs", () => {
  it("SCSI Response with sense data and every flag", () => {
    const sense = pattern(18, 3);
    const params = {
      overflow: true,
      underflow: false,
      bidiOverflow: false,
      bidiUnderflow: true,
      response: ScsiResponseCode.CommandCompletedAtTarget,
      status: 0x02,
      itt: 0x80000001,
      snackTag: 0x5a5a5a5a,
      statSN: 1000,
      expCmdSN: 2000,
      maxCmdSN: 2031,
      expDataSN: 3,
      bidiResidualCount: 17,
      residualCount: 512,
      data: senseDataSegment(sense),
    };
    const pdu = encodeScsiResponse(params);
    expect(pdu.bhs[1]).toBe(0x80 | 0x04 | 0x08);
    const decoded = roundTrip(pdu, decodeScsiResponse);
    expect(decoded).toEqual(params);
    expect(senseOf(decoded.data)).toEqual(sense);
  });

  it("SCSI Response defaults: no flags, no data, response 0", () => {
    const decoded = roundTrip(
      encodeScsiResponse({ status: 0, itt: 1, statSN: 2, expCmdSN: 3, maxCmdSN: 4 }),
      decodeScsiResponse,
    );
    expect(decoded).toEqual({
      overflow: false,
      underflow: false,
      bidiOverflow: false,
      bidiUnderflow: false,
      response: 0,
      status: 0,
      itt: 1,
      snackTag: 0,
      statSN: 2,
      expCmdSN: 3,
      maxCmdSN: 4,
      expDataSN: 0,
      bidiResidualCount: 0,
      residualCount: 0,
      data: EMPTY,
    });
  });

  it("senseDataSegment prefixes the 2-byte SenseLength (RFC 7143 11.4.7)", () => {
    const seg = senseDataSegment(pattern(18));
    expect(seg).toHaveLength(20);
    expect(seg.readUInt16BE(0)).toBe(18);
    expect(seg.subarray(2)).toEqual(pattern(18));
    expect(senseDataSegment(EMPTY)).toHaveLength(0);
    expect(senseOf(EMPTY)).toHaveLength(0);
  });

  it("Data-In without status", () => {
    const pdu = encodeDataIn(dataInBase);
    expect(pdu.bhs[1]).toBe(0x00);
    expect(roundTrip(pdu, decodeDataIn)).toEqual(dataInBase);
  });

  it("Data-In with status (phase collapse) and residuals", () => {
    const params = {
      ...dataInBase,
      final: true,
      statusPresent: true,
      status: 0x00,
      overflow: false,
      underflow: true,
      residualCount: 4096,
      statSN: 0x12345678,
    };
    const pdu = encodeDataIn(params);
    expect(pdu.bhs[1]).toBe(0x80 | 0x02 | 0x01);
    expect(roundTrip(pdu, decodeDataIn)).toEqual(params);
  });

  it("Data-In without S sends StatSN, status and residuals as reserved zeros", () => {
    const decoded = roundTrip(
      encodeDataIn({
        ...dataInBase,
        final: true,
        status: 2,
        statSN: 99,
        underflow: true,
        residualCount: 5,
      }),
      decodeDataIn,
    );
    expect(decoded.statusPresent).toBe(false);
    expect([decoded.status, decoded.statSN, decoded.residualCount]).toEqual([0, 0, 0]);
    expect(decoded.underflow).toBe(false);
  });

  it("Data-In refuses S without F", () => {
    expect(() => encodeDataIn({ ...dataInBase, statusPresent: true })).toThrow(RangeError);
  });

  it("Data-In does not copy its payload (it may be a view of a large read buffer)", () => {
    const read = pattern(1 << 16);
    const slice = read.subarray(4096, 8192);
    const pdu = encodeDataIn({ ...dataInBase, data: slice, bufferOffset: 4096 });
    expect(pdu.data).toBe(slice);
    expect(dataSegmentLengthOf(pdu.bhs)).toBe(4096);
  });

  it("Data-In defaults: TTT reserved, LUN zero", () => {
    const decoded = roundTrip(
      encodeDataIn({
        final: true,
        itt: 1,
        expCmdSN: 2,
        maxCmdSN: 3,
        dataSN: 0,
        bufferOffset: 0,
        data: pattern(1),
      }),
      decodeDataIn,
    );
    expect(decoded.ttt).toBe(RESERVED_TAG);
    expect(decoded.lun).toEqual(Buffer.alloc(8));
  });

  it("R2T", () => {
    const pdu = encodeR2T(r2tBase);
    expect(pdu.bhs[1]).toBe(0x80);
    expect(pdu.data).toHaveLength(0);
    expect(roundTrip(pdu, decodeR2T)).toEqual(r2tBase);
  });

  it("NOP-In answering a ping, with ping data", () => {
    const params = {
      lun: lunField(0),
      itt: 0x42,
      ttt: RESERVED_TAG,
      statSN: 5,
      expCmdSN: 6,
      maxCmdSN: 7,
      data: pattern(3),
    };
    expect(roundTrip(encodeNopIn(params), decodeNopIn)).toEqual(params);
  });

  it("Login Response with T, CSG and NSG", () => {
    const pdu = encodeLoginResponse(loginResponseBase);
    // T | CSG=1 << 2 | NSG=3
    expect(pdu.bhs[1]).toBe(0x80 | 0x04 | 0x03);
    expect(roundTrip(pdu, decodeLoginResponse)).toEqual(loginResponseBase);
  });

  it("Login Response with an error status and C", () => {
    const params = {
      ...loginResponseBase,
      transit: false,
      cont: true,
      csg: LoginStage.Security,
      nsg: LoginStage.Security,
      statusClass: LoginStatus.AuthenticationFailure.statusClass,
      statusDetail: LoginStatus.AuthenticationFailure.statusDetail,
      data: EMPTY,
    };
    const pdu = encodeLoginResponse(params);
    expect(pdu.bhs[1]).toBe(0x40);
    expect([pdu.bhs[36], pdu.bhs[37]]).toEqual([0x02, 0x01]);
    expect(roundTrip(pdu, decodeLoginResponse)).toEqual(params);
  });

  it("Text Response", () => {
    expect(roundTrip(encodeTextResponse(textResponseBase), decodeTextResponse)).toEqual(
      textResponseBase,
    );
    const cont = { ...textResponseBase, final: false, cont: true, ttt: 0x77 };
    const pdu = encodeTextResponse(cont);
    expect(pdu.bhs[1]).toBe(0x40);
    expect(roundTrip(pdu, decodeTextResponse)).toEqual(cont);
  });

  it("Logout Response", () => {
    const params = {
      response: 2,
      itt: 3,
      statSN: 4,
      expCmdSN: 5,
      maxCmdSN: 6,
      time2Wait: 2,
      time2Retain: 20,
    };
    const pdu = encodeLogoutResponse(params);
    expect(pdu.bhs[1]).toBe(0x80);
    expect(roundTrip(pdu, decodeLogoutResponse)).toEqual(params);
  });

  it("Task Management Function Response", () => {
    for (const response of Object.values(TmfResponse)) {
      const params = { response, itt: 0xabc, statSN: 1, expCmdSN: 2, maxCmdSN: 3 };
      expect(roundTrip(encodeTaskMgmtResponse(params), decodeTaskMgmtResponse)).toEqual(params);
    }
  });

  it("Reject carries the rejected BHS and the reserved ITT", () => {
    const rejected = encodeNopOut({ itt: 5, cmdSN: 6, expStatSN: 7 }).bhs;
    const params = {
      reason: RejectReason.DataDigestError,
      statSN: 8,
      expCmdSN: 9,
      maxCmdSN: 10,
      dataSN: 0,
      data: rejected,
    };
    const pdu = encodeReject(params);
    expect(pdu.bhs.readUInt32BE(16)).toBe(RESERVED_TAG);
    expect(pdu.data).toBe(rejected);
    expect(roundTrip(pdu, decodeReject)).toEqual(params);
  });

  it("Asynchronous Message", () => {
    const params = {
      lun: lunField(2),
      statSN: 1,
      expCmdSN: 2,
      maxCmdSN: 3,
      asyncEvent: AsyncEvent.LogoutRequest,
      asyncVCode: 0,
      parameter1: 0,
      parameter2: 0,
      parameter3: 30,
      data: EMPTY,
    };
    const pdu = encodeAsyncMessage(params);
    expect(pdu.bhs.readUInt32BE(16)).toBe(RESERVED_TAG);
    expect(roundTrip(pdu, decodeAsyncMessage)).toEqual(params);
  });
});

// ---------------------------------------------------------------------------------------------
// Round trips, initiator PDUs: encoded by the initiator side, decoded here
// ---------------------------------------------------------------------------------------------

describe("round trips: initiator PDUs", () => {
  const scsiCommand = {
    immediate: false,
    final: true,
    read: false,
    write: true,
    taskAttribute: 1,
    lun: lunField(4),
    itt: 0x10203040,
    edtl: 1 << 20,
    cmdSN: 0xfffffffe,
    expStatSN: 3,
    cdb: Buffer.from([0x8a, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0x08, 0, 0, 0]),
    data: pattern(4),
  };

  it("SCSI Command with a 16-byte CDB and immediate data", () => {
    const pdu = encodeScsiCommand(scsiCommand);
    expect(pdu.bhs[1]).toBe(0x80 | 0x20 | 0x01);
    expect(pdu.ahs).toBeUndefined();
    const decoded = roundTrip(pdu, decodeScsiCommand);
    expect(decoded).toEqual({ ...scsiCommand, bidiReadEdtl: undefined });
  });

  it("SCSI Command flags: I, R, W, ATTR", () => {
    const decoded = roundTrip(
      encodeScsiCommand({
        ...scsiCommand,
        immediate: true,
        final: false,
        read: true,
        write: true,
        taskAttribute: 4,
      }),
      decodeScsiCommand,
    );
    expect([decoded.immediate, decoded.final, decoded.read, decoded.write]).toEqual([
      true,
      false,
      true,
      true,
    ]);
    expect(decoded.taskAttribute).toBe(4);
  });

  it("SCSI Command with a short CDB: the BHS field is zero padded to 16 bytes", () => {
    const cdb = Buffer.from([0x12, 0, 0, 0, 36, 0]);
    const decoded = roundTrip(encodeScsiCommand({ ...scsiCommand, cdb }), decodeScsiCommand);
    expect(decoded.cdb).toEqual(Buffer.concat([cdb, Buffer.alloc(10)]));
  });

  it("SCSI Command with an Extended CDB AHS (RFC 7143 11.2.2.3)", () => {
    for (const length of [17, 18, 19, 20, 32, 260]) {
      const cdb = pattern(length, length);
      const pdu = encodeScsiCommand({ ...scsiCommand, cdb });
      const ahs = pdu.ahs!;
      // AHSLength = CDB length - 15; the AHS is padded to 4 bytes.
      expect(ahs.readUInt16BE(0)).toBe(length - 15);
      expect(ahs[2]).toBe(AhsType.ExtendedCdb);
      expect(ahs.length % 4).toBe(0);
      expect(ahs.length).toBe((3 + (length - 15) + 3) & ~3);
      expect(totalAhsLengthOf(pdu.bhs)).toBe(ahs.length);
      expect(ahsIsWellFormed(ahs)).toBe(true);
      expect(roundTrip(pdu, decodeScsiCommand).cdb).toEqual(cdb);
    }
  });

  it("SCSI Command with an extended CDB and a Bidirectional Read EDTL AHS", () => {
    const cdb = pattern(24);
    const pdu = encodeScsiCommand({ ...scsiCommand, cdb, bidiReadEdtl: 0xc0ffee });
    const decoded = roundTrip(pdu, decodeScsiCommand);
    expect(decoded.cdb).toEqual(cdb);
    expect(decoded.bidiReadEdtl).toBe(0xc0ffee);
    expect(findAhs(pdu.ahs!, AhsType.BidiReadEdtl)).toHaveLength(5);
  });

  it("SCSI Data-Out", () => {
    const params = {
      final: true,
      lun: lunField(4),
      itt: 1,
      ttt: 0x9999,
      expStatSN: 2,
      dataSN: 3,
      bufferOffset: 8192,
      data: pattern(8192),
    };
    const pdu = encodeDataOut(params);
    expect(pdu.bhs[1]).toBe(0x80);
    expect(pdu.data).toBe(params.data);
    expect(roundTrip(pdu, decodeDataOut)).toEqual(params);
  });

  it("NOP-Out", () => {
    const params = {
      immediate: true,
      lun: lunField(0),
      itt: 0x31,
      ttt: RESERVED_TAG,
      cmdSN: 10,
      expStatSN: 11,
      data: pattern(7),
    };
    expect(roundTrip(encodeNopOut(params), decodeNopOut)).toEqual(params);
  });

  it("Login Request (always immediate)", () => {
    const params = {
      transit: true,
      cont: false,
      csg: LoginStage.Security,
      nsg: LoginStage.Operational,
      versionMax: 0,
      versionMin: 0,
      isid: ISID,
      tsih: 0,
      itt: 0,
      cid: 1,
      cmdSN: 0x7fffffff,
      expStatSN: 0,
      data: Buffer.from("InitiatorName=iqn.2024-01.test:i\0SessionType=Normal\0"),
    };
    const pdu = encodeLoginRequest(params);
    expect(pdu.bhs[0]).toBe(0x43);
    expect(pdu.bhs[1]).toBe(0x80 | 0x01);
    expect(roundTrip(pdu, decodeLoginRequest)).toEqual(params);
  });

  it("Text Request", () => {
    const params = {
      immediate: true,
      final: true,
      cont: false,
      lun: lunField(0),
      itt: 2,
      ttt: RESERVED_TAG,
      cmdSN: 3,
      expStatSN: 4,
      data: Buffer.from("SendTargets=All\0"),
    };
    expect(roundTrip(encodeTextRequest(params), decodeTextRequest)).toEqual(params);
  });

  it("Logout Request", () => {
    for (const reasonCode of Object.values(LogoutReason)) {
      const params = { immediate: true, reasonCode, itt: 5, cid: 2, cmdSN: 6, expStatSN: 7 };
      const pdu = encodeLogoutRequest(params);
      expect(pdu.bhs[1]).toBe(0x80 | reasonCode);
      expect(roundTrip(pdu, decodeLogoutRequest)).toEqual(params);
    }
  });

  it("Task Management Function Request", () => {
    for (const fn of Object.values(TmfFunction)) {
      const params = {
        immediate: true,
        function: fn,
        lun: lunField(1),
        itt: 8,
        rtt: fn === TmfFunction.AbortTask ? 0x123 : RESERVED_TAG,
        cmdSN: 9,
        expStatSN: 10,
        refCmdSN: 11,
        expDataSN: 12,
      };
      const pdu = encodeTaskMgmtRequest(params);
      expect(pdu.bhs[1]).toBe(0x80 | fn);
      expect(roundTrip(pdu, decodeTaskMgmtRequest)).toEqual(params);
    }
  });

  it("SNACK", () => {
    for (const type of Object.values(SnackType)) {
      const params = {
        type,
        lun: lunField(0),
        itt: 13,
        ttt: RESERVED_TAG,
        expStatSN: 14,
        begRun: 15,
        runLength: 16,
      };
      const pdu = encodeSnack(params);
      expect(pdu.bhs[1]).toBe(0x80 | type);
      expect(roundTrip(pdu, decodeSnack)).toEqual(params);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// AHS parsing
// ---------------------------------------------------------------------------------------------

describe("AHS parsing (RFC 7143 11.2.2)", () => {
  function ahs(...entries: [type: number, specific: Buffer][]): Buffer {
    return Buffer.concat(
      entries.map(([type, specific]) => {
        const b = Buffer.alloc((3 + specific.length + 3) & ~3);
        b.writeUInt16BE(specific.length, 0);
        b[2] = type;
        specific.copy(b, 3);
        return b;
      }),
    );
  }

  it("finds each AHS by type in a sequence", () => {
    const area = ahs([60, pattern(1)], [AhsType.ExtendedCdb, pattern(5)], [2, pattern(5, 9)]);
    expect(ahsIsWellFormed(area)).toBe(true);
    expect(findAhs(area, AhsType.ExtendedCdb)).toEqual(pattern(5));
    expect(findAhs(area, AhsType.BidiReadEdtl)).toEqual(pattern(5, 9));
    expect(findAhs(area, 61)).toBeUndefined();
    expect(ahsIsWellFormed(EMPTY)).toBe(true);
  });

  it("rejects an AHS whose length runs past the area", () => {
    const area = ahs([AhsType.ExtendedCdb, pattern(5)]);
    area.writeUInt16BE(9, 0);
    expect(ahsIsWellFormed(area)).toBe(false);
    expect(findAhs(area, AhsType.ExtendedCdb)).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------
// Property-based round trips
// ---------------------------------------------------------------------------------------------

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u8 = fc.integer({ min: 0, max: 0xff });
const bool = fc.boolean();
const bytes = (min: number, max: number) =>
  fc.uint8Array({ minLength: min, maxLength: max }).map((a) => Buffer.from(a));
const lun = bytes(8, 8);
const data = bytes(0, 40);
const stage = fc.constantFrom(0, 1, 3);

describe("property: every encoder/decoder pair round-trips random fields", () => {
  /** One property: `check` runs on every generated value. */
  function prop<T>(name: string, arbitrary: fc.Arbitrary<T>, check: (p: T) => void): void {
    it(name, () => {
      fc.assert(fc.property(arbitrary, check), { numRuns: 200 });
    });
  }

  prop(
    "SCSI Command",
    fc.record({
      immediate: bool,
      final: bool,
      read: bool,
      write: bool,
      taskAttribute: fc.integer({ min: 0, max: 7 }),
      lun,
      itt: u32,
      edtl: u32,
      cmdSN: u32,
      expStatSN: u32,
      cdb: bytes(16, 16),
      data,
    }),
    (p) => {
      expect(roundTrip(encodeScsiCommand(p), decodeScsiCommand)).toEqual(p);
    },
  );
  prop(
    "SCSI Command, extended CDB",
    fc.record({ itt: u32, edtl: u32, cmdSN: u32, expStatSN: u32, cdb: bytes(17, 300) }),
    (p) => {
      expect(roundTrip(encodeScsiCommand(p), decodeScsiCommand).cdb).toEqual(p.cdb);
    },
  );
  prop(
    "Data-Out",
    fc.record({
      final: bool,
      lun,
      itt: u32,
      ttt: u32,
      expStatSN: u32,
      dataSN: u32,
      bufferOffset: u32,
      data,
    }),
    (p) => {
      expect(roundTrip(encodeDataOut(p), decodeDataOut)).toEqual(p);
    },
  );
  prop(
    "NOP-Out",
    fc.record({ immediate: bool, lun, itt: u32, ttt: u32, cmdSN: u32, expStatSN: u32, data }),
    (p) => {
      expect(roundTrip(encodeNopOut(p), decodeNopOut)).toEqual(p);
    },
  );
  prop(
    "Login Request",
    fc.record({
      transit: bool,
      cont: bool,
      csg: stage,
      nsg: stage,
      versionMax: u8,
      versionMin: u8,
      isid: bytes(6, 6),
      tsih: u16,
      itt: u32,
      cid: u16,
      cmdSN: u32,
      expStatSN: u32,
      data,
    }),
    (p) => {
      expect(roundTrip(encodeLoginRequest(p), decodeLoginRequest)).toEqual(p);
    },
  );
  prop(
    "Text Request",
    fc.record({
      immediate: bool,
      final: bool,
      cont: bool,
      lun,
      itt: u32,
      ttt: u32,
      cmdSN: u32,
      expStatSN: u32,
      data,
    }),
    (p) => {
      expect(roundTrip(encodeTextRequest(p), decodeTextRequest)).toEqual(p);
    },
  );
  prop(
    "Logout Request",
    fc.record({
      immediate: bool,
      reasonCode: fc.integer({ min: 0, max: 0x7f }),
      itt: u32,
      cid: u16,
      cmdSN: u32,
      expStatSN: u32,
    }),
    (p) => {
      expect(roundTrip(encodeLogoutRequest(p), decodeLogoutRequest)).toEqual(p);
    },
  );
  prop(
    "Task Management Request",
    fc.record({
      immediate: bool,
      function: fc.integer({ min: 0, max: 0x7f }),
      lun,
      itt: u32,
      rtt: u32,
      cmdSN: u32,
      expStatSN: u32,
      refCmdSN: u32,
      expDataSN: u32,
    }),
    (p) => {
      expect(roundTrip(encodeTaskMgmtRequest(p), decodeTaskMgmtRequest)).toEqual(p);
    },
  );
  prop(
    "SNACK",
    fc.record({
      type: fc.integer({ min: 0, max: 15 }),
      lun,
      itt: u32,
      ttt: u32,
      expStatSN: u32,
      begRun: u32,
      runLength: u32,
    }),
    (p) => {
      expect(roundTrip(encodeSnack(p), decodeSnack)).toEqual(p);
    },
  );
  prop(
    "SCSI Response",
    fc.record({
      overflow: bool,
      underflow: bool,
      bidiOverflow: bool,
      bidiUnderflow: bool,
      response: u8,
      status: u8,
      itt: u32,
      snackTag: u32,
      statSN: u32,
      expCmdSN: u32,
      maxCmdSN: u32,
      expDataSN: u32,
      bidiResidualCount: u32,
      residualCount: u32,
      data,
    }),
    (p) => {
      expect(roundTrip(encodeScsiResponse(p), decodeScsiResponse)).toEqual(p);
    },
  );
  prop(
    "Data-In",
    fc.record({
      final: bool,
      acknowledge: bool,
      statusPresent: bool,
      status: u8,
      overflow: bool,
      underflow: bool,
      residualCount: u32,
      lun,
      itt: u32,
      ttt: u32,
      statSN: u32,
      expCmdSN: u32,
      maxCmdSN: u32,
      dataSN: u32,
      bufferOffset: u32,
      data,
    }),
    (p) => {
      // S requires F; without S the status fields are reserved (sent as zero).
      const q = p.statusPresent
        ? { ...p, final: true }
        : { ...p, status: 0, statSN: 0, residualCount: 0, overflow: false, underflow: false };
      expect(roundTrip(encodeDataIn(q), decodeDataIn)).toEqual(q);
    },
  );
  prop(
    "R2T",
    fc.record({
      lun,
      itt: u32,
      ttt: u32,
      statSN: u32,
      expCmdSN: u32,
      maxCmdSN: u32,
      r2tSN: u32,
      bufferOffset: u32,
      desiredDataTransferLength: u32,
    }),
    (p) => {
      expect(roundTrip(encodeR2T(p), decodeR2T)).toEqual(p);
    },
  );
  prop(
    "NOP-In",
    fc.record({ lun, itt: u32, ttt: u32, statSN: u32, expCmdSN: u32, maxCmdSN: u32, data }),
    (p) => {
      expect(roundTrip(encodeNopIn(p), decodeNopIn)).toEqual(p);
    },
  );
  prop(
    "Login Response",
    fc.record({
      transit: bool,
      cont: bool,
      csg: stage,
      nsg: stage,
      versionMax: u8,
      versionActive: u8,
      isid: bytes(6, 6),
      tsih: u16,
      itt: u32,
      statSN: u32,
      expCmdSN: u32,
      maxCmdSN: u32,
      statusClass: u8,
      statusDetail: u8,
      data,
    }),
    (p) => {
      expect(roundTrip(encodeLoginResponse(p), decodeLoginResponse)).toEqual(p);
    },
  );
  prop(
    "Text Response",
    fc.record({
      final: bool,
      cont: bool,
      lun,
      itt: u32,
      ttt: u32,
      statSN: u32,
      expCmdSN: u32,
      maxCmdSN: u32,
      data,
    }),
    (p) => {
      expect(roundTrip(encodeTextResponse(p), decodeTextResponse)).toEqual(p);
    },
  );
  prop(
    "Logout Response",
    fc.record({
      response: u8,
      itt: u32,
      statSN: u32,
      expCmdSN: u32,
      maxCmdSN: u32,
      time2Wait: u16,
      time2Retain: u16,
    }),
    (p) => {
      expect(roundTrip(encodeLogoutResponse(p), decodeLogoutResponse)).toEqual(p);
    },
  );
  prop(
    "Task Management Response",
    fc.record({ response: u8, itt: u32, statSN: u32, expCmdSN: u32, maxCmdSN: u32 }),
    (p) => {
      expect(roundTrip(encodeTaskMgmtResponse(p), decodeTaskMgmtResponse)).toEqual(p);
    },
  );
  prop(
    "Reject",
    fc.record({
      reason: u8,
      statSN: u32,
      expCmdSN: u32,
      maxCmdSN: u32,
      dataSN: u32,
      data: bytes(48, 48),
    }),
    (p) => {
      expect(roundTrip(encodeReject(p), decodeReject)).toEqual(p);
    },
  );
  prop(
    "Asynchronous Message",
    fc.record({
      lun,
      statSN: u32,
      expCmdSN: u32,
      maxCmdSN: u32,
      asyncEvent: u8,
      asyncVCode: u8,
      parameter1: u16,
      parameter2: u16,
      parameter3: u16,
      data,
    }),
    (p) => {
      expect(roundTrip(encodeAsyncMessage(p), decodeAsyncMessage)).toEqual(p);
    },
  );
});
