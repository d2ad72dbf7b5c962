/**
 * Why a login fails. Everything in this folder throws `LoginError` with one of these codes; the
 * login state machine turns the code into the Status-Class/Status-Detail of the Login Response
 * through the single table `LoginStatus` (RFC 7143 11.13.5, in ../constants.ts), and keeps the
 * human reason for the log. After a non-zero Status-Class both sides close the TCP connection
 * (RFC 7143 11.13.5).
 */
import { LoginStatus } from "../constants.js";

/** The codes a login can fail with: the non-success, non-redirect entries of RFC 7143 11.13.5. */
export type LoginFailureCode = Exclude<
  keyof typeof LoginStatus,
  "Success" | "TargetMovedTemporarily" | "TargetMovedPermanently"
>;

/** The catalog: when this folder uses each code. Every code must be documented here. */
export const LOGIN_FAILURES: Readonly<Record<LoginFailureCode, string>> = {
  InitiatorError:
    "Protocol violation by the initiator: malformed text, a key negotiated twice, invalid stage " +
    "transition, T and C both set, changed ISID/TSIH/CID/version mid-login, key in the wrong stage.",
  AuthenticationFailure:
    "CHAP failed (wrong user, wrong secret, malformed value, reflected challenge, mutual CHAP " +
    "without target credentials) or the offered AuthMethod does not match what the agent requires.",
  AuthorizationFailure: "The InitiatorName is not known to the target (no agent uses it).",
  NotFound: "The TargetName is not the name of our target.",
  TargetRemoved: "Reserved for the caller: the target was removed.",
  UnsupportedVersion: "The initiator does not support iSCSI version 0 (Version-min > 0).",
  TooManyConnections: "Returned by the existing-session hook: MaxConnections=1 is in use.",
  MissingParameter: "InitiatorName missing, or TargetName missing in a normal session.",
  CantIncludeInSession: "Returned by the existing-session hook.",
  SessionTypeNotSupported: "SessionType is neither Normal nor Discovery.",
  SessionDoesNotExist: "A non-zero TSIH that names no live session (default for any TSIH != 0).",
  InvalidDuringLogin: "Reserved for the connection: a non-login PDU arrived during login.",
  TargetError: "An internal failure while handling the login.",
  ServiceUnavailable: "Reserved for the caller: the target is shutting down.",
  OutOfResources: "Reserved for the caller: no TSIH or session slot is available.",
};

export class LoginError extends Error {
  override readonly name = "LoginError";
  constructor(
    readonly code: LoginFailureCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The one translation from a failure code to the Login Response status (RFC 7143 11.13.5). */
export function loginFailureStatus(code: LoginFailureCode): {
  statusClass: number;
  statusDetail: number;
} {
  return LoginStatus[code];
}
