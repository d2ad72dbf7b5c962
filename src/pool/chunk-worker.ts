/**
 * The CPU-heavy, stateless part of the data path, runnable in worker threads (DESIGN.md
 * "Libraries chosen": worker_threads for the data pipeline):
 *
 * - `fingerprint`: HMAC-SHA256 of every grain of a write under the domain's fingerprint key, and
 *   which grains are all zeros (src/crypto/README.md; DESIGN.md "Zero grains are never stored");
 * - `open`: check and open the records of one run (FORMAT.md §3: header, fingerprint, GCM tag,
 *   codec, and optionally HMAC; the CRC32C only to name damage, see record.ts `checkCrc`) into
 *   plaintext grains. On a worker thread the job preads the run itself (`fd`), into a buffer the
 *   thread reuses, and writes the grains into the caller's SharedArrayBuffer (`out`): no buffer
 *   crosses threads, and a large run is split over the threads without a copy (`JobRunner.open`).
 *
 * - `seal`: compress and seal the new grains of a write as contiguous records from a base offset
 *   (record.ts `sealRecords`). A record's AAD binds its offset, and offsets follow the compressed
 *   sizes of the records before it (FORMAT.md §1, §3), so the ContainerWriter hands out one base
 *   at a time (`appendBatch`): the batches of one container are sealed one after another, while
 *   the other worker fingerprints and opens records.
 *
 * `Jobs.run` is the logic, the same in both modes; `JobRunner` sends jobs to worker threads, or
 * runs them inline when there are none (workers: 0, or the compiled worker script is not there,
 * as when the TypeScript sources run under the test runner). The grains of `fingerprint` and
 * `seal` jobs are copied into shared memory the runner reuses (`JobArena`; the caller keeps its
 * buffers), and `seal` writes its records into shared memory too: nothing is allocated or
 * transferred per job but small result arrays. `open` results on worker threads go into a
 * SharedArrayBuffer the caller allocated.
 */
import type { KeyObject } from "node:crypto";
import { existsSync, readSync } from "node:fs";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { Decompressor } from "zstd-napi";
import {
  chunkFingerprint,
  chunkFingerprints,
  type DomainKeys,
  domainKeys,
  TAG_BYTES,
} from "../crypto/index.js";
import { BufferPool } from "../util/buffer-pool.js";
import { FormatError } from "./container/format.js";
import { DamageReason, RECORD_HEADER_BYTES } from "./container/index.js";
import {
  type ContainerKeys,
  containerKeys,
  newRecordCompressor,
  openRecord,
  type RecordCompressor,
  type SealedRecords,
  sealPackedRecords,
  sealRecords,
} from "./container/record.js";
import type { ChunkEntry } from "./meta/codec.js";
import { FpReader, type MetaDbs, type OpenEnvOptions, openDbs } from "./meta/dbs.js";

export const GRAIN_BYTES = 4096;
const FP_BYTES = 32;

/**
 * Where a fingerprint job looks its fingerprints up: the metadata environment (MetaStore
 * `envOptions`, opened by the worker thread too: lmdb-js shares it between threads) and the
 * domain's number in the index.
 */
export interface IndexLookup {
  readonly env: OpenEnvOptions;
  readonly domainId: number;
}

export interface FingerprintJob {
  readonly op: "fingerprint";
  readonly domain: string;
  /** Whole grains (a multiple of 4096 bytes); on a worker thread a view of shared memory. */
  readonly data: Uint8Array;
  /** Also look the fingerprints up in the index (worker threads only: `found`). */
  readonly index?: IndexLookup | undefined;
}

/** Numbers per grain in `FingerprintResult.found`. */
export const FOUND_FIELDS = 5;

export interface FingerprintResult {
  /** 32 bytes per grain; zeros for an all-zero grain. */
  readonly fps: Uint8Array;
  /** 1 for an all-zero grain. */
  readonly zero: Uint8Array;
  /**
   * With `index`: per grain, its fingerprint's index entry as FOUND_FIELDS numbers (container,
   * offset, stored length, logical length, refcount), read in a snapshot taken after the job
   * started; container −1 when not indexed (and for zero grains). `foundEntry` reads one.
   */
  readonly found?: Float64Array | undefined;
}

/** Entry `i` of `FingerprintResult.found`, or undefined when its fingerprint was not indexed. */
export function foundEntry(found: Float64Array, i: number): ChunkEntry | undefined {
  const at = i * FOUND_FIELDS;
  if (found[at] === -1) return undefined;
  return {
    containerId: found[at]!,
    offset: found[at + 1]!,
    storedLength: found[at + 2]!,
    logicalLength: found[at + 3]!,
    refcount: found[at + 4]!,
  };
}

/**
 * Open the records of one run: records back to back in one container, read with one pread.
 * Either `buf` holds the bytes from `base` (read by the caller: inline jobs), or the job preads
 * `length` bytes at `base` from `fd` itself (worker threads: the caller keeps the descriptor open
 * until the job settles). Records are packed into typed arrays: cheap to clone.
 */
export interface OpenJob {
  readonly op: "open";
  readonly domain: string;
  readonly container: string;
  /** File offset of the first record (of `buf[0]`). */
  readonly base: number;
  /** Bytes read from the container from `base` (possibly short at the end of the file). */
  readonly buf?: Uint8Array | undefined;
  /** Without `buf`: the descriptor to pread `length` bytes at `base` from. */
  readonly fd?: number | undefined;
  readonly length?: number | undefined;
  /** Per record: its offset in the container. */
  readonly offsets: Float64Array;
  /** Per record: its stored length (the index's). */
  readonly storedLengths: Uint32Array;
  /** Per record: the fingerprint asked for, 32 bytes each. */
  readonly fingerprints: Uint8Array;
  readonly verify: boolean;
  /** Where the grains go (4096 bytes per record); default a new buffer. */
  readonly out?: Uint8Array | undefined;
}

export interface OpenResult {
  /** 4096 bytes per record, in order (undefined content for failed ones). */
  readonly grains: Uint8Array;
  readonly failures: { index: number; reason: DamageReason; message: string }[];
}

/** The records of a run, packed for an OpenJob. */
export function packRecords(
  records: readonly { offset: number; storedLength: number; fingerprint: Uint8Array }[],
): Pick<OpenJob, "offsets" | "storedLengths" | "fingerprints"> {
  const offsets = new Float64Array(records.length);
  const storedLengths = new Uint32Array(records.length);
  const fingerprints = new Uint8Array(records.length * FP_BYTES);
  records.forEach((r, i) => {
    offsets[i] = r.offset;
    storedLengths[i] = r.storedLength;
    fingerprints.set(r.fingerprint, i * FP_BYTES);
  });
  return { offsets, storedLengths, fingerprints };
}

export interface SealJob {
  readonly op: "seal";
  readonly domain: string;
  readonly container: string;
  /** Container offset of the first record. */
  readonly base: number;
  /** Whole grains (a multiple of 4096 bytes); on a worker thread a view of shared memory. */
  readonly data: Uint8Array;
  /** 32 bytes per grain. */
  readonly fps: Uint8Array;
  /**
   * Where the records go (shared memory, room for header + grain + tag per grain): the answer is
   * then a `SealAnswer`, the records being in `out`. Without it, a new buffer (SealedRecords).
   */
  readonly out?: Uint8Array | undefined;
}

/** The answer to a SealJob with `out`: the records fill `out` from its start. */
export interface SealAnswer {
  readonly length: number;
  readonly storedLengths: Uint32Array;
  readonly codecs: Uint8Array;
}

/**
 * Small OpenJobs (each with `fd` and `out`) sent in one message: see JobRunner.open. Packed into
 * a few flat arrays instead of one object per job: the structured clone of a job object (two
 * strings and four typed arrays, each cloned with its own buffer) cost the main thread more than
 * the read itself (CPU profile of 4 KiB random reads: `postMessage` 16 % of the main thread).
 */
export interface OpenBatchJob {
  readonly op: "openBatch";
  /** Domain and container ids the jobs name (by index in `numbers`). */
  readonly names: readonly string[];
  /**
   * Per job BATCH_JOB_FIELDS numbers (domain name index, container name index, fd, base, length,
   * first record index, record count, byte offset of its grains in `out`), then per record two
   * (offset, stored length) at 8 × jobs + 2 × record.
   */
  readonly numbers: Float64Array;
  readonly jobCount: number;
  /** 32 bytes per record, all jobs' records in order. */
  readonly fingerprints: Uint8Array;
  readonly verify: boolean;
}

/**
 * The answer to an OpenBatchJob: every job's grains in one buffer the worker allocated and
 * transferred (4096 bytes per record, jobs in order), and per job null when all went well, its
 * failures, or the error that stopped it. A fresh ArrayBuffer moved across instead of a
 * SharedArrayBuffer from the caller: V8 zero-fills a new SharedArrayBuffer (measured ≈ 5 µs for
 * 4 KiB, 20–40 µs for 128 KiB on the main thread), Buffer.allocUnsafeSlow on the worker does not.
 */
export interface OpenBatchAnswer {
  readonly grains: Uint8Array;
  readonly results: OpenBatchResult;
}

/** Numbers per job at the start of OpenBatchJob.numbers. */
const BATCH_JOB_FIELDS = 8;

/** Per job of an OpenBatchJob: null when all went well, its failures, or the error that stopped it. */
export type OpenBatchResult = ({ failures: OpenResult["failures"] } | { error: string } | null)[];

/**
 * A small read (fewer than INLINE_BELOW records) for the batched path: its records as the reader
 * has them, not packed into typed arrays (three allocations a read, for the GC to reclaim).
 */
export interface SmallOpen {
  readonly domain: string;
  readonly container: string;
  readonly fd: number;
  readonly base: number;
  readonly length: number;
  readonly verify: boolean;
  readonly records: readonly {
    readonly offset: number;
    readonly storedLength: number;
    readonly fingerprint: Uint8Array;
  }[];
}

/** Pack small reads into one OpenBatchJob. */
export function packOpenBatch(jobs: readonly SmallOpen[]): OpenBatchJob {
  const names: string[] = [];
  const nameIndex = new Map<string, number>();
  const name = (s: string): number => {
    let i = nameIndex.get(s);
    if (i === undefined) {
      i = names.push(s) - 1;
      nameIndex.set(s, i);
    }
    return i;
  };
  let records = 0;
  for (const j of jobs) records += j.records.length;
  const recs = BATCH_JOB_FIELDS * jobs.length;
  const numbers = new Float64Array(recs + 2 * records);
  const fingerprints = new Uint8Array(records * FP_BYTES);
  let r = 0;
  let outAt = 0;
  for (let k = 0; k < jobs.length; k++) {
    const j = jobs[k]!;
    const n = j.records.length;
    const f = k * BATCH_JOB_FIELDS;
    numbers[f] = name(j.domain);
    numbers[f + 1] = name(j.container);
    numbers[f + 2] = j.fd;
    numbers[f + 3] = j.base;
    numbers[f + 4] = j.length;
    numbers[f + 5] = r;
    numbers[f + 6] = n;
    numbers[f + 7] = outAt;
    for (let i = 0; i < n; i++) {
      const rec = j.records[i]!;
      numbers[recs + 2 * (r + i)] = rec.offset;
      numbers[recs + 2 * (r + i) + 1] = rec.storedLength;
      fingerprints.set(rec.fingerprint.subarray(0, FP_BYTES), (r + i) * FP_BYTES);
    }
    r += n;
    outAt += n * GRAIN_BYTES;
  }
  return {
    op: "openBatch",
    names,
    numbers,
    jobCount: jobs.length,
    fingerprints,
    verify: jobs[0]?.verify ?? false,
  };
}

/** The OpenJobs of a batch again, writing their grains into `out` (jobs in order). */
export function unpackOpenBatch(batch: OpenBatchJob, out: Uint8Array): OpenJob[] {
  const { numbers, jobCount } = batch;
  const recs = BATCH_JOB_FIELDS * jobCount;
  const jobs: OpenJob[] = [];
  for (let k = 0; k < jobCount; k++) {
    const f = k * BATCH_JOB_FIELDS;
    const first = numbers[f + 5]!;
    const n = numbers[f + 6]!;
    const offsets = new Float64Array(n);
    const storedLengths = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      offsets[i] = numbers[recs + 2 * (first + i)]!;
      storedLengths[i] = numbers[recs + 2 * (first + i) + 1]!;
    }
    jobs.push({
      op: "open",
      domain: batch.names[numbers[f]!]!,
      container: batch.names[numbers[f + 1]!]!,
      fd: numbers[f + 2]!,
      base: numbers[f + 3]!,
      length: numbers[f + 4]!,
      offsets,
      storedLengths,
      fingerprints: batch.fingerprints.subarray(first * FP_BYTES, (first + n) * FP_BYTES),
      verify: batch.verify,
      out: out.subarray(numbers[f + 7]!, numbers[f + 7]! + n * GRAIN_BYTES),
    });
  }
  return jobs;
}

export type Job = FingerprintJob | OpenJob | SealJob | OpenBatchJob;

/** Sent to each thread by JobRunner.close before it is terminated. */
interface CloseJob {
  readonly op: "close";
}

const ZERO = Buffer.alloc(GRAIN_BYTES);
/** Largest pread buffer a thread keeps for its next job (larger runs get their own). */
const SCRATCH_KEEP = 4 << 20;

/** The logic of every job, with the key caches of one thread. */
export class Jobs {
  private readonly domains = new Map<string, DomainKeys>();
  private readonly containers = new Map<string, ContainerKeys>();
  private readonly decompressor = new Decompressor();
  private compressor: RecordCompressor | undefined;
  private scratch: Buffer | undefined;
  /** The metadata environment, opened for the first fingerprint job with `index`. */
  private index: { path: string; dbs: MetaDbs; readers: Map<number, FpReader> } | undefined;
  private readonly aad = Buffer.alloc(64);

  constructor(private readonly master: KeyObject) {}

  private domainKeys(id: string): DomainKeys {
    let k = this.domains.get(id);
    if (k === undefined) {
      k = domainKeys(this.master, id);
      this.domains.set(id, k);
    }
    return k;
  }

  private containerKeys(domain: string, container: string): ContainerKeys {
    let k = this.containers.get(container);
    if (k === undefined) {
      k = containerKeys(this.domainKeys(domain), container);
      if (this.containers.size >= 1024) this.containers.clear(); // HKDF is cheap to redo
      this.containers.set(container, k);
    }
    return k;
  }

  fingerprint(job: FingerprintJob): FingerprintResult {
    // The grains lie back to back: one call for all of them (chunkFingerprints).
    const n = Math.floor(job.data.length / GRAIN_BYTES);
    const fps = new Uint8Array(n * FP_BYTES);
    const zero = new Uint8Array(n);
    const key = this.domainKeys(job.domain).fingerprintKey;
    chunkFingerprints(key, job.data.subarray(0, n * GRAIN_BYTES), GRAIN_BYTES, fps, zero);
    if (job.index === undefined) return { fps, zero };
    return { fps, zero, found: this.lookUp(job.index, fps, zero) };
  }

  /**
   * The index entries of the fingerprints (`FingerprintResult.found`), in a snapshot of this
   * thread's that starts with the first read and ends with the job: no snapshot is kept between
   * jobs (an old one would pin pages LMDB could reuse, and would miss later inserts).
   */
  private lookUp(index: IndexLookup, fps: Uint8Array, zero: Uint8Array): Float64Array {
    if (this.index?.path !== index.env.path) {
      this.closeIndex();
      this.index = { path: index.env.path, dbs: openDbs(index.env), readers: new Map() };
    }
    const { dbs, readers } = this.index;
    let reader = readers.get(index.domainId);
    if (reader === undefined) {
      reader = new FpReader(dbs.fp, index.domainId);
      readers.set(index.domainId, reader);
    }
    const n = zero.length;
    const found = new Float64Array(n * FOUND_FIELDS);
    try {
      for (let i = 0; i < n; i++) {
        const at = i * FOUND_FIELDS;
        const e = zero[i] === 1 ? undefined : reader.getAt(fps, i * FP_BYTES);
        if (e === undefined) {
          found[at] = -1;
          continue;
        }
        found[at] = e.containerId;
        found[at + 1] = e.offset;
        found[at + 2] = e.storedLength;
        found[at + 3] = e.logicalLength;
        found[at + 4] = e.refcount;
      }
    } finally {
      (dbs.root as unknown as { resetReadTxn(): void }).resetReadTxn();
    }
    return found;
  }

  /** Let go of this thread's handle of the metadata environment (the main thread's stays). */
  closeIndex(): Promise<void> | undefined {
    const index = this.index;
    this.index = undefined;
    return index === undefined ? undefined : Promise.resolve(index.dbs.root.close());
  }

  fingerprintGrains(domain: string, grains: readonly Uint8Array[]): FingerprintResult {
    const key = this.domainKeys(domain).fingerprintKey;
    const fps = new Uint8Array(grains.length * FP_BYTES);
    const zero = new Uint8Array(grains.length);
    for (let i = 0; i < grains.length; i++) {
      const g = grains[i]!;
      const grain = Buffer.from(g.buffer, g.byteOffset, g.length);
      if (grain.equals(ZERO)) zero[i] = 1;
      else fps.set(chunkFingerprint(key, grain), i * FP_BYTES);
    }
    return { fps, zero };
  }

  seal(job: SealJob): SealedRecords {
    const keys = this.containerKeys(job.domain, job.container);
    const out =
      job.out === undefined
        ? undefined
        : Buffer.from(job.out.buffer, job.out.byteOffset, job.out.length);
    this.compressor ??= newRecordCompressor();
    // The grains as they lie (back to back): runs of incompressible ones sealed in one call.
    return sealPackedRecords(keys, job.base, job.data, GRAIN_BYTES, job.fps, this.compressor, out);
  }

  /** `seal` of grains where they are (inline: no copy). */
  sealGrains(
    domain: string,
    container: string,
    base: number,
    fps: readonly Uint8Array[],
    grains: readonly Uint8Array[],
  ): SealedRecords {
    this.compressor ??= newRecordCompressor();
    return sealRecords(this.containerKeys(domain, container), base, fps, grains, this.compressor);
  }

  open(job: OpenJob): OpenResult {
    const keys = this.containerKeys(job.domain, job.container);
    const buf = job.buf
      ? Buffer.from(job.buf.buffer, job.buf.byteOffset, job.buf.length)
      : this.pread(job.fd!, job.base, job.length!);
    const n = job.offsets.length;
    const out = job.out
      ? Buffer.from(job.out.buffer, job.out.byteOffset, job.out.length)
      : undefined;
    // One record and no `out` (a 4 KiB random read, inline): its plaintext is the result.
    let grains = out ?? (n === 1 ? undefined : Buffer.allocUnsafeSlow(n * GRAIN_BYTES));
    const fps = Buffer.from(job.fingerprints.buffer, job.fingerprints.byteOffset, n * FP_BYTES);
    const failures: OpenResult["failures"] = [];
    for (let i = 0; i < n; i++) {
      const offset = job.offsets[i]!;
      const at = offset - job.base;
      const length = RECORD_HEADER_BYTES + job.storedLengths[i]!;
      if (at < 0 || at + length > buf.length) {
        failures.push({
          index: i,
          reason: DamageReason.Truncated,
          message: "record runs past the end of the file",
        });
        continue;
      }
      try {
        const plain = openRecord(keys, offset, buf.subarray(at, at + length), {
          expectFingerprint: fps.subarray(i * FP_BYTES, (i + 1) * FP_BYTES),
          verifyFingerprint: job.verify,
          decompressor: this.decompressor,
          checkCrc: false,
          aad: this.aad,
          // Uncompressed records (most: random data) are decrypted where the grain goes.
          into: grains,
          intoAt: i * GRAIN_BYTES,
        });
        if (plain.length !== GRAIN_BYTES) {
          throw new FormatError(DamageReason.Content, `record holds ${plain.length} bytes`);
        }
        if (grains === undefined) grains = plain;
        else if (
          plain.buffer !== grains.buffer ||
          plain.byteOffset !== grains.byteOffset + i * GRAIN_BYTES
        ) {
          plain.copy(grains, i * GRAIN_BYTES);
        }
      } catch (error) {
        if (!(error instanceof FormatError)) throw error;
        failures.push({ index: i, reason: error.reason, message: error.message });
      }
    }
    return { grains: grains ?? Buffer.alloc(n * GRAIN_BYTES), failures };
  }

  /**
   * `length` bytes at `position` of `fd` (fewer at the end of the file), into this thread's
   * reused buffer: valid until the next call. Synchronous: on a worker thread (a page-cache read
   * of 128 KiB takes ~20 µs); inline only when every worker thread has died.
   */
  private pread(fd: number, position: number, length: number): Buffer {
    let buf = this.scratch;
    if (buf === undefined || buf.length < length) {
      buf = Buffer.allocUnsafeSlow(Math.max(length, 256 * 1024));
      if (buf.length <= SCRATCH_KEEP) this.scratch = buf;
    }
    let got = 0;
    while (got < length) {
      const n = readSync(fd, buf, got, length - got, position + got);
      if (n === 0) break;
      got += n;
    }
    return buf.subarray(0, got);
  }
}

const WORKER_ROLE = "sanmux-chunk-worker";
/**
 * Jobs of fewer grains run inline: a worker round trip (two messages, two thread wake-ups) costs
 * more than opening one record (~10 µs); measured with 4 KiB random reads (README "Figures").
 */
const INLINE_BELOW = 4;
/** Jobs are split over the threads in parts of at least this many grains. */
const SPLIT_MIN = 16;
/** A batch of small open jobs is split over the threads in parts of at least this many jobs. */
const SMALL_SPLIT_MIN = 8;

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
}

interface Lane {
  readonly worker: Worker;
  readonly pending: Map<number, Pending>;
}

/**
 * Runs jobs on worker threads (least busy first), or inline. `workers` default: one per CPU,
 * at most 4.
 */
export class JobRunner {
  private readonly inline: Jobs;
  private readonly lanes: Lane[] = [];
  private nextId = 1;
  /** Shared memory for the grains and records of fingerprint and seal jobs. */
  private readonly arena = new JobArena();

  /**
   * `script`: the compiled worker module; default `chunk-worker.js` beside this module (tests of
   * the TypeScript sources may point at dist/).
   */
  constructor(master: KeyObject, workers?: number, script?: string) {
    this.inline = new Jobs(master);
    this.batchSmall = process.env.SANMUX_BATCH_SMALL_READS !== "0";
    script ??= fileURLToPath(new URL("./chunk-worker.js", import.meta.url));
    const n = workers ?? Math.min(4, cpus().length);
    if (n <= 0 || !existsSync(script)) return;
    for (let i = 0; i < n; i++) {
      const worker = new Worker(script, { workerData: { role: WORKER_ROLE, master } });
      // Referenced only while it has jobs: an idle pool must not keep the process alive.
      worker.unref();
      const lane: Lane = { worker, pending: new Map() };
      worker.on("message", (m: { id: number; result?: unknown; error?: string }) => {
        const p = lane.pending.get(m.id);
        lane.pending.delete(m.id);
        if (lane.pending.size === 0) worker.unref();
        if (m.error !== undefined) p?.reject(new Error(`chunk worker: ${m.error}`));
        else p?.resolve(m.result);
      });
      const fail = (error: Error) => {
        const i = this.lanes.indexOf(lane);
        if (i >= 0) this.lanes.splice(i, 1); // later jobs run on the others, or inline
        for (const p of lane.pending.values()) p.reject(error);
        lane.pending.clear();
      };
      worker.on("error", fail);
      worker.on("exit", (code) => fail(new Error(`chunk worker exited with code ${code}`)));
      this.lanes.push(lane);
    }
  }

  get threads(): number {
    return this.lanes.length;
  }

  /**
   * Fingerprints of whole grains. For a worker they are copied into a buffer it may own (the
   * caller keeps its buffers); inline they are read where they are.
   */
  async fingerprint(
    domain: string,
    grains: readonly Uint8Array[],
    index?: IndexLookup,
  ): Promise<FingerprintResult> {
    if (this.lanes.length === 0 || grains.length < INLINE_BELOW) {
      // Inline: no lookups here (`found` absent: the caller reads the index itself).
      return this.inline.fingerprintGrains(domain, grains);
    }
    // A large write (qemu-img convert sends 2 MiB, one at a time) is split over the threads.
    const parts = this.split(grains.length);
    const results = await Promise.all(
      parts.map(([from, to]) => {
        const held = this.arena.acquire((to - from) * GRAIN_BYTES);
        const data = gather(grains, from, to, held);
        const job: FingerprintJob = { op: "fingerprint", domain, data, index };
        return this.run<FingerprintResult>(job, []).finally(() => this.arena.release(held));
      }),
    );
    if (results.length === 1) return results[0]!;
    const fps = new Uint8Array(grains.length * FP_BYTES);
    const zero = new Uint8Array(grains.length);
    const found = index === undefined ? undefined : new Float64Array(grains.length * FOUND_FIELDS);
    results.forEach((r, k) => {
      const from = parts[k]![0];
      fps.set(r.fps, from * FP_BYTES);
      zero.set(r.zero, from);
      if (found !== undefined && r.found !== undefined) found.set(r.found, from * FOUND_FIELDS);
    });
    return found === undefined ? { fps, zero } : { fps, zero, found };
  }

  /**
   * [from, to) index ranges, one per thread, for a job of `n` grains: at least SPLIT_MIN grains
   * each (a round trip costs ~50-100 µs; a grain ~5-15 µs).
   */
  private split(n: number, ways = this.lanes.length): [number, number][] {
    const k = Math.max(1, Math.min(ways, Math.floor(n / SPLIT_MIN)));
    const parts: [number, number][] = [];
    for (let i = 0; i < k; i++) {
      parts.push([Math.floor((n * i) / k), Math.floor((n * (i + 1)) / k)]);
    }
    return parts;
  }

  /**
   * Seal whole grains as contiguous records of `container` from offset `base` (see SealJob).
   * For a worker the grains and fingerprints are copied first; inline they are read where they are.
   */
  seal(
    domain: string,
    container: string,
    base: number,
    fps: readonly Uint8Array[],
    grains: readonly Uint8Array[],
  ): Promise<SealedRecords> | SealedRecords {
    if (this.lanes.length === 0 || grains.length < INLINE_BELOW) {
      return this.inline.sealGrains(domain, container, base, fps, grains);
    }
    if (grains.some((g) => g.length !== GRAIN_BYTES)) {
      return this.inline.sealGrains(domain, container, base, fps, grains);
    }
    return this.sealSplit(domain, container, base, fps, grains);
  }

  /**
   * Seal on the worker threads, a large batch split over them. Part k starts where the parts
   * before it end, which depends on their compressed sizes: each part is sealed for the offset it
   * would have if none of the earlier grains compressed (random data: always right), and a part
   * whose guess turns out wrong is sealed again for its real offset.
   */
  private async sealSplit(
    domain: string,
    container: string,
    base: number,
    fps: readonly Uint8Array[],
    grains: readonly Uint8Array[],
  ): Promise<SealedRecords> {
    const parts = this.split(grains.length);
    const bound = RECORD_HEADER_BYTES + GRAIN_BYTES + TAG_BYTES;
    // Every part writes its records into `out` where they go in the container: at the offset
    // its guess or, sealed again, its real offset says, so the records end up back to back with
    // no join. A part sealed again starts no later than its guess and ends before the guess of
    // the next one begins (each part's guess leaves room for every grain uncompressed): it never
    // writes where another part's job may still be writing.
    const out = this.arena.acquire(grains.length * bound);
    const job = (from: number, to: number, at: number): Promise<SealAnswer> => {
      const n = to - from;
      const input = this.arena.acquire(n * (GRAIN_BYTES + FP_BYTES));
      const data = gather(grains, from, to, input);
      const fpData = input.subarray(n * GRAIN_BYTES, n * (GRAIN_BYTES + FP_BYTES));
      for (let i = from; i < to; i++) fpData.set(fps[i]!, (i - from) * FP_BYTES);
      const into = out.subarray(at - base, at - base + n * bound);
      const j: SealJob = { op: "seal", domain, container, base: at, data, fps: fpData, out: into };
      return this.run<SealAnswer>(j, []).finally(() => this.arena.release(input));
    };
    const guesses = parts.map(([from, to]) => job(from, to, base + from * bound));
    try {
      const storedLengths = new Uint32Array(grains.length);
      const codecs = new Uint8Array(grains.length);
      let at = base;
      for (let k = 0; k < parts.length; k++) {
        const [from, to] = parts[k]!;
        let r = await guesses[k]!;
        if (at !== base + from * bound) r = await job(from, to, at);
        storedLengths.set(r.storedLengths, from);
        codecs.set(r.codecs, from);
        at += r.length;
      }
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        this.arena.release(out);
      };
      return { bytes: out.subarray(0, at - base), storedLengths, codecs, release };
    } catch (error) {
      // No job may still write into `out` when it goes back to the arena.
      await Promise.allSettled(guesses);
      this.arena.release(out);
      throw error;
    }
  }

  /**
   * Whether an OpenJob of `records` records goes to the worker threads, so that the caller passes
   * a descriptor (`fd`, `length`) instead of the bytes (`buf`).
   */
  offloads(records: number): boolean {
    return this.lanes.length > 0 && (records >= INLINE_BELOW || this.batchSmall);
  }

  /** Whether a read of `records` records goes through `openSmall` (batched, worker threads). */
  batches(records: number): boolean {
    return this.lanes.length > 0 && this.batchSmall && records < INLINE_BELOW;
  }

  /**
   * Small runs (4 KiB random reads) on worker threads, batched: the runs asked for in one turn of
   * the event loop go in one message per thread, so that the main thread pays one round trip for
   * many reads instead of a pread and an open for each (random reads are bound by the main
   * thread). Only when a run of fewer than INLINE_BELOW records comes with `fd`.
   */
  private readonly batchSmall: boolean;
  private small: { job: SmallOpen; resolve(r: OpenResult): void; reject(e: Error): void }[] = [];

  /**
   * A small read (fewer than INLINE_BELOW records, with a descriptor) on the worker threads,
   * batched with the others of this turn (see `batchSmall`). Only when `offloads(records)`.
   */
  openSmall(job: SmallOpen): Promise<OpenResult> {
    return new Promise((resolve, reject) => {
      if (this.small.length === 0) setImmediate(() => this.flushSmall());
      this.small.push({ job, resolve, reject });
    });
  }

  private flushSmall(): void {
    const queue = this.small;
    this.small = [];
    const k = Math.max(1, Math.min(this.lanes.length, Math.floor(queue.length / SMALL_SPLIT_MIN)));
    for (let p = 0; p < k; p++) {
      const from = Math.floor((queue.length * p) / k);
      const to = Math.floor((queue.length * (p + 1)) / k);
      const part = queue.slice(from, to);
      const batch = packOpenBatch(part.map((q) => q.job));
      this.run<OpenBatchAnswer>(batch, []).then(
        ({ grains, results }) => {
          let at = 0;
          results.forEach((r, i) => {
            const q = part[i]!;
            const length = q.job.records.length * GRAIN_BYTES;
            const mine = grains.subarray(at, at + length);
            if (r === null) q.resolve({ grains: mine, failures: [] });
            else if ("error" in r) q.reject(new Error(`chunk worker: ${r.error}`));
            else q.resolve({ grains: mine, failures: r.failures });
            at += length;
          });
        },
        (error: Error) => {
          for (const q of part) q.reject(error);
        },
      );
    }
  }

  /**
   * Open a run. A job with `buf` runs inline. A job with `fd` runs on the worker threads (which
   * pread it), split over them when large, each part writing its grains into one
   * SharedArrayBuffer (the job's `out` when it is one, else a new one): the result's `grains` is a
   * view of it, never copied.
   */
  open(job: OpenJob): Promise<OpenResult> {
    const n = job.offsets.length;
    if (job.buf !== undefined || this.lanes.length === 0) {
      return Promise.resolve().then(() => this.inline.open(job));
    }
    if (n < INLINE_BELOW) {
      const fps = job.fingerprints;
      const records = Array.from(job.offsets, (offset, i) => ({
        offset,
        storedLength: job.storedLengths[i]!,
        fingerprint: fps.subarray(i * FP_BYTES, (i + 1) * FP_BYTES),
      }));
      return this.openSmall({ ...job, fd: job.fd!, length: job.length!, records });
    }
    // Split over the idle threads only: when every thread is busy (many reads in flight) a split
    // costs messages and buys nothing; when reads come one at a time it halves their latency.
    const parts = this.split(n, this.lanes.filter((l) => l.pending.size === 0).length);
    // The caller's buffer when it is shared memory (a pooled read buffer, util/buffer-pool.ts):
    // the grains land where they are sent from.
    const grains =
      job.out !== undefined && job.out.buffer instanceof SharedArrayBuffer
        ? job.out.subarray(0, n * GRAIN_BYTES)
        : new Uint8Array(new SharedArrayBuffer(n * GRAIN_BYTES));
    const end = job.base + job.length!;
    // Every part settles before the caller may close the descriptor.
    return Promise.allSettled(
      parts.map(([from, to]) => {
        const base = job.offsets[from]!;
        const partEnd = to < n ? job.offsets[to]! : end;
        const part: OpenJob = {
          op: "open",
          domain: job.domain,
          container: job.container,
          base,
          fd: job.fd,
          length: Math.max(0, Math.min(end, partEnd) - base),
          // slice, not subarray: a view would clone the whole buffer under it.
          offsets: job.offsets.slice(from, to),
          storedLengths: job.storedLengths.slice(from, to),
          fingerprints: job.fingerprints.slice(from * FP_BYTES, to * FP_BYTES),
          verify: job.verify,
          out: grains.subarray(from * GRAIN_BYTES, to * GRAIN_BYTES),
        };
        return this.run<Pick<OpenResult, "failures">>(part, []).then((r) =>
          r.failures.map((f) => ({ ...f, index: f.index + from })),
        );
      }),
    ).then((settled) => {
      const failures: OpenResult["failures"] = [];
      for (const r of settled) {
        if (r.status === "rejected") throw r.reason;
        failures.push(...r.value);
      }
      return { grains, failures };
    });
  }

  private run<T>(job: Job, transfer: ArrayBuffer[]): Promise<T> {
    let lane: Lane | undefined;
    for (const l of this.lanes)
      if (lane === undefined || l.pending.size < lane.pending.size) lane = l;
    if (lane === undefined) {
      return Promise.resolve().then(() => runJob(this.inline, job) as T);
    }
    return this.runOn<T>(lane, job, transfer);
  }

  private runOn<T>(target: Lane, job: Job | CloseJob, transfer: ArrayBuffer[] = []): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      if (target.pending.size === 0) target.worker.ref();
      target.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      target.worker.postMessage({ id, job }, transfer);
    });
  }

  async close(): Promise<void> {
    // Each thread first lets go of its handle of the metadata environment (fingerprint jobs with
    // an index), so that the environment is closed with the main thread's.
    const closed = Promise.allSettled(this.lanes.map((l) => this.runOn<null>(l, { op: "close" })));
    await Promise.race([closed, new Promise((r) => setTimeout(r, 5000).unref())]);
    const lanes = this.lanes.splice(0);
    await Promise.all(lanes.map((l) => l.worker.terminate()));
  }
}

function runJob(
  jobs: Jobs,
  job: Job,
): FingerprintResult | OpenResult | SealedRecords | SealAnswer | OpenBatchAnswer {
  if (job.op === "fingerprint") return jobs.fingerprint(job);
  if (job.op === "seal") return sealAnswer(jobs, job);
  if (job.op === "openBatch") return openBatch(jobs, job);
  return jobs.open(job);
}

/**
 * `grains[from..to)` copied back to back into `into` (room for 4096 bytes a grain); returns the
 * view of them. A short grain is followed by zeros up to its 4096 bytes. One `set` when the
 * grains lie back to back already, as a staged write's plaintext does (pool-volume.ts
 * `copyPlaintext`).
 */
function gather(
  grains: readonly Uint8Array[],
  from: number,
  to: number,
  into: Uint8Array,
): Uint8Array {
  const n = to - from;
  const data = into.subarray(0, n * GRAIN_BYTES);
  const first = grains[from]!;
  let adjacent = true;
  for (let i = from; i < to; i++) {
    const g = grains[i]!;
    if (
      g.length !== GRAIN_BYTES ||
      g.buffer !== first.buffer ||
      g.byteOffset !== first.byteOffset + (i - from) * GRAIN_BYTES
    ) {
      adjacent = false;
      break;
    }
  }
  if (adjacent) {
    data.set(new Uint8Array(first.buffer, first.byteOffset, n * GRAIN_BYTES));
    return data;
  }
  for (let i = from; i < to; i++) {
    const g = grains[i]!;
    const at = (i - from) * GRAIN_BYTES;
    data.set(g.length > GRAIN_BYTES ? g.subarray(0, GRAIN_BYTES) : g, at);
    if (g.length < GRAIN_BYTES) data.fill(0, at + g.length, at + GRAIN_BYTES);
  }
  return data;
}

/**
 * Reused shared memory for the buffers of fingerprint and seal jobs. A worker thread reads and
 * writes a SharedArrayBuffer where it is, so a job costs no copy to or from the thread and no
 * allocation: before, each 2 MiB write allocated and transferred four buffers of about 2 MiB
 * (two gathers, the sealed records, their join), and V8 collected garbage for that external
 * memory (126 of 179 scavenges in 7 s of unique writes; 45 of 111 since: docs/performance.md,
 * eighth session). Sizes are rounded up to 64 KiB so that the buffers of similar jobs are
 * shared; the free lists and their bound are util/buffer-pool.ts's (a pool of its own).
 */
export class JobArena {
  private static readonly UNIT = 64 * 1024;
  /** Sizes of 64 KiB and more: always shared memory (util/buffer-pool.ts, MIN_POOLED). */
  private readonly pool = new BufferPool();

  /** A view of shared memory of at least `bytes` bytes (not zeroed once reused). */
  acquire(bytes: number): Buffer {
    return this.pool.acquire(Math.max(1, Math.ceil(bytes / JobArena.UNIT)) * JobArena.UNIT, true);
  }

  /** Give back a buffer `acquire` returned, once no thread reads or writes it any more. */
  release(buf: Buffer): void {
    this.pool.release(buf);
  }

  /** Bytes waiting for reuse (tests). */
  get idleBytes(): number {
    return this.pool.idleBytes;
  }
}

/** A SealJob's answer: the records' sizes when they went into `out`, else the records. */
function sealAnswer(jobs: Jobs, job: SealJob): SealedRecords | SealAnswer {
  const r = jobs.seal(job);
  if (job.out === undefined) return r;
  return { length: r.bytes.length, storedLengths: r.storedLengths, codecs: r.codecs };
}

function openBatch(jobs: Jobs, batch: OpenBatchJob): OpenBatchAnswer {
  const records = (batch.numbers.length - BATCH_JOB_FIELDS * batch.jobCount) / 2;
  const grains = Buffer.allocUnsafeSlow(records * GRAIN_BYTES);
  const results = unpackOpenBatch(batch, grains).map((j) => {
    try {
      const { failures } = jobs.open(j);
      return failures.length === 0 ? null : { failures };
    } catch (error) {
      return { error: (error as Error).message };
    }
  });
  return { grains, results };
}

// The worker side: answer jobs until terminated.
const data = workerData as { role?: string; master?: KeyObject } | null;
if (!isMainThread && parentPort !== null && data?.role === WORKER_ROLE && data.master) {
  const jobs = new Jobs(data.master);
  const port = parentPort;
  port.on("message", ({ id, job }: { id: number; job: Job | CloseJob }) => {
    try {
      if (job.op === "close") {
        const closing = jobs.closeIndex() ?? Promise.resolve();
        closing.then(
          () => port.postMessage({ id, result: null }),
          (error: unknown) => port.postMessage({ id, error: (error as Error).message }),
        );
        return;
      }
      if (job.op === "fingerprint") {
        const r = jobs.fingerprint(job);
        const transfer = [r.fps.buffer as ArrayBuffer, r.zero.buffer as ArrayBuffer];
        if (r.found !== undefined) transfer.push(r.found.buffer as ArrayBuffer);
        port.postMessage({ id, result: r }, transfer);
      } else if (job.op === "openBatch") {
        const r = openBatch(jobs, job);
        port.postMessage({ id, result: r }, [r.grains.buffer as ArrayBuffer]);
      } else if (job.op === "seal") {
        const r = sealAnswer(jobs, job);
        const transfer = [r.storedLengths.buffer as ArrayBuffer, r.codecs.buffer as ArrayBuffer];
        if ("bytes" in r) transfer.push(r.bytes.buffer as ArrayBuffer);
        port.postMessage({ id, result: r }, transfer);
      } else {
        const r = jobs.open(job);
        if (job.out !== undefined) {
          port.postMessage({ id, result: { failures: r.failures } }); // grains are in `out`
        } else {
          const own =
            r.grains.buffer instanceof ArrayBuffer &&
            r.grains.byteLength === r.grains.buffer.byteLength;
          port.postMessage({ id, result: r }, own ? [r.grains.buffer as ArrayBuffer] : []);
        }
      }
    } catch (error) {
      port.postMessage({ id, error: (error as Error).message });
    }
  });
}
