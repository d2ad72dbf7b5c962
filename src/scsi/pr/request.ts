/**
 * Decoding and validation of a PERSISTENT RESERVE OUT command (SPC-4 6.16): the CDB, then the
 * parameter list, into one readonly request. Everything here is about the command's own
 * fields; what the request does to the reservation state is ./out.ts.
 *
 * CDB (SPC-4 6.16.1, table 212): SERVICE ACTION (byte 1), SCOPE and TYPE (byte 2), PARAMETER
 * LIST LENGTH (bytes 5-8). Per table 216, SCOPE must be LU_SCOPE and TYPE a supported type for
 * RESERVE, RELEASE, PREEMPT and PREEMPT AND ABORT (INVALID FIELD IN CDB otherwise); both are
 * ignored for REGISTER, REGISTER AND IGNORE EXISTING KEY and CLEAR, and for REGISTER AND MOVE
 * (SPC-4 5.13.8 b: "ignore the contents of the SCOPE and TYPE fields").
 *
 * Basic parameter list (SPC-4 6.16.3, table 214): RESERVATION KEY (0-7), SERVICE ACTION
 * RESERVATION KEY (8-15), obsolete (16-19), SPEC_I_PT / ALL_TG_PT / APTPL (byte 20), then with
 * SPEC_I_PT the TRANSPORTID PARAMETER DATA LENGTH (24-27) and TransportIDs (table 215).
 * REGISTER AND MOVE parameter list (SPC-4 6.16.4, table 217): RESERVATION KEY, SERVICE ACTION
 * RESERVATION KEY, UNREG / APTPL (byte 17), RELATIVE TARGET PORT IDENTIFIER (18-19),
 * TRANSPORTID LENGTH (20-23), TransportID.
 *
 * Checks, in order:
 *  1. PARAMETER LIST LENGTH above MAX_PARAMETER_LIST_LENGTH, or below 24: PARAMETER LIST
 *     LENGTH ERROR (SPC-4 6.16.1).
 *  2. The Data-Out must hold the whole list (../commands/common.ts requireDataOut).
 *  3. SPEC_I_PT=1 with any service action but REGISTER: INVALID FIELD IN PARAMETER LIST
 *     (SPC-4 6.16.3). Without SPEC_I_PT, a basic list must be exactly 24 bytes (6.16.1).
 *  4. TransportID lengths that exceed the parameter list: PARAMETER LIST LENGTH ERROR; a
 *     truncated or malformed TransportID: INVALID FIELD IN PARAMETER LIST (6.16.3, 6.16.4).
 *  5. APTPL=1 where it is valid (REGISTER, REGISTER AND IGNORE EXISTING KEY, REGISTER AND
 *     MOVE) when no reservation store is configured: INVALID FIELD IN PARAMETER LIST.
 * Reserved and obsolete parameter list fields are ignored.
 */
import { invalidCdbField, invalidParameterField, parameterListLengthError } from "../sense.js";
import {
  isPrType,
  LU_SCOPE,
  MAX_PARAMETER_LIST_LENGTH,
  PrOut,
  type PrOutAction,
} from "./constants.js";
import { decodeTransportId, type InitiatorId } from "./transport-id.js";

export interface ProutCdb {
  readonly action: PrOutAction;
  readonly scope: number;
  readonly type: number;
  readonly parameterListLength: number;
}

/** A TransportID of the parameter list, with its offset (for field pointers). */
export interface ListedInitiator {
  readonly id: InitiatorId;
  readonly offset: number;
}

export interface ProutRequest {
  readonly action: PrOutAction;
  /** TYPE, validated where SPC-4 table 216 says it is used. */
  readonly type: number;
  /** RESERVATION KEY. */
  readonly key: bigint;
  /** SERVICE ACTION RESERVATION KEY. */
  readonly saKey: bigint;
  readonly specIPt: boolean;
  readonly allTgPt: boolean;
  readonly aptpl: boolean;
  /** The SPEC_I_PT TransportIDs (REGISTER), or the destination (REGISTER AND MOVE). */
  readonly initiators: readonly ListedInitiator[];
  /** REGISTER AND MOVE: unregister the sender afterwards. */
  readonly unreg: boolean;
  /** REGISTER AND MOVE: the target port of the destination I_T nexus. */
  readonly relativeTargetPort: number;
}

const BASIC_LENGTH = 24;

/** Service actions whose SCOPE and TYPE are valid (SPC-4 table 216). */
function usesScopeAndType(action: number): boolean {
  return (
    action === PrOut.RESERVE ||
    action === PrOut.RELEASE ||
    action === PrOut.PREEMPT ||
    action === PrOut.PREEMPT_AND_ABORT
  );
}

/** Decode and check the CDB (the service action is one of the table's, 0..7). */
export function decodeProutCdb(cdb: Buffer): ProutCdb {
  const action = (cdb[1]! & 0x1f) as PrOutAction;
  const scope = cdb[2]! >>> 4;
  const type = cdb[2]! & 0x0f;
  if (usesScopeAndType(action)) {
    // SPC-4 6.16.1: a SCOPE that is not implemented is INVALID FIELD IN CDB; so is a TYPE we
    // do not support (we support all six).
    if (scope !== LU_SCOPE) throw invalidCdbField(2, 7);
    if (!isPrType(type)) throw invalidCdbField(2, 3);
  }
  const parameterListLength = cdb.readUInt32BE(5);
  if (parameterListLength > MAX_PARAMETER_LIST_LENGTH || parameterListLength < BASIC_LENGTH) {
    throw parameterListLengthError();
  }
  return { action, scope, type, parameterListLength };
}

/** Parse and check the parameter list (`data` holds exactly `parameterListLength` bytes). */
export function parseProutParameters(
  d: ProutCdb,
  data: Buffer,
  aptplSupported: boolean,
): ProutRequest {
  const key = data.readBigUInt64BE(0);
  const saKey = data.readBigUInt64BE(8);
  if (d.action === PrOut.REGISTER_AND_MOVE) return parseMove(d, data, key, saKey, aptplSupported);

  const flags = data[20]!;
  const specIPt = (flags & 0x08) !== 0;
  const allTgPt = (flags & 0x04) !== 0;
  const aptpl = (flags & 0x01) !== 0;
  if (specIPt && d.action !== PrOut.REGISTER) throw invalidParameterField(20, 3);
  const initiators: ListedInitiator[] = [];
  if (!specIPt) {
    if (d.parameterListLength !== BASIC_LENGTH) throw parameterListLengthError();
  } else {
    if (data.length < BASIC_LENGTH + 4) throw parameterListLengthError();
    const listLength = data.readUInt32BE(BASIC_LENGTH);
    const start = BASIC_LENGTH + 4;
    if (listLength > data.length - start) throw parameterListLengthError();
    const end = start + listLength;
    for (let at = start; at < end; ) {
      const { id, length } = decodeTransportId(data, at, end);
      initiators.push({ id, offset: at });
      at += length;
    }
  }
  const registers =
    d.action === PrOut.REGISTER || d.action === PrOut.REGISTER_AND_IGNORE_EXISTING_KEY;
  if (registers && aptpl && !aptplSupported) throw invalidParameterField(20, 0);
  return {
    action: d.action,
    type: d.type,
    key,
    saKey,
    specIPt,
    // ALL_TG_PT and APTPL are valid only for the register service actions (SPC-4 6.16.3).
    allTgPt: registers && allTgPt,
    aptpl: registers && aptpl,
    initiators,
    unreg: false,
    relativeTargetPort: 0,
  };
}

function parseMove(
  d: ProutCdb,
  data: Buffer,
  key: bigint,
  saKey: bigint,
  aptplSupported: boolean,
): ProutRequest {
  const flags = data[17]!;
  const unreg = (flags & 0x02) !== 0;
  const aptpl = (flags & 0x01) !== 0;
  if (aptpl && !aptplSupported) throw invalidParameterField(17, 0);
  const relativeTargetPort = data.readUInt16BE(18);
  const listLength = data.readUInt32BE(20);
  if (listLength > data.length - BASIC_LENGTH) throw parameterListLengthError();
  const end = BASIC_LENGTH + listLength;
  const { id, length } = decodeTransportId(data, BASIC_LENGTH, end);
  // SPC-4 6.16.4: the TRANSPORTID LENGTH field describes exactly one TransportID.
  if (length !== listLength) throw invalidParameterField(20);
  return {
    action: d.action,
    type: d.type,
    key,
    saKey,
    specIPt: false,
    allTgPt: false,
    aptpl,
    initiators: [{ id, offset: BASIC_LENGTH }],
    unreg,
    relativeTargetPort,
  };
}
