/**
 * PERSISTENT RESERVE OUT service actions as pure transitions (SPC-4 5.13.7 to 5.13.11):
 * (state, sender, request) → RESERVATION CONFLICT, or GOOD with the new state and the unit
 * attentions to establish; CHECK CONDITION is thrown (CheckCondition). Nothing changes until
 * the caller commits the new state (after saving it when APTPL is set, SPC-4 5.13.5.1).
 *
 * Common rules:
 *  - Any service action other than REGISTER and REGISTER AND IGNORE EXISTING KEY from an
 *    unregistered I_T nexus: RESERVATION CONFLICT (SPC-4 5.13.7, table 66).
 *  - The RESERVATION KEY must equal the sender's registered key, except for REGISTER AND
 *    IGNORE EXISTING KEY and for REGISTER from an unregistered nexus (where it must be zero):
 *    RESERVATION CONFLICT otherwise (SPC-4 6.16.3).
 *  - PRgeneration is incremented by REGISTER, REGISTER AND IGNORE EXISTING KEY, REGISTER AND
 *    MOVE, CLEAR, PREEMPT and PREEMPT AND ABORT, not by RESERVE or RELEASE, nor by a command
 *    that ends in an error or a conflict (SPC-4 6.15.2). A REGISTER that "does nothing"
 *    (unregistered nexus, both keys zero, table 67) changes nothing, PRgeneration included.
 *  - APTPL: the value of the last successful REGISTER, REGISTER AND IGNORE EXISTING KEY or
 *    REGISTER AND MOVE decides whether the state persists (SPC-4 5.13.5.1).
 *
 * Unit attentions are returned as (ASC, registrations) pairs; the caller establishes them on
 * every open nexus those registrations apply to, except the nexus that sent the command.
 */

import { SenseKey } from "../constants.js";
import { checkCondition, invalidCdbField, invalidParameterField } from "../sense.js";
import {
  isAllRegistrants,
  isRegistrantsOnly,
  isRegistrantsType,
  MAX_REGISTRATIONS,
  PrAsc,
  PrOut,
  type PrType,
} from "./constants.js";
import type { ProutRequest } from "./request.js";
import {
  bumpGeneration,
  holderRegistration,
  isHolder,
  nextId,
  overlaps,
  type PrNexus,
  type PrState,
  type Registration,
  type Reservation,
  registrationOf,
} from "./state.js";

/** A unit attention to establish for every I_T nexus of these registrations. */
export interface Attention {
  readonly asc: number;
  readonly to: readonly Registration[];
}

export type ProutResult =
  | { readonly status: "conflict" }
  | {
      readonly status: "good";
      /** The new state; the same object when nothing changed. */
      readonly state: PrState;
      readonly attentions: readonly Attention[];
    };

export interface ProutEnv {
  /** Relative target port identifiers the device server knows (REGISTER AND MOVE). */
  readonly targetPorts: ReadonlySet<number>;
}

const CONFLICT: ProutResult = Object.freeze({ status: "conflict" });

function good(state: PrState, attentions: readonly Attention[] = []): ProutResult {
  return { status: "good", state, attentions: attentions.filter((a) => a.to.length > 0) };
}

/** Apply one PERSISTENT RESERVE OUT request from `sender`. Throws CheckCondition. */
export function applyProut(
  state: PrState,
  sender: PrNexus,
  req: ProutRequest,
  env: ProutEnv,
): ProutResult {
  const own = registrationOf(state, sender);
  if (req.action === PrOut.REGISTER || req.action === PrOut.REGISTER_AND_IGNORE_EXISTING_KEY) {
    return register(state, sender, own, req);
  }
  if (!own || req.key !== own.key) return CONFLICT;
  switch (req.action) {
    case PrOut.RESERVE:
      return reserve(state, own, req.type as PrType);
    case PrOut.RELEASE:
      return release(state, own, req.type as PrType);
    case PrOut.CLEAR:
      return clear(state, own);
    case PrOut.PREEMPT:
    case PrOut.PREEMPT_AND_ABORT:
      return preempt(state, own, req);
    case PrOut.REGISTER_AND_MOVE:
      return registerAndMove(state, sender, own, req, env);
  }
}

/** SPC-4 5.13.7, tables 67 and 68 (REGISTER, REGISTER AND IGNORE EXISTING KEY). */
function register(
  state: PrState,
  sender: PrNexus,
  own: Registration | undefined,
  req: ProutRequest,
): ProutResult {
  const ignoreKey = req.action === PrOut.REGISTER_AND_IGNORE_EXISTING_KEY;
  if (!own) {
    if (!ignoreKey && req.key !== 0n) return CONFLICT;
    if (req.saKey === 0n) return good(state); // "Do nothing except return GOOD status."
    const targetPort = req.allTgPt ? undefined : sender.targetPort;
    let id = nextId(state);
    const added: Registration[] = [
      {
        id: id++,
        key: req.saKey,
        initiator: sender.initiator,
        isid: sender.keyBy === "initiator" ? undefined : sender.isid,
        targetPort,
      },
    ];
    // SPEC_I_PT (table 69): also register the I_T nexus of each TransportID, through the same
    // target port(s). All or nothing: an I_T nexus that is already registered fails the command
    // (table 67, footnote b). The sender's own port, or a TransportID listed twice, is
    // registered once.
    for (const { id: initiator, offset } of req.initiators) {
      const target = { initiator: initiator.initiator, isid: initiator.isid, targetPort };
      if (state.registrations.some((r) => overlaps(r, target))) throw invalidParameterField(offset);
      if (added.some((r) => overlaps(r, target))) continue;
      added.push({ id: id++, key: req.saKey, ...target });
    }
    if (state.registrations.length + added.length > MAX_REGISTRATIONS) {
      throw checkCondition(SenseKey.ILLEGAL_REQUEST, PrAsc.INSUFFICIENT_REGISTRATION_RESOURCES);
    }
    return good({
      ...state,
      generation: bumpGeneration(state.generation),
      aptpl: req.aptpl,
      registrations: [...state.registrations, ...added],
    });
  }
  if (!ignoreKey && req.key !== own.key) return CONFLICT;
  // Table 67, footnote c: SPEC_I_PT from a registered I_T nexus.
  if (req.specIPt) throw invalidParameterField(20, 3);
  if (req.saKey === 0n) {
    const { state: next, attentions } = unregister(state, own);
    return good(
      { ...next, generation: bumpGeneration(state.generation), aptpl: req.aptpl },
      attentions,
    );
  }
  // A new key; the reservation, if any, is not affected (SPC-4 5.13.7). With ALL_TG_PT=1 the
  // registration now covers every target port.
  const updated: Registration = {
    ...own,
    key: req.saKey,
    targetPort: req.allTgPt ? undefined : own.targetPort,
  };
  return good({
    ...state,
    generation: bumpGeneration(state.generation),
    aptpl: req.aptpl,
    registrations: state.registrations.map((r) => (r === own ? updated : r)),
  });
}

/** SPC-4 5.13.11.2.3: remove the sender's registration, releasing what it held. */
function unregister(
  state: PrState,
  own: Registration,
): { state: PrState; attentions: Attention[] } {
  const registrations = state.registrations.filter((r) => r !== own);
  const attentions: Attention[] = [];
  let reservation = state.reservation;
  if (reservation) {
    if (isAllRegistrants(reservation.type)) {
      // Released with the last registration (table 71).
      if (registrations.length === 0) reservation = undefined;
    } else if (reservation.holder === own.id) {
      if (isRegistrantsOnly(reservation.type)) {
        attentions.push({ asc: PrAsc.RESERVATIONS_RELEASED, to: registrations });
      }
      reservation = undefined;
    }
  }
  return { state: withReservation({ ...state, registrations }, reservation), attentions };
}

/** SPC-4 5.13.9: create the persistent reservation. */
function reserve(state: PrState, own: Registration, type: PrType): ProutResult {
  const current = state.reservation;
  if (!current) return good({ ...state, reservation: newReservation(type, own) });
  // The holder asking again for the same type and scope: no change, GOOD. A holder changing the
  // type, or anyone else: RESERVATION CONFLICT.
  if (isHolder(state, own) && current.type === type) return good(state);
  return CONFLICT;
}

/** SPC-4 5.13.11.2.2: release the persistent reservation. */
function release(state: PrState, own: Registration, type: PrType): ProutResult {
  const current = state.reservation;
  // No reservation, or a registrant that does not hold it: nothing happens, GOOD.
  if (!current || !isHolder(state, own)) return good(state);
  if (current.type !== type) {
    throw checkCondition(SenseKey.ILLEGAL_REQUEST, PrAsc.INVALID_RELEASE_OF_PERSISTENT_RESERVATION);
  }
  // NUAR=0 (Control mode page): Registrants Only and All Registrants releases tell the other
  // registrants.
  const attentions = isRegistrantsType(current.type)
    ? [{ asc: PrAsc.RESERVATIONS_RELEASED, to: state.registrations.filter((r) => r !== own) }]
    : [];
  return good(withReservation(state, undefined), attentions);
}

/** SPC-4 5.13.11.2.7: release the reservation and remove every registration. */
function clear(state: PrState, own: Registration): ProutResult {
  return good(
    {
      generation: bumpGeneration(state.generation),
      aptpl: state.aptpl,
      registrations: [],
    },
    [{ asc: PrAsc.RESERVATIONS_PREEMPTED, to: state.registrations.filter((r) => r !== own) }],
  );
}

/**
 * SPC-4 5.13.11.2.4 to 5.13.11.2.6, figure 9 and table 72 (PREEMPT, PREEMPT AND ABORT).
 * PREEMPT AND ABORT is the same here; what it adds is in ./commands.ts (README: best effort).
 */
function preempt(state: PrState, own: Registration, req: ProutRequest): ProutResult {
  const current = state.reservation;
  const type = req.type as PrType;
  if (current && isAllRegistrants(current.type)) {
    if (req.saKey === 0n) {
      // Remove every other registration, and replace the reservation.
      const victims = state.registrations.filter((r) => r !== own);
      return good(
        {
          ...state,
          generation: bumpGeneration(state.generation),
          registrations: [own],
          reservation: newReservation(type, own),
        },
        [{ asc: PrAsc.REGISTRATIONS_PREEMPTED, to: victims }],
      );
    }
    return removeRegistrations(state, own, req.saKey);
  }
  if (current) {
    const holder = holderRegistration(state);
    if (holder && req.saKey === holder.key) {
      // 5.13.11.2.4.3: preempt the reservation. Every registration with that key goes, except
      // the sender's own (a holder may preempt itself, e.g. to change the type).
      const victims = state.registrations.filter((r) => r.key === req.saKey && r !== own);
      const kept = state.registrations.filter((r) => !victims.includes(r));
      const attentions: Attention[] = [{ asc: PrAsc.REGISTRATIONS_PREEMPTED, to: victims }];
      if (current.type !== type) {
        attentions.push({
          asc: PrAsc.RESERVATIONS_RELEASED,
          to: kept.filter((r) => r !== own),
        });
      }
      return good(
        {
          ...state,
          generation: bumpGeneration(state.generation),
          registrations: kept,
          reservation: newReservation(type, own),
        },
        attentions,
      );
    }
  }
  // Table 72: SERVICE ACTION RESERVATION KEY zero (and no All Registrants reservation).
  if (req.saKey === 0n) throw invalidParameterField(8);
  return removeRegistrations(state, own, req.saKey);
}

/** SPC-4 5.13.11.2.5: remove the registrations with key `key`; the reservation stays. */
function removeRegistrations(state: PrState, own: Registration, key: bigint): ProutResult {
  const victims = state.registrations.filter((r) => r.key === key);
  if (victims.length === 0) return CONFLICT;
  const kept = state.registrations.filter((r) => r.key !== key);
  let reservation = state.reservation;
  // An All Registrants reservation ends with its last registrant (table 71). (A holder of any
  // other type is not among the victims here: its key leads to the preempt path above.)
  if (reservation && isAllRegistrants(reservation.type) && kept.length === 0) {
    reservation = undefined;
  }
  // The sender may remove its own registration this way (same key), without a unit attention.
  return good(
    withReservation(
      { ...state, generation: bumpGeneration(state.generation), registrations: kept },
      reservation,
    ),
    [{ asc: PrAsc.REGISTRATIONS_PREEMPTED, to: victims.filter((r) => r !== own) }],
  );
}

/** SPC-4 5.13.8, table 70: register another I_T nexus and move the reservation to it. */
function registerAndMove(
  state: PrState,
  sender: PrNexus,
  own: Registration,
  req: ProutRequest,
  env: ProutEnv,
): ProutResult {
  const current = state.reservation;
  // No persistent reservation: INVALID FIELD IN CDB (5.13.8). All Registrants, or a sender that
  // is not the holder: RESERVATION CONFLICT.
  if (!current) throw invalidCdbField(1, 4);
  if (isAllRegistrants(current.type) || current.holder !== own.id) return CONFLICT;
  if (req.saKey === 0n) throw invalidParameterField(8);
  if (!env.targetPorts.has(req.relativeTargetPort)) throw invalidParameterField(18);
  const dest = req.initiators[0];
  if (!dest) throw invalidParameterField(20);
  const { initiator, isid } = dest.id;
  // The sender's own initiator port as the destination: INVALID FIELD IN PARAMETER LIST.
  if (initiator === sender.initiator && (isid === undefined || isid === sender.isid)) {
    throw invalidParameterField(dest.offset);
  }
  const target = { initiator, isid, targetPort: req.relativeTargetPort };
  // "It is not an error ... to register an I_T nexus that is already registered": its key is
  // replaced.
  const existing =
    state.registrations.find(
      (r) =>
        r !== own &&
        r.initiator === initiator &&
        r.isid === isid &&
        r.targetPort === req.relativeTargetPort,
    ) ?? state.registrations.find((r) => r !== own && overlaps(r, target));
  let registrations: Registration[];
  let destination: number;
  if (existing) {
    destination = existing.id;
    registrations = state.registrations.map((r) =>
      r === existing ? { ...existing, key: req.saKey } : r,
    );
  } else {
    if (state.registrations.length >= MAX_REGISTRATIONS) {
      throw checkCondition(SenseKey.ILLEGAL_REQUEST, PrAsc.INSUFFICIENT_REGISTRATION_RESOURCES);
    }
    destination = nextId(state);
    registrations = [...state.registrations, { id: destination, key: req.saKey, ...target }];
  }
  // The reservation moves with the same scope and type; UNREG then unregisters the sender,
  // which no longer holds anything.
  if (req.unreg) registrations = registrations.filter((r) => r !== own);
  return good({
    generation: bumpGeneration(state.generation),
    aptpl: req.aptpl,
    registrations,
    reservation: { type: current.type, holder: destination },
  });
}

function newReservation(type: PrType, holder: Registration): Reservation {
  return isAllRegistrants(type) ? { type } : { type, holder: holder.id };
}

function withReservation(state: PrState, reservation: Reservation | undefined): PrState {
  if (reservation) return { ...state, reservation };
  const { reservation: _gone, ...rest } = state;
  return rest;
}
