import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { chunkFingerprint, domainKeys, masterKeyFromBytes, newId } from "../crypto/index.js";
import {
  JobArena,
  JobRunner,
  Jobs,
  packOpenBatch,
  packRecords,
  unpackOpenBatch,
} from "./chunk-worker.js";
import { ContainerWriter, FILE_HEADER_BYTES } from "./container/index.js";
import { pattern } from "./testing/helpers.js";

const master = masterKeyFromBytes(randomBytes(32));
const domain = newId();
const keys = domainKeys(master, domain);
let dir: string | undefined;
afterEach(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

const DIST_WORKER = fileURLToPath(new URL("../../dist/pool/chunk-worker.js", import.meta.url));

describe("chunk jobs", () => {
  it("fingerprints grains with the domain key and flags zero grains", async () => {
    const runner = new JobRunner(master, 0); // inline: the sources run without a compiled worker
    expect(runner.threads).toBe(0);
    const grains = [pattern("a", 4096), Buffer.alloc(4096), pattern("b", 4096)];
    const { fps, zero } = await runner.fingerprint(domain, grains);
    expect([...zero]).toEqual([0, 1, 0]);
    expect(Buffer.from(fps.subarray(0, 32))).toEqual(
      chunkFingerprint(keys.fingerprintKey, grains[0]!),
    );
    expect(Buffer.from(fps.subarray(64, 96))).toEqual(
      chunkFingerprint(keys.fingerprintKey, grains[2]!),
    );
    expect(Buffer.from(fps.subarray(32, 64))).toEqual(Buffer.alloc(32));
    await runner.close();
  });

  it("opens the records of one read and reports each failed record on its own", async () => {
    dir = mkdtempSync(join(tmpdir(), "sanmux-jobs-"));
    const w = await ContainerWriter.create(dir, keys);
    const grains = [pattern("x", 4096), Buffer.alloc(4096, 7), pattern("y", 4096)];
    const fps = grains.map((g) => chunkFingerprint(keys.fingerprintKey, g));
    const appended = await Promise.all(grains.map((g, i) => w.append(fps[i]!, g)));
    await w.sync();
    await w.close();
    const file = readFileSync(w.path);
    const records = appended.map((a, i) => ({
      offset: a.offset,
      storedLength: a.storedLength,
      fingerprint: fps[i]!,
    }));
    const jobs = new Jobs(master);
    const buf = Buffer.from(file.subarray(FILE_HEADER_BYTES));
    const ok = jobs.open({
      op: "open",
      domain,
      container: w.containerId,
      base: FILE_HEADER_BYTES,
      buf,
      ...packRecords(records),
      verify: true,
    });
    expect(ok.failures).toEqual([]);
    expect(Buffer.from(ok.grains)).toEqual(Buffer.concat(grains));
    // Damage the middle record's payload and cut the last one short.
    const damaged = Buffer.from(buf);
    const mid = appended[1]!.offset - FILE_HEADER_BYTES + 60 + 5;
    damaged[mid] = damaged[mid]! ^ 1;
    const bad = jobs.open({
      op: "open",
      domain,
      container: w.containerId,
      base: FILE_HEADER_BYTES,
      buf: damaged.subarray(0, damaged.length - 10),
      ...packRecords(records),
      verify: false,
    });
    expect(bad.failures.map((f) => [f.index, f.reason])).toEqual([
      [1, "crc"],
      [2, "truncated"],
    ]);
    expect(Buffer.from(bad.grains.subarray(0, 4096))).toEqual(grains[0]);
    // The wrong fingerprint asked for is refused too.
    const wrong = jobs.open({
      op: "open",
      domain,
      container: w.containerId,
      base: FILE_HEADER_BYTES,
      buf,
      ...packRecords([{ ...records[0]!, fingerprint: fps[2]! }]),
      verify: false,
    });
    expect(wrong.failures[0]?.reason).toBe("fingerprint");
  });

  // The compiled worker (npm run build): same jobs, through postMessage and transfers.
  it.skipIf(!existsSync(DIST_WORKER))("runs the same jobs on worker threads", async () => {
    const runner = new JobRunner(master, 2, DIST_WORKER);
    try {
      expect(runner.threads).toBe(2);
      const grains = Array.from({ length: 16 }, (_, i) =>
        i % 5 === 0 ? Buffer.alloc(4096) : pattern(`w${i}`, 4096),
      );
      const results = await Promise.all([0, 1, 2, 3].map(() => runner.fingerprint(domain, grains)));
      for (const { fps, zero } of results) {
        grains.forEach((g, i) => {
          expect(zero[i]).toBe(i % 5 === 0 ? 1 : 0);
          if (i % 5 !== 0) {
            expect(Buffer.from(fps.subarray(i * 32, i * 32 + 32))).toEqual(
              chunkFingerprint(keys.fingerprintKey, g),
            );
          }
        });
      }
      expect(grains[1]).toEqual(pattern("w1", 4096)); // the caller's buffers are untouched
    } finally {
      await runner.close();
    }
  });

  // Sealing: split over the threads, each part sealed for the offset it would have if no earlier
  // grain compressed; a part after compressible grains is sealed again for its real offset.
  const sealScript = process.env.SANMUX_CHUNK_WORKER ?? DIST_WORKER;
  const sealBuilt =
    existsSync(sealScript) && readFileSync(sealScript, "utf8").includes('op === "seal"');
  it.skipIf(!sealBuilt)(
    "seals a large batch on worker threads into contiguous records",
    async () => {
      const runner = new JobRunner(master, 2, sealScript);
      const inline = new Jobs(master);
      const container = newId();
      try {
        for (const compressible of [false, true]) {
          const grains = Array.from({ length: 48 }, (_, i) =>
            compressible && i < 20 ? Buffer.alloc(4096, i + 1) : randomBytes(4096),
          );
          const fps = grains.map((g) => chunkFingerprint(keys.fingerprintKey, g));
          const base = FILE_HEADER_BYTES;
          const sealed = await runner.seal(domain, container, base, fps, grains);
          let at = base;
          const records = grains.map((_, i) => {
            const r = { offset: at, storedLength: sealed.storedLengths[i]!, fingerprint: fps[i]! };
            at += 60 + r.storedLength;
            return r;
          });
          expect(at - base).toBe(sealed.bytes.length);
          expect(sealed.codecs[0]).toBe(compressible ? 1 : 0);
          const opened = inline.open({
            op: "open",
            domain,
            container,
            base,
            buf: Buffer.from(sealed.bytes),
            ...packRecords(records),
            verify: true,
          });
          expect(opened.failures).toEqual([]);
          expect(Buffer.from(opened.grains)).toEqual(Buffer.concat(grains));
          // The records are a view of the runner's shared memory, which goes back once released
          // (ContainerWriter does it once they are written) and serves the next batch.
          expect(sealed.bytes.buffer).toBeInstanceOf(SharedArrayBuffer);
          expect(sealed.release).toBeTypeOf("function");
          sealed.release?.();
          const next = await runner.seal(domain, container, base, fps, grains);
          expect(next.bytes.buffer).toBe(sealed.bytes.buffer);
          next.release?.();
        }
      } finally {
        await runner.close();
      }
    },
  );

  it.skipIf(!existsSync(DIST_WORKER))(
    "fingerprints a short grain as the grain followed by zeros, on worker threads too",
    async () => {
      const runner = new JobRunner(master, 2, DIST_WORKER);
      try {
        const grains = Array.from({ length: 32 }, (_, i) => pattern(`s${i}`, 4096));
        grains[20] = pattern("short", 1000);
        // Gathered into reused memory: a stale byte behind the short grain would show.
        await runner.fingerprint(
          domain,
          grains.map((_, i) => pattern(`x${i}`, 4096)),
        );
        const { fps } = await runner.fingerprint(domain, grains);
        const padded = Buffer.concat([grains[20]!, Buffer.alloc(3096)]);
        expect(Buffer.from(fps.subarray(20 * 32, 21 * 32))).toEqual(
          chunkFingerprint(keys.fingerprintKey, padded),
        );
        expect(Buffer.from(fps.subarray(21 * 32, 22 * 32))).toEqual(
          chunkFingerprint(keys.fingerprintKey, grains[21]!),
        );
      } finally {
        await runner.close();
      }
    },
  );

  // Reads on worker threads: the job preads the run from the descriptor itself and writes the
  // grains into a SharedArrayBuffer; a run large enough is split over idle threads.
  const openScript = process.env.SANMUX_CHUNK_WORKER ?? DIST_WORKER;
  const openBuilt =
    existsSync(openScript) && readFileSync(openScript, "utf8").includes("SharedArrayBuffer");
  it("opens a run from a descriptor (inline: the fallback when no thread is left)", async () => {
    dir = mkdtempSync(join(tmpdir(), "sanmux-jobs-"));
    const { id, path, records, grains } = await container(dir, 40, 27);
    const fd = openSync(path, "r");
    try {
      const jobs = new Jobs(master);
      const base = records[0]!.offset;
      const last = records[records.length - 1]!;
      const length = last.offset + 60 + last.storedLength - base;
      const r = jobs.open({
        op: "open",
        domain,
        container: id,
        base,
        fd,
        length,
        ...packRecords(records),
        verify: false,
      });
      expect(r.failures.map((f) => [f.index, f.reason])).toEqual([[27, "crc"]]);
      expect(Buffer.from(r.grains.subarray(0, 27 * 4096))).toEqual(
        Buffer.concat(grains.slice(0, 27)),
      );
    } finally {
      closeSync(fd);
    }
  });

  it.skipIf(!openBuilt)(
    "opens runs on worker threads from a descriptor, split over them",
    async () => {
      dir = mkdtempSync(join(tmpdir(), "sanmux-jobs-"));
      const { id, path, records, grains } = await container(dir, 40, 27);
      const runner = new JobRunner(master, 2, openScript);
      const fd = openSync(path, "r");
      try {
        expect(runner.offloads(1)).toBe(process.env.SANMUX_BATCH_SMALL_READS !== "0"); // batched
        expect(runner.offloads(40)).toBe(true);
        const base = records[0]!.offset;
        const last = records[records.length - 1]!;
        const end = last.offset + 60 + last.storedLength;
        const job = {
          op: "open" as const,
          domain,
          container: id,
          base,
          fd,
          ...packRecords(records),
          verify: false,
        };
        // One read alone (both threads idle: split in two), then four at once.
        for (const n of [1, 4]) {
          const results = await Promise.all(
            Array.from({ length: n }, () => runner.open({ ...job, length: end - base })),
          );
          for (const r of results) {
            expect(r.grains.buffer).toBeInstanceOf(SharedArrayBuffer);
            expect(r.failures.map((f) => [f.index, f.reason])).toEqual([[27, "crc"]]);
            grains.forEach((g, i) => {
              if (i !== 27)
                expect(Buffer.from(r.grains.subarray(i * 4096, (i + 1) * 4096))).toEqual(g);
            });
          }
        }
        // Into the caller's shared buffer (a pooled read buffer): the grains land there, at the
        // view's offset, and nothing around the view is touched.
        const shared = Buffer.from(new SharedArrayBuffer((records.length + 2) * 4096)).fill(0xee);
        const into = shared.subarray(4096, (records.length + 1) * 4096);
        const r = await runner.open({ ...job, length: end - base, out: into });
        expect(r.grains.buffer).toBe(shared.buffer);
        expect(r.grains.byteOffset).toBe(4096);
        expect(r.failures.map((f) => f.index)).toEqual([27]);
        grains.forEach((g, i) => {
          if (i !== 27) expect(into.subarray(i * 4096, (i + 1) * 4096)).toEqual(g);
        });
        expect(shared.subarray(0, 4096).every((b) => b === 0xee)).toBe(true);
        expect(shared.subarray((records.length + 1) * 4096).every((b) => b === 0xee)).toBe(true);
        // Single records (4 KiB random reads) asked for in one turn: batched, one result each; a
        // job that cannot pread fails alone.
        const one = (i: number, d = fd) => {
          const r = records[i]!;
          const packed = packRecords([r]);
          return runner.open({
            ...job,
            ...packed,
            fd: d,
            base: r.offset,
            length: 60 + r.storedLength,
          });
        };
        const singles = await Promise.allSettled([
          ...records.map((_, i) => one(i)),
          one(0, 1_000_000),
        ]);
        singles.forEach((s, i) => {
          if (i === records.length) {
            expect(s.status).toBe("rejected");
            return;
          }
          expect(s.status).toBe("fulfilled");
          const r = (s as PromiseFulfilledResult<Awaited<ReturnType<typeof one>>>).value;
          if (i === 27) expect(r.failures.map((f) => [f.index, f.reason])).toEqual([[0, "crc"]]);
          else expect(Buffer.from(r.grains)).toEqual(grains[i]);
        });
        // Past the end of the file: the records that are not all there are truncated.
        const short = await runner.open({ ...job, length: end - base + 100 });
        expect(short.failures.map((f) => f.index)).toEqual([27]);
        const cut = readFileSync(path).subarray(0, end - 10);
        writeFileSync(path, cut);
        const truncated = await runner.open({ ...job, length: end - base });
        expect(truncated.failures.map((f) => [f.index, f.reason])).toEqual([
          [27, "crc"],
          [39, "truncated"],
        ]);
      } finally {
        closeSync(fd);
        await runner.close();
      }
    },
  );
});

describe("JobArena", () => {
  it("hands out shared memory in 64 KiB steps and reuses what was given back", () => {
    const arena = new JobArena();
    const a = arena.acquire(1);
    expect(a.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(a.length).toBe(64 * 1024);
    const b = arena.acquire(64 * 1024 + 1);
    expect(b.length).toBe(128 * 1024);
    arena.release(b);
    expect(arena.idleBytes).toBe(128 * 1024);
    expect(arena.acquire(100 * 1024)).toBe(b);
    expect(arena.idleBytes).toBe(0);
    expect(arena.acquire(128 * 1024)).not.toBe(b); // in use: a new one
    arena.release(Buffer.from(new SharedArrayBuffer(64 * 1024))); // not its own: ignored
    expect(arena.idleBytes).toBe(0);
  });

  it("keeps at most 64 MiB idle", () => {
    const arena = new JobArena();
    const bufs = Array.from({ length: 9 }, () => arena.acquire(8 * 1024 * 1024));
    for (const b of bufs) arena.release(b);
    expect(arena.idleBytes).toBe(64 * 1024 * 1024);
  });
});

describe("packOpenBatch", () => {
  it("packs small open jobs into flat arrays and unpacks them exactly, grains laid out in order", () => {
    const job = (domain: string, container: string, fd: number, n: number, seed: number) => ({
      domain,
      container,
      fd,
      base: 1000 * seed,
      length: 4156 * n,
      records: Array.from({ length: n }, (_, i) => ({
        offset: 1000 * seed + 4156 * i,
        storedLength: 4096 - i,
        fingerprint: randomBytes(32),
      })),
      verify: true,
    });
    const jobs = [job("d1", "c1", 7, 1, 1), job("d1", "c2", 8, 3, 2), job("d2", "c1", 9, 2, 3)];
    const batch = packOpenBatch(jobs);
    expect(batch.names).toEqual(["d1", "c1", "c2", "d2"]); // each id once
    expect(batch.jobCount).toBe(3);
    expect(batch.fingerprints.length).toBe(6 * 32);
    const out = new Uint8Array(6 * 4096);
    const back = unpackOpenBatch(batch, out);
    expect(back).toHaveLength(3);
    let at = 0;
    back.forEach((b, k) => {
      const j = jobs[k]!;
      expect([b.domain, b.container, b.fd, b.base, b.length, b.verify]).toEqual([
        j.domain,
        j.container,
        j.fd,
        j.base,
        j.length,
        true,
      ]);
      expect([...b.offsets]).toEqual(j.records.map((r) => r.offset));
      expect([...b.storedLengths]).toEqual(j.records.map((r) => r.storedLength));
      expect(Buffer.from(b.fingerprints)).toEqual(
        Buffer.concat(j.records.map((r) => r.fingerprint)),
      );
      // Each job's grains go to the next 4096 × records bytes of `out`.
      expect(b.out!.buffer).toBe(out.buffer);
      expect(b.out!.byteOffset).toBe(at);
      expect(b.out!.length).toBe(j.records.length * 4096);
      at += b.out!.length;
    });
  });
});

/** A container of `n` grains (every third compressible), the record at `damaged` with a payload bit flipped. */
async function container(
  at: string,
  n: number,
  damaged: number,
): Promise<{
  id: string;
  path: string;
  records: { offset: number; storedLength: number; fingerprint: Uint8Array }[];
  grains: Buffer[];
}> {
  const w = await ContainerWriter.create(at, keys);
  const grains = Array.from({ length: n }, (_, i) =>
    i % 3 === 0 ? Buffer.alloc(4096, i + 1) : randomBytes(4096),
  );
  const fps = grains.map((g) => chunkFingerprint(keys.fingerprintKey, g));
  const appended = await Promise.all(grains.map((g, i) => w.append(fps[i]!, g)));
  await w.sync();
  await w.close();
  const file = readFileSync(w.path);
  const d = appended[damaged]!.offset + 60 + 7;
  file[d] = file[d]! ^ 4;
  writeFileSync(w.path, file);
  const records = appended.map((a, i) => ({
    offset: a.offset,
    storedLength: a.storedLength,
    fingerprint: fps[i]!,
  }));
  return { id: w.containerId, path: w.path, records, grains };
}
