/**
 * The CPU-heavy, stateless part of the data path, runnable in worker threads (DESIGN.md
 * "Libraries chosen": worker_threads for the data pipeline):
 *
 * - `fingerprint`: HMAC-SHA256 of every grain of a write under the domain's fingerprint key, and
 *   which grains are all zeros (src/crypto/README.md; DESIGN.md "Zero grains are never stored");
 * - `open`: check and open the records of one pread (FORMAT.md §3: header, CRC32C, fingerprint,
 *   GCM tag, codec, and optionally HMAC) into plaintext grains.
 *
 * - `seal`: compress and seal the new grains of a write as contiguous records from a base offset
 *   (record.ts `sealRecords`). A record's AAD binds its offset, and offsets follow the compressed
 *   sizes of the records before it (FORMAT.md §1, §3), so the ContainerWriter hands out one base
 *   at a time (`appendBatch`): the batches of one container are sealed one after another, while
 *   the other worker fingerprints and opens records.
 *
 * `Jobs.run` is the logic, the same in both modes; `JobRunner` sends jobs to worker threads, or
 * runs them inline when there are none (workers: 0, or the compiled worker script is not there,
 * as when the TypeScript sources run under the test runner). Buffers cross threads by transfer:
 * the runner copies the caller's grains first (the caller keeps its buffer), results come back as
 * fresh ArrayBuffers owned by the receiver.
 */
import type { KeyObject } from "node:crypto";
import { existsSync } from "node:fs";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { type Compressor, Decompressor } from "zstd-napi";
import { chunkFingerprint, type DomainKeys, domainKeys, TAG_BYTES } from "../crypto/index.js";
import { FormatError } from "./container/format.js";
import { DamageReason, RECORD_HEADER_BYTES } from "./container/index.js";
import {
  type ContainerKeys,
  containerKeys,
  newRecordCompressor,
  openRecord,
  type SealedRecords,
  sealRecords,
} from "./container/record.js";

export const GRAIN_BYTES = 4096;
const FP_BYTES = 32;

export interface FingerprintJob {
  readonly op: "fingerprint";
  readonly domain: string;
  /** Whole grains (a multiple of 4096 bytes). Transferred. */
  readonly data: Uint8Array;
}

export interface FingerprintResult {
  /** 32 bytes per grain; zeros for an all-zero grain. */
  readonly fps: Uint8Array;
  /** 1 for an all-zero grain. */
  readonly zero: Uint8Array;
}

export interface OpenJob {
  readonly op: "open";
  readonly domain: string;
  readonly container: string;
  /** File offset of `buf[0]`. */
  readonly base: number;
  /** Bytes read from the container (possibly short at the end of the file). Transferred. */
  readonly buf: Uint8Array;
  readonly records: readonly { offset: number; storedLength: number; fingerprint: Uint8Array }[];
  readonly verify: boolean;
}

export interface OpenResult {
  /** 4096 bytes per record, in order (undefined content for failed ones). */
  readonly grains: Uint8Array;
  readonly failures: { index: number; reason: DamageReason; message: string }[];
}

export interface SealJob {
  readonly op: "seal";
  readonly domain: string;
  readonly container: string;
  /** Container offset of the first record. */
  readonly base: number;
  /** Whole grains (a multiple of 4096 bytes). Transferred. */
  readonly data: Uint8Array;
  /** 32 bytes per grain. Transferred. */
  readonly fps: Uint8Array;
}

export type Job = FingerprintJob | OpenJob | SealJob;

const ZERO = Buffer.alloc(GRAIN_BYTES);

/** The logic of every job, with the key caches of one thread. */
export class Jobs {
  private readonly domains = new Map<string, DomainKeys>();
  private readonly containers = new Map<string, ContainerKeys>();
  private readonly decompressor = new Decompressor();
  private compressor: Compressor | undefined;

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
    const data = Buffer.from(job.data.buffer, job.data.byteOffset, job.data.length);
    const grains: Buffer[] = [];
    for (let at = 0; at < data.length; at += GRAIN_BYTES) {
      grains.push(data.subarray(at, at + GRAIN_BYTES));
    }
    return this.fingerprintGrains(job.domain, grains);
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
    const data = Buffer.from(job.data.buffer, job.data.byteOffset, job.data.length);
    const fpb = Buffer.from(job.fps.buffer, job.fps.byteOffset, job.fps.length);
    const grains: Buffer[] = [];
    const fps: Buffer[] = [];
    for (let i = 0; i * GRAIN_BYTES < data.length; i++) {
      grains.push(data.subarray(i * GRAIN_BYTES, (i + 1) * GRAIN_BYTES));
      fps.push(fpb.subarray(i * FP_BYTES, (i + 1) * FP_BYTES));
    }
    this.compressor ??= newRecordCompressor();
    return sealRecords(keys, job.base, fps, grains, this.compressor);
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
    const buf = Buffer.from(job.buf.buffer, job.buf.byteOffset, job.buf.length);
    const grains = new Uint8Array(job.records.length * GRAIN_BYTES);
    const failures: OpenResult["failures"] = [];
    job.records.forEach((r, i) => {
      const at = r.offset - job.base;
      const length = RECORD_HEADER_BYTES + r.storedLength;
      if (at < 0 || at + length > buf.length) {
        failures.push({
          index: i,
          reason: DamageReason.Truncated,
          message: "record runs past the end of the file",
        });
        return;
      }
      try {
        const plain = openRecord(keys, r.offset, buf.subarray(at, at + length), {
          expectFingerprint: r.fingerprint,
          verifyFingerprint: job.verify,
          decompressor: this.decompressor,
        });
        if (plain.length !== GRAIN_BYTES) {
          throw new FormatError(DamageReason.Content, `record holds ${plain.length} bytes`);
        }
        grains.set(plain, i * GRAIN_BYTES);
      } catch (error) {
        if (!(error instanceof FormatError)) throw error;
        failures.push({ index: i, reason: error.reason, message: error.message });
      }
    });
    return { grains, failures };
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

  /**
   * `script`: the compiled worker module; default `chunk-worker.js` beside this module (tests of
   * the TypeScript sources may point at dist/).
   */
  constructor(master: KeyObject, workers?: number, script?: string) {
    this.inline = new Jobs(master);
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
  async fingerprint(domain: string, grains: readonly Uint8Array[]): Promise<FingerprintResult> {
    if (this.lanes.length === 0 || grains.length < INLINE_BELOW) {
      return this.inline.fingerprintGrains(domain, grains);
    }
    // A large write (qemu-img convert sends 2 MiB, one at a time) is split over the threads.
    const parts = this.split(grains.length);
    const results = await Promise.all(
      parts.map(([from, to]) => {
        const data = new Uint8Array((to - from) * GRAIN_BYTES);
        for (let i = from; i < to; i++) data.set(grains[i]!, (i - from) * GRAIN_BYTES);
        return this.run<FingerprintResult>({ op: "fingerprint", domain, data }, [data.buffer]);
      }),
    );
    if (results.length === 1) return results[0]!;
    const fps = new Uint8Array(grains.length * FP_BYTES);
    const zero = new Uint8Array(grains.length);
    results.forEach((r, k) => {
      const from = parts[k]![0];
      fps.set(r.fps, from * FP_BYTES);
      zero.set(r.zero, from);
    });
    return { fps, zero };
  }

  /**
   * [from, to) index ranges, one per thread, for a job of `n` grains: at least SPLIT_MIN grains
   * each (a round trip costs ~50-100 µs; a grain ~5-15 µs).
   */
  private split(n: number): [number, number][] {
    const k = Math.max(1, Math.min(this.lanes.length, Math.floor(n / SPLIT_MIN)));
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
    const job = (from: number, to: number, at: number): Promise<SealedRecords> => {
      const data = new Uint8Array((to - from) * GRAIN_BYTES);
      const fpData = new Uint8Array((to - from) * FP_BYTES);
      for (let i = from; i < to; i++) {
        data.set(grains[i]!, (i - from) * GRAIN_BYTES);
        fpData.set(fps[i]!, (i - from) * FP_BYTES);
      }
      const j: SealJob = { op: "seal", domain, container, base: at, data, fps: fpData };
      return this.run(j, [data.buffer, fpData.buffer]);
    };
    const guesses = parts.map(([from, to]) => job(from, to, base + from * bound));
    if (parts.length === 1) return guesses[0]!;
    const sealed: SealedRecords[] = [];
    let at = base;
    for (let k = 0; k < parts.length; k++) {
      const [from, to] = parts[k]!;
      let r = await guesses[k]!;
      if (at !== base + from * bound) r = await job(from, to, at);
      sealed.push(r);
      at += r.bytes.length;
    }
    const bytes = new Uint8Array(at - base);
    const storedLengths = new Uint32Array(grains.length);
    const codecs = new Uint8Array(grains.length);
    let pos = 0;
    sealed.forEach((r, k) => {
      const from = parts[k]![0];
      bytes.set(r.bytes, pos);
      pos += r.bytes.length;
      storedLengths.set(r.storedLengths, from);
      codecs.set(r.codecs, from);
    });
    return { bytes, storedLengths, codecs };
  }

  open(job: OpenJob): Promise<OpenResult> {
    if (job.records.length < INLINE_BELOW)
      return Promise.resolve().then(() => this.inline.open(job));
    return this.run(job, [job.buf.buffer as ArrayBuffer]);
  }

  private run<T>(job: Job, transfer: ArrayBuffer[]): Promise<T> {
    let lane: Lane | undefined;
    for (const l of this.lanes)
      if (lane === undefined || l.pending.size < lane.pending.size) lane = l;
    if (lane === undefined) {
      return Promise.resolve().then(() => runJob(this.inline, job) as T);
    }
    const id = this.nextId++;
    const target = lane;
    return new Promise<T>((resolve, reject) => {
      if (target.pending.size === 0) target.worker.ref();
      target.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      target.worker.postMessage({ id, job }, transfer);
    });
  }

  async close(): Promise<void> {
    const lanes = this.lanes.splice(0);
    await Promise.all(lanes.map((l) => l.worker.terminate()));
  }
}

function runJob(jobs: Jobs, job: Job): FingerprintResult | OpenResult | SealedRecords {
  if (job.op === "fingerprint") return jobs.fingerprint(job);
  if (job.op === "seal") return jobs.seal(job);
  return jobs.open(job);
}

// The worker side: answer jobs until terminated.
const data = workerData as { role?: string; master?: KeyObject } | null;
if (!isMainThread && parentPort !== null && data?.role === WORKER_ROLE && data.master) {
  const jobs = new Jobs(data.master);
  const port = parentPort;
  port.on("message", ({ id, job }: { id: number; job: Job }) => {
    try {
      if (job.op === "fingerprint") {
        const r = jobs.fingerprint(job);
        port.postMessage({ id, result: r }, [
          r.fps.buffer as ArrayBuffer,
          r.zero.buffer as ArrayBuffer,
        ]);
      } else if (job.op === "seal") {
        const r = jobs.seal(job);
        port.postMessage({ id, result: r }, [
          r.bytes.buffer as ArrayBuffer,
          r.storedLengths.buffer as ArrayBuffer,
          r.codecs.buffer as ArrayBuffer,
        ]);
      } else {
        const r = jobs.open(job);
        port.postMessage({ id, result: r }, [r.grains.buffer as ArrayBuffer]);
      }
    } catch (error) {
      port.postMessage({ id, error: (error as Error).message });
    }
  });
}
