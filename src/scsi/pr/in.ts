/**
 * PERSISTENT RESERVE IN parameter data (SPC-4 6.15), built whole from the state; the caller
 * truncates it to the ALLOCATION LENGTH, never altering the length fields (SPC-4 4.2.5.6).
 */
import { Capabilities, isAllRegistrants, LU_SCOPE } from "./constants.js";
import { isHolder, type PrState } from "./state.js";
import { encodeTransportId } from "./transport-id.js";

const HEADER = 8;

function header(generation: number, additionalLength: number, extra: number): Buffer {
  const out = Buffer.alloc(HEADER + extra);
  out.writeUInt32BE(generation, 0);
  out.writeUInt32BE(additionalLength, 4);
  return out;
}

/** SPC-4 6.15.2, table 202: PRGENERATION, ADDITIONAL LENGTH, one key per registration. */
export function readKeys(state: PrState): Buffer {
  const n = state.registrations.length;
  const out = header(state.generation, n * 8, n * 8);
  state.registrations.forEach((r, i) => {
    out.writeBigUInt64BE(r.key, HEADER + i * 8);
  });
  return out;
}

/**
 * SPC-4 6.15.3, tables 203-204: PRGENERATION, ADDITIONAL LENGTH (0 or 16), then the
 * reservation: RESERVATION KEY (the holder's; zero for All Registrants types, SPC-4 5.13.10),
 * obsolete (4), reserved, SCOPE and TYPE, obsolete (2).
 */
export function readReservation(state: PrState): Buffer {
  const r = state.reservation;
  if (!r) return header(state.generation, 0, 0);
  const out = header(state.generation, 16, 16);
  if (!isAllRegistrants(r.type)) {
    const holder = state.registrations.find((x) => x.id === r.holder);
    if (holder) out.writeBigUInt64BE(holder.key, HEADER);
  }
  out[HEADER + 13] = (LU_SCOPE << 4) | r.type;
  return out;
}

/** SPC-4 6.15.4, table 207 (see ./constants.ts Capabilities for what we claim). */
export function reportCapabilities(state: PrState, aptplSupported: boolean): Buffer {
  const out = Buffer.alloc(Capabilities.LENGTH);
  out.writeUInt16BE(Capabilities.LENGTH, 0);
  out[2] =
    Capabilities.CRH |
    Capabilities.SIP_C |
    Capabilities.ATP_C |
    (aptplSupported ? Capabilities.PTPL_C : 0);
  out[3] =
    Capabilities.TMV | Capabilities.ALLOW_COMMANDS_011B | (state.aptpl ? Capabilities.PTPL_A : 0);
  out.writeUInt16BE(Capabilities.TYPE_MASK, 4);
  return out;
}

/**
 * SPC-4 6.15.5, tables 210-211: one full status descriptor per registration: RESERVATION KEY,
 * ALL_TG_PT and R_HOLDER, SCOPE and TYPE (holders only), RELATIVE TARGET PORT IDENTIFIER
 * (0 when ALL_TG_PT=1: not defined by the standard), ADDITIONAL DESCRIPTOR LENGTH and the
 * TransportID (format 01b for a registration of one ISID, 00b for one of every ISID).
 */
export function readFullStatus(state: PrState): Buffer {
  const descriptors = state.registrations.map((r) => {
    const tid = encodeTransportId({ initiator: r.initiator, isid: r.isid });
    const d = Buffer.alloc(24 + tid.length);
    d.writeBigUInt64BE(r.key, 0);
    const holder = isHolder(state, r);
    d[12] = (r.targetPort === undefined ? 0x02 : 0) | (holder ? 0x01 : 0);
    if (holder && state.reservation) d[13] = (LU_SCOPE << 4) | state.reservation.type;
    d.writeUInt16BE(r.targetPort ?? 0, 18);
    d.writeUInt32BE(tid.length, 20);
    tid.copy(d, 24);
    return d;
  });
  const body = Buffer.concat(descriptors);
  const out = header(state.generation, body.length, body.length);
  body.copy(out, HEADER);
  return out;
}
