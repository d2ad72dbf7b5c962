/**
 * The login keys as ONE declarative table (RFC 7143 12 and 13) and the negotiation that reads it
 * (RFC 7143 6.2): for each key its rule, default, our value, range, scope, whether it is
 * leading-only, relevant in discovery sessions, in which stage it may appear and who sends it.
 *
 * Contract of `negotiate()`: the login layer passes each complete logical text data segment
 * (LTDS) of the initiator, in order, with one `NegotiationState` per connection. It returns the
 * answers for that LTDS and the security keys (AuthMethod, CHAP_*) that the login layer handles
 * itself; it throws `LoginError` where the RFC makes the login fail (e.g. a key negotiated twice,
 * 6.2.1). Values the initiator offers out of range are answered "Reject" (6.2); unknown and
 * X-/X# extension keys "NotUnderstood" (6.2, 13.22); keys irrelevant to the session "Irrelevant".
 * The resulting values are read with `sessionParams()` (RFC defaults where nothing was
 * negotiated).
 */
import { LoginError } from "./errors.js";
import { parseListValue, parseNumericValue } from "./text.js";

/** RFC 7143 13.12-13.14: the largest data segment / burst length, 2**24 - 1. */
export const MAX_DATA_LENGTH = 16_777_215;

/** What this target accepts and prefers. Numbers in bytes unless named otherwise. */
export interface TargetLimits {
  /** Declared MaxRecvDataSegmentLength: the largest data segment we accept (13.12). */
  readonly maxRecvDataSegmentLength: number;
  /** Our MaxBurstLength (13.13, minimum function); above 2**24 - 1 is clamped to it. */
  readonly maxBurstLength: number;
  /** Our FirstBurstLength (13.14, minimum function); clamped to maxBurstLength. */
  readonly firstBurstLength: number;
  /** Whether we accept immediate data (13.11, AND). Default true. */
  readonly immediateData?: boolean;
  /** Whether we insist on an R2T before unsolicited data (13.10, OR). Default false. */
  readonly initialR2T?: boolean;
  /** R2Ts per task we keep outstanding (13.17, minimum). Default 1. */
  readonly maxOutstandingR2T?: number;
  /** Seconds (13.15, maximum). Default 2. */
  readonly defaultTime2Wait?: number;
  /** Seconds (13.16, minimum). Default 20. */
  readonly defaultTime2Retain?: number;
}

export type ResolvedLimits = Required<TargetLimits>;

export const DEFAULT_TARGET_LIMITS: ResolvedLimits = {
  maxRecvDataSegmentLength: 262_144,
  maxBurstLength: MAX_DATA_LENGTH,
  firstBurstLength: 262_144,
  immediateData: true,
  initialR2T: false,
  maxOutstandingR2T: 1,
  defaultTime2Wait: 2,
  defaultTime2Retain: 20,
};

/**
 * Fill in defaults and bring limits into the RFC ranges: values above the maximum are clamped
 * (so "16 MiB" becomes 2**24 - 1), FirstBurstLength to MaxBurstLength; a non-integer or a value
 * below the minimum is a configuration error (RangeError).
 */
export function resolveLimits(limits: Partial<TargetLimits> | undefined): ResolvedLimits {
  const l = { ...DEFAULT_TARGET_LIMITS, ...limits };
  const checked = (name: string, value: number, [min, max]: readonly [number, number]): number => {
    if (!Number.isInteger(value) || value < min) {
      throw new RangeError(`login limit ${name}=${value} is below ${min} or not an integer`);
    }
    return Math.min(value, max);
  };
  const maxBurstLength = checked("maxBurstLength", l.maxBurstLength, DATA_RANGE);
  return {
    maxRecvDataSegmentLength: checked(
      "maxRecvDataSegmentLength",
      l.maxRecvDataSegmentLength,
      DATA_RANGE,
    ),
    maxBurstLength,
    firstBurstLength: Math.min(
      checked("firstBurstLength", l.firstBurstLength, DATA_RANGE),
      maxBurstLength,
    ),
    immediateData: l.immediateData,
    initialR2T: l.initialR2T,
    maxOutstandingR2T: checked("maxOutstandingR2T", l.maxOutstandingR2T, [1, 65535]),
    defaultTime2Wait: checked("defaultTime2Wait", l.defaultTime2Wait, [0, 3600]),
    defaultTime2Retain: checked("defaultTime2Retain", l.defaultTime2Retain, [0, 3600]),
  };
}

const DATA_RANGE = [512, MAX_DATA_LENGTH] as const;

// ------------------------------------------------------------------------------ the table

/** Where a key may appear (RFC 7143 6.3: security keys only in SecurityNegotiation, operational
 * keys only in LoginOperationalNegotiation; "Any-Stage"/"ALL" keys in both). */
export type KeyStage = "security" | "operational" | "any";

interface KeyCommon {
  readonly name: string;
  /** RFC 7143 section defining the key. */
  readonly rfc: string;
  readonly scope: "session" | "connection";
  /** "Use: LO": only in the leading login of a session; elsewhere answered Irrelevant. */
  readonly leadingOnly: boolean;
  /** False when the RFC says "Irrelevant when: SessionType=Discovery". */
  readonly discovery: boolean;
  readonly stage: KeyStage;
  /** Who may send the key; an initiator sending a target-only key is answered Irrelevant. */
  readonly sender: "initiator" | "target" | "both";
}

export interface BooleanKeyDef extends KeyCommon {
  /** RFC 7143 6.2.2: the outcome is AND / OR of both values. */
  readonly rule: "boolean-and" | "boolean-or";
  readonly default: boolean;
  /** Our value. */
  readonly target: (limits: ResolvedLimits) => boolean;
  /** True when the default may be unacceptable to us: then we propose our value ourselves. */
  readonly hardLimit: boolean;
}

export interface NumericKeyDef extends KeyCommon {
  /** RFC 7143 6.2.2: the outcome is the minimum / maximum of both values. */
  readonly rule: "numeric-min" | "numeric-max";
  readonly default: number;
  readonly range: readonly [number, number];
  /** Our preferred value or limit. */
  readonly target: (limits: ResolvedLimits) => number;
  readonly hardLimit: boolean;
}

export interface ListKeyDef extends KeyCommon {
  /** RFC 7143 6.2.1 / 13.1: the responder picks the first value of the offer it supports. */
  readonly rule: "list";
  readonly default: string;
  /** What we support, in our order of preference (used when we are the proposer). */
  readonly supported: readonly string[];
}

export interface DeclarativeKeyDef extends KeyCommon {
  /** RFC 7143 6.2: each side states its own value; no answer is due. */
  readonly rule: "declarative";
  readonly default?: string | number;
  /** Numeric declarations: the allowed range. */
  readonly range?: readonly [number, number];
  /** Enumerated declarations: the allowed values. */
  readonly values?: readonly string[];
}

export interface OtherKeyDef extends KeyCommon {
  /**
   * "security": AuthMethod and CHAP_*, handed to the login layer (RFC 7143 12).
   * "full-feature": SendTargets, answered by the text-request handler, Irrelevant in login.
   * "obsolete": RFC 3720 marker keys, answered with `answer` (RFC 7143 13.25).
   */
  readonly rule: "security" | "full-feature" | "obsolete";
  readonly answer?: string;
}

export type KeyDef = BooleanKeyDef | NumericKeyDef | ListKeyDef | DeclarativeKeyDef | OtherKeyDef;

const session = { scope: "session" } as const;
const connection = { scope: "connection" } as const;
/** "Use: LO", irrelevant in discovery, operational stage, sent by both sides. */
const loNormal = {
  ...session,
  leadingOnly: true,
  discovery: false,
  stage: "operational",
  sender: "both",
} as const;
/** "Use: LO", relevant in discovery too. */
const loAll = { ...loNormal, discovery: true } as const;
const declaredByInitiator = {
  ...session,
  rule: "declarative",
  leadingOnly: false,
  discovery: true,
  stage: "any",
  sender: "initiator",
} as const;
const declaredByTarget = { ...declaredByInitiator, sender: "target" } as const;
const securityKey = {
  ...connection,
  rule: "security",
  rfc: "12.1.3",
  leadingOnly: false,
  discovery: true,
  stage: "security",
  sender: "both",
} as const;
const obsoleteKey = {
  ...connection,
  rule: "obsolete",
  rfc: "13.25",
  leadingOnly: false,
  discovery: true,
  stage: "operational",
  sender: "both",
} as const;

export const LOGIN_KEYS: readonly KeyDef[] = [
  {
    name: "HeaderDigest",
    rfc: "13.1",
    rule: "list",
    ...connection,
    leadingOnly: false,
    discovery: true,
    stage: "operational",
    sender: "both",
    default: "None",
    supported: ["CRC32C", "None"],
  },
  {
    name: "DataDigest",
    rfc: "13.1",
    rule: "list",
    ...connection,
    leadingOnly: false,
    discovery: true,
    stage: "operational",
    sender: "both",
    default: "None",
    supported: ["CRC32C", "None"],
  },
  {
    name: "MaxConnections",
    rfc: "13.2",
    rule: "numeric-min",
    ...loNormal,
    default: 1,
    range: [1, 65535],
    // One connection per session: each connection is its own session here.
    target: () => 1,
    hardLimit: true,
  },
  {
    name: "SendTargets",
    rfc: "13.3",
    rule: "full-feature",
    ...session,
    leadingOnly: false,
    discovery: true,
    stage: "any",
    sender: "initiator",
  },
  { name: "TargetName", rfc: "13.4", ...declaredByInitiator },
  { name: "InitiatorName", rfc: "13.5", ...declaredByInitiator },
  { name: "TargetAlias", rfc: "13.6", ...declaredByTarget },
  { name: "InitiatorAlias", rfc: "13.7", ...declaredByInitiator },
  { name: "TargetAddress", rfc: "13.8", ...declaredByTarget },
  { name: "TargetPortalGroupTag", rfc: "13.9", ...declaredByTarget },
  {
    name: "InitialR2T",
    rfc: "13.10",
    rule: "boolean-or",
    ...loNormal,
    default: true,
    target: (l) => l.initialR2T,
    hardLimit: false,
  },
  {
    name: "ImmediateData",
    rfc: "13.11",
    rule: "boolean-and",
    ...loNormal,
    default: true,
    target: (l) => l.immediateData,
    hardLimit: true,
  },
  {
    name: "MaxRecvDataSegmentLength",
    rfc: "13.12",
    ...declaredByInitiator,
    ...connection,
    sender: "both",
    default: 8192,
    range: DATA_RANGE,
  },
  {
    name: "MaxBurstLength",
    rfc: "13.13",
    rule: "numeric-min",
    ...loNormal,
    default: 262_144,
    range: DATA_RANGE,
    target: (l) => l.maxBurstLength,
    hardLimit: true,
  },
  {
    name: "FirstBurstLength",
    rfc: "13.14",
    rule: "numeric-min",
    ...loNormal,
    default: 65_536,
    range: DATA_RANGE,
    target: (l) => l.firstBurstLength,
    hardLimit: true,
  },
  {
    name: "DefaultTime2Wait",
    rfc: "13.15",
    rule: "numeric-max",
    ...loAll,
    default: 2,
    range: [0, 3600],
    target: (l) => l.defaultTime2Wait,
    hardLimit: false,
  },
  {
    name: "DefaultTime2Retain",
    rfc: "13.16",
    rule: "numeric-min",
    ...loAll,
    default: 20,
    range: [0, 3600],
    target: (l) => l.defaultTime2Retain,
    hardLimit: false,
  },
  {
    name: "MaxOutstandingR2T",
    rfc: "13.17",
    rule: "numeric-min",
    ...loNormal,
    default: 1,
    range: [1, 65535],
    target: (l) => l.maxOutstandingR2T,
    hardLimit: true,
  },
  {
    name: "DataPDUInOrder",
    rfc: "13.18",
    rule: "boolean-or",
    ...loNormal,
    default: true,
    // We require in-order data PDUs; with OR our Yes always wins.
    target: () => true,
    hardLimit: true,
  },
  {
    name: "DataSequenceInOrder",
    rfc: "13.19",
    rule: "boolean-or",
    ...loNormal,
    default: true,
    target: () => true,
    hardLimit: true,
  },
  {
    name: "ErrorRecoveryLevel",
    rfc: "13.20",
    rule: "numeric-min",
    ...loAll,
    default: 0,
    range: [0, 2],
    // Only session recovery (level 0) is implemented.
    target: () => 0,
    hardLimit: true,
  },
  {
    name: "SessionType",
    rfc: "13.21",
    ...declaredByInitiator,
    leadingOnly: true,
    default: "Normal",
    values: ["Discovery", "Normal"],
  },
  {
    name: "TaskReporting",
    rfc: "13.23",
    rule: "list",
    ...loNormal,
    default: "RFC3720",
    supported: ["RFC3720"],
  },
  { name: "IFMarker", ...obsoleteKey, answer: "No" },
  { name: "OFMarker", ...obsoleteKey, answer: "No" },
  { name: "IFMarkInt", ...obsoleteKey, answer: "Reject" },
  { name: "OFMarkInt", ...obsoleteKey, answer: "Reject" },
  { name: "AuthMethod", ...securityKey, rfc: "12.1" },
  { name: "CHAP_A", ...securityKey },
  { name: "CHAP_I", ...securityKey },
  { name: "CHAP_C", ...securityKey },
  { name: "CHAP_N", ...securityKey },
  { name: "CHAP_R", ...securityKey },
];

const BY_NAME: ReadonlyMap<string, KeyDef> = new Map(LOGIN_KEYS.map((k) => [k.name, k]));

/** The table entry of a key; undefined for unknown keys and X-/X# extension keys. */
export function keyDef(name: string): KeyDef | undefined {
  return BY_NAME.get(name);
}

function numericDef(name: string): NumericKeyDef {
  const def = BY_NAME.get(name);
  if (def?.rule !== "numeric-min" && def?.rule !== "numeric-max") throw new Error(name);
  return def;
}

// ------------------------------------------------------------------------------ negotiation

export type SessionType = "Normal" | "Discovery";
export type KeyValue = string | number | boolean;

/** Negotiation state of one connection's login. Create with `createNegotiationState`. */
export interface NegotiationState {
  /** Normal unless the initiator declared Discovery (fixed after the first LTDS). */
  sessionType: SessionType;
  /** False for a login that adds a connection to an existing session (TSIH != 0). */
  readonly leading: boolean;
  /** Every known key the initiator offered or declared so far, with its text (6.2.1). */
  readonly offered: Map<string, string>;
  /** Outcomes of negotiated keys and the values of declared keys (numbers parsed). */
  readonly values: Map<string, KeyValue>;
  /** Keys the target offered and whose answer it awaits. */
  readonly pending: Map<string, KeyValue>;
  /** Our declarations already sent, with their values. */
  readonly declared: Map<string, KeyValue>;
}

export function createNegotiationState(options?: { leading?: boolean }): NegotiationState {
  return {
    sessionType: "Normal",
    leading: options?.leading ?? true,
    offered: new Map(),
    values: new Map(),
    pending: new Map(),
    declared: new Map(),
  };
}

export interface NegotiationOutcome {
  /** key=value answers for this LTDS, in the order of the offer. */
  readonly answers: Array<[string, string]>;
  /** AuthMethod and CHAP_* pairs, in order, for the login layer. */
  readonly security: Array<[string, string]>;
  /** The parameters as negotiated so far. */
  readonly params: SessionParams;
}

const initiatorError = (message: string): LoginError => new LoginError("InitiatorError", message);

/** Declarations first (SessionType decides relevance), FirstBurstLength last (it is capped by
 * the MaxBurstLength of the same offer). */
function order(key: string): number {
  if (key === "FirstBurstLength") return 2;
  return keyDef(key)?.rule === "declarative" ? 0 : 1;
}

/**
 * Negotiate one LTDS from the initiator in `stage`. Mutates `state`; throws `LoginError`.
 * See the module comment for the contract.
 */
export function negotiate(
  offered: ReadonlyArray<readonly [string, string]>,
  state: NegotiationState,
  limits: ResolvedLimits,
  stage: "security" | "operational",
): NegotiationOutcome {
  const answers = new Map<string, string>();
  const security: Array<[string, string]> = [];
  const indexed = offered.map((pair, index) => ({ pair, index }));
  indexed.sort((a, b) => order(a.pair[0]) - order(b.pair[0]) || a.index - b.index);
  const answerOrder = new Map<string, number>();

  for (const {
    pair: [key, value],
    index,
  } of indexed) {
    const answer = negotiateOne(key, value, state, limits, stage, security);
    if (answer !== undefined && !answers.has(key)) {
      answers.set(key, answer);
      answerOrder.set(key, index);
    }
  }
  const ordered = [...answers].sort((a, b) => answerOrder.get(a[0])! - answerOrder.get(b[0])!);
  return { answers: ordered, security, params: sessionParams(state) };
}

/** Returns the answer for one key, or undefined when none is due. */
function negotiateOne(
  key: string,
  value: string,
  state: NegotiationState,
  limits: ResolvedLimits,
  stage: "security" | "operational",
  security: Array<[string, string]>,
): string | undefined {
  const def = keyDef(key);
  // RFC 7143 6.2 / 13.22: unknown keys, and private (X-) or public (X#) extension keys that we do
  // not implement, are answered NotUnderstood.
  if (def === undefined) return "NotUnderstood";

  if (state.pending.has(key)) {
    acceptAnswerToOurOffer(def, value, state);
    return undefined;
  }

  // RFC 7143 6.2.1: a key is negotiated or declared at most once per login; the target answers
  // a repetition with a login reject (initiator error). Interop: libiscsi repeats InitiatorName,
  // TargetName and SessionType in its operational-stage request after the security stage, so a
  // declaration repeated with the same value is tolerated.
  const previous = state.offered.get(key);
  if (previous !== undefined) {
    if (def.rule === "declarative" && previous === value) return undefined;
    throw initiatorError(`key ${key} negotiated twice (${previous}, then ${value})`);
  }
  state.offered.set(key, value);

  if (def.stage === "security" && stage !== "security") {
    throw initiatorError(`security key ${key} outside the security stage`);
  }
  if (def.stage === "operational" && stage !== "operational") {
    throw initiatorError(`operational key ${key} in the security stage`);
  }
  if (def.sender === "target") return "Irrelevant";
  if (def.leadingOnly && !state.leading) return "Irrelevant";
  if (!def.discovery && state.sessionType === "Discovery") return "Irrelevant";

  switch (def.rule) {
    case "security":
      security.push([key, value]);
      return undefined;
    case "full-feature":
      return "Irrelevant";
    case "obsolete":
      return def.answer;
    case "declarative":
      declare(def, value, state);
      return undefined;
    case "list":
      return negotiateList(def, value, state);
    case "boolean-and":
    case "boolean-or":
      return negotiateBoolean(def, value, state, limits);
    case "numeric-min":
    case "numeric-max":
      return negotiateNumeric(def, value, state, limits);
  }
}

function declare(def: DeclarativeKeyDef, value: string, state: NegotiationState): void {
  if (def.range) {
    const n = parseNumericValue(value);
    if (n === undefined || n < def.range[0] || n > def.range[1]) {
      throw initiatorError(`${def.name}=${value} is out of range`);
    }
    state.values.set(def.name, n);
    return;
  }
  if (def.values && !def.values.includes(value)) {
    if (def.name === "SessionType") {
      throw new LoginError("SessionTypeNotSupported", `SessionType=${value}`);
    }
    throw initiatorError(`${def.name}=${value} is not one of ${def.values.join(",")}`);
  }
  // RFC 7143 6.1: a text value is at most 255 bytes (iSCSI names at most 223, 4.2.7.1).
  if (value.length === 0 || Buffer.byteLength(value) > 255) {
    throw initiatorError(`${def.name} is empty or too long`);
  }
  state.values.set(def.name, value);
  if (def.name === "SessionType") state.sessionType = value as SessionType;
}

function negotiateList(def: ListKeyDef, value: string, state: NegotiationState): string {
  const choice = parseListValue(value).find((v) => def.supported.includes(v));
  // RFC 7143 6.2: nothing acceptable → Reject, and the key keeps its default.
  if (choice === undefined) return "Reject";
  state.values.set(def.name, choice);
  return choice;
}

function parseBoolean(value: string): boolean | undefined {
  return value === "Yes" ? true : value === "No" ? false : undefined;
}

const yesNo = (b: boolean): string => (b ? "Yes" : "No");

function negotiateBoolean(
  def: BooleanKeyDef,
  value: string,
  state: NegotiationState,
  limits: ResolvedLimits,
): string {
  const offer = parseBoolean(value);
  if (offer === undefined) return "Reject";
  const ours = def.target(limits);
  // RFC 7143 6.2.2: the value the acceptor sends is the outcome (AND / OR of both).
  const outcome = def.rule === "boolean-and" ? offer && ours : offer || ours;
  state.values.set(def.name, outcome);
  return yesNo(outcome);
}

function negotiateNumeric(
  def: NumericKeyDef,
  value: string,
  state: NegotiationState,
  limits: ResolvedLimits,
): string {
  const offer = parseNumericValue(value);
  if (offer === undefined || offer < def.range[0] || offer > def.range[1]) return "Reject";
  let ours = def.target(limits);
  if (def.name === "FirstBurstLength") {
    // RFC 7143 13.14: FirstBurstLength MUST NOT exceed MaxBurstLength. Interop: when the key is
    // irrelevant (InitialR2T=Yes and ImmediateData=No) we still answer a number, because
    // libiscsi reads the answer with strtol() and would take "Irrelevant" as 0.
    ours = Math.min(ours, effectiveNumber(state, "MaxBurstLength"));
  }
  const outcome = def.rule === "numeric-min" ? Math.min(offer, ours) : Math.max(offer, ours);
  state.values.set(def.name, outcome);
  return String(outcome);
}

/** The current outcome of a numeric key: negotiated, proposed by us, or the default. */
function effectiveNumber(state: NegotiationState, name: string): number {
  const v = state.values.get(name) ?? state.pending.get(name) ?? numericDef(name).default;
  return typeof v === "number" ? v : numericDef(name).default;
}

/** The initiator answers a key the target offered (see `targetProposals`). */
function acceptAnswerToOurOffer(def: KeyDef, value: string, state: NegotiationState): void {
  const offered = state.pending.get(def.name);
  state.pending.delete(def.name);
  state.offered.set(def.name, value);
  let outcome: KeyValue | undefined;
  if (def.rule === "boolean-and" || def.rule === "boolean-or") {
    const answer = parseBoolean(value);
    // AND with our No can only give No; OR with our Yes can only give Yes.
    if (
      answer !== undefined &&
      (def.rule === "boolean-and" ? !answer || offered : answer || !offered)
    ) {
      outcome = answer;
    }
  } else if (def.rule === "numeric-min" || def.rule === "numeric-max") {
    const answer = parseNumericValue(value);
    if (
      answer !== undefined &&
      typeof offered === "number" &&
      answer >= def.range[0] &&
      answer <= def.range[1] &&
      (def.rule === "numeric-min" ? answer <= offered : answer >= offered)
    ) {
      outcome = answer;
    }
  }
  if (outcome === undefined) {
    throw initiatorError(
      `unacceptable answer ${def.name}=${value} to our offer ${String(offered)}`,
    );
  }
  state.values.set(def.name, outcome);
}

/** Whether a key applies to this login at all (leading-only, discovery relevance). */
function applies(def: KeyDef, state: NegotiationState): boolean {
  if (def.leadingOnly && !state.leading) return false;
  return def.discovery || state.sessionType !== "Discovery";
}

/**
 * Whether ending the login with the RFC default of `def` would break one of our hard limits
 * (e.g. a MaxBurstLength limit below 262144, or ImmediateData=No); returns the value we need.
 */
function requiredValue(
  def: KeyDef,
  state: NegotiationState,
  limits: ResolvedLimits,
): KeyValue | undefined {
  if (def.rule === "boolean-and" && def.hardLimit) {
    return def.default && !def.target(limits) ? false : undefined;
  }
  if (def.rule === "numeric-min" && def.hardLimit) {
    let ours = def.target(limits);
    if (def.name === "FirstBurstLength") {
      ours = Math.min(ours, effectiveNumber(state, "MaxBurstLength"));
    }
    return def.default > ours ? ours : undefined;
  }
  return undefined;
}

/**
 * Keys the target must offer itself before leaving the operational stage: hard limits of ours
 * that the initiator never negotiated and whose RFC default we cannot accept. Records them as
 * pending; the initiator answers them in its next request (RFC 7143 6.2).
 */
export function targetProposals(
  state: NegotiationState,
  limits: ResolvedLimits,
): Array<[string, string]> {
  const proposals: Array<[string, string]> = [];
  for (const def of LOGIN_KEYS) {
    if (!applies(def, state) || state.offered.has(def.name) || state.pending.has(def.name)) {
      continue;
    }
    const value = requiredValue(def, state, limits);
    if (value === undefined) continue;
    state.pending.set(def.name, value);
    proposals.push([def.name, typeof value === "boolean" ? yesNo(value) : String(value)]);
  }
  return proposals;
}

/**
 * Declarations the target adds unprompted (RFC 7143 13.12: each side declares its
 * MaxRecvDataSegmentLength). Returns each once per login.
 */
export function targetDeclarations(
  state: NegotiationState,
  limits: ResolvedLimits,
): Array<[string, string]> {
  if (state.declared.has("MaxRecvDataSegmentLength")) return [];
  state.declared.set("MaxRecvDataSegmentLength", limits.maxRecvDataSegmentLength);
  return [["MaxRecvDataSegmentLength", String(limits.maxRecvDataSegmentLength)]];
}

/**
 * Whether the target needs the operational stage even if the initiator wants to skip it (T=1,
 * NSG=FullFeaturePhase from the security stage): when it must declare a MaxRecvDataSegmentLength
 * below the default 8192 or offer a key. Declaring a larger one is optional, so a skip is
 * honoured then (the initiator keeps sending at most 8192-byte segments).
 */
export function needsOperationalStage(state: NegotiationState, limits: ResolvedLimits): boolean {
  if (limits.maxRecvDataSegmentLength < 8192) return true;
  return LOGIN_KEYS.some(
    (def) =>
      applies(def, state) &&
      !state.values.has(def.name) &&
      requiredValue(def, state, limits) !== undefined,
  );
}

/**
 * The last check before full feature phase (throws `LoginError`): the negotiated values are
 * consistent (RFC 7143 13.14: FirstBurstLength <= MaxBurstLength) and no hard limit of ours is
 * left at an unacceptable default because the initiator's offer was rejected.
 */
export function checkFinal(state: NegotiationState, limits: ResolvedLimits): void {
  const params = sessionParams(state);
  if (params.firstBurstLength > params.maxBurstLength) {
    throw initiatorError(
      `FirstBurstLength ${params.firstBurstLength} exceeds MaxBurstLength ${params.maxBurstLength}`,
    );
  }
  for (const def of LOGIN_KEYS) {
    if (!applies(def, state) || state.values.has(def.name)) continue;
    if (requiredValue(def, state, limits) !== undefined) {
      throw initiatorError(
        `${def.name} left at its default: offer ${state.offered.get(def.name) ?? "none"} rejected`,
      );
    }
  }
}

// ------------------------------------------------------------------------------ results

/** The outcome of a login, with RFC defaults for every key that was not negotiated. */
export interface SessionParams {
  readonly sessionType: SessionType;
  readonly initiatorName: string;
  readonly initiatorAlias?: string;
  readonly targetName?: string;
  readonly headerDigest: boolean;
  readonly dataDigest: boolean;
  /** What the initiator accepts: the limit on our Data-In and text response segments. */
  readonly maxRecvDataSegmentLength: number;
  /** What we declared (8192 if we never did): the limit on what we accept. */
  readonly targetMaxRecvDataSegmentLength: number;
  readonly maxBurstLength: number;
  readonly firstBurstLength: number;
  readonly immediateData: boolean;
  readonly initialR2T: boolean;
  readonly maxOutstandingR2T: number;
  readonly defaultTime2Wait: number;
  readonly defaultTime2Retain: number;
  readonly errorRecoveryLevel: number;
  readonly maxConnections: number;
  readonly dataPDUInOrder: boolean;
  readonly dataSequenceInOrder: boolean;
}

/** Read the parameters out of a negotiation state. */
export function sessionParams(state: NegotiationState): SessionParams {
  const v = state.values;
  const num = (name: string): number => {
    const x = v.get(name);
    return typeof x === "number" ? x : numericDef(name).default;
  };
  const bool = (name: string): boolean => {
    const x = v.get(name);
    if (typeof x === "boolean") return x;
    const def = keyDef(name);
    return def?.rule === "boolean-and" || def?.rule === "boolean-or" ? def.default : false;
  };
  const str = (name: string): string | undefined => {
    const x = v.get(name);
    return typeof x === "string" ? x : undefined;
  };
  const declaredMrdsl = state.declared.get("MaxRecvDataSegmentLength");
  const initiatorMrdsl = v.get("MaxRecvDataSegmentLength");
  const initiatorAlias = str("InitiatorAlias");
  const targetName = str("TargetName");
  return {
    sessionType: state.sessionType,
    initiatorName: str("InitiatorName") ?? "",
    ...(initiatorAlias !== undefined ? { initiatorAlias } : {}),
    ...(targetName !== undefined ? { targetName } : {}),
    headerDigest: v.get("HeaderDigest") === "CRC32C",
    dataDigest: v.get("DataDigest") === "CRC32C",
    maxRecvDataSegmentLength: typeof initiatorMrdsl === "number" ? initiatorMrdsl : 8192,
    targetMaxRecvDataSegmentLength: typeof declaredMrdsl === "number" ? declaredMrdsl : 8192,
    maxBurstLength: num("MaxBurstLength"),
    firstBurstLength: num("FirstBurstLength"),
    immediateData: bool("ImmediateData"),
    initialR2T: bool("InitialR2T"),
    maxOutstandingR2T: num("MaxOutstandingR2T"),
    defaultTime2Wait: num("DefaultTime2Wait"),
    defaultTime2Retain: num("DefaultTime2Retain"),
    errorRecoveryLevel: num("ErrorRecoveryLevel"),
    maxConnections: num("MaxConnections"),
    dataPDUInOrder: bool("DataPDUInOrder"),
    dataSequenceInOrder: bool("DataSequenceInOrder"),
  };
}
