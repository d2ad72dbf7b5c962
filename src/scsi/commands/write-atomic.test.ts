import { describe, expect, it } from "vitest";
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import type { WriteOptions } from "../../volume/volume.js";
import { Asc } from "../asc.js";
import { Limits, SenseKey } from "../constants.js";
import { ScsiTarget } from "../target.js";
import { Cdb } from "../testing/cdb-builders.js";
import { CopyCdb } from "../testing/copy-builders.js";
import {
  command,
  exec,
  expectGood,
  expectSense,
  identity,
  lunEntry,
  MutableView,
  pattern,
  setup,
  TEST_INFO,
} from "../testing/harness.js";
import { MemoryVolume, type MemoryVolumeOptions } from "../testing/memory-volume.js";
import { atomicLimits } from "./write-atomic.js";

const atomic = CopyCdb.writeAtomic16;

describe("WRITE ATOMIC (16)", () => {
  it("limits atomic writes to one 4 KiB grain, aligned on a grain", () => {
    expect(atomicLimits({ blockSize: 512 })).toEqual({
      maxTransferLength: 8,
      alignment: 8,
      granularity: 0,
      maxTransferLengthWithBoundary: 0,
      maxBoundarySize: 0,
    });
    expect(atomicLimits({ blockSize: 4096 })).toMatchObject({ maxTransferLength: 1, alignment: 1 });
  });

  it.each([1, 2, 8])("writes %i block(s) inside one grain", async (blocks) => {
    const { run, volume } = setup();
    const r = await run(atomic({ lba: 16, blocks }), pattern(blocks, 0x3c));
    expectGood(r);
    expect(r.dataOutLength).toBe(blocks * 512);
    expect(volume.peek(16, blocks).equals(pattern(blocks, 0x3c))).toBe(true);
  });

  it("refuses a write longer than a grain or not aligned on one", async () => {
    const { run, volume } = setup();
    const long = expectSense(
      await run(atomic({ lba: 0, blocks: 9 }), pattern(9, 0)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(long.fieldPointer).toEqual({ inCdb: true, byte: 12 });
    const misaligned = expectSense(
      await run(atomic({ lba: 1, blocks: 1 }), pattern(1, 0)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(misaligned.fieldPointer).toEqual({ inCdb: true, byte: 2 });
    expect(volume.calls).toEqual([]);
  });

  it("on 4 KiB blocks, one block anywhere", async () => {
    const { run } = setup({ blockSize: 4096 });
    expectGood(await run(atomic({ lba: 3, blocks: 1 }), pattern(1, 1, 4096)));
    expectSense(
      await run(atomic({ lba: 4, blocks: 2 }), pattern(2, 1, 4096)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
  });

  it("reports LOGICAL BLOCK ADDRESS OUT OF RANGE before the atomic limits", async () => {
    const { run } = setup({ blocks: 1024 });
    for (const [lba, blocks] of [
      [1023, 2],
      [1000, 48],
      [2n ** 63n, 1],
      [1024 + 8, 0],
    ] as const) {
      expectSense(
        await run(atomic({ lba, blocks }), pattern(blocks, 0)),
        SenseKey.ILLEGAL_REQUEST,
        Asc.LBA_OUT_OF_RANGE,
      );
    }
  });

  it("TRANSFER LENGTH 0 writes nothing, aligned or not", async () => {
    const { run, volume } = setup();
    expectGood(await run(atomic({ lba: 0, blocks: 0 })));
    expectGood(await run(atomic({ lba: 3, blocks: 0 })));
    expect(volume.calls).toEqual([]);
  });

  it("refuses an ATOMIC BOUNDARY (not supported) and WRPROTECT", async () => {
    const { run } = setup();
    const s = expectSense(
      await run(atomic({ lba: 0, blocks: 8, boundary: 4 }), pattern(8, 0)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(s.fieldPointer?.byte).toBe(11);
    expectSense(
      await run(atomic({ lba: 0, blocks: 8, protect: 1 }), pattern(8, 0)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
  });

  it("needs every block of Data-Out: a short buffer writes nothing", async () => {
    const { nexus, volume } = setup();
    const s = expectSense(
      await nexus.execute(command(0, atomic({ lba: 0, blocks: 8 }), pattern(4, 1))),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_COMMAND_IU,
    );
    expect(s.key).toBe(SenseKey.ILLEGAL_REQUEST);
    expect(volume.calls).toEqual([]);
  });

  it("is refused on a read-only mapping; FUA makes it durable", async () => {
    const ro = setup({ readOnly: true });
    expectSense(
      await ro.run(atomic({ lba: 0, blocks: 1 }), pattern(1, 0)),
      SenseKey.DATA_PROTECT,
      Asc.WRITE_PROTECTED,
    );
    const { run, volume } = setup({ trackDurability: true });
    expectGood(await run(atomic({ lba: 8, blocks: 8, fua: true, dpo: true }), pattern(8, 9)));
    expect(volume.readDurable(8, 8).equals(pattern(8, 9))).toBe(true);
  });
});

/** A memory volume that does atomic writes itself (as the file backend does, with its journal). */
class AtomicVolume extends MemoryVolume {
  readonly atomicWriteMaxBlocks: number;
  readonly atomicCalls: string[] = [];
  constructor(o: MemoryVolumeOptions & { atomicMax: number }) {
    super(o);
    this.atomicWriteMaxBlocks = o.atomicMax;
  }
  async writeAtomic(lba: number, data: Buffer, options?: WriteOptions): Promise<void> {
    this.atomicCalls.push(`${lba} x${data.length / this.blockSize}${options?.fua ? " fua" : ""}`);
    await this.write(lba, data, options);
  }
}

function atomicSetup(o: { blockSize?: number; blocks?: number; atomicMax?: number } = {}) {
  const blockSize = o.blockSize ?? 512;
  const volume = new AtomicVolume({
    blocks: o.blocks ?? 8192,
    blockSize,
    atomicMax: o.atomicMax ?? (1 << 20) / blockSize,
  });
  const nexus = new ScsiTarget(TEST_INFO).openNexus(
    identity(),
    new MutableView([lunEntry(0, volume)]),
  );
  const run = (cdb: Buffer, dataOut?: Buffer) => exec(nexus, cdb, dataOut);
  const blockLimits = async (): Promise<Buffer> => {
    const r = await run(Cdb.inquiry({ evpd: true, page: 0xb0, allocationLength: 0xffff }));
    expectGood(r);
    return r.data!;
  };
  return { volume, nexus, run, blockLimits };
}

/** `blocks` blocks of distinct bytes, so that a misplaced block shows. */
function distinct(blocks: number, seed: number, blockSize = 512): Buffer {
  const b = Buffer.alloc(blocks * blockSize);
  for (let i = 0; i < b.length; i++) b[i] = (i * 7 + seed + Math.floor(i / blockSize)) & 0xff;
  return b;
}

describe("WRITE ATOMIC (16) on a volume with atomic writes", () => {
  it.each([
    [512, 2048],
    [4096, 256],
  ])("%i-byte blocks: VPD 0xB0 reports %i blocks, no alignment, any length", async (bs, max) => {
    const { blockLimits } = atomicSetup({ blockSize: bs });
    const d = await blockLimits();
    expect(d.readUInt32BE(44)).toBe(max); // MAXIMUM ATOMIC TRANSFER LENGTH
    expect(d.readUInt32BE(48)).toBe(0); // ATOMIC ALIGNMENT
    expect(d.readUInt32BE(52)).toBe(0); // ATOMIC TRANSFER LENGTH GRANULARITY
    expect(d.readUInt32BE(56)).toBe(0); // MAXIMUM ATOMIC TRANSFER LENGTH WITH ATOMIC BOUNDARY
    expect(d.readUInt32BE(60)).toBe(0); // MAXIMUM ATOMIC BOUNDARY SIZE
    expect(d.readUInt32BE(44)).toBeLessThanOrEqual(d.readUInt32BE(8)); // MAXIMUM TRANSFER LENGTH
  });

  it("never reports more than MAXIMUM TRANSFER LENGTH", async () => {
    const { blockLimits } = atomicSetup({ atomicMax: 2 ** 31 });
    const d = await blockLimits();
    expect(d.readUInt32BE(44)).toBe(Limits.MAX_TRANSFER_BYTES / 512);
    expect(d.readUInt32BE(44)).toBe(d.readUInt32BE(8));
  });

  it("falls back to one grain when the volume reports no atomic blocks", async () => {
    const { blockLimits, run, volume } = atomicSetup({ atomicMax: 0 });
    const d = await blockLimits();
    expect([d.readUInt32BE(44), d.readUInt32BE(48)]).toEqual([8, 8]);
    expectGood(await run(CopyCdb.writeAtomic16({ lba: 8, blocks: 8 }), pattern(8, 1)));
    expect(volume.atomicCalls).toEqual([]); // a plain write, inside one grain
    expect(volume.calls.map((c) => c.op)).toEqual(["write"]);
  });

  it("writes 1 to 256 blocks at unaligned LBAs, at the start and at the end (libiscsi)", async () => {
    const { run, volume } = atomicSetup({ blocks: 4096 });
    for (let blocks = 1; blocks <= 256; blocks++) {
      const data = distinct(blocks, blocks);
      expectGood(await run(CopyCdb.writeAtomic16({ lba: 0, blocks }), data));
      expect(volume.peek(0, blocks).equals(data)).toBe(true);
      const end = 4096 - blocks;
      expectGood(await run(CopyCdb.writeAtomic16({ lba: end, blocks }), data));
      expect(volume.peek(end, blocks).equals(data)).toBe(true);
    }
    expect(volume.atomicCalls).toHaveLength(512);
    expect(volume.atomicCalls.slice(0, 4)).toEqual(["0 x1", "4095 x1", "0 x2", "4094 x2"]);
  });

  it("writes the maximum at an odd LBA through writeAtomic; refuses one block more", async () => {
    const { run, volume } = atomicSetup();
    const data = distinct(2048, 3);
    expectGood(await run(CopyCdb.writeAtomic16({ lba: 1001, blocks: 2048 }), data));
    expect(volume.atomicCalls).toEqual(["1001 x2048"]);
    expect(volume.peek(1001, 2048).equals(data)).toBe(true);
    volume.calls.length = 0;
    const s = expectSense(
      await run(CopyCdb.writeAtomic16({ lba: 1001, blocks: 2049 }), distinct(2049, 4)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(s.fieldPointer).toEqual({ inCdb: true, byte: 12 });
    expect(volume.calls).toEqual([]);
    expect(volume.atomicCalls).toHaveLength(1);
  });

  it("on 4 KiB blocks, 256 blocks anywhere; 257 refused", async () => {
    const { run, volume } = atomicSetup({ blockSize: 4096, blocks: 1024 });
    const data = distinct(256, 5, 4096);
    expectGood(await run(CopyCdb.writeAtomic16({ lba: 3, blocks: 256 }), data));
    expect(volume.peek(3, 256).equals(data)).toBe(true);
    expectSense(
      await run(CopyCdb.writeAtomic16({ lba: 3, blocks: 257 }), distinct(257, 5, 4096)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
  });

  it("checks the LBA range before the atomic limit", async () => {
    const { run, volume } = atomicSetup({ blocks: 4096 });
    expectSense(
      await run(CopyCdb.writeAtomic16({ lba: 4000, blocks: 3000 }), pattern(3000, 0)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.LBA_OUT_OF_RANGE,
    );
    expect(volume.calls).toEqual([]);
  });

  it("passes FUA (or WCE=0) on, and refuses read-only mappings before the volume", async () => {
    const { run, volume } = atomicSetup();
    expectGood(await run(CopyCdb.writeAtomic16({ lba: 5, blocks: 3, fua: true }), pattern(3, 1)));
    expectGood(await run(CopyCdb.writeAtomic16({ lba: 5, blocks: 3 }), pattern(3, 2)));
    expect(volume.atomicCalls).toEqual(["5 x3 fua", "5 x3"]);

    const ro = new AtomicVolume({ blocks: 64, atomicMax: 16 });
    const nexus = new ScsiTarget(TEST_INFO).openNexus(
      identity(),
      new MutableView([lunEntry(0, ro, { readOnly: true })]),
    );
    expectSense(
      await exec(nexus, CopyCdb.writeAtomic16({ lba: 1, blocks: 3 }), pattern(3, 0)),
      SenseKey.DATA_PROTECT,
      Asc.WRITE_PROTECTED,
    );
    expect(ro.atomicCalls).toEqual([]);
  });

  it("reports what the volume rejects the atomic write with", async () => {
    const { run, volume } = atomicSetup();
    volume.failNext(
      "write",
      new StorageError(StorageErrorCode.WriteFault, "journal fdatasync failed", 9),
    );
    expectSense(
      await run(CopyCdb.writeAtomic16({ lba: 9, blocks: 20 }), pattern(20, 1)),
      SenseKey.MEDIUM_ERROR,
      Asc.WRITE_ERROR,
    );
  });

  it("runs writeAtomic with its range to itself: an overlapping READ waits for it", async () => {
    const { run, volume } = atomicSetup();
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const inner = volume.writeAtomic.bind(volume);
    volume.writeAtomic = async (lba, data, options) => {
      await held;
      await inner(lba, data, options);
    };
    const data = distinct(300, 8);
    const write = run(CopyCdb.writeAtomic16({ lba: 100, blocks: 300 }), data);
    const read = run(Cdb.read16({ lba: 390, blocks: 20 }));
    const outside = await run(Cdb.read16({ lba: 0, blocks: 100 }));
    expectGood(outside); // not overlapping: not held up
    await new Promise((r) => setImmediate(r));
    expect(volume.calls.filter((c) => c.op === "read").map((c) => c.lba)).toEqual([0]);
    release();
    expectGood(await write);
    const r = await read;
    expectGood(r);
    expect(r.data!.subarray(0, 10 * 512).equals(data.subarray(290 * 512))).toBe(true);
  });

  it("a short Data-Out buffer reaches nothing", async () => {
    const { nexus, volume } = atomicSetup();
    expectSense(
      await nexus.execute(
        command(0, CopyCdb.writeAtomic16({ lba: 7, blocks: 100 }), pattern(50, 1)),
      ),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_COMMAND_IU,
    );
    expect(volume.atomicCalls).toEqual([]);
  });
});
