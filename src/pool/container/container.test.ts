import { randomBytes } from "node:crypto";
import { statSync } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { crc32c } from "@node-rs/crc32";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Decompressor } from "zstd-napi";
import {
  chunkFingerprint,
  cryptoImplementation,
  type DomainKeys,
  domainKeys,
  idToBytes,
  masterKeyFromBytes,
  newId,
  sealInto,
  sealPlainRecordsNative,
  TAG_BYTES,
} from "../../crypto/index.js";
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import { ContainerIntegrityError } from "./errors.js";
import {
  Codec,
  DamageReason,
  DirectoryBuilder,
  decodeDirectory,
  FILE_HEADER_BYTES,
  FOOTER_BYTES,
  FormatError,
  RECORD_HEADER_BYTES,
  recordAad,
  recordCrc,
  writeRecordHeader,
} from "./format.js";
import { ContainerReader, readContainerHeader, readDirectory } from "./reader.js";
import {
  containerKeys,
  newRecordCompressor,
  openRecord,
  sealPackedRecords,
  sealRecords,
  zstdPays,
} from "./record.js";
import { type AppendResult, ContainerWriter, containerFileName } from "./writer.js";

let dir: string;
let keys: DomainKeys;
const cleanup: { close(): Promise<unknown> }[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "sanmux-container-"));
  keys = domainKeys(masterKeyFromBytes(randomBytes(32)), newId());
});
afterEach(async () => {
  vi.restoreAllMocks();
  for (const c of cleanup.splice(0)) await c.close().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

const fp = (grain: Uint8Array, k: DomainKeys = keys) => chunkFingerprint(k.fingerprintKey, grain);

/** Text-like data: compresses well with zstd level 1. */
function compressible(bytes: number, seed = 0): Buffer {
  const words = ["block", "grain", "chunk", "pool", "sanmux", "agent", "volume", "dedup"];
  let s = "";
  for (let i = 0; s.length < bytes; i++) s += `${words[(i * 7 + seed) % words.length]} ${i % 97} `;
  return Buffer.from(s.slice(0, bytes));
}

async function create(k: DomainKeys = keys, options = {}): Promise<ContainerWriter> {
  const w = await ContainerWriter.create(dir, k, options);
  cleanup.push(w);
  return w;
}

async function reader(path: string, k: DomainKeys = keys): Promise<ContainerReader> {
  const r = await ContainerReader.open(path, k);
  cleanup.push(r);
  return r;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error("expected a rejection");
    },
    (e: unknown) => e,
  );
}

async function expectIntegrity(
  promise: Promise<unknown>,
  reason?: DamageReason,
): Promise<ContainerIntegrityError> {
  const error = await rejection(promise);
  expect(error).toBeInstanceOf(ContainerIntegrityError);
  expect(error).toBeInstanceOf(StorageError);
  const e = error as ContainerIntegrityError;
  expect(e.code).toBe(StorageErrorCode.MediumError);
  if (reason !== undefined) expect(e.reason).toBe(reason);
  return e;
}

describe("DirectoryBuilder (FORMAT.md §4)", () => {
  it("grows from one entry and encodes what decodeDirectory reads back, 64-bit offsets too", () => {
    const b = new DirectoryBuilder(1);
    const entries = Array.from({ length: 2500 }, (_, i) => ({
      fingerprint: randomBytes(32),
      // Past 2^32 and near 2^53: the high word must be right, without BigInt.
      offset: i === 7 ? 2 ** 53 - 1 : i * 4156 + (i % 3 === 0 ? 2 ** 33 + 5 : 0),
      logicalLength: 4096 - (i % 5),
      storedLength: 60 + (i % 4111),
    }));
    for (const e of entries) b.add(e.fingerprint, e.offset, e.logicalLength, e.storedLength);
    expect(b.count).toBe(2500);
    const block = b.encode();
    const { entries: back, crc } = decodeDirectory(block);
    expect(back).toEqual(entries);
    expect(crc).toBe(crc32c(block.subarray(0, block.length - 4)));
    // Adding after an encode goes on from there; the block encoded before is a copy.
    b.add(Buffer.alloc(32, 1), 9, 10, 11);
    expect(decodeDirectory(b.encode()).entries).toHaveLength(2501);
    expect(decodeDirectory(block).entries).toHaveLength(2500);
  });

  it("encodes an empty directory", () => {
    expect(decodeDirectory(new DirectoryBuilder(0).encode()).entries).toEqual([]);
  });
});

describe("sealPackedRecords (grains back to back; incompressible runs sealed natively)", () => {
  // The addon is built by `npm run build` (and by native.test.ts); without it only the fallback
  // below runs, which must then be on purpose.
  const native = cryptoImplementation() === "native";
  it("runs with the native addon unless SANMUX_NATIVE_CRYPTO=0", () => {
    expect(native || process.env.SANMUX_NATIVE_CRYPTO === "0").toBe(true);
  });

  it("makes records that open to the grains, zstd where it pays, from any base offset", () => {
    const ck = containerKeys(keys, newId());
    const kinds = (i: number) =>
      i % 5 === 3 ? compressible(4096, i) : i % 7 === 6 ? Buffer.alloc(4096, i) : randomBytes(4096);
    const grains = Array.from({ length: 40 }, (_, i) => kinds(i));
    const data = Buffer.concat(grains);
    const fps = Buffer.concat(grains.map((g) => fp(g)));
    const base = 2 ** 32 + 123;
    const into = Buffer.alloc(40 * (RECORD_HEADER_BYTES + 4096 + TAG_BYTES) + 5);
    const sealed = sealPackedRecords(ck, base, data, 4096, fps, newRecordCompressor(), into);
    expect(sealed.bytes.buffer).toBe(into.buffer);
    let at = 0;
    for (let i = 0; i < grains.length; i++) {
      const stored = sealed.storedLengths[i]!;
      const record = Buffer.from(sealed.bytes.subarray(at, at + RECORD_HEADER_BYTES + stored));
      const opened = openRecord(ck, base + at, record, {
        decompressor: new Decompressor(),
        verifyFingerprint: true,
        expectFingerprint: fp(grains[i]!),
      });
      expect(opened.equals(grains[i]!)).toBe(true);
      expect(record.subarray(12, 44).equals(fp(grains[i]!))).toBe(true);
      const compressed = i % 5 === 3 || i % 7 === 6;
      expect(sealed.codecs[i]).toBe(compressed ? Codec.Zstd : Codec.None);
      expect(stored < 4096 + TAG_BYTES).toBe(compressed);
      at += RECORD_HEADER_BYTES + stored;
    }
    expect(at).toBe(sealed.bytes.length);
  });

  it.skipIf(!native)("seals a codec-none record byte for byte as the format functions do", () => {
    const ck = containerKeys(keys, newId());
    const grains = [randomBytes(4096), randomBytes(4096)];
    const fps = Buffer.concat(grains.map((g) => fp(g)));
    const nonces = randomBytes(24);
    const base = 2 ** 40 + 9;
    const out = Buffer.alloc(2 * (60 + 4096 + 16));
    const n = sealPlainRecordsNative(
      ck.key,
      ck.containerIdBytes,
      base,
      Buffer.concat(grains),
      4096,
      fps,
      nonces,
      out,
      0,
      false,
    );
    expect(n).toBe(2);
    const expected = Buffer.alloc(out.length);
    for (let i = 0; i < 2; i++) {
      const at = i * (60 + 4096 + 16);
      const fingerprint = fps.subarray(i * 32, i * 32 + 32);
      const nonce = nonces.subarray(i * 12, i * 12 + 12);
      const aad = recordAad(ck.containerIdBytes, base + at, fingerprint, Codec.None, 0, 4096);
      sealInto(expected, at + 60, ck.key, nonce, grains[i]!, aad);
      writeRecordHeader(expected, at, {
        codec: Codec.None,
        flags: 0,
        logicalLength: 4096,
        storedLength: 4096 + 16,
        fingerprint,
        nonce,
      });
      expected.writeUInt32LE(recordCrc(expected.subarray(at, at + 60 + 4096 + 16)), at + 56);
    }
    expect(out.equals(expected)).toBe(true);
  });
});

describe("ContainerWriter + ContainerReader", () => {
  it("round-trips compressible and incompressible grains of any size, choosing the codec", async () => {
    const w = await create();
    const grains = [
      randomBytes(4096),
      compressible(4096),
      Buffer.alloc(4096), // zeros (the pool never stores them, but the container must not care)
      randomBytes(1),
      compressible(512, 3),
      randomBytes(8192),
      compressible(65536, 5),
      randomBytes(65536),
    ];
    const results = await Promise.all(grains.map((g) => w.append(fp(g), g)));
    // Offsets follow call order and records are contiguous.
    let expected = FILE_HEADER_BYTES;
    for (const r of results) {
      expect(r.offset).toBe(expected);
      expect(r.recordLength).toBe(RECORD_HEADER_BYTES + r.storedLength);
      expected += r.recordLength;
    }
    expect(w.size).toBe(expected);
    expect(w.recordCount).toBe(grains.length);
    grains.forEach((g, i) => {
      const r = results[i]!;
      if (r.codec === Codec.None) expect(r.storedLength).toBe(g.length + TAG_BYTES);
      else expect(r.storedLength).toBeLessThan(g.length);
    });
    expect(results.map((r) => r.codec)).toEqual([
      Codec.None,
      Codec.Zstd,
      Codec.Zstd,
      Codec.None,
      Codec.Zstd,
      Codec.None,
      Codec.Zstd,
      Codec.None,
    ]);

    const r = await reader(w.path);
    for (const [i, g] of grains.entries()) {
      const res = results[i]!;
      expect((await r.read(res.offset, fp(g), res.recordLength)).equals(g)).toBe(true);
      expect((await r.read(res.offset, fp(g))).equals(g)).toBe(true); // without the length hint
    }
    expect(await r.directory()).toBeUndefined(); // not sealed yet
  });

  it("compresses only when zstd saves at least 1/32 of the grain", () => {
    expect(zstdPays(4096, 3968)).toBe(true);
    expect(zstdPays(4096, 3969)).toBe(false);
    expect(zstdPays(4096, 4096)).toBe(false);
    expect(zstdPays(1, 0)).toBe(true);
    expect(zstdPays(1, 1)).toBe(false);
  });

  it("writes the documented file header and record layout (FORMAT.md §2, §3)", async () => {
    const now = 1_700_000_000_123;
    const w = await create(keys, { now: () => now });
    const g = randomBytes(100);
    const res = await w.append(fp(g), g);
    await w.close();
    const file = await readFile(w.path);
    expect(w.path).toBe(join(dir, containerFileName(w.containerId)));
    expect(file.subarray(0, 8).toString("ascii")).toBe("SANMUXCT");
    expect(file.readUInt16LE(8)).toBe(1);
    expect(file.readUInt16LE(10)).toBe(64);
    expect(file.subarray(16, 32).equals(idToBytes(w.containerId))).toBe(true);
    expect(file.subarray(32, 48).equals(idToBytes(keys.domainId))).toBe(true);
    expect(Number(file.readBigUInt64LE(48))).toBe(now);
    expect(file.readUInt32LE(60)).toBe(crc32c(file.subarray(0, 60)));
    const rec = file.subarray(res.offset);
    expect(rec.subarray(0, 2).toString("ascii")).toBe("RC");
    expect(rec[2]).toBe(Codec.None);
    expect(rec[3]).toBe(0);
    expect(rec.readUInt32LE(4)).toBe(100);
    expect(rec.readUInt32LE(8)).toBe(100 + TAG_BYTES);
    expect(rec.subarray(12, 44).equals(fp(g))).toBe(true);
    expect(rec.readUInt32LE(56)).toBe(recordCrc(rec));
    expect(rec.length).toBe(RECORD_HEADER_BYTES + 100 + TAG_BYTES);
    // The payload is ciphertext, not the grain.
    expect(rec.subarray(RECORD_HEADER_BYTES).includes(g.subarray(0, 16))).toBe(false);
    expect(await readContainerHeader(w.path)).toEqual({
      version: 1,
      containerId: w.containerId,
      domainId: keys.domainId,
      createdAt: now,
    });
    if (process.platform !== "win32") expect((await stat(w.path)).mode & 0o777).toBe(0o600);
  });

  it("seals: directory and footer, readable without a scan; the container then never changes", async () => {
    const w = await create(keys, { now: () => 42 });
    const grains = Array.from({ length: 50 }, (_, i) =>
      i % 2 ? randomBytes(4096) : compressible(4096, i),
    );
    const results: AppendResult[] = [];
    for (const g of grains) results.push(await w.append(fp(g), g));
    const sealed = await w.seal();
    expect(await w.seal()).toBe(sealed); // idempotent
    expect(w.sealed).toBe(true);
    const size = (await stat(w.path)).size;
    expect(sealed).toEqual({
      recordCount: 50,
      size,
      directoryOffset: results.at(-1)!.offset + results.at(-1)!.recordLength,
    });
    expect(size).toBe(sealed.directoryOffset + 12 + 48 * 50 + FOOTER_BYTES);
    await expect(w.append(fp(grains[0]!), grains[0]!)).rejects.toThrow(/sealed/);

    const d = await readDirectory(w.path);
    expect(d).toBeDefined();
    expect(d!.header.containerId).toBe(w.containerId);
    expect(d!.footer).toMatchObject({
      directoryOffset: sealed.directoryOffset,
      entryCount: 50,
      sealedAt: 42,
      containerId: w.containerId,
    });
    expect(d!.entries).toEqual(
      results.map((res, i) => ({
        fingerprint: fp(grains[i]!),
        offset: res.offset,
        logicalLength: 4096,
        storedLength: res.storedLength,
      })),
    );
    const r = await reader(w.path);
    expect(await r.directory()).toEqual(d!.entries);
    for (const e of d!.entries) {
      const i = results.findIndex((x) => x.offset === e.offset);
      expect((await r.read(e.offset, e.fingerprint)).equals(grains[i]!)).toBe(true);
    }
    await expect(ContainerWriter.open(w.path, keys)).rejects.toThrow(/sealed/);
  });

  it("seals an empty container", async () => {
    const w = await create();
    const s = await w.seal();
    expect(s).toEqual({ recordCount: 0, size: 64 + 12 + 64, directoryOffset: 64 });
    expect((await readDirectory(w.path))!.entries).toEqual([]);
  });

  it("reopens an unsealed container after close and keeps appending", async () => {
    const w = await create();
    const a = randomBytes(4096);
    const ra = await w.append(fp(a), a);
    await w.sync();
    expect(w.syncedSize).toBe(w.size);
    await w.close();
    await expect(w.append(fp(a), a)).rejects.toThrow(/closed/);

    const w2 = await ContainerWriter.open(w.path, keys);
    cleanup.push(w2);
    expect(w2.containerId).toBe(w.containerId);
    expect(w2.recordCount).toBe(1);
    expect(w2.size).toBe(ra.offset + ra.recordLength);
    const b = compressible(4096);
    const rb = await w2.append(fp(b), b);
    expect(rb.offset).toBe(ra.offset + ra.recordLength);
    await w2.seal();
    const d = await readDirectory(w.path);
    expect(d!.entries.map((e) => e.offset)).toEqual([ra.offset, rb.offset]);
    const r = await reader(w.path);
    expect((await r.read(ra.offset, fp(a))).equals(a)).toBe(true);
    expect((await r.read(rb.offset, fp(b))).equals(b)).toBe(true);
  });

  it("batches the appends of one tick into few writes, and shares fdatasyncs", async () => {
    const w = await create(keys, { batchBytes: 64 * 1024 });
    const handle = (w as unknown as { handle: FileHandle }).handle;
    const write = vi.spyOn(handle, "write");
    const datasync = vi.spyOn(handle, "datasync");
    const grains = Array.from({ length: 100 }, () => randomBytes(4096));
    const appends = grains.map((g) => w.append(fp(g), g));
    await Promise.all([...appends, w.sync(), w.sync(), w.sync()]);
    // 100 records of 4172 bytes in 64 KiB batches: 7 writes (16 records each), not 100.
    expect(write.mock.calls.length).toBeLessThanOrEqual(8);
    expect(datasync.mock.calls.length).toBeLessThanOrEqual(2);
    expect(w.syncedSize).toBe(w.size);
    const r = await reader(w.path);
    const results = await Promise.all(appends);
    for (const [i, g] of grains.entries()) {
      expect((await r.read(results[i]!.offset, fp(g))).equals(g)).toBe(true);
    }
  });

  it("records written are readable through another reader before any sync", async () => {
    const w = await create();
    const r = await reader(w.path);
    const g = compressible(4096, 9);
    const res = await w.append(fp(g), g);
    expect((await r.read(res.offset, fp(g))).equals(g)).toBe(true);
  });

  it("refuses bad arguments", async () => {
    const w = await create();
    await expect(w.append(fp(Buffer.alloc(1)), Buffer.alloc(0))).rejects.toThrow(RangeError);
    await expect(w.append(Buffer.alloc(31), Buffer.alloc(1))).rejects.toThrow(TypeError);
    expect(w.size).toBe(FILE_HEADER_BYTES); // nothing was taken
    await expect(
      ContainerWriter.create(dir, keys, { containerId: w.containerId }),
    ).rejects.toThrow();
  });

  it("poisons the writer after a failed write (ENOSPC → PoolFull)", async () => {
    const w = await create();
    const handle = (w as unknown as { handle: FileHandle }).handle;
    vi.spyOn(handle, "write").mockRejectedValueOnce(
      Object.assign(new Error("no space left on device"), { code: "ENOSPC" }),
    );
    const g = randomBytes(4096);
    const error = await rejection(w.append(fp(g), g));
    expect(error).toBeInstanceOf(StorageError);
    expect((error as StorageError).code).toBe(StorageErrorCode.PoolFull);
    await expect(w.append(fp(g), g)).rejects.toBe(error);
    await expect(w.sync()).rejects.toBe(error);
    await expect(w.seal()).rejects.toBe(error);
  });
});

describe("ContainerWriter.appendBatch (records sealed elsewhere)", () => {
  it("keeps call order with appends made while a batch is being sealed; seals and reopens", async () => {
    const w = await create();
    const ck = containerKeys(keys, w.containerId);
    const compressor = newRecordCompressor();
    const batch = (n: number, seed: number) =>
      Array.from({ length: n }, (_, i) =>
        i % 2 === 0 ? compressible(4096, seed + i) : randomBytes(4096),
      );
    const g1 = batch(5, 1);
    const g2 = batch(3, 9);
    const single = compressible(4096, 42);
    // Batch 1 is sealed "on another thread" (after a delay); the single append and batch 2,
    // called meanwhile, must go after it, in call order.
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const p1 = w.appendBatch(
      g1.map((g) => fp(g)),
      g1,
      async (base) => {
        await gate;
        return sealRecords(
          ck,
          base,
          g1.map((g) => fp(g)),
          g1,
          compressor,
        );
      },
    );
    const p2 = w.append(fp(single), single);
    const p3 = w.appendBatch(
      g2.map((g) => fp(g)),
      g2,
    ); // sealed by the writer
    expect(w.size).toBeGreaterThanOrEqual(64 + 9 * (60 + 4096 + TAG_BYTES) - 2 * 4096);
    release();
    const [r1, r2, r3] = await Promise.all([p1, p2, p3]);
    const all = [...r1, r2, ...r3];
    const grains = [...g1, single, ...g2];
    for (let i = 1; i < all.length; i++) {
      expect(all[i]!.offset).toBe(all[i - 1]!.offset + all[i - 1]!.recordLength);
    }
    expect(all[0]!.offset).toBe(64);
    expect(r1[0]!.codec).toBe(1);
    expect(r1[1]!.codec).toBe(0);
    await w.sync();
    const sealed = await w.seal();
    expect(sealed.recordCount).toBe(grains.length);
    const r = await reader(w.path);
    for (let i = 0; i < all.length; i++) {
      expect((await r.read(all[i]!.offset, fp(grains[i]!))).equals(grains[i]!)).toBe(true);
    }
  });
});

describe("ContainerWriter.appendBatch: the sealed records' buffer (SealedRecords.release)", () => {
  const sealer = (w: ContainerWriter, grains: Buffer[], onRelease: (base: number) => void) => {
    const ck = containerKeys(keys, w.containerId);
    const compressor = newRecordCompressor();
    return (base: number) => ({
      ...sealRecords(
        ck,
        base,
        grains.map((g) => fp(g)),
        grains,
        compressor,
      ),
      release: () => onRelease(base),
    });
  };

  /** Every grain of every batch reads back from the file at the offset appendBatch gave it. */
  const expectBatchesReadBack = async (
    w: ContainerWriter,
    batches: Buffer[][],
    results: AppendResult[][],
  ) => {
    const rd = await reader(w.path);
    for (const [k, g] of batches.entries()) {
      for (const [i, grain] of g.entries()) {
        expect((await rd.read(results[k]![i]!.offset, fp(grain))).equals(grain)).toBe(true);
      }
    }
  };

  it("is given back once, after its records are in the file; batches written together by one pwritev", async () => {
    const w = await create();
    const batches = [0, 1, 2].map((k) => [randomBytes(4096), compressible(4096, k)]);
    const released: { base: number; fileSize: number }[] = [];
    const writev = vi.spyOn((w as unknown as { handle: FileHandle }).handle, "writev");
    // All three are pending at once: one writev of three buffers (no joined copy).
    const results = await Promise.all(
      batches.map((g) =>
        w.appendBatch(
          g.map((x) => fp(x)),
          g,
          sealer(w, g, (base) => released.push({ base, fileSize: statSync(w.path).size })),
        ),
      ),
    );
    expect(writev).toHaveBeenCalledTimes(1);
    expect(writev.mock.calls[0]![0]).toHaveLength(3);
    expect(released.map((r) => r.base)).toEqual(results.map((r) => r[0]!.offset));
    for (const [k, r] of released.entries()) {
      const last = results[k]![1]!;
      expect(r.fileSize).toBeGreaterThanOrEqual(last.offset + last.recordLength);
    }
    await w.sync();
    await expectBatchesReadBack(w, batches, results);
  });

  it("goes on from where a short pwritev stopped", async () => {
    const w = await create();
    const handle = (w as unknown as { handle: FileHandle }).handle;
    const real = handle.writev.bind(handle);
    // The first call writes only part of its first buffer.
    vi.spyOn(handle, "writev").mockImplementationOnce((bufs, position) =>
      real([(bufs[0] as Buffer).subarray(0, 1000)], position),
    );
    const batches = [0, 1].map(() => [randomBytes(4096), randomBytes(4096)]);
    const results = await Promise.all(
      batches.map((g) =>
        w.appendBatch(
          g.map((x) => fp(x)),
          g,
          sealer(w, g, () => undefined),
        ),
      ),
    );
    await expectBatchesReadBack(w, batches, results);
  });

  it("is given back when the write fails, and when the writer was poisoned before the batch took its turn", async () => {
    const w = await create();
    const handle = (w as unknown as { handle: FileHandle }).handle;
    vi.spyOn(handle, "write").mockRejectedValueOnce(
      Object.assign(new Error("input/output error"), { code: "EIO" }),
    );
    const g = [randomBytes(4096)];
    let releases = 0;
    const failed = w.appendBatch(
      [fp(g[0]!)],
      g,
      sealer(w, g, () => releases++),
    );
    await expect(failed).rejects.toBeInstanceOf(StorageError);
    expect(releases).toBe(1);
    // A poisoned writer refuses before sealing: nothing to give back.
    await expect(
      w.appendBatch(
        [fp(g[0]!)],
        g,
        sealer(w, g, () => releases++),
      ),
    ).rejects.toThrow();
    expect(releases).toBe(1);
  });
});

describe("ContainerReader integrity", () => {
  async function twoRecords(): Promise<{
    w: ContainerWriter;
    grains: Buffer[];
    results: AppendResult[];
  }> {
    const w = await create();
    const grains = [randomBytes(4096), randomBytes(4096), compressible(4096)];
    const results: AppendResult[] = [];
    for (const g of grains) results.push(await w.append(fp(g), g));
    await w.close();
    return { w, grains, results };
  }

  it("refuses a wrong fingerprint, an offset that is not a record, and a read past the end", async () => {
    const { w, grains, results } = await twoRecords();
    const r = await reader(w.path);
    await expectIntegrity(r.read(results[0]!.offset, fp(grains[1]!)), DamageReason.Fingerprint);
    await expectIntegrity(r.read(results[0]!.offset + 1, fp(grains[0]!)), DamageReason.Header);
    await expectIntegrity(r.read(0, fp(grains[0]!)), DamageReason.Header);
    await expectIntegrity(r.read(1e9, fp(grains[0]!)), DamageReason.Truncated);
  });

  it("refuses a record moved to another offset (the AAD binds the offset): GCM failure", async () => {
    const { w, grains, results } = await twoRecords();
    const file = await readFile(w.path);
    const [a, b] = [results[0]!, results[1]!]; // same length: both incompressible
    const recA = Buffer.from(file.subarray(a.offset, a.offset + a.recordLength));
    const recB = Buffer.from(file.subarray(b.offset, b.offset + b.recordLength));
    recB.copy(file, a.offset);
    recA.copy(file, b.offset);
    await writeFile(w.path, file);
    const r = await reader(w.path);
    // Each record is whole and its CRC is right, but it is at the wrong place.
    const e = await expectIntegrity(r.read(a.offset, fp(grains[1]!)), DamageReason.Tag);
    expect(e.offset).toBe(a.offset);
    expect(e.message).toMatch(/tag mismatch/);
    await expectIntegrity(r.read(b.offset, fp(grains[0]!)), DamageReason.Tag);
    // The third record is untouched.
    expect((await r.read(results[2]!.offset, fp(grains[2]!))).equals(grains[2]!)).toBe(true);
  });

  it("refuses a record copied into another container of the same domain", async () => {
    const { w, grains, results } = await twoRecords();
    const file = await readFile(w.path);
    const other = await create();
    await other.close();
    const target = await readFile(other.path);
    const a = results[0]!;
    // Same offset (right after the header), other container: the container key differs.
    await writeFile(
      other.path,
      Buffer.concat([target, file.subarray(a.offset, a.offset + a.recordLength)]),
    );
    const r = await reader(other.path);
    await expectIntegrity(r.read(a.offset, fp(grains[0]!)), DamageReason.Tag);
  });

  it("refuses a header rewritten with a valid CRC: fingerprint, codec and length are authenticated", async () => {
    const { w, grains, results } = await twoRecords();
    const original = await readFile(w.path);
    const c = results[2]!; // compressible: codec zstd
    const forge = async (edit: (rec: Buffer) => void) => {
      const file = Buffer.from(original);
      const rec = file.subarray(c.offset, c.offset + c.recordLength);
      edit(rec);
      rec.writeUInt32LE(recordCrc(rec), 56);
      await writeFile(w.path, file);
      return reader(w.path);
    };
    const otherFp = fp(grains[0]!);
    let r = await forge((rec) => otherFp.copy(rec, 12));
    await expectIntegrity(r.read(c.offset, otherFp), DamageReason.Tag);
    r = await forge((rec) => rec.writeUInt32LE(4095, 4)); // logical length
    await expectIntegrity(r.read(c.offset, fp(grains[2]!)), DamageReason.Tag);
    r = await forge((rec) => randomBytes(12).copy(rec, 44)); // nonce
    await expectIntegrity(r.read(c.offset, fp(grains[2]!)), DamageReason.Tag);
  });

  it("refuses another master key's domain keys, and another domain", async () => {
    const { w, grains, results } = await twoRecords();
    const impostor = domainKeys(masterKeyFromBytes(randomBytes(32)), keys.domainId);
    const r = await reader(w.path, impostor);
    await expectIntegrity(r.read(results[0]!.offset, fp(grains[0]!)), DamageReason.Tag);
    const otherDomain = domainKeys(masterKeyFromBytes(randomBytes(32)), newId());
    await expect(ContainerReader.open(w.path, otherDomain)).rejects.toThrow(/belongs to domain/);
  });

  it("refuses to open a container whose file header is damaged", async () => {
    const { w } = await twoRecords();
    const file = await readFile(w.path);
    file[20]! ^= 0x40;
    await writeFile(w.path, file);
    await expectIntegrity(ContainerReader.open(w.path, keys), DamageReason.FileHeader);
    await expectIntegrity(readContainerHeader(w.path), DamageReason.FileHeader);
    await writeFile(w.path, file.subarray(0, 10));
    await expectIntegrity(ContainerReader.open(w.path, keys), DamageReason.FileHeader);
  });

  it("leaves no stray files", async () => {
    const { w } = await twoRecords();
    expect(await readdir(dir)).toEqual([containerFileName(w.containerId)]);
  });
});

// The read path opens records without the CRC first (record.ts `checkCrc: false`; FORMAT.md §3,
// "Reading without the CRC"): every damage is still refused, and named as before.
describe("openRecord without the CRC check", () => {
  /** A closed container holding a random grain (stored raw) and a compressible one (zstd). */
  async function rawAndCompressed() {
    const w = await create();
    const grains = [randomBytes(4096), compressible(4096)];
    const results: AppendResult[] = [];
    for (const g of grains) results.push(await w.append(fp(g), g));
    await w.close();
    const file = await readFile(w.path);
    /** A copy of record `i`'s bytes, to damage at will. */
    const record = (i: number) => {
      const a = results[i]!;
      return Buffer.from(file.subarray(a.offset, a.offset + a.recordLength));
    };
    return { grains, results, record, ck: containerKeys(keys, w.containerId) };
  }

  it("opens what the CRC-first order opens, refuses the same damage with the same reasons", async () => {
    const { grains, results, record, ck } = await rawAndCompressed();
    const decompressor = new Decompressor();
    const aad = Buffer.alloc(64, 0xee); // reused, with stale bytes: every byte is rewritten
    const openAt = (i: number, rec: Buffer, checkCrc: boolean, offset = results[i]!.offset) => {
      try {
        return openRecord(ck, offset, rec, {
          expectFingerprint: fp(grains[i]!),
          verifyFingerprint: false,
          decompressor,
          checkCrc,
          aad,
        });
      } catch (error) {
        expect(error).toBeInstanceOf(FormatError);
        return (error as FormatError).reason;
      }
    };
    for (const i of [0, 1]) {
      expect(openAt(i, record(i), false)).toEqual(grains[i]);
      // Every byte the CRC covers (header 0..55, payload), flipped, is refused by both orders
      // with the same reason; only the CRC field itself (56..59) is not: GCM vouches for the rest.
      const length = results[i]!.recordLength;
      for (let at = 0; at < length; at++) {
        const rec = record(i);
        rec[at]! ^= 0x10;
        const first = openAt(i, rec, true);
        const second = openAt(i, rec, false);
        if (at >= 56 && at < 60) {
          expect(first).toBe(DamageReason.Crc);
          expect(second).toEqual(grains[i]);
        } else {
          expect(Buffer.isBuffer(second)).toBe(false);
          expect(second).toBe(first);
        }
      }
      // A header forged with a recomputed CRC: the tag refuses it, as before.
      const forged = record(i);
      randomBytes(12).copy(forged, 44); // nonce
      forged.writeUInt32LE(recordCrc(forged), 56);
      expect(openAt(i, forged, false)).toBe(DamageReason.Tag);
      // Moved to another offset: the AAD binds it.
      expect(openAt(i, record(i), false, results[i]!.offset + 4096)).toBe(DamageReason.Tag);
      // Cut short.
      expect(openAt(i, record(i).subarray(0, length - 1), false)).toBe(DamageReason.Truncated);
    }
  });

  it("opens an uncompressed record straight into the caller's buffer; zeros there on failure", async () => {
    const { grains, results, record, ck } = await rawAndCompressed();
    const decompressor = new Decompressor();
    const into = Buffer.alloc(3 * 4096, 0xaa);
    const opened = grains.map((g, i) =>
      openRecord(ck, results[i]!.offset, record(i), {
        expectFingerprint: fp(g),
        verifyFingerprint: true,
        decompressor,
        checkCrc: false,
        into,
        intoAt: 4096 * (i + 1),
      }),
    );
    // The random grain is stored raw: opened in place. The compressible one comes back in a
    // buffer of its own, and `into` is left as it was there.
    expect(opened[0]!.buffer).toBe(into.buffer);
    expect(opened[0]!.byteOffset - into.byteOffset).toBe(4096);
    expect(into.subarray(4096, 8192)).toEqual(grains[0]);
    expect(opened[1]).toEqual(grains[1]);
    expect(opened[1]!.buffer).not.toBe(into.buffer);
    expect(into.subarray(8192).every((b) => b === 0xaa)).toBe(true);
    expect(into.subarray(0, 4096).every((b) => b === 0xaa)).toBe(true);
    // A flipped payload byte: a Tag failure, and nothing of the grain in the target.
    const bad = record(0);
    bad[RECORD_HEADER_BYTES + 100]! ^= 1;
    const target = Buffer.alloc(4096, 0x55);
    expect(() =>
      openRecord(ck, results[0]!.offset, bad, {
        expectFingerprint: fp(grains[0]!),
        verifyFingerprint: false,
        decompressor,
        checkCrc: false,
        into: target,
      }),
    ).toThrow(FormatError);
    expect(target.every((b) => b === 0)).toBe(true);
  });
});
