/**
 * Constants of persistent reservations, grouped by the SPC-4 section that defines them. Kept in
 * this folder (rather than ../constants.ts and ../asc.ts) so that persistent reservations stay
 * one self-contained module.
 */

/** SPC-4 annex D (table D.2): operation codes. */
export const PrOpcode = {
  PERSISTENT_RESERVE_IN: 0x5e,
  PERSISTENT_RESERVE_OUT: 0x5f,
} as const;

/** SPC-4 6.15.1, table 201: PERSISTENT RESERVE IN service actions. */
export const PrIn = {
  READ_KEYS: 0x00,
  READ_RESERVATION: 0x01,
  REPORT_CAPABILITIES: 0x02,
  READ_FULL_STATUS: 0x03,
} as const;

/** SPC-4 6.16.2, table 213: PERSISTENT RESERVE OUT service actions. */
export const PrOut = {
  REGISTER: 0x00,
  RESERVE: 0x01,
  RELEASE: 0x02,
  CLEAR: 0x03,
  PREEMPT: 0x04,
  PREEMPT_AND_ABORT: 0x05,
  REGISTER_AND_IGNORE_EXISTING_KEY: 0x06,
  REGISTER_AND_MOVE: 0x07,
} as const;
export type PrOutAction = (typeof PrOut)[keyof typeof PrOut];

/** SPC-4 6.15.3.4, table 205: persistent reservation TYPE codes. */
export const PrType = {
  WRITE_EXCLUSIVE: 0x1,
  EXCLUSIVE_ACCESS: 0x3,
  WRITE_EXCLUSIVE_REGISTRANTS_ONLY: 0x5,
  EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: 0x6,
  WRITE_EXCLUSIVE_ALL_REGISTRANTS: 0x7,
  EXCLUSIVE_ACCESS_ALL_REGISTRANTS: 0x8,
} as const;
export type PrType = (typeof PrType)[keyof typeof PrType];

const TYPES: ReadonlySet<number> = new Set(Object.values(PrType));

/** A TYPE value we support (all six SPC-4 types). */
export function isPrType(value: number): value is PrType {
  return TYPES.has(value);
}

/** Write Exclusive family: reads are allowed to every I_T nexus (SPC-4 table 65, SBC-4 table 13). */
export function isWriteExclusive(type: PrType): boolean {
  return (
    type === PrType.WRITE_EXCLUSIVE ||
    type === PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY ||
    type === PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS
  );
}

/** Registrants Only types (SPC-4 6.15.3.4). */
export function isRegistrantsOnly(type: PrType): boolean {
  return (
    type === PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY ||
    type === PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY
  );
}

/** All Registrants types: every registered I_T nexus is a holder (SPC-4 5.13.10). */
export function isAllRegistrants(type: PrType): boolean {
  return (
    type === PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS ||
    type === PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS
  );
}

/** "RR" in SPC-4 table 65: Registrants Only or All Registrants. */
export function isRegistrantsType(type: PrType): boolean {
  return isRegistrantsOnly(type) || isAllRegistrants(type);
}

/** SPC-4 6.15.3.3: the only SCOPE, LU_SCOPE. */
export const LU_SCOPE = 0x0;

/**
 * SPC-4 6.15.4, table 207: REPORT CAPABILITIES bits.
 *  - ALLOW COMMANDS 011b (table 208): TEST UNIT READY is allowed through Write Exclusive and
 *    Exclusive Access reservations; MODE SENSE and REPORT SUPPORTED OPERATION CODES (the ones
 *    of that list we implement) are allowed through Write Exclusive; RECEIVE COPY RESULTS is
 *    not allowed through either.
 *  - PERSISTENT RESERVATION TYPE MASK (table 209): all six types.
 */
export const Capabilities = {
  LENGTH: 8,
  CRH: 0x10,
  SIP_C: 0x08,
  ATP_C: 0x04,
  PTPL_C: 0x01,
  TMV: 0x80,
  ALLOW_COMMANDS_011B: 0x3 << 4,
  PTPL_A: 0x01,
  /** Byte 4: WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX; byte 5: EX_AC_AR. */
  TYPE_MASK: 0xea01,
} as const;

/**
 * Additional sense codes of persistent reservations (SPC-4 annex D), packed like ../asc.ts
 * (ASC in the high byte, ASCQ in the low byte).
 */
export const PrAsc = {
  /** 26h/04h INVALID RELEASE OF PERSISTENT RESERVATION. */
  INVALID_RELEASE_OF_PERSISTENT_RESERVATION: 0x2604,
  /** 2Ah/03h RESERVATIONS PREEMPTED. */
  RESERVATIONS_PREEMPTED: 0x2a03,
  /** 2Ah/04h RESERVATIONS RELEASED. */
  RESERVATIONS_RELEASED: 0x2a04,
  /** 2Ah/05h REGISTRATIONS PREEMPTED. */
  REGISTRATIONS_PREEMPTED: 0x2a05,
  /** 55h/04h INSUFFICIENT REGISTRATION RESOURCES. */
  INSUFFICIENT_REGISTRATION_RESOURCES: 0x5504,
} as const;

/** SPC-4 7.6.1, table 362 (PROTOCOL IDENTIFIER values): iSCSI. */
export const PROTOCOL_ISCSI = 0x5;

/** SPC-4 7.6.4.6: iSCSI TransportID FORMAT CODE values. */
export const TransportIdFormat = {
  /** 00b: the iSCSI name of an initiator device (every initiator port of it). */
  DEVICE: 0,
  /** 01b: an initiator port: iSCSI name + ",i,0x" + ISID. */
  PORT: 1,
} as const;

/** Largest PERSISTENT RESERVE OUT parameter list we process (SPC-4 6.16.1: else LENGTH ERROR). */
export const MAX_PARAMETER_LIST_LENGTH = 64 * 1024;

/** Registrations kept per logical unit (SPC-4 6.16.1: else INSUFFICIENT REGISTRATION RESOURCES). */
export const MAX_REGISTRATIONS = 1024;
