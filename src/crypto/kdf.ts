/**
 * The key hierarchy (README.md): every key sanmux uses is derived from the master key with
 * HKDF-SHA256 (RFC 5869), each under its own label, so keys for different purposes, domains,
 * containers and channels are independent, and knowing one derived key reveals nothing about the
 * master key or any other derived key.
 *
 *   master ─┬─ "domain/fingerprint" + domain id ─→ fingerprintKey  (HMAC-SHA256: chunk identity)
 *           ├─ "domain/data" + domain id ────────→ dataKey ── "container/data" + container id
 *           │                                                 ─→ container key (AES-256-GCM)
 *           ├─ "channel/metadata" + channel id ──→ metadataKey     (AES-256-GCM)
 *           └─ "key-check" ──────────────────────→ key check value (stored in the data directory)
 *
 * HKDF info = label ‖ 0x00 ‖ context bytes. Labels contain no NUL and every context has a fixed
 * length per label, so two different (label, context) pairs never give the same info.
 * The salt is a fixed string: the master key is already uniform random (RFC 5869 §3.1 allows a
 * constant salt then); pools stay independent because their domain ids are random.
 *
 * All keys are `KeyObject`s, not Buffers, so that logging an object that holds one never prints
 * key bytes.
 */
import { createHmac, createSecretKey, hkdfSync, type KeyObject } from "node:crypto";
import { idToBytes } from "./ids.js";
import { nativeCrypto, rawKeyBytes } from "./native.js";

export const KEY_BYTES = 32;
export const FINGERPRINT_BYTES = 32;

const SALT = Buffer.from("sanmux key hierarchy v1", "ascii");

/** Labels, versioned so that a future format can derive fresh keys without ambiguity. */
export const KdfLabel = {
  DomainFingerprint: "sanmux/v1/domain/fingerprint",
  DomainData: "sanmux/v1/domain/data",
  ContainerData: "sanmux/v1/container/data",
  ChannelMetadata: "sanmux/v1/channel/metadata",
  KeyCheck: "sanmux/v1/key-check",
} as const;
export type KdfLabel = (typeof KdfLabel)[keyof typeof KdfLabel];

function checkKey(key: KeyObject, what: string): void {
  if (key.type !== "secret" || key.symmetricKeySize !== KEY_BYTES) {
    throw new TypeError(`${what} must be a ${KEY_BYTES}-byte secret key`);
  }
}

/** HKDF-SHA256(ikm, fixed salt, label ‖ 0 ‖ context) → `length` bytes. */
export function deriveBytes(
  ikm: KeyObject,
  label: KdfLabel,
  context: Uint8Array,
  length = KEY_BYTES,
): Buffer {
  checkKey(ikm, "the input key");
  const info = Buffer.concat([Buffer.from(label, "ascii"), Buffer.of(0), context]);
  return Buffer.from(hkdfSync("sha256", ikm, SALT, info, length));
}

function deriveKey(ikm: KeyObject, label: KdfLabel, context: Uint8Array): KeyObject {
  const bytes = deriveBytes(ikm, label, context);
  const key = createSecretKey(bytes);
  bytes.fill(0);
  return key;
}

/** The keys of one dedup + encryption domain. */
export interface DomainKeys {
  /** The domain's id (UUID text): what container headers record. */
  readonly domainId: string;
  /** HMAC-SHA256 key of chunk identity: fingerprint = HMAC(fingerprintKey, plaintext grain). */
  readonly fingerprintKey: KeyObject;
  /**
   * Root of the domain's chunk payload keys. Payloads are never sealed with it directly: each
   * container seals under `containerDataKey(dataKey, containerId)`.
   */
  readonly dataKey: KeyObject;
}

/** Derive the keys of domain `domainId` (UUID text) from the master key. */
export function domainKeys(master: KeyObject, domainId: string): DomainKeys {
  checkKey(master, "the master key");
  const id = idToBytes(domainId);
  return {
    domainId: domainId.toLowerCase(),
    fingerprintKey: deriveKey(master, KdfLabel.DomainFingerprint, id),
    dataKey: deriveKey(master, KdfLabel.DomainData, id),
  };
}

/**
 * The AES-256-GCM key that seals the chunk payloads of one container.
 *
 * Why per-container keys: a domain holds up to billions of chunks (2^32 chunks of 4 KiB is only
 * 16 TiB), and SP 800-38D §8.3 allows at most 2^32 random-nonce encryptions under one key. A
 * container holds far fewer records, so under its own key random 96-bit nonces keep a
 * collision probability below 2^-48 however large the domain grows, with no counter to persist
 * (the container writer enforces at most 2^24 records; n random nonces collide with probability
 * about n²/2^97).
 * It also binds every payload to its container: a record copied into another container does not
 * decrypt there. Compaction re-seals the records it moves under the new container's key.
 */
export function containerDataKey(dataKey: KeyObject, containerId: string): KeyObject {
  return deriveKey(dataKey, KdfLabel.ContainerData, idToBytes(containerId));
}

/** Keys specific to one channel (one mapping's lifetime). */
export interface ChannelKeys {
  readonly channelId: number;
  /** AES-256-GCM key for what belongs to this channel alone (its metadata, its map entries). */
  readonly metadataKey: KeyObject;
}

/** Derive the keys of channel `channelId` (a positive integer from the catalog). */
export function channelKeys(master: KeyObject, channelId: number): ChannelKeys {
  checkKey(master, "the master key");
  if (!Number.isSafeInteger(channelId) || channelId < 0) {
    throw new TypeError(`a channel id is a non-negative integer, got ${channelId}`);
  }
  const context = Buffer.alloc(8);
  context.writeBigUInt64BE(BigInt(channelId));
  return { channelId, metadataKey: deriveKey(master, KdfLabel.ChannelMetadata, context) };
}

/**
 * The identity of a chunk: HMAC-SHA256 of the plaintext grain under the domain's fingerprint
 * key. Equal grains in one domain get equal fingerprints (dedup); in different domains they get
 * unrelated ones, so nothing about the content is shared or revealed across domains.
 * Computed by the native accelerator when it is loaded (native.ts), else node:crypto: same bytes.
 */
export function chunkFingerprint(fingerprintKey: KeyObject, grain: Uint8Array): Buffer {
  const native = nativeCrypto();
  if (
    native !== undefined &&
    fingerprintKey.type === "secret" &&
    (fingerprintKey.symmetricKeySize ?? 0) > 0
  ) {
    // A buffer of its own (not a slice of Buffer's shared pool), like digest()'s result.
    const out = Buffer.allocUnsafeSlow(FINGERPRINT_BYTES);
    native.hmacSha256Into(rawKeyBytes(fingerprintKey), grain, out, 0);
    return out;
  }
  return createHmac("sha256", fingerprintKey).update(grain).digest();
}

/**
 * The fingerprints of the `grainBytes`-long grains of `data` (chunkFingerprint of each) into
 * `fps` (32 bytes a grain), except for all-zero grains, which get `zero[i]` = 1 and no
 * fingerprint (DESIGN.md: zero grains are never stored). One native call for all of them when
 * the accelerator is loaded.
 */
export function chunkFingerprints(
  fingerprintKey: KeyObject,
  data: Uint8Array,
  grainBytes: number,
  fps: Uint8Array,
  zero: Uint8Array,
): void {
  const n = data.length / grainBytes;
  if (!Number.isInteger(n) || fps.length < n * FINGERPRINT_BYTES || zero.length < n) {
    throw new RangeError("chunkFingerprints: data, fps or zero do not hold the same grains");
  }
  const native = nativeCrypto();
  if (
    native !== undefined &&
    fingerprintKey.type === "secret" &&
    (fingerprintKey.symmetricKeySize ?? 0) > 0
  ) {
    native.hmacSha256Grains(rawKeyBytes(fingerprintKey), data, grainBytes, fps, zero);
    return;
  }
  const empty = Buffer.alloc(grainBytes);
  for (let i = 0; i < n; i++) {
    const grain = data.subarray(i * grainBytes, (i + 1) * grainBytes);
    zero[i] = empty.equals(grain) ? 1 : 0;
    if (zero[i] === 0) {
      fps.set(createHmac("sha256", fingerprintKey).update(grain).digest(), i * FINGERPRINT_BYTES);
    }
  }
}
