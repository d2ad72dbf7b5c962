import { createHmac, type KeyObject, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { newId } from "./ids.js";
import { channelKeys, chunkFingerprint, containerDataKey, domainKeys, KdfLabel } from "./kdf.js";
import { masterKeyFromBytes } from "./master-key.js";

const master = masterKeyFromBytes(randomBytes(32));
const raw = (k: KeyObject) => k.export().toString("hex");

/** RFC 5869 written out with HMAC, independently of node's hkdfSync. */
function hkdfReference(ikm: Buffer, salt: Buffer, info: Buffer, length: number): Buffer {
  const prk = createHmac("sha256", salt).update(ikm).digest();
  const out: Buffer[] = [];
  let t = Buffer.alloc(0);
  for (let i = 1; out.length * 32 < length; i++) {
    t = createHmac("sha256", prk)
      .update(Buffer.concat([t, info, Buffer.of(i)]))
      .digest();
    out.push(t);
  }
  return Buffer.concat(out).subarray(0, length);
}

describe("domainKeys", () => {
  it("derives HKDF-SHA256(master, salt, label ‖ 0 ‖ domain id bytes), as documented", () => {
    const bytes = Buffer.alloc(32, 7);
    const m = masterKeyFromBytes(bytes);
    const id = "00112233-4455-6677-8899-aabbccddeeff";
    const keys = domainKeys(m, id);
    const salt = Buffer.from("sanmux key hierarchy v1");
    const idBytes = Buffer.from("00112233445566778899aabbccddeeff", "hex");
    const info = (label: string) => Buffer.concat([Buffer.from(label), Buffer.of(0), idBytes]);
    expect(raw(keys.fingerprintKey)).toBe(
      hkdfReference(bytes, salt, info(KdfLabel.DomainFingerprint), 32).toString("hex"),
    );
    expect(raw(keys.dataKey)).toBe(
      hkdfReference(bytes, salt, info(KdfLabel.DomainData), 32).toString("hex"),
    );
  });

  it("is deterministic, and separates domains and purposes", () => {
    const d1 = newId();
    const d2 = newId();
    const a = domainKeys(master, d1);
    const b = domainKeys(master, d1);
    const c = domainKeys(master, d2);
    expect(a.domainId).toBe(d1);
    expect(raw(a.fingerprintKey)).toBe(raw(b.fingerprintKey));
    expect(raw(a.dataKey)).toBe(raw(b.dataKey));
    const all = [a.fingerprintKey, a.dataKey, c.fingerprintKey, c.dataKey].map(raw);
    expect(new Set(all).size).toBe(4);
    expect(all).not.toContain(raw(master));
  });

  it("depends on the master key", () => {
    const d = newId();
    const other = masterKeyFromBytes(randomBytes(32));
    expect(raw(domainKeys(master, d).dataKey)).not.toBe(raw(domainKeys(other, d).dataKey));
  });

  it("normalizes the id's case and refuses what is not an id", () => {
    const d = newId();
    expect(domainKeys(master, d.toUpperCase()).domainId).toBe(d);
    expect(raw(domainKeys(master, d.toUpperCase()).dataKey)).toBe(
      raw(domainKeys(master, d).dataKey),
    );
    expect(() => domainKeys(master, "default")).toThrow(TypeError);
  });

  it("refuses a master key of the wrong size", async () => {
    const { createSecretKey } = await import("node:crypto");
    expect(() => domainKeys(createSecretKey(randomBytes(16)), newId())).toThrow(TypeError);
  });
});

describe("containerDataKey and channelKeys", () => {
  it("gives every container of a domain its own key, unlike the domain's keys", () => {
    const d = domainKeys(master, newId());
    const c1 = newId();
    const k1 = raw(containerDataKey(d.dataKey, c1));
    expect(raw(containerDataKey(d.dataKey, c1))).toBe(k1);
    expect(raw(containerDataKey(d.dataKey, newId()))).not.toBe(k1);
    expect([raw(d.dataKey), raw(d.fingerprintKey)]).not.toContain(k1);
    const other = domainKeys(master, newId());
    expect(raw(containerDataKey(other.dataKey, c1))).not.toBe(k1);
  });

  it("gives every channel its own metadata key", () => {
    const k1 = channelKeys(master, 1);
    expect(k1.channelId).toBe(1);
    expect(raw(channelKeys(master, 1).metadataKey)).toBe(raw(k1.metadataKey));
    expect(raw(channelKeys(master, 2).metadataKey)).not.toBe(raw(k1.metadataKey));
    expect(() => channelKeys(master, -1)).toThrow(TypeError);
    expect(() => channelKeys(master, 1.5)).toThrow(TypeError);
  });
});

describe("chunkFingerprint", () => {
  it("is HMAC-SHA256 of the grain: equal within a domain, unrelated across domains", () => {
    const a = domainKeys(master, newId());
    const b = domainKeys(master, newId());
    const grain = randomBytes(4096);
    const fa = chunkFingerprint(a.fingerprintKey, grain);
    expect(fa.length).toBe(32);
    expect(chunkFingerprint(a.fingerprintKey, Buffer.from(grain)).equals(fa)).toBe(true);
    expect(fa.equals(createHmac("sha256", a.fingerprintKey.export()).update(grain).digest())).toBe(
      true,
    );
    expect(chunkFingerprint(b.fingerprintKey, grain).equals(fa)).toBe(false);
    const changed = Buffer.from(grain);
    changed[4095]! ^= 1;
    expect(chunkFingerprint(a.fingerprintKey, changed).equals(fa)).toBe(false);
  });
});
