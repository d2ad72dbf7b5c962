/**
 * The iSCSI PDU codec: small pure functions from a received PDU to a readonly object (the
 * initiator PDUs a target receives), and from a params object to a BHS (the target PDUs it
 * sends). Framing (lengths, padding, digests) lives in framing.ts; the initiator side of the
 * codec, used by tests, lives in pdu-initiator.ts.
 *
 * Layouts are RFC 7143 section 11; every multi-byte field is big-endian (network order). Field
 * names are the RFC's (itt, ttt, cmdSN, expStatSN, ...; edtl = Expected Data Transfer Length).
 *
 * Buffer lifetimes: decoders return subarrays of the RawPdu's buffers (lun, isid, cdb, data),
 * which the PDU owns (see RawPdu), so decoded objects stay valid as long as they are referenced.
 * Encoders never copy the data segment they are given: the caller must not modify it until it
 * has been written to the socket.
 */
import {
  AhsType,
  BHS_LENGTH,
  BhsFlag,
  MAX_DATA_SEGMENT_LENGTH,
  Opcode,
  RESERVED_TAG,
} from "./constants.js";

/**
 * One received PDU, as PduReader delivers it (RFC 7143 11.2: BHS, AHS, data segment; digests
 * and padding already checked and stripped).
 *
 * Ownership: the three buffers are copies out of the receive buffers, made by the reader (which
 * does not retain or reuse them afterwards), so the PDU and everything decoded from it may be
 * kept beyond the onPdu callback and handed to other layers (e.g. Data-Out payloads to the
 * volume) without another copy.
 */
export interface RawPdu {
  /** The 48-byte Basic Header Segment. */
  readonly bhs: Buffer;
  /** The Additional Header Segments (TotalAHSLength * 4 bytes), usually empty. */
  readonly ahs: Buffer;
  /** The data segment, without padding (DataSegmentLength bytes). */
  readonly data: Buffer;
}

/**
 * One PDU to send: the encoders' output, serialized by framing.ts `serializePdu`, which adds the
 * header digest, padding and data digest. `data` is not padded and is not copied: it may be a
 * view into a larger buffer (a Data-In slice of a read) and must stay unmodified until written.
 */
export interface OutPdu {
  readonly bhs: Buffer;
  readonly data: Buffer;
  /** Additional Header Segments, already padded; only initiator SCSI Commands carry them. */
  readonly ahs?: Buffer;
}

/** The shared empty buffer (never written: it has no bytes). */
export const EMPTY: Buffer = Buffer.alloc(0);

// ---------------------------------------------------------------------------------------------
// Fields common to every BHS (RFC 7143 11.2.1)
// ---------------------------------------------------------------------------------------------

/** RFC 7143 11.2.1.2: the opcode, low 6 bits of byte 0. Not necessarily a known Opcode value. */
export function opcodeOf(bhs: Buffer): number {
  return bhs[0]! & BhsFlag.OpcodeMask;
}

/** RFC 7143 11.2.1.1: the I (immediate delivery) bit of byte 0. */
export function isImmediate(bhs: Buffer): boolean {
  return (bhs[0]! & BhsFlag.Immediate) !== 0;
}

/** RFC 7143 11.2.1.6: DataSegmentLength (bytes 5-7), in bytes, excluding padding. */
export function dataSegmentLengthOf(bhs: Buffer): number {
  return (bhs[5]! << 16) | (bhs[6]! << 8) | bhs[7]!;
}

/** RFC 7143 11.2.1.5: TotalAHSLength (byte 4) converted from 4-byte words to bytes. */
export function totalAhsLengthOf(bhs: Buffer): number {
  return bhs[4]! << 2;
}

/** RFC 7143 11.2.1.8: the Initiator Task Tag (bytes 16-19). */
export function ittOf(bhs: Buffer): number {
  return bhs.readUInt32BE(16);
}

// ---------------------------------------------------------------------------------------------
// Additional Header Segments (RFC 7143 11.2.2)
// ---------------------------------------------------------------------------------------------

/**
 * The size an AHS occupies: AHSLength (2 bytes), AHSType (1 byte), then AHSLength bytes of
 * AHS-specific field (which starts with byte 3), padded to a multiple of 4 (RFC 7143 11.2.2.2).
 */
function ahsSize(ahsLength: number): number {
  return (3 + ahsLength + 3) & ~3;
}

/** Whether the AHS area is a sequence of AHSs that exactly fills it (RFC 7143 11.2.2). */
export function ahsIsWellFormed(ahs: Buffer): boolean {
  const end = ahs.length;
  let off = 0;
  while (off < end) {
    if (end - off < 4) return false;
    const size = ahsSize(ahs.readUInt16BE(off));
    if (size > end - off) return false;
    off += size;
  }
  return true;
}

/**
 * The AHS-specific field (from byte 3 of the AHS, AHSLength bytes) of the first AHS of type
 * `type` (RFC 7143 11.2.2.1: the low 6 bits of the type byte), or undefined. A subarray of `ahs`.
 */
export function findAhs(ahs: Buffer, type: number): Buffer | undefined {
  const end = ahs.length;
  let off = 0;
  while (end - off >= 4) {
    const length = ahs.readUInt16BE(off);
    const size = ahsSize(length);
    if (size > end - off) return undefined;
    if ((ahs[off + 2]! & 0x3f) === type) return ahs.subarray(off + 3, off + 3 + length);
    off += size;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Building blocks for encoders (here and in pdu-initiator.ts)
// ---------------------------------------------------------------------------------------------

const ZERO_LUN = Buffer.alloc(8);

/**
 * A zeroed BHS with byte 0 (opcode and I bit), byte 1 (flags) and DataSegmentLength set
 * (RFC 7143 11.2.1). Throws RangeError when the data cannot fit the 24-bit length field.
 */
export function newBhs(byte0: number, byte1: number, dataLength: number): Buffer {
  if (dataLength > MAX_DATA_SEGMENT_LENGTH) {
    throw new RangeError(`data segment of ${dataLength} bytes exceeds the 24-bit length field`);
  }
  // allocUnsafe takes small buffers from Node's pool, which is never reused once handed out.
  const bhs = Buffer.allocUnsafe(BHS_LENGTH).fill(0);
  bhs[0] = byte0;
  bhs[1] = byte1;
  bhs[5] = dataLength >>> 16;
  bhs[6] = (dataLength >>> 8) & 0xff;
  bhs[7] = dataLength & 0xff;
  return bhs;
}

/** Writes the 8-byte LUN field (RFC 7143 11.2.1.7) at bytes 8-15; zeros when omitted. */
export function writeLun(bhs: Buffer, lun: Buffer | undefined): void {
  const src = lun ?? ZERO_LUN;
  if (src.length !== 8) throw new RangeError(`LUN field must be 8 bytes, got ${src.length}`);
  src.copy(bhs, 8, 0, 8);
}

/** Byte 0 of an initiator PDU: opcode plus the I bit (RFC 7143 11.2.1.1). */
export function initiatorByte0(opcode: number, immediate: boolean | undefined): number {
  return immediate === true ? opcode | BhsFlag.Immediate : opcode;
}

/** `mask` when `flag` is true, else 0: for composing flag bytes. */
export function bit(flag: boolean | undefined, mask: number): number {
  return flag === true ? mask : 0;
}

// ---------------------------------------------------------------------------------------------
// Decoders for the initiator PDUs a target receives
// ---------------------------------------------------------------------------------------------

/** RFC 7143 11.3: SCSI Command. */
export interface ScsiCommandPdu {
  readonly immediate: boolean;
  readonly final: boolean;
  /** R: the command expects Data-In. */
  readonly read: boolean;
  /** W: the command carries Data-Out. */
  readonly write: boolean;
  /** RFC 7143 11.3.1 ATTR (TaskAttribute). */
  readonly taskAttribute: number;
  readonly lun: Buffer;
  readonly itt: number;
  readonly edtl: number;
  readonly cmdSN: number;
  readonly expStatSN: number;
  /**
   * RFC 7143 11.3.5: the 16 CDB bytes of the BHS, followed by the Extended CDB AHS bytes
   * (11.2.2.3) when present. A subarray of the BHS unless an extended CDB was appended.
   */
  readonly cdb: Buffer;
  /** RFC 7143 11.2.2.4: Bidirectional Read EDTL from its AHS, when present. */
  readonly bidiReadEdtl: number | undefined;
  /** Immediate data. */
  readonly data: Buffer;
}

export function decodeScsiCommand(pdu: RawPdu): ScsiCommandPdu {
  const bhs = pdu.bhs;
  const b1 = bhs[1]!;
  let cdb = bhs.subarray(32, 48);
  let bidiReadEdtl: number | undefined;
  if (pdu.ahs.length !== 0) {
    const ext = findAhs(pdu.ahs, AhsType.ExtendedCdb);
    // Byte 3 of the AHS (the first byte of the AHS-specific field) is reserved; the extended
    // CDB follows it (RFC 7143 11.2.2.3, AHSLength = CDB length - 15).
    if (ext !== undefined && ext.length > 1) cdb = Buffer.concat([cdb, ext.subarray(1)]);
    const bidi = findAhs(pdu.ahs, AhsType.BidiReadEdtl);
    if (bidi !== undefined && bidi.length >= 5) bidiReadEdtl = bidi.readUInt32BE(1);
  }
  return {
    immediate: isImmediate(bhs),
    final: (b1 & 0x80) !== 0,
    read: (b1 & 0x40) !== 0,
    write: (b1 & 0x20) !== 0,
    taskAttribute: b1 & 0x07,
    lun: bhs.subarray(8, 16),
    itt: bhs.readUInt32BE(16),
    edtl: bhs.readUInt32BE(20),
    cmdSN: bhs.readUInt32BE(24),
    expStatSN: bhs.readUInt32BE(28),
    cdb,
    bidiReadEdtl,
    data: pdu.data,
  };
}

/** RFC 7143 11.7: SCSI Data-Out. */
export interface DataOutPdu {
  readonly final: boolean;
  readonly lun: Buffer;
  readonly itt: number;
  readonly ttt: number;
  readonly expStatSN: number;
  readonly dataSN: number;
  readonly bufferOffset: number;
  readonly data: Buffer;
}

export function decodeDataOut(pdu: RawPdu): DataOutPdu {
  const bhs = pdu.bhs;
  return {
    final: (bhs[1]! & 0x80) !== 0,
    lun: bhs.subarray(8, 16),
    itt: bhs.readUInt32BE(16),
    ttt: bhs.readUInt32BE(20),
    expStatSN: bhs.readUInt32BE(28),
    dataSN: bhs.readUInt32BE(36),
    bufferOffset: bhs.readUInt32BE(40),
    data: pdu.data,
  };
}

/** RFC 7143 11.18: NOP-Out. */
export interface NopOutPdu {
  readonly immediate: boolean;
  readonly lun: Buffer;
  readonly itt: number;
  readonly ttt: number;
  readonly cmdSN: number;
  readonly expStatSN: number;
  /** Ping data, to be echoed in the NOP-In. */
  readonly data: Buffer;
}

export function decodeNopOut(pdu: RawPdu): NopOutPdu {
  const bhs = pdu.bhs;
  return {
    immediate: isImmediate(bhs),
    lun: bhs.subarray(8, 16),
    itt: bhs.readUInt32BE(16),
    ttt: bhs.readUInt32BE(20),
    cmdSN: bhs.readUInt32BE(24),
    expStatSN: bhs.readUInt32BE(28),
    data: pdu.data,
  };
}

/** RFC 7143 11.12: Login Request. */
export interface LoginRequestPdu {
  /** T: the initiator is ready to transit to `nsg`. */
  readonly transit: boolean;
  /** C: the text in `data` continues in the next Login Request. */
  readonly cont: boolean;
  /** Current stage (LoginStage). */
  readonly csg: number;
  /** Next stage (LoginStage), meaningful only when `transit`. */
  readonly nsg: number;
  readonly versionMax: number;
  readonly versionMin: number;
  /** The 6-byte initiator session ID (RFC 7143 11.12). */
  readonly isid: Buffer;
  readonly tsih: number;
  readonly itt: number;
  readonly cid: number;
  readonly cmdSN: number;
  readonly expStatSN: number;
  /** Login key=value text (NUL-separated). */
  readonly data: Buffer;
}

export function decodeLoginRequest(pdu: RawPdu): LoginRequestPdu {
  const bhs = pdu.bhs;
  const b1 = bhs[1]!;
  return {
    transit: (b1 & 0x80) !== 0,
    cont: (b1 & 0x40) !== 0,
    csg: (b1 >>> 2) & 0x03,
    nsg: b1 & 0x03,
    versionMax: bhs[2]!,
    versionMin: bhs[3]!,
    isid: bhs.subarray(8, 14),
    tsih: bhs.readUInt16BE(14),
    itt: bhs.readUInt32BE(16),
    cid: bhs.readUInt16BE(20),
    cmdSN: bhs.readUInt32BE(24),
    expStatSN: bhs.readUInt32BE(28),
    data: pdu.data,
  };
}

/** RFC 7143 11.10: Text Request. */
export interface TextRequestPdu {
  readonly immediate: boolean;
  readonly final: boolean;
  /** C: the text continues in the next Text Request. */
  readonly cont: boolean;
  readonly lun: Buffer;
  readonly itt: number;
  readonly ttt: number;
  readonly cmdSN: number;
  readonly expStatSN: number;
  readonly data: Buffer;
}

export function decodeTextRequest(pdu: RawPdu): TextRequestPdu {
  const bhs = pdu.bhs;
  const b1 = bhs[1]!;
  return {
    immediate: isImmediate(bhs),
    final: (b1 & 0x80) !== 0,
    cont: (b1 & 0x40) !== 0,
    lun: bhs.subarray(8, 16),
    itt: bhs.readUInt32BE(16),
    ttt: bhs.readUInt32BE(20),
    cmdSN: bhs.readUInt32BE(24),
    expStatSN: bhs.readUInt32BE(28),
    data: pdu.data,
  };
}

/** RFC 7143 11.14: Logout Request. */
export interface LogoutRequestPdu {
  readonly immediate: boolean;
  /** RFC 7143 11.14.1 (LogoutReason). */
  readonly reasonCode: number;
  readonly itt: number;
  /** The connection to close (reasons 1 and 2). */
  readonly cid: number;
  readonly cmdSN: number;
  readonly expStatSN: number;
}

export function decodeLogoutRequest(pdu: RawPdu): LogoutRequestPdu {
  const bhs = pdu.bhs;
  return {
    immediate: isImmediate(bhs),
    reasonCode: bhs[1]! & 0x7f,
    itt: bhs.readUInt32BE(16),
    cid: bhs.readUInt16BE(20),
    cmdSN: bhs.readUInt32BE(24),
    expStatSN: bhs.readUInt32BE(28),
  };
}

/** RFC 7143 11.5: Task Management Function Request. */
export interface TaskMgmtRequestPdu {
  readonly immediate: boolean;
  /** RFC 7143 11.5.1 (TmfFunction). */
  readonly function: number;
  readonly lun: Buffer;
  readonly itt: number;
  /** Referenced Task Tag: the ITT of the task to abort or query, or 0xffffffff. */
  readonly rtt: number;
  readonly cmdSN: number;
  readonly expStatSN: number;
  readonly refCmdSN: number;
  readonly expDataSN: number;
}

export function decodeTaskMgmtRequest(pdu: RawPdu): TaskMgmtRequestPdu {
  const bhs = pdu.bhs;
  return {
    immediate: isImmediate(bhs),
    function: bhs[1]! & 0x7f,
    lun: bhs.subarray(8, 16),
    itt: bhs.readUInt32BE(16),
    rtt: bhs.readUInt32BE(20),
    cmdSN: bhs.readUInt32BE(24),
    expStatSN: bhs.readUInt32BE(28),
    refCmdSN: bhs.readUInt32BE(32),
    expDataSN: bhs.readUInt32BE(36),
  };
}

/** RFC 7143 11.16: SNACK Request. */
export interface SnackPdu {
  /** RFC 7143 11.16.1 (SnackType). */
  readonly type: number;
  readonly lun: Buffer;
  readonly itt: number;
  /** TTT (DataACK) or SNACK Tag (R-Data), else 0xffffffff. */
  readonly ttt: number;
  readonly expStatSN: number;
  readonly begRun: number;
  readonly runLength: number;
}

export function decodeSnack(pdu: RawPdu): SnackPdu {
  const bhs = pdu.bhs;
  return {
    type: bhs[1]! & 0x0f,
    lun: bhs.subarray(8, 16),
    itt: bhs.readUInt32BE(16),
    ttt: bhs.readUInt32BE(20),
    expStatSN: bhs.readUInt32BE(28),
    begRun: bhs.readUInt32BE(40),
    runLength: bhs.readUInt32BE(44),
  };
}

// ---------------------------------------------------------------------------------------------
// Encoders for the target PDUs
// ---------------------------------------------------------------------------------------------

/** RFC 7143 11.4: SCSI Response. Omitted flags are clear, omitted numbers are 0. */
export interface ScsiResponseParams {
  /** O: Residual Overflow (the command wanted more than EDTL); residualCount says by how much. */
  readonly overflow?: boolean;
  /** U: Residual Underflow (less than EDTL was transferred). */
  readonly underflow?: boolean;
  /** o: Bidirectional Read Residual Overflow. */
  readonly bidiOverflow?: boolean;
  /** u: Bidirectional Read Residual Underflow. */
  readonly bidiUnderflow?: boolean;
  /** RFC 7143 11.4.3 (ScsiResponseCode); default 0, command completed at target. */
  readonly response?: number;
  /** SAM status (valid when response is 0). */
  readonly status: number;
  readonly itt: number;
  readonly snackTag?: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  /** Number of Data-In (and R2T) PDUs sent for the command. */
  readonly expDataSN?: number;
  /** Bidirectional Read Residual Count. */
  readonly bidiResidualCount?: number;
  readonly residualCount?: number;
  /** Sense (and response) data, with its SenseLength prefix: see senseDataSegment. */
  readonly data?: Buffer;
}

export function encodeScsiResponse(p: ScsiResponseParams): OutPdu {
  const data = p.data ?? EMPTY;
  const bhs = newBhs(
    Opcode.ScsiResponse,
    0x80 |
      bit(p.bidiOverflow, 0x10) |
      bit(p.bidiUnderflow, 0x08) |
      bit(p.overflow, 0x04) |
      bit(p.underflow, 0x02),
    data.length,
  );
  bhs[2] = p.response ?? 0;
  bhs[3] = p.status;
  bhs.writeUInt32BE(p.itt, 16);
  bhs.writeUInt32BE(p.snackTag ?? 0, 20);
  bhs.writeUInt32BE(p.statSN, 24);
  bhs.writeUInt32BE(p.expCmdSN, 28);
  bhs.writeUInt32BE(p.maxCmdSN, 32);
  bhs.writeUInt32BE(p.expDataSN ?? 0, 36);
  bhs.writeUInt32BE(p.bidiResidualCount ?? 0, 40);
  bhs.writeUInt32BE(p.residualCount ?? 0, 44);
  return { bhs, data };
}

/**
 * The data segment of a SCSI Response carrying sense data: a 2-byte SenseLength, then the
 * sense bytes (RFC 7143 11.4.7). An empty sense gives an empty segment.
 */
export function senseDataSegment(sense: Buffer): Buffer {
  if (sense.length === 0) return EMPTY;
  if (sense.length > 0xffff) throw new RangeError(`sense data of ${sense.length} bytes`);
  const out = Buffer.allocUnsafe(2 + sense.length);
  out.writeUInt16BE(sense.length, 0);
  sense.copy(out, 2);
  return out;
}

/** RFC 7143 11.7: SCSI Data-In. */
export interface DataInParams {
  /** F: the last Data-In of the command (or of the sequence, for DataSequenceInOrder). */
  readonly final: boolean;
  /** A: ask the initiator for a DataACK SNACK (ErrorRecoveryLevel >= 1 only). */
  readonly acknowledge?: boolean;
  /**
   * S: `status` completes the command without a SCSI Response ("phase collapse", RFC 7143
   * 11.7: only with F set, and only when there is no sense data). Then `statSN`, the
   * overflow/underflow flags and `residualCount` are meaningful; otherwise they are reserved
   * and sent as 0.
   */
  readonly statusPresent?: boolean;
  /** SAM status, sent when `statusPresent`. */
  readonly status?: number;
  /** O: Residual Overflow (only with `statusPresent`). */
  readonly overflow?: boolean;
  /** U: Residual Underflow (only with `statusPresent`). */
  readonly underflow?: boolean;
  readonly residualCount?: number;
  /** Echoes the command's LUN when `acknowledge` is set; zeros are fine otherwise. */
  readonly lun?: Buffer;
  readonly itt: number;
  /** TTT for DataACK (with `acknowledge`), otherwise 0xffffffff (the default). */
  readonly ttt?: number;
  readonly statSN?: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  readonly dataSN: number;
  readonly bufferOffset: number;
  /** The payload: may be a subarray of a larger read buffer; it is not copied. */
  readonly data: Buffer;
}

export function encodeDataIn(p: DataInParams): OutPdu {
  const statusPresent = p.statusPresent === true;
  if (statusPresent && !p.final) {
    throw new RangeError("Data-In: the S bit may only be set together with the F bit");
  }
  const bhs = newBhs(
    Opcode.DataIn,
    bit(p.final, 0x80) |
      bit(p.acknowledge, 0x40) |
      (statusPresent ? bit(p.overflow, 0x04) | bit(p.underflow, 0x02) | 0x01 : 0),
    p.data.length,
  );
  writeLun(bhs, p.lun);
  bhs.writeUInt32BE(p.itt, 16);
  bhs.writeUInt32BE(p.ttt ?? RESERVED_TAG, 20);
  if (statusPresent) {
    bhs[3] = p.status ?? 0;
    bhs.writeUInt32BE(p.statSN ?? 0, 24);
    bhs.writeUInt32BE(p.residualCount ?? 0, 44);
  }
  bhs.writeUInt32BE(p.expCmdSN, 28);
  bhs.writeUInt32BE(p.maxCmdSN, 32);
  bhs.writeUInt32BE(p.dataSN, 36);
  bhs.writeUInt32BE(p.bufferOffset, 40);
  return { bhs, data: p.data };
}

/** RFC 7143 11.8: Ready To Transfer. */
export interface R2TParams {
  readonly lun?: Buffer;
  readonly itt: number;
  readonly ttt: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  readonly r2tSN: number;
  readonly bufferOffset: number;
  readonly desiredDataTransferLength: number;
}

export function encodeR2T(p: R2TParams): OutPdu {
  const bhs = newBhs(Opcode.R2T, 0x80, 0);
  writeLun(bhs, p.lun);
  bhs.writeUInt32BE(p.itt, 16);
  bhs.writeUInt32BE(p.ttt, 20);
  bhs.writeUInt32BE(p.statSN, 24);
  bhs.writeUInt32BE(p.expCmdSN, 28);
  bhs.writeUInt32BE(p.maxCmdSN, 32);
  bhs.writeUInt32BE(p.r2tSN, 36);
  bhs.writeUInt32BE(p.bufferOffset, 40);
  bhs.writeUInt32BE(p.desiredDataTransferLength, 44);
  return { bhs, data: EMPTY };
}

/** RFC 7143 11.19: NOP-In (a reply to a NOP-Out, or a target ping with itt = 0xffffffff). */
export interface NopInParams {
  readonly lun?: Buffer;
  readonly itt: number;
  readonly ttt: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  readonly data?: Buffer;
}

export function encodeNopIn(p: NopInParams): OutPdu {
  const data = p.data ?? EMPTY;
  const bhs = newBhs(Opcode.NopIn, 0x80, data.length);
  writeLun(bhs, p.lun);
  bhs.writeUInt32BE(p.itt, 16);
  bhs.writeUInt32BE(p.ttt, 20);
  bhs.writeUInt32BE(p.statSN, 24);
  bhs.writeUInt32BE(p.expCmdSN, 28);
  bhs.writeUInt32BE(p.maxCmdSN, 32);
  return { bhs, data };
}

/** RFC 7143 11.13: Login Response. */
export interface LoginResponseParams {
  readonly transit: boolean;
  readonly cont: boolean;
  readonly csg: number;
  readonly nsg: number;
  readonly versionMax: number;
  readonly versionActive: number;
  /** 6 bytes, echoing the request. */
  readonly isid: Buffer;
  readonly tsih: number;
  readonly itt: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  /** RFC 7143 11.13.5 (LoginStatus). */
  readonly statusClass: number;
  readonly statusDetail: number;
  readonly data?: Buffer;
}

export function encodeLoginResponse(p: LoginResponseParams): OutPdu {
  const data = p.data ?? EMPTY;
  const bhs = newBhs(
    Opcode.LoginResponse,
    bit(p.transit, 0x80) | bit(p.cont, 0x40) | ((p.csg & 0x03) << 2) | (p.nsg & 0x03),
    data.length,
  );
  bhs[2] = p.versionMax;
  bhs[3] = p.versionActive;
  if (p.isid.length !== 6) throw new RangeError(`ISID must be 6 bytes, got ${p.isid.length}`);
  p.isid.copy(bhs, 8, 0, 6);
  bhs.writeUInt16BE(p.tsih, 14);
  bhs.writeUInt32BE(p.itt, 16);
  bhs.writeUInt32BE(p.statSN, 24);
  bhs.writeUInt32BE(p.expCmdSN, 28);
  bhs.writeUInt32BE(p.maxCmdSN, 32);
  bhs[36] = p.statusClass;
  bhs[37] = p.statusDetail;
  return { bhs, data };
}

/** RFC 7143 11.11: Text Response. */
export interface TextResponseParams {
  readonly final: boolean;
  readonly cont: boolean;
  readonly lun?: Buffer;
  readonly itt: number;
  /** 0xffffffff on the final response; otherwise a tag the initiator echoes to continue. */
  readonly ttt: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  readonly data?: Buffer;
}

export function encodeTextResponse(p: TextResponseParams): OutPdu {
  const data = p.data ?? EMPTY;
  const bhs = newBhs(Opcode.TextResponse, bit(p.final, 0x80) | bit(p.cont, 0x40), data.length);
  writeLun(bhs, p.lun);
  bhs.writeUInt32BE(p.itt, 16);
  bhs.writeUInt32BE(p.ttt, 20);
  bhs.writeUInt32BE(p.statSN, 24);
  bhs.writeUInt32BE(p.expCmdSN, 28);
  bhs.writeUInt32BE(p.maxCmdSN, 32);
  return { bhs, data };
}

/** RFC 7143 11.15: Logout Response. */
export interface LogoutResponseParams {
  /** RFC 7143 11.15.1 (LogoutResponseCode). */
  readonly response: number;
  readonly itt: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  /** Seconds; default 0. */
  readonly time2Wait?: number;
  /** Seconds; default 0. */
  readonly time2Retain?: number;
}

export function encodeLogoutResponse(p: LogoutResponseParams): OutPdu {
  const bhs = newBhs(Opcode.LogoutResponse, 0x80, 0);
  bhs[2] = p.response;
  bhs.writeUInt32BE(p.itt, 16);
  bhs.writeUInt32BE(p.statSN, 24);
  bhs.writeUInt32BE(p.expCmdSN, 28);
  bhs.writeUInt32BE(p.maxCmdSN, 32);
  bhs.writeUInt16BE(p.time2Wait ?? 0, 40);
  bhs.writeUInt16BE(p.time2Retain ?? 0, 42);
  return { bhs, data: EMPTY };
}

/** RFC 7143 11.6: Task Management Function Response. */
export interface TaskMgmtResponseParams {
  /** RFC 7143 11.6.1 (TmfResponse). */
  readonly response: number;
  readonly itt: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
}

export function encodeTaskMgmtResponse(p: TaskMgmtResponseParams): OutPdu {
  const bhs = newBhs(Opcode.TaskMgmtResponse, 0x80, 0);
  bhs[2] = p.response;
  bhs.writeUInt32BE(p.itt, 16);
  bhs.writeUInt32BE(p.statSN, 24);
  bhs.writeUInt32BE(p.expCmdSN, 28);
  bhs.writeUInt32BE(p.maxCmdSN, 32);
  return { bhs, data: EMPTY };
}

/** RFC 7143 11.17: Reject. */
export interface RejectParams {
  /** RFC 7143 11.17.1 (RejectReason). */
  readonly reason: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  /** DataSN/R2TSN: only for a rejected SNACK (reason 0x03, R-Data); default 0. */
  readonly dataSN?: number;
  /** The complete header of the rejected PDU (its BHS); not copied. */
  readonly data: Buffer;
}

export function encodeReject(p: RejectParams): OutPdu {
  const bhs = newBhs(Opcode.Reject, 0x80, p.data.length);
  bhs[2] = p.reason;
  bhs.writeUInt32BE(RESERVED_TAG, 16);
  bhs.writeUInt32BE(p.statSN, 24);
  bhs.writeUInt32BE(p.expCmdSN, 28);
  bhs.writeUInt32BE(p.maxCmdSN, 32);
  bhs.writeUInt32BE(p.dataSN ?? 0, 36);
  return { bhs, data: p.data };
}

/** RFC 7143 11.9: Asynchronous Message. */
export interface AsyncMessageParams {
  readonly lun?: Buffer;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  /** RFC 7143 11.9.1 (AsyncEvent). */
  readonly asyncEvent: number;
  readonly asyncVCode?: number;
  readonly parameter1?: number;
  readonly parameter2?: number;
  readonly parameter3?: number;
  /** Sense data with its SenseLength prefix (event 0), then iSCSI event data. */
  readonly data?: Buffer;
}

export function encodeAsyncMessage(p: AsyncMessageParams): OutPdu {
  const data = p.data ?? EMPTY;
  const bhs = newBhs(Opcode.AsyncMessage, 0x80, data.length);
  writeLun(bhs, p.lun);
  bhs.writeUInt32BE(RESERVED_TAG, 16);
  bhs.writeUInt32BE(p.statSN, 24);
  bhs.writeUInt32BE(p.expCmdSN, 28);
  bhs.writeUInt32BE(p.maxCmdSN, 32);
  bhs[36] = p.asyncEvent;
  bhs[37] = p.asyncVCode ?? 0;
  bhs.writeUInt16BE(p.parameter1 ?? 0, 38);
  bhs.writeUInt16BE(p.parameter2 ?? 0, 40);
  bhs.writeUInt16BE(p.parameter3 ?? 0, 42);
  return { bhs, data };
}
