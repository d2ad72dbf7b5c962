/**
 * What a command is under a reservation, and whether it may run (SPC-4 5.13.1 table 65, SBC-4
 * 4.17 table 13, SPC-4 5.13.3).
 *
 * Every row of the dispatch table says what its command is (`ReservationAccess`):
 *  - "allowed": allowed under every type (INQUIRY, TEST UNIT READY, READ CAPACITY, ...);
 *  - "read": allowed through Write Exclusive types, conflicts under Exclusive Access types
 *    (READ, VERIFY, PRE-FETCH, GET LBA STATUS; and MODE SENSE and REPORT SUPPORTED OPERATION
 *    CODES, which table 65 footnote b lets us allow through Write Exclusive: REPORT
 *    CAPABILITIES says so with ALLOW COMMANDS 011b);
 *  - "write": conflicts under every type (WRITE, WRITE SAME, UNMAP, SYNCHRONIZE CACHE, MODE
 *    SELECT, ...). The default for a row that conflicts with RESERVE(6);
 *  - "persistent-reserve": PERSISTENT RESERVE IN/OUT, which check for themselves (table 66);
 *  - "reserve-release": RESERVE(6)/RELEASE(6), see `legacyReserveOutcome`.
 * A row may instead give a function of the CDB (START STOP UNIT depends on its fields).
 *
 * The columns of tables 65 and 13 reduce to: a persistent reservation holder, and any
 * registered I_T nexus under a Registrants Only or All Registrants type, run everything; every
 * other I_T nexus is subject to the class of the command and the type of the reservation.
 */
import { isRegistrantsType, isWriteExclusive } from "./constants.js";
import { type PrNexus, type PrState, registrationOf } from "./state.js";

export type ReservationAccess =
  | "allowed"
  | "read"
  | "write"
  | "persistent-reserve"
  | "reserve-release";

export type ReservationRule = ReservationAccess | ((cdb: Buffer) => ReservationAccess);

/**
 * SBC-4 table 13: START STOP UNIT with START=1 and POWER CONDITION=0h is allowed under every
 * reservation; any other START STOP UNIT conflicts.
 */
export const startStopUnitAccess = (cdb: Buffer): ReservationAccess =>
  (cdb[4]! & 0x01) !== 0 && cdb[4]! >>> 4 === 0 ? "allowed" : "write";

/** May nexus `n` run a command of class "allowed", "read" or "write"? */
export function conflictsWithPersistentReservation(
  state: PrState,
  n: PrNexus,
  access: "allowed" | "read" | "write",
): boolean {
  const r = state.reservation;
  if (!r || access === "allowed") return false;
  const own = registrationOf(state, n);
  if (own && (isRegistrantsType(r.type) || r.holder === own.id)) return false;
  return access === "write" || !isWriteExclusive(r.type);
}

/**
 * SPC-4 5.13.3 (CRH=1), for RESERVE(6) and RELEASE(6) while some I_T nexus is registered:
 * from a persistent reservation holder, or from a registrant under a Registrants Only or All
 * Registrants reservation, GOOD without any effect ("good"); in every other case they are
 * processed as SPC-2 says, and SPC-2 5.5.1 makes them conflict while any registration exists
 * ("conflict").
 */
export function legacyReserveOutcome(state: PrState, n: PrNexus): "good" | "conflict" {
  const r = state.reservation;
  const own = r ? registrationOf(state, n) : undefined;
  if (r && own && (isRegistrantsType(r.type) || r.holder === own.id)) return "good";
  return "conflict";
}
