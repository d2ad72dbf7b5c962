/**
 * PREVENT ALLOW MEDIUM REMOVAL, SBC-4 (opcode 1Eh).
 *
 * Our logical units are not removable (RMB=0 in the standard INQUIRY data; START STOP UNIT
 * refuses LOEJ), so there is no medium removal to prevent: PREVENT 00b (allowed) and 01b
 * (prevented) both complete with GOOD and change nothing. The obsolete codes 10b and 11b (the
 * medium changer forms) are refused by the usage map (bit 1 of byte 4): INVALID FIELD IN CDB.
 *
 * Answering GOOD rather than INVALID COMMAND OPERATION CODE is what hosts that lock the "door"
 * of every disk expect; libiscsi's PreventAllow tests check the RMB bit first and skip every
 * test on a non-removable unit, so they stay skipped.
 */
import type { LunHandler } from "../context.js";
import type { ReservationAccess } from "../pr/access.js";
import { GOOD } from "./common.js";

export const preventAllowMediumRemoval: LunHandler = () => GOOD;

/**
 * Under a reservation (SPC-4 5.13.1 table 65): PREVENT 00b is allowed for everyone, any other
 * PREVENT value conflicts.
 */
export const preventAllowAccess = (cdb: Buffer): ReservationAccess =>
  (cdb[4]! & 0x03) === 0 ? "allowed" : "write";
