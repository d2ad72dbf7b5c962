/**
 * Commands that only touch logical unit state: TEST UNIT READY (SPC-4), RESERVE(6) and
 * RELEASE(6) (SPC-2 reservations, kept by SPC-4 as obsolete but still used by some hosts).
 */
import type { LunHandler } from "../context.js";
import { GOOD } from "./common.js";

/** TEST UNIT READY: a mapped volume is always ready; pending conditions were reported first. */
export const testUnitReady: LunHandler = () => GOOD;

/**
 * RESERVE(6): reserve the logical unit for this I_T nexus. A reservation held by another
 * nexus is answered with RESERVATION CONFLICT by the dispatcher before this runs; reserving
 * again from the holder succeeds. Released by RELEASE(6) from the holder, logical unit reset,
 * target reset and I_T nexus loss.
 */
export const reserve6: LunHandler = (_cmd, lu) => {
  lu.unit.reservationHolder = lu.nexus;
  return GOOD;
};

/** RELEASE(6): from a nexus that does not hold the reservation it is a no-op with GOOD. */
export const release6: LunHandler = (_cmd, lu) => {
  if (lu.unit.reservationHolder === lu.nexus) lu.unit.reservationHolder = undefined;
  return GOOD;
};
