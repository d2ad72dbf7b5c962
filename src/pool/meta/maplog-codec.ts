/**
 * The map log's record framing and payloads (README.md "Map log"): pure functions over Buffers.
 *
 * Frame (little-endian): magic u16 0x4c4d ("ML") · version u8 (2) · op u8 · payload length u32 ·
 * seq u64 · payload · CRC32C u32 of everything before it. 20 bytes of framing per record.
 *
 * Version 2 `write` payloads carry 16-byte fingerprints (codec.ts FINGERPRINT_BYTES); version 1,
 * written before the metadata cut fingerprints to 16 bytes, carries 32-byte ones: still read (so
 * that `sanmux pool rebuild` converts an older pool), each cut to its first 16 bytes. The other
 * payloads are the same in both versions. A log may hold both (a rebuild appends version 2 frames
 * after the version 1 ones).
 *
 * A record is the parameters of one map transaction (one LMDB child transaction of a map
 * mutation): replaying it runs the same transaction body on the same state, so the maps come out
 * identical (meta/replay.ts).
 */
import { crc32c } from "@node-rs/crc32";
import { FINGERPRINT_BYTES, FULL_FINGERPRINT_BYTES } from "./codec.js";

export const FRAME_MAGIC = 0x4c4d;
/** What this build writes: 16-byte fingerprints. */
export const FRAME_VERSION = 2;
/** Frames of 32-byte fingerprints: read (cut to 16), never written. */
export const LEGACY_FRAME_VERSION = 1;
export const FRAME_HEADER_BYTES = 16;
export const FRAME_CRC_BYTES = 4;
/** No transaction logs more than this (a 16384-grain write is 0.5 MiB). */
export const MAX_PAYLOAD_BYTES = 64 * 1024 * 1024;
const TWO_32 = 2 ** 32;

export const MapOp = {
  volumeCreate: 1,
  write: 2,
  unmap: 3,
  copy: 4,
  snapshotCreate: 5,
  snapshotMarkDelete: 6,
  snapshotDeleteStep: 7,
  volumeRetire: 8,
  volumeReleaseOld: 9,
  volumeForget: 10,
} as const;

/** One grain of a write: a fingerprint, or undefined for a hole. */
export interface LoggedGrain {
  readonly grain: number;
  readonly fingerprint: Buffer | undefined;
}

export type MapRecord =
  | { readonly op: "volumeCreate"; readonly volume: number; readonly domainId: number }
  | { readonly op: "write"; readonly volume: number; readonly grains: readonly LoggedGrain[] }
  /** Every mapped grain in [first, end) became a hole. */
  | { readonly op: "unmap"; readonly volume: number; readonly first: number; readonly end: number }
  /** dst[dstFirst, +count) := src[srcFirst, +count) (head or snapshot), read whole first. */
  | {
      readonly op: "copy";
      readonly srcVolume: number;
      readonly snapshot: number | undefined;
      readonly srcFirst: number;
      readonly dstVolume: number;
      readonly dstFirst: number;
      readonly count: number;
    }
  | { readonly op: "snapshotCreate"; readonly volume: number; readonly snapshot: number }
  | { readonly op: "snapshotMarkDelete"; readonly volume: number; readonly snapshot: number }
  | {
      readonly op: "snapshotDeleteStep";
      readonly volume: number;
      readonly snapshot: number;
      readonly batch: number;
      readonly cursor: Buffer;
    }
  | { readonly op: "volumeRetire"; readonly volume: number }
  | { readonly op: "volumeReleaseOld"; readonly volume: number; readonly batch: number }
  | { readonly op: "volumeForget"; readonly volume: number };

// ---------------------------------------------------------------------------------------------
// Payload writer / reader

class Writer {
  private buf = Buffer.allocUnsafe(256);
  length = 0;

  private room(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.length + n));
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }

  u8(n: number): void {
    this.room(1);
    this.buf[this.length++] = n;
  }

  u32(n: number): void {
    this.room(4);
    this.buf.writeUInt32LE(n >>> 0, this.length);
    this.length += 4;
  }

  /** LEB128 of a non-negative safe integer. */
  varint(n: number): void {
    this.room(8);
    let v = n;
    while (v >= 0x80) {
      this.buf[this.length++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.length++] = v;
  }

  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }

  result(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

export class PayloadError extends Error {}

class Reader {
  at = 0;
  constructor(private readonly buf: Buffer) {}

  private need(n: number): void {
    if (this.at + n > this.buf.length) throw new PayloadError("payload truncated");
  }

  u8(): number {
    this.need(1);
    return this.buf[this.at++]!;
  }

  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.at);
    this.at += 4;
    return v;
  }

  varint(): number {
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      v += (b & 0x7f) * mul;
      if (b < 0x80) {
        if (!Number.isSafeInteger(v)) throw new PayloadError("varint out of range");
        return v;
      }
      mul *= 0x80;
    }
    throw new PayloadError("varint too long");
  }

  bytes(n: number): Buffer {
    this.need(n);
    const b = Buffer.from(this.buf.subarray(this.at, this.at + n));
    this.at += n;
    return b;
  }

  get done(): boolean {
    return this.at === this.buf.length;
  }
}

/** The op byte and payload of a record. */
export function encodePayload(rec: MapRecord): { op: number; payload: Buffer } {
  const w = new Writer();
  switch (rec.op) {
    case "volumeCreate":
      w.u32(rec.volume);
      w.u32(rec.domainId);
      return { op: MapOp.volumeCreate, payload: w.result() };
    case "write": {
      // Runs of consecutive grains: first · count · bitmap (1 = mapped) · the mapped ones'
      // fingerprints (16 bytes each). One grain costs its fingerprint plus ~3 bytes; a run of n
      // grains ≈ 16 n.
      w.u32(rec.volume);
      const g = rec.grains;
      let i = 0;
      while (i < g.length) {
        let j = i + 1;
        while (j < g.length && g[j]!.grain === g[j - 1]!.grain + 1) j++;
        const count = j - i;
        w.varint(g[i]!.grain);
        w.varint(count);
        const bitmap = Buffer.alloc(Math.ceil(count / 8));
        for (let k = 0; k < count; k++) if (g[i + k]!.fingerprint) bitmap[k >> 3]! |= 1 << (k & 7);
        w.bytes(bitmap);
        for (let k = 0; k < count; k++) {
          const f = g[i + k]!.fingerprint;
          if (f) w.bytes(f.subarray(0, FINGERPRINT_BYTES));
        }
        i = j;
      }
      return { op: MapOp.write, payload: w.result() };
    }
    case "unmap":
      w.u32(rec.volume);
      w.varint(rec.first);
      w.varint(rec.end - rec.first);
      return { op: MapOp.unmap, payload: w.result() };
    case "copy":
      w.u32(rec.srcVolume);
      w.u8(rec.snapshot === undefined ? 0 : 1);
      if (rec.snapshot !== undefined) w.u32(rec.snapshot);
      w.varint(rec.srcFirst);
      w.u32(rec.dstVolume);
      w.varint(rec.dstFirst);
      w.varint(rec.count);
      return { op: MapOp.copy, payload: w.result() };
    case "snapshotCreate":
    case "snapshotMarkDelete":
      w.u32(rec.volume);
      w.u32(rec.snapshot);
      return { op: MapOp[rec.op], payload: w.result() };
    case "snapshotDeleteStep":
      w.u32(rec.volume);
      w.u32(rec.snapshot);
      w.varint(rec.batch);
      w.varint(rec.cursor.length);
      w.bytes(rec.cursor);
      return { op: MapOp.snapshotDeleteStep, payload: w.result() };
    case "volumeRetire":
    case "volumeForget":
      w.u32(rec.volume);
      return { op: MapOp[rec.op], payload: w.result() };
    case "volumeReleaseOld":
      w.u32(rec.volume);
      w.varint(rec.batch);
      return { op: MapOp.volumeReleaseOld, payload: w.result() };
  }
}

/**
 * Decodes a payload of a frame of `version` (default: the current one); throws PayloadError when
 * it does not decode exactly. Fingerprints come out FINGERPRINT_BYTES long whatever the version.
 */
export function decodePayload(op: number, payload: Buffer, version = FRAME_VERSION): MapRecord {
  if (version !== FRAME_VERSION && version !== LEGACY_FRAME_VERSION) {
    throw new PayloadError(`unknown frame version ${version}`);
  }
  const fpBytes = version === FRAME_VERSION ? FINGERPRINT_BYTES : FULL_FINGERPRINT_BYTES;
  const r = new Reader(payload);
  let rec: MapRecord;
  switch (op) {
    case MapOp.volumeCreate:
      rec = { op: "volumeCreate", volume: r.u32(), domainId: r.u32() };
      break;
    case MapOp.write: {
      const volume = r.u32();
      const grains: LoggedGrain[] = [];
      while (!r.done) {
        const first = r.varint();
        const count = r.varint();
        if (count === 0 || count > payload.length * 8) throw new PayloadError("bad run length");
        const bitmap = r.bytes(Math.ceil(count / 8));
        for (let k = 0; k < count; k++) {
          const mapped = (bitmap[k >> 3]! >> (k & 7)) & 1;
          grains.push({
            grain: first + k,
            fingerprint: mapped ? r.bytes(fpBytes).subarray(0, FINGERPRINT_BYTES) : undefined,
          });
        }
      }
      rec = { op: "write", volume, grains };
      break;
    }
    case MapOp.unmap: {
      const volume = r.u32();
      const first = r.varint();
      rec = { op: "unmap", volume, first, end: first + r.varint() };
      break;
    }
    case MapOp.copy: {
      const srcVolume = r.u32();
      const hasSnap = r.u8();
      if (hasSnap > 1) throw new PayloadError("bad snapshot flag");
      const snapshot = hasSnap ? r.u32() : undefined;
      rec = {
        op: "copy",
        srcVolume,
        snapshot,
        srcFirst: r.varint(),
        dstVolume: r.u32(),
        dstFirst: r.varint(),
        count: r.varint(),
      };
      break;
    }
    case MapOp.snapshotCreate:
      rec = { op: "snapshotCreate", volume: r.u32(), snapshot: r.u32() };
      break;
    case MapOp.snapshotMarkDelete:
      rec = { op: "snapshotMarkDelete", volume: r.u32(), snapshot: r.u32() };
      break;
    case MapOp.snapshotDeleteStep: {
      const volume = r.u32();
      const snapshot = r.u32();
      const batch = r.varint();
      rec = { op: "snapshotDeleteStep", volume, snapshot, batch, cursor: r.bytes(r.varint()) };
      break;
    }
    case MapOp.volumeRetire:
      rec = { op: "volumeRetire", volume: r.u32() };
      break;
    case MapOp.volumeReleaseOld:
      rec = { op: "volumeReleaseOld", volume: r.u32(), batch: r.varint() };
      break;
    case MapOp.volumeForget:
      rec = { op: "volumeForget", volume: r.u32() };
      break;
    default:
      throw new PayloadError(`unknown op ${op}`);
  }
  if (!r.done) throw new PayloadError("trailing bytes in payload");
  return rec;
}

// ---------------------------------------------------------------------------------------------
// Frames

export function encodeFrame(seq: number, rec: MapRecord): Buffer {
  const { op, payload } = encodePayload(rec);
  return frameOf(seq, op, payload, FRAME_VERSION);
}

/** The frame around an encoded payload (a test fixture writes LEGACY_FRAME_VERSION with it). */
export function frameOf(seq: number, op: number, payload: Buffer, version: number): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length + FRAME_CRC_BYTES);
  frame.writeUInt16LE(FRAME_MAGIC, 0);
  frame[2] = version;
  frame[3] = op;
  frame.writeUInt32LE(payload.length, 4);
  frame.writeUInt32LE(seq % TWO_32, 8);
  frame.writeUInt32LE(Math.floor(seq / TWO_32), 12);
  payload.copy(frame, FRAME_HEADER_BYTES);
  const end = FRAME_HEADER_BYTES + payload.length;
  frame.writeUInt32LE(crc32c(frame.subarray(0, end)), end);
  return frame;
}

export interface Frame {
  readonly seq: number;
  /** FRAME_VERSION, or LEGACY_FRAME_VERSION (32-byte fingerprints). */
  readonly version: number;
  readonly op: number;
  readonly payload: Buffer;
  /** Byte offset of the frame in the stream, and its length. */
  readonly offset: number;
  readonly length: number;
}

/** Why a decoder stopped: clean end, an incomplete last frame, or bytes that are no frame. */
export type StopReason = "end" | "torn" | "corrupt";

/**
 * Incremental frame decoder over a byte stream cut anywhere (file reads of any size). After the
 * first bad frame it stops: `stopped` says why, `goodBytes` is the length of the valid prefix.
 */
export class FrameDecoder {
  private carry: Buffer = Buffer.alloc(0);
  private base = 0;
  goodBytes = 0;
  stopped: "corrupt" | undefined;
  detail = "";

  push(chunk: Buffer): Frame[] {
    const out: Frame[] = [];
    if (this.stopped) return out;
    let buf = this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk;
    let at = 0;
    for (;;) {
      if (buf.length - at < FRAME_HEADER_BYTES) break;
      const version = buf[at + 2];
      if (
        buf.readUInt16LE(at) !== FRAME_MAGIC ||
        (version !== FRAME_VERSION && version !== LEGACY_FRAME_VERSION)
      ) {
        this.fail("bad magic or version");
        break;
      }
      const len = buf.readUInt32LE(at + 4);
      if (len > MAX_PAYLOAD_BYTES) {
        this.fail(`payload length ${len}`);
        break;
      }
      const total = FRAME_HEADER_BYTES + len + FRAME_CRC_BYTES;
      if (buf.length - at < total) break;
      const end = at + FRAME_HEADER_BYTES + len;
      if (crc32c(buf.subarray(at, end)) !== buf.readUInt32LE(end)) {
        this.fail("CRC mismatch");
        break;
      }
      out.push({
        seq: buf.readUInt32LE(at + 8) + buf.readUInt32LE(at + 12) * TWO_32,
        version,
        op: buf[at + 3]!,
        payload: Buffer.from(buf.subarray(at + FRAME_HEADER_BYTES, end)),
        offset: this.base + at,
        length: total,
      });
      at += total;
      this.goodBytes = this.base + at;
    }
    if (this.stopped) {
      this.carry = Buffer.alloc(0);
      return out;
    }
    buf = buf.subarray(at);
    this.base += at;
    this.carry = Buffer.from(buf);
    return out;
  }

  /** At the end of the stream: "end", or why the bytes after `goodBytes` are not frames. */
  finish(): StopReason {
    if (this.stopped) return "corrupt";
    return this.carry.length === 0 ? "end" : "torn";
  }

  private fail(detail: string): void {
    this.stopped = "corrupt";
    this.detail = detail;
  }
}
