/**
 * The persistent reservation state of one logical unit (SPC-4 5.13) as an immutable value:
 * the registrations, the persistent reservation if any, the PRgeneration counter and the
 * APTPL setting. Service actions (./out.ts) compute a new value from the old one, so that a
 * command can be refused, or its state saved (APTPL), before anything visible changes.
 *
 * Registrations are keyed by I_T nexus (SPC-4 5.13.7): the initiator port (for iSCSI the
 * initiator name plus the ISID, SPC-4 7.6.4.6) and the target port (the relative target port
 * identifier, which is the TPGT here). Two relaxations, both explicit in the registration:
 *  - `isid` absent: the registration applies to every initiator port of that initiator name.
 *    It is made by a nexus whose agent is configured with `reservations.key_by: initiator`
 *    (so that a re-login with a new ISID keeps it), and by TransportIDs of format 00b, which
 *    name an iSCSI initiator device rather than a port (SPC-4 7.6.4.6).
 *  - `targetPort` absent: the registration applies through every target port (ALL_TG_PT=1,
 *    SPC-4 6.16.3).
 */
import type { NexusIdentity } from "../types.js";
import { isAllRegistrants, type PrType } from "./constants.js";

/** How registrations of one nexus are keyed (the agent's `reservations.key_by`). */
export type KeyBy = "nexus" | "initiator";

/** An I_T nexus as persistent reservations see it. */
export interface PrNexus {
  /** Initiator name, lowercased (RFC 7143 4.2.7.1: iSCSI names are case-insensitive). */
  readonly initiator: string;
  /** ISID, 12 lowercase hex digits. */
  readonly isid: string;
  /** Relative target port identifier (the TPGT). */
  readonly targetPort: number;
  readonly keyBy: KeyBy;
}

export interface Registration {
  /** Unique within the state; the reservation refers to its holder by it. */
  readonly id: number;
  /** The reservation key, a 64-bit unsigned value, never 0. */
  readonly key: bigint;
  /** Initiator name, lowercased. */
  readonly initiator: string;
  /** ISID (12 lowercase hex digits); absent: every initiator port of `initiator`. */
  readonly isid?: string;
  /** Relative target port identifier; absent: every target port (ALL_TG_PT). */
  readonly targetPort?: number;
}

export interface Reservation {
  readonly type: PrType;
  /**
   * Registration id of the holder (SPC-4 5.13.10); absent for All Registrants types, whose
   * holders are all the registered I_T nexuses.
   */
  readonly holder?: number;
}

export interface PrState {
  /** PRgeneration (SPC-4 6.15.2): a 32-bit wrapping counter. */
  readonly generation: number;
  /** The last valid APTPL bit received (SPC-4 5.13.5.1): the state is saved while it is set. */
  readonly aptpl: boolean;
  /** In the order they were made (READ KEYS and READ FULL STATUS report them in this order). */
  readonly registrations: readonly Registration[];
  /** The persistent reservation (scope is always LU_SCOPE), if any. */
  readonly reservation?: Reservation;
}

export const EMPTY_STATE: PrState = Object.freeze({
  generation: 0,
  aptpl: false,
  registrations: Object.freeze([]) as readonly Registration[],
});

const nexusCache = new WeakMap<NexusIdentity, PrNexus>();

/** The PR view of a nexus identity (cached per identity object: the hot path asks for it). */
export function prNexusOf(identity: NexusIdentity): PrNexus {
  let n = nexusCache.get(identity);
  if (!n) {
    n = {
      initiator: identity.initiatorName.toLowerCase(),
      isid: identity.isid.toLowerCase(),
      targetPort: identity.tpgt,
      keyBy: identity.reservationKeyBy ?? "nexus",
    };
    nexusCache.set(identity, n);
  }
  return n;
}

/** Does `reg` apply to I_T nexus `n`? */
export function appliesTo(reg: Registration, n: PrNexus): boolean {
  return (
    reg.initiator === n.initiator &&
    (reg.isid === undefined || reg.isid === n.isid) &&
    (reg.targetPort === undefined || reg.targetPort === n.targetPort)
  );
}

/**
 * The registration of nexus `n`, if it is registered. A registration for its exact ISID wins
 * over one for every ISID (both exist only when an agent's `key_by` changed between logins).
 */
export function registrationOf(state: PrState, n: PrNexus): Registration | undefined {
  let any: Registration | undefined;
  for (const reg of state.registrations) {
    if (!appliesTo(reg, n)) continue;
    if (reg.isid !== undefined) return reg;
    any ??= reg;
  }
  return any;
}

/** Is `reg` a persistent reservation holder (SPC-4 5.13.10)? */
export function isHolder(state: PrState, reg: Registration): boolean {
  const r = state.reservation;
  if (!r) return false;
  return isAllRegistrants(r.type) || r.holder === reg.id;
}

/** The holder's registration of a reservation that is not of an All Registrants type. */
export function holderRegistration(state: PrState): Registration | undefined {
  const holder = state.reservation?.holder;
  return holder === undefined ? undefined : state.registrations.find((r) => r.id === holder);
}

/** The next free registration id. */
export function nextId(state: PrState): number {
  let max = 0;
  for (const r of state.registrations) if (r.id > max) max = r.id;
  return max + 1;
}

/** Do two registrations designate an I_T nexus in common? */
export function overlaps(
  a: Pick<Registration, "initiator" | "isid" | "targetPort">,
  b: Pick<Registration, "initiator" | "isid" | "targetPort">,
): boolean {
  return (
    a.initiator === b.initiator &&
    (a.isid === undefined || b.isid === undefined || a.isid === b.isid) &&
    (a.targetPort === undefined || b.targetPort === undefined || a.targetPort === b.targetPort)
  );
}

/** PRgeneration + 1, wrapping at 2^32 (SPC-4 6.15.2). */
export function bumpGeneration(generation: number): number {
  return (generation + 1) >>> 0;
}
