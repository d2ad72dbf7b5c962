/**
 * INQUIRY (SPC-4 6.6): standard data here, VPD pages in ./vpd.ts.
 *
 * INQUIRY works for any LUN: for a LUN outside the initiator's view the standard data carries
 * PERIPHERAL QUALIFIER 011b / DEVICE TYPE 1Fh ("no logical unit here"), as SPC-4 6.6.2 asks,
 * rather than an error.
 */
import { asciiField } from "../ascii.js";
import { decodeInquiry } from "../cdb-spc.js";
import { Peripheral, VersionDescriptor } from "../constants.js";
import type { NexusHandler } from "../context.js";
import { invalidCdbField } from "../sense.js";
import type { TargetInfo } from "../types.js";
import { dataIn } from "./common.js";
import { buildVpdPage } from "./vpd.js";

/** Standard INQUIRY data length: through the last version descriptor and reserved bytes. */
export const STANDARD_INQUIRY_LENGTH = 96;

/** Version descriptors reported, in the order SPC-4 recommends: architecture, transport, primary, device type. */
export const VERSION_DESCRIPTORS: readonly number[] = [
  VersionDescriptor.SAM_5,
  VersionDescriptor.ISCSI,
  VersionDescriptor.SPC_4,
  VersionDescriptor.SBC_3,
  VersionDescriptor.SBC_4,
];

/**
 * Standard INQUIRY data, SPC-4 6.6.2.
 *  - VERSION 06h (SPC-4), RESPONSE DATA FORMAT 2, HISUP=1 (LUNs are SAM-5 structures).
 *  - TPGS=00b: no asymmetric logical unit access is reported, because reporting it requires
 *    REPORT TARGET PORT GROUPS; it comes with multi-gateway ALUA (see DESIGN.md "later").
 *  - 3PC=1: the logical unit is a copy manager (EXTENDED COPY (LID1), ./xcopy.ts, with the
 *    Third-party Copy VPD page). PROTECT=0 until protection information exists.
 *  - CMDQUE=1: the task set accepts many commands per I_T nexus.
 */
export function standardInquiry(info: TargetInfo, peripheral: number): Buffer {
  const out = Buffer.alloc(STANDARD_INQUIRY_LENGTH);
  out[0] = peripheral;
  out[1] = 0x00; // RMB=0, LU_CONG=0
  out[2] = 0x06; // VERSION: SPC-4
  out[3] = 0x10 | 0x02; // HISUP, RESPONSE DATA FORMAT 2
  out[4] = STANDARD_INQUIRY_LENGTH - 5; // ADDITIONAL LENGTH
  out[5] = 0x08; // SCCS ACC TPGS(00b) 3PC PROTECT
  out[6] = 0x00; // ENCSERV, MULTIP
  out[7] = 0x02; // CMDQUE
  asciiField(info.vendor, 8).copy(out, 8);
  asciiField(info.product, 16).copy(out, 16);
  asciiField(info.revision, 4).copy(out, 32);
  // Bytes 36-55 vendor specific, 56-57 SPI-only / reserved: zero.
  VERSION_DESCRIPTORS.forEach((d, i) => {
    out.writeUInt16BE(d, 58 + 2 * i);
  });
  return out;
}

export const inquiry: NexusHandler = (cmd, nexus, lu) => {
  const d = decodeInquiry(cmd.cdb);
  if (!d.evpd) {
    if (d.pageCode !== 0) throw invalidCdbField(2);
    const peripheral = lu ? Peripheral.DISK : Peripheral.NO_LUN;
    return dataIn(standardInquiry(nexus.info, peripheral), d.allocationLength);
  }
  return dataIn(buildVpdPage(d.pageCode, nexus, lu), d.allocationLength);
};
