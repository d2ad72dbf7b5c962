/**
 * The initiator side of the PDU codec: encoders for the PDUs an initiator sends and decoders
 * for the PDUs a target sends. The target never uses these; they exist so that tests can play
 * the initiator Buffer-in/Buffer-out (encode a request, feed it to the target, decode what the
 * target wrote). Layouts are RFC 7143 section 11, as in pdu.ts.
 *
 * Each encoder takes the same shape its pdu.ts decoder returns (some fields optional), and each
 * decoder returns the same field names as the pdu.ts encoder's params, so a round trip compares
 * with `toEqual`.
 */
import { AhsType, Opcode, RESERVED_TAG } from "./constants.js";
import {
  bit,
  type DataOutPdu,
  EMPTY,
  initiatorByte0,
  type LoginRequestPdu,
  type LogoutRequestPdu,
  type NopOutPdu,
  newBhs,
  type OutPdu,
  type RawPdu,
  type SnackPdu,
  type TaskMgmtRequestPdu,
  type TextRequestPdu,
  writeLun,
} from "./pdu.js";

/** Makes the keys K of T optional. */
type Optional<T, K extends keyof T> = Omit<T, K> & Partial<Pick<T, K>>;

/** The PDU as the reader would deliver it, without going through framing. */
export function toRawPdu(pdu: OutPdu): RawPdu {
  return { bhs: pdu.bhs, ahs: pdu.ahs ?? EMPTY, data: pdu.data };
}

// ---------------------------------------------------------------------------------------------
// Initiator encoders
// ---------------------------------------------------------------------------------------------

/** RFC 7143 11.3: SCSI Command. */
export interface ScsiCommandParams {
  readonly immediate?: boolean;
  /** Default true: no unsolicited Data-Out follows. */
  readonly final?: boolean;
  readonly read?: boolean;
  readonly write?: boolean;
  /** Default 1, simple. */
  readonly taskAttribute?: number;
  readonly lun?: Buffer;
  readonly itt: number;
  readonly edtl: number;
  readonly cmdSN: number;
  readonly expStatSN: number;
  /** Up to 16 bytes go in the BHS (zero padded); the rest in an Extended CDB AHS. */
  readonly cdb: Buffer;
  /** Adds a Bidirectional Read Expected Data Transfer Length AHS (RFC 7143 11.2.2.4). */
  readonly bidiReadEdtl?: number;
  /** Immediate data. */
  readonly data?: Buffer;
}

export function encodeScsiCommand(p: ScsiCommandParams): OutPdu {
  const data = p.data ?? EMPTY;
  const bhs = newBhs(
    initiatorByte0(Opcode.ScsiCommand, p.immediate),
    bit(p.final ?? true, 0x80) |
      bit(p.read, 0x40) |
      bit(p.write, 0x20) |
      ((p.taskAttribute ?? 1) & 0x07),
    data.length,
  );
  writeLun(bhs, p.lun);
  bhs.writeUInt32BE(p.itt, 16);
  bhs.writeUInt32BE(p.edtl, 20);
  bhs.writeUInt32BE(p.cmdSN, 24);
  bhs.writeUInt32BE(p.expStatSN, 28);
  p.cdb.copy(bhs, 32, 0, Math.min(16, p.cdb.length));

  const parts: Buffer[] = [];
  if (p.cdb.length > 16) {
    // RFC 7143 11.2.2.3: AHSLength = CDB length - 15 (a reserved byte, then the extra bytes).
    const extra = p.cdb.length - 16;
    const ahs = Buffer.alloc((4 + extra + 3) & ~3);
    ahs.writeUInt16BE(extra + 1, 0);
    ahs[2] = AhsType.ExtendedCdb;
    p.cdb.copy(ahs, 4, 16);
    parts.push(ahs);
  }
  if (p.bidiReadEdtl !== undefined) {
    // RFC 7143 11.2.2.4: AHSLength 5 (a reserved byte, then the 32-bit length).
    const ahs = Buffer.alloc(8);
    ahs.writeUInt16BE(5, 0);
    ahs[2] = AhsType.BidiReadEdtl;
    ahs.writeUInt32BE(p.bidiReadEdtl, 4);
    parts.push(ahs);
  }
  if (parts.length === 0) return { bhs, data };
  const ahs = Buffer.concat(parts);
  if (ahs.length > 255 * 4) throw new RangeError(`AHS of ${ahs.length} bytes is too long`);
  bhs[4] = ahs.length >>> 2;
  return { bhs, ahs, data };
}

/** RFC 7143 11.7: SCSI Data-Out. */
export type DataOutParams = Optional<DataOutPdu, "lun">;

export function encodeDataOut(p: DataOutParams): OutPdu {
  const bhs = newBhs(Opcode.DataOut, bit(p.final, 0x80), p.data.length);
  writeLun(bhs, p.lun);
  bhs.writeUInt32BE(p.itt, 16);
  bhs.writeUInt32BE(p.ttt, 20);
  bhs.writeUInt32BE(p.expStatSN, 28);
  bhs.writeUInt32BE(p.dataSN, 36);
  bhs.writeUInt32BE(p.bufferOffset, 40);
  return { bhs, data: p.data };
}

/** RFC 7143 11.18: NOP-Out. `ttt` defaults to 0xffffffff (a ping, not a reply to a NOP-In). */
export type NopOutParams = Optional<NopOutPdu, "immediate" | "lun" | "ttt" | "data">;

export function encodeNopOut(p: NopOutParams): OutPdu {
  const data = p.data ?? EMPTY;
  const bhs = newBhs(initiatorByte0(Opcode.NopOut, p.immediate), 0x80, data.length);
  writeLun(bhs, p.lun);
  bhs.writeUInt32BE(p.itt, 16);
  bhs.writeUInt32BE(p.ttt ?? RESERVED_TAG, 20);
  bhs.writeUInt32BE(p.cmdSN, 24);
  bhs.writeUInt32BE(p.expStatSN, 28);
  return { bhs, data };
}

/** RFC 7143 11.12: Login Request (always sent with the I bit set). */
export type LoginRequestParams = Optional<
  LoginRequestPdu,
  "cont" | "versionMax" | "versionMin" | "tsih" | "cid" | "data"
>;

export function encodeLoginRequest(p: LoginRequestParams): OutPdu {
  const data = p.data ?? EMPTY;
  const bhs = newBhs(
    initiatorByte0(Opcode.LoginRequest, true),
    bit(p.transit, 0x80) | bit(p.cont, 0x40) | ((p.csg & 0x03) << 2) | (p.nsg & 0x03),
    data.length,
  );
  bhs[2] = p.versionMax ?? 0;
  bhs[3] = p.versionMin ?? 0;
  if (p.isid.length !== 6) throw new RangeError(`ISID must be 6 bytes, got ${p.isid.length}`);
  p.isid.copy(bhs, 8, 0, 6);
  bhs.writeUInt16BE(p.tsih ?? 0, 14);
  bhs.writeUInt32BE(p.itt, 16);
  bhs.writeUInt16BE(p.cid ?? 0, 20);
  bhs.writeUInt32BE(p.cmdSN, 24);
  bhs.writeUInt32BE(p.expStatSN, 28);
  return { bhs, data };
}

/** RFC 7143 11.10: Text Request. `ttt` defaults to 0xffffffff (a new request). */
export type TextRequestParams = Optional<
  TextRequestPdu,
  "immediate" | "final" | "cont" | "lun" | "ttt" | "data"
>;

export function encodeTextRequest(p: TextRequestParams): OutPdu {
  const data = p.data ?? EMPTY;
  const bhs = newBhs(
    initiatorByte0(Opcode.TextRequest, p.immediate),
    bit(p.final ?? true, 0x80) | bit(p.cont, 0x40),
    data.length,
  );
  writeLun(bhs, p.lun);
  bhs.writeUInt32BE(p.itt, 16);
  bhs.writeUInt32BE(p.ttt ?? RESERVED_TAG, 20);
  bhs.writeUInt32BE(p.cmdSN, 24);
  bhs.writeUInt32BE(p.expStatSN, 28);
  return { bhs, data };
}

/** RFC 7143 11.14: Logout Request. */
export type LogoutRequestParams = Optional<LogoutRequestPdu, "immediate" | "cid">;

export function encodeLogoutRequest(p: LogoutRequestParams): OutPdu {
  const bhs = newBhs(
    initiatorByte0(Opcode.LogoutRequest, p.immediate),
    0x80 | (p.reasonCode & 0x7f),
    0,
  );
  bhs.writeUInt32BE(p.itt, 16);
  bhs.writeUInt16BE(p.cid ?? 0, 20);
  bhs.writeUInt32BE(p.cmdSN, 24);
  bhs.writeUInt32BE(p.expStatSN, 28);
  return { bhs, data: EMPTY };
}

/** RFC 7143 11.5: Task Management Function Request. `rtt` defaults to 0xffffffff. */
export type TaskMgmtRequestParams = Optional<
  TaskMgmtRequestPdu,
  "immediate" | "lun" | "rtt" | "refCmdSN" | "expDataSN"
>;

export function encodeTaskMgmtRequest(p: TaskMgmtRequestParams): OutPdu {
  const bhs = newBhs(
    initiatorByte0(Opcode.TaskMgmtRequest, p.immediate),
    0x80 | (p.function & 0x7f),
    0,
  );
  writeLun(bhs, p.lun);
  bhs.writeUInt32BE(p.itt, 16);
  bhs.writeUInt32BE(p.rtt ?? RESERVED_TAG, 20);
  bhs.writeUInt32BE(p.cmdSN, 24);
  bhs.writeUInt32BE(p.expStatSN, 28);
  bhs.writeUInt32BE(p.refCmdSN ?? 0, 32);
  bhs.writeUInt32BE(p.expDataSN ?? 0, 36);
  return { bhs, data: EMPTY };
}

/** RFC 7143 11.16: SNACK Request. */
export type SnackParams = Optional<SnackPdu, "lun" | "ttt">;

export function encodeSnack(p: SnackParams): OutPdu {
  const bhs = newBhs(Opcode.Snack, 0x80 | (p.type & 0x0f), 0);
  writeLun(bhs, p.lun);
  bhs.writeUInt32BE(p.itt, 16);
  bhs.writeUInt32BE(p.ttt ?? RESERVED_TAG, 20);
  bhs.writeUInt32BE(p.expStatSN, 28);
  bhs.writeUInt32BE(p.begRun, 40);
  bhs.writeUInt32BE(p.runLength, 44);
  return { bhs, data: EMPTY };
}

// ---------------------------------------------------------------------------------------------
// Decoders for the target PDUs
// ---------------------------------------------------------------------------------------------

/** RFC 7143 11.4: SCSI Response, as decoded. */
export interface ScsiResponsePdu {
  readonly overflow: boolean;
  readonly underflow: boolean;
  readonly bidiOverflow: boolean;
  readonly bidiUnderflow: boolean;
  readonly response: number;
  readonly status: number;
  readonly itt: number;
  readonly snackTag: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  readonly expDataSN: number;
  readonly bidiResidualCount: number;
  readonly residualCount: number;
  /** The data segment as sent (SenseLength prefix included): see senseOf. */
  readonly data: Buffer;
}

export function decodeScsiResponse(pdu: RawPdu): ScsiResponsePdu {
  const bhs = pdu.bhs;
  const b1 = bhs[1]!;
  return {
    overflow: (b1 & 0x04) !== 0,
    underflow: (b1 & 0x02) !== 0,
    bidiOverflow: (b1 & 0x10) !== 0,
    bidiUnderflow: (b1 & 0x08) !== 0,
    response: bhs[2]!,
    status: bhs[3]!,
    itt: bhs.readUInt32BE(16),
    snackTag: bhs.readUInt32BE(20),
    statSN: bhs.readUInt32BE(24),
    expCmdSN: bhs.readUInt32BE(28),
    maxCmdSN: bhs.readUInt32BE(32),
    expDataSN: bhs.readUInt32BE(36),
    bidiResidualCount: bhs.readUInt32BE(40),
    residualCount: bhs.readUInt32BE(44),
    data: pdu.data,
  };
}

/**
 * The sense data in a SCSI Response data segment (RFC 7143 11.4.7: a 2-byte SenseLength, then
 * that many bytes); empty when there is none.
 */
export function senseOf(data: Buffer): Buffer {
  if (data.length < 2) return EMPTY;
  const length = data.readUInt16BE(0);
  return data.subarray(2, 2 + length);
}

/** RFC 7143 11.7: SCSI Data-In, as decoded. */
export interface DataInPdu {
  readonly final: boolean;
  readonly acknowledge: boolean;
  /** The S bit. */
  readonly statusPresent: boolean;
  /** The status byte (0 unless `statusPresent`). */
  readonly status: number;
  readonly overflow: boolean;
  readonly underflow: boolean;
  readonly residualCount: number;
  readonly lun: Buffer;
  readonly itt: number;
  readonly ttt: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  readonly dataSN: number;
  readonly bufferOffset: number;
  readonly data: Buffer;
}

export function decodeDataIn(pdu: RawPdu): DataInPdu {
  const bhs = pdu.bhs;
  const b1 = bhs[1]!;
  return {
    final: (b1 & 0x80) !== 0,
    acknowledge: (b1 & 0x40) !== 0,
    statusPresent: (b1 & 0x01) !== 0,
    status: bhs[3]!,
    overflow: (b1 & 0x04) !== 0,
    underflow: (b1 & 0x02) !== 0,
    residualCount: bhs.readUInt32BE(44),
    lun: bhs.subarray(8, 16),
    itt: bhs.readUInt32BE(16),
    ttt: bhs.readUInt32BE(20),
    statSN: bhs.readUInt32BE(24),
    expCmdSN: bhs.readUInt32BE(28),
    maxCmdSN: bhs.readUInt32BE(32),
    dataSN: bhs.readUInt32BE(36),
    bufferOffset: bhs.readUInt32BE(40),
    data: pdu.data,
  };
}

/** RFC 7143 11.8: R2T, as decoded. */
export interface R2TPdu {
  readonly lun: Buffer;
  readonly itt: number;
  readonly ttt: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  readonly r2tSN: number;
  readonly bufferOffset: number;
  readonly desiredDataTransferLength: number;
}

export function decodeR2T(pdu: RawPdu): R2TPdu {
  const bhs = pdu.bhs;
  return {
    lun: bhs.subarray(8, 16),
    itt: bhs.readUInt32BE(16),
    ttt: bhs.readUInt32BE(20),
    statSN: bhs.readUInt32BE(24),
    expCmdSN: bhs.readUInt32BE(28),
    maxCmdSN: bhs.readUInt32BE(32),
    r2tSN: bhs.readUInt32BE(36),
    bufferOffset: bhs.readUInt32BE(40),
    desiredDataTransferLength: bhs.readUInt32BE(44),
  };
}

/** RFC 7143 11.19: NOP-In, as decoded. */
export interface NopInPdu {
  readonly lun: Buffer;
  readonly itt: number;
  readonly ttt: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  readonly data: Buffer;
}

export function decodeNopIn(pdu: RawPdu): NopInPdu {
  const bhs = pdu.bhs;
  return {
    lun: bhs.subarray(8, 16),
    itt: bhs.readUInt32BE(16),
    ttt: bhs.readUInt32BE(20),
    statSN: bhs.readUInt32BE(24),
    expCmdSN: bhs.readUInt32BE(28),
    maxCmdSN: bhs.readUInt32BE(32),
    data: pdu.data,
  };
}

/** RFC 7143 11.13: Login Response, as decoded. */
export interface LoginResponsePdu {
  readonly transit: boolean;
  readonly cont: boolean;
  readonly csg: number;
  readonly nsg: number;
  readonly versionMax: number;
  readonly versionActive: number;
  readonly isid: Buffer;
  readonly tsih: number;
  readonly itt: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  readonly statusClass: number;
  readonly statusDetail: number;
  readonly data: Buffer;
}

export function decodeLoginResponse(pdu: RawPdu): LoginResponsePdu {
  const bhs = pdu.bhs;
  const b1 = bhs[1]!;
  return {
    transit: (b1 & 0x80) !== 0,
    cont: (b1 & 0x40) !== 0,
    csg: (b1 >>> 2) & 0x03,
    nsg: b1 & 0x03,
    versionMax: bhs[2]!,
    versionActive: bhs[3]!,
    isid: bhs.subarray(8, 14),
    tsih: bhs.readUInt16BE(14),
    itt: bhs.readUInt32BE(16),
    statSN: bhs.readUInt32BE(24),
    expCmdSN: bhs.readUInt32BE(28),
    maxCmdSN: bhs.readUInt32BE(32),
    statusClass: bhs[36]!,
    statusDetail: bhs[37]!,
    data: pdu.data,
  };
}

/** RFC 7143 11.11: Text Response, as decoded. */
export interface TextResponsePdu {
  readonly final: boolean;
  readonly cont: boolean;
  readonly lun: Buffer;
  readonly itt: number;
  readonly ttt: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  readonly data: Buffer;
}

export function decodeTextResponse(pdu: RawPdu): TextResponsePdu {
  const bhs = pdu.bhs;
  const b1 = bhs[1]!;
  return {
    final: (b1 & 0x80) !== 0,
    cont: (b1 & 0x40) !== 0,
    lun: bhs.subarray(8, 16),
    itt: bhs.readUInt32BE(16),
    ttt: bhs.readUInt32BE(20),
    statSN: bhs.readUInt32BE(24),
    expCmdSN: bhs.readUInt32BE(28),
    maxCmdSN: bhs.readUInt32BE(32),
    data: pdu.data,
  };
}

/** RFC 7143 11.15: Logout Response, as decoded. */
export interface LogoutResponsePdu {
  readonly response: number;
  readonly itt: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  readonly time2Wait: number;
  readonly time2Retain: number;
}

export function decodeLogoutResponse(pdu: RawPdu): LogoutResponsePdu {
  const bhs = pdu.bhs;
  return {
    response: bhs[2]!,
    itt: bhs.readUInt32BE(16),
    statSN: bhs.readUInt32BE(24),
    expCmdSN: bhs.readUInt32BE(28),
    maxCmdSN: bhs.readUInt32BE(32),
    time2Wait: bhs.readUInt16BE(40),
    time2Retain: bhs.readUInt16BE(42),
  };
}

/** RFC 7143 11.6: Task Management Function Response, as decoded. */
export interface TaskMgmtResponsePdu {
  readonly response: number;
  readonly itt: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
}

export function decodeTaskMgmtResponse(pdu: RawPdu): TaskMgmtResponsePdu {
  const bhs = pdu.bhs;
  return {
    response: bhs[2]!,
    itt: bhs.readUInt32BE(16),
    statSN: bhs.readUInt32BE(24),
    expCmdSN: bhs.readUInt32BE(28),
    maxCmdSN: bhs.readUInt32BE(32),
  };
}

/** RFC 7143 11.17: Reject, as decoded. */
export interface RejectPdu {
  readonly reason: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  readonly dataSN: number;
  /** The header of the rejected PDU. */
  readonly data: Buffer;
}

export function decodeReject(pdu: RawPdu): RejectPdu {
  const bhs = pdu.bhs;
  return {
    reason: bhs[2]!,
    statSN: bhs.readUInt32BE(24),
    expCmdSN: bhs.readUInt32BE(28),
    maxCmdSN: bhs.readUInt32BE(32),
    dataSN: bhs.readUInt32BE(36),
    data: pdu.data,
  };
}

/** RFC 7143 11.9: Asynchronous Message, as decoded. */
export interface AsyncMessagePdu {
  readonly lun: Buffer;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  readonly asyncEvent: number;
  readonly asyncVCode: number;
  readonly parameter1: number;
  readonly parameter2: number;
  readonly parameter3: number;
  readonly data: Buffer;
}

export function decodeAsyncMessage(pdu: RawPdu): AsyncMessagePdu {
  const bhs = pdu.bhs;
  return {
    lun: bhs.subarray(8, 16),
    statSN: bhs.readUInt32BE(24),
    expCmdSN: bhs.readUInt32BE(28),
    maxCmdSN: bhs.readUInt32BE(32),
    asyncEvent: bhs[36]!,
    asyncVCode: bhs[37]!,
    parameter1: bhs.readUInt16BE(38),
    parameter2: bhs.readUInt16BE(40),
    parameter3: bhs.readUInt16BE(42),
    data: pdu.data,
  };
}
