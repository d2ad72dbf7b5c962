import type { FileHandle } from "node:fs/promises";
import { mkdtemp, readFile, rm, stat, truncate, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import {
  type FileVolume,
  FileVolumeError,
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
