/**
 * Target-side CHAP (RFC 1994) as carried in iSCSI login keys (RFC 7143 12.1.3):
 *
 *   I->T  CHAP_A=<A1,A2,...>                   algorithms, initiator's order of preference
 *   T->I  CHAP_A=<A> CHAP_I=<I> CHAP_C=<C>      chosen algorithm, identifier, challenge
 *   I->T  CHAP_N=<N> CHAP_R=<R> [CHAP_I=<I'> CHAP_C=<C'>]   response (+ mutual challenge)
 *   T->I  [CHAP_N=<N'> CHAP_R=<R'>]            target's response when mutual CHAP was asked
 *
 * R = H(I || secret || C) (RFC 1994 4.1: identifier octet, then the secret, then the challenge).
 * Binary values are hex ("0x") or base64 ("0b") constants (RFC 7143 6.1).
 *
 * Every failure throws `LoginError("AuthenticationFailure", reason)`: the reason is for the log
 * only; the initiator learns nothing but "authentication failure" (status 2/1).
 */
import { createHash, getHashes, randomBytes, randomInt, timingSafeEqual } from "node:crypto";
import { LoginError } from "./errors.js";
import { decodeBinaryValue, encodeHexValue, parseListValue, parseNumericValue } from "./text.js";

/**
 * Secrets shorter than this (96 bits) are refused at configuration time: short CHAP secrets fall
 * to an off-line dictionary attack on a captured exchange (RFC 7143 9.2.1); the Microsoft
 * initiator enforces the same minimum.
 */
export const MIN_CHAP_SECRET_LENGTH = 12;

/** CHAP_A values: IANA "PPP Authentication Algorithms" (RFC 7143 12.1.3 names 5 = MD5). */
export const ChapAlgorithm = {
  MD5: 5,
  SHA1: 6,
  SHA256: 7,
  SHA3_256: 8,
} as const;
export type ChapAlgorithm = (typeof ChapAlgorithm)[keyof typeof ChapAlgorithm];

const HASHES: ReadonlyArray<{ id: ChapAlgorithm; hash: string; digestLength: number }> = [
  { id: ChapAlgorithm.MD5, hash: "md5", digestLength: 16 },
  { id: ChapAlgorithm.SHA1, hash: "sha1", digestLength: 20 },
  { id: ChapAlgorithm.SHA256, hash: "sha256", digestLength: 32 },
  { id: ChapAlgorithm.SHA3_256, hash: "sha3-256", digestLength: 32 },
];

const available = new Set(getHashes());

/** The algorithms this process can compute (node's OpenSSL may lack some, e.g. MD5 under FIPS). */
export const SUPPORTED_CHAP_ALGORITHMS: ReadonlySet<ChapAlgorithm> = new Set(
  HASHES.filter((h) => available.has(h.hash)).map((h) => h.id),
);

function hashOf(algorithm: ChapAlgorithm): { hash: string; digestLength: number } {
  const h = HASHES.find((x) => x.id === algorithm);
  if (!h || !SUPPORTED_CHAP_ALGORITHMS.has(algorithm)) {
    throw new RangeError(`CHAP algorithm ${algorithm} is not supported`);
  }
  return h;
}

/**
 * RFC 1994 4.1 response: H(identifier octet || secret || challenge). Used by the target to check
 * the initiator, by the target to answer a mutual challenge, and by tests as the initiator.
 */
export function chapResponse(
  algorithm: ChapAlgorithm,
  id: number,
  secret: string | Buffer,
  challenge: Buffer,
): Buffer {
  if (!Number.isInteger(id) || id < 0 || id > 255) throw new RangeError("CHAP_I is 0..255");
  return createHash(hashOf(algorithm).hash)
    .update(Buffer.of(id))
    .update(typeof secret === "string" ? Buffer.from(secret, "utf8") : secret)
    .update(challenge)
    .digest();
}

/**
 * RFC 7143 12.1.3: the target picks the first algorithm of the initiator's CHAP_A list that it
 * supports. Unknown or malformed entries are skipped.
 */
export function selectChapAlgorithm(offered: string): ChapAlgorithm | undefined {
  for (const item of parseListValue(offered)) {
    const n = parseNumericValue(item);
    if (n !== undefined && SUPPORTED_CHAP_ALGORITHMS.has(n as ChapAlgorithm)) {
      return n as ChapAlgorithm;
    }
  }
  return undefined;
}

/** The credentials an agent must prove, and those the target proves back (mutual CHAP). */
export interface ChapCredentials {
  readonly user: string;
  readonly secret: string;
  readonly targetUser?: string;
  readonly targetSecret?: string;
}

/** RFC 7143 12.1.3: CHAP_C (and so every binary value here) is at most 1024 bytes. */
const MAX_CHALLENGE_LENGTH = 1024;

function fail(reason: string): never {
  throw new LoginError("AuthenticationFailure", reason);
}

function decodeBinary(key: string, text: string): Buffer {
  try {
    return decodeBinaryValue(text);
  } catch (err) {
    return fail(`malformed ${key}: ${(err as Error).message}`);
  }
}

/**
 * One CHAP exchange on one connection, target side. Feed it the CHAP_* keys of each login
 * request (as a map: the negotiation layer has already refused duplicates); it returns the keys
 * to answer with, or throws. `state` tells where the exchange stands; "done" means the initiator
 * is authenticated (and the target too, if asked).
 */
export class ChapExchange {
  private phase: "algorithm" | "response" | "done" = "algorithm";
  private algorithm: ChapAlgorithm = ChapAlgorithm.MD5;
  private id = 0;
  private challenge: Buffer = Buffer.alloc(0);

  constructor(
    private readonly credentials: ChapCredentials,
    /** For the log: whose exchange this is. */
    private readonly initiatorName: string,
  ) {}

  get state(): "algorithm" | "response" | "done" {
    return this.phase;
  }

  receive(keys: ReadonlyMap<string, string>): Array<[string, string]> {
    switch (this.phase) {
      case "algorithm":
        return this.onAlgorithm(keys);
      case "response":
        return this.onResponse(keys);
      case "done":
        return fail(`CHAP keys after the CHAP exchange completed (${[...keys.keys()].join(",")})`);
    }
  }

  /** Step 1: CHAP_A in, CHAP_A/CHAP_I/CHAP_C out. */
  private onAlgorithm(keys: ReadonlyMap<string, string>): Array<[string, string]> {
    const offered = keys.get("CHAP_A");
    if (offered === undefined || keys.size !== 1) {
      return fail(`expected CHAP_A alone, got ${[...keys.keys()].join(",")}`);
    }
    const algorithm = selectChapAlgorithm(offered);
    if (algorithm === undefined) {
      return fail(`no supported CHAP algorithm in CHAP_A=${offered}`);
    }
    this.algorithm = algorithm;
    this.id = randomInt(256);
    // At least as long as the digest, and never shorter than 16 bytes.
    this.challenge = randomBytes(Math.max(16, hashOf(algorithm).digestLength));
    this.phase = "response";
    return [
      ["CHAP_A", String(algorithm)],
      ["CHAP_I", String(this.id)],
      ["CHAP_C", encodeHexValue(this.challenge)],
    ];
  }

  /** Step 2: CHAP_N/CHAP_R (+ CHAP_I/CHAP_C for mutual) in, CHAP_N/CHAP_R out if mutual. */
  private onResponse(keys: ReadonlyMap<string, string>): Array<[string, string]> {
    const { credentials: creds, initiatorName } = this;
    for (const key of keys.keys()) {
      if (!["CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C"].includes(key)) {
        return fail(`unexpected ${key} in the CHAP response of ${initiatorName}`);
      }
    }
    const name = keys.get("CHAP_N");
    const responseText = keys.get("CHAP_R");
    if (name === undefined || responseText === undefined) {
      return fail(`CHAP response of ${initiatorName} lacks CHAP_N or CHAP_R`);
    }
    const mutualId = keys.get("CHAP_I");
    const mutualChallengeText = keys.get("CHAP_C");
    if ((mutualId === undefined) !== (mutualChallengeText === undefined)) {
      return fail(`mutual CHAP of ${initiatorName} needs both CHAP_I and CHAP_C`);
    }

    const response = decodeBinary("CHAP_R", responseText);
    if (name !== creds.user) {
      return fail(
        `CHAP user ${JSON.stringify(name)} is not the one configured for ${initiatorName}`,
      );
    }
    const expected = chapResponse(this.algorithm, this.id, creds.secret, this.challenge);
    if (response.length !== expected.length || !timingSafeEqual(response, expected)) {
      return fail(`CHAP response mismatch for user ${name}`);
    }
    // RFC 7143 9.2.1: a response equal to the one the receiver itself would compute for the same
    // challenge means one secret serves both directions; treat it as a failure.
    if (creds.targetSecret !== undefined) {
      const ours = chapResponse(this.algorithm, this.id, creds.targetSecret, this.challenge);
      if (timingSafeEqual(response, ours)) {
        return fail(`initiator ${initiatorName} and target share one CHAP secret`);
      }
    }

    if (mutualId === undefined || mutualChallengeText === undefined) {
      this.phase = "done";
      return [];
    }
    // Mutual CHAP: the initiator authenticates the target (RFC 7143 12.1.3).
    if (creds.targetUser === undefined || creds.targetSecret === undefined) {
      return fail(`${initiatorName} asked for mutual CHAP but no target credentials are set`);
    }
    const id = parseNumericValue(mutualId);
    if (id === undefined || id > 255) return fail(`malformed CHAP_I=${mutualId}`);
    const challenge = decodeBinary("CHAP_C", mutualChallengeText);
    if (challenge.length === 0 || challenge.length > MAX_CHALLENGE_LENGTH) {
      return fail(`CHAP_C of ${initiatorName} has ${challenge.length} bytes`);
    }
    // RFC 7143 12.1.3: an initiator must not reuse the target's challenge for the other
    // direction (reflection attack); the target checks and fails the login.
    if (challenge.equals(this.challenge)) {
      return fail(`${initiatorName} reflected the target's CHAP challenge`);
    }
    this.phase = "done";
    return [
      ["CHAP_N", creds.targetUser],
      ["CHAP_R", encodeHexValue(chapResponse(this.algorithm, id, creds.targetSecret, challenge))],
    ];
  }
}
