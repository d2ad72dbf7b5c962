/**
 * Test fixtures for the login phase, built with code (no hex dumps): Login Request views and a
 * reader for the keys of a response. Used by the tests of this folder and of the connection.
 */
import { ChapAlgorithm, chapResponse } from "./chap.js";
import type { LoginRequestView, LoginStep } from "./login.js";
import { decodeBinaryValue, encodeHexValue, encodeTextKeys, parseTextKeys } from "./text.js";

export const TEST_ISID = Buffer.from([0x80, 0x00, 0x00, 0x12, 0x34, 0x56]);

export type Keys = ReadonlyArray<readonly [string, string]> | Readonly<Record<string, string>>;

function pairsOf(keys: Keys): Array<readonly [string, string]> {
  return Array.isArray(keys) ? [...keys] : Object.entries(keys);
}

/** A Login Request view: CSG/NSG/T/C from `fields`, text from `keys`. */
export function loginRequest(
  fields: Partial<LoginRequestView> & { keys?: Keys } = {},
): LoginRequestView {
  const { keys, ...rest } = fields;
  return {
    transit: false,
    cont: false,
    csg: 0,
    nsg: 0,
    versionMax: 0,
    versionMin: 0,
    isid: TEST_ISID,
    tsih: 0,
    itt: 0x1000,
    cid: 0,
    cmdSN: 1,
    expStatSN: 0,
    data: keys ? encodeTextKeys(pairsOf(keys)) : Buffer.alloc(0),
    ...rest,
  };
}

/** The keys of a response, in order. */
export function responseKeys(step: LoginStep): Array<[string, string]> {
  return parseTextKeys(step.response.keys);
}

/** The keys of a response as an object (last value wins). */
export function responseMap(step: LoginStep): Record<string, string> {
  return Object.fromEntries(responseKeys(step));
}

/** What an initiator sends back for the CHAP challenge in `challengeStep`. */
export function answerChallenge(
  challengeStep: LoginStep,
  user: string,
  secret: string,
): { CHAP_N: string; CHAP_R: string } {
  const keys = responseMap(challengeStep);
  const algorithm = Number(keys.CHAP_A) as ChapAlgorithm;
  const response = chapResponse(
    algorithm ?? ChapAlgorithm.MD5,
    Number(keys.CHAP_I),
    secret,
    decodeBinaryValue(keys.CHAP_C ?? ""),
  );
  return { CHAP_N: user, CHAP_R: encodeHexValue(response) };
}
