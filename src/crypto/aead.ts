/**
 * AES-256-GCM sealing (NIST SP 800-38D) with 96-bit nonces and 128-bit tags.
 *
 * Nonce policy (see README.md, "Nonces"): every sealed record carries a fresh random 96-bit nonce
 * from `randomNonce()`, and the key that seals it is used for a bounded number of records (a
 * container key, or a channel metadata key). Random nonces stay unique under crash and reopen,
 * where a counter would have to be made durable before use; the per-key record count keeps the
 * collision probability far below SP 800-38D's 2^-32 bound (8.2.2: at most 2^32 random nonces per
 * key).
 *
 * Contract: `open` returns plaintext only after the tag has verified; on any failure it throws
 * `AuthenticationError` and returns nothing, so unauthenticated bytes never escape.
 *
 * Implementation: the native accelerator (native.ts, README.md "Native acceleration") when it is
 * loaded in this thread, else node:crypto. Both produce the same bytes.
 */
import { createCipheriv, createDecipheriv, type KeyObject, randomFillSync } from "node:crypto";
import { AuthenticationError } from "./errors.js";
import { nativeCrypto, rawKeyBytes } from "./native.js";

export const AEAD_KEY_BYTES = 32;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;

const CIPHER = "aes-256-gcm";

// Keys already found to be 32-byte secret keys: `type` and `symmetricKeySize` are getters into
// native code, and the pool checks a key once per 4 KiB record (a cost the CPU profile showed).
const checkedKeys = new WeakSet<KeyObject>();

function checkArgs(key: KeyObject, nonce: Uint8Array): void {
  if (!checkedKeys.has(key)) {
    if (key.type !== "secret" || key.symmetricKeySize !== AEAD_KEY_BYTES) {
      throw new TypeError(`AES-256-GCM needs a ${AEAD_KEY_BYTES}-byte secret key`);
    }
    checkedKeys.add(key);
  }
  if (nonce.length !== NONCE_BYTES) {
    throw new TypeError(`AES-256-GCM nonces here are ${NONCE_BYTES} bytes, got ${nonce.length}`);
  }
}

/**
 * Encrypt and authenticate `plaintext`, binding `aad`. Returns a new buffer holding the
 * ciphertext (as long as the plaintext) followed by the 16-byte tag.
 * The caller guarantees that `nonce` is never used twice with `key` (use `randomNonce()`).
 */
export function seal(
  key: KeyObject,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Buffer {
  checkArgs(key, nonce);
  const native = nativeCrypto();
  if (native !== undefined) {
    const out = Buffer.allocUnsafe(plaintext.length + TAG_BYTES);
    native.gcmSealInto(rawKeyBytes(key), nonce, aad, plaintext, out, 0);
    return out;
  }
  const cipher = createCipheriv(CIPHER, key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const body = cipher.update(plaintext);
  const last = cipher.final();
  const tag = cipher.getAuthTag();
  return Buffer.concat([body, last, tag], plaintext.length + TAG_BYTES);
}

/**
 * `seal`, writing ciphertext ‖ tag into `out` at `at` instead of a new buffer (saves an allocation
 * and a copy per record on the container's append path). Returns the bytes written:
 * `plaintext.length + TAG_BYTES`. `out` must have room for them.
 */
export function sealInto(
  out: Buffer,
  at: number,
  key: KeyObject,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): number {
  checkArgs(key, nonce);
  const length = plaintext.length + TAG_BYTES;
  if (at < 0 || at + length > out.length) throw new RangeError("no room for the sealed data");
  const native = nativeCrypto();
  if (native !== undefined) {
    return native.gcmSealInto(rawKeyBytes(key), nonce, aad, plaintext, out, at);
  }
  const cipher = createCipheriv(CIPHER, key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  let n = cipher.update(plaintext).copy(out, at);
  n += cipher.final().copy(out, at + n);
  cipher.getAuthTag().copy(out, at + n);
  return length;
}

/**
 * Verify and decrypt `sealed` (ciphertext ‖ tag) made by `seal` with the same key, nonce and
 * aad. Throws `AuthenticationError` when anything differs: a flipped bit, another key, another
 * nonce, another aad, a truncated buffer.
 */
export function open(
  key: KeyObject,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
): Buffer {
  if (sealed.length < TAG_BYTES) {
    throw new AuthenticationError(`sealed data shorter than its ${TAG_BYTES}-byte tag`);
  }
  // A buffer of its own (not a slice of Buffer's shared pool), like node:crypto's result.
  const out = Buffer.allocUnsafeSlow(sealed.length - TAG_BYTES);
  openInto(out, 0, key, nonce, sealed, aad);
  return out;
}

/**
 * `open`, writing the plaintext into `out` at `at` instead of a new buffer (saves an allocation
 * per record on read paths). Returns the bytes written: `sealed.length - TAG_BYTES`. `out` may
 * be `sealed`'s own memory (decrypt in place: `out[at]` is `sealed[0]`) or separate from it, not
 * partially overlapping. Throws `AuthenticationError` as `open` does, and then
 * `out[at, at + sealed.length - TAG_BYTES)` is zeroed: no unauthenticated byte stays there.
 */
export function openInto(
  out: Buffer,
  at: number,
  key: KeyObject,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
): number {
  checkArgs(key, nonce);
  if (sealed.length < TAG_BYTES) {
    throw new AuthenticationError(`sealed data shorter than its ${TAG_BYTES}-byte tag`);
  }
  const split = sealed.length - TAG_BYTES;
  if (at < 0 || at + split > out.length) throw new RangeError("no room for the plaintext");
  const native = nativeCrypto();
  if (native !== undefined) {
    if (!native.gcmOpenInto(rawKeyBytes(key), nonce, aad, sealed, out, at)) {
      throw new AuthenticationError("AES-256-GCM tag mismatch");
    }
    return split;
  }
  const decipher = createDecipheriv(CIPHER, key, nonce, { authTagLength: TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.subarray(split));
  const body = decipher.update(sealed.subarray(0, split));
  try {
    const last = decipher.final();
    body.copy(out, at);
    last.copy(out, at + body.length);
    return split;
  } catch (error) {
    body.fill(0);
    out.fill(0, at, at + split);
    throw new AuthenticationError("AES-256-GCM tag mismatch", { cause: error });
  }
}

// Random nonces come from a pool refilled 1024 nonces at a time: one CSPRNG call per 1024 records
// instead of one each. A refill allocates a new pool, so nonces handed out earlier (views into the
// old pool) never change.
const POOL_NONCES = 1024;
let noncePool = Buffer.alloc(0);
let noncePos = 0;

/** A fresh 96-bit nonce from the CSPRNG. The returned buffer is never reused or overwritten. */
/**
 * `count` fresh random nonces back to back (12 bytes each), in a buffer of the caller's (`into`,
 * at least count × 12 bytes) or a new one.
 */
export function randomNonces(count: number, into?: Buffer): Buffer {
  const bytes = count * NONCE_BYTES;
  const out = into !== undefined && into.length >= bytes ? into : Buffer.allocUnsafe(bytes);
  return randomFillSync(out, 0, bytes).subarray(0, bytes);
}

export function randomNonce(): Buffer {
  if (noncePos + NONCE_BYTES > noncePool.length) {
    noncePool = randomFillSync(Buffer.allocUnsafe(POOL_NONCES * NONCE_BYTES));
    noncePos = 0;
  }
  const nonce = noncePool.subarray(noncePos, noncePos + NONCE_BYTES);
  noncePos += NONCE_BYTES;
  return nonce;
}
