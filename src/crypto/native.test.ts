/**
 * The native crypto accelerator (native.ts, native/sanmux_crypto.c) against node:crypto: same
 * bytes, same verdicts, strict argument checks, and per-thread operation in worker_threads.
 *
 * The file first builds the addon the way `npm run build` does (vitest runs the sources and may
 * run without a build). Where gcc is on PATH, or in CI, the addon must then be in use: a missing
 * or broken addon fails this file instead of silently measuring node:crypto.
 */
import { spawnSync } from "node:child_process";
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createSecretKey,
  randomBytes,
} from "node:crypto";
import { accessSync, constants, statSync } from "node:fs";
import { delimiter, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { crc32c } from "@node-rs/crc32";
import { describe, expect, it, vi } from "vitest";
import * as aead from "./aead.js";
import { AuthenticationError } from "./errors.js";
import * as kdf from "./kdf.js";
import {
  cryptoImplementation,
  cryptoImplementationInfo,
  NATIVE_ADDON_URL,
  type NativeCrypto,
  nativeCrypto,
} from "./native.js";

const ROOT = new URL("../../", import.meta.url);
const ADDON_PATH = fileURLToPath(NATIVE_ADDON_URL);

// Build (or find up to date) before anything loads the addon: loading is lazy, at first use.
const build = spawnSync(
  process.execPath,
  [fileURLToPath(new URL("scripts/build-native.mjs", ROOT))],
  { encoding: "utf8", timeout: 120_000 },
);
const buildLine = `${build.stdout ?? ""}${build.stderr ?? ""}`.trim();

function onPath(name: string): boolean {
  return (process.env.PATH ?? "").split(delimiter).some((dir) => {
    if (!dir) return false;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return statSync(join(dir, name)).isFile();
    } catch {
      return false;
    }
  });
}

const native: NativeCrypto | undefined = nativeCrypto();
// Required where it can be built: in CI, or with gcc on PATH, unless disabled on purpose.
const disabled = process.env.SANMUX_NATIVE_CRYPTO === "0";
const nativeRequired = !disabled && (Boolean(process.env.CI) || onPath("gcc"));
const notRequiredWhy = disabled ? "SANMUX_NATIVE_CRYPTO=0 is set" : "no gcc on PATH and CI unset";

// The same modules with the addon disabled: the node:crypto path, in this very process.
vi.stubEnv("SANMUX_NATIVE_CRYPTO", "0");
vi.resetModules();
const nodeLoader = await import("./native.js");
const nodeAead = await import("./aead.js");
const nodeKdf = await import("./kdf.js");
const nodeErrors = await import("./errors.js"); // that graph's own AuthenticationError class
const nodeInfo = nodeLoader.cryptoImplementationInfo(); // decided now, while the variable is set
vi.unstubAllEnvs();

// Reference implementations straight on node:crypto, independent of aead.ts / kdf.ts.
function refSeal(key: Buffer, nonce: Buffer, pt: Buffer, aad: Buffer): Buffer {
  const c = createCipheriv("aes-256-gcm", key, nonce, { authTagLength: 16 });
  c.setAAD(aad);
  return Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]);
}
function refOpen(key: Buffer, nonce: Buffer, sealed: Buffer, aad: Buffer): Buffer | undefined {
  const d = createDecipheriv("aes-256-gcm", key, nonce, { authTagLength: 16 });
  d.setAAD(aad);
  d.setAuthTag(sealed.subarray(sealed.length - 16));
  const body = d.update(sealed.subarray(0, sealed.length - 16));
  try {
    return Buffer.concat([body, d.final()]);
  } catch {
    return undefined;
  }
}
const refHmac = (key: Buffer, data: Buffer) => createHmac("sha256", key).update(data).digest();
const hex = (s: string) => Buffer.from(s, "hex");

const SIZES = [0, 1, 15, 16, 17, 31, 33, 255, 1000, 4095, 4096, 4097, 8191, 65536, 65537];
const randomSizes = Array.from({ length: 20 }, () => 1 + 2 * Math.floor(Math.random() * 40_000));

describe("which implementation", () => {
  it.skipIf(!nativeRequired)(
    `uses the native accelerator${nativeRequired ? "" : ` (skipped: ${notRequiredWhy}; ${cryptoImplementationInfo().detail})`}`,
    () => {
      const info = cryptoImplementationInfo();
      expect(
        info.implementation,
        `addon not in use: ${info.detail}; build said: ${buildLine}`,
      ).toBe("native");
      expect(cryptoImplementation()).toBe("native");
      expect(native).toBeDefined();
      // the addon runs on node's own OpenSSL
      expect(native!.opensslRuntime).toContain(process.versions.openssl.split("+")[0]!);
    },
  );

  it("SANMUX_NATIVE_CRYPTO=0 forces node:crypto and says why", () => {
    expect(nodeInfo.implementation).toBe("node:crypto");
    expect(nodeInfo.detail).toMatch(/SANMUX_NATIVE_CRYPTO=0/);
    expect(nodeLoader.nativeCrypto()).toBeUndefined();
  });

  it("finds build/ from src/crypto/native.ts and from dist/crypto/native.js alike", () => {
    const fromDist = new URL(
      "../../build/sanmux_crypto.node",
      pathToFileURL(fileURLToPath(new URL("dist/crypto/native.js", ROOT))),
    );
    const expected = fileURLToPath(new URL("build/sanmux_crypto.node", ROOT));
    expect(ADDON_PATH).toBe(expected);
    expect(fileURLToPath(fromDist)).toBe(expected);
  });
});

describe.skipIf(native === undefined)("native AES-256-GCM and HMAC-SHA256", () => {
  const n = native!;

  it("matches published AES-256-GCM vectors (GCM spec test cases 13, 14, 15, 16)", () => {
    const k16 = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
    const iv16 = hex("cafebabefacedbaddecaf888");
    const p16 = hex(
      "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
    );
    const cases = [
      // 13: zero key, zero IV, no plaintext, no AAD: only the tag
      [Buffer.alloc(32), Buffer.alloc(12), Buffer.alloc(0), Buffer.alloc(0)],
      // 14: one zero block
      [Buffer.alloc(32), Buffer.alloc(12), Buffer.alloc(16), Buffer.alloc(0)],
      // 15: four blocks, no AAD
      [k16, iv16, p16, Buffer.alloc(0)],
      // 16: 60 bytes (a partial block) with 20 bytes of AAD
      [k16, iv16, p16.subarray(0, 60), hex("feedfacedeadbeeffeedfacedeadbeefabaddad2")],
    ] as const;
    const expected = [
      "530f8afbc74536b9a963b4f1c4cb738b",
      "cea7403d4d606b6e074ec5d3baf39d18" + "d0d1c8a799996bf0265b98b5d48ab919",
      "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" +
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad" +
        "b094dac5d93471bdec1a502270e3cc6c",
      "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" +
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662" +
        "76fc6ece0f4e1768cddf8853bb2d551b",
    ];
    cases.forEach(([k, iv, p, a], i) => {
      const out = Buffer.alloc(p.length + 16);
      expect(n.gcmSealInto(k, iv, a, p, out, 0)).toBe(out.length);
      expect(out.toString("hex")).toBe(expected[i]);
      expect(refSeal(k, iv, p, a).toString("hex")).toBe(expected[i]);
      const back = Buffer.alloc(p.length);
      expect(n.gcmOpenInto(k, iv, a, out, back, 0)).toBe(true);
      expect(back.equals(p)).toBe(true);
    });
  });

  it("matches published HMAC-SHA256 vectors (RFC 4231 test cases 1, 2, 6)", () => {
    const mac = (key: Buffer, data: string) => {
      const out = Buffer.alloc(32);
      expect(n.hmacSha256Into(key, Buffer.from(data), out, 0)).toBe(32);
      return out.toString("hex");
    };
    expect(mac(Buffer.alloc(20, 0x0b), "Hi There")).toBe(
      "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    );
    expect(mac(Buffer.from("Jefe"), "what do ya want for nothing?")).toBe(
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    );
    expect(
      mac(Buffer.alloc(131, 0xaa), "Test Using Larger Than Block-Size Key - Hash Key First"),
    ).toBe("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  });

  it("seals byte for byte like node:crypto, and each side opens the other's records", () => {
    const key = randomBytes(32);
    const ko = createSecretKey(key);
    for (const size of [...SIZES, ...randomSizes]) {
      for (const aadLen of [0, 13, 48]) {
        const p = randomBytes(size);
        const a = randomBytes(aadLen);
        const nonce = randomBytes(12);
        const ref = refSeal(key, nonce, p, a);
        const at = size % 7;
        const out = Buffer.alloc(at + ref.length + 3, 0xee);
        expect(n.gcmSealInto(key, nonce, a, p, out, at)).toBe(ref.length);
        expect(out.subarray(at, at + ref.length).equals(ref)).toBe(true);
        expect(out.subarray(0, at).every((b) => b === 0xee)).toBe(true);
        expect(out.subarray(at + ref.length).every((b) => b === 0xee)).toBe(true);

        // through the public API, native path and node:crypto path
        expect(aead.seal(ko, nonce, p, a).equals(ref)).toBe(true);
        expect(nodeAead.seal(ko, nonce, p, a).equals(ref)).toBe(true);
        const into = Buffer.alloc(ref.length + 5);
        expect(aead.sealInto(into, 5, ko, nonce, p, a)).toBe(ref.length);
        expect(into.subarray(5).equals(ref)).toBe(true);

        const back = Buffer.alloc(size);
        expect(n.gcmOpenInto(key, nonce, a, ref, back, 0)).toBe(true);
        expect(back.equals(p)).toBe(true);
        expect(refOpen(key, nonce, out.subarray(at, at + ref.length), a)?.equals(p)).toBe(true);
        expect(aead.open(ko, nonce, ref, a).equals(p)).toBe(true);
        expect(nodeAead.open(ko, nonce, ref, a).equals(p)).toBe(true);
      }
    }
  });

  it("stays right when keys alternate (the same-key shortcut must not leak across keys)", () => {
    const keys = [randomBytes(32), randomBytes(32), randomBytes(32)];
    const order = [0, 0, 1, 0, 2, 2, 1, 1, 0];
    const p = randomBytes(4096);
    const a = randomBytes(32);
    for (const i of order) {
      const key = keys[i]!;
      const nonce = randomBytes(12);
      const ref = refSeal(key, nonce, p, a);
      const out = Buffer.alloc(ref.length);
      n.gcmSealInto(key, nonce, a, p, out, 0);
      expect(out.equals(ref)).toBe(true);
      const back = Buffer.alloc(p.length);
      expect(n.gcmOpenInto(key, nonce, a, ref, back, 0)).toBe(true);
      expect(back.equals(p)).toBe(true);
      // and a record under another key is refused right after this key was cached
      const other = keys[(i + 1) % keys.length]!;
      expect(n.gcmOpenInto(other, nonce, a, ref, back, 0)).toBe(false);
      const mac = Buffer.alloc(32);
      n.hmacSha256Into(key, p, mac, 0);
      expect(mac.equals(refHmac(key, p))).toBe(true);
    }
  });

  it("fingerprints byte for byte like node:crypto (any size, any key length, keys alternating)", () => {
    const key = randomBytes(32);
    const ko = createSecretKey(key);
    for (const size of [...SIZES, ...randomSizes]) {
      const g = randomBytes(size);
      const ref = refHmac(key, g);
      expect(kdf.chunkFingerprint(ko, g).equals(ref)).toBe(true);
      expect(nodeKdf.chunkFingerprint(ko, g).equals(ref)).toBe(true);
      const out = Buffer.alloc(40, 0xee);
      expect(n.hmacSha256Into(key, g, out, 3)).toBe(32);
      expect(out.subarray(3, 35).equals(ref)).toBe(true);
      expect(out[2]).toBe(0xee);
      expect(out[35]).toBe(0xee);
    }
    const g = randomBytes(4096);
    for (const len of [1, 16, 31, 32, 33, 63, 64, 65, 100, 200, 32, 64, 65, 1]) {
      const k = randomBytes(len);
      const out = Buffer.alloc(32);
      n.hmacSha256Into(k, g, out, 0);
      expect(out.equals(refHmac(k, g))).toBe(true);
      n.hmacSha256Into(k, g, out, 0); // again: the cached-key path when it applies
      expect(out.equals(refHmac(k, g))).toBe(true);
    }
    // a key equal to the cached one but for its last byte
    const k1 = randomBytes(32);
    const k2 = Buffer.from(k1);
    k2[31]! ^= 1;
    const out = Buffer.alloc(32);
    n.hmacSha256Into(k1, g, out, 0);
    n.hmacSha256Into(k2, g, out, 0);
    expect(out.equals(refHmac(k2, g))).toBe(true);
  });

  it("fingerprints whole grains in one call like chunkFingerprint of each, zero grains flagged", () => {
    const key = randomBytes(32);
    const ko = createSecretKey(key);
    for (const grainBytes of [1, 7, 4096]) {
      const count = 9;
      const data = randomBytes(grainBytes * count);
      // No random grain is all zeros by chance (one byte in 256 would be, at 1 byte a grain).
      for (let i = 0; i < count; i++) data[i * grainBytes]! |= 1;
      // Grains 2 and 5 all zeros; grain 7 zeros but for its last byte (not a zero grain).
      data.fill(0, 2 * grainBytes, 3 * grainBytes);
      data.fill(0, 5 * grainBytes, 6 * grainBytes);
      data.fill(0, 7 * grainBytes, 8 * grainBytes - 1);
      data[8 * grainBytes - 1] = 1;
      const expectZero = Buffer.from([0, 0, 1, 0, 0, 1, 0, 0, 0]);
      if (grainBytes === 1) expectZero[7] = 0; // its only byte is the 1
      const runs = [
        (f: Uint8Array, z: Uint8Array) => kdf.chunkFingerprints(ko, data, grainBytes, f, z),
        (f: Uint8Array, z: Uint8Array) => nodeKdf.chunkFingerprints(ko, data, grainBytes, f, z),
      ];
      for (const run of runs) {
        const fps = Buffer.alloc(32 * count, 0xee);
        const zero = Buffer.alloc(count, 7);
        run(fps, zero);
        expect(zero.equals(expectZero)).toBe(true);
        for (let i = 0; i < count; i++) {
          const mac = fps.subarray(32 * i, 32 * i + 32);
          const grain = data.subarray(i * grainBytes, (i + 1) * grainBytes);
          if (zero[i] === 1) expect(mac.equals(Buffer.alloc(32, 0xee))).toBe(true);
          else expect(mac.equals(refHmac(key, grain))).toBe(true);
        }
      }
    }
    const grains =
      (...args: unknown[]) =>
      () =>
        (n as unknown as Record<string, (...a: unknown[]) => unknown>).hmacSha256Grains!(...args);
    const d = randomBytes(64);
    expect(grains(key, d, 16, Buffer.alloc(128), Buffer.alloc(4))).not.toThrow();
    expect(grains(Buffer.alloc(0), d, 16, Buffer.alloc(128), Buffer.alloc(4))).toThrow(RangeError);
    expect(grains(key, d, 0, Buffer.alloc(128), Buffer.alloc(4))).toThrow(RangeError);
    expect(grains(key, d, 24, Buffer.alloc(128), Buffer.alloc(4))).toThrow(RangeError);
    expect(grains(key, d, 16, Buffer.alloc(127), Buffer.alloc(4))).toThrow(RangeError);
    expect(grains(key, d, 16, Buffer.alloc(128), Buffer.alloc(3))).toThrow(RangeError);
    expect(grains(key, d, 16, Buffer.alloc(128))).toThrow(TypeError);
    expect(() => kdf.chunkFingerprints(ko, d, 24, Buffer.alloc(96), Buffer.alloc(3))).toThrow(
      RangeError,
    );
  });

  it("computes CRC32C as @node-rs/crc32 does, whole and continued, any length and alignment", () => {
    const data = randomBytes(70_000);
    for (const [from, to] of [
      [0, 0],
      [0, 1],
      [1, 8],
      [3, 4099],
      [5, 69_999],
      [0, 70_000],
    ] as const) {
      const part = data.subarray(from, to);
      expect(n.crc32c(part, 0)).toBe(crc32c(part));
      const mid = from + Math.floor((to - from) / 3);
      const head = data.subarray(from, mid);
      const tail = data.subarray(mid, to);
      expect(n.crc32c(tail, n.crc32c(head, 0))).toBe(crc32c(part));
      expect(n.crc32c(tail, 0x1234_5678)).toBe(crc32c(tail, 0x1234_5678));
    }
  });

  it("refuses any flipped bit of ciphertext, tag, aad, nonce or key, and zeroes its output", () => {
    const key = randomBytes(32);
    const ko = createSecretKey(key);
    const p = randomBytes(100);
    const a = randomBytes(20);
    const nonce = randomBytes(12);
    const sealed = refSeal(key, nonce, p, a);
    const at = 7;
    const check = (k: Buffer, iv: Buffer, aad: Buffer, s: Buffer) => {
      const written = s.length - 16;
      const out = Buffer.alloc(at + written + 9, 0xee);
      expect(n.gcmOpenInto(k, iv, aad, s, out, at)).toBe(false);
      expect(out.subarray(at, at + written).every((b) => b === 0)).toBe(true);
      expect(out.subarray(0, at).every((b) => b === 0xee)).toBe(true);
      expect(out.subarray(at + written).every((b) => b === 0xee)).toBe(true);
      expect(() => aead.open(createSecretKey(k), iv, s, aad)).toThrow(AuthenticationError);
    };
    for (let i = 0; i < sealed.length; i++) {
      const bad = Buffer.from(sealed);
      bad[i]! ^= 1 << (i % 8);
      check(key, nonce, a, bad);
    }
    for (let i = 0; i < a.length; i++) {
      const bad = Buffer.from(a);
      bad[i]! ^= 0x80;
      check(key, nonce, bad, sealed);
    }
    for (let i = 0; i < nonce.length; i++) {
      const bad = Buffer.from(nonce);
      bad[i]! ^= 0x01;
      check(key, bad, a, sealed);
    }
    const badKey = Buffer.from(key);
    badKey[0]! ^= 1;
    check(badKey, nonce, a, sealed);
    check(key, nonce, Buffer.alloc(0), sealed);
    check(key, nonce, a, sealed.subarray(1)); // truncated at the front
    check(key, nonce, a, sealed.subarray(0, 16)); // only a tag
    // and the good record still opens with the same contexts afterwards
    expect(aead.open(ko, nonce, sealed, a).equals(p)).toBe(true);
  });

  it("opens in place (out at the sealed data's own address)", () => {
    const key = randomBytes(32);
    const p = randomBytes(4096);
    const nonce = randomBytes(12);
    const buf = Buffer.concat([Buffer.alloc(8), refSeal(key, nonce, p, Buffer.alloc(0))]);
    const sealed = buf.subarray(8);
    expect(n.gcmOpenInto(key, nonce, Buffer.alloc(0), sealed, buf, 8)).toBe(true);
    expect(buf.subarray(8, 8 + p.length).equals(p)).toBe(true);
  });

  it("openInto: same results on both paths, in place or not, output zeroed on failure", () => {
    const key = randomBytes(32);
    const ko = createSecretKey(key);
    for (const [api, AuthError] of [
      [aead, AuthenticationError],
      [nodeAead, nodeErrors.AuthenticationError],
    ] as const) {
      for (const size of [0, 1, 100, 4096, 4097]) {
        const p = randomBytes(size);
        const a = randomBytes(24);
        const nonce = randomBytes(12);
        const sealed = refSeal(key, nonce, p, a);
        const out = Buffer.alloc(size + 10, 0xee);
        expect(api.openInto(out, 4, ko, nonce, sealed, a)).toBe(size);
        expect(out.subarray(4, 4 + size).equals(p)).toBe(true);
        expect(out.subarray(0, 4).every((b) => b === 0xee)).toBe(true);
        expect(out.subarray(4 + size).every((b) => b === 0xee)).toBe(true);
        // in place
        const buf = Buffer.concat([Buffer.alloc(3), sealed]);
        expect(api.openInto(buf, 3, ko, nonce, buf.subarray(3), a)).toBe(size);
        expect(buf.subarray(3, 3 + size).equals(p)).toBe(true);
        // tampered: AuthenticationError and the region zeroed
        const bad = Buffer.from(sealed);
        bad[bad.length - 1]! ^= 1;
        const out2 = Buffer.alloc(size + 10, 0xee);
        expect(() => api.openInto(out2, 4, ko, nonce, bad, a)).toThrow(AuthError);
        expect(out2.subarray(4, 4 + size).every((b) => b === 0)).toBe(true);
        expect(out2.subarray(0, 4).every((b) => b === 0xee)).toBe(true);
        expect(out2.subarray(4 + size).every((b) => b === 0xee)).toBe(true);
        expect(() => api.openInto(Buffer.alloc(size + 3), 4, ko, nonce, sealed, a)).toThrow(
          RangeError,
        );
      }
    }
  });

  it("throws TypeError / RangeError on bad arguments instead of crashing", () => {
    const k = randomBytes(32);
    const iv = randomBytes(12);
    const p = randomBytes(64);
    const out = Buffer.alloc(80);
    const sealed = refSeal(k, iv, p, Buffer.alloc(0));
    const e = Buffer.alloc(0);
    const anyN = n as unknown as Record<string, (...args: unknown[]) => unknown>;
    const seal =
      (...args: unknown[]) =>
      () =>
        anyN.gcmSealInto!(...args);
    const open =
      (...args: unknown[]) =>
      () =>
        anyN.gcmOpenInto!(...args);
    const hmac =
      (...args: unknown[]) =>
      () =>
        anyN.hmacSha256Into!(...args);

    expect(seal(randomBytes(31), iv, e, p, out, 0)).toThrow(RangeError);
    expect(seal(randomBytes(33), iv, e, p, out, 0)).toThrow(RangeError);
    expect(seal(k, randomBytes(11), e, p, out, 0)).toThrow(RangeError);
    expect(seal(k, randomBytes(16), e, p, out, 0)).toThrow(RangeError);
    expect(seal(k, iv, e, p, Buffer.alloc(79), 0)).toThrow(RangeError);
    expect(seal(k, iv, e, p, out, 1)).toThrow(RangeError);
    expect(seal(k, iv, e, p, out, 81)).toThrow(RangeError);
    expect(seal(k, iv, e, p, out, -1)).toThrow(RangeError);
    expect(seal(k, iv, e, p, out, 0.5)).toThrow(RangeError);
    expect(seal(k, iv, e, p, out, Number.NaN)).toThrow(RangeError);
    expect(seal(k, iv, e, p, out, 2 ** 64)).toThrow(RangeError);
    expect(seal(k, iv, e, p, out, "0")).toThrow(TypeError);
    expect(seal(k, iv, e, p, out)).toThrow(TypeError);
    expect(seal("k", iv, e, p, out, 0)).toThrow(TypeError);
    expect(seal(k, iv, null, p, out, 0)).toThrow(TypeError);
    expect(seal(k, iv, e, new Float64Array(8), out, 0)).toThrow(TypeError);
    expect(seal(k, iv, e, p, new ArrayBuffer(80), 0)).toThrow(TypeError);
    // the output overlapping the input other than exactly in place
    const shared = Buffer.alloc(200);
    expect(seal(k, iv, e, shared.subarray(0, 64), shared, 8)).toThrow(RangeError);

    expect(open(k, iv, e, sealed.subarray(0, 15), out, 0)).toThrow(RangeError);
    expect(open(k, iv, e, sealed, Buffer.alloc(63), 0)).toThrow(RangeError);
    expect(open(k, iv, e, sealed, out, 17)).toThrow(RangeError);
    expect(open(randomBytes(16), iv, e, sealed, out, 0)).toThrow(RangeError);
    expect(open(k, randomBytes(8), e, sealed, out, 0)).toThrow(RangeError);
    expect(open(k, iv, e, [1, 2, 3], out, 0)).toThrow(TypeError);
    expect(open(k, iv, e, sealed, out)).toThrow(TypeError);

    expect(hmac(e, p, out, 0)).toThrow(RangeError);
    expect(hmac(k, p, Buffer.alloc(31), 0)).toThrow(RangeError);
    expect(hmac(k, p, out, 49)).toThrow(RangeError);
    expect(hmac(k, "data", out, 0)).toThrow(TypeError);
    expect(hmac(k, p, out)).toThrow(TypeError);

    // and the public API keeps its own errors
    const ko = createSecretKey(k);
    expect(() => aead.sealInto(Buffer.alloc(79), 0, ko, iv, p, e)).toThrow(RangeError);
    expect(() => aead.seal(ko, randomBytes(16), p, e)).toThrow(TypeError);
    expect(() => aead.open(ko, iv, sealed.subarray(0, 10), e)).toThrow(AuthenticationError);
  });

  it("works in worker threads, each with its own contexts, and frees them on exit", async () => {
    // Each worker requires the addon directly, checks GCM test case 16, then seals and
    // fingerprints the jobs it is given; the main thread checks them against node:crypto.
    const code = `
      const { parentPort, workerData } = require("node:worker_threads");
      const m = require(workerData.path);
      const h = (s) => Buffer.from(s, "hex");
      const k = h("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
      const iv = h("cafebabefacedbaddecaf888");
      const p = h("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
      const a = h("feedfacedeadbeeffeedfacedeadbeefabaddad2");
      const kat = Buffer.alloc(p.length + 16);
      m.gcmSealInto(k, iv, a, p, kat, 0);
      const results = workerData.jobs.map((j) => {
        const key = Buffer.from(j.key), nonce = Buffer.from(j.nonce), pt = Buffer.from(j.pt);
        const out = Buffer.alloc(pt.length + 16);
        for (let r = 0; r < 50; r++) m.gcmSealInto(key, nonce, nonce, pt, out, 0);
        const back = Buffer.alloc(pt.length);
        const ok = m.gcmOpenInto(key, nonce, nonce, out, back, 0) && back.equals(pt);
        const mac = Buffer.alloc(32);
        m.hmacSha256Into(key, pt, mac, 0);
        return { sealed: out.toString("hex"), mac: mac.toString("hex"), ok };
      });
      parentPort.postMessage({ kat: kat.toString("hex"), results });
    `;
    const run = async (jobs: { key: Buffer; nonce: Buffer; pt: Buffer }[]) => {
      const w = new Worker(code, { eval: true, workerData: { path: ADDON_PATH, jobs } });
      try {
        return await new Promise<{
          kat: string;
          results: { sealed: string; mac: string; ok: boolean }[];
        }>((resolve, reject) => {
          w.once("message", resolve);
          w.once("error", reject);
          w.once("exit", (c) => reject(new Error(`worker exited with ${c}`)));
        });
      } finally {
        await w.terminate();
      }
    };
    const batches = Array.from({ length: 4 }, () =>
      Array.from({ length: 20 }, (_, i) => ({
        key: randomBytes(32),
        nonce: randomBytes(12),
        pt: randomBytes(i * 211),
      })),
    );
    const answers = await Promise.all(batches.map(run));
    answers.forEach((ans, b) => {
      expect(ans.kat).toBe(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" +
          "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662" +
          "76fc6ece0f4e1768cddf8853bb2d551b",
      );
      ans.results.forEach((r, i) => {
        const j = batches[b]![i]!;
        expect(r.sealed).toBe(refSeal(j.key, j.nonce, j.pt, j.nonce).toString("hex"));
        expect(r.mac).toBe(refHmac(j.key, j.pt).toString("hex"));
        expect(r.ok).toBe(true);
      });
    });
    // Load and tear down repeatedly: each exit runs the finalizer of that thread's contexts.
    for (let i = 0; i < 5; i++) {
      const job = { key: randomBytes(32), nonce: randomBytes(12), pt: randomBytes(100) };
      const ans = await run([job]);
      expect(ans.results[0]!.sealed).toBe(
        refSeal(job.key, job.nonce, job.pt, job.nonce).toString("hex"),
      );
    }
    // and this thread's instance is unaffected
    const key = randomBytes(32);
    const nonce = randomBytes(12);
    const out = Buffer.alloc(16);
    n.gcmSealInto(key, nonce, e0, e0, out, 0);
    expect(out.equals(refSeal(key, nonce, e0, e0))).toBe(true);
  });
});

const e0 = Buffer.alloc(0);
