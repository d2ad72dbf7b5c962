import { describe, expect, it } from "vitest";
import { LoginError } from "./errors.js";
import {
  checkFinal,
  createNegotiationState,
  DEFAULT_TARGET_LIMITS,
  LOGIN_KEYS,
  MAX_DATA_LENGTH,
  type NegotiationState,
  needsOperationalStage,
  negotiate,
  resolveLimits,
  type SessionParams,
  sessionParams,
  type TargetLimits,
  targetDeclarations,
  targetProposals,
} from "./keys.js";

type Pairs = Array<[string, string]>;

function run(
  pairs: Pairs,
  options: {
    limits?: Partial<TargetLimits>;
    state?: NegotiationState;
    stage?: "security" | "operational";
  } = {},
) {
  const state = options.state ?? createNegotiationState();
  const limits = resolveLimits({ ...DEFAULT_TARGET_LIMITS, ...options.limits });
  const outcome = negotiate(pairs, state, limits, options.stage ?? "operational");
  return { ...outcome, answer: Object.fromEntries(outcome.answers), state, limits };
}

function failure(fn: () => unknown): LoginError {
  try {
    fn();
  } catch (err) {
    if (err instanceof LoginError) return err;
    throw err;
  }
  throw new Error("expected a LoginError");
}

const RFC_DEFAULTS: Omit<SessionParams, "initiatorName" | "sessionType"> = {
  headerDigest: false,
  dataDigest: false,
  maxRecvDataSegmentLength: 8192,
  targetMaxRecvDataSegmentLength: 8192,
  maxBurstLength: 262_144,
  firstBurstLength: 65_536,
  immediateData: true,
  initialR2T: true,
  maxOutstandingR2T: 1,
  defaultTime2Wait: 2,
  defaultTime2Retain: 20,
  errorRecoveryLevel: 0,
  maxConnections: 1,
  dataPDUInOrder: true,
  dataSequenceInOrder: true,
};

describe("the key table", () => {
  it("has each key once, defaults within range, list defaults supported", () => {
    const names = LOGIN_KEYS.map((k) => k.name);
    expect(new Set(names).size).toBe(names.length);
    for (const def of LOGIN_KEYS) {
      expect(def.rfc).toMatch(/^1[23]\.\d+(\.\d+)?$/);
      if (def.rule === "numeric-min" || def.rule === "numeric-max") {
        expect(def.default).toBeGreaterThanOrEqual(def.range[0]);
        expect(def.default).toBeLessThanOrEqual(def.range[1]);
      }
      if (def.rule === "list") expect(def.supported).toContain(def.default);
    }
  });

  it("prefers CRC32C over None for the digests", () => {
    const header = LOGIN_KEYS.find((k) => k.name === "HeaderDigest");
    expect(header?.rule === "list" && header.supported).toEqual(["CRC32C", "None"]);
  });
});

describe("negotiate: one row per key and rule (RFC 7143 6.2, 13)", () => {
  // [key, offered, answer, parameter, value, limits?]
  const cases: Array<
    [string, string, string, keyof SessionParams | null, unknown, Partial<TargetLimits>?]
  > = [
    // list: the first value of the initiator's list that we support (13.1)
    ["HeaderDigest", "CRC32C,None", "CRC32C", "headerDigest", true],
    ["HeaderDigest", "None,CRC32C", "None", "headerDigest", false],
    ["HeaderDigest", "None", "None", "headerDigest", false],
    ["HeaderDigest", "Y-com.example.md5,CRC32C", "CRC32C", "headerDigest", true],
    ["HeaderDigest", "Y-com.example.md5", "Reject", "headerDigest", false],
    ["HeaderDigest", "", "Reject", "headerDigest", false],
    ["DataDigest", "CRC32C", "CRC32C", "dataDigest", true],
    ["DataDigest", "None,CRC32C", "None", "dataDigest", false],
    ["TaskReporting", "FastAbort,RFC3720", "RFC3720", null, null],
    ["TaskReporting", "ResponseFence", "Reject", null, null],
    // numeric-min
    ["MaxConnections", "4", "1", "maxConnections", 1],
    ["MaxConnections", "0", "Reject", "maxConnections", 1],
    ["MaxConnections", "65536", "Reject", "maxConnections", 1],
    ["MaxBurstLength", "262144", "262144", "maxBurstLength", 262_144],
    ["MaxBurstLength", "0x40000", "262144", "maxBurstLength", 262_144],
    [
      "MaxBurstLength",
      "16776192",
      "1048576",
      "maxBurstLength",
      1_048_576,
      { maxBurstLength: 1_048_576 },
    ],
    ["MaxBurstLength", "511", "Reject", "maxBurstLength", 262_144],
    ["MaxBurstLength", "16777216", "Reject", "maxBurstLength", 262_144],
    ["MaxBurstLength", "lots", "Reject", "maxBurstLength", 262_144],
    ["FirstBurstLength", "65536", "65536", "firstBurstLength", 65_536],
    ["FirstBurstLength", "1048576", "262144", "firstBurstLength", 262_144],
    ["DefaultTime2Retain", "0", "0", "defaultTime2Retain", 0],
    ["DefaultTime2Retain", "60", "20", "defaultTime2Retain", 20],
    ["DefaultTime2Retain", "3601", "Reject", "defaultTime2Retain", 20],
    ["MaxOutstandingR2T", "8", "1", "maxOutstandingR2T", 1],
    ["MaxOutstandingR2T", "8", "4", "maxOutstandingR2T", 4, { maxOutstandingR2T: 4 }],
    ["MaxOutstandingR2T", "0", "Reject", "maxOutstandingR2T", 1],
    ["ErrorRecoveryLevel", "2", "0", "errorRecoveryLevel", 0],
    ["ErrorRecoveryLevel", "3", "Reject", "errorRecoveryLevel", 0],
    // numeric-max
    ["DefaultTime2Wait", "0", "2", "defaultTime2Wait", 2],
    ["DefaultTime2Wait", "5", "5", "defaultTime2Wait", 5],
    ["DefaultTime2Wait", "3601", "Reject", "defaultTime2Wait", 2],
    // boolean-or (our InitialR2T is No by default)
    ["InitialR2T", "No", "No", "initialR2T", false],
    ["InitialR2T", "Yes", "Yes", "initialR2T", true],
    ["InitialR2T", "No", "Yes", "initialR2T", true, { initialR2T: true }],
    ["InitialR2T", "yes", "Reject", "initialR2T", true],
    ["DataPDUInOrder", "No", "Yes", "dataPDUInOrder", true],
    ["DataPDUInOrder", "Yes", "Yes", "dataPDUInOrder", true],
    ["DataSequenceInOrder", "No", "Yes", "dataSequenceInOrder", true],
    // boolean-and
    ["ImmediateData", "Yes", "Yes", "immediateData", true],
    ["ImmediateData", "No", "No", "immediateData", false],
    ["ImmediateData", "Yes", "No", "immediateData", false, { immediateData: false }],
    ["ImmediateData", "1", "Reject", "immediateData", true],
    // obsolete RFC 3720 keys (RFC 7143 13.25)
    ["IFMarker", "No", "No", null, null],
    ["OFMarker", "Yes", "No", null, null],
    ["IFMarkInt", "2048~8192", "Reject", null, null],
    ["OFMarkInt", "2048", "Reject", null, null],
    // unknown and extension keys (6.2, 13.22)
    ["FooBar", "1", "NotUnderstood", null, null],
    ["X-com.example.feature", "Yes", "NotUnderstood", null, null],
    ["X#NodeArchitecture", "Linux", "NotUnderstood", null, null],
    ["iSCSIProtocolLevel", "2", "NotUnderstood", null, null], // RFC 7144
    // keys only the target sends, and SendTargets (full feature phase only)
    ["TargetAlias", "mine", "Irrelevant", null, null],
    ["TargetPortalGroupTag", "1", "Irrelevant", null, null],
    ["TargetAddress", "10.0.0.1:3260,1", "Irrelevant", null, null],
    ["SendTargets", "All", "Irrelevant", null, null],
  ];

  it.each(cases)("%s=%s → %s", (key, offered, answer, param, value, limits) => {
    const { answer: answers, params } = run([[key, offered]], { limits: limits ?? {} });
    expect(answers[key]).toBe(answer);
    if (param !== null) expect(params[param]).toBe(value);
  });

  it("takes declarations without answering them", () => {
    const { answers, params } = run([
      ["InitiatorName", "iqn.2024-01.test:host"],
      ["InitiatorAlias", "host"],
      ["TargetName", "iqn.2024-01.test:target"],
      ["MaxRecvDataSegmentLength", "65536"],
    ]);
    expect(answers).toEqual([]);
    expect(params).toMatchObject({
      initiatorName: "iqn.2024-01.test:host",
      initiatorAlias: "host",
      targetName: "iqn.2024-01.test:target",
      maxRecvDataSegmentLength: 65536,
      targetMaxRecvDataSegmentLength: 8192,
    });
  });

  it.each([
    ["511", "InitiatorError"],
    ["16777216", "InitiatorError"],
    ["big", "InitiatorError"],
  ])("fails the login for MaxRecvDataSegmentLength=%s", (value, code) => {
    expect(failure(() => run([["MaxRecvDataSegmentLength", value]])).code).toBe(code);
  });

  it("fails the login for an unknown SessionType", () => {
    expect(failure(() => run([["SessionType", "Boot"]])).code).toBe("SessionTypeNotSupported");
  });

  it("gives the RFC defaults for keys that were not negotiated", () => {
    const { params } = run([["InitiatorName", "iqn.x"]]);
    expect(params).toEqual({ sessionType: "Normal", initiatorName: "iqn.x", ...RFC_DEFAULTS });
  });

  it("answers in the order of the offer, each key once", () => {
    const { answers } = run([
      ["X-b", "1"],
      ["MaxBurstLength", "65536"],
      ["X-b", "2"],
      ["HeaderDigest", "None"],
      ["FirstBurstLength", "512"],
      ["ImmediateData", "No"],
    ]);
    expect(answers.map(([k]) => k)).toEqual([
      "X-b",
      "MaxBurstLength",
      "HeaderDigest",
      "FirstBurstLength",
      "ImmediateData",
    ]);
  });
});

describe("FirstBurstLength and MaxBurstLength (RFC 7143 13.14)", () => {
  it("never answers a FirstBurstLength above the MaxBurstLength of the same offer", () => {
    const { answer, params } = run([
      ["FirstBurstLength", "65536"],
      ["MaxBurstLength", "16384"],
    ]);
    expect(answer).toEqual({ FirstBurstLength: "16384", MaxBurstLength: "16384" });
    expect(params.firstBurstLength).toBeLessThanOrEqual(params.maxBurstLength);
  });

  it("fails the login when a later MaxBurstLength undercuts the agreed FirstBurstLength", () => {
    const state = createNegotiationState();
    run([["FirstBurstLength", "65536"]], { state });
    run([["MaxBurstLength", "4096"]], { state });
    expect(failure(() => checkFinal(state, resolveLimits(DEFAULT_TARGET_LIMITS))).code).toBe(
      "InitiatorError",
    );
  });

  it("answers a number even when the key is irrelevant (libiscsi parses it with strtol)", () => {
    const { answer } = run([
      ["InitialR2T", "Yes"],
      ["ImmediateData", "No"],
      ["FirstBurstLength", "4096"],
    ]);
    expect(answer.FirstBurstLength).toBe("4096");
  });
});

describe("relevance", () => {
  it("answers Irrelevant to data keys in a discovery session but negotiates the rest", () => {
    const { answer, params } = run([
      ["SessionType", "Discovery"],
      ["HeaderDigest", "CRC32C,None"],
      ["DataDigest", "None"],
      ["MaxRecvDataSegmentLength", "32768"],
      ["ErrorRecoveryLevel", "0"],
      ["DefaultTime2Wait", "2"],
      ["DefaultTime2Retain", "0"],
      ["MaxConnections", "1"],
      ["InitialR2T", "No"],
      ["ImmediateData", "Yes"],
      ["MaxBurstLength", "262144"],
      ["FirstBurstLength", "65536"],
      ["MaxOutstandingR2T", "1"],
      ["DataPDUInOrder", "Yes"],
      ["DataSequenceInOrder", "Yes"],
    ]);
    expect(answer).toEqual({
      HeaderDigest: "CRC32C",
      DataDigest: "None",
      ErrorRecoveryLevel: "0",
      DefaultTime2Wait: "2",
      DefaultTime2Retain: "0",
      MaxConnections: "Irrelevant",
      InitialR2T: "Irrelevant",
      ImmediateData: "Irrelevant",
      MaxBurstLength: "Irrelevant",
      FirstBurstLength: "Irrelevant",
      MaxOutstandingR2T: "Irrelevant",
      DataPDUInOrder: "Irrelevant",
      DataSequenceInOrder: "Irrelevant",
    });
    expect(params).toMatchObject({
      sessionType: "Discovery",
      headerDigest: true,
      maxRecvDataSegmentLength: 32768,
      maxBurstLength: 262_144,
      initialR2T: true,
    });
  });

  it("answers Irrelevant to leading-only keys in a non-leading login", () => {
    const state = createNegotiationState({ leading: false });
    const { answer } = run(
      [
        ["MaxBurstLength", "65536"],
        ["HeaderDigest", "CRC32C"],
      ],
      { state },
    );
    expect(answer).toEqual({ MaxBurstLength: "Irrelevant", HeaderDigest: "CRC32C" });
  });
});

describe("keys negotiated twice (RFC 7143 6.2.1)", () => {
  it("fails the login for a key repeated in one request", () => {
    const err = failure(() =>
      run([
        ["MaxBurstLength", "65536"],
        ["MaxBurstLength", "65536"],
      ]),
    );
    expect(err.code).toBe("InitiatorError");
  });

  it("fails the login for a key offered again in a later request", () => {
    const state = createNegotiationState();
    run([["ImmediateData", "Yes"]], { state });
    expect(failure(() => run([["ImmediateData", "Yes"]], { state })).code).toBe("InitiatorError");
  });

  it("tolerates a declaration repeated with the same value (libiscsi), not another value", () => {
    const state = createNegotiationState();
    run([["InitiatorName", "iqn.a"]], { state, stage: "security" });
    expect(run([["InitiatorName", "iqn.a"]], { state }).answers).toEqual([]);
    expect(failure(() => run([["InitiatorName", "iqn.b"]], { state })).code).toBe("InitiatorError");
  });

  it("answers a repeated unknown key once", () => {
    const { answers } = run([
      ["X-a", "1"],
      ["X-a", "1"],
    ]);
    expect(answers).toEqual([["X-a", "NotUnderstood"]]);
  });
});

describe("stages (RFC 7143 6.3)", () => {
  it("hands security keys to the login layer in the security stage", () => {
    const { security, answers } = run(
      [
        ["InitiatorName", "iqn.a"],
        ["AuthMethod", "CHAP,None"],
        ["MaxRecvDataSegmentLength", "8192"],
      ],
      { stage: "security" },
    );
    expect(security).toEqual([["AuthMethod", "CHAP,None"]]);
    expect(answers).toEqual([]);
  });

  it("refuses operational keys in the security stage", () => {
    expect(failure(() => run([["HeaderDigest", "None"]], { stage: "security" })).code).toBe(
      "InitiatorError",
    );
  });

  it("refuses security keys in the operational stage", () => {
    expect(failure(() => run([["CHAP_A", "5"]])).code).toBe("InitiatorError");
  });
});

describe("what the target adds itself", () => {
  it("declares its MaxRecvDataSegmentLength once", () => {
    const state = createNegotiationState();
    const limits = resolveLimits({ ...DEFAULT_TARGET_LIMITS, maxRecvDataSegmentLength: 65536 });
    expect(targetDeclarations(state, limits)).toEqual([["MaxRecvDataSegmentLength", "65536"]]);
    expect(targetDeclarations(state, limits)).toEqual([]);
    expect(sessionParams(state).targetMaxRecvDataSegmentLength).toBe(65536);
  });

  it("offers nothing with the default limits", () => {
    const state = createNegotiationState();
    const limits = resolveLimits(DEFAULT_TARGET_LIMITS);
    expect(targetProposals(state, limits)).toEqual([]);
    expect(needsOperationalStage(state, limits)).toBe(false);
  });

  it("offers hard limits below the RFC defaults and checks the answers", () => {
    const limits = resolveLimits({
      maxRecvDataSegmentLength: 262_144,
      maxBurstLength: 131_072,
      firstBurstLength: 32_768,
      immediateData: false,
    });
    const state = createNegotiationState();
    expect(needsOperationalStage(state, limits)).toBe(true);
    expect(targetProposals(state, limits)).toEqual([
      ["ImmediateData", "No"],
      ["MaxBurstLength", "131072"],
      ["FirstBurstLength", "32768"],
    ]);
    // The initiator answers: a smaller MaxBurstLength is fine, a larger one is not.
    negotiate(
      [
        ["ImmediateData", "No"],
        ["MaxBurstLength", "65536"],
        ["FirstBurstLength", "32768"],
      ],
      state,
      limits,
      "operational",
    );
    expect(state.pending.size).toBe(0);
    expect(sessionParams(state)).toMatchObject({
      immediateData: false,
      maxBurstLength: 65536,
      firstBurstLength: 32768,
    });
    checkFinal(state, limits);
  });

  it.each([
    ["ImmediateData", "Yes"],
    ["MaxBurstLength", "262144"],
    ["MaxBurstLength", "Reject"],
  ])("fails the login for the answer %s=%s to our offer", (key, value) => {
    const limits = resolveLimits({
      maxRecvDataSegmentLength: 262_144,
      maxBurstLength: 131_072,
      firstBurstLength: 32_768,
      immediateData: false,
    });
    const state = createNegotiationState();
    targetProposals(state, limits);
    expect(failure(() => negotiate([[key, value]], state, limits, "operational")).code).toBe(
      "InitiatorError",
    );
  });

  it("fails the login when a rejected offer leaves a default we cannot accept", () => {
    const limits = resolveLimits({ ...DEFAULT_TARGET_LIMITS, maxBurstLength: 65536 });
    const state = createNegotiationState();
    negotiate([["MaxBurstLength", "100"]], state, limits, "operational");
    expect(failure(() => checkFinal(state, limits)).code).toBe("InitiatorError");
  });

  it("needs the operational stage to declare a MaxRecvDataSegmentLength below 8192", () => {
    const limits = resolveLimits({ ...DEFAULT_TARGET_LIMITS, maxRecvDataSegmentLength: 4096 });
    expect(needsOperationalStage(createNegotiationState(), limits)).toBe(true);
  });
});

describe("resolveLimits", () => {
  it("clamps 16 MiB to 2**24 - 1 and FirstBurstLength to MaxBurstLength", () => {
    const l = resolveLimits({
      maxRecvDataSegmentLength: 262_144,
      maxBurstLength: 16 * 1024 * 1024,
      firstBurstLength: 16 * 1024 * 1024,
    });
    expect(l.maxBurstLength).toBe(MAX_DATA_LENGTH);
    expect(l.firstBurstLength).toBe(MAX_DATA_LENGTH);
    expect(resolveLimits({ maxBurstLength: 4096, firstBurstLength: 8192 }).firstBurstLength).toBe(
      4096,
    );
  });

  it("fills in defaults and refuses values below the RFC minimum", () => {
    expect(resolveLimits(undefined)).toEqual(DEFAULT_TARGET_LIMITS);
    expect(() => resolveLimits({ maxRecvDataSegmentLength: 100 })).toThrow(RangeError);
    expect(() => resolveLimits({ maxBurstLength: 1000.5 })).toThrow(RangeError);
  });
});
