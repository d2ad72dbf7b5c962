import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import {
  cryptoImplementation,
  domainKeys,
  masterKeyFromBytes,
  newId,
  sealPlainRecordsNative,
} from "../../crypto/index.js";
import { xorshift32 } from "../meta/testing/helpers.js";
import { pattern } from "../testing/helpers.js";
import { CompressibilityProbe } from "./compressibility.js";
import { containerKeys, ZSTD_LEVEL, zstdPays } from "./record.js";

const zstd = createRequire(import.meta.url)(
  "zstd-napi/binding",
) as typeof import("zstd-napi/binding.js");
const cctx = new zstd.CCtx();
cctx.setParameter(zstd.CParameter.compressionLevel, ZSTD_LEVEL);
const out = Buffer.alloc(zstd.compressBound(4096));
/** Whether zstd at the records' level saves what `zstdPays` asks for on `grain`. */
const zstdWouldPay = (grain: Uint8Array) => zstdPays(grain.length, cctx.compress2(out, grain));

const GRAIN = 4096;
const probe = new CompressibilityProbe();

/** Uniform bytes (SHA-256 chained), with each byte set to `value` with probability `p`. */
function salted(label: string, p: number, value = 0, seed = 1): Buffer {
  const g = pattern(label, GRAIN);
  const rand = xorshift32(seed);
  for (let i = 0; i < GRAIN; i++) if (rand(1_000_000) < p * 1_000_000) g[i] = value;
  return g;
}

/** Kinds of data a grain may hold, each in several strengths. */
function corpus(): { name: string; grain: Buffer }[] {
  const out: { name: string; grain: Buffer }[] = [];
  for (let k = 0; k < 40; k++) out.push({ name: `random ${k}`, grain: pattern(`r${k}`, GRAIN) });
  for (const p of [0.01, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 0.9]) {
    for (let k = 0; k < 5; k++) {
      out.push({ name: `random, ${p} zeros`, grain: salted(`z${k}`, p, 0, k + 1) });
    }
  }
  for (const mask of [0x7f, 0x3f, 0x0f, 0x01]) {
    const g = pattern(`m${mask}`, GRAIN);
    for (let i = 0; i < GRAIN; i++) g[i] = g[i]! & mask;
    out.push({ name: `random & ${mask}`, grain: g });
  }
  // 64-bit integers whose low 32 bits alone vary (a stride of 8 would see random bytes).
  const ints = pattern("ints", GRAIN);
  for (let i = 0; i < GRAIN; i += 8) ints.fill(0, i + 4, i + 8);
  out.push({ name: "u64 table, low halves random", grain: ints });
  const lowByte = pattern("low", GRAIN);
  for (let i = 0; i < GRAIN; i++) if (i % 8 !== 0) lowByte[i] = 0;
  out.push({ name: "u64 table, low bytes random", grain: lowByte });
  const halves = pattern("half", GRAIN);
  halves.fill(0, GRAIN / 2);
  out.push({ name: "random, then zeros", grain: halves });
  const text = Buffer.alloc(GRAIN);
  const words = ["backup", "agent", "volume", "grain", "chunk", "the", "of", "sanmux"];
  const rand = xorshift32(7);
  for (let at = 0; at < GRAIN; ) at += text.write(`${words[rand(words.length)]} `, at);
  out.push({ name: "text", grain: text });
  out.push({
    name: "base64",
    grain: Buffer.from(pattern("b64", GRAIN).toString("base64")).subarray(0, GRAIN),
  });
  out.push({
    name: "hex",
    grain: Buffer.from(pattern("hex", GRAIN).toString("hex")).subarray(0, GRAIN),
  });
  out.push({ name: "zeros", grain: Buffer.alloc(GRAIN) });
  out.push({ name: "one byte value", grain: Buffer.alloc(GRAIN, 0xa5) });
  return out;
}

describe("CompressibilityProbe", () => {
  it("never skips a grain on which zstd pays (repeats of uniform bytes apart)", () => {
    const missed: string[] = [];
    let paying = 0;
    for (const { name, grain } of corpus()) {
      if (!zstdWouldPay(grain)) continue;
      paying++;
      if (!probe.worthTrying(grain)) missed.push(name);
    }
    expect(missed).toEqual([]);
    expect(paying).toBeGreaterThan(30); // the corpus does hold compressible grains
  });

  it("skips uniformly random grains, with rare exceptions (then zstd is tried and does not pay)", () => {
    let tried = 0;
    for (let k = 0; k < 1000; k++) {
      const grain = pattern(`uniform ${k}`, GRAIN);
      expect(zstdWouldPay(grain)).toBe(false);
      if (probe.worthTrying(grain)) tried++;
    }
    // About 0.6 % expected (module comment); 3 % would mean the estimate or bound is off.
    expect(tried).toBeLessThan(30);
  });

  it("skips random bytes with a few zeros in them, which zstd does not pay on either", () => {
    const grain = salted("few", 0.01);
    expect(zstdWouldPay(grain)).toBe(false);
    expect(probe.worthTrying(grain)).toBe(false);
  });

  it("misses a repeat of uniform bytes inside a grain (the documented trade)", () => {
    const quarter = pattern("quarter", GRAIN / 4);
    const grain = Buffer.concat([quarter, quarter, quarter, quarter]);
    expect(zstdWouldPay(grain)).toBe(true);
    expect(probe.worthTrying(grain)).toBe(false);
  });

  it("always tries grains too short to sample, whatever they hold", () => {
    expect(probe.worthTrying(pattern("short", 1023))).toBe(true);
    expect(probe.worthTrying(new Uint8Array(0))).toBe(true);
    expect(probe.worthTrying(pattern("long enough", 1024))).toBe(false);
  });

  it.skipIf(cryptoImplementation() !== "native")(
    "decides as the native sealer's copy of it does (sealPlainRecords stops where it would try)",
    () => {
      const ck = containerKeys(domainKeys(masterKeyFromBytes(randomBytes(32)), newId()), newId());
      const out = Buffer.alloc(60 + GRAIN + 16);
      const grains = [
        ...corpus().map((c) => c.grain),
        ...Array.from({ length: 300 }, (_, k) => pattern(`agree ${k}`, GRAIN)),
      ];
      let skipped = 0;
      for (const grain of grains) {
        const sealed = sealPlainRecordsNative(
          ck.key,
          ck.containerIdBytes,
          0,
          grain,
          GRAIN,
          Buffer.alloc(32),
          randomBytes(12),
          out,
          0,
          true,
        );
        expect(sealed).toBe(probe.worthTrying(grain) ? 0 : 1);
        skipped += sealed ?? 0;
      }
      expect(skipped).toBeGreaterThan(250); // both kinds were met
      expect(skipped).toBeLessThan(grains.length - 30);
    },
  );

  it("judges each grain alone (the counts of the one before do not carry over)", () => {
    const p = new CompressibilityProbe();
    expect(p.worthTrying(Buffer.alloc(GRAIN))).toBe(true);
    expect(p.worthTrying(pattern("after zeros", GRAIN))).toBe(false);
    expect(p.worthTrying(Buffer.alloc(GRAIN, 1))).toBe(true);
  });
});
