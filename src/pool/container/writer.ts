/**
 * Appending chunks to a container (FORMAT.md).
 *
 * Contracts:
 * - `append(fingerprint, grain)` compresses and seals the grain synchronously, when called (the
 *   caller may reuse `grain` as soon as `append` returns), and takes the next offset: offsets
 *   follow call order. Appends made in the same turn of the event loop, or while a write is in
 *   flight, are written together in one write. The promise resolves once the record has been
 *   written to the file (readable by any ContainerReader), not once it is durable.
 * - `appendBatch(fingerprints, grains, seal)` appends several grains as contiguous records whose
 *   sealing happens elsewhere (a worker thread, chunk-worker.ts): it takes its place in call
 *   order with every other append, and the batches of one container are sealed one at a time
 *   (each needs the end of the one before as its base offset, FORMAT.md §3 AAD). An `append`
 *   made while a batch is being sealed waits its turn the same way.
 * - `sync()` resolves once every record appended before the call is durable (fdatasync). Calls
 *   that overlap share one fdatasync when they can.
 * - `seal()` writes the directory and footer (FORMAT.md §4, §5) after making every record durable,
 *   syncs again, and closes the file: the container is immutable from then on.
 * - A failed write or fdatasync poisons the writer: that and every later call rejects with a
 *   StorageError (PoolFull for ENOSPC, else WriteFault), because the state of the file's end is
 *   then unknown. The pool starts another container; after a restart a scan finds the valid end.
 * - One writer per container file, in one process. Nothing here locks the file.
 */
import { type FileHandle, open, truncate, unlink } from "node:fs/promises";
import { join } from "node:path";
import { type DomainKeys, newId, TAG_BYTES } from "../../crypto/index.js";
import { fsyncDirectory } from "../../util/atomic-file.js";
import { StorageError } from "../../volume/errors.js";
import { ContainerIntegrityError, writeFailure } from "./errors.js";
import {
  type Codec,
  type ContainerHeader,
  DirectoryBuilder,
  encodeFileHeader,
  encodeFooter,
  FILE_HEADER_BYTES,
  FORMAT_VERSION,
  RECORD_HEADER_BYTES,
} from "./format.js";
import {
  type ContainerKeys,
  containerKeys,
  encodeRecord,
  newRecordCompressor,
  type SealedRecords,
  sealRecords,
} from "./record.js";
import { scanContainer } from "./scan.js";

/** Container files are named after their id. */
export const CONTAINER_SUFFIX = ".sxc";

export function containerFileName(containerId: string): string {
  return `${containerId}${CONTAINER_SUFFIX}`;
}

/**
 * Records per container, at most: keeps random-nonce collisions under one container key below
 * 2^-48 (src/crypto/README.md, "Nonces").
 */
export const MAX_RECORDS = 2 ** 24;

export interface ContainerWriterOptions {
  /** Write as soon as this many bytes are waiting, without waiting for the end of the tick. Default 1 MiB. */
  readonly batchBytes?: number | undefined;
  /** Largest single write. Default 8 MiB. */
  readonly maxWriteBytes?: number | undefined;
  /** Clock for the creation and seal times (ms since the epoch). Default Date.now. */
  readonly now?: (() => number) | undefined;
}

export interface CreateContainerOptions extends ContainerWriterOptions {
  /** The new container's id. Default: a fresh random id. */
  readonly containerId?: string | undefined;
}

export interface OpenContainerOptions extends ContainerWriterOptions {
  /**
   * Truncate a torn tail (FORMAT.md §6) instead of refusing to open. The pool passes true once its
   * journal shows that nothing at or after the tail was ever synced.
   */
  readonly truncateTail?: boolean | undefined;
}

export interface AppendResult {
  /** Where the record starts: what the index stores, and what `ContainerReader.read` takes. */
  readonly offset: number;
  /** Bytes of payload on disk (compressed and sealed, tag included): the header's stored length. */
  readonly storedLength: number;
  /** Bytes the whole record occupies: header (60) + stored length. */
  readonly recordLength: number;
  readonly codec: Codec;
}

export interface SealResult {
  readonly recordCount: number;
  /** The file's final size. */
  readonly size: number;
  readonly directoryOffset: number;
}

interface Pending {
  readonly bytes: Buffer;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

const DEFAULT_BATCH_BYTES = 1024 * 1024;
const DEFAULT_MAX_WRITE_BYTES = 8 * 1024 * 1024;

async function writeFully(handle: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await handle.write(buf, done, buf.length - done, position + done);
    if (bytesWritten === 0) throw new Error("write made no progress");
    done += bytesWritten;
  }
}

/**
 * `bufs` back to back at `position`, with one pwritev (no joined copy: the sealed records of a
 * write are views of reused shared memory, chunk-worker.ts `JobArena`); a short write goes on
 * from where it stopped.
 */
async function writevFully(
  handle: FileHandle,
  bufs: readonly Buffer[],
  position: number,
): Promise<void> {
  let rest = bufs.filter((b) => b.length > 0);
  let at = position;
  while (rest.length > 0) {
    const { bytesWritten } = await handle.writev(rest, at);
    if (bytesWritten === 0) throw new Error("write made no progress");
    at += bytesWritten;
    let skip = bytesWritten;
    let k = 0;
    while (k < rest.length && skip >= rest[k]!.length) skip -= rest[k++]!.length;
    rest = skip > 0 ? [rest[k]!.subarray(skip), ...rest.slice(k + 1)] : rest.slice(k);
  }
}

export class ContainerWriter {
  private readonly compressor = newRecordCompressor();
  private readonly batchBytes: number;
  private readonly maxWriteBytes: number;
  private readonly now: () => number;
  private pending: Pending[] = [];
  private pendingBytes = 0;
  private writing: Promise<void> | undefined;
  private scheduled = false;
  private syncing: Promise<void> | undefined;
  /** End of what has been handed to the OS. */
  private writtenEnd: number;
  /** End of what has been appended (written or waiting). */
  private appendEnd: number;
  /** End of what is known durable. */
  private syncedEnd: number;
  private state: "open" | "sealing" | "sealed" | "closed" = "open";
  private failure: StorageError | undefined;
  private sealResult: SealResult | undefined;
  /**
   * Batches sealed elsewhere (`appendBatch`) take their offsets one after another: the tail of
   * that chain, and whether a batch is between taking its base offset and appending.
   */
  private chain: Promise<void> = Promise.resolve();
  private chained = 0;
  /** Records of batches in the chain, not yet in `entries` (MAX_RECORDS counts them). */
  private chainedRecords = 0;
  /** Upper bound of the bytes of those batches. */
  private chainedBytes = 0;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly header: ContainerHeader,
    private readonly keys: ContainerKeys,
    end: number,
    private readonly entries: DirectoryBuilder,
    options: ContainerWriterOptions,
  ) {
    this.writtenEnd = end;
    this.appendEnd = end;
    this.syncedEnd = end;
    this.batchBytes = options.batchBytes ?? DEFAULT_BATCH_BYTES;
    this.maxWriteBytes = options.maxWriteBytes ?? DEFAULT_MAX_WRITE_BYTES;
    this.now = options.now ?? Date.now;
  }

  /**
   * Create a new container in `dir` for the domain of `keys`. Resolves once the file and its
   * header are durable (file and directory fsynced).
   */
  static async create(
    dir: string,
    keys: DomainKeys,
    options: CreateContainerOptions = {},
  ): Promise<ContainerWriter> {
    const containerId = options.containerId ?? newId();
    const path = join(dir, containerFileName(containerId));
    const header: ContainerHeader = {
      version: FORMAT_VERSION,
      containerId,
      domainId: keys.domainId,
      createdAt: (options.now ?? Date.now)(),
    };
    const handle = await open(path, "wx", 0o600);
    try {
      await writeFully(handle, encodeFileHeader(header), 0);
      await handle.datasync();
      await fsyncDirectory(dir);
    } catch (error) {
      await handle.close();
      await unlink(path).catch(() => undefined); // never used: no record refers to it
      throw writeFailure(path, error);
    }
    return new ContainerWriter(
      path,
      handle,
      header,
      containerKeys(keys, containerId),
      FILE_HEADER_BYTES,
      new DirectoryBuilder(),
      options,
    );
  }

  /**
   * Reopen an unsealed container (after a restart) to append to it. Scans it without keys;
   * refuses a sealed container, a damaged one, and one with a torn tail unless `truncateTail`.
   */
  static async open(
    path: string,
    keys: DomainKeys,
    options: OpenContainerOptions = {},
  ): Promise<ContainerWriter> {
    const scan = await scanContainer(path);
    const header = scan.header;
    if (header === undefined || scan.damage.length > 0) {
      const first = scan.damage[0];
      throw new ContainerIntegrityError(
        path,
        first?.offset,
        first?.reason ?? "file-header",
        `cannot append to a damaged container: ${first?.message ?? "bad header"}`,
      );
    }
    if (header.domainId !== keys.domainId) {
      throw new Error(
        `container ${path} belongs to domain ${header.domainId}, not ${keys.domainId}`,
      );
    }
    if (scan.sealed) throw new Error(`container ${path} is sealed: sealed containers never change`);
    if (scan.tail !== undefined) {
      if (options.truncateTail !== true) {
        throw new Error(
          `container ${path} has a torn tail of ${scan.tail.length} bytes at offset ${scan.tail.offset}; ` +
            "truncate it (truncateTail) once the journal shows it was never synced",
        );
      }
      await truncate(path, scan.tail.offset);
    }
    const handle = await open(path, "r+");
    try {
      if (scan.tail !== undefined) await handle.datasync();
    } catch (error) {
      await handle.close();
      throw writeFailure(path, error);
    }
    const entries = new DirectoryBuilder(scan.records.length);
    for (const r of scan.records) {
      entries.add(r.fingerprint, r.offset, r.logicalLength, r.storedLength);
    }
    return new ContainerWriter(
      path,
      handle,
      header,
      containerKeys(keys, header.containerId),
      scan.validEnd,
      entries,
      options,
    );
  }

  get containerId(): string {
    return this.header.containerId;
  }

  /**
   * Bytes in the container, counting appends not yet written, and batches not sealed yet at
   * their largest (header + grain + tag per record: what they take without compression).
   */
  get size(): number {
    return this.appendEnd + this.chainedBytes;
  }

  /** Records in the container, counting appends not yet written. */
  get recordCount(): number {
    return this.entries.count;
  }

  /** End of the durable part of the file. */
  get syncedSize(): number {
    return this.syncedEnd;
  }

  get sealed(): boolean {
    return this.state === "sealed";
  }

  private checkWritable(): void {
    if (this.failure !== undefined) throw this.failure;
    if (this.state !== "open") throw new Error(`container ${this.path} is ${this.state}`);
  }

  /** Append one grain (see the contract at the top of this file). */
  async append(fingerprint: Uint8Array, grain: Uint8Array): Promise<AppendResult> {
    this.checkWritable();
    if (this.chained > 0) {
      // A batch is being sealed for the next offset: go after it (with our own copy of the grain).
      const [r] = await this.appendBatch([Buffer.from(fingerprint)], [Buffer.from(grain)]);
      return r!;
    }
    if (this.entries.count + this.chainedRecords >= MAX_RECORDS) {
      throw new RangeError(`container ${this.path} holds ${MAX_RECORDS} records: seal it`);
    }
    const offset = this.appendEnd;
    const record = encodeRecord(this.keys, offset, fingerprint, grain, this.compressor);
    this.appendEnd += record.bytes.length;
    this.entries.add(fingerprint, offset, grain.length, record.storedLength);
    await new Promise<void>((resolve, reject) => {
      this.pending.push({ bytes: record.bytes, resolve, reject });
      this.pendingBytes += record.bytes.length;
      this.schedule();
    });
    return {
      offset,
      storedLength: record.storedLength,
      recordLength: RECORD_HEADER_BYTES + record.storedLength,
      codec: record.codec,
    };
  }

  /**
   * Append `grains` (with the fingerprints at the same indexes) as contiguous records, in call
   * order with every other append. `seal(base)` builds the records for container offset `base`
   * (`sealRecords`, typically on a worker thread; default: here, synchronously); no other append
   * takes an offset until it returns. The grains must stay unchanged until the promise settles.
   * Resolves, like `append`, once the records are written to the file.
   */
  async appendBatch(
    fingerprints: readonly Uint8Array[],
    grains: readonly Uint8Array[],
    seal?: (base: number) => Promise<SealedRecords> | SealedRecords,
  ): Promise<AppendResult[]> {
    this.checkWritable();
    const n = grains.length;
    if (n === 0) return [];
    if (this.entries.count + this.chainedRecords + n > MAX_RECORDS) {
      throw new RangeError(`container ${this.path} holds ${MAX_RECORDS} records: seal it`);
    }
    let bound = 0;
    for (const g of grains) bound += RECORD_HEADER_BYTES + g.length + TAG_BYTES;
    this.chained++;
    this.chainedRecords += n;
    this.chainedBytes += bound;
    const sealer =
      seal ??
      ((base: number) => sealRecords(this.keys, base, fingerprints, grains, this.compressor));
    // The body is a method, not a closure made per call: V8 would optimize each new closure of
    // this hot loop again.
    const turn = this.chain.then(() => this.sealAndQueue(fingerprints, grains, sealer, bound));
    this.chain = turn.then(
      () => undefined,
      () => undefined,
    );
    const { results, written } = await turn;
    await written;
    return results;
  }

  /** appendBatch's turn on the chain: seal at the append end, queue the write. */
  private async sealAndQueue(
    fingerprints: readonly Uint8Array[],
    grains: readonly Uint8Array[],
    sealer: (base: number) => Promise<SealedRecords> | SealedRecords,
    bound: number,
  ): Promise<{ results: AppendResult[]; written: Promise<void> }> {
    const n = grains.length;
    let sealed: SealedRecords | undefined;
    try {
      this.checkWritable();
      const base = this.appendEnd;
      sealed = await sealer(base);
      this.checkWritable();
      if (this.appendEnd !== base) throw new Error("an append took an offset during a batch");
      const bytes = Buffer.from(sealed.bytes.buffer, sealed.bytes.byteOffset, sealed.bytes.length);
      const results: AppendResult[] = new Array(n);
      let at = base;
      for (let i = 0; i < n; i++) {
        const storedLength = sealed.storedLengths[i]!;
        const recordLength = RECORD_HEADER_BYTES + storedLength;
        results[i] = { offset: at, storedLength, recordLength, codec: sealed.codecs[i] as Codec };
        this.entries.add(fingerprints[i]!, at, grains[i]!.length, storedLength);
        at += recordLength;
      }
      if (at - base !== bytes.length) throw new Error("sealed records do not add up");
      this.appendEnd = at;
      const written = new Promise<void>((resolve, reject) => {
        this.pending.push({ bytes, resolve, reject });
        this.pendingBytes += bytes.length;
        this.schedule();
      });
      // The records' buffer goes back (SealedRecords.release) once they are written or failed.
      const release = sealed.release;
      sealed = undefined;
      if (release !== undefined) written.then(release, release);
      return { results, written };
    } catch (error) {
      sealed?.release?.();
      throw error;
    } finally {
      this.chained--;
      this.chainedRecords -= n;
      this.chainedBytes -= bound;
    }
  }

  private schedule(): void {
    if (this.pendingBytes >= this.batchBytes) {
      this.kick();
    } else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.kick();
      });
    }
  }

  private kick(): void {
    if (this.writing !== undefined || this.pending.length === 0) return;
    this.writing = this.writeLoop();
  }

  private async writeLoop(): Promise<void> {
    try {
      while (this.pending.length > 0) {
        let n = 0;
        let bytes = 0;
        for (const p of this.pending) {
          if (n > 0 && bytes + p.bytes.length > this.maxWriteBytes) break;
          bytes += p.bytes.length;
          n++;
        }
        const batch = this.pending.splice(0, n);
        this.pendingBytes -= bytes;
        try {
          if (batch.length === 1) await writeFully(this.handle, batch[0]!.bytes, this.writtenEnd);
          else
            await writevFully(
              this.handle,
              batch.map((p) => p.bytes),
              this.writtenEnd,
            );
        } catch (error) {
          const failure = this.fail(error);
          for (const p of batch) p.reject(failure);
          for (const p of this.pending.splice(0)) p.reject(failure);
          this.pendingBytes = 0;
          return;
        }
        this.writtenEnd += bytes;
        for (const p of batch) p.resolve();
      }
    } finally {
      this.writing = undefined;
    }
  }

  private fail(error: unknown): StorageError {
    this.failure ??= error instanceof StorageError ? error : writeFailure(this.path, error);
    return this.failure;
  }

  /** Resolves once every record appended so far has been written to the file (not synced). */
  async flush(): Promise<void> {
    while (this.chained > 0) await this.chain;
    while (this.pending.length > 0 || this.writing !== undefined) {
      this.kick();
      await this.writing;
    }
    if (this.failure !== undefined) throw this.failure;
  }

  /** Resolves once every record appended before this call is durable. */
  async sync(): Promise<void> {
    if (this.chained > 0) await this.chain; // batches appended before this call
    const target = this.appendEnd;
    await this.flush();
    while (this.syncedEnd < target) {
      if (this.failure !== undefined) throw this.failure;
      if (this.syncing === undefined) {
        const end = this.writtenEnd;
        this.syncing = this.handle.datasync().then(
          () => {
            this.syncedEnd = Math.max(this.syncedEnd, end);
            this.syncing = undefined;
          },
          (error: unknown) => {
            this.syncing = undefined;
            throw this.fail(error);
          },
        );
      }
      await this.syncing;
    }
  }

  /**
   * Make every record durable, write the directory and the footer, make them durable, and close
   * the file. Idempotent once it has succeeded.
   */
  async seal(): Promise<SealResult> {
    if (this.sealResult !== undefined) return this.sealResult;
    this.checkWritable();
    while (this.chained > 0) await this.chain;
    this.checkWritable();
    this.state = "sealing";
    try {
      // Records first, so that a valid footer always means intact records (FORMAT.md §6).
      await this.sync();
      const directory = this.entries.encode();
      const directoryOffset = this.writtenEnd;
      const footer = encodeFooter({
        directoryOffset,
        entryCount: this.entries.count,
        directoryCrc: directory.readUInt32LE(directory.length - 4),
        sealedAt: this.now(),
        containerId: this.header.containerId,
      });
      await writeFully(this.handle, Buffer.concat([directory, footer]), directoryOffset);
      await this.handle.datasync();
      const size = directoryOffset + directory.length + footer.length;
      this.writtenEnd = this.appendEnd = this.syncedEnd = size;
      this.state = "sealed";
      this.sealResult = { recordCount: this.entries.count, size, directoryOffset };
    } catch (error) {
      this.state = "closed";
      await this.handle.close().catch(() => undefined);
      throw this.fail(error);
    }
    await this.handle.close();
    return this.sealResult;
  }

  /**
   * Write what is pending and close the file without sealing (it is reopened with `open`).
   * Does not sync: call `sync()` first for durability.
   */
  async close(): Promise<void> {
    if (this.state === "closed" || this.state === "sealed") return;
    if (this.state === "sealing") throw new Error(`container ${this.path} is being sealed`);
    while (this.chained > 0) await this.chain;
    if ((this.state as string) !== "open") return;
    this.state = "closed";
    try {
      await this.flush();
    } finally {
      await this.handle.close();
    }
  }
}
