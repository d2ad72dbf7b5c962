import { createHash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";
import { mkdtemp, readFile, rm, stat, truncate, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { crc32c } from "@node-rs/crc32";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import {
  ATOMIC_WRITE_MAX_BYTES,
  encodeJournalHeader,
  type FileVolume,
  FileVolumeError,
  JOURNAL_HEADER_BYTES,
  journalVolumeTag,
  openFileVolume,
  volumeFilePaths,
} from "./file-volume.js";

const MiB = 2 ** 20;
let dataDir: string;
const open: FileVolume[] = [];

beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "sanmux-filevol-"));
});
afterEach(async () => {
  vi.restoreAllMocks();
  for (const v of open.splice(0)) await v.close().catch(() => undefined);
  await rm(dataDir, { recursive: true, force: true });
});

async function openVol(size = MiB, blockSize = 512, name = "vol1"): Promise<FileVolume> {
  const v = await openFileVolume(dataDir, { name, size, blockSize });
  open.push(v);
  return v;
}

/** The volume's file handle, to spy on its system calls. */
function handleOf(v: FileVolume): FileHandle {
  return (v as unknown as { handle: FileHandle }).handle;
}

function pattern(bytes: number, seed: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

async function expectStorageError(
  promise: Promise<unknown>,
  code: StorageErrorCode,
  lba?: number,
): Promise<StorageError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(StorageError);
  const se = error as StorageError;
  expect(se.code).toBe(code);
  if (lba !== undefined) expect(se.lba).toBe(lba);
  return se;
}

describe("openFileVolume", () => {
  it("creates a sparse image and its metadata", async () => {
    const v = await openVol(64 * MiB);
    expect(v.name).toBe("vol1");
    expect(v.blockSize).toBe(512);
    expect(v.blockCount()).toBe((64 * MiB) / 512);
    expect(v.grownFrom).toBeUndefined();
    expect(v.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const paths = volumeFilePaths(dataDir, "vol1");
    const image = await stat(paths.image);
    expect(image.size).toBe(64 * MiB);
    expect(image.blocks * 512).toBeLessThan(64 * MiB); // sparse
    expect(JSON.parse(await readFile(paths.meta, "utf8"))).toEqual({
      id: v.id,
      name: "vol1",
      blockSize: 512,
      size: 64 * MiB,
    });
  });

  it("keeps the id and the data when reopened", async () => {
    const v = await openVol(MiB, 4096);
    await v.write(3, pattern(4096, 7));
    await v.close();
    const again = await openVol(MiB, 4096);
    expect(again.id).toBe(v.id);
    expect(again.grownFrom).toBeUndefined();
    expect(await again.read(3, 1)).toEqual(pattern(4096, 7));
  });

  it("grows when the configured size grows, and reports it", async () => {
    const v = await openVol(MiB);
    const last = MiB / 512 - 1;
    await v.write(last, pattern(512, 1));
    await v.close();
    const grown = await openVol(4 * MiB);
    expect(grown.id).toBe(v.id);
    expect(grown.grownFrom).toBe(MiB);
    expect(grown.blockCount()).toBe((4 * MiB) / 512);
    expect(await grown.read(last, 1)).toEqual(pattern(512, 1));
    expect(await grown.read(last + 1, 8)).toEqual(Buffer.alloc(8 * 512));
    const meta = JSON.parse(await readFile(volumeFilePaths(dataDir, "vol1").meta, "utf8"));
    expect(meta.size).toBe(4 * MiB);
  });

  it("grows while open", async () => {
    const v = await openVol(MiB);
    expect(await v.grow(2 * MiB)).toBe(true);
    expect(await v.grow(2 * MiB)).toBe(false);
    expect(v.blockCount()).toBe((2 * MiB) / 512);
    await v.write(v.blockCount() - 1, pattern(512, 2));
    await expect(v.grow(MiB)).rejects.toThrow(/shrinking/);
    await v.close();
    expect((await openVol(2 * MiB)).grownFrom).toBeUndefined();
  });

  it("refuses to shrink", async () => {
    await (await openVol(2 * MiB)).close();
    open.length = 0;
    await expect(openVol(MiB)).rejects.toThrow(FileVolumeError);
    await expect(openVol(MiB)).rejects.toThrow(/shrinking it to 1048576 would destroy data/);
  });

  it("refuses to change the block size", async () => {
    await (await openVol(MiB, 512)).close();
    await expect(openVol(MiB, 4096)).rejects.toThrow(/block size 512; changing it to 4096/);
  });

  it("refuses bad arguments", async () => {
    await expect(openVol(1000)).rejects.toThrow(/not a positive multiple/);
    await expect(openVol(0)).rejects.toThrow(/not a positive multiple/);
    await expect(openVol(MiB, 1024)).rejects.toThrow(/block size 1024/);
    await expect(openVol(MiB, 512, "../evil")).rejects.toThrow(/not valid/);
  });

  it("refuses to recreate a volume whose image was lost", async () => {
    await (await openVol(MiB)).close();
    await unlink(volumeFilePaths(dataDir, "vol1").image);
    await expect(openVol(MiB)).rejects.toThrow(/data file .* is missing/);
  });

  it("adopts an image without metadata (crash during creation, or an import)", async () => {
    const paths = volumeFilePaths(dataDir, "vol1");
    await openVol(MiB).then((v) => v.close());
    open.length = 0;
    await unlink(paths.meta);
    await writeFile(paths.image, pattern(1024, 3));
    const v = await openVol(MiB);
    expect(v.grownFrom).toBe(1024);
    expect(await v.read(0, 2)).toEqual(pattern(1024, 3));
    expect(await v.read(2, 1)).toEqual(Buffer.alloc(512));
  });
});

describe("FileVolume I/O", () => {
  it("reads zeros where nothing was written", async () => {
    const v = await openVol(MiB);
    expect(await v.read(0, 16)).toEqual(Buffer.alloc(16 * 512));
    expect(await v.read(v.blockCount() - 3, 3)).toEqual(Buffer.alloc(3 * 512));
    expect(await v.read(5, 0)).toEqual(Buffer.alloc(0));
  });

  it("reads zeros past the end of a shorter image file", async () => {
    const v = await openVol(MiB);
    await v.write(0, pattern(4 * 512, 9));
    await truncate(volumeFilePaths(dataDir, "vol1").image, 3 * 512 + 100);
    const data = await v.read(0, 8);
    expect(data.subarray(0, 3 * 512 + 100)).toEqual(pattern(4 * 512, 9).subarray(0, 3 * 512 + 100));
    expect(data.subarray(3 * 512 + 100)).toEqual(Buffer.alloc(8 * 512 - 3 * 512 - 100));
  });

  it.each([
    ["first block", 0, 1],
    ["last block", MiB / 512 - 1, 1],
    ["first blocks", 0, 8],
    ["last blocks", MiB / 512 - 8, 8],
    ["whole volume", 0, MiB / 512],
    ["middle", 1000, 37],
  ])("writes and reads back: %s", async (_name, lba, blocks) => {
    const v = await openVol(MiB);
    const data = pattern(blocks * 512, lba);
    await v.write(lba, data);
    expect((await v.read(lba, blocks)).equals(data)).toBe(true); // toEqual is slow on MiBs
    if (lba > 0) expect(await v.read(lba - 1, 1)).toEqual(Buffer.alloc(512));
    if (lba + blocks < v.blockCount()) {
      expect(await v.read(lba + blocks, 1)).toEqual(Buffer.alloc(512));
    }
  });

  it("sees writes across reopen only after they happened (same file)", async () => {
    const v = await openVol(MiB, 4096);
    await Promise.all([v.write(0, pattern(4096, 1)), v.write(1, pattern(8192, 2))]);
    expect(await v.read(0, 3)).toEqual(Buffer.concat([pattern(4096, 1), pattern(8192, 2)]));
  });

  const blocks = MiB / 512;
  it.each([
    ["read before the start", (v: FileVolume) => v.read(-1, 1), -1],
    ["read past the end", (v: FileVolume) => v.read(blocks - 1, 2), blocks],
    ["read starting at the end", (v: FileVolume) => v.read(blocks, 1), blocks],
    ["read with a fractional lba", (v: FileVolume) => v.read(1.5, 1), 1.5],
    ["write past the end", (v: FileVolume) => v.write(blocks - 1, Buffer.alloc(1024)), blocks],
    ["write starting at the end", (v: FileVolume) => v.write(blocks, Buffer.alloc(512)), blocks],
    ["unmap past the end", (v: FileVolume) => v.unmap(blocks - 4, 5), blocks],
    ["block status at the end", (v: FileVolume) => v.blockStatus(blocks), blocks],
  ])("refuses out of range: %s", async (_name, op, lba) => {
    const v = await openVol(MiB);
    await expectStorageError(op(v), StorageErrorCode.OutOfRange, lba);
  });

  it("refuses a write that is not whole blocks", async () => {
    const v = await openVol(MiB);
    await expectStorageError(v.write(0, Buffer.alloc(100)), StorageErrorCode.Internal);
  });

  it("reports block status as mapped to the end", async () => {
    const v = await openVol(MiB);
    expect(await v.blockStatus(0)).toEqual({ mapped: true, blocks: blocks });
    expect(await v.blockStatus(blocks - 1)).toEqual({ mapped: true, blocks: 1 });
  });

  it("unmap makes blocks read as zeros, in the middle and at the end", async () => {
    const v = await openVol(4 * MiB);
    const n = v.blockCount();
    await v.write(0, pattern(4 * MiB, 5));
    await v.unmap(10, 3000); // crosses a 1 MiB piece boundary
    await v.unmap(n - 100, 100); // tail: truncate + extend
    const all = await v.read(0, n);
    const expected = pattern(4 * MiB, 5);
    expected.fill(0, 10 * 512, 3010 * 512);
    expected.fill(0, (n - 100) * 512);
    expect(all.equals(expected)).toBe(true);
    expect((await stat(volumeFilePaths(dataDir, "vol1").image)).size).toBe(4 * MiB);
  });

  it("unmap of the whole volume leaves a hole, and never writes zeros over zeros", async () => {
    const v = await openVol(16 * MiB);
    const write = vi.spyOn(handleOf(v), "write");
    await v.unmap(0, 2048); // never written: all pieces read as zeros
    expect(write).not.toHaveBeenCalled();
    await v.write(0, pattern(8 * MiB, 1));
    await v.unmap(0, v.blockCount());
    expect((await v.read(0, 2048)).equals(Buffer.alloc(MiB))).toBe(true);
    const image = await stat(volumeFilePaths(dataDir, "vol1").image);
    expect(image.size).toBe(16 * MiB);
    expect(image.blocks * 512).toBeLessThan(MiB);
  });
});

describe("FileVolume durability", () => {
  it("flush runs fdatasync; a plain write does not; a FUA write does", async () => {
    const v = await openVol(MiB);
    const datasync = vi.spyOn(handleOf(v), "datasync");
    await v.write(0, pattern(512, 1));
    expect(datasync).toHaveBeenCalledTimes(0);
    await v.write(1, pattern(512, 2), { fua: true });
    expect(datasync).toHaveBeenCalledTimes(1);
    await v.flush();
    expect(datasync).toHaveBeenCalledTimes(2);
  });

  it("coalesces concurrent flushes (group commit)", async () => {
    const v = await openVol(MiB);
    const release: (() => void)[] = [];
    const datasync = vi.spyOn(handleOf(v), "datasync").mockImplementation(
      () =>
        new Promise<void>((resolve) => {
          release.push(resolve);
        }),
    );
    const write = vi.spyOn(handleOf(v), "write");
    const settled: number[] = [];
    const first = v.flush().then(() => settled.push(1));
    expect(datasync).toHaveBeenCalledTimes(1);
    // These arrive while the first fdatasync runs: it may predate their writes, so they need
    // one more, which they share.
    const second = v.flush().then(() => settled.push(2));
    const third = v.write(0, pattern(512, 1), { fua: true }).then(() => settled.push(3));
    await write.mock.results[0]?.value; // the FUA write's data is written; its flush follows
    await new Promise((r) => setImmediate(r));
    expect(datasync).toHaveBeenCalledTimes(1);
    release[0]?.();
    await first;
    await vi.waitFor(() => expect(datasync).toHaveBeenCalledTimes(2));
    expect(settled).toEqual([1]);
    release[1]?.();
    await Promise.all([second, third]);
    expect(datasync).toHaveBeenCalledTimes(2);
    expect(settled.sort()).toEqual([1, 2, 3]);
    // Idle again: the next flush starts its own fdatasync at once.
    const fourth = v.flush();
    expect(datasync).toHaveBeenCalledTimes(3);
    release[2]?.();
    await fourth;
  });

  it("a failed fdatasync fails the flush and poisons later writes and flushes", async () => {
    const v = await openVol(MiB);
    const eio = Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" });
    vi.spyOn(handleOf(v), "datasync").mockRejectedValueOnce(eio);
    const error = await expectStorageError(v.flush(), StorageErrorCode.WriteFault);
    expect(error.cause).toBe(eio);
    await expectStorageError(v.flush(), StorageErrorCode.WriteFault);
    await expectStorageError(v.write(0, Buffer.alloc(512)), StorageErrorCode.WriteFault);
    expect(await v.read(0, 1)).toEqual(Buffer.alloc(512)); // reads still work
  });

  it("maps I/O errors to WriteFault and MediumError with the cause", async () => {
    const v = await openVol(MiB);
    const eio = Object.assign(new Error("EIO: i/o error"), { code: "EIO" });
    vi.spyOn(handleOf(v), "write").mockRejectedValueOnce(eio);
    const w = await expectStorageError(
      v.write(4, Buffer.alloc(512)),
      StorageErrorCode.WriteFault,
      4,
    );
    expect(w.cause).toBe(eio);
    vi.spyOn(handleOf(v), "read").mockRejectedValueOnce(eio);
    const r = await expectStorageError(v.read(9, 1), StorageErrorCode.MediumError, 9);
    expect(r.cause).toBe(eio);
  });

  it("close waits for operations in flight, syncs, and refuses later calls", async () => {
    const v = await openVol(MiB);
    const datasync = vi.spyOn(handleOf(v), "datasync");
    const write = v.write(0, pattern(512, 4));
    const closed = v.close();
    await write;
    await closed;
    expect(datasync).toHaveBeenCalled();
    await expectStorageError(v.read(0, 1), StorageErrorCode.NotReady);
    await expectStorageError(v.write(0, Buffer.alloc(512)), StorageErrorCode.NotReady);
    await expectStorageError(v.flush(), StorageErrorCode.NotReady);
    await v.close(); // idempotent
    const again = await openVol(MiB);
    expect(await again.read(0, 1)).toEqual(pattern(512, 4));
  });
});

describe("FileVolume atomic writes", () => {
  /** The journal's file handle, to spy on its system calls. */
  function journalOf(v: FileVolume): FileHandle {
    return (v as unknown as { journal: FileHandle }).journal;
  }
  const journalPath = () => volumeFilePaths(dataDir, "vol1").journal;
  const journalSize = async () => (await stat(journalPath())).size;

  /** A journal record written by hand, field by field (the format of encodeJournalHeader). */
  function handRecord(volumeId: string, offset: number, data: Buffer): Buffer {
    const header = Buffer.alloc(JOURNAL_HEADER_BYTES);
    header.write("SANMUXAW", 0, "latin1");
    header.writeUInt32LE(1, 8);
    createHash("sha256").update(volumeId).digest().copy(header, 16, 0, 16);
    header.writeBigUInt64LE(BigInt(offset), 32);
    header.writeUInt32LE(data.length, 40);
    header.writeUInt32LE(crc32c(data, crc32c(header.subarray(0, 44))) >>> 0, 44);
    return Buffer.concat([header, data]);
  }

  /** Close `v` as a crash would leave things: no sync, nothing cleaned up. */
  async function abandon(v: FileVolume): Promise<void> {
    open.splice(open.indexOf(v), 1);
    await handleOf(v).close();
    await journalOf(v).close();
  }

  it("takes up to 1 MiB: 2048 blocks of 512 bytes, 256 of 4 KiB", async () => {
    expect((await openVol(MiB, 512)).atomicWriteMaxBlocks).toBe(2048);
    expect((await openVol(MiB, 4096, "vol2")).atomicWriteMaxBlocks).toBe(256);
    expect(ATOMIC_WRITE_MAX_BYTES).toBe(MiB);
  });

  it("creates an empty journal next to the image", async () => {
    const v = await openVol(MiB);
    expect(await journalSize()).toBe(0);
    expect(v.recoveredAtomicWrite).toBeUndefined();
    expect(v.discardedAtomicJournal).toBeUndefined();
  });

  it("writes anywhere, up to the maximum; the journal is empty again when it resolves", async () => {
    const v = await openVol(4 * MiB);
    const data = pattern(MiB, 11);
    await v.writeAtomic(1001, data);
    expect((await v.read(1001, 2048)).equals(data)).toBe(true);
    expect(await v.read(1000, 1)).toEqual(Buffer.alloc(512));
    expect(await v.read(3049, 1)).toEqual(Buffer.alloc(512));
    expect(await journalSize()).toBe(0);
    await v.writeAtomic(v.blockCount() - 3, pattern(3 * 512, 12));
    expect(await v.read(v.blockCount() - 3, 3)).toEqual(pattern(3 * 512, 12));
    await v.writeAtomic(7, Buffer.alloc(0)); // nothing to do
    expect(await journalSize()).toBe(0);
  });

  it("journals, syncs, writes the image, syncs it, then empties the journal and syncs it", async () => {
    const v = await openVol(MiB);
    const steps: string[] = [];
    const image = handleOf(v);
    const journal = journalOf(v);
    const spy = <K extends "write" | "datasync" | "truncate">(h: FileHandle, m: K, tag: string) => {
      const original = h[m].bind(h) as (...a: unknown[]) => Promise<unknown>;
      vi.spyOn(h, m).mockImplementation(((...a: unknown[]) => {
        steps.push(tag);
        return original(...a);
      }) as never);
    };
    spy(journal, "write", "journal write");
    spy(journal, "datasync", "journal sync");
    spy(journal, "truncate", "journal truncate");
    spy(image, "write", "image write");
    spy(image, "datasync", "image sync");
    await v.writeAtomic(3, pattern(5 * 512, 1)); // no FUA: durable all the same
    expect(steps).toEqual([
      "journal write",
      "journal write",
      "journal sync",
      "image write",
      "image sync",
      "journal truncate",
      "journal sync",
    ]);
  });

  it("refuses what it cannot do atomically, and out-of-range writes", async () => {
    const v = await openVol(4 * MiB);
    await expectStorageError(v.writeAtomic(0, Buffer.alloc(MiB + 512)), StorageErrorCode.Internal);
    await expectStorageError(v.writeAtomic(0, Buffer.alloc(100)), StorageErrorCode.Internal);
    await expectStorageError(
      v.writeAtomic(v.blockCount() - 1, Buffer.alloc(1024)),
      StorageErrorCode.OutOfRange,
      v.blockCount(),
    );
    expect(await journalSize()).toBe(0);
  });

  it("runs atomic writes of a volume one at a time, each whole", async () => {
    const v = await openVol(MiB);
    const journal = journalOf(v);
    const steps: string[] = [];
    for (const m of ["write", "datasync", "truncate"] as const) {
      const original = journal[m].bind(journal) as (...a: unknown[]) => Promise<unknown>;
      vi.spyOn(journal, m).mockImplementation(((...a: unknown[]) => {
        steps.push(m);
        return original(...a);
      }) as never);
    }
    const writes = [1, 2, 3, 4, 5].map((seed) => pattern(64 * 512, seed));
    await Promise.all(writes.map((data, i) => v.writeAtomic(10 + i, data)));
    const one = ["write", "write", "datasync", "truncate", "datasync"];
    expect(steps).toEqual([...one, ...one, ...one, ...one, ...one]);
    // In call order: the last one wins every block it wrote.
    expect((await v.read(14, 64)).equals(writes[4]!)).toBe(true);
    expect(await journalSize()).toBe(0);
  });

  it("after a crash between the journal and the image, reopening completes the write", async () => {
    const v = await openVol(MiB);
    await v.write(100, pattern(300 * 512, 1));
    const eio = Object.assign(new Error("EIO: i/o error"), { code: "EIO" });
    vi.spyOn(handleOf(v), "write").mockRejectedValueOnce(eio);
    const data = pattern(300 * 512, 2);
    await expectStorageError(v.writeAtomic(100, data), StorageErrorCode.WriteFault, 100);
    // Poisoned until reopened: the image may be torn, the journal holds the record.
    await expectStorageError(v.write(0, Buffer.alloc(512)), StorageErrorCode.WriteFault);
    await expectStorageError(v.writeAtomic(0, Buffer.alloc(512)), StorageErrorCode.WriteFault);
    expect(await journalSize()).toBe(JOURNAL_HEADER_BYTES + data.length);
    await abandon(v);
    const again = await openVol(MiB);
    expect(again.recoveredAtomicWrite).toEqual({ offset: 100 * 512, length: 300 * 512 });
    expect(again.discardedAtomicJournal).toBeUndefined();
    expect((await again.read(100, 300)).equals(data)).toBe(true);
    expect(await journalSize()).toBe(0);
    await again.write(0, pattern(512, 3)); // usable again
  });

  it("a torn image write (half of it landed) is repaired whole", async () => {
    const v = await openVol(MiB);
    const old = pattern(256 * 512, 4);
    await v.write(0, old);
    const image = handleOf(v);
    const write = image.write.bind(image) as (...a: unknown[]) => Promise<unknown>;
    vi.spyOn(image, "write").mockImplementationOnce((async (
      buffer: Buffer,
      offset: number,
      length: number,
      position: number,
    ) => {
      await write(buffer, offset, length / 2, position); // the first half reaches the file
      throw Object.assign(new Error("killed"), { code: "EIO" });
    }) as never);
    const data = pattern(256 * 512, 5);
    await expectStorageError(v.writeAtomic(0, data), StorageErrorCode.WriteFault);
    const torn = await v.read(0, 256);
    expect(torn.subarray(0, 128 * 512).equals(data.subarray(0, 128 * 512))).toBe(true);
    expect(torn.subarray(128 * 512).equals(old.subarray(128 * 512))).toBe(true);
    await abandon(v);
    const again = await openVol(MiB);
    expect((await again.read(0, 256)).equals(data)).toBe(true);
  });

  it("replays a record written by hand (the on-disk format), idempotently", async () => {
    const v = await openVol(MiB, 4096);
    const id = v.id;
    await v.close();
    open.length = 0;
    const data = pattern(3 * 4096, 6);
    await writeFile(journalPath(), handRecord(id, 5 * 4096, data));
    // The replay itself may be interrupted: running it twice is the same as once.
    const again = await openVol(MiB, 4096);
    expect(again.recoveredAtomicWrite).toEqual({ offset: 5 * 4096, length: 3 * 4096 });
    expect(await again.read(5, 3)).toEqual(data);
    expect(await again.read(4, 1)).toEqual(Buffer.alloc(4096));
    await again.close();
    open.length = 0;
    await writeFile(journalPath(), handRecord(id, 5 * 4096, data));
    const third = await openVol(MiB, 4096);
    expect(third.recoveredAtomicWrite).toEqual({ offset: 5 * 4096, length: 3 * 4096 });
    expect(await third.read(5, 3)).toEqual(data);
    // The record the encoder makes is the same bytes.
    expect(encodeJournalHeader(journalVolumeTag(id), 5 * 4096, data)).toEqual(
      handRecord(id, 5 * 4096, data).subarray(0, JOURNAL_HEADER_BYTES),
    );
  });

  it.each([
    ["short header", (r: Buffer) => r.subarray(0, 20), "torn record (short header)"],
    ["short data", (r: Buffer) => r.subarray(0, r.length - 1), "torn record (short data)"],
    [
      "bad CRC",
      (r: Buffer) => {
        const torn = Buffer.from(r);
        torn[JOURNAL_HEADER_BYTES + 700] = torn[JOURNAL_HEADER_BYTES + 700]! ^ 1;
        return torn;
      },
      "torn record (CRC mismatch)",
    ],
    ["zeros", (r: Buffer) => Buffer.alloc(r.length), "not a journal record (bad magic)"],
  ])("drops a torn record (%s) and leaves the image alone", async (_name, tear, reason) => {
    const v = await openVol(MiB);
    const old = pattern(4 * 512, 7);
    await v.write(8, old);
    await v.close();
    open.length = 0;
    const record = handRecord(v.id, 8 * 512, pattern(4 * 512, 8));
    await writeFile(journalPath(), tear(record));
    const again = await openVol(MiB);
    expect(again.recoveredAtomicWrite).toBeUndefined();
    expect(again.discardedAtomicJournal).toEqual({ bytes: tear(record).length, reason });
    expect(await again.read(8, 4)).toEqual(old);
    expect(await journalSize()).toBe(0);
  });

  it("never replays the journal of a deleted volume into a new one of the same name", async () => {
    const v = await openVol(MiB);
    await v.close();
    open.length = 0;
    const paths = volumeFilePaths(dataDir, "vol1");
    await writeFile(paths.journal, handRecord(v.id, 0, pattern(512, 9)));
    await unlink(paths.image);
    await unlink(paths.meta);
    const fresh = await openVol(MiB);
    expect(fresh.id).not.toBe(v.id);
    expect(fresh.discardedAtomicJournal?.reason).toBe("record of another volume with this name");
    expect(await fresh.read(0, 1)).toEqual(Buffer.alloc(512));
  });

  it("drops a record that does not fit the volume", async () => {
    const v = await openVol(MiB);
    await v.close();
    open.length = 0;
    await writeFile(journalPath(), handRecord(v.id, MiB - 512, pattern(1024, 1)));
    const again = await openVol(MiB);
    expect(again.discardedAtomicJournal?.reason).toMatch(/outside the volume/);
    expect((await stat(volumeFilePaths(dataDir, "vol1").image)).size).toBe(MiB);
  });

  it("a failed journal write fails the atomic write only: nothing changed", async () => {
    const v = await openVol(MiB);
    const enospc = Object.assign(new Error("ENOSPC: no space left"), { code: "ENOSPC" });
    vi.spyOn(journalOf(v), "write").mockRejectedValueOnce(enospc);
    const error = await expectStorageError(
      v.writeAtomic(4, pattern(8 * 512, 1)),
      StorageErrorCode.WriteFault,
      4,
    );
    expect(error.cause).toBe(enospc);
    expect(await v.read(4, 8)).toEqual(Buffer.alloc(8 * 512));
    expect(await journalSize()).toBe(0);
    await v.writeAtomic(4, pattern(8 * 512, 2)); // not poisoned
    expect(await v.read(4, 8)).toEqual(pattern(8 * 512, 2));
  });

  it.each([
    ["the journal's first fdatasync", "journal", 0],
    ["the image's fdatasync", "image", 0],
    ["emptying the journal", "journal", 1],
  ] as const)("a failure of %s poisons the volume", async (_name, which, skip) => {
    const v = await openVol(MiB);
    const handle = which === "journal" ? journalOf(v) : handleOf(v);
    const datasync = handle.datasync.bind(handle);
    let calls = 0;
    vi.spyOn(handle, "datasync").mockImplementation(() =>
      calls++ === skip ? Promise.reject(new Error("EIO")) : datasync(),
    );
    await expectStorageError(v.writeAtomic(0, pattern(16 * 512, 1)), StorageErrorCode.WriteFault);
    await expectStorageError(v.flush(), StorageErrorCode.WriteFault);
    await expectStorageError(v.writeAtomic(0, Buffer.alloc(512)), StorageErrorCode.WriteFault);
  });

  it("close waits for an atomic write in flight", async () => {
    const v = await openVol(MiB);
    const data = pattern(64 * 512, 3);
    const write = v.writeAtomic(20, data);
    const closed = v.close();
    await write;
    await closed;
    await expectStorageError(v.writeAtomic(0, Buffer.alloc(512)), StorageErrorCode.NotReady);
    open.length = 0;
    expect(await journalSize()).toBe(0);
    const again = await openVol(MiB);
    expect(again.recoveredAtomicWrite).toBeUndefined();
    expect((await again.read(20, 64)).equals(data)).toBe(true);
  });
});
