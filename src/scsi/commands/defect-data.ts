/**
 * READ DEFECT DATA (10)/(12), SBC-4 (opcodes 37h, B7h).
 *
 * A virtual volume has no medium defects: the primary list (PLIST) and the grown list (GLIST)
 * both exist and are empty. The answer is the defect list header alone:
 *  - PLISTV / GLISTV are set when REQ_PLIST / REQ_GLIST asked for that list (the data then
 *    "contains" it, with no address descriptor);
 *  - DEFECT LIST FORMAT echoes the requested format: an empty list is valid in every format, so
 *    the device server never has to fall back to a default format (and never reports RECOVERED
 *    ERROR / DEFECT LIST NOT FOUND for a format mismatch). The reserved format code 111b is
 *    INVALID FIELD IN CDB;
 *  - DEFECT LIST LENGTH is 0 (and ADDRESS DESCRIPTOR INDEX of the (12) form is past the end of
 *    an empty list whatever its value, which SBC-4 answers with a zero-length list).
 * The header is 4 bytes for (10) and 8 bytes for (12), cut to the ALLOCATION LENGTH.
 */
import type { LunHandler } from "../context.js";
import { invalidCdbField } from "../sense.js";
import { dataIn } from "./common.js";

/** READ DEFECT DATA CDB fields, SBC-4. */
export interface ReadDefectDataCdb {
  readonly reqPlist: boolean;
  readonly reqGlist: boolean;
  /** DEFECT LIST FORMAT (FORMAT UNIT address descriptor format codes). */
  readonly format: number;
  readonly allocationLength: number;
}

/** Byte 2: REQ_PLIST, REQ_GLIST, DEFECT LIST FORMAT; bytes 7-8: ALLOCATION LENGTH. */
export function decodeReadDefectData10(cdb: Buffer): ReadDefectDataCdb {
  const b = cdb[2]!;
  return {
    reqPlist: (b & 0x10) !== 0,
    reqGlist: (b & 0x08) !== 0,
    format: b & 0x07,
    allocationLength: cdb.readUInt16BE(7),
  };
}

/** Byte 1: REQ_PLIST, REQ_GLIST, DEFECT LIST FORMAT; bytes 6-9: ALLOCATION LENGTH. */
export function decodeReadDefectData12(cdb: Buffer): ReadDefectDataCdb {
  const b = cdb[1]!;
  return {
    reqPlist: (b & 0x10) !== 0,
    reqGlist: (b & 0x08) !== 0,
    format: b & 0x07,
    allocationLength: cdb.readUInt32BE(6),
  };
}

/** SBC-4 FORMAT UNIT address descriptor formats: 111b is reserved. */
const RESERVED_FORMAT = 0b111;

/**
 * A READ DEFECT DATA handler. `formatByte` is the CDB byte holding the list request bits and
 * the format; `headerLength` is 4 for (10) and 8 for (12).
 */
export function readDefectDataHandler(
  decode: (cdb: Buffer) => ReadDefectDataCdb,
  formatByte: number,
  headerLength: 4 | 8,
): LunHandler {
  return (cmd) => {
    const d = decode(cmd.cdb);
    if (d.format === RESERVED_FORMAT) throw invalidCdbField(formatByte, 2);
    const header = Buffer.alloc(headerLength);
    // Byte 1: PLISTV (bit 4), GLISTV (bit 3), DEFECT LIST FORMAT. The DEFECT LIST LENGTH
    // (bytes 2-3 of the (10) header, 4-7 of the (12) header) stays 0.
    header[1] = (d.reqPlist ? 0x10 : 0) | (d.reqGlist ? 0x08 : 0) | d.format;
    return dataIn(header, d.allocationLength);
  };
}
