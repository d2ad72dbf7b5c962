import { randomBytes } from "node:crypto";
import { mkdtemp, open, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  chunkFingerprint,
  type DomainKeys,
  domainKeys,
  masterKeyFromBytes,
  newId,
} from "../../crypto/index.js";
import { StorageErrorCode } from "../../volume/errors.js";
import { ContainerIntegrityError } from "./errors.js";
import { Codec, DamageReason, FOOTER_BYTES, RECORD_HEADER_BYTES } from "./format.js";
import { ContainerReader, readDirectory } from "./reader.js";
import { type ScanResult, scanContainer } from "./scan.js";
import { type AppendResult, ContainerWriter } from "./writer.js";

let dir: string;
let keys: DomainKeys;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "sanmux-scan-"));
  keys = domainKeys(masterKeyFromBytes(randomBytes(32)), newId());
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const fp = (grain: Uint8Array) => chunkFingerprint(keys.fingerprintKey, grain);

function compressible(bytes: number, seed = 0): Buffer {
  let s = "";
  for (let i = 0; s.length < bytes; i++) s += `grain ${(i + seed) % 50} of the pool; `;
  return Buffer.from(s.slice(0, bytes));
}

interface Built {
  readonly path: string;
  readonly grains: Buffer[];
  readonly results: AppendResult[];
  /** The file right after the last record (unsealed) or the footer (sealed). */
  readonly bytes: Buffer;
  readonly recordsEnd: number;
}

/** A container of `grains`, synced and closed, sealed or not. */
async function build(grains: Buffer[], seal: boolean): Promise<Built> {
  const w = await ContainerWriter.create(dir, keys);
  const results: AppendResult[] = [];
  for (const g of grains) results.push(await w.append(fp(g), g));
  const recordsEnd = w.size;
  if (seal) {
    await w.seal();
  } else {
    await w.sync();
    await w.close();
  }
  return { path: w.path, grains, results, bytes: await readFile(w.path), recordsEnd };
}

function expectIntact(scan: ScanResult, built: Built, count = built.results.length): void {
  expect(scan.records.map((r) => r.offset)).toEqual(
    built.results.slice(0, count).map((r) => r.offset),
  );
  scan.records.forEach((r, i) => {
    const res = built.results[i]!;
    expect(r.fingerprint.equals(fp(built.grains[i]!))).toBe(true);
    expect(r).toMatchObject({
      recordLength: res.recordLength,
      storedLength: res.storedLength,
      logicalLength: built.grains[i]!.length,
      codec: res.codec,
    });
  });
}

async function flipByte(path: string, at: number): Promise<void> {
  const h = await open(path, "r+");
  try {
    const b = Buffer.alloc(1);
    await h.read(b, 0, 1, at);
    b[0]! ^= 0x10;
    await h.write(b, 0, 1, at);
  } finally {
    await h.close();
  }
}

describe("scanContainer on healthy containers", () => {
  it("walks an unsealed container by record headers, with and without keys", async () => {
    const built = await build([randomBytes(4096), compressible(4096), randomBytes(100)], false);
    const scan = await scanContainer(built.path);
    expect(scan.sealed).toBe(false);
    expect(scan.header?.domainId).toBe(keys.domainId);
    expect(scan.damage).toEqual([]);
    expect(scan.tail).toBeUndefined();
    expect(scan.validEnd).toBe(built.bytes.length);
    expect(scan.tagsVerified).toBe(false);
    expectIntact(scan, built);
    const withKeys = await scanContainer(built.path, keys);
    expect(withKeys.tagsVerified).toBe(true);
    expect(withKeys.damage).toEqual([]);
    expectIntact(withKeys, built);
  });

  it("walks a sealed container by its directory", async () => {
    const grains = Array.from({ length: 20 }, (_, i) =>
      i % 3 ? randomBytes(4096) : compressible(4096, i),
    );
    const built = await build(grains, true);
    const progress: number[] = [];
    const scan = await scanContainer(built.path, keys, { onProgress: (n) => progress.push(n) });
    expect(scan.sealed).toBe(true);
    expect(scan.directory).toHaveLength(20);
    expect(scan.footer?.directoryOffset).toBe(built.recordsEnd);
    expect(scan.damage).toEqual([]);
    expect(scan.tail).toBeUndefined();
    expectIntact(scan, built);
    expect(progress.at(-1)).toBe(built.bytes.length);
  });

  it("refuses keys of another domain (a caller bug, not damage)", async () => {
    const built = await build([randomBytes(10)], false);
    const other = domainKeys(masterKeyFromBytes(randomBytes(32)), newId());
    await expect(scanContainer(built.path, other)).rejects.toThrow(/belongs to domain/);
  });
});

describe("torn tails (a crash mid-append)", () => {
  it("finds where the valid data ends for a cut at every byte of the last record", async () => {
    const built = await build([randomBytes(4096), compressible(4096), randomBytes(1000)], false);
    const last = built.results.at(-1)!;
    for (let cut = last.offset; cut < built.bytes.length; cut++) {
      await writeFile(built.path, built.bytes.subarray(0, cut));
      const scan = await scanContainer(built.path);
      expect(scan.damage, `cut at ${cut}`).toEqual([]);
      expect(scan.sealed).toBe(false);
      expectIntact(scan, built, 2);
      expect(scan.validEnd).toBe(last.offset);
      if (cut === last.offset) {
        expect(scan.tail).toBeUndefined();
      } else {
        expect(scan.tail).toEqual({
          offset: last.offset,
          length: cut - last.offset,
          kind: "append",
        });
      }
    }
  });

  it("treats a zero-filled or half-written end the same (pages persisted out of order)", async () => {
    const built = await build([randomBytes(4096), randomBytes(4096), randomBytes(4096)], false);
    const last = built.results.at(-1)!;
    const zeroed = Buffer.from(built.bytes);
    zeroed.fill(0, last.offset);
    await writeFile(built.path, zeroed);
    let scan = await scanContainer(built.path);
    expect(scan.tail).toEqual({ offset: last.offset, length: last.recordLength, kind: "append" });
    expect(scan.damage).toEqual([]);
    const holed = Buffer.from(built.bytes);
    holed.fill(0, last.offset + 512, last.offset + 1024); // header written, a page of payload not
    await writeFile(built.path, holed);
    scan = await scanContainer(built.path);
    expect(scan.tail?.offset).toBe(last.offset);
    expectIntact(scan, built, 2);
  });

  it("lets the writer truncate the tail and go on appending", async () => {
    const built = await build([randomBytes(4096), compressible(4096), randomBytes(4096)], false);
    const last = built.results.at(-1)!;
    for (const cut of [
      last.offset + 1,
      last.offset + RECORD_HEADER_BYTES,
      built.bytes.length - 1,
    ]) {
      await writeFile(built.path, built.bytes.subarray(0, cut));
      await expect(ContainerWriter.open(built.path, keys)).rejects.toThrow(
        /torn tail of \d+ bytes/,
      );
      const w = await ContainerWriter.open(built.path, keys, { truncateTail: true });
      expect(w.size).toBe(last.offset);
      const g = compressible(2000, cut);
      const res = await w.append(fp(g), g);
      expect(res.offset).toBe(last.offset);
      await w.seal();
      const r = await ContainerReader.open(built.path, keys);
      try {
        expect((await r.read(res.offset, fp(g))).equals(g)).toBe(true);
        expect(
          (await r.read(built.results[0]!.offset, fp(built.grains[0]!))).equals(built.grains[0]!),
        ).toBe(true);
      } finally {
        await r.close();
      }
      const scan = await scanContainer(built.path, keys);
      expect(scan.sealed).toBe(true);
      expect(scan.damage).toEqual([]);
      expect(scan.records).toHaveLength(3);
    }
  });

  it("a crash during seal leaves an unsealed container whose tail is the directory", async () => {
    const built = await build([randomBytes(4096), compressible(4096)], true);
    const dirOffset = built.recordsEnd;
    for (let cut = dirOffset + 4; cut < built.bytes.length; cut++) {
      await writeFile(built.path, built.bytes.subarray(0, cut));
      const scan = await scanContainer(built.path);
      expect(scan.sealed, `cut at ${cut}`).toBe(false);
      expect(scan.damage).toEqual([]);
      expectIntact(scan, built);
      expect(scan.tail).toEqual({ offset: dirOffset, length: cut - dirOffset, kind: "seal" });
      expect(await readDirectory(built.path)).toBeUndefined();
    }
    // Repair: truncate the tail and seal again.
    const w = await ContainerWriter.open(built.path, keys, { truncateTail: true });
    await w.seal();
    const resealed = await readFile(built.path);
    expect(resealed.length).toBe(built.bytes.length);
    // Same records and directory; the footer differs only by its seal time (and CRC).
    const footerAt = built.bytes.length - FOOTER_BYTES;
    expect(resealed.subarray(0, footerAt + 24).equals(built.bytes.subarray(0, footerAt + 24))).toBe(
      true,
    );
    const scan = await scanContainer(built.path, keys);
    expect(scan.sealed).toBe(true);
    expectIntact(scan, built);
  });
});

describe("damage", () => {
  async function expectMediumError(path: string, offset: number, grain: Buffer): Promise<void> {
    const r = await ContainerReader.open(path, keys).catch((e: unknown) => e);
    if (!(r instanceof ContainerReader)) throw r;
    try {
      const error = await r.read(offset, fp(grain)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ContainerIntegrityError);
      expect((error as ContainerIntegrityError).code).toBe(StorageErrorCode.MediumError);
    } finally {
      await r.close();
    }
  }

  async function expectReadable(path: string, built: Built, except: number): Promise<void> {
    const r = await ContainerReader.open(path, keys);
    try {
      for (const [i, res] of built.results.entries()) {
        if (i === except) continue;
        expect((await r.read(res.offset, fp(built.grains[i]!))).equals(built.grains[i]!)).toBe(
          true,
        );
      }
    } finally {
      await r.close();
    }
  }

  for (const [name, grain] of [
    ["an incompressible record", () => randomBytes(1024)],
    ["a compressed record", () => compressible(3000)],
  ] as const) {
    it(`a flipped byte anywhere in ${name} of a sealed container: CRC error without keys, MEDIUM ERROR on read`, async () => {
      const built = await build([randomBytes(1024), grain(), randomBytes(1024)], true);
      const target = built.results[1]!;
      expect(target.codec).toBe(name.includes("compressed") ? Codec.Zstd : Codec.None);
      for (let i = 0; i < target.recordLength; i++) {
        const at = target.offset + i;
        await flipByte(built.path, at);
        const scan = await scanContainer(built.path);
        expect(scan.sealed).toBe(true);
        expect(scan.damage, `byte ${i}`).toHaveLength(1);
        const d = scan.damage[0]!;
        expect(d.offset).toBe(target.offset);
        expect(d.length).toBe(target.recordLength);
        expect(d.fingerprint?.equals(fp(built.grains[1]!))).toBe(true); // from the directory
        // Payload and checksummed header bytes: CRC; a field that breaks the header's own rules
        // (magic, codec, flags, lengths) or disagrees with the directory is caught before the CRC.
        if (i >= RECORD_HEADER_BYTES || (i >= 12 && i < 56))
          expect(d.reason).toBe(DamageReason.Crc);
        else
          expect([DamageReason.Crc, DamageReason.Header, DamageReason.Mismatch]).toContain(
            d.reason,
          );
        expect(scan.records.map((r) => r.offset)).toEqual([
          built.results[0]!.offset,
          built.results[2]!.offset,
        ]);
        if (i % 16 === 0 || i < RECORD_HEADER_BYTES) {
          await expectMediumError(built.path, target.offset, built.grains[1]!);
        }
        await flipByte(built.path, at); // restore
      }
      await expectReadable(built.path, built, 1);
      expect((await scanContainer(built.path, keys)).damage).toEqual([]);
    });
  }

  it("a flipped byte in a record of an unsealed container: the records after it are still found", async () => {
    const built = await build([randomBytes(2048), randomBytes(2048), compressible(2048)], false);
    const target = built.results[1]!;
    for (let i = 0; i < target.recordLength; i += 7) {
      await flipByte(built.path, target.offset + i);
      const scan = await scanContainer(built.path);
      expect(scan.tail, `byte ${i}`).toBeUndefined();
      expect(scan.damage).toHaveLength(1);
      expect(scan.damage[0]).toMatchObject({ offset: target.offset, length: target.recordLength });
      expect(scan.records.map((r) => r.offset)).toEqual([
        built.results[0]!.offset,
        built.results[2]!.offset,
      ]);
      await expectMediumError(built.path, target.offset, built.grains[1]!);
      await flipByte(built.path, target.offset + i);
    }
    await expectReadable(built.path, built, 1);
  });

  it("a record moved to another offset: intact to the key-less scan of an unsealed container, a tag failure with keys", async () => {
    const built = await build([randomBytes(4096), randomBytes(4096)], false);
    const [a, b] = [built.results[0]!, built.results[1]!];
    const file = Buffer.from(built.bytes);
    built.bytes.copy(file, a.offset, b.offset, b.offset + b.recordLength);
    built.bytes.copy(file, b.offset, a.offset, a.offset + a.recordLength);
    await writeFile(built.path, file);
    const keyless = await scanContainer(built.path);
    expect(keyless.damage).toEqual([]); // each record is whole; only keys can tell
    const scan = await scanContainer(built.path, keys);
    expect(scan.damage.map((d) => [d.offset, d.reason])).toEqual([
      [a.offset, DamageReason.Tag],
      [b.offset, DamageReason.Tag],
    ]);
    expect(scan.damage[0]!.fingerprint?.equals(fp(built.grains[1]!))).toBe(true);
  });

  it("records swapped in a sealed container: the directory shows the mismatch without keys", async () => {
    const built = await build([randomBytes(4096), randomBytes(4096)], true);
    const [a, b] = [built.results[0]!, built.results[1]!];
    const file = Buffer.from(built.bytes);
    built.bytes.copy(file, a.offset, b.offset, b.offset + b.recordLength);
    built.bytes.copy(file, b.offset, a.offset, a.offset + a.recordLength);
    await writeFile(built.path, file);
    const scan = await scanContainer(built.path);
    expect(scan.damage.map((d) => d.reason)).toEqual([
      DamageReason.Mismatch,
      DamageReason.Mismatch,
    ]);
  });

  it("a damaged directory: reported, and the records are walked by their headers", async () => {
    const built = await build([randomBytes(4096), compressible(4096), randomBytes(4096)], true);
    await flipByte(built.path, built.recordsEnd + 20);
    const scan = await scanContainer(built.path);
    expect(scan.sealed).toBe(true);
    expect(scan.directory).toBeUndefined();
    expect(scan.damage.map((d) => [d.offset, d.reason])).toEqual([
      [built.recordsEnd, DamageReason.Directory],
    ]);
    expectIntact(scan, built);
    await expect(readDirectory(built.path)).rejects.toBeInstanceOf(ContainerIntegrityError);
  });

  it("a damaged footer: the container reads as unsealed with its directory as the tail", async () => {
    const built = await build([randomBytes(4096), randomBytes(4096)], true);
    await flipByte(built.path, built.bytes.length - FOOTER_BYTES + 9);
    const scan = await scanContainer(built.path);
    expect(scan.sealed).toBe(false);
    expect(scan.tail).toMatchObject({ offset: built.recordsEnd, kind: "seal" });
    expectIntact(scan, built);
  });

  it("a damaged file header: reported, records still checked by CRC", async () => {
    const built = await build([randomBytes(4096), randomBytes(4096)], false);
    await flipByte(built.path, 40);
    const scan = await scanContainer(built.path, keys);
    expect(scan.header).toBeUndefined();
    expect(scan.tagsVerified).toBe(false);
    expect(scan.damage.map((d) => [d.offset, d.reason])).toEqual([[0, DamageReason.FileHeader]]);
    expectIntact(scan, built);
    await truncate(built.path, 30);
    const short = await scanContainer(built.path);
    expect(short.damage.map((d) => d.reason)).toEqual([DamageReason.FileHeader]);
    expect(short.records).toEqual([]);
  });
});

describe("never wrong data (property)", () => {
  it("whatever bytes are damaged, every record the scan calls intact reads back exactly, and every untouched record is found", async () => {
    const grains = Array.from({ length: 6 }, (_, i) =>
      i % 2 ? randomBytes(700 + i * 100) : compressible(2000, i),
    );
    const sealed = await build(grains, true);
    const sealedBytes = sealed.bytes;
    const byFingerprint = new Map(grains.map((g) => [fp(g).toString("hex"), g]));
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), {
          minLength: 1,
          maxLength: 4,
        }),
        async (seal, flips) => {
          // Unsealed: the same records without directory and footer.
          const original = seal ? sealedBytes : sealedBytes.subarray(0, sealed.recordsEnd);
          const file = Buffer.from(original);
          const touched = new Set<number>();
          for (const [n, mask] of flips) {
            const at = n % file.length;
            file[at]! ^= mask;
            touched.add(at);
          }
          await writeFile(sealed.path, file);
          const scan = await scanContainer(sealed.path, keys);
          expect(scan.validEnd).toBeLessThanOrEqual(file.length);
          if (scan.header !== undefined) {
            const r = await ContainerReader.open(sealed.path, keys);
            try {
              for (const rec of scan.records) {
                const expected = byFingerprint.get(rec.fingerprint.toString("hex"));
                expect(expected).toBeDefined();
                expect((await r.read(rec.offset, rec.fingerprint)).equals(expected!)).toBe(true);
              }
            } finally {
              await r.close();
            }
          }
          const found = new Set(scan.records.map((rec) => rec.offset));
          for (const res of sealed.results) {
            const hit = [...touched].some(
              (t) => t >= res.offset && t < res.offset + res.recordLength,
            );
            if (!hit) expect(found.has(res.offset)).toBe(true);
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});
