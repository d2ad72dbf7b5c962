/**
 * Map log checkpoints (README.md "Map log"): the raw entries of `map`, `mapold`, `mapdeath`,
 * `snapshot` and `volume` (and the `format` marker), read from ONE LMDB read snapshot together
 * with the last applied map log seq N of that snapshot. Rebuild loads the newest complete
 * checkpoint and replays the records after N.
 *
 * File `checkpoint-<N, 16 hex>.ckpt`, written as `.tmp`, fdatasynced, renamed, directory synced:
 *   header  "SMXCKPT2" · N u64 LE · grain size u32 LE · 0 u32 LE          (24 bytes)
 *   entry   db tag u8 · key length u8 · value length u16 LE · key · value  (repeated)
 *   trailer 0xFF · entries u64 LE · CRC32C u32 LE of every byte before it (13 bytes)
 * A map entry of a 4 KiB grain costs 4 + 8 + 16 = 28 bytes (32 with a birth).
 *
 * "SMXCKPT1" checkpoints, written before the metadata cut fingerprints to 16 bytes, hold the
 * entries of formats 3 and 4 (32-byte fingerprints in `map` and `mapold` values): still read, and
 * converted entry by entry as they are read (`fromLongFingerprints`), so that `sanmux pool
 * rebuild` turns an older pool's log into a current store.
 */

import { open, rm } from "node:fs/promises";
import { join } from "node:path";
import { crc32c } from "@node-rs/crc32";
import {
  currentFormatOf,
  FINGERPRINT_BYTES,
  FULL_FINGERPRINT_BYTES,
  keyAfter,
  readU32,
  readU64,
  u32Value,
  writeU64,
} from "./codec.js";
import type { BinDb, MetaDbs } from "./dbs.js";
import { MetaError, MetaErrorCode } from "./errors.js";
import { type CheckpointFile, checkpointName, type MapLog, renameDurably } from "./maplog.js";

const MAGIC = Buffer.from("SMXCKPT2", "latin1");
/** Checkpoints of 32-byte fingerprints (formats 3 and 4): read and converted, never written. */
const LEGACY_MAGIC = Buffer.from("SMXCKPT1", "latin1");
const HEADER_BYTES = 24;
const TRAILER_TAG = 0xff;
const TRAILER_BYTES = 13;
const TWO_32 = 2 ** 32;

/** The `meta` key holding the last map log seq applied to the environment (u64 BE). */
export const MAPLOG_SEQ_KEY = Buffer.from("maplog:seq", "latin1");
const FORMAT_KEY = Buffer.from("format", "latin1");

export const CheckpointTag = {
  map: 1,
  mapold: 2,
  mapdeath: 3,
  snapshot: 4,
  volume: 5,
  meta: 6,
} as const;

function tables(dbs: MetaDbs): [number, BinDb][] {
  return [
    [CheckpointTag.map, dbs.map],
    [CheckpointTag.mapold, dbs.mapold],
    [CheckpointTag.mapdeath, dbs.mapdeath],
    [CheckpointTag.snapshot, dbs.snapshots],
    [CheckpointTag.volume, dbs.volumes],
  ];
}

export function dbOfTag(dbs: MetaDbs, tag: number): BinDb | undefined {
  if (tag === CheckpointTag.meta) return dbs.meta;
  return tables(dbs).find(([t]) => t === tag)?.[1];
}

export function encodeSeq(seq: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  writeU64(b, 0, seq);
  return b;
}

export function readAppliedSeq(dbs: MetaDbs, ro?: Parameters<BinDb["get"]>[1]): number {
  const v = dbs.meta.get(MAPLOG_SEQ_KEY, ro);
  return v && v.length === 8 ? readU64(v, 0) : 0;
}

export interface CheckpointOptions {
  readonly noSync?: boolean;
  /** Entries read per batch (the writer yields to I/O between batches). Default 16384. */
  readonly batchEntries?: number;
  /** Polled between batches: stop (and delete the partial file) when it returns true. */
  readonly stopped?: () => boolean;
}

export interface CheckpointResult extends CheckpointFile {
  readonly entries: number;
  readonly durationMs: number;
}

/**
 * Writes a checkpoint of the current state. The next append starts a new segment, so that the
 * segments before it can go once the checkpoint is durable; segments whose records are all ≤ N
 * and older checkpoints are deleted at the end. Returns undefined if stopped.
 */
export async function writeCheckpoint(
  dbs: MetaDbs,
  log: MapLog,
  grainSize: number,
  options: CheckpointOptions = {},
): Promise<CheckpointResult | undefined> {
  const t0 = Date.now();
  const batch = options.batchEntries ?? 16384;
  log.rotate();
  log.bytesSinceCheckpoint = 0;
  const txn = dbs.root.useReadTransaction();
  let seq: number;
  let tmp: string;
  let path: string;
  let entries = 0;
  let bytes = 0;
  try {
    const ro = { transaction: txn };
    seq = readAppliedSeq(dbs, ro);
    path = join(log.dir, checkpointName(seq));
    tmp = `${path}.tmp`;
    const fh = await open(tmp, "w");
    let crc = 0;
    let stopped = false;
    try {
      const write = async (buf: Buffer) => {
        crc = crc32c(buf, crc);
        let done = 0;
        while (done < buf.length) {
          const { bytesWritten } = await fh.write(buf, done, buf.length - done, bytes + done);
          done += bytesWritten;
        }
        bytes += buf.length;
      };
      const header = Buffer.alloc(HEADER_BYTES);
      MAGIC.copy(header, 0);
      header.writeUInt32LE(seq % TWO_32, 8);
      header.writeUInt32LE(Math.floor(seq / TWO_32), 12);
      header.writeUInt32LE(grainSize, 16);
      await write(header);
      const encode = (tag: number, key: Buffer, value: Buffer, parts: Buffer[]) => {
        const e = Buffer.allocUnsafe(4 + key.length + value.length);
        e[0] = tag;
        e[1] = key.length;
        e.writeUInt16LE(value.length, 2);
        key.copy(e, 4);
        value.copy(e, 4 + key.length);
        parts.push(e);
        entries++;
      };
      outer: for (const [tag, db] of tables(dbs)) {
        let start: Buffer | undefined;
        for (;;) {
          if (options.stopped?.()) {
            stopped = true;
            break outer;
          }
          const parts: Buffer[] = [];
          let last: Buffer | undefined;
          let n = 0;
          for (const { key, value } of db.getRange({
            ...(start ? { start } : {}),
            limit: batch,
            transaction: txn,
          })) {
            encode(tag, key, value, parts);
            last = key;
            n++;
          }
          if (parts.length > 0) await write(Buffer.concat(parts));
          if (n < batch || !last) break;
          start = keyAfter(last);
        }
      }
      if (!stopped) {
        const format = dbs.meta.get(FORMAT_KEY, ro);
        const parts: Buffer[] = [];
        if (format) encode(CheckpointTag.meta, FORMAT_KEY, format, parts);
        if (parts.length > 0) await write(Buffer.concat(parts));
        const trailer = Buffer.alloc(TRAILER_BYTES);
        trailer[0] = TRAILER_TAG;
        trailer.writeUInt32LE(entries % TWO_32, 1);
        trailer.writeUInt32LE(Math.floor(entries / TWO_32), 5);
        crc = crc32c(trailer.subarray(0, 9), crc);
        trailer.writeUInt32LE(crc >>> 0, 9);
        let done = 0;
        while (done < trailer.length) {
          const r = await fh.write(trailer, done, trailer.length - done, bytes + done);
          done += r.bytesWritten;
        }
        bytes += trailer.length;
        if (!options.noSync) await fh.datasync();
      }
    } finally {
      await fh.close();
    }
    if (stopped) {
      await rm(tmp, { force: true });
      return undefined;
    }
  } finally {
    txn.done();
  }
  await renameDurably(tmp, path, log.dir, options.noSync === true);
  const file: CheckpointFile = { path, seq, bytes };
  await log.retire(file);
  return { ...file, entries, durationMs: Date.now() - t0 };
}

/** Reads a whole checkpoint file's bytes in chunks. */
async function* chunks(path: string): AsyncGenerator<Buffer> {
  const fh = await open(path, "r");
  try {
    const size = (await fh.stat()).size;
    let pos = 0;
    while (pos < size) {
      const buf = Buffer.allocUnsafe(Math.min(4 * 1024 * 1024, size - pos));
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) break;
      pos += bytesRead;
      yield buf.subarray(0, bytesRead);
    }
  } finally {
    await fh.close();
  }
}

/**
 * Checks a checkpoint's header, trailer and CRC; returns its seq, grain size and whether it is a
 * legacy one (32-byte fingerprints).
 */
export async function verifyCheckpoint(
  path: string,
): Promise<{ seq: number; grainSize: number; legacy: boolean }> {
  const bad = (why: string) =>
    new MetaError(MetaErrorCode.MapLogCorrupt, `checkpoint ${path} is damaged: ${why}`);
  let crc = 0;
  let head = Buffer.alloc(0);
  let tail = Buffer.alloc(0);
  for await (const c of chunks(path)) {
    if (head.length < HEADER_BYTES) head = Buffer.concat([head, c]).subarray(0, HEADER_BYTES);
    // CRC over everything but the last 4 bytes: feed all but what may be the CRC.
    const all = Buffer.concat([tail, c]);
    const keep = Math.min(all.length, 4);
    crc = crc32c(all.subarray(0, all.length - keep), crc);
    tail = Buffer.from(all.subarray(all.length - keep));
  }
  const magic = head.subarray(0, 8);
  const legacy = magic.equals(LEGACY_MAGIC);
  if (head.length < HEADER_BYTES || !(legacy || magic.equals(MAGIC))) throw bad("no header");
  if (tail.length < 4) throw bad("too short");
  if (crc >>> 0 !== tail.readUInt32LE(0)) throw bad("CRC mismatch (incomplete or corrupt)");
  const seq = head.readUInt32LE(8) + head.readUInt32LE(12) * TWO_32;
  return { seq, grainSize: head.readUInt32LE(16), legacy };
}

/**
 * An entry of a legacy checkpoint as the current layout has it: `map` values (fingerprint[32]
 * · birth u32?) and `mapold` values (fingerprint[32] · death u32) keep the fingerprint's first 16
 * bytes; the format marker becomes its 16-byte equivalent (codec.ts currentFormatOf); keys and
 * the other tables are the same in both. Throws RangeError on a value of no legacy length.
 */
export function fromLongFingerprints(
  tag: number,
  key: Buffer,
  value: Buffer,
): { key: Buffer; value: Buffer } {
  const cut = (rest: number): Buffer => {
    if (value.length !== FULL_FINGERPRINT_BYTES + rest) {
      throw new RangeError(`legacy entry of table ${tag} has a ${value.length}-byte value`);
    }
    return Buffer.concat([
      value.subarray(0, FINGERPRINT_BYTES),
      value.subarray(FULL_FINGERPRINT_BYTES),
    ]);
  };
  if (tag === CheckpointTag.map)
    return { key, value: cut(value.length > FULL_FINGERPRINT_BYTES ? 4 : 0) };
  if (tag === CheckpointTag.mapold) return { key, value: cut(4) };
  if (tag === CheckpointTag.meta && key.equals(FORMAT_KEY) && value.length === 4) {
    return { key, value: u32Value(currentFormatOf(readU32(value))) };
  }
  return { key, value };
}

/**
 * Parses a verified checkpoint, calling `onEntries` with batches of entries in file order (each
 * table's keys ascending), in the current layout (a legacy checkpoint's entries converted:
 * fromLongFingerprints). Returns the entry count (checked against the trailer).
 */
export async function readCheckpoint(
  path: string,
  onEntries: (entries: { tag: number; key: Buffer; value: Buffer }[]) => Promise<void>,
  batch = 16384,
): Promise<{ seq: number; entries: number }> {
  const bad = (why: string) =>
    new MetaError(MetaErrorCode.MapLogCorrupt, `checkpoint ${path} is damaged: ${why}`);
  const { seq, legacy } = await verifyCheckpoint(path);
  let carry = Buffer.alloc(0);
  let headerSkipped = false;
  let count = 0;
  let trailerEntries: number | undefined;
  let out: { tag: number; key: Buffer; value: Buffer }[] = [];
  for await (const c of chunks(path)) {
    let buf = carry.length > 0 ? Buffer.concat([carry, c]) : c;
    if (!headerSkipped) {
      if (buf.length < HEADER_BYTES) {
        carry = Buffer.from(buf);
        continue;
      }
      buf = buf.subarray(HEADER_BYTES);
      headerSkipped = true;
    }
    let at = 0;
    while (trailerEntries === undefined && buf.length - at >= 1) {
      if (buf[at] === TRAILER_TAG) {
        if (buf.length - at < TRAILER_BYTES) break;
        trailerEntries = buf.readUInt32LE(at + 1) + buf.readUInt32LE(at + 5) * TWO_32;
        at += TRAILER_BYTES;
        break;
      }
      if (buf.length - at < 4) break;
      const kl = buf[at + 1]!;
      const vl = buf.readUInt16LE(at + 2);
      if (buf.length - at < 4 + kl + vl) break;
      const tag = buf[at]!;
      const key = Buffer.from(buf.subarray(at + 4, at + 4 + kl));
      const value = Buffer.from(buf.subarray(at + 4 + kl, at + 4 + kl + vl));
      if (!legacy) out.push({ tag, key, value });
      else {
        try {
          out.push({ tag, ...fromLongFingerprints(tag, key, value) });
        } catch (err) {
          throw bad((err as Error).message);
        }
      }
      count++;
      at += 4 + kl + vl;
      if (out.length >= batch) {
        await onEntries(out);
        out = [];
      }
    }
    carry = Buffer.from(buf.subarray(at));
  }
  if (out.length > 0) await onEntries(out);
  if (trailerEntries === undefined || carry.length > 0) throw bad("no trailer where expected");
  if (trailerEntries !== count) throw bad(`trailer says ${trailerEntries} entries, found ${count}`);
  return { seq, entries: count };
}
