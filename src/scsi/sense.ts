/**
 * Sense data: what went wrong, as a small structured value (`SenseSpec`) that is encoded only at
 * the edge, in fixed format (SPC-4 4.5.3) for CHECK CONDITION and, on request, in descriptor
 * format (SPC-4 4.5.2) for REQUEST SENSE with DESC=1.
 *
 * Command code reports a failure by throwing `CheckCondition` (validation, synchronous) or by
 * returning `checkConditionResult()`; the nexus turns either into a `ScsiResult`.
 */
import { Asc, ascOf, ascqOf } from "./asc.js";
import { ScsiStatus, SenseKey, SenseResponseCode } from "./constants.js";
import type { ScsiResult } from "./types.js";

/** SPC-4 4.5.2.4.2: the field pointer form of the SENSE KEY SPECIFIC field. */
export interface FieldPointer {
  /** C/D bit: true when the pointer is into the CDB, false when into the parameter list. */
  readonly inCdb: boolean;
  /** Byte offset of the field in error. */
  readonly byte: number;
  /** Bit within that byte (the most significant bit of the field); absent when not known. */
  readonly bit?: number;
}

export interface SenseSpec {
  readonly key: SenseKey;
  /** Packed ASC/ASCQ (see ./asc.ts). */
  readonly asc: number;
  /** INFORMATION field (an LBA or an offset); sets VALID when it fits the format. */
  readonly information?: number;
  readonly fieldPointer?: FieldPointer;
  /**
   * PROGRESS INDICATION (SPC-4 4.5.2.4.4), the fraction of an operation done, in 65536ths
   * (0..65535): the SENSE KEY SPECIFIC field with NOT READY or NO SENSE, when no field pointer
   * is set.
   */
  readonly progress?: number;
  /** A deferred error (SPC-4 4.5.1): response code 71h/73h instead of 70h/72h. */
  readonly deferred?: boolean;
}

/** Length of our fixed-format sense data: 18 bytes (ADDITIONAL SENSE LENGTH 10). */
export const FIXED_SENSE_LENGTH = 18;

/** A command ended in CHECK CONDITION: thrown by validation code, caught by the nexus. */
export class CheckCondition extends Error {
  override readonly name = "CheckCondition";
  constructor(
    readonly sense: SenseSpec,
    /** For commands with Data-Out: the length the CDB called for (for residual reporting). */
    readonly dataOutLength?: number,
  ) {
    super(`CHECK CONDITION key ${sense.key} asc ${sense.asc.toString(16).padStart(4, "0")}`);
  }
}

export function checkCondition(
  key: SenseKey,
  asc: number,
  extra?: Omit<SenseSpec, "key" | "asc">,
): CheckCondition {
  return new CheckCondition({ key, asc, ...extra });
}

/** ILLEGAL REQUEST / INVALID FIELD IN CDB with a field pointer into the CDB. */
export function invalidCdbField(byte: number, bit?: number): CheckCondition {
  return new CheckCondition({
    key: SenseKey.ILLEGAL_REQUEST,
    asc: Asc.INVALID_FIELD_IN_CDB,
    fieldPointer: bit === undefined ? { inCdb: true, byte } : { inCdb: true, byte, bit },
  });
}

/** ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST with a field pointer into the data. */
export function invalidParameterField(byte: number, bit?: number): CheckCondition {
  return new CheckCondition({
    key: SenseKey.ILLEGAL_REQUEST,
    asc: Asc.INVALID_FIELD_IN_PARAMETER_LIST,
    fieldPointer: bit === undefined ? { inCdb: false, byte } : { inCdb: false, byte, bit },
  });
}

/** ILLEGAL REQUEST / PARAMETER LIST LENGTH ERROR. */
export function parameterListLengthError(): CheckCondition {
  return checkCondition(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR);
}

/** ILLEGAL REQUEST / LOGICAL BLOCK ADDRESS OUT OF RANGE. */
export function lbaOutOfRange(): CheckCondition {
  return checkCondition(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE);
}

/** DATA PROTECT / WRITE PROTECTED: a write on a read-only mapping. */
export function writeProtected(): CheckCondition {
  return checkCondition(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED);
}

/** The result of a command that ends in CHECK CONDITION with this sense. */
export function checkConditionResult(sense: SenseSpec, dataOutLength?: number): ScsiResult {
  const result: { status: number; sense: Buffer; dataOutLength?: number } = {
    status: ScsiStatus.CHECK_CONDITION,
    sense: encodeFixedSense(sense),
  };
  if (dataOutLength !== undefined) result.dataOutLength = dataOutLength;
  return result;
}

/** Fixed format sense data, SPC-4 4.5.3. */
export function encodeFixedSense(sense: SenseSpec): Buffer {
  const buf = Buffer.alloc(FIXED_SENSE_LENGTH);
  const info = sense.information;
  const valid = info !== undefined && Number.isInteger(info) && info >= 0 && info <= 0xffffffff;
  // Byte 0: VALID (bit 7) and RESPONSE CODE.
  buf[0] =
    (valid ? 0x80 : 0) |
    (sense.deferred ? SenseResponseCode.FIXED_DEFERRED : SenseResponseCode.FIXED_CURRENT);
  // Byte 2: FILEMARK, EOM, ILI (all zero here) and SENSE KEY.
  buf[2] = sense.key & 0x0f;
  // Bytes 3-6: INFORMATION.
  if (valid) buf.writeUInt32BE(info, 3);
  // Byte 7: ADDITIONAL SENSE LENGTH (n - 7).
  buf[7] = FIXED_SENSE_LENGTH - 8;
  // Bytes 8-11: COMMAND-SPECIFIC INFORMATION (unused).
  buf[12] = ascOf(sense.asc);
  buf[13] = ascqOf(sense.asc);
  // Byte 14: FIELD REPLACEABLE UNIT CODE (0). Bytes 15-17: SKSV + SENSE KEY SPECIFIC.
  writeSenseKeySpecific(buf, 15, sense);
  return buf;
}

function hasSenseKeySpecific(sense: SenseSpec): boolean {
  return sense.fieldPointer !== undefined || sense.progress !== undefined;
}

/** The 3-byte SENSE KEY SPECIFIC field at `at`: a field pointer, else a progress indication. */
function writeSenseKeySpecific(buf: Buffer, at: number, sense: SenseSpec): void {
  if (sense.fieldPointer) {
    writeFieldPointer(buf, at, sense.fieldPointer);
  } else if (sense.progress !== undefined) {
    buf[at] = 0x80; // SKSV
    buf.writeUInt16BE(Math.max(0, Math.min(0xffff, Math.floor(sense.progress))), at + 1);
  }
}

/**
 * Descriptor format sense data, SPC-4 4.5.2: the header, then an information descriptor
 * (SPC-4 4.5.2.2) when INFORMATION is set and a sense key specific descriptor (SPC-4 4.5.2.4)
 * when a field pointer is set.
 */
export function encodeDescriptorSense(sense: SenseSpec): Buffer {
  const info = sense.information;
  const hasInfo = info !== undefined && Number.isSafeInteger(info) && info >= 0;
  const length = 8 + (hasInfo ? 12 : 0) + (hasSenseKeySpecific(sense) ? 8 : 0);
  const buf = Buffer.alloc(length);
  buf[0] = sense.deferred
    ? SenseResponseCode.DESCRIPTOR_DEFERRED
    : SenseResponseCode.DESCRIPTOR_CURRENT;
  buf[1] = sense.key & 0x0f;
  buf[2] = ascOf(sense.asc);
  buf[3] = ascqOf(sense.asc);
  buf[7] = length - 8;
  let at = 8;
  if (hasInfo) {
    buf[at] = 0x00; // DESCRIPTOR TYPE: information
    buf[at + 1] = 0x0a; // ADDITIONAL LENGTH
    buf[at + 2] = 0x80; // VALID
    buf.writeBigUInt64BE(BigInt(info), at + 4);
    at += 12;
  }
  if (hasSenseKeySpecific(sense)) {
    buf[at] = 0x02; // DESCRIPTOR TYPE: sense key specific
    buf[at + 1] = 0x06; // ADDITIONAL LENGTH
    writeSenseKeySpecific(buf, at + 4, sense);
  }
  return buf;
}

/** SPC-4 4.5.2.4.2: SKSV, C/D, BPV, BIT POINTER, FIELD POINTER (3 bytes at `at`). */
function writeFieldPointer(buf: Buffer, at: number, pointer: FieldPointer): void {
  let b = 0x80; // SKSV
  if (pointer.inCdb) b |= 0x40; // C/D
  if (pointer.bit !== undefined) b |= 0x08 | (pointer.bit & 0x07); // BPV + BIT POINTER
  buf[at] = b;
  buf.writeUInt16BE(pointer.byte & 0xffff, at + 1);
}

/** Decoded fixed-format sense (for tests and for logging). */
export interface DecodedSense {
  readonly responseCode: number;
  readonly valid: boolean;
  readonly key: number;
  readonly information: number;
  readonly asc: number;
  readonly fieldPointer?: FieldPointer;
  /** The SENSE KEY SPECIFIC field read as a progress indication (NOT READY, NO SENSE). */
  readonly progress?: number;
}

/** Parse fixed-format sense data (SPC-4 4.5.3). */
export function decodeFixedSense(buf: Buffer): DecodedSense {
  if (buf.length < FIXED_SENSE_LENGTH) throw new RangeError("sense data too short");
  const sksv = (buf[15]! & 0x80) !== 0;
  const decoded: DecodedSense = {
    responseCode: buf[0]! & 0x7f,
    valid: (buf[0]! & 0x80) !== 0,
    key: buf[2]! & 0x0f,
    information: buf.readUInt32BE(3),
    asc: (buf[12]! << 8) | buf[13]!,
  };
  if (!sksv) return decoded;
  if (decoded.key === SenseKey.NOT_READY || decoded.key === SenseKey.NO_SENSE) {
    return { ...decoded, progress: buf.readUInt16BE(16) };
  }
  const bpv = (buf[15]! & 0x08) !== 0;
  const fieldPointer: FieldPointer = bpv
    ? { inCdb: (buf[15]! & 0x40) !== 0, byte: buf.readUInt16BE(16), bit: buf[15]! & 0x07 }
    : { inCdb: (buf[15]! & 0x40) !== 0, byte: buf.readUInt16BE(16) };
  return { ...decoded, fieldPointer };
}
