import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  decodeBinaryValue,
  encodeHexValue,
  encodeTextKeys,
  MAX_VALUE_LENGTH,
  parseNumericValue,
  parseTextKeys,
  TextFormatError,
} from "./text.js";

const text = (s: string): Buffer => Buffer.from(s, "utf8");

describe("parseTextKeys (RFC 7143 6.1)", () => {
  it("parses pairs in order, keeping duplicates", () => {
    expect(parseTextKeys(text("InitiatorName=iqn.a\0X-foo=1\0X-foo=2\0"))).toEqual([
      ["InitiatorName", "iqn.a"],
      ["X-foo", "1"],
      ["X-foo", "2"],
    ]);
  });

  it("returns nothing for empty data", () => {
    expect(parseTextKeys(Buffer.alloc(0))).toEqual([]);
  });

  it("splits at the first '=' and allows empty values and '=' in values", () => {
    expect(parseTextKeys(text("SendTargets=\0X-a=b=c\0"))).toEqual([
      ["SendTargets", ""],
      ["X-a", "b=c"],
    ]);
  });

  it("accepts X# public extension keys and UTF-8 values", () => {
    expect(parseTextKeys(text("X#NodeArchitecture=Linux/6.1\0InitiatorAlias=hôte\0"))).toEqual([
      ["X#NodeArchitecture", "Linux/6.1"],
      ["InitiatorAlias", "hôte"],
    ]);
  });

  it("tolerates NULs after the last pair", () => {
    expect(parseTextKeys(text("A=1\0\0\0\0"))).toEqual([["A", "1"]]);
    expect(parseTextKeys(text("\0\0"))).toEqual([]);
  });

  it.each([
    ["no terminating NUL", "A=1"],
    ["no terminating NUL after a pair", "A=1\0B=2"],
    ["item without '='", "A\0"],
    ["empty item between pairs", "A=1\0\0B=2\0"],
    ["leading NUL", "\0A=1\0"],
    ["empty key", "=1\0"],
    ["key starting with a digit", "1abc=1\0"],
    ["key starting with '#'", "#abc=1\0"],
    ["key with a space", "Max Burst=1\0"],
    ["key longer than 63 bytes", `K${"x".repeat(63)}=1\0`],
  ])("rejects %s", (_name, data) => {
    expect(() => parseTextKeys(text(data))).toThrow(TextFormatError);
  });

  it("accepts a 63-byte key and a value of MAX_VALUE_LENGTH bytes, not one more", () => {
    const key = `K${"x".repeat(62)}`;
    expect(parseTextKeys(text(`${key}=${"v".repeat(MAX_VALUE_LENGTH)}\0`))[0]?.[0]).toBe(key);
    expect(() => parseTextKeys(text(`A=${"v".repeat(MAX_VALUE_LENGTH + 1)}\0`))).toThrow(
      TextFormatError,
    );
  });

  it("rejects values that are not UTF-8", () => {
    const data = Buffer.concat([text("A="), Buffer.from([0xff, 0xfe]), Buffer.alloc(1)]);
    expect(() => parseTextKeys(data)).toThrow(TextFormatError);
  });

  it("parses text split at every byte once the caller concatenates the pieces", () => {
    const whole = encodeTextKeys([
      ["InitiatorName", "iqn.2024-01.test:host"],
      ["AuthMethod", "CHAP,None"],
    ]);
    for (let cut = 0; cut <= whole.length; cut++) {
      const pieces = [whole.subarray(0, cut), whole.subarray(cut)];
      expect(parseTextKeys(Buffer.concat(pieces))).toEqual(parseTextKeys(whole));
    }
  });

  it("only ever throws TextFormatError on arbitrary bytes (property)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        try {
          parseTextKeys(Buffer.from(bytes));
        } catch (err) {
          if (!(err instanceof TextFormatError)) throw err;
        }
      }),
    );
  });
});

describe("encodeTextKeys", () => {
  it("terminates every pair with one NUL", () => {
    expect(
      encodeTextKeys([
        ["A", "1"],
        ["B", ""],
      ]).toString("latin1"),
    ).toBe("A=1\0B=\0");
    expect(encodeTextKeys([])).toHaveLength(0);
  });

  it("refuses what could not be parsed back", () => {
    expect(() => encodeTextKeys([["A", "x\0y"]])).toThrow(TextFormatError);
    expect(() => encodeTextKeys([["1a", "1"]])).toThrow(TextFormatError);
    expect(() => encodeTextKeys([["A=B", "1"]])).toThrow(TextFormatError);
  });

  it("round-trips any valid pairs (property)", () => {
    const key = fc.stringMatching(/^[A-Z][A-Za-z0-9.\-+@_]{0,62}$/);
    const value = fc.string({ maxLength: 100 }).filter((s) => !s.includes("\0"));
    fc.assert(
      fc.property(fc.array(fc.tuple(key, value), { maxLength: 10 }), (pairs) => {
        expect(parseTextKeys(encodeTextKeys(pairs))).toEqual(pairs);
      }),
    );
  });
});

describe("value encodings (RFC 7143 6.1)", () => {
  it.each([
    ["0", 0],
    ["8192", 8192],
    ["16777215", 16_777_215],
    ["0x10", 16],
    ["0XfF", 255],
  ])("numeric %s = %d", (input, n) => {
    expect(parseNumericValue(input)).toBe(n);
  });

  it.each(["", "-1", "1.5", "abc", "0x", "0b1", " 1", "1 ", "12345678901234567890"])(
    "numeric %j is invalid",
    (input) => {
      expect(parseNumericValue(input)).toBeUndefined();
    },
  );

  it("decodes hex in either case, with an implied leading zero for odd lengths", () => {
    expect(decodeBinaryValue("0xa1B2")).toEqual(Buffer.from([0xa1, 0xb2]));
    expect(decodeBinaryValue("0XA1b2")).toEqual(Buffer.from([0xa1, 0xb2]));
    expect(decodeBinaryValue("0xabc")).toEqual(Buffer.from([0x0a, 0xbc]));
  });

  it("decodes base64 with the 0b prefix", () => {
    expect(decodeBinaryValue("0bAQID")).toEqual(Buffer.from([1, 2, 3]));
    expect(decodeBinaryValue("0BAQI=")).toEqual(Buffer.from([1, 2]));
  });

  it.each(["", "abcd", "0x", "0xgg", "0x12 34", "0b", "0bAQI", "0bA=QI", "0b****"])(
    "binary %j is malformed",
    (input) => {
      expect(() => decodeBinaryValue(input)).toThrow(TextFormatError);
    },
  );

  it("encodes hex with the 0x prefix", () => {
    expect(encodeHexValue(Buffer.from([0, 0xff]))).toBe("0x00ff");
  });
});
