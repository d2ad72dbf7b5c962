/**
 * REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS, SPC-4 (MAINTENANCE IN, service action 0Dh).
 *
 * What the iSCSI transport implements (RFC 7143 11.5, src/iscsi/connection.ts): ABORT TASK,
 * ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET and TARGET RESET (warm and cold). Not
 * reported: CLEAR ACA (NACA is not supported), QUERY TASK, QUERY TASK SET and QUERY
 * ASYNCHRONOUS EVENT (the transport answers them FUNCTION NOT SUPPORTED), I_T NEXUS RESET
 * (iSCSI has none; session reinstatement plays that role) and the obsolete WAKEUP.
 *
 * REPD=0 returns the 4-byte basic parameter data; REPD=1 the 16-byte extended form, with
 * TMFTMOV=0 (no timeouts are reported, so every timeout field is 0).
 */
import type { LunHandler } from "../context.js";
import { dataIn } from "./common.js";

/** REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS CDB fields, SPC-4. */
export interface ReportTmfCdb {
  /** Return the extended parameter data. */
  readonly repd: boolean;
  readonly allocationLength: number;
}

export function decodeReportTmf(cdb: Buffer): ReportTmfCdb {
  return { repd: (cdb[2]! & 0x80) !== 0, allocationLength: cdb.readUInt32BE(6) };
}

/** Byte 0 of the parameter data: ATS ATSS CACAS CTSS LURS QTS TRS WAKES. */
const ATS = 0x80;
const ATSS = 0x40;
const CTSS = 0x10;
const LURS = 0x08;
const TRS = 0x02;

/** The extended parameter data: 4 bytes, then ADDITIONAL DATA LENGTH (0Ch) more. */
const EXTENDED_LENGTH = 16;

export const reportSupportedTmf: LunHandler = (cmd) => {
  const d = decodeReportTmf(cmd.cdb);
  const out = Buffer.alloc(d.repd ? EXTENDED_LENGTH : 4);
  out[0] = ATS | ATSS | CTSS | LURS | TRS;
  out[1] = 0; // QUAS QTSS ITNRS: none
  if (d.repd) out[3] = EXTENDED_LENGTH - 4; // ADDITIONAL DATA LENGTH; TMFTMOV (byte 4) = 0
  return dataIn(out, d.allocationLength);
};
