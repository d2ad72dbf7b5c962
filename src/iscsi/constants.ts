/**
 * iSCSI wire constants, grouped by the RFC 7143 section that defines them. Values only: the
 * codec (pdu.ts) and framing (framing.ts) give them meaning. Every group is an `as const`
 * object with a same-named union type, so that `isolatedModules` builds keep working (no
 * `const enum`).
 */

/** RFC 7143 11.2.1: the Basic Header Segment is always 48 bytes. */
export const BHS_LENGTH = 48;

/** RFC 7143 11.2.1.6: DataSegmentLength is a 24-bit field. */
export const MAX_DATA_SEGMENT_LENGTH = 0xff_ff_ff;

/**
 * RFC 7143 11.2.1.8 (Initiator Task Tag) and the Target Transfer Tag fields (11.7, 11.18,
 * 11.19): 0xffffffff is reserved and means "no task" / "no transfer tag".
 */
export const RESERVED_TAG = 0xff_ff_ff_ff;

/** RFC 7143 11.2.1.2: the 6-bit opcode in byte 0 of every BHS. */
export const Opcode = {
  // Initiator opcodes.
  NopOut: 0x00,
  ScsiCommand: 0x01,
  TaskMgmtRequest: 0x02,
  LoginRequest: 0x03,
  TextRequest: 0x04,
  DataOut: 0x05,
  LogoutRequest: 0x06,
  Snack: 0x10,
  // Target opcodes.
  NopIn: 0x20,
  ScsiResponse: 0x21,
  TaskMgmtResponse: 0x22,
  LoginResponse: 0x23,
  TextResponse: 0x24,
  DataIn: 0x25,
  LogoutResponse: 0x26,
  R2T: 0x31,
  AsyncMessage: 0x32,
  Reject: 0x3f,
} as const;
export type Opcode = (typeof Opcode)[keyof typeof Opcode];

/** RFC 7143 11.2.1: bits of BHS bytes 0 and 1 shared by many PDU types. */
export const BhsFlag = {
  /** Byte 0: the Immediate delivery bit (11.2.1.1). */
  Immediate: 0x40,
  /** Byte 0: mask of the opcode (11.2.1.2). */
  OpcodeMask: 0x3f,
  /** Byte 1: the Final bit (11.2.1.3). */
  Final: 0x80,
} as const;

/** RFC 7143 11.2.2.1: AHSType codes (low 6 bits of the AHS type byte). */
export const AhsType = {
  /** RFC 7143 11.2.2.3: CDB bytes beyond the 16 carried in the BHS. */
  ExtendedCdb: 1,
  /** RFC 7143 11.2.2.4: Bidirectional Read Expected Data Transfer Length. */
  BidiReadEdtl: 2,
} as const;
export type AhsType = (typeof AhsType)[keyof typeof AhsType];

/** RFC 7143 11.3.1: ATTR, the SCSI task attribute in the SCSI Command PDU (SAM task attributes). */
export const TaskAttribute = {
  Untagged: 0,
  Simple: 1,
  Ordered: 2,
  HeadOfQueue: 3,
  Aca: 4,
} as const;
export type TaskAttribute = (typeof TaskAttribute)[keyof typeof TaskAttribute];

/** RFC 7143 11.4.3: the iSCSI Response field of the SCSI Response PDU. */
export const ScsiResponseCode = {
  CommandCompletedAtTarget: 0x00,
  TargetFailure: 0x01,
} as const;
export type ScsiResponseCode = (typeof ScsiResponseCode)[keyof typeof ScsiResponseCode];

/** RFC 7143 11.5.1: the Function field of the Task Management Function Request. */
export const TmfFunction = {
  AbortTask: 1,
  AbortTaskSet: 2,
  ClearAca: 3,
  ClearTaskSet: 4,
  LunReset: 5,
  TargetWarmReset: 6,
  TargetColdReset: 7,
  TaskReassign: 8,
  QueryTask: 9,
  QueryTaskSet: 10,
  ITNexusReset: 11,
  QueryAsyncEvent: 12,
} as const;
export type TmfFunction = (typeof TmfFunction)[keyof typeof TmfFunction];

/** RFC 7143 11.6.1: the Response field of the Task Management Function Response. */
export const TmfResponse = {
  FunctionComplete: 0,
  TaskDoesNotExist: 1,
  LunDoesNotExist: 2,
  TaskStillAllegiant: 3,
  ReassignmentNotSupported: 4,
  FunctionNotSupported: 5,
  AuthorizationFailed: 6,
  FunctionRejected: 255,
} as const;
export type TmfResponse = (typeof TmfResponse)[keyof typeof TmfResponse];

/** RFC 7143 11.9.1: AsyncEvent codes of the Asynchronous Message PDU. */
export const AsyncEvent = {
  /** A SCSI asynchronous event; the data segment carries sense data. */
  ScsiAsyncEvent: 0,
  /** The target requests a logout (Parameter3 = seconds to wait before the logout is forced). */
  LogoutRequest: 1,
  /** The target will drop the connection (Parameter1 = CID, 2 = Time2Wait, 3 = Time2Retain). */
  ConnectionDrop: 2,
  /** The target will drop all connections of the session (Parameter2/3 as above). */
  SessionDrop: 3,
  /** The target requests parameter negotiation on this connection. */
  NegotiationRequest: 4,
  /** All active tasks for the LU named by the LUN field are being terminated. */
  TaskTermination: 5,
  /** Vendor-specific iSCSI event; AsyncVCode holds the vendor code. */
  VendorSpecific: 255,
} as const;
export type AsyncEvent = (typeof AsyncEvent)[keyof typeof AsyncEvent];

/**
 * RFC 7143 11.12.3: login stages, as carried in CSG and NSG (2-bit fields).
 * 2 is reserved.
 */
export const LoginStage = {
  Security: 0,
  Operational: 1,
  FullFeature: 3,
} as const;
export type LoginStage = (typeof LoginStage)[keyof typeof LoginStage];

/** RFC 7143 11.12.4: the only iSCSI version defined (Version-max, Version-min, Version-active). */
export const ISCSI_VERSION = 0x00;

/**
 * RFC 7143 11.13.5: Status-Class / Status-Detail pairs of the Login Response. Class 0 success,
 * 1 redirection, 2 initiator error (do not retry as is), 3 target error (may retry later).
 */
export const LoginStatus = {
  Success: { statusClass: 0x00, statusDetail: 0x00 },
  TargetMovedTemporarily: { statusClass: 0x01, statusDetail: 0x01 },
  TargetMovedPermanently: { statusClass: 0x01, statusDetail: 0x02 },
  InitiatorError: { statusClass: 0x02, statusDetail: 0x00 },
  AuthenticationFailure: { statusClass: 0x02, statusDetail: 0x01 },
  AuthorizationFailure: { statusClass: 0x02, statusDetail: 0x02 },
  NotFound: { statusClass: 0x02, statusDetail: 0x03 },
  TargetRemoved: { statusClass: 0x02, statusDetail: 0x04 },
  UnsupportedVersion: { statusClass: 0x02, statusDetail: 0x05 },
  TooManyConnections: { statusClass: 0x02, statusDetail: 0x06 },
  MissingParameter: { statusClass: 0x02, statusDetail: 0x07 },
  CantIncludeInSession: { statusClass: 0x02, statusDetail: 0x08 },
  SessionTypeNotSupported: { statusClass: 0x02, statusDetail: 0x09 },
  SessionDoesNotExist: { statusClass: 0x02, statusDetail: 0x0a },
  InvalidDuringLogin: { statusClass: 0x02, statusDetail: 0x0b },
  TargetError: { statusClass: 0x03, statusDetail: 0x00 },
  ServiceUnavailable: { statusClass: 0x03, statusDetail: 0x01 },
  OutOfResources: { statusClass: 0x03, statusDetail: 0x02 },
} as const;
export type LoginStatus = (typeof LoginStatus)[keyof typeof LoginStatus];

/** RFC 7143 11.14.1: Reason Code of the Logout Request. */
export const LogoutReason = {
  CloseSession: 0,
  CloseConnection: 1,
  RemoveConnectionForRecovery: 2,
} as const;
export type LogoutReason = (typeof LogoutReason)[keyof typeof LogoutReason];

/** RFC 7143 11.15.1: Response field of the Logout Response. */
export const LogoutResponseCode = {
  Success: 0,
  CidNotFound: 1,
  RecoveryNotSupported: 2,
  CleanupFailed: 3,
} as const;
export type LogoutResponseCode = (typeof LogoutResponseCode)[keyof typeof LogoutResponseCode];

/** RFC 7143 11.16.1: Type field of the SNACK Request. */
export const SnackType = {
  DataR2T: 0,
  Status: 1,
  DataAck: 2,
  RData: 3,
} as const;
export type SnackType = (typeof SnackType)[keyof typeof SnackType];

/** RFC 7143 11.17.1: Reason field of the Reject PDU. */
export const RejectReason = {
  DataDigestError: 0x02,
  SnackReject: 0x03,
  ProtocolError: 0x04,
  CommandNotSupported: 0x05,
  /** "Immediate command reject - too many immediate commands". */
  ImmediateCommandReject: 0x06,
  TaskInProgress: 0x07,
  InvalidDataAck: 0x08,
  InvalidPduField: 0x09,
  /** "Long op reject - Can't generate Target Transfer Tag - out of resources". */
  LongOperationReject: 0x0a,
  /** Negotiation reset (RFC 3720); RFC 7143 marks 0x0b deprecated. */
  NegotiationReset: 0x0b,
  WaitingForLogout: 0x0c,
} as const;
export type RejectReason = (typeof RejectReason)[keyof typeof RejectReason];
