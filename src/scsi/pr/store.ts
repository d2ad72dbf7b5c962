/**
 * Where the persistent reservation state of a logical unit goes while APTPL is set (SPC-4
 * 5.13.5.1, "persist through power loss"), injected into the ScsiTarget by the server wiring
 * (src/control/pr-store.ts keeps one JSON file per volume).
 *
 * Contract:
 *  - `save(volumeId, state)` resolves only once `state` is durable: a crash or power loss after
 *    that finds either it or a later state, never an older one or a mix. The PERSISTENT
 *    RESERVE OUT command that caused it returns GOOD only after that (SPC-4 5.13.5.1).
 *    `save(volumeId, undefined)` durably forgets the volume (APTPL went back to zero: a power
 *    loss must then release everything).
 *  - `load(volumeId)` resolves the last saved state, or undefined when there is none; it
 *    rejects when a state exists but cannot be read (never pass a corrupt file off as "no
 *    reservations": that would silently drop a fence).
 *  - Calls for one volume never overlap: the SCSI layer serializes them.
 *
 * `encodePrState` / `decodePrState` give the JSON form (keys as hex strings, since JSON has no
 * 64-bit integers) and validate it on the way back.
 */
import { isAllRegistrants, isPrType } from "./constants.js";
import type { PrState, Registration, Reservation } from "./state.js";

export interface ReservationStore {
  load(volumeId: string): Promise<PrState | undefined>;
  save(volumeId: string, state: PrState | undefined): Promise<void>;
}

/** The JSON form of a PrState, format version 1. */
export interface PrStateJson {
  readonly version: 1;
  readonly generation: number;
  readonly aptpl: boolean;
  readonly registrations: readonly {
    readonly id: number;
    /** "0x" + 16 hex digits. */
    readonly key: string;
    readonly initiator: string;
    readonly isid?: string;
    readonly targetPort?: number;
  }[];
  readonly reservation?: { readonly type: number; readonly holder?: number };
}

export function encodePrState(state: PrState): PrStateJson {
  return {
    version: 1,
    generation: state.generation,
    aptpl: state.aptpl,
    registrations: state.registrations.map((r) => ({
      id: r.id,
      key: `0x${r.key.toString(16).padStart(16, "0")}`,
      initiator: r.initiator,
      ...(r.isid === undefined ? {} : { isid: r.isid }),
      ...(r.targetPort === undefined ? {} : { targetPort: r.targetPort }),
    })),
    ...(state.reservation
      ? {
          reservation: {
            type: state.reservation.type,
            ...(state.reservation.holder === undefined ? {} : { holder: state.reservation.holder }),
          },
        }
      : {}),
  };
}

/** Validate and convert the JSON form; throws an Error naming the first problem. */
export function decodePrState(value: unknown): PrState {
  const o = object(value, "state");
  if (o.version !== 1) throw new Error(`unsupported version ${String(o.version)}`);
  const generation = o.generation;
  if (!isUint32(generation)) throw new Error("generation: expected a 32-bit unsigned integer");
  if (typeof o.aptpl !== "boolean") throw new Error("aptpl: expected true or false");
  if (!Array.isArray(o.registrations)) throw new Error("registrations: expected a list");
  const ids = new Set<number>();
  const registrations: Registration[] = o.registrations.map((item: unknown, i: number) => {
    const where = `registrations[${i}]`;
    const r = object(item, where);
    if (!Number.isSafeInteger(r.id) || (r.id as number) <= 0 || ids.has(r.id as number)) {
      throw new Error(`${where}.id: expected a unique positive integer`);
    }
    ids.add(r.id as number);
    if (typeof r.key !== "string" || !/^0x[0-9a-f]{16}$/.test(r.key) || BigInt(r.key) === 0n) {
      throw new Error(`${where}.key: expected "0x" and 16 hex digits, not all zero`);
    }
    if (typeof r.initiator !== "string" || r.initiator === "") {
      throw new Error(`${where}.initiator: expected an iSCSI name`);
    }
    if (r.isid !== undefined && (typeof r.isid !== "string" || !/^[0-9a-f]{12}$/.test(r.isid))) {
      throw new Error(`${where}.isid: expected 12 hex digits`);
    }
    if (
      r.targetPort !== undefined &&
      (!Number.isInteger(r.targetPort) ||
        (r.targetPort as number) < 1 ||
        (r.targetPort as number) > 0xffff)
    ) {
      throw new Error(`${where}.targetPort: expected 1..65535`);
    }
    return {
      id: r.id as number,
      key: BigInt(r.key),
      initiator: r.initiator.toLowerCase(),
      isid: r.isid as string | undefined,
      targetPort: r.targetPort as number | undefined,
    };
  });
  let reservation: Reservation | undefined;
  if (o.reservation !== undefined) {
    const r = object(o.reservation, "reservation");
    if (typeof r.type !== "number" || !isPrType(r.type)) {
      throw new Error("reservation.type: expected a persistent reservation type");
    }
    if (isAllRegistrants(r.type)) {
      // SPC-4 5.13.10: every registrant holds an All Registrants reservation.
      if (r.holder !== undefined) throw new Error("reservation.holder: not for this type");
      reservation = { type: r.type };
    } else {
      if (typeof r.holder !== "number" || !ids.has(r.holder)) {
        throw new Error("reservation.holder: expected the id of a registration");
      }
      reservation = { type: r.type, holder: r.holder };
    }
  }
  return reservation
    ? { generation, aptpl: o.aptpl, registrations, reservation }
    : { generation, aptpl: o.aptpl, registrations };
}

function object(value: unknown, where: string): Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error(`${where}: expected an object`);
  }
  return value as Record<string, unknown>;
}

function isUint32(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= 0xffffffff;
}
