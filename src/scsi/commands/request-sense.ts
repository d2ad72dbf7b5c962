/**
 * REQUEST SENSE (SPC-4). iSCSI delivers sense data with every CHECK CONDITION (autosense), so
 * there is no "last error" to return here; what REQUEST SENSE reports, and clears, is what is
 * pending for this nexus on the logical unit: a deferred error first, else a unit attention;
 * else, while a sanitize operation runs on the unit, NOT READY / LOGICAL UNIT NOT READY,
 * SANITIZE IN PROGRESS with the PROGRESS INDICATION in the SENSE KEY SPECIFIC field (SBC-4
 * sanitize operations, SPC-4 4.5.2.4.4), which is how an initiator that sent SANITIZE with
 * IMMED=1 follows it; else NO SENSE. For a LUN outside the view: ILLEGAL REQUEST / LOGICAL UNIT
 * NOT SUPPORTED, as parameter data with GOOD status. DESC=1 returns descriptor format sense data
 * (SPC-4 4.5.2).
 */
import { Asc } from "../asc.js";
import { decodeRequestSense } from "../cdb-spc.js";
import { SenseKey } from "../constants.js";
import type { NexusHandler } from "../context.js";
import { encodeDescriptorSense, encodeFixedSense, type SenseSpec } from "../sense.js";
import { dataIn } from "./common.js";
import { sanitizeSense } from "./sanitize.js";

const NO_SENSE: SenseSpec = { key: SenseKey.NO_SENSE, asc: Asc.NO_ADDITIONAL_SENSE };
const NOT_SUPPORTED: SenseSpec = {
  key: SenseKey.ILLEGAL_REQUEST,
  asc: Asc.LOGICAL_UNIT_NOT_SUPPORTED,
};

export const requestSense: NexusHandler = (cmd, nexus, lu) => {
  const d = decodeRequestSense(cmd.cdb);
  const sense = lu
    ? (lu.unit.takeReportable(nexus) ?? sanitizeSense(lu.unit) ?? NO_SENSE)
    : NOT_SUPPORTED;
  const data = d.desc ? encodeDescriptorSense(sense) : encodeFixedSense(sense);
  return dataIn(data, d.allocationLength);
};
