/**
 * The map log (README.md "Map log"): an append-only redo log of every map transaction, in
 * segment files `<first seq, 16 hex>.log` of a directory, next to checkpoints
 * `checkpoint-<seq, 16 hex>.ckpt` (checkpoint.ts). With the newest checkpoint it is what
 * `sanmux pool rebuild` rebuilds the block maps from when the LMDB environment is lost.
 *
 * Appends are synchronous writes (to the page cache) made inside the map transaction's callback,
 * so that a process crash never leaves the LMDB environment with a transaction the log lacks;
 * `sync()` is a group commit (one fdatasync for every append before it), scheduled after every
 * append and awaited by MetaStore.flush(). Frames: maplog-codec.ts.
 */
import {
  closeSync,
  fdatasync,
  fstatSync,
  ftruncateSync,
  openSync,
  rmSync,
  writeSync,
} from "node:fs";
import { mkdir, open, readdir, rename, rm, stat, truncate } from "node:fs/promises";
import { join } from "node:path";
import { MetaError, MetaErrorCode } from "./errors.js";
import {
  decodePayload,
  encodeFrame,
  type Frame,
  FrameDecoder,
  type MapRecord,
} from "./maplog-codec.js";

export const SEGMENT_BYTES = 64 * 1024 * 1024;
const READ_CHUNK = 1024 * 1024;
const SEGMENT_RE = /^([0-9a-f]{16})\.log$/;
const CHECKPOINT_RE = /^checkpoint-([0-9a-f]{16})\.ckpt$/;

export interface MapLogLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface MapLogOptions {
  /** Skip fdatasync (tests and benchmarks). */
  readonly noSync?: boolean;
  /** Rotate segments beyond this size. Default 64 MiB. */
  readonly segmentBytes?: number;
  readonly logger?: MapLogLogger | undefined;
}

export interface Segment {
  readonly path: string;
  readonly firstSeq: number;
  /** The last record's seq (firstSeq − 1 when empty). */
  lastSeq: number;
  bytes: number;
}

export interface CheckpointFile {
  readonly path: string;
  readonly seq: number;
  readonly bytes: number;
}

export function hex16(n: number): string {
  return n.toString(16).padStart(16, "0");
}

export function segmentName(firstSeq: number): string {
  return `${hex16(firstSeq)}.log`;
}

export function checkpointName(seq: number): string {
  return `checkpoint-${hex16(seq)}.ckpt`;
}

/** Reads a file's frames from `offset`; returns them with the decoder's verdict. */
export async function readFrames(
  path: string,
  onFrames: (frames: Frame[]) => void | Promise<void>,
): Promise<{
  reason: "end" | "torn" | "corrupt";
  goodBytes: number;
  size: number;
  detail: string;
}> {
  const fh = await open(path, "r");
  try {
    const size = (await fh.stat()).size;
    const dec = new FrameDecoder();
    const buf = Buffer.allocUnsafe(READ_CHUNK);
    let pos = 0;
    while (pos < size) {
      const { bytesRead } = await fh.read(buf, 0, READ_CHUNK, pos);
      if (bytesRead === 0) break;
      pos += bytesRead;
      const frames = dec.push(Buffer.from(buf.subarray(0, bytesRead)));
      if (frames.length > 0) await onFrames(frames);
      if (dec.stopped) break;
    }
    return { reason: dec.finish(), goodBytes: dec.goodBytes, size, detail: dec.detail };
  } finally {
    await fh.close();
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export class MapLog {
  readonly segments: Segment[] = [];
  checkpoints: CheckpointFile[] = [];
  private fd: number | undefined;
  private current: Segment | undefined;
  /** Rotated segments' fds to fdatasync and close at the next sync. */
  private toClose: number[] = [];
  private dirDirty = false;
  private appendedSeq = 0;
  private syncedSeq = 0;
  private syncing: Promise<void> | undefined;
  private syncScheduled = false;
  private broken: Error | undefined;
  /** Until the first append or rotation, the last segment found at open may be continued. */
  private mayContinue = true;
  private readonly segmentBytes: number;
  /** Bytes appended since the last checkpoint began. */
  bytesSinceCheckpoint = 0;
  /** The current segment while another thread appends to it (`lend`). */
  private lent: { readonly fd: number; readonly bytes: number } | undefined;
  private rotateWanted = false;

  private constructor(
    readonly dir: string,
    private readonly options: MapLogOptions,
  ) {
    this.segmentBytes = options.segmentBytes ?? SEGMENT_BYTES;
  }

  /**
   * Opens (creating) the directory, lists checkpoints and segments, and checks every segment's
   * frames: a torn or corrupt tail of the last segment is cut (and logged); damage in an earlier
   * segment refuses to open (MapLogCorrupt), as does a seq out of order within a segment.
   */
  static async open(dir: string, options: MapLogOptions = {}): Promise<MapLog> {
    await mkdir(dir, { recursive: true });
    const log = new MapLog(dir, options);
    const names = (await readdir(dir)).sort();
    for (const name of names) {
      if (name.endsWith(".tmp")) {
        await rm(join(dir, name), { force: true });
        continue;
      }
      const c = CHECKPOINT_RE.exec(name);
      if (c) {
        const path = join(dir, name);
        log.checkpoints.push({
          path,
          seq: Number.parseInt(c[1]!, 16),
          bytes: (await stat(path)).size,
        });
      }
    }
    log.checkpoints.sort((a, b) => a.seq - b.seq);
    const segNames = names.filter((n) => SEGMENT_RE.test(n));
    for (const [i, name] of segNames.entries()) {
      const firstSeq = Number.parseInt(SEGMENT_RE.exec(name)![1]!, 16);
      const path = join(dir, name);
      const seg: Segment = { path, firstSeq, lastSeq: firstSeq - 1, bytes: 0 };
      let expect = firstSeq;
      let outOfOrder: string | undefined;
      let outOfOrderAt = 0;
      const r = await readFrames(path, (frames) => {
        for (const f of frames) {
          if (outOfOrder) return;
          if (f.seq !== expect) {
            outOfOrder = `seq ${f.seq} where ${expect} was expected`;
            outOfOrderAt = f.offset;
            return;
          }
          expect++;
          seg.lastSeq = f.seq;
        }
      });
      const last = i === segNames.length - 1;
      let good = r.goodBytes;
      let problem: string | undefined;
      if (outOfOrder) {
        good = outOfOrderAt;
        problem = outOfOrder;
      } else if (r.reason !== "end") {
        problem = r.reason === "torn" ? "incomplete last record" : r.detail;
      }
      if (problem !== undefined) {
        if (!last) {
          throw new MetaError(
            MetaErrorCode.MapLogCorrupt,
            `map log segment ${path} is damaged at byte ${good} (${problem}) and is not the last one`,
          );
        }
        await truncate(path, good);
        options.logger?.warn(
          { segment: path, cutAtByte: good, bytesCut: r.size - good, why: problem },
          "map log: cut a torn or damaged tail of the last segment",
        );
      }
      seg.bytes = good;
      log.segments.push(seg);
    }
    for (let i = 1; i < log.segments.length; i++) {
      const prev = log.segments[i - 1]!;
      if (prev.lastSeq >= log.segments[i]!.firstSeq) {
        throw new MetaError(
          MetaErrorCode.MapLogCorrupt,
          `map log segments ${prev.path} and ${log.segments[i]!.path} overlap`,
        );
      }
    }
    log.appendedSeq = log.syncedSeq = log.lastSeq;
    return log;
  }

  /** The seq of the last record in the log (0 if none); a checkpoint counts. */
  get lastSeq(): number {
    const seg = this.segments.at(-1);
    const fromSegments = seg ? seg.lastSeq : 0;
    return Math.max(fromSegments, this.checkpoints.at(-1)?.seq ?? 0);
  }

  get newestCheckpoint(): CheckpointFile | undefined {
    return this.checkpoints.at(-1);
  }

  /**
   * The first record missing after `seq` before the log's end (a gap: the maps are not
   * rebuildable from the log until a checkpoint covers it), or undefined.
   */
  gapAfter(seq: number): number | undefined {
    let expect = seq + 1;
    for (const s of this.segments) {
      if (s.lastSeq < expect) continue;
      if (s.firstSeq > expect) return expect;
      expect = s.lastSeq + 1;
    }
    return undefined;
  }

  /** Total bytes of segments. */
  get segmentBytesTotal(): number {
    return this.segments.reduce((n, s) => n + s.bytes, 0);
  }

  /**
   * Appends one record, synchronously, to the current segment (a new one at `seq` when there is
   * none, the current one is full, or `seq` does not follow its last record). Throws if the
   * write fails (the caller's transaction then aborts); the log stays usable only if the failed
   * bytes could be cut off again.
   */
  append(seq: number, rec: MapRecord): number {
    if (this.broken) throw this.broken;
    if (this.lent !== undefined) throw new Error("the map log is lent to another thread");
    const frame = encodeFrame(seq, rec);
    this.segmentFor(seq);
    const fd = this.fd!;
    const seg = this.current!;
    try {
      let done = 0;
      while (done < frame.length) done += writeSync(fd, frame, done, frame.length - done);
    } catch (err) {
      try {
        ftruncateSync(fd, seg.bytes);
      } catch {
        this.broken = new MetaError(
          MetaErrorCode.MapLogCorrupt,
          `map log ${seg.path} could not be appended to nor cut back: ${(err as Error).message}`,
        );
      }
      throw err;
    }
    seg.bytes += frame.length;
    seg.lastSeq = seq;
    this.appendedSeq = seq;
    this.bytesSinceCheckpoint += frame.length;
    return frame.length;
  }

  /**
   * Lends the segment the records from `seq` go to (opening one as `append` would) to another
   * thread, which appends them itself with `writeSync` on `fd` (map-thread.ts). Until
   * `settleLend`, nothing here may append; a rotation asked for meanwhile waits for the settle.
   */
  lend(seq: number): { fd: number; bytes: number } {
    if (this.broken) throw this.broken;
    if (this.lent !== undefined) throw new Error("the map log is lent already");
    this.segmentFor(seq);
    this.lent = { fd: this.fd!, bytes: this.current!.bytes };
    return this.lent;
  }

  /**
   * The lent segment comes back. `appended`: the other thread's records up to `lastSeq`, in
   * `bytes` after the lend point, all committed. Undefined: none that count (its transaction
   * did not commit): the segment is cut back to the lend point and the next append starts a new
   * one (the file position may be anywhere after a failed write).
   */
  settleLend(appended: { lastSeq: number; bytes: number } | undefined): void {
    const lent = this.lent;
    if (lent === undefined) return;
    this.lent = undefined;
    const seg = this.current!;
    if (appended !== undefined && appended.bytes > 0) {
      seg.bytes += appended.bytes;
      seg.lastSeq = appended.lastSeq;
      this.appendedSeq = appended.lastSeq;
      this.bytesSinceCheckpoint += appended.bytes;
    } else if (appended === undefined) {
      try {
        ftruncateSync(lent.fd, lent.bytes);
      } catch (err) {
        this.broken = new MetaError(
          MetaErrorCode.MapLogCorrupt,
          `map log ${seg.path} could not be cut back after a failed commit: ${(err as Error).message}`,
        );
      }
      if (lent.bytes === 0 && this.segments.at(-1) === seg) {
        // Opened for this batch: gone again, so that the next append creates it afresh (a new
        // segment would have its name).
        closeSync(lent.fd);
        this.segments.pop();
        rmSync(seg.path, { force: true });
        this.fd = undefined;
        this.current = undefined;
        this.dirDirty = true;
      } else {
        this.rotateWanted = true;
      }
    }
    if (this.rotateWanted) {
      this.rotateWanted = false;
      this.rotate();
    }
  }

  /** Next append starts a new segment (a checkpoint makes the older ones deletable). */
  rotate(): void {
    if (this.lent !== undefined) {
      // Another thread writes to the current segment's fd: it must stay open until then.
      this.rotateWanted = true;
      return;
    }
    this.mayContinue = false;
    if (this.fd !== undefined) this.toClose.push(this.fd);
    this.fd = undefined;
    this.current = undefined;
  }

  /** A new segment from `seq` unless the current one takes it (`seq` follows it, and it has room). */
  private segmentFor(seq: number): void {
    if (
      this.fd === undefined ||
      this.current === undefined ||
      this.current.lastSeq + 1 !== seq ||
      this.current.bytes >= this.segmentBytes
    ) {
      this.openSegment(seq);
    }
  }

  private openSegment(firstSeq: number): void {
    // Continue the last segment when it ends just before `firstSeq` and has room (at open).
    const last = this.segments.at(-1);
    const mayContinue = this.mayContinue;
    this.mayContinue = false;
    if (
      mayContinue &&
      this.current === undefined &&
      last !== undefined &&
      last.lastSeq + 1 === firstSeq &&
      last.bytes < this.segmentBytes
    ) {
      this.fd = openSync(last.path, "a");
      this.current = last;
      if (fstatSync(this.fd).size !== last.bytes) {
        ftruncateSync(this.fd, last.bytes);
      }
      return;
    }
    if (this.fd !== undefined) this.toClose.push(this.fd);
    const path = join(this.dir, segmentName(firstSeq));
    const seg: Segment = { path, firstSeq, lastSeq: firstSeq - 1, bytes: 0 };
    this.fd = openSync(path, "w");
    this.current = seg;
    this.segments.push(seg);
    this.dirDirty = true;
  }

  /** Resolves once every record appended before the call is durable (group commit). */
  async sync(): Promise<void> {
    const target = this.appendedSeq;
    while (this.syncedSeq < target || this.toClose.length > 0 || this.dirDirty) {
      if (this.syncing) {
        await this.syncing;
        continue;
      }
      this.syncing = this.syncOnce().finally(() => {
        this.syncing = undefined;
      });
      await this.syncing;
    }
  }

  /** A sync soon, without waiting (after every append: the log keeps up with LMDB's commits). */
  scheduleSync(onError: (err: unknown) => void): void {
    if (this.syncScheduled) return;
    this.syncScheduled = true;
    setImmediate(() => {
      this.syncScheduled = false;
      this.sync().catch(onError);
    });
  }

  private async syncOnce(): Promise<void> {
    const upTo = this.appendedSeq;
    const closing = this.toClose.splice(0);
    const dirDirty = this.dirDirty;
    this.dirDirty = false;
    const fd = this.fd;
    if (!this.options.noSync) {
      // fdatasync on the libuv pool: the event loop keeps running meanwhile.
      for (const c of [...closing, ...(fd !== undefined ? [fd] : [])]) {
        await new Promise<void>((resolve, reject) =>
          fdatasync(c, (err) => (err ? reject(err) : resolve())),
        );
      }
      if (dirDirty) await fsyncDir(this.dir);
    }
    for (const c of closing) closeSync(c);
    this.syncedSeq = Math.max(this.syncedSeq, upTo);
  }

  /**
   * At open, when the LMDB environment's last applied seq is `seq`: cuts the records after it
   * (transactions whose records were written but whose commit never happened). Returns how many
   * records were cut.
   */
  async cutAfter(seq: number): Promise<{ records: number; keptIn: string | undefined }> {
    let cut = 0;
    // What is cut is kept aside (`cut-<first seq>.log`, never read back): normally the records
    // of one commit that a crash interrupted, but if the store was replaced by an older copy they
    // are the only record of the maps since.
    const aside = join(this.dir, `cut-${hex16(seq + 1)}.log`);
    const keep: Buffer[] = [];
    while (this.segments.length > 0) {
      const seg = this.segments.at(-1)!;
      if (seg.lastSeq <= seq) break;
      let at = 0;
      if (seg.firstSeq <= seq) {
        at = seg.bytes;
        await readFrames(seg.path, (frames) => {
          for (const f of frames) if (f.seq === seq + 1) at = f.offset;
        });
      }
      const fh = await open(seg.path, "r");
      try {
        const tail = Buffer.alloc(seg.bytes - at);
        await fh.read(tail, 0, tail.length, at);
        keep.unshift(tail);
      } finally {
        await fh.close();
      }
      if (seg.firstSeq > seq) {
        cut += seg.lastSeq - seg.firstSeq + 1;
        await rm(seg.path, { force: true });
        this.segments.pop();
        this.dirDirty = true;
        continue;
      }
      cut += seg.lastSeq - seq;
      await truncate(seg.path, at);
      seg.bytes = at;
      seg.lastSeq = seq;
    }
    if (keep.length > 0) {
      const fh = await open(aside, "w");
      try {
        await fh.writeFile(Buffer.concat(keep));
        if (!this.options.noSync) await fh.datasync();
      } finally {
        await fh.close();
      }
      this.dirDirty = true;
    }
    this.appendedSeq = this.syncedSeq = Math.min(this.appendedSeq, Math.max(seq, 0));
    return { records: cut, keptIn: keep.length > 0 ? aside : undefined };
  }

  /**
   * Records with seq > `after`, in order, for replay. Throws MapLogCorrupt when a record is
   * missing (a gap) or does not decode.
   */
  async replay(
    after: number,
    onRecords: (recs: { seq: number; record: MapRecord; bytes: number }[]) => Promise<void>,
  ): Promise<{ records: number; lastSeq: number }> {
    let expect = after + 1;
    let records = 0;
    for (const seg of [...this.segments]) {
      if (seg.lastSeq < expect) continue;
      if (seg.firstSeq > expect) {
        throw new MetaError(
          MetaErrorCode.MapLogCorrupt,
          `map log has no record ${expect} (the next segment starts at ${seg.firstSeq})`,
        );
      }
      await readFrames(seg.path, async (frames) => {
        const out: { seq: number; record: MapRecord; bytes: number }[] = [];
        for (const f of frames) {
          if (f.seq < expect || f.seq > seg.lastSeq) continue;
          if (f.seq !== expect) {
            throw new MetaError(
              MetaErrorCode.MapLogCorrupt,
              `map log: seq ${f.seq}, expected ${expect}`,
            );
          }
          let record: MapRecord;
          try {
            record = decodePayload(f.op, f.payload, f.version);
          } catch (err) {
            throw new MetaError(
              MetaErrorCode.MapLogCorrupt,
              `map log record ${f.seq} in ${seg.path} does not decode: ${(err as Error).message}`,
            );
          }
          out.push({ seq: f.seq, record, bytes: f.length });
          expect++;
        }
        if (out.length > 0) {
          records += out.length;
          await onRecords(out);
        }
      });
    }
    return { records, lastSeq: expect - 1 };
  }

  /** After checkpoint `seq` is durable: deletes older checkpoints and segments all ≤ seq. */
  async retire(checkpoint: CheckpointFile): Promise<{ segments: number; checkpoints: number }> {
    let segments = 0;
    let checkpoints = 0;
    for (const c of this.checkpoints.filter((x) => x.seq < checkpoint.seq)) {
      await rm(c.path, { force: true });
      checkpoints++;
    }
    this.checkpoints = [...this.checkpoints.filter((x) => x.seq > checkpoint.seq), checkpoint].sort(
      (a, b) => a.seq - b.seq,
    );
    while (this.segments.length > 0) {
      const seg = this.segments[0]!;
      if (seg === this.current || seg.lastSeq > checkpoint.seq) break;
      // An empty segment (lastSeq = firstSeq − 1) is deleted only if another follows it.
      if (seg.lastSeq < seg.firstSeq && this.segments.length === 1) break;
      await rm(seg.path, { force: true });
      this.segments.shift();
      segments++;
    }
    if (segments + checkpoints > 0 && !this.options.noSync) await fsyncDir(this.dir);
    return { segments, checkpoints };
  }

  async close(): Promise<void> {
    await this.sync();
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    this.current = undefined;
    for (const c of this.toClose.splice(0)) closeSync(c);
  }
}

/** Moves a file into place durably (checkpoint.ts). */
export async function renameDurably(from: string, to: string, dir: string, noSync: boolean) {
  await rename(from, to);
  if (!noSync) await fsyncDir(dir);
}
