import { createSecretKey, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { NONCE_BYTES, open, randomNonce, seal, sealInto, TAG_BYTES } from "./aead.js";
import { AuthenticationError } from "./errors.js";

const key = createSecretKey(randomBytes(32));
const otherKey = createSecretKey(randomBytes(32));

describe("seal / open (AES-256-GCM)", () => {
  it("matches the GCM specification's test case 16 (AES-256, 96-bit IV, AAD)", () => {
    const k = createSecretKey(
      Buffer.from("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", "hex"),
    );
    const iv = Buffer.from("cafebabefacedbaddecaf888", "hex");
    const p = Buffer.from(
      "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
      "hex",
    );
    const aad = Buffer.from("feedfacedeadbeeffeedfacedeadbeefabaddad2", "hex");
    const sealed = seal(k, iv, p, aad);
    expect(sealed.toString("hex")).toBe(
      "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" +
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662" +
        "76fc6ece0f4e1768cddf8853bb2d551b",
    );
    expect(open(k, iv, sealed, aad).equals(p)).toBe(true);
  });

  it("round-trips any length, the tag appended", () => {
    for (const n of [0, 1, 15, 16, 17, 4096, 65536]) {
      const p = randomBytes(n);
      const nonce = randomNonce();
      const aad = randomBytes(64);
      const sealed = seal(key, nonce, p, aad);
      expect(sealed.length).toBe(n + TAG_BYTES);
      expect(open(key, nonce, sealed, aad).equals(p)).toBe(true);
    }
  });

  it("detects every flipped byte of ciphertext and tag", () => {
    const p = randomBytes(100);
    const nonce = randomNonce();
    const aad = Buffer.from("aad");
    const sealed = seal(key, nonce, p, aad);
    for (let i = 0; i < sealed.length; i++) {
      const bad = Buffer.from(sealed);
      bad[i]! ^= 0x01;
      expect(() => open(key, nonce, bad, aad)).toThrow(AuthenticationError);
    }
  });

  it("refuses another key, nonce or aad, and a truncated input", () => {
    const p = randomBytes(64);
    const nonce = randomNonce();
    const aad = Buffer.from("binding");
    const sealed = seal(key, nonce, p, aad);
    expect(() => open(otherKey, nonce, sealed, aad)).toThrow(AuthenticationError);
    expect(() => open(key, randomNonce(), sealed, aad)).toThrow(AuthenticationError);
    expect(() => open(key, nonce, sealed, Buffer.from("bindinG"))).toThrow(AuthenticationError);
    expect(() => open(key, nonce, sealed, Buffer.alloc(0))).toThrow(AuthenticationError);
    expect(() => open(key, nonce, sealed.subarray(0, sealed.length - 1), aad)).toThrow(
      AuthenticationError,
    );
    expect(() => open(key, nonce, sealed.subarray(0, 10), aad)).toThrow(AuthenticationError);
  });

  it("sealInto writes exactly what seal returns, where it is told", () => {
    const p = randomBytes(300);
    const nonce = randomNonce();
    const aad = randomBytes(64);
    const out = Buffer.alloc(10 + p.length + TAG_BYTES + 5, 0xee);
    expect(sealInto(out, 10, key, nonce, p, aad)).toBe(p.length + TAG_BYTES);
    expect(out.subarray(10, 10 + p.length + TAG_BYTES).equals(seal(key, nonce, p, aad))).toBe(true);
    expect(out.subarray(0, 10).every((b) => b === 0xee)).toBe(true);
    expect(out.subarray(-5).every((b) => b === 0xee)).toBe(true);
    expect(() => sealInto(out, 16, key, nonce, p, aad)).toThrow(RangeError);
  });

  it("checks key size and nonce length", () => {
    const short = createSecretKey(randomBytes(16));
    expect(() => seal(short, randomNonce(), Buffer.alloc(1), Buffer.alloc(0))).toThrow(TypeError);
    expect(() => seal(key, randomBytes(16), Buffer.alloc(1), Buffer.alloc(0))).toThrow(TypeError);
    expect(() => open(key, randomBytes(8), Buffer.alloc(32), Buffer.alloc(0))).toThrow(TypeError);
  });
});

describe("randomNonce", () => {
  it("gives distinct 96-bit nonces that never change after being handed out", () => {
    const first = randomNonce();
    const copy = Buffer.from(first);
    const seen = new Set<string>();
    for (let i = 0; i < 5000; i++) {
      const n = randomNonce();
      expect(n.length).toBe(NONCE_BYTES);
      seen.add(n.toString("hex"));
    }
    expect(seen.size).toBe(5000);
    expect(first.equals(copy)).toBe(true); // the pool was refilled several times meanwhile
  });
});
