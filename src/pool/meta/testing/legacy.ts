/**
 * The map log as a build before 16-byte fingerprints wrote it (frame version 1, "SMXCKPT1"
 * checkpoints, format markers 3 and 4; README.md "Fingerprints: 16 bytes"), for the tests of
 * `sanmux pool rebuild` as the migration path. Written from the old layout's description, not
 * with the current encoders' fingerprint code:
 * - a version 1 `write` payload: u32 LE volume, then runs of varint first · varint count ·
 *   bitmap (1 = mapped) · a 32-byte fingerprint per mapped grain; the other payloads are the same
 *   as in version 2;
 * - a version 1 checkpoint: the same entries, with `map` values fingerprint[32] (· birth u32) and
 *   `mapold` values fingerprint[32] · death u32.
 * `downgradeMapLog` rewrites a current log into that form, lengthening every fingerprint through
 * `fullOf` (the test knows the full fingerprints: its labels, or the containers' records).
 */
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { crc32c } from "@node-rs/crc32";
import { CheckpointTag, readCheckpoint, verifyCheckpoint } from "../checkpoint.js";
import {
  FINGERPRINT_BYTES,
  LONG_FINGERPRINT_FORMATS,
  META_FORMAT_VERSION,
  readU32,
  u32Value,
} from "../codec.js";
import {
  decodePayload,
  encodePayload,
  FrameDecoder,
  frameOf,
  LEGACY_FRAME_VERSION,
  type MapRecord,
} from "../maplog-codec.js";

const TWO_32 = 2 ** 32;

function varint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return Buffer.from(out);
}

/** A version 1 frame of `rec`, whose `write` fingerprints must be the full 32 bytes. */
export function encodeLegacyFrame(seq: number, rec: MapRecord): Buffer {
  let op: number;
  let payload: Buffer;
  if (rec.op === "write") {
    op = encodePayload(rec).op;
    const parts: Buffer[] = [Buffer.alloc(4)];
    parts[0]!.writeUInt32LE(rec.volume, 0);
    const g = rec.grains;
    for (let i = 0; i < g.length; ) {
      let j = i + 1;
      while (j < g.length && g[j]!.grain === g[j - 1]!.grain + 1) j++;
      const bitmap = Buffer.alloc(Math.ceil((j - i) / 8));
      const fps: Buffer[] = [];
      for (let k = i; k < j; k++) {
        const f = g[k]!.fingerprint;
        if (f === undefined) continue;
        if (f.length !== 32) throw new Error(`a legacy write needs 32-byte fingerprints`);
        bitmap[(k - i) >> 3]! |= 1 << ((k - i) & 7);
        fps.push(f);
      }
      parts.push(varint(g[i]!.grain), varint(j - i), bitmap, ...fps);
      i = j;
    }
    payload = Buffer.concat(parts);
  } else {
    ({ op, payload } = encodePayload(rec));
  }
  return frameOf(seq, op, payload, LEGACY_FRAME_VERSION);
}

/** A version 1 checkpoint file's bytes: header "SMXCKPT1", entries as given, trailer. */
export function encodeLegacyCheckpoint(
  seq: number,
  grainSize: number,
  entries: readonly { tag: number; key: Buffer; value: Buffer }[],
): Buffer {
  const header = Buffer.alloc(24);
  header.write("SMXCKPT1", 0, "latin1");
  header.writeUInt32LE(seq % TWO_32, 8);
  header.writeUInt32LE(Math.floor(seq / TWO_32), 12);
  header.writeUInt32LE(grainSize, 16);
  const parts: Buffer[] = [header];
  for (const e of entries) {
    const h = Buffer.alloc(4);
    h[0] = e.tag;
    h[1] = e.key.length;
    h.writeUInt16LE(e.value.length, 2);
    parts.push(h, e.key, e.value);
  }
  const trailer = Buffer.alloc(13);
  trailer[0] = 0xff;
  trailer.writeUInt32LE(entries.length % TWO_32, 1);
  trailer.writeUInt32LE(Math.floor(entries.length / TWO_32), 5);
  parts.push(trailer.subarray(0, 9));
  const body = Buffer.concat(parts);
  trailer.writeUInt32LE(crc32c(body) >>> 0, 9);
  return Buffer.concat([body, trailer.subarray(9)]);
}

/**
 * Rewrites the map log in `dir` as the old build would have written the same history: every
 * segment's frames as version 1 (write fingerprints lengthened by `fullOf`), every checkpoint as
 * "SMXCKPT1" with 32-byte fingerprints in `map` and `mapold` values and the format marker of
 * the same layout with 32-byte fingerprints (5 → 3, 6 → 4). Returns the frames rewritten.
 */
export async function downgradeMapLog(
  dir: string,
  fullOf: (short: Buffer) => Buffer,
): Promise<{ frames: number; checkpoints: number }> {
  const long = (f: Buffer): Buffer => {
    const full = fullOf(f.subarray(0, FINGERPRINT_BYTES));
    if (full.length !== 32 || !full.subarray(0, FINGERPRINT_BYTES).equals(f)) {
      throw new Error(`no full fingerprint for ${f.toString("hex")}`);
    }
    return full;
  };
  let frames = 0;
  let checkpoints = 0;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (/^[0-9a-f]{16}\.log$/.test(name)) {
      const dec = new FrameDecoder();
      const out: Buffer[] = [];
      for (const f of dec.push(readFileSync(path))) {
        const rec = decodePayload(f.op, f.payload, f.version);
        const old: MapRecord =
          rec.op === "write"
            ? {
                ...rec,
                grains: rec.grains.map((g) => ({
                  grain: g.grain,
                  fingerprint: g.fingerprint && long(g.fingerprint),
                })),
              }
            : rec;
        out.push(encodeLegacyFrame(f.seq, old));
        frames++;
      }
      if (dec.finish() !== "end") throw new Error(`${path}: not a clean log segment`);
      writeFileSync(path, Buffer.concat(out));
    } else if (/^checkpoint-[0-9a-f]{16}\.ckpt$/.test(name)) {
      const { grainSize } = await verifyCheckpoint(path);
      const entries: { tag: number; key: Buffer; value: Buffer }[] = [];
      const { seq } = await readCheckpoint(path, async (batch) => {
        for (const e of batch) {
          let value = e.value;
          if (e.tag === CheckpointTag.map || e.tag === CheckpointTag.mapold) {
            value = Buffer.concat([
              long(e.value.subarray(0, FINGERPRINT_BYTES)),
              e.value.subarray(FINGERPRINT_BYTES),
            ]);
          } else if (e.tag === CheckpointTag.meta && e.key.toString("latin1") === "format") {
            const f = readU32(e.value);
            value = u32Value(
              f === META_FORMAT_VERSION
                ? LONG_FINGERPRINT_FORMATS.plain
                : LONG_FINGERPRINT_FORMATS.snapshots,
            );
          }
          entries.push({ tag: e.tag, key: e.key, value });
        }
      });
      rmSync(path);
      writeFileSync(path, encodeLegacyCheckpoint(seq, grainSize, entries));
      checkpoints++;
    }
  }
  return { frames, checkpoints };
}
