import { describe, expect, it } from "vitest";
import { LoginStatus } from "../constants.js";
import { ChapAlgorithm, chapResponse } from "./chap.js";
import {
  type InitiatorCredentials,
  LoginNegotiator,
  type LoginPolicy,
  type LoginStep,
  MAX_LOGIN_REQUESTS,
} from "./login.js";
import {
  answerChallenge,
  type Keys,
  loginRequest,
  responseKeys,
  responseMap,
  TEST_ISID,
} from "./testing.js";
import { decodeBinaryValue, encodeHexValue, encodeTextKeys } from "./text.js";

const TARGET = "iqn.2024-01.com.example:sanmux";
const OPEN = "iqn.1994-05.com.redhat:open-agent";
const CHAP = "iqn.2010-01.libiscsi:chap-agent";
const MUTUAL = "iqn.2010-01.libiscsi:mutual-agent";
const CHAP_USER = "backup1";
const CHAP_SECRET = "initiator-secret-1";
const TARGET_USER = "sanmux-target";
const TARGET_SECRET = "target-secret-22";

const AGENTS: Record<string, InitiatorCredentials> = {
  [OPEN]: {},
  [CHAP]: { chap: { user: CHAP_USER, secret: CHAP_SECRET } },
  [MUTUAL]: {
    chap: {
      user: CHAP_USER,
      secret: CHAP_SECRET,
      targetUser: TARGET_USER,
      targetSecret: TARGET_SECRET,
    },
  },
};

function policy(overrides: Partial<LoginPolicy> = {}): LoginPolicy {
  return {
    targetName: TARGET,
    portalGroupTag: 1,
    limits: {
      maxRecvDataSegmentLength: 262_144,
      maxBurstLength: 16 * 1024 * 1024,
      firstBurstLength: 262_144,
    },
    lookupInitiator: (name) => AGENTS[name],
    ...overrides,
  };
}

const SECURITY = 0;
const OPERATIONAL = 1;
const FULL_FEATURE = 3;

/** Status of a step as [class, detail]. */
const status = (step: LoginStep): [number, number] => [
  step.response.statusClass,
  step.response.statusDetail,
];
const st = (s: { statusClass: number; statusDetail: number }): [number, number] => [
  s.statusClass,
  s.statusDetail,
];

/** What libiscsi's first security-stage request carries (lib/login.c). */
function libiscsiSecurityKeys(initiator: string, sessionType = "Normal"): Keys {
  return [
    ["InitiatorName", initiator],
    ["InitiatorAlias", "libiscsi-host"],
    ...(sessionType === "Normal" ? [["TargetName", TARGET] as [string, string]] : []),
    ["SessionType", sessionType],
    ["AuthMethod", "CHAP,None"],
  ];
}

/** What libiscsi's operational-stage request carries: identity again, then every key. */
function libiscsiOperationalKeys(initiator: string, sessionType = "Normal"): Keys {
  return [
    ["InitiatorName", initiator],
    ["InitiatorAlias", "libiscsi-host"],
    ...(sessionType === "Normal" ? [["TargetName", TARGET] as [string, string]] : []),
    ["SessionType", sessionType],
    ["HeaderDigest", "None,CRC32C"],
    ["DataDigest", "None"],
    ["InitialR2T", "Yes"],
    ["ImmediateData", "Yes"],
    ["MaxBurstLength", "262144"],
    ["FirstBurstLength", "262144"],
    ["DefaultTime2Wait", "2"],
    ["DefaultTime2Retain", "0"],
    ["IFMarker", "No"],
    ["OFMarker", "No"],
    ["MaxConnections", "1"],
    ["MaxRecvDataSegmentLength", "262144"],
    ["DataPDUInOrder", "Yes"],
    ["DataSequenceInOrder", "Yes"],
  ];
}

/** What the Linux initiator (open-iscsi) offers in its operational stage. */
const OPEN_ISCSI_OPERATIONAL: Keys = [
  ["HeaderDigest", "None"],
  ["DataDigest", "None"],
  ["ErrorRecoveryLevel", "0"],
  ["InitialR2T", "No"],
  ["ImmediateData", "Yes"],
  ["MaxBurstLength", "16776192"],
  ["FirstBurstLength", "262144"],
  ["MaxConnections", "1"],
  ["DefaultTime2Wait", "2"],
  ["DefaultTime2Retain", "0"],
  ["IFMarker", "No"],
  ["OFMarker", "No"],
  ["DataPDUInOrder", "Yes"],
  ["DataSequenceInOrder", "Yes"],
  ["MaxOutstandingR2T", "1"],
  ["MaxRecvDataSegmentLength", "262144"],
];

describe("libiscsi with CHAP (MD5)", () => {
  it("authenticates, negotiates and enters full feature phase", () => {
    const login = new LoginNegotiator(policy());

    // 1: security stage, T=1 towards operational, AuthMethod=CHAP,None.
    const s1 = login.step(
      loginRequest({
        csg: SECURITY,
        nsg: OPERATIONAL,
        transit: true,
        keys: libiscsiSecurityKeys(CHAP),
      }),
    );
    expect(status(s1)).toEqual([0, 0]);
    // Not ready to transit: CHAP has only been selected.
    expect(s1.response).toMatchObject({ transit: false, cont: false, csg: SECURITY, nsg: 0 });
    expect(s1.response.versionMax).toBe(0);
    expect(s1.response.versionActive).toBe(0);
    expect(responseKeys(s1)).toEqual([
      ["AuthMethod", "CHAP"],
      ["TargetPortalGroupTag", "1"],
    ]);

    // 2: CHAP_A=5, T=0.
    const s2 = login.step(loginRequest({ csg: SECURITY, nsg: OPERATIONAL, keys: { CHAP_A: "5" } }));
    expect(s2.response.transit).toBe(false);
    const challenge = responseMap(s2);
    expect(challenge.CHAP_A).toBe("5");
    expect(decodeBinaryValue(challenge.CHAP_C ?? "")).toHaveLength(16);

    // 3: CHAP_N/CHAP_R with T=1: authenticated, transit to operational.
    const s3 = login.step(
      loginRequest({
        csg: SECURITY,
        nsg: OPERATIONAL,
        transit: true,
        keys: answerChallenge(s2, CHAP_USER, CHAP_SECRET),
      }),
    );
    expect(status(s3)).toEqual([0, 0]);
    expect(s3.response).toMatchObject({ transit: true, csg: SECURITY, nsg: OPERATIONAL });
    expect(responseKeys(s3)).toEqual([]);
    expect(s3.done).toBeUndefined();

    // 4: operational stage with everything, identity repeated.
    const s4 = login.step(
      loginRequest({
        csg: OPERATIONAL,
        nsg: FULL_FEATURE,
        transit: true,
        keys: libiscsiOperationalKeys(CHAP),
      }),
    );
    expect(status(s4)).toEqual([0, 0]);
    expect(s4.response).toMatchObject({ transit: true, csg: OPERATIONAL, nsg: FULL_FEATURE });
    expect(responseKeys(s4)).toEqual([
      ["HeaderDigest", "None"],
      ["DataDigest", "None"],
      ["InitialR2T", "Yes"],
      ["ImmediateData", "Yes"],
      ["MaxBurstLength", "262144"],
      ["FirstBurstLength", "262144"],
      ["DefaultTime2Wait", "2"],
      ["DefaultTime2Retain", "0"],
      ["IFMarker", "No"],
      ["OFMarker", "No"],
      ["MaxConnections", "1"],
      ["DataPDUInOrder", "Yes"],
      ["DataSequenceInOrder", "Yes"],
      ["MaxRecvDataSegmentLength", "262144"],
    ]);
    expect(s4.done?.params).toEqual({
      sessionType: "Normal",
      initiatorName: CHAP,
      initiatorAlias: "libiscsi-host",
      targetName: TARGET,
      headerDigest: false,
      dataDigest: false,
      maxRecvDataSegmentLength: 262_144,
      targetMaxRecvDataSegmentLength: 262_144,
      maxBurstLength: 262_144,
      firstBurstLength: 262_144,
      immediateData: true,
      initialR2T: true,
      maxOutstandingR2T: 1,
      defaultTime2Wait: 2,
      defaultTime2Retain: 0,
      errorRecoveryLevel: 0,
      maxConnections: 1,
      dataPDUInOrder: true,
      dataSequenceInOrder: true,
    });
    expect(s4.done?.isid).toEqual(TEST_ISID);
    expect(s4.done?.tsih).toBe(0);
    expect(() => login.step(loginRequest())).toThrow(/after the login done/);
  });

  it("mutual CHAP: the target proves itself in the response that transits", () => {
    const login = new LoginNegotiator(policy());
    login.step(
      loginRequest({
        csg: SECURITY,
        nsg: OPERATIONAL,
        transit: true,
        keys: libiscsiSecurityKeys(MUTUAL),
      }),
    );
    const s2 = login.step(loginRequest({ csg: SECURITY, nsg: OPERATIONAL, keys: { CHAP_A: "5" } }));
    const initiatorChallenge = Buffer.alloc(32, 0x5a);
    const s3 = login.step(
      loginRequest({
        csg: SECURITY,
        nsg: OPERATIONAL,
        transit: true,
        keys: {
          ...answerChallenge(s2, CHAP_USER, CHAP_SECRET),
          CHAP_I: "1",
          CHAP_C: encodeHexValue(initiatorChallenge),
        },
      }),
    );
    expect(s3.response).toMatchObject({ transit: true, nsg: OPERATIONAL, statusClass: 0 });
    const keys = responseMap(s3);
    expect(keys.CHAP_N).toBe(TARGET_USER);
    expect(decodeBinaryValue(keys.CHAP_R ?? "")).toEqual(
      chapResponse(ChapAlgorithm.MD5, 1, TARGET_SECRET, initiatorChallenge),
    );
  });

  it("fails with 2/1 on a wrong secret and says why in the log line", () => {
    const login = new LoginNegotiator(policy());
    login.step(
      loginRequest({
        csg: SECURITY,
        nsg: OPERATIONAL,
        transit: true,
        keys: libiscsiSecurityKeys(CHAP),
      }),
    );
    const s2 = login.step(loginRequest({ csg: SECURITY, nsg: OPERATIONAL, keys: { CHAP_A: "5" } }));
    const s3 = login.step(
      loginRequest({
        csg: SECURITY,
        nsg: OPERATIONAL,
        transit: true,
        keys: answerChallenge(s2, CHAP_USER, "not-the-secret"),
      }),
    );
    expect(status(s3)).toEqual(st(LoginStatus.AuthenticationFailure));
    expect(s3.response.transit).toBe(false);
    expect(s3.response.keys).toHaveLength(0);
    expect(s3.failed).toMatchObject({
      code: "AuthenticationFailure",
      reason: "CHAP response mismatch for user backup1",
      initiatorName: CHAP,
    });
    expect(() => login.step(loginRequest())).toThrow(/after the login failed/);
  });

  it("fails with 2/1 when the initiator asks for mutual CHAP and no target secret is set", () => {
    const login = new LoginNegotiator(policy());
    login.step(loginRequest({ csg: SECURITY, nsg: OPERATIONAL, keys: libiscsiSecurityKeys(CHAP) }));
    const s2 = login.step(loginRequest({ csg: SECURITY, nsg: OPERATIONAL, keys: { CHAP_A: "5" } }));
    const s3 = login.step(
      loginRequest({
        csg: SECURITY,
        nsg: OPERATIONAL,
        transit: true,
        keys: {
          ...answerChallenge(s2, CHAP_USER, CHAP_SECRET),
          CHAP_I: "3",
          CHAP_C: "0x0102030405",
        },
      }),
    );
    expect(status(s3)).toEqual(st(LoginStatus.AuthenticationFailure));
  });
});

describe("libiscsi without CHAP", () => {
  it("logs in with a single operational-stage request", () => {
    const login = new LoginNegotiator(policy());
    const s = login.step(
      loginRequest({
        csg: OPERATIONAL,
        nsg: FULL_FEATURE,
        transit: true,
        keys: libiscsiOperationalKeys(OPEN),
      }),
    );
    expect(status(s)).toEqual([0, 0]);
    expect(s.response).toMatchObject({ transit: true, csg: OPERATIONAL, nsg: FULL_FEATURE });
    const keys = responseMap(s);
    expect(keys.TargetPortalGroupTag).toBe("1");
    expect(keys.MaxRecvDataSegmentLength).toBe("262144");
    expect(s.done?.params.initiatorName).toBe(OPEN);
  });

  it("fails with 2/1 when the agent requires CHAP but the login starts in operational stage", () => {
    const login = new LoginNegotiator(policy());
    const s = login.step(
      loginRequest({
        csg: OPERATIONAL,
        nsg: FULL_FEATURE,
        transit: true,
        keys: libiscsiOperationalKeys(CHAP),
      }),
    );
    expect(status(s)).toEqual(st(LoginStatus.AuthenticationFailure));
  });
});

describe("Linux open-iscsi style", () => {
  function openIscsi(chapA: string, mutual: boolean) {
    const login = new LoginNegotiator(policy());
    const initiator = mutual ? MUTUAL : CHAP;
    const s1 = login.step(
      loginRequest({
        csg: SECURITY,
        nsg: OPERATIONAL,
        keys: [
          ["InitiatorName", initiator],
          ["InitiatorAlias", "linux-host"],
          ["TargetName", TARGET],
          ["SessionType", "Normal"],
          ["AuthMethod", "CHAP"],
        ],
      }),
    );
    expect(responseMap(s1).AuthMethod).toBe("CHAP");
    const s2 = login.step(
      loginRequest({ csg: SECURITY, nsg: OPERATIONAL, keys: { CHAP_A: chapA } }),
    );
    const initiatorChallenge = Buffer.from("00112233445566778899aabbccddeeff", "hex");
    const s3 = login.step(
      loginRequest({
        csg: SECURITY,
        nsg: OPERATIONAL,
        transit: true,
        keys: {
          ...answerChallenge(s2, CHAP_USER, CHAP_SECRET),
          ...(mutual ? { CHAP_I: "200", CHAP_C: encodeHexValue(initiatorChallenge) } : {}),
        },
      }),
    );
    const s4 = login.step(
      loginRequest({
        csg: OPERATIONAL,
        nsg: FULL_FEATURE,
        transit: true,
        keys: OPEN_ISCSI_OPERATIONAL,
      }),
    );
    return { s1, s2, s3, s4, initiatorChallenge };
  }

  it("CHAP_A=5, one-way", () => {
    const { s2, s3, s4 } = openIscsi("5", false);
    expect(responseMap(s2).CHAP_A).toBe("5");
    expect(s3.response).toMatchObject({ transit: true, nsg: OPERATIONAL });
    expect(status(s4)).toEqual([0, 0]);
    expect(s4.done?.params).toMatchObject({
      initialR2T: false,
      immediateData: true,
      maxBurstLength: 16_776_192,
      firstBurstLength: 262_144,
      maxRecvDataSegmentLength: 262_144,
      errorRecoveryLevel: 0,
    });
  });

  it("CHAP_A=7,5 picks SHA-256 (the first the target supports), mutual", () => {
    const { s2, s3, s4, initiatorChallenge } = openIscsi("7,5", true);
    expect(responseMap(s2).CHAP_A).toBe("7");
    expect(decodeBinaryValue(responseMap(s2).CHAP_C ?? "")).toHaveLength(32);
    expect(decodeBinaryValue(responseMap(s3).CHAP_R ?? "")).toEqual(
      chapResponse(ChapAlgorithm.SHA256, 200, TARGET_SECRET, initiatorChallenge),
    );
    expect(s4.done).toBeDefined();
  });

  it("answers T=0 while the initiator does, and transits when it asks", () => {
    const login = new LoginNegotiator(policy());
    login.step(loginRequest({ csg: SECURITY, nsg: OPERATIONAL, keys: libiscsiSecurityKeys(CHAP) }));
    const s2 = login.step(loginRequest({ csg: SECURITY, nsg: OPERATIONAL, keys: { CHAP_A: "5" } }));
    // Response with T=0: authenticated, but the target must not set T.
    const s3 = login.step(
      loginRequest({
        csg: SECURITY,
        nsg: OPERATIONAL,
        keys: answerChallenge(s2, CHAP_USER, CHAP_SECRET),
      }),
    );
    expect(s3.response.transit).toBe(false);
    const s4 = login.step(loginRequest({ csg: SECURITY, nsg: OPERATIONAL, transit: true }));
    expect(s4.response).toMatchObject({ transit: true, csg: SECURITY, nsg: OPERATIONAL });
    // Operational stage over two requests: the first without T.
    const s5 = login.step(
      loginRequest({ csg: OPERATIONAL, nsg: FULL_FEATURE, keys: { HeaderDigest: "CRC32C" } }),
    );
    expect(s5.response.transit).toBe(false);
    expect(responseKeys(s5)).toEqual([
      ["HeaderDigest", "CRC32C"],
      ["MaxRecvDataSegmentLength", "262144"],
    ]);
    const s6 = login.step(
      loginRequest({
        csg: OPERATIONAL,
        nsg: FULL_FEATURE,
        transit: true,
        keys: { DataDigest: "CRC32C" },
      }),
    );
    expect(responseKeys(s6)).toEqual([["DataDigest", "CRC32C"]]);
    expect(s6.done?.params).toMatchObject({ headerDigest: true, dataDigest: true });
  });
});

describe("skipping the operational stage", () => {
  it("goes from security straight to full feature phase with AuthMethod=None", () => {
    const login = new LoginNegotiator(policy());
    const s = login.step(
      loginRequest({
        csg: SECURITY,
        nsg: FULL_FEATURE,
        transit: true,
        keys: { InitiatorName: OPEN, TargetName: TARGET, AuthMethod: "None" },
      }),
    );
    expect(status(s)).toEqual([0, 0]);
    expect(s.response).toMatchObject({ transit: true, csg: SECURITY, nsg: FULL_FEATURE });
    expect(responseKeys(s)).toEqual([
      ["AuthMethod", "None"],
      ["TargetPortalGroupTag", "1"],
    ]);
    // Nothing was negotiated or declared: RFC defaults everywhere.
    expect(s.done?.params).toMatchObject({
      maxRecvDataSegmentLength: 8192,
      targetMaxRecvDataSegmentLength: 8192,
      maxBurstLength: 262_144,
      firstBurstLength: 65_536,
      initialR2T: true,
      immediateData: true,
    });
  });

  it("goes from CHAP straight to full feature phase", () => {
    const login = new LoginNegotiator(policy());
    login.step(
      loginRequest({ csg: SECURITY, nsg: FULL_FEATURE, keys: libiscsiSecurityKeys(CHAP) }),
    );
    const s2 = login.step(
      loginRequest({ csg: SECURITY, nsg: FULL_FEATURE, keys: { CHAP_A: "5" } }),
    );
    const s3 = login.step(
      loginRequest({
        csg: SECURITY,
        nsg: FULL_FEATURE,
        transit: true,
        keys: answerChallenge(s2, CHAP_USER, CHAP_SECRET),
      }),
    );
    expect(s3.response).toMatchObject({ transit: true, nsg: FULL_FEATURE });
    expect(s3.done).toBeDefined();
  });

  it("insists on the operational stage when its limits are below the RFC defaults", () => {
    const login = new LoginNegotiator(
      policy({
        limits: { maxRecvDataSegmentLength: 4096, maxBurstLength: 65536, firstBurstLength: 4096 },
      }),
    );
    const s1 = login.step(
      loginRequest({
        csg: SECURITY,
        nsg: FULL_FEATURE,
        transit: true,
        keys: { InitiatorName: OPEN, TargetName: TARGET, AuthMethod: "None" },
      }),
    );
    expect(s1.response).toMatchObject({ transit: true, nsg: OPERATIONAL });
    expect(s1.done).toBeUndefined();
    // The initiator offers nothing: the target declares and offers what it needs, T=0.
    const s2 = login.step(loginRequest({ csg: OPERATIONAL, nsg: FULL_FEATURE, transit: true }));
    expect(s2.response.transit).toBe(false);
    expect(responseKeys(s2)).toEqual([
      ["MaxRecvDataSegmentLength", "4096"],
      ["MaxBurstLength", "65536"],
      ["FirstBurstLength", "4096"],
    ]);
    const s3 = login.step(
      loginRequest({
        csg: OPERATIONAL,
        nsg: FULL_FEATURE,
        transit: true,
        keys: { MaxBurstLength: "65536", FirstBurstLength: "4096" },
      }),
    );
    expect(responseKeys(s3)).toEqual([]);
    expect(s3.done?.params).toMatchObject({
      targetMaxRecvDataSegmentLength: 4096,
      maxBurstLength: 65536,
      firstBurstLength: 4096,
    });
  });
});

describe("discovery sessions", () => {
  it("needs no TargetName and answers data keys Irrelevant", () => {
    const login = new LoginNegotiator(policy());
    const s = login.step(
      loginRequest({
        csg: OPERATIONAL,
        nsg: FULL_FEATURE,
        transit: true,
        keys: libiscsiOperationalKeys(OPEN, "Discovery"),
      }),
    );
    expect(status(s)).toEqual([0, 0]);
    const keys = responseMap(s);
    expect(keys.TargetPortalGroupTag).toBeUndefined();
    expect(keys.MaxBurstLength).toBe("Irrelevant");
    expect(keys.ImmediateData).toBe("Irrelevant");
    expect(keys.HeaderDigest).toBe("None");
    expect(keys.MaxRecvDataSegmentLength).toBe("262144");
    expect(s.done?.params.sessionType).toBe("Discovery");
  });

  it("still requires CHAP from an agent that has it", () => {
    const login = new LoginNegotiator(policy());
    const s1 = login.step(
      loginRequest({
        csg: SECURITY,
        nsg: OPERATIONAL,
        transit: true,
        keys: libiscsiSecurityKeys(CHAP, "Discovery"),
      }),
    );
    expect(responseKeys(s1)).toEqual([["AuthMethod", "CHAP"]]);
    expect(s1.response.transit).toBe(false);
  });

  it("refuses unknown initiators with 2/2 as in normal sessions", () => {
    const login = new LoginNegotiator(policy());
    const s = login.step(
      loginRequest({
        csg: SECURITY,
        nsg: OPERATIONAL,
        transit: true,
        keys: libiscsiSecurityKeys("iqn.2024-01.evil:scanner", "Discovery"),
      }),
    );
    expect(status(s)).toEqual(st(LoginStatus.AuthorizationFailure));
    expect(s.response.keys).toHaveLength(0);
  });
});

describe("refusals on the first request", () => {
  const first = (keys: Keys, fields: Parameters<typeof loginRequest>[0] = {}) =>
    new LoginNegotiator(policy()).step(
      loginRequest({ csg: SECURITY, nsg: OPERATIONAL, transit: true, keys, ...fields }),
    );

  it("unknown initiator → 2/2 authorization failure", () => {
    const s = first(libiscsiSecurityKeys("iqn.2024-01.unknown:host"));
    expect(status(s)).toEqual(st(LoginStatus.AuthorizationFailure));
    expect(s.failed?.reason).toMatch(/unknown initiator iqn.2024-01.unknown:host/);
  });

  it("wrong target name → 2/3 not found", () => {
    const s = first({
      InitiatorName: OPEN,
      TargetName: "iqn.2024-01.com.example:other",
      AuthMethod: "None",
    });
    expect(status(s)).toEqual(st(LoginStatus.NotFound));
  });

  it("target names compare case-insensitively", () => {
    const s = first({ InitiatorName: OPEN, TargetName: TARGET.toUpperCase(), AuthMethod: "None" });
    expect(status(s)).toEqual([0, 0]);
  });

  it("missing InitiatorName → 2/7", () => {
    expect(status(first({ TargetName: TARGET, AuthMethod: "None" }))).toEqual(
      st(LoginStatus.MissingParameter),
    );
  });

  it("missing TargetName in a normal session → 2/7", () => {
    expect(status(first({ InitiatorName: OPEN, AuthMethod: "None" }))).toEqual(
      st(LoginStatus.MissingParameter),
    );
  });

  it("unsupported version → 2/5", () => {
    const s = first(libiscsiSecurityKeys(OPEN), { versionMin: 1, versionMax: 2 });
    expect(status(s)).toEqual(st(LoginStatus.UnsupportedVersion));
  });

  it("unknown SessionType → 2/9", () => {
    const s = first({ InitiatorName: OPEN, SessionType: "Boot", AuthMethod: "None" });
    expect(status(s)).toEqual(st(LoginStatus.SessionTypeNotSupported));
  });

  it("agent requires CHAP, initiator offers only None → 2/1", () => {
    const s = first({ InitiatorName: CHAP, TargetName: TARGET, AuthMethod: "None" });
    expect(status(s)).toEqual(st(LoginStatus.AuthenticationFailure));
  });

  it("agent has no CHAP, initiator offers only CHAP → 2/1", () => {
    const s = first({ InitiatorName: OPEN, TargetName: TARGET, AuthMethod: "CHAP" });
    expect(status(s)).toEqual(st(LoginStatus.AuthenticationFailure));
  });

  it("agent requires CHAP, initiator leaves the security stage without AuthMethod → 2/1", () => {
    const s = first({ InitiatorName: CHAP, TargetName: TARGET });
    expect(status(s)).toEqual(st(LoginStatus.AuthenticationFailure));
  });

  it("malformed text → 2/0", () => {
    const s = new LoginNegotiator(policy()).step(
      loginRequest({ csg: SECURITY, data: Buffer.from("InitiatorName\0") }),
    );
    expect(status(s)).toEqual(st(LoginStatus.InitiatorError));
  });

  it("an internal failure → 3/0 with the cause kept for the log", () => {
    const boom = new Error("database down");
    const s = new LoginNegotiator(
      policy({
        lookupInitiator: () => {
          throw boom;
        },
      }),
    ).step(loginRequest({ csg: SECURITY, keys: libiscsiSecurityKeys(OPEN) }));
    expect(status(s)).toEqual(st(LoginStatus.TargetError));
    expect(s.failed?.cause).toBe(boom);
  });
});

describe("stage transitions and header checks (RFC 7143 6.3, 11.12)", () => {
  it.each([
    ["T and C both set", { transit: true, cont: true, nsg: OPERATIONAL }],
    ["CSG 2 (reserved)", { csg: 2 }],
    ["CSG 3", { csg: 3 }],
    ["T=1 to the same stage", { csg: OPERATIONAL, nsg: OPERATIONAL, transit: true }],
    ["T=1 to stage 2", { csg: SECURITY, nsg: 2, transit: true }],
    ["T=1 backwards", { csg: OPERATIONAL, nsg: SECURITY, transit: true }],
  ])("%s → 2/0", (_name, fields) => {
    const s = new LoginNegotiator(policy()).step(
      loginRequest({ keys: libiscsiSecurityKeys(OPEN), ...fields }),
    );
    expect(status(s)).toEqual(st(LoginStatus.InitiatorError));
  });

  it("a request in the old stage after the target transited → 2/0", () => {
    const login = new LoginNegotiator(policy());
    login.step(
      loginRequest({
        csg: SECURITY,
        nsg: OPERATIONAL,
        transit: true,
        keys: { InitiatorName: OPEN, TargetName: TARGET, AuthMethod: "None" },
      }),
    );
    const s = login.step(loginRequest({ csg: SECURITY, nsg: OPERATIONAL, transit: true }));
    expect(status(s)).toEqual(st(LoginStatus.InitiatorError));
  });

  it("a changed ISID or CID during login → 2/0", () => {
    for (const change of [{ isid: Buffer.alloc(6, 1) }, { cid: 9 }, { versionMax: 1 }]) {
      const login = new LoginNegotiator(policy());
      login.step(loginRequest({ csg: SECURITY, keys: libiscsiSecurityKeys(OPEN) }));
      const s = login.step(loginRequest({ csg: SECURITY, ...change }));
      expect(status(s)).toEqual(st(LoginStatus.InitiatorError));
    }
  });

  it("a key negotiated twice across requests → 2/0", () => {
    const login = new LoginNegotiator(policy());
    login.step(
      loginRequest({
        csg: OPERATIONAL,
        nsg: FULL_FEATURE,
        keys: { InitiatorName: OPEN, TargetName: TARGET, MaxBurstLength: "65536" },
      }),
    );
    const s = login.step(
      loginRequest({
        csg: OPERATIONAL,
        nsg: FULL_FEATURE,
        transit: true,
        keys: { MaxBurstLength: "65536" },
      }),
    );
    expect(status(s)).toEqual(st(LoginStatus.InitiatorError));
  });

  it("SessionType declared later with another value → 2/0", () => {
    const login = new LoginNegotiator(policy());
    login.step(
      loginRequest({ csg: OPERATIONAL, keys: { InitiatorName: OPEN, TargetName: TARGET } }),
    );
    const s = login.step(loginRequest({ csg: OPERATIONAL, keys: { SessionType: "Discovery" } }));
    expect(status(s)).toEqual(st(LoginStatus.InitiatorError));
  });

  it("operational keys in the security stage → 2/0", () => {
    const s = new LoginNegotiator(policy()).step(
      loginRequest({
        csg: SECURITY,
        keys: { InitiatorName: OPEN, TargetName: TARGET, HeaderDigest: "None" },
      }),
    );
    expect(status(s)).toEqual(st(LoginStatus.InitiatorError));
  });

  it("gives up after MAX_LOGIN_REQUESTS requests", () => {
    const login = new LoginNegotiator(policy());
    login.step(
      loginRequest({ csg: OPERATIONAL, keys: { InitiatorName: OPEN, TargetName: TARGET } }),
    );
    let last: LoginStep | undefined;
    for (let i = 1; i < MAX_LOGIN_REQUESTS + 1 && !last?.failed; i++) {
      last = login.step(loginRequest({ csg: OPERATIONAL }));
    }
    expect(status(last!)).toEqual(st(LoginStatus.InitiatorError));
  });
});

describe("TSIH != 0 (joining a live session)", () => {
  const keys = { InitiatorName: OPEN, TargetName: TARGET, AuthMethod: "None" };

  it("fails with 2/0a session does not exist by default", () => {
    const s = new LoginNegotiator(policy()).step(
      loginRequest({ csg: SECURITY, nsg: FULL_FEATURE, transit: true, tsih: 7, keys }),
    );
    expect(status(s)).toEqual(st(LoginStatus.SessionDoesNotExist));
  });

  it("lets the joinSession hook refuse or accept", () => {
    const refused = new LoginNegotiator(policy({ joinSession: () => "TooManyConnections" })).step(
      loginRequest({ csg: SECURITY, nsg: FULL_FEATURE, transit: true, tsih: 7, keys }),
    );
    expect(status(refused)).toEqual(st(LoginStatus.TooManyConnections));

    const seen: unknown[] = [];
    const accepted = new LoginNegotiator(
      policy({
        joinSession: (request) => {
          seen.push(request);
          return undefined;
        },
      }),
    ).step(
      loginRequest({ csg: SECURITY, nsg: FULL_FEATURE, transit: true, tsih: 7, cid: 2, keys }),
    );
    expect(seen).toEqual([{ initiatorName: OPEN, isid: TEST_ISID, tsih: 7, cid: 2 }]);
    expect(accepted.done).toMatchObject({ tsih: 7, cid: 2 });
  });
});

describe("continued text (C bit, RFC 7143 6.1)", () => {
  const keys = libiscsiSecurityKeys(CHAP);
  const whole = encodeTextKeys(Array.isArray(keys) ? keys : Object.entries(keys));

  it("acknowledges each continued request with an empty response, at every split point", () => {
    const reference = new LoginNegotiator(policy()).step(
      loginRequest({ csg: SECURITY, nsg: OPERATIONAL, transit: true, data: whole }),
    );
    for (let cut = 0; cut <= whole.length; cut++) {
      const login = new LoginNegotiator(policy());
      const ack = login.step(
        loginRequest({ csg: SECURITY, nsg: OPERATIONAL, cont: true, data: whole.subarray(0, cut) }),
      );
      expect(ack.response).toMatchObject({
        transit: false,
        cont: false,
        csg: SECURITY,
        statusClass: 0,
      });
      expect(ack.response.keys).toHaveLength(0);
      const s = login.step(
        loginRequest({ csg: SECURITY, nsg: OPERATIONAL, transit: true, data: whole.subarray(cut) }),
      );
      expect(responseKeys(s)).toEqual(responseKeys(reference));
    }
  });

  it("does not keep a view of the caller's buffer", () => {
    const login = new LoginNegotiator(policy());
    const part = Buffer.from(whole.subarray(0, 10));
    login.step(loginRequest({ csg: SECURITY, cont: true, data: part }));
    part.fill(0x41); // the connection reuses its receive buffer
    const s = login.step(loginRequest({ csg: SECURITY, data: whole.subarray(10) }));
    expect(responseMap(s).AuthMethod).toBe("CHAP");
  });

  it("refuses more than 64 KiB of continued text → 2/0", () => {
    const login = new LoginNegotiator(policy());
    const chunk = Buffer.alloc(8192, 0x41);
    let s: LoginStep | undefined;
    for (let i = 0; i < 9 && !s?.failed; i++) {
      s = login.step(loginRequest({ csg: SECURITY, cont: true, data: chunk }));
    }
    expect(status(s!)).toEqual(st(LoginStatus.InitiatorError));
  });
});

describe("target declarations", () => {
  it("sends TargetAlias in a normal session when configured", () => {
    const s = new LoginNegotiator(policy({ targetAlias: "sanmux pool" })).step(
      loginRequest({ csg: SECURITY, keys: libiscsiSecurityKeys(OPEN) }),
    );
    expect(responseKeys(s)).toEqual([
      ["AuthMethod", "None"],
      ["TargetPortalGroupTag", "1"],
      ["TargetAlias", "sanmux pool"],
    ]);
  });

  it("offers ImmediateData=No when configured so and the initiator did not offer it", () => {
    const login = new LoginNegotiator(
      policy({
        limits: {
          maxRecvDataSegmentLength: 262_144,
          maxBurstLength: 1_048_576,
          firstBurstLength: 262_144,
          immediateData: false,
        },
      }),
    );
    const s1 = login.step(
      loginRequest({
        csg: OPERATIONAL,
        nsg: FULL_FEATURE,
        transit: true,
        keys: { InitiatorName: OPEN, TargetName: TARGET, MaxBurstLength: "262144" },
      }),
    );
    expect(s1.response.transit).toBe(false);
    expect(responseMap(s1).ImmediateData).toBe("No");
    const s2 = login.step(
      loginRequest({
        csg: OPERATIONAL,
        nsg: FULL_FEATURE,
        transit: true,
        keys: { ImmediateData: "No" },
      }),
    );
    expect(s2.done?.params.immediateData).toBe(false);
  });
});
