/**
 * Map log checkpoints (README.md "Map log"): the raw entries of `map`, `mapold`, `mapdeath`,
 * `snapshot` and `volume` (and the `format` marker), read from ONE LMDB read snapshot together
 * with the last applied map log seq N of that snapshot. Rebuild loads the newest complete
 * checkpoint and replays the records after N.
 *
 * File `checkpoint-<N, 16 hex>.ckpt`, written as `.tmp`, fdatasynced, renamed, directory synced:
 *   header  "SMXCKPT1" · N u64 LE · grain size u32 LE · 0 u32 LE          (24 bytes)
 *   entry   db tag u8 · key length u8 · value length u16 LE · key · value  (repeated)
 *   trailer 0xFF · entries u64 LE · CRC32C u32 LE of every byte before it (13 bytes)
 * A map entry of a 4 KiB grain costs 4 + 8 + 32 = 44 bytes (48 with a birth).
 */

import { open, rm } from "node:fs/promises";
import { join } from "node:path";
import { crc32c } from "@node-rs/crc32";
import { keyAfter, readU64, writeU64 } from "./codec.js";
import type { BinDb, MetaDbs } from "./dbs.js";
import { MetaError, MetaErrorCode } from "./errors.js";
import { type CheckpointFile, checkpointName, type MapLog, renameDurably } from "./maplog.js";

const MAGIC = Buffer.from("SMXCKPT1", "latin1");
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

/** Checks a checkpoint's header, trailer and CRC; returns its seq and entry count. */
export async function verifyCheckpoint(path: string): Promise<{ seq: number; grainSize: number }> {
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
  if (head.length < HEADER_BYTES || !head.subarray(0, 8).equals(MAGIC)) throw bad("no header");
  if (tail.length < 4) throw bad("too short");
  if (crc >>> 0 !== tail.readUInt32LE(0)) throw bad("CRC mismatch (incomplete or corrupt)");
  const seq = head.readUInt32LE(8) + head.readUInt32LE(12) * TWO_32;
  return { seq, grainSize: head.readUInt32LE(16) };
}

/**
 * Parses a verified checkpoint, calling `onEntries` with batches of entries in file order (each
 * table's keys ascending). Returns the entry count (checked against the trailer).
 */
export async function readCheckpoint(
  path: string,
  onEntries: (entries: { tag: number; key: Buffer; value: Buffer }[]) => Promise<void>,
  batch = 16384,
): Promise<{ seq: number; entries: number }> {
  const bad = (why: string) =>
    new MetaError(MetaErrorCode.MapLogCorrupt, `checkpoint ${path} is damaged: ${why}`);
  const { seq } = await verifyCheckpoint(path);
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
      out.push({
        tag: buf[at]!,
        key: Buffer.from(buf.subarray(at + 4, at + 4 + kl)),
        value: Buffer.from(buf.subarray(at + 4 + kl, at + 4 + kl + vl)),
      });
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
