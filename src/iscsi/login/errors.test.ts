import { describe, expect, it } from "vitest";
import { LoginStatus } from "../constants.js";
import { LOGIN_FAILURES, type LoginFailureCode, loginFailureStatus } from "./errors.js";

describe("login failure catalog", () => {
  it("documents every failure status of RFC 7143 11.13.5 and maps it to class 2 or 3", () => {
    const codes = Object.keys(LoginStatus).filter(
      (k) => !["Success", "TargetMovedTemporarily", "TargetMovedPermanently"].includes(k),
    ) as LoginFailureCode[];
    expect(Object.keys(LOGIN_FAILURES).sort()).toEqual([...codes].sort());
    for (const code of codes) {
      expect(LOGIN_FAILURES[code].length).toBeGreaterThan(10);
      expect([2, 3]).toContain(loginFailureStatus(code).statusClass);
    }
  });

  it("maps the codes the login uses to their wire values", () => {
    expect(loginFailureStatus("AuthenticationFailure")).toEqual({
      statusClass: 2,
      statusDetail: 1,
    });
    expect(loginFailureStatus("AuthorizationFailure")).toEqual({ statusClass: 2, statusDetail: 2 });
    expect(loginFailureStatus("SessionDoesNotExist")).toEqual({
      statusClass: 2,
      statusDetail: 0x0a,
    });
  });
});
