import { describe, expect, it } from "vitest";
import {
  ChapAlgorithm,
  type ChapCredentials,
  ChapExchange,
  chapResponse,
  MIN_CHAP_SECRET_LENGTH,
  SUPPORTED_CHAP_ALGORITHMS,
  selectChapAlgorithm,
} from "./chap.js";
import { LoginError } from "./errors.js";
import { decodeBinaryValue, encodeHexValue } from "./text.js";

const ONE_WAY: ChapCredentials = { user: "backup1", secret: "initiator-secret-1" };
const MUTUAL: ChapCredentials = {
  ...ONE_WAY,
  targetUser: "iqn.2024-01.test:target",
  targetSecret: "target-secret-22",
};

function map(keys: Record<string, string>): Map<string, string> {
  return new Map(Object.entries(keys));
}

/** Run step 1 and return the challenge the target sent. */
function challenge(exchange: ChapExchange, chapA = "5") {
  const keys = Object.fromEntries(exchange.receive(map({ CHAP_A: chapA })));
  return {
    keys,
    algorithm: Number(keys.CHAP_A) as ChapAlgorithm,
    id: Number(keys.CHAP_I),
    challenge: decodeBinaryValue(keys.CHAP_C ?? ""),
  };
}

function respond(c: ReturnType<typeof challenge>, secret: string): string {
  return encodeHexValue(chapResponse(c.algorithm, c.id, secret, c.challenge));
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

describe("chapResponse (RFC 1994 4.1: H(id || secret || challenge))", () => {
  // Vectors computed with Python's hashlib, an independent implementation.
  const ch = Buffer.from(Array.from({ length: 16 }, (_, i) => i + 1));
  it.each([
    [ChapAlgorithm.MD5, "fa56f1fd495b3f124996421bfddb4980"],
    [ChapAlgorithm.SHA1, "8caf221f31e672394795bcc054b0c63e4aacd7e0"],
    [ChapAlgorithm.SHA256, "2c65e7eb8615cc290224002e5900186bfd369856fae9d859302c5bda96974984"],
    [ChapAlgorithm.SHA3_256, "3604458c959715985da323711c54a52d87269586ebdb15cee98a74af031732fa"],
  ])("algorithm %d", (algorithm, hex) => {
    expect(chapResponse(algorithm, 1, "secretsecret", ch).toString("hex")).toBe(hex);
  });

  it("refuses identifiers outside 0..255", () => {
    expect(() => chapResponse(ChapAlgorithm.MD5, 256, "s", ch)).toThrow(RangeError);
  });

  it("exports the configuration minimum for secrets", () => {
    expect(MIN_CHAP_SECRET_LENGTH).toBe(12);
  });
});

describe("selectChapAlgorithm (RFC 7143 12.1.3: first of the initiator's list we support)", () => {
  it.each([
    ["5", 5],
    ["7,5", 7],
    ["5,7", 5],
    ["8,7,6,5", 8],
    ["99,7", 7],
    ["x,5", 5],
    ["0x7", 7],
    ["99", undefined],
    ["", undefined],
  ])("CHAP_A=%s → %s", (offered, chosen) => {
    expect(selectChapAlgorithm(offered)).toBe(chosen);
  });

  it("supports MD5 and SHA-256 on this node", () => {
    expect(SUPPORTED_CHAP_ALGORITHMS.has(ChapAlgorithm.MD5)).toBe(true);
    expect(SUPPORTED_CHAP_ALGORITHMS.has(ChapAlgorithm.SHA256)).toBe(true);
  });
});

describe("ChapExchange, one-way", () => {
  it.each([
    ["MD5", "5", 16],
    ["SHA-256", "7", 32],
    ["SHA-1", "6", 20],
    ["SHA3-256", "8", 32],
  ])("%s: right secret authenticates", (_name, chapA, length) => {
    const ex = new ChapExchange(ONE_WAY, "iqn.test:host");
    const c = challenge(ex, chapA);
    expect(c.keys.CHAP_A).toBe(chapA);
    expect(c.id).toBeGreaterThanOrEqual(0);
    expect(c.id).toBeLessThanOrEqual(255);
    expect(c.keys.CHAP_C).toMatch(/^0x[0-9a-f]+$/);
    expect(c.challenge.length).toBe(length);
    expect(ex.state).toBe("response");
    const out = ex.receive(map({ CHAP_N: "backup1", CHAP_R: respond(c, ONE_WAY.secret) }));
    expect(out).toEqual([]);
    expect(ex.state).toBe("done");
  });

  it("sends a fresh challenge each time", () => {
    const a = challenge(new ChapExchange(ONE_WAY, "i"));
    const b = challenge(new ChapExchange(ONE_WAY, "i"));
    expect(a.challenge.equals(b.challenge)).toBe(false);
  });

  it("accepts the response in upper-case hex and in base64", () => {
    for (const encode of [
      (r: Buffer) => `0X${r.toString("hex").toUpperCase()}`,
      (r: Buffer) => `0b${r.toString("base64")}`,
    ]) {
      const ex = new ChapExchange(ONE_WAY, "i");
      const c = challenge(ex);
      const r = chapResponse(c.algorithm, c.id, ONE_WAY.secret, c.challenge);
      ex.receive(map({ CHAP_N: "backup1", CHAP_R: encode(r) }));
      expect(ex.state).toBe("done");
    }
  });

  it("fails on a wrong secret, with the user in the log line", () => {
    const ex = new ChapExchange(ONE_WAY, "i");
    const c = challenge(ex);
    const err = failure(() =>
      ex.receive(map({ CHAP_N: "backup1", CHAP_R: respond(c, "wrong-secret-123") })),
    );
    expect(err.code).toBe("AuthenticationFailure");
    expect(err.message).toBe("CHAP response mismatch for user backup1");
  });

  it("fails on a wrong user name even with the right secret", () => {
    const ex = new ChapExchange(ONE_WAY, "i");
    const c = challenge(ex);
    const err = failure(() =>
      ex.receive(map({ CHAP_N: "backup2", CHAP_R: respond(c, ONE_WAY.secret) })),
    );
    expect(err.code).toBe("AuthenticationFailure");
  });

  it.each([
    ["malformed hex", { CHAP_N: "backup1", CHAP_R: "0xzz" }],
    ["no prefix", { CHAP_N: "backup1", CHAP_R: "abcdef" }],
    ["truncated response", { CHAP_N: "backup1", CHAP_R: "0x0102" }],
    ["missing CHAP_R", { CHAP_N: "backup1" }],
    ["missing CHAP_N", { CHAP_R: "0x00" }],
    ["CHAP_I without CHAP_C", { CHAP_N: "backup1", CHAP_R: "0x00", CHAP_I: "1" }],
    ["CHAP_A again", { CHAP_A: "5" }],
  ])("fails on %s", (_name, keys) => {
    const ex = new ChapExchange(ONE_WAY, "i");
    challenge(ex);
    expect(failure(() => ex.receive(map(keys))).code).toBe("AuthenticationFailure");
  });

  it.each([
    ["an unsupported algorithm", { CHAP_A: "99" }],
    ["a response before the algorithm", { CHAP_N: "backup1", CHAP_R: "0x00" }],
    ["CHAP_A with more keys", { CHAP_A: "5", CHAP_N: "backup1" }],
  ])("fails on %s in step 1", (_name, keys) => {
    const ex = new ChapExchange(ONE_WAY, "i");
    expect(failure(() => ex.receive(map(keys))).code).toBe("AuthenticationFailure");
  });

  it("fails when one secret serves both directions (RFC 7143 9.2.1)", () => {
    const shared: ChapCredentials = { ...MUTUAL, targetSecret: ONE_WAY.secret };
    const ex = new ChapExchange(shared, "i");
    const c = challenge(ex);
    const err = failure(() =>
      ex.receive(map({ CHAP_N: "backup1", CHAP_R: respond(c, ONE_WAY.secret) })),
    );
    expect(err.code).toBe("AuthenticationFailure");
  });

  it("refuses keys after the exchange is done", () => {
    const ex = new ChapExchange(ONE_WAY, "i");
    const c = challenge(ex);
    ex.receive(map({ CHAP_N: "backup1", CHAP_R: respond(c, ONE_WAY.secret) }));
    expect(failure(() => ex.receive(map({ CHAP_A: "5" }))).code).toBe("AuthenticationFailure");
  });
});

describe("ChapExchange, mutual", () => {
  const initiatorChallenge = Buffer.from("0123456789abcdef0123456789abcdef", "hex");

  it("answers the initiator's challenge with the target credentials", () => {
    const ex = new ChapExchange(MUTUAL, "i");
    const c = challenge(ex, "7");
    const out = Object.fromEntries(
      ex.receive(
        map({
          CHAP_N: "backup1",
          CHAP_R: respond(c, MUTUAL.secret),
          CHAP_I: "42",
          CHAP_C: encodeHexValue(initiatorChallenge),
        }),
      ),
    );
    expect(out.CHAP_N).toBe(MUTUAL.targetUser);
    // The initiator checks the target with the target secret.
    const expected = chapResponse(
      ChapAlgorithm.SHA256,
      42,
      MUTUAL.targetSecret ?? "",
      initiatorChallenge,
    );
    expect(decodeBinaryValue(out.CHAP_R ?? "")).toEqual(expected);
    expect(ex.state).toBe("done");
  });

  it("gives a response that a wrong target secret would not produce", () => {
    const ex = new ChapExchange({ ...MUTUAL, targetSecret: "some-other-secret" }, "i");
    const c = challenge(ex);
    const out = Object.fromEntries(
      ex.receive(
        map({
          CHAP_N: "backup1",
          CHAP_R: respond(c, MUTUAL.secret),
          CHAP_I: "7",
          CHAP_C: encodeHexValue(initiatorChallenge),
        }),
      ),
    );
    const whatTheInitiatorExpects = chapResponse(
      ChapAlgorithm.MD5,
      7,
      MUTUAL.targetSecret ?? "",
      initiatorChallenge,
    );
    expect(decodeBinaryValue(out.CHAP_R ?? "").equals(whatTheInitiatorExpects)).toBe(false);
  });

  it("fails mutual CHAP when no target credentials are configured", () => {
    const ex = new ChapExchange(ONE_WAY, "i");
    const c = challenge(ex);
    const err = failure(() =>
      ex.receive(
        map({
          CHAP_N: "backup1",
          CHAP_R: respond(c, ONE_WAY.secret),
          CHAP_I: "1",
          CHAP_C: encodeHexValue(initiatorChallenge),
        }),
      ),
    );
    expect(err.code).toBe("AuthenticationFailure");
  });

  it("fails on a reflected challenge (the target's own CHAP_C sent back)", () => {
    const ex = new ChapExchange(MUTUAL, "i");
    const c = challenge(ex);
    const err = failure(() =>
      ex.receive(
        map({
          CHAP_N: "backup1",
          CHAP_R: respond(c, MUTUAL.secret),
          CHAP_I: String(c.id),
          CHAP_C: c.keys.CHAP_C ?? "",
        }),
      ),
    );
    expect(err.code).toBe("AuthenticationFailure");
    expect(err.message).toMatch(/reflected/);
  });

  it.each([
    ["CHAP_I out of range", "256", "0x0102"],
    ["CHAP_I not a number", "one", "0x0102"],
    ["malformed CHAP_C", "1", "0xnothex"],
    ["CHAP_C longer than 1024 bytes", "1", `0x${"ab".repeat(1025)}`],
  ])("fails on %s", (_name, id, ch) => {
    const ex = new ChapExchange(MUTUAL, "i");
    const c = challenge(ex);
    const err = failure(() =>
      ex.receive(
        map({ CHAP_N: "backup1", CHAP_R: respond(c, MUTUAL.secret), CHAP_I: id, CHAP_C: ch }),
      ),
    );
    expect(err.code).toBe("AuthenticationFailure");
  });
});
