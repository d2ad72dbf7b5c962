/**
 * The login phase of ONE connection (RFC 7143 6.3), as pure logic: decoded Login Requests in,
 * Login Responses (fields + text data) out. No sockets, no PDU bytes, no clocks: the connection
 * decodes each Login Request, calls `step()`, encodes the response (adding ISID, ITT, StatSN,
 * ExpCmdSN, MaxCmdSN and the TSIH), then:
 *   - `step.failed`: the status is non-zero; log `failed.reason` and close the connection
 *     (RFC 7143 11.13.5);
 *   - `step.done`: this is the final response; if `done.tsih` is 0 (a new session: every login we
 *     accept unless `policy.joinSession` says otherwise) allocate a TSIH, put it in this response
 *     and start the session with `done.params` from the next PDU on (digests and segment limits
 *     apply after the final response, RFC 7143 13.1, 13.12). Session reinstatement (a live
 *     session with the same InitiatorName and ISID, RFC 7143 6.3.5) is the caller's job then.
 * `step()` must not be called again after either.
 *
 * Decisions (each cites where the RFC leaves room):
 *   - Unknown initiators (policy.lookupInitiator → undefined) fail with 2/2 authorization failure
 *     as soon as the first request names them, in normal and discovery sessions alike, before any
 *     authentication: there are no credentials to check them against, and a discovery session
 *     of an unknown initiator must not reveal targets. Known initiators then authenticate before
 *     anything else happens; the TargetName check (2/3) is done on the first request too.
 *   - AuthMethod: the agent's configuration decides (RFC 7143 12.1: the target picks from the
 *     initiator's list): CHAP if the agent has CHAP credentials, None otherwise; an offer that
 *     lacks it fails with 2/1. A login starting in the operational stage skips authentication,
 *     which is allowed only for agents without CHAP (2/1 otherwise).
 *   - Invalid stage transitions, a changed ISID/TSIH/CID/version, T and C both set: 2/0
 *     initiator error (2/0b "invalid during login" is left to the connection, for non-login PDUs).
 *   - TSIH != 0 (adding or reinstating a connection of a live session): `policy.joinSession`
 *     decides; without it every such login fails with 2/0a session does not exist
 *     (MaxConnections=1 and ErrorRecoveryLevel=0: connections are never added or reinstated).
 *   - A skip from security straight to full feature phase is honoured unless we must declare or
 *     offer something (limits below the RFC defaults); then we answer T=1, NSG=1.
 *   - Keys the target adds unprompted: TargetPortalGroupTag in the first response when the
 *     initiator gave a TargetName (RFC 7143 13.9; the Linux initiator checks it), TargetAlias in
 *     normal sessions when configured (13.6), and our MaxRecvDataSegmentLength in the first
 *     operational-stage response (13.12) — with libiscsi and open-iscsi that is the final one.
 *   - Our answers always fit one Login Response (a few hundred bytes, far below the 8192 bytes an
 *     initiator accepts during login), so the target never sets C.
 */
import { ISCSI_VERSION, LoginStage } from "../constants.js";
import type { LoginRequestPdu } from "../pdu.js";
import { type ChapCredentials, ChapExchange } from "./chap.js";
import { LoginError, type LoginFailureCode, loginFailureStatus } from "./errors.js";
import {
  checkFinal,
  createNegotiationState,
  type NegotiationState,
  needsOperationalStage,
  negotiate,
  type ResolvedLimits,
  resolveLimits,
  type SessionParams,
  sessionParams,
  type TargetLimits,
  targetDeclarations,
  targetProposals,
} from "./keys.js";
import { encodeTextKeys, parseListValue, parseTextKeys, TextFormatError } from "./text.js";

export type { SessionParams, TargetLimits } from "./keys.js";

/** A decoded Login Request (RFC 7143 11.12), as the codec gives it. `data` is read only during `step()`. */
export type LoginRequestView = LoginRequestPdu;

/** The fields of the Login Response this module decides (RFC 7143 11.13). */
export interface LoginResponseView {
  readonly transit: boolean;
  readonly cont: boolean;
  readonly csg: number;
  /** Meaningful only when `transit` (0 otherwise). */
  readonly nsg: number;
  readonly versionMax: typeof ISCSI_VERSION;
  readonly versionActive: typeof ISCSI_VERSION;
  readonly statusClass: number;
  readonly statusDetail: number;
  /** Text data to send (key=value pairs, NUL-terminated); may be empty. */
  readonly keys: Buffer;
}

export interface LoginDone {
  readonly params: SessionParams;
  readonly isid: Buffer;
  /** The request's TSIH: 0 for a new session (allocate one), else the session joined. */
  readonly tsih: number;
  readonly cid: number;
}

export interface LoginFailed {
  /** A human log line, e.g. "CHAP response mismatch for user backup1". */
  readonly reason: string;
  readonly code: LoginFailureCode;
  /** The initiator, once its first request named it. */
  readonly initiatorName?: string;
  /** The underlying error of an internal failure (status 3/0). */
  readonly cause?: unknown;
}

export interface LoginStep {
  readonly response: LoginResponseView;
  /** Set on the final response, the one that enters full feature phase. */
  readonly done?: LoginDone;
  /** Set when the response carries a non-zero status: the connection closes after it. */
  readonly failed?: LoginFailed;
}

/** What an agent must prove: CHAP credentials, or nothing (AuthMethod=None). */
export interface InitiatorCredentials {
  readonly chap?: ChapCredentials;
}

export interface LoginPolicy {
  /** Our single target IQN. */
  readonly targetName: string;
  /** Sent as TargetAlias in normal sessions when set (RFC 7143 13.6). */
  readonly targetAlias?: string;
  /** Our portal group tag, sent as TargetPortalGroupTag (RFC 7143 13.9). */
  readonly portalGroupTag: number;
  /** Our negotiation limits; missing optional members take DEFAULT_TARGET_LIMITS. */
  readonly limits: TargetLimits;
  /**
   * Who may log in. undefined → unknown initiator: authorization failure (2/2) at once, before
   * authentication, in both session types. Otherwise the credentials the agent must prove.
   */
  lookupInitiator(initiatorName: string): InitiatorCredentials | undefined;
  /**
   * A login with TSIH != 0 wants to join (add or reinstate a connection of) a live session.
   * Return undefined to accept, or the failure to answer. Absent: always SessionDoesNotExist.
   */
  joinSession?(request: {
    initiatorName: string;
    isid: Buffer;
    tsih: number;
    cid: number;
  }): LoginFailureCode | undefined;
}

/** Login requests accepted on one connection, continuations included (a runaway guard). */
export const MAX_LOGIN_REQUESTS = 64;
/** RFC 7143 6.1: targets accept at least 64 KiB of text when authentication needs it; the
 * largest logical text data segment we accumulate. */
export const MAX_LOGIN_TEXT_LENGTH = 65_536;

const EMPTY = Buffer.alloc(0);

type AuthState =
  | { readonly kind: "start" }
  | { readonly kind: "chap"; readonly exchange: ChapExchange }
  | { readonly kind: "authenticated"; readonly method: "None" | "CHAP" };

interface FirstRequest {
  readonly isid: Buffer;
  readonly tsih: number;
  readonly cid: number;
  readonly versionMax: number;
  readonly versionMin: number;
}

interface Identity {
  readonly initiatorName: string;
  readonly credentials: InitiatorCredentials;
}

const initiatorError = (message: string): LoginError => new LoginError("InitiatorError", message);

export class LoginNegotiator {
  private readonly limits: ResolvedLimits;
  private first: FirstRequest | undefined;
  private negotiation: NegotiationState | undefined;
  private identity: Identity | undefined;
  /** The stage the login is in: set by the first request's CSG, advanced by our T=1 answers. */
  private stage: LoginStage | undefined;
  private auth: AuthState = { kind: "start" };
  private requests = 0;
  private text: Buffer[] = [];
  private textLength = 0;
  private operationalResponses = 0;
  private finished: "done" | "failed" | undefined;

  constructor(private readonly policy: LoginPolicy) {
    this.limits = resolveLimits(policy.limits);
  }

  /** Handle one Login Request; see the module comment for what the caller does with the step. */
  step(req: LoginRequestView): LoginStep {
    if (this.finished !== undefined) {
      throw new Error(`LoginNegotiator.step() called after the login ${this.finished}`);
    }
    try {
      return this.handle(req);
    } catch (err) {
      return this.failure(req, err);
    }
  }

  private failure(req: LoginRequestView, err: unknown): LoginStep {
    const error =
      err instanceof LoginError
        ? err
        : new LoginError("TargetError", `internal error: ${(err as Error)?.message ?? err}`, {
            cause: err,
          });
    this.finished = "failed";
    const initiatorName = this.identity?.initiatorName;
    return {
      response: {
        transit: false,
        cont: false,
        csg: this.stage ?? (req.csg === LoginStage.Operational ? req.csg : LoginStage.Security),
        nsg: 0,
        versionMax: ISCSI_VERSION,
        versionActive: ISCSI_VERSION,
        ...loginFailureStatus(error.code),
        keys: EMPTY,
      },
      failed: {
        reason: error.message,
        code: error.code,
        ...(initiatorName !== undefined ? { initiatorName } : {}),
        ...(error.code === "TargetError" ? { cause: error.cause } : {}),
      },
    };
  }

  private handle(req: LoginRequestView): LoginStep {
    if (++this.requests > MAX_LOGIN_REQUESTS) {
      throw initiatorError(`more than ${MAX_LOGIN_REQUESTS} login requests`);
    }
    const stage = this.checkHeader(req);

    // RFC 7143 6.1, 11.12.2: with C=1 the text continues in the next request; the target
    // acknowledges each such request with an empty response and answers the whole text once.
    this.textLength += req.data.length;
    if (this.textLength > MAX_LOGIN_TEXT_LENGTH) {
      throw initiatorError(`login text longer than ${MAX_LOGIN_TEXT_LENGTH} bytes`);
    }
    if (req.cont) {
      this.text.push(Buffer.from(req.data)); // owned copy: req.data is valid only during step()
      return this.reply(stage, false, 0, []);
    }
    const data = this.text.length === 0 ? req.data : Buffer.concat([...this.text, req.data]);
    this.text = [];
    this.textLength = 0;
    let pairs: Array<[string, string]>;
    try {
      pairs = parseTextKeys(data);
    } catch (err) {
      if (err instanceof TextFormatError)
        throw initiatorError(`malformed login text: ${err.message}`);
      throw err;
    }
    return this.exchange(req, stage, pairs);
  }

  /** Header checks of every request; returns the current stage. */
  private checkHeader(req: LoginRequestView): LoginStage {
    if (this.first === undefined) {
      // RFC 7143 11.12.4: we speak version 0 only; it must lie in [Version-min, Version-max].
      if (req.versionMin > ISCSI_VERSION || req.versionMax < ISCSI_VERSION) {
        throw new LoginError(
          "UnsupportedVersion",
          `initiator supports versions ${req.versionMin}..${req.versionMax}, we support 0`,
        );
      }
      this.first = {
        isid: Buffer.from(req.isid),
        tsih: req.tsih,
        cid: req.cid,
        versionMax: req.versionMax,
        versionMin: req.versionMin,
      };
    } else {
      // RFC 7143 6.3, 11.12: ISID, TSIH, CID and versions stay the same during a login.
      const f = this.first;
      if (!req.isid.equals(f.isid) || req.tsih !== f.tsih || req.cid !== f.cid) {
        throw initiatorError("ISID, TSIH or CID changed during login");
      }
      if (req.versionMax !== f.versionMax || req.versionMin !== f.versionMin) {
        throw initiatorError("Version-max or Version-min changed during login");
      }
    }
    // RFC 7143 11.12.2: a request with C=1 must have T=0.
    if (req.transit && req.cont) throw initiatorError("Login Request with both T and C set");
    if (req.csg !== LoginStage.Security && req.csg !== LoginStage.Operational) {
      throw initiatorError(`invalid current stage ${req.csg}`);
    }
    if (this.stage === undefined) this.stage = req.csg;
    else if (req.csg !== this.stage) {
      throw initiatorError(`request in stage ${req.csg} while the login is in stage ${this.stage}`);
    }
    // RFC 7143 6.3, 11.12.3: transitions go forward only: 0→1, 0→3, 1→3 (2 is reserved).
    if (req.transit) {
      const ok =
        req.nsg === LoginStage.FullFeature ||
        (req.csg === LoginStage.Security && req.nsg === LoginStage.Operational);
      if (!ok) throw initiatorError(`invalid stage transition ${req.csg} → ${req.nsg}`);
    }
    return this.stage;
  }

  /** One complete logical text data segment in `stage`. */
  private exchange(
    req: LoginRequestView,
    stage: LoginStage,
    pairs: Array<[string, string]>,
  ): LoginStep {
    const first = this.first!;
    const firstExchange = this.negotiation === undefined;
    if (this.negotiation === undefined) {
      this.negotiation = createNegotiationState({ leading: first.tsih === 0 });
    }
    const negotiation = this.negotiation;
    const security = stage === LoginStage.Security;
    const outcome = negotiate(
      pairs,
      negotiation,
      this.limits,
      security ? "security" : "operational",
    );
    const keys: Array<[string, string]> = [...outcome.answers];

    const identity = firstExchange ? this.identify(negotiation, first, stage) : this.identity!;
    if (security) this.authenticate(identity, outcome.security, keys);

    if (firstExchange) {
      // RFC 7143 13.9: in the response to the first request (with C=0) when it named a target.
      if (negotiation.values.has("TargetName")) {
        keys.push(["TargetPortalGroupTag", String(this.policy.portalGroupTag)]);
      }
      if (this.policy.targetAlias !== undefined && negotiation.sessionType === "Normal") {
        keys.push(["TargetAlias", this.policy.targetAlias]);
      }
    }
    if (!security && this.operationalResponses++ === 0) {
      keys.push(...targetDeclarations(negotiation, this.limits));
    }

    // RFC 7143 6.3: the target answers T=1 only when the initiator asked to transit (T=1) and
    // the target is ready to; otherwise it stays in the stage with T=0.
    if (!req.transit) return this.reply(stage, false, 0, keys);

    if (security) {
      if (this.auth.kind === "start") {
        if (identity.credentials.chap !== undefined) {
          throw new LoginError(
            "AuthenticationFailure",
            `${identity.initiatorName} requires CHAP but left the security stage without AuthMethod`,
          );
        }
        this.auth = { kind: "authenticated", method: "None" };
      }
      if (this.auth.kind !== "authenticated") return this.reply(stage, false, 0, keys);
      const next =
        req.nsg === LoginStage.FullFeature && !needsOperationalStage(negotiation, this.limits)
          ? LoginStage.FullFeature
          : LoginStage.Operational;
      if (next === LoginStage.Operational) {
        this.stage = LoginStage.Operational;
        return this.reply(stage, true, LoginStage.Operational, keys);
      }
      return this.finish(stage, keys, negotiation, first);
    }

    // Operational stage: offer what we need before leaving (RFC 7143 6.2); the initiator
    // answers in its next request.
    const proposals = targetProposals(negotiation, this.limits);
    if (proposals.length > 0 || negotiation.pending.size > 0) {
      keys.push(...proposals);
      return this.reply(stage, false, 0, keys);
    }
    return this.finish(stage, keys, negotiation, first);
  }

  /** Checks on the first complete request: who is this, which target, which session. */
  private identify(
    negotiation: NegotiationState,
    first: FirstRequest,
    stage: LoginStage,
  ): Identity {
    const initiatorName = negotiation.values.get("InitiatorName");
    // RFC 7143 13.5: InitiatorName is in the first Login Request of every connection.
    if (typeof initiatorName !== "string") {
      throw new LoginError("MissingParameter", "InitiatorName missing from the first request");
    }
    // SessionType is fixed now (default Normal, 13.21): a later different declaration is an
    // initiator error (6.2.1).
    if (!negotiation.offered.has("SessionType")) negotiation.offered.set("SessionType", "Normal");

    const credentials = this.policy.lookupInitiator(initiatorName);
    if (credentials === undefined) {
      throw new LoginError("AuthorizationFailure", `unknown initiator ${initiatorName}`);
    }
    this.identity = { initiatorName, credentials };

    // RFC 7143 13.4: TargetName is required in the first request of a normal session. iSCSI
    // names compare case-insensitively (RFC 3722 maps them to lower case).
    const targetName = negotiation.values.get("TargetName");
    if (negotiation.sessionType === "Normal" && targetName === undefined) {
      throw new LoginError("MissingParameter", `${initiatorName} gave no TargetName`);
    }
    if (
      typeof targetName === "string" &&
      targetName.toLowerCase() !== this.policy.targetName.toLowerCase()
    ) {
      throw new LoginError("NotFound", `${initiatorName} asked for unknown target ${targetName}`);
    }

    if (first.tsih !== 0) {
      const verdict = this.policy.joinSession
        ? this.policy.joinSession({
            initiatorName,
            isid: first.isid,
            tsih: first.tsih,
            cid: first.cid,
          })
        : "SessionDoesNotExist";
      if (verdict !== undefined) {
        throw new LoginError(verdict, `${initiatorName} asked to join session TSIH ${first.tsih}`);
      }
    }

    if (stage === LoginStage.Operational) {
      if (credentials.chap !== undefined) {
        throw new LoginError(
          "AuthenticationFailure",
          `${initiatorName} requires CHAP but started in the operational stage`,
        );
      }
      this.auth = { kind: "authenticated", method: "None" };
    }
    return this.identity;
  }

  /** Security stage: AuthMethod selection and the CHAP exchange (RFC 7143 12.1). */
  private authenticate(
    identity: Identity,
    security: Array<[string, string]>,
    keys: Array<[string, string]>,
  ): void {
    const chap = identity.credentials.chap;
    const chapKeys = new Map<string, string>();
    for (const [key, value] of security) {
      if (key !== "AuthMethod") {
        chapKeys.set(key, value);
        continue;
      }
      if (this.auth.kind !== "start") throw initiatorError("AuthMethod negotiated twice");
      const offered = parseListValue(value);
      if (chap !== undefined) {
        if (!offered.includes("CHAP")) {
          throw new LoginError(
            "AuthenticationFailure",
            `${identity.initiatorName} must use CHAP but offered AuthMethod=${value}`,
          );
        }
        keys.push(["AuthMethod", "CHAP"]);
        this.auth = { kind: "chap", exchange: new ChapExchange(chap, identity.initiatorName) };
      } else {
        if (!offered.includes("None")) {
          throw new LoginError(
            "AuthenticationFailure",
            `${identity.initiatorName} has no CHAP credentials but offered AuthMethod=${value}`,
          );
        }
        keys.push(["AuthMethod", "None"]);
        this.auth = { kind: "authenticated", method: "None" };
      }
    }
    if (chapKeys.size === 0) return;
    if (this.auth.kind !== "chap") {
      throw new LoginError(
        "AuthenticationFailure",
        `${identity.initiatorName} sent ${[...chapKeys.keys()].join(",")} outside a CHAP exchange`,
      );
    }
    keys.push(...this.auth.exchange.receive(chapKeys));
    if (this.auth.exchange.state === "done") this.auth = { kind: "authenticated", method: "CHAP" };
  }

  /** The final response: T=1, NSG=FullFeaturePhase. */
  private finish(
    stage: LoginStage,
    keys: Array<[string, string]>,
    negotiation: NegotiationState,
    first: FirstRequest,
  ): LoginStep {
    checkFinal(negotiation, this.limits);
    const step = this.reply(stage, true, LoginStage.FullFeature, keys);
    this.finished = "done";
    return {
      ...step,
      done: {
        params: sessionParams(negotiation),
        isid: Buffer.from(first.isid),
        tsih: first.tsih,
        cid: first.cid,
      },
    };
  }

  private reply(
    csg: LoginStage,
    transit: boolean,
    nsg: number,
    keys: Array<[string, string]>,
  ): LoginStep {
    return {
      response: {
        transit,
        cont: false,
        csg,
        nsg: transit ? nsg : 0,
        versionMax: ISCSI_VERSION,
        versionActive: ISCSI_VERSION,
        statusClass: 0,
        statusDetail: 0,
        keys: keys.length === 0 ? EMPTY : encodeTextKeys(keys),
      },
    };
  }
}
