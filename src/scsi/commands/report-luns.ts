/**
 * REPORT LUNS (SPC-4): the LUN inventory of the initiator's view, in SAM-5 LUN format.
 * Works on any LUN (SAM-5: it is addressed to LUN 0 or the REPORT LUNS well known LU, but
 * initiators send it anywhere). It also clears REPORTED LUNS DATA HAS CHANGED for this nexus
 * on every logical unit of the view (SPC-4, unit attention conditions).
 */
import { Asc } from "../asc.js";
import { decodeReportLuns } from "../cdb-spc.js";
import type { NexusHandler } from "../context.js";
import { writeLun } from "../lun.js";
import { invalidCdbField } from "../sense.js";
import { dataIn } from "./common.js";

/** SELECT REPORT values (SPC-4): 00h all but well known, 01h well known only, 02h all. */
const SELECT_LOGICAL_UNITS = 0x00;
const SELECT_WELL_KNOWN = 0x01;
const SELECT_ALL = 0x02;

/** The REPORT LUNS parameter data for a list of LUN numbers (deduplicated, ascending). */
export function reportLunsData(luns: Iterable<number>): Buffer {
  const sorted = [...new Set(luns)].sort((a, b) => a - b);
  const out = Buffer.alloc(8 + 8 * sorted.length);
  out.writeUInt32BE(8 * sorted.length, 0); // LUN LIST LENGTH
  sorted.forEach((lun, i) => {
    writeLun(out, 8 + 8 * i, lun);
  });
  return out;
}

export const reportLuns: NexusHandler = (cmd, nexus) => {
  const d = decodeReportLuns(cmd.cdb);
  if (
    d.selectReport !== SELECT_LOGICAL_UNITS &&
    d.selectReport !== SELECT_WELL_KNOWN &&
    d.selectReport !== SELECT_ALL
  ) {
    throw invalidCdbField(2);
  }
  const entries = nexus.view.list();
  for (const entry of entries) {
    nexus.unitOf(entry.volumeId).clearUnitAttention(nexus, Asc.REPORTED_LUNS_DATA_HAS_CHANGED);
  }
  // We have no well known logical units.
  const luns = d.selectReport === SELECT_WELL_KNOWN ? [] : entries.map((e) => e.lun);
  return dataIn(reportLunsData(luns), d.allocationLength);
};
