/**
 * Loader of the optional native crypto accelerator (README.md, "Native acceleration"):
 * build/sanmux_crypto.node, compiled from native/sanmux_crypto.c by scripts/build-native.mjs.
 *
 * `nativeCrypto()` returns the addon's functions once it has loaded and passed a known-answer
 * self-test in this thread, else `undefined`, and aead.ts / kdf.ts then use node:crypto. Both
 * paths compute the same bytes with the same OpenSSL; only the per-call overhead differs.
 * `cryptoImplementation()` says which one is in use and, for node:crypto, why.
 *
 * The addon is looked up relative to this module: `../../build/` is the repository's build/
 * folder both from src/crypto/native.ts (vitest) and from dist/crypto/native.js (the server).
 * Loading is lazy (first use) and once per thread: every worker_thread loads its own instance.
 * `SANMUX_NATIVE_CRYPTO=0` forces node:crypto.
 */
import { createHmac, createSecretKey, type KeyObject } from "node:crypto";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

export interface NativeCrypto {
  /** Writes ciphertext ‖ 16-byte tag at out[outOffset..]; returns plaintext.length + 16. */
  gcmSealInto(
    key: Uint8Array,
    nonce: Uint8Array,
    aad: Uint8Array,
    plaintext: Uint8Array,
    out: Uint8Array,
    outOffset: number,
  ): number;
  /**
   * Writes the plaintext of `sealed` (ciphertext ‖ tag) at out[outOffset..] and returns true iff
   * the tag verified; on false the bytes written there have been zeroed.
   */
  gcmOpenInto(
    key: Uint8Array,
    nonce: Uint8Array,
    aad: Uint8Array,
    sealed: Uint8Array,
    out: Uint8Array,
    outOffset: number,
  ): boolean;
  /** Writes HMAC-SHA-256(key, data) at out[outOffset..]; returns 32. */
  hmacSha256Into(key: Uint8Array, data: Uint8Array, out: Uint8Array, outOffset: number): number;
  /**
   * For each `grainBytes`-long grain i of `data`: `zero[i]` = 1 when it is all zeros (`macs`
   * left as is), else 0 and HMAC-SHA-256(key, grain) at macs[32i..]. Returns the grain count.
   */
  hmacSha256Grains(
    key: Uint8Array,
    data: Uint8Array,
    grainBytes: number,
    macs: Uint8Array,
    zero: Uint8Array,
  ): number;
  /**
   * Codec-none container records (src/pool/container/FORMAT.md §3) of the `grainBytes`-long
   * grains of `data`, back to back at out[outOffset..], the first for container offset `base`,
   * with fingerprint i of `fps` and nonce i of `nonces` (fresh). With `probe`, stops before the
   * first grain zstd could pay on (compressibility.ts). Returns the number of records written.
   */
  sealPlainRecords(
    key: Uint8Array,
    containerId: Uint8Array,
    base: number,
    data: Uint8Array,
    grainBytes: number,
    fps: Uint8Array,
    nonces: Uint8Array,
    out: Uint8Array,
    outOffset: number,
    probe: boolean,
  ): number;
  /** CRC32C of `data` continuing from `initial` (0 to start), as @node-rs/crc32's crc32c. */
  crc32c(data: Uint8Array, initial: number): number;
  /** OPENSSL_VERSION_TEXT of the headers the addon was compiled with. */
  readonly opensslHeaders: string;
  /** The OpenSSL the addon runs on (node's own). */
  readonly opensslRuntime: string;
}

export type CryptoImplementation = "native" | "node:crypto";

export interface CryptoImplementationInfo {
  readonly implementation: CryptoImplementation;
  /** For node:crypto: why the addon is not used. For native: where it was loaded from. */
  readonly detail: string;
}

/** The environment variable that, set to "0", forces node:crypto. */
export const NATIVE_CRYPTO_ENV = "SANMUX_NATIVE_CRYPTO";

/** Where the addon is expected: <repository>/build/sanmux_crypto.node. */
export const NATIVE_ADDON_URL = new URL("../../build/sanmux_crypto.node", import.meta.url);

let loaded: { native: NativeCrypto | undefined; info: CryptoImplementationInfo } | undefined;

function load(): { native: NativeCrypto | undefined; info: CryptoImplementationInfo } {
  const fallback = (detail: string) => ({
    native: undefined,
    info: { implementation: "node:crypto" as const, detail },
  });
  if (process.env[NATIVE_CRYPTO_ENV] === "0") {
    return fallback(`disabled by ${NATIVE_CRYPTO_ENV}=0`);
  }
  const path = fileURLToPath(NATIVE_ADDON_URL);
  let addon: NativeCrypto;
  try {
    addon = createRequire(import.meta.url)(path) as NativeCrypto;
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    if (e.code === "MODULE_NOT_FOUND") {
      return fallback(`${path} is not built (npm run build compiles it when gcc is installed)`);
    }
    return fallback(`${path} failed to load: ${e.message ?? String(error)}`);
  }
  try {
    selfTest(addon);
  } catch (error) {
    return fallback(`${path} failed its self-test: ${(error as Error).message}`);
  }
  return {
    native: addon,
    info: { implementation: "native", detail: `${path} (${addon.opensslRuntime})` },
  };
}

/**
 * Known-answer tests run on load, so that a miscompiled or mismatched addon is never used:
 * AES-256-GCM test case 16 of McGrew & Viega, "The Galois/Counter Mode of Operation" (the
 * vectors behind NIST SP 800-38D), open of it and of a corrupted copy, and HMAC-SHA-256 test
 * case 2 of RFC 4231.
 */
function selfTest(addon: NativeCrypto): void {
  const functions = [
    "gcmSealInto",
    "gcmOpenInto",
    "hmacSha256Into",
    "hmacSha256Grains",
    "sealPlainRecords",
    "crc32c",
  ] as const;
  for (const f of functions) {
    if (typeof addon[f] !== "function") throw new Error(`${f} is missing`);
  }
  const hex = (s: string) => Buffer.from(s, "hex");
  const key = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
  const iv = hex("cafebabefacedbaddecaf888");
  const pt = hex(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
      "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
  );
  const aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
  const expected = hex(
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" +
      "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662" +
      "76fc6ece0f4e1768cddf8853bb2d551b",
  );
  const sealed = Buffer.alloc(expected.length);
  const opened = Buffer.alloc(pt.length);
  // Twice each: the second call takes the same-key path (only the IV is set again).
  for (let round = 0; round < 2; round++) {
    sealed.fill(0);
    if (
      addon.gcmSealInto(key, iv, aad, pt, sealed, 0) !== expected.length ||
      !sealed.equals(expected)
    ) {
      throw new Error("AES-256-GCM seal gives the wrong bytes");
    }
    opened.fill(0);
    if (!addon.gcmOpenInto(key, iv, aad, sealed, opened, 0) || !opened.equals(pt)) {
      throw new Error("AES-256-GCM open fails on a valid record");
    }
  }
  sealed[0]! ^= 1;
  if (addon.gcmOpenInto(key, iv, aad, sealed, opened, 0) || opened.some((b) => b !== 0)) {
    throw new Error("AES-256-GCM open accepts a corrupted record");
  }
  const mac = Buffer.alloc(32);
  for (let round = 0; round < 2; round++) {
    mac.fill(0);
    addon.hmacSha256Into(Buffer.from("Jefe"), Buffer.from("what do ya want for nothing?"), mac, 0);
    if (!mac.equals(hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"))) {
      throw new Error("HMAC-SHA-256 gives the wrong bytes");
    }
  }
  // And one cross-check against node:crypto, the path the addon must match byte for byte.
  const k = createSecretKey(key);
  addon.hmacSha256Into(key, pt, mac, 0);
  if (!mac.equals(createHmac("sha256", k).update(pt).digest())) {
    throw new Error("HMAC-SHA-256 differs from node:crypto");
  }
  // The batch form: three 20-byte grains, the middle one zeros (its MAC slot left alone).
  const grains = Buffer.concat([pt.subarray(0, 20), Buffer.alloc(20), pt.subarray(20, 40)]);
  const macs = Buffer.alloc(96, 0xee);
  const zero = Buffer.alloc(3, 9);
  if (addon.hmacSha256Grains(key, grains, 20, macs, zero) !== 3) {
    throw new Error("HMAC-SHA-256 of grains counts them wrong");
  }
  const one = (g: Buffer) => createHmac("sha256", k).update(g).digest();
  if (
    !zero.equals(Buffer.from([0, 1, 0])) ||
    !macs.subarray(0, 32).equals(one(pt.subarray(0, 20))) ||
    !macs.subarray(32, 64).equals(Buffer.alloc(32, 0xee)) ||
    !macs.subarray(64).equals(one(pt.subarray(20, 40)))
  ) {
    throw new Error("HMAC-SHA-256 of grains differs from node:crypto");
  }
  // CRC32C check value (RFC 3720 B.4's polynomial; "123456789" → e3069283), whole and continued.
  const digits = Buffer.from("123456789");
  if (
    addon.crc32c(digits, 0) !== 0xe3069283 ||
    addon.crc32c(digits.subarray(4), addon.crc32c(digits.subarray(0, 4), 0)) !== 0xe3069283
  ) {
    throw new Error("CRC32C gives the wrong value");
  }
  sealPlainRecordsSelfTest(addon, key, pt);
}

/**
 * One codec-none record of a 64-byte grain at offset 2^32 + 7 (FORMAT.md §3): its header fields,
 * its CRC32C, and its tag under the AAD the format defines, opened with gcmOpenInto.
 */
function sealPlainRecordsSelfTest(addon: NativeCrypto, key: Buffer, pt: Buffer): void {
  const grain = Buffer.concat([pt, pt]).subarray(0, 64);
  const containerId = Buffer.alloc(16, 0xc1);
  const fp = Buffer.alloc(32, 0xf0);
  const nonce = Buffer.alloc(12, 0x0e);
  const offset = 2 ** 32 + 7;
  const out = Buffer.alloc(60 + 64 + 16 + 1, 0xaa);
  const fail = (what: string) => new Error(`sealPlainRecords: ${what}`);
  if (addon.sealPlainRecords(key, containerId, offset, grain, 64, fp, nonce, out, 1, false) !== 1) {
    throw fail("wrong record count");
  }
  const r = out.subarray(1);
  if (out[0] !== 0xaa || r[0] !== 0x52 || r[1] !== 0x43 || r[2] !== 0 || r[3] !== 0) {
    throw fail("wrong magic, codec or flags");
  }
  if (r.readUInt32LE(4) !== 64 || r.readUInt32LE(8) !== 80) throw fail("wrong lengths");
  if (!r.subarray(12, 44).equals(fp) || !r.subarray(44, 56).equals(nonce)) {
    throw fail("wrong fingerprint or nonce");
  }
  const crc = addon.crc32c(r.subarray(60), addon.crc32c(r.subarray(0, 56), 0));
  if (r.readUInt32LE(56) !== crc) throw fail("wrong CRC32C");
  const aad = Buffer.alloc(64);
  containerId.copy(aad, 0);
  aad.writeUInt32LE(7, 16);
  aad.writeUInt32LE(1, 20);
  fp.copy(aad, 24);
  aad.writeUInt32LE(64, 60);
  const opened = Buffer.alloc(64);
  if (!addon.gcmOpenInto(key, nonce, aad, r.subarray(60), opened, 0) || !opened.equals(grain)) {
    throw fail("the payload does not open under the record's AAD");
  }
}

function state() {
  loaded ??= load();
  return loaded;
}

/** NativeCrypto.sealPlainRecords' arguments after the key. */
type SealPlainRecordsArgs =
  Parameters<NativeCrypto["sealPlainRecords"]> extends [Uint8Array, ...infer Rest] ? Rest : never;

/**
 * Codec-none container records sealed by the addon (NativeCrypto.sealPlainRecords, with the
 * key's bytes), or undefined when it is not loaded: the caller seals them with aead.ts then.
 */
export function sealPlainRecordsNative(
  key: KeyObject,
  ...args: SealPlainRecordsArgs
): number | undefined {
  return state().native?.sealPlainRecords(rawKeyBytes(key), ...args);
}

/** The addon's functions when it is loaded and sound in this thread, else undefined. */
export function nativeCrypto(): NativeCrypto | undefined {
  return state().native;
}

/** Which implementation seals, opens and fingerprints in this thread ("native" or "node:crypto"). */
export function cryptoImplementation(): CryptoImplementation {
  return state().info.implementation;
}

/**
 * `cryptoImplementation()` with its detail, for the startup log line: for node:crypto the
 * reason the addon is not used, for native the file it came from and its OpenSSL.
 */
export function cryptoImplementationInfo(): CryptoImplementationInfo {
  return state().info;
}

// Raw key bytes per KeyObject, for the addon (which takes bytes): exported once per key, not per
// call. A WeakMap so a key's bytes go when its KeyObject does, and they are not reachable from
// the KeyObject (logging the object still prints no key bytes).
const rawKeys = new WeakMap<KeyObject, Buffer>();

/** The bytes of secret key `key`, exported once and cached. Callers must not modify them. */
export function rawKeyBytes(key: KeyObject): Buffer {
  let raw = rawKeys.get(key);
  if (raw === undefined) {
    raw = key.export();
    rawKeys.set(key, raw);
  }
  return raw;
}
