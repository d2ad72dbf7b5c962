import {
  appendFileSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { MetaError } from "./errors.js";
import { MapLog, segmentName } from "./maplog.js";
import {
  decodePayload,
  encodeFrame,
  encodePayload,
  FRAME_HEADER_BYTES,
  FrameDecoder,
  type MapRecord,
} from "./maplog-codec.js";
import { fp, sfp, tempDir } from "./testing/helpers.js";
import { encodeLegacyFrame } from "./testing/legacy.js";

/** One record of every kind; `write` fingerprints from `f` (16 bytes now, 32 in version 1). */
const records = (f: (label: string | number) => Buffer): MapRecord[] => [
  { op: "volumeCreate", volume: 7, domainId: 3 },
  {
    op: "write",
    volume: 1,
    grains: [
      { grain: 0, fingerprint: f("a") },
      { grain: 1, fingerprint: undefined },
      { grain: 2, fingerprint: f("b") },
      { grain: 9, fingerprint: f("c") },
      { grain: 2 ** 52 + 3, fingerprint: undefined },
      ...Array.from({ length: 20 }, (_, i) => ({
        grain: 100 + i,
        fingerprint: i % 3 === 0 ? undefined : f(i),
      })),
    ],
  },
  { op: "unmap", volume: 2, first: 5, end: Number.MAX_SAFE_INTEGER },
  {
    op: "copy",
    srcVolume: 1,
    snapshot: undefined,
    srcFirst: 3,
    dstVolume: 4,
    dstFirst: 2 ** 40,
    count: 77,
  },
  { op: "copy", srcVolume: 1, snapshot: 0, srcFirst: 0, dstVolume: 1, dstFirst: 9, count: 1 },
  { op: "snapshotCreate", volume: 1, snapshot: 12 },
  { op: "snapshotMarkDelete", volume: 1, snapshot: 0xffff_fffe },
  {
    op: "snapshotDeleteStep",
    volume: 1,
    snapshot: 3,
    batch: 8192,
    cursor: Buffer.from("0102ff", "hex"),
  },
  { op: "volumeRetire", volume: 0xffff_ffff },
  { op: "volumeReleaseOld", volume: 5, batch: 4 },
  { op: "volumeForget", volume: 5 },
];
const RECORDS = records(sfp);
/** The same records as a build with 32-byte fingerprints logged them (frame version 1). */
const LEGACY_RECORDS = records(fp);

function stream(from = 1): Buffer {
  return Buffer.concat(RECORDS.map((r, i) => encodeFrame(from + i, r)));
}

describe("map log framing", () => {
  it("round-trips every record type", () => {
    for (const r of RECORDS) {
      const { op, payload } = encodePayload(r);
      expect(decodePayload(op, payload)).toEqual(r);
    }
  });

  it("writes 16 fingerprint bytes of a full fingerprint", () => {
    const full = LEGACY_RECORDS[1]!;
    const { op, payload } = encodePayload(full);
    expect(payload).toEqual(encodePayload(RECORDS[1]!).payload);
    expect(decodePayload(op, payload)).toEqual(RECORDS[1]);
  });

  it("reads version 1 frames (32-byte fingerprints), cut to 16 bytes, mixed with version 2", () => {
    // An older build's log, then this build's appends after a rebuild: one stream, cut anywhere.
    const n = RECORDS.length;
    const bytes = Buffer.concat([
      ...LEGACY_RECORDS.map((r, i) => encodeLegacyFrame(i + 1, r)),
      ...RECORDS.map((r, i) => encodeFrame(n + i + 1, r)),
    ]);
    // The legacy write frame is 16 bytes longer per mapped grain (16 of them, + 3 named).
    expect(encodeLegacyFrame(2, LEGACY_RECORDS[1]!).length).toBe(
      encodeFrame(2, RECORDS[1]!).length + 16 * (3 + 13),
    );
    for (let trial = 0; trial < 100; trial++) {
      const dec = new FrameDecoder();
      const seen: { seq: number; version: number }[] = [];
      for (let at = 0; at < bytes.length; ) {
        const step = 1 + Math.floor(Math.random() * (trial % 2 === 0 ? 9 : 400));
        for (const f of dec.push(bytes.subarray(at, at + step))) {
          seen.push({ seq: f.seq, version: f.version });
          expect(decodePayload(f.op, f.payload, f.version)).toEqual(RECORDS[(f.seq - 1) % n]);
        }
        at += step;
      }
      expect(dec.finish()).toBe("end");
      expect(seen.map((x) => x.version)).toEqual([
        ...RECORDS.map(() => 1),
        ...RECORDS.map(() => 2),
      ]);
    }
    // A version 1 write payload read as version 2 does not decode (the lengths disagree).
    const legacy = new FrameDecoder().push(encodeLegacyFrame(2, LEGACY_RECORDS[1]!))[0]!;
    expect(() => decodePayload(legacy.op, legacy.payload)).toThrow();
    expect(() => decodePayload(legacy.op, legacy.payload, 3)).toThrow(/frame version 3/);
  });

  it("a write costs its fingerprints plus a few bytes a run", () => {
    const grains = Array.from({ length: 32 }, (_, i) => ({ grain: 1000 + i, fingerprint: sfp(i) }));
    const { payload } = encodePayload({ op: "write", volume: 1, grains });
    // u32 volume · first (2 B) · count (1 B) · bitmap (4 B) · 32 × 16 B
    expect(payload.length).toBe(4 + 2 + 1 + 4 + 32 * 16);
    expect(encodeFrame(1, { op: "write", volume: 1, grains }).length).toBe(payload.length + 20);
  });

  it("decodes a stream cut anywhere", () => {
    const bytes = stream();
    for (let trial = 0; trial < 200; trial++) {
      const dec = new FrameDecoder();
      const seqs: number[] = [];
      let at = 0;
      while (at < bytes.length) {
        const n = 1 + Math.floor(Math.random() * (trial % 2 === 0 ? 7 : 300));
        for (const f of dec.push(bytes.subarray(at, at + n))) {
          seqs.push(f.seq);
          expect(decodePayload(f.op, f.payload)).toEqual(RECORDS[f.seq - 1]);
        }
        at += n;
      }
      expect(dec.finish()).toBe("end");
      expect(seqs).toEqual(RECORDS.map((_, i) => i + 1));
      expect(dec.goodBytes).toBe(bytes.length);
    }
  });

  it("stops at a torn tail at every cut point, keeping the whole frames before it", () => {
    const bytes = stream();
    const ends: number[] = [];
    let e = 0;
    for (const [i, r] of RECORDS.entries()) {
      e += encodeFrame(i + 1, r).length;
      ends.push(e);
    }
    for (let cut = 0; cut < bytes.length; cut++) {
      const dec = new FrameDecoder();
      const frames = [
        ...dec.push(bytes.subarray(0, Math.floor(cut / 2))),
        ...dec.push(bytes.subarray(Math.floor(cut / 2), cut)),
      ];
      const whole = ends.filter((x) => x <= cut).length;
      expect(frames.length).toBe(whole);
      expect(dec.goodBytes).toBe(whole === 0 ? 0 : ends[whole - 1]);
      expect(dec.finish()).toBe(cut === dec.goodBytes ? "end" : "torn");
    }
  });

  it("stops at a flipped bit (CRC) and at garbage", () => {
    const bytes = stream();
    const second = encodeFrame(1, RECORDS[0]!).length;
    for (const at of [second + 2, second + FRAME_HEADER_BYTES + 1, bytes.length - 1]) {
      const bad = Buffer.from(bytes);
      bad[at]! ^= 0x10;
      const dec = new FrameDecoder();
      const frames = dec.push(bad);
      expect(dec.finish()).toBe("corrupt");
      expect(frames.length).toBeGreaterThanOrEqual(1);
      expect(dec.goodBytes).toBeLessThan(bytes.length);
    }
    const dec = new FrameDecoder();
    expect(dec.push(Buffer.alloc(64, 0x55))).toEqual([]);
    expect(dec.finish()).toBe("corrupt");
  });
});

describe("map log files", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const dir = () => {
    const d = tempDir("sanmux-maplog-");
    dirs.push(d);
    return d;
  };

  it("appends, rotates, reopens and replays in order", async () => {
    const d = dir();
    let log = await MapLog.open(d, { segmentBytes: 200 });
    for (let i = 0; i < 40; i++) log.append(i + 1, RECORDS[i % RECORDS.length]!);
    await log.sync();
    await log.close();
    expect(readdirSync(d).filter((n) => n.endsWith(".log")).length).toBeGreaterThan(3);
    log = await MapLog.open(d, { segmentBytes: 200 });
    expect(log.lastSeq).toBe(40);
    const seen: number[] = [];
    const r = await log.replay(10, async (recs) => {
      for (const x of recs) {
        seen.push(x.seq);
        expect(x.record).toEqual(RECORDS[(x.seq - 1) % RECORDS.length]);
      }
    });
    expect(r).toEqual({ records: 30, lastSeq: 40 });
    expect(seen).toEqual(Array.from({ length: 30 }, (_, i) => 11 + i));
    // Appending continues the numbering.
    log.append(41, RECORDS[0]!);
    await log.close();
    expect((await MapLog.open(d)).lastSeq).toBe(41);
  });

  it("opens and replays a version 1 log, torn tail cut, then appends version 2 frames", async () => {
    const d = dir();
    const n = LEGACY_RECORDS.length;
    const legacy = Buffer.concat(LEGACY_RECORDS.map((r, i) => encodeLegacyFrame(i + 1, r)));
    writeFileSync(join(d, segmentName(1)), legacy.subarray(0, legacy.length - 5));
    const warnings: object[] = [];
    const logger = { info() {}, error() {}, warn: (o: object) => warnings.push(o) };
    const log = await MapLog.open(d, { logger });
    expect(log.lastSeq).toBe(n - 1);
    expect(warnings).toHaveLength(1);
    log.append(n, RECORDS[n - 1]!);
    await log.close();
    const again = await MapLog.open(d);
    const seen: MapRecord[] = [];
    await again.replay(0, async (recs) => {
      for (const x of recs) seen.push(x.record);
    });
    await again.close();
    expect(seen).toEqual(RECORDS);
  });

  it("cuts a torn tail of the last segment and logs it", async () => {
    const d = dir();
    const log = await MapLog.open(d);
    for (let i = 0; i < 5; i++) log.append(i + 1, RECORDS[1]!);
    await log.close();
    const path = join(d, segmentName(1));
    const size = readFileSync(path).length;
    truncateSync(path, size - 7);
    appendFileSync(path, Buffer.alloc(3));
    const warnings: object[] = [];
    const logger = { info() {}, error() {}, warn: (o: object) => warnings.push(o) };
    const again = await MapLog.open(d, { logger });
    expect(again.lastSeq).toBe(4);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ why: "incomplete last record" });
    expect(readFileSync(path).length).toBe((size / 5) * 4);
    // And the next append goes where the torn record was.
    again.append(5, RECORDS[0]!);
    await again.close();
    expect((await MapLog.open(d)).lastSeq).toBe(5);
  });

  it("refuses damage inside an earlier segment", async () => {
    const d = dir();
    const log = await MapLog.open(d, { segmentBytes: 100 });
    for (let i = 0; i < 10; i++) log.append(i + 1, RECORDS[1]!);
    await log.close();
    const first = join(d, segmentName(1));
    const bytes = readFileSync(first);
    bytes[30]! ^= 1;
    writeFileSync(first, bytes);
    await expect(MapLog.open(d)).rejects.toThrow(MetaError);
    await expect(MapLog.open(d)).rejects.toThrow(/not the last one/);
  });

  it("cutAfter drops records of transactions that never committed", async () => {
    const d = dir();
    const log = await MapLog.open(d, { segmentBytes: 150 });
    for (let i = 0; i < 12; i++) log.append(i + 1, RECORDS[i % 3]!);
    await log.close();
    const again = await MapLog.open(d, { segmentBytes: 150 });
    expect(await again.cutAfter(5)).toEqual({
      records: 7,
      keptIn: join(d, "cut-0000000000000006.log"),
    });
    // The cut records are kept aside, whole frames 6..12.
    const kept: number[] = [];
    const dec = new FrameDecoder();
    for (const f of dec.push(readFileSync(join(d, "cut-0000000000000006.log")))) kept.push(f.seq);
    expect(dec.finish()).toBe("end");
    expect(kept).toEqual([6, 7, 8, 9, 10, 11, 12]);
    expect(again.lastSeq).toBe(5);
    again.append(6, RECORDS[5]!);
    await again.close();
    const third = await MapLog.open(d);
    const seen: MapRecord[] = [];
    await third.replay(0, async (recs) => {
      for (const x of recs) seen.push(x.record);
    });
    expect(seen).toEqual([...[0, 1, 2, 3, 4].map((i) => RECORDS[i % 3]), RECORDS[5]]);
  });
});
