/**
 * The commands that depend on physical blocks larger than the logical block (the pool: 512-byte
 * blocks on 4 KiB grains), against an in-memory volume that provisions whole grains, as the pool
 * does: holes per grain, no zero grains stored, a partial unmap zeroes its blocks and leaves the
 * grain mapped, and `blockStatus` reports one grain at a time (the worst case for GET LBA
 * STATUS, which merges them). The flows replay libiscsi 1.19's tests that need more than one
 * logical block per physical block (CompareAndWrite.InvalidDataOutSize,
 * WriteSame10/16.InvalidDataOutSize, WriteSame10/16.UnmapUnaligned), GetLBAStatus.UnmapSingle
 * and Sanitize.BlockErase.
 */
import { describe, expect, it } from "vitest";
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import type { BlockStatus, Volume } from "../../volume/volume.js";
import { Asc } from "../asc.js";
import { SenseKey } from "../constants.js";
import { ScsiTarget } from "../target.js";
import { Cdb } from "../testing/cdb-builders.js";
import {
  exec,
  expectGood,
  expectSense,
  identity,
  lunEntry,
  MutableView,
  pattern,
  TEST_INFO,
} from "../testing/harness.js";
import { MAX_STATUS_CALLS } from "./lba-status.js";
import { SANITIZE, SanitizeAction } from "./sanitize.js";

const BLOCK = 512;
const GRAIN = 4096;
const PER_GRAIN = GRAIN / BLOCK;

/** A thin volume provisioned in whole grains (see the module comment). */
class GrainVolume implements Volume {
  readonly id = "00000000-0000-4000-8000-00000000a11c";
  readonly name = "grains";
  readonly blockSize = BLOCK;
  readonly physicalBlockSize = GRAIN;
  readonly grains = new Map<number, Buffer>();
  statusCalls = 0;
  constructor(private readonly blocks: number) {}

  blockCount(): number {
    return this.blocks;
  }
  async read(lba: number, blocks: number): Promise<Buffer> {
    this.check(lba, blocks);
    const out = Buffer.alloc(blocks * BLOCK);
    for (let i = 0; i < blocks; i++) {
      const b = lba + i;
      this.grains.get(Math.floor(b / PER_GRAIN))?.copy(out, i * BLOCK, (b % PER_GRAIN) * BLOCK);
    }
    return out;
  }
  async write(lba: number, data: Buffer): Promise<void> {
    this.check(lba, data.length / BLOCK);
    for (let i = 0; i < data.length / BLOCK; i++) {
      this.setBlock(lba + i, data.subarray(i * BLOCK, (i + 1) * BLOCK));
    }
  }
  async flush(): Promise<void> {}
  /** Whole grains are dropped; the blocks of a partial grain are zeroed (it stays mapped). */
  async unmap(lba: number, blocks: number): Promise<void> {
    this.check(lba, blocks);
    const zero = Buffer.alloc(BLOCK);
    for (let b = lba; b < lba + blocks; ) {
      const grain = Math.floor(b / PER_GRAIN);
      if (b % PER_GRAIN === 0 && b + PER_GRAIN <= lba + blocks) {
        this.grains.delete(grain);
        b += PER_GRAIN;
      } else {
        this.setBlock(b, zero);
        b++;
      }
    }
  }
  /** One grain at a time: mapped or not, up to the end of that grain. */
  async blockStatus(lba: number): Promise<BlockStatus> {
    this.statusCalls++;
    this.check(lba, 1);
    const grain = Math.floor(lba / PER_GRAIN);
    return {
      mapped: this.grains.has(grain),
      blocks: Math.min((grain + 1) * PER_GRAIN, this.blocks) - lba,
    };
  }
  async close(): Promise<void> {}

  private setBlock(lba: number, block: Buffer): void {
    const index = Math.floor(lba / PER_GRAIN);
    const grain = this.grains.get(index) ?? Buffer.alloc(GRAIN);
    block.copy(grain, (lba % PER_GRAIN) * BLOCK);
    // Like the pool: a grain of zeros is never stored.
    if (grain.every((byte) => byte === 0)) this.grains.delete(index);
    else this.grains.set(index, grain);
  }
  private check(lba: number, blocks: number): void {
    if (lba < 0 || lba + blocks > this.blocks) {
      throw new StorageError(StorageErrorCode.OutOfRange, "range beyond the volume", lba);
    }
  }
}

function setupGrains(blocks = 4096) {
  const target = new ScsiTarget(TEST_INFO);
  const volume = new GrainVolume(blocks);
  const entry = lunEntry(0, volume);
  const nexus = target.openNexus(identity(), new MutableView([entry]));
  const run = (cdb: Buffer, dataOut?: Buffer) => exec(nexus, cdb, dataOut);
  return { target, volume, run };
}

function unmapList(ranges: [number, number][]): Buffer {
  const list = Buffer.alloc(8 + 16 * ranges.length);
  list.writeUInt16BE(list.length - 2, 0);
  list.writeUInt16BE(16 * ranges.length, 2);
  ranges.forEach(([lba, blocks], i) => {
    list.writeBigUInt64BE(BigInt(lba), 8 + 16 * i);
    list.writeUInt32BE(blocks, 16 + 16 * i);
  });
  return list;
}

async function lbaStatus(run: ReturnType<typeof setupGrains>["run"], lba: number, length = 4096) {
  const r = await run(Cdb.getLbaStatus(lba, length));
  expectGood(r);
  const d = r.data!;
  const out: { lba: number; blocks: number; mapped: boolean }[] = [];
  for (let at = 8; at + 16 <= d.length; at += 16) {
    out.push({
      lba: Number(d.readBigUInt64BE(at)),
      blocks: d.readUInt32BE(at + 8),
      mapped: (d[at + 12]! & 0x0f) === 0,
    });
  }
  return out;
}

describe("a volume with 4 KiB physical blocks (pool grains) under 512-byte blocks", () => {
  it("reports 8 logical blocks per physical block and a one-grain unmap granularity", async () => {
    const { run } = setupGrains();
    const rc = (await run(Cdb.readCapacity16())).data!;
    expect(rc[13]! & 0x0f).toBe(3); // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT
    expect(rc.readUInt16BE(14) & 0x3fff).toBe(0); // LOWEST ALIGNED LOGICAL BLOCK ADDRESS
    const b0 = (await run(Cdb.inquiry({ evpd: true, page: 0xb0 }))).data!;
    expect(b0.readUInt16BE(6)).toBe(PER_GRAIN); // OPTIMAL TRANSFER LENGTH GRANULARITY
    expect(b0.readUInt32BE(28)).toBe(PER_GRAIN); // OPTIMAL UNMAP GRANULARITY
    expect(b0.readUInt32BE(32)).toBe(0x8000_0000); // UGAVALID, alignment 0
  });

  it("UNMAP of whole grains deallocates them; of part of a grain zeroes it, still mapped", async () => {
    const { run, volume } = setupGrains();
    expectGood(await run(Cdb.write10({ lba: 0, blocks: 32 }), pattern(32, 0x41)));
    const list = unmapList([
      [8, 8],
      [17, 3],
    ]);
    expectGood(await run(Cdb.unmap(list.length), list));
    expect((await run(Cdb.read10({ lba: 8, blocks: 8 }))).data!.equals(pattern(8, 0))).toBe(true);
    expect(volume.grains.has(1)).toBe(false);
    expect((await run(Cdb.read10({ lba: 17, blocks: 3 }))).data!.equals(pattern(3, 0))).toBe(true);
    expect((await run(Cdb.read10({ lba: 16, blocks: 1 }))).data!.equals(pattern(1, 0x41))).toBe(
      true,
    );
    expect(await lbaStatus(run, 0)).toEqual([
      { lba: 0, blocks: 8, mapped: true },
      { lba: 8, blocks: 8, mapped: false },
      // The partly unmapped grain 16-23 stays mapped (SBC-4: partial granules need not be).
      { lba: 16, blocks: 16, mapped: true },
      { lba: 32, blocks: 4096 - 32, mapped: false },
    ]);
  });

  it("replays GetLBAStatus.UnmapSingle: the first loop passes, the second answers per SBC-4", async () => {
    const { run } = setupGrains();
    const lbppb = PER_GRAIN;
    // First loop: unmap one physical block at a time; the next one is still mapped.
    expectGood(await run(Cdb.write10({ lba: 0, blocks: 256 + lbppb }), pattern(256 + lbppb, 65)));
    for (let i = 0; i + lbppb <= 256; i += lbppb) {
      const list = unmapList([[i, lbppb]]);
      expectGood(await run(Cdb.unmap(list.length), list));
      expect((await lbaStatus(run, i, 24))[0]).toMatchObject({ lba: i, mapped: false });
      expect((await lbaStatus(run, i + lbppb, 24))[0]).toMatchObject({
        lba: i + lbppb,
        mapped: true,
      });
    }
    // Second loop: after unmapping [0, i), libiscsi asks for LBA i + 1 and expects the first
    // descriptor at i + lbppb, which only holds for lbppb = 1. SBC-4 (GET LBA STATUS) starts
    // the first descriptor at the STARTING LOGICAL BLOCK ADDRESS: i + 1, mapped.
    for (let i = lbppb; i + lbppb <= 256; i += lbppb) {
      expectGood(await run(Cdb.write10({ lba: 0, blocks: 256 + lbppb }), pattern(256 + lbppb, 65)));
      const list = unmapList([[0, i]]);
      expectGood(await run(Cdb.unmap(list.length), list));
      expect((await lbaStatus(run, 0, 24))[0]).toEqual({ lba: 0, blocks: i, mapped: false });
      expect((await lbaStatus(run, i + 1, 24))[0]).toMatchObject({ lba: i + 1, mapped: true });
    }
  });

  it("replays WriteSame10/16.UnmapUnaligned: GOOD, zeros, the partial grain mapped", async () => {
    for (const build of [Cdb.writeSame10, Cdb.writeSame16]) {
      const { run, volume } = setupGrains();
      expectGood(await run(Cdb.write10({ lba: 0, blocks: 16 }), pattern(16, 0x5a)));
      for (let i = 1; i < PER_GRAIN; i++) {
        const r = await run(
          build({ lba: i, blocks: PER_GRAIN - i, unmap: true }),
          pattern(1, 0xa6),
        );
        expectGood(r);
      }
      expect((await run(Cdb.read10({ lba: 0, blocks: 8 }))).data!).toEqual(
        Buffer.concat([pattern(1, 0x5a), pattern(7, 0)]),
      );
      expect(volume.grains.has(0)).toBe(true);
      // An aligned whole grain with UNMAP is deallocated, whatever the pattern.
      expectGood(await run(build({ lba: 8, blocks: 8, unmap: true }), pattern(1, 0xa6)));
      expect(volume.grains.has(1)).toBe(false);
      expect(await lbaStatus(run, 8, 24)).toEqual([{ lba: 8, blocks: 4096 - 8, mapped: false }]);
    }
  });

  it("replays the InvalidDataOutSize tests: wrong Data-Out sizes are refused", async () => {
    const { run, volume } = setupGrains();
    for (const build of [Cdb.writeSame10, Cdb.writeSame16]) {
      for (const bytes of [BLOCK / 2, BLOCK * 2]) {
        const r = await run(build({ lba: 0, blocks: 1, unmap: true }), Buffer.alloc(bytes, 0xa6));
        expectSense(r, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_COMMAND_IU);
      }
    }
    // COMPARE AND WRITE of 1 and of 3 blocks with 4 blocks of Data-Out.
    for (const blocks of [1, 3]) {
      const cdb = Buffer.alloc(16);
      cdb[0] = 0x89;
      cdb[13] = blocks;
      const r = await run(cdb, pattern(4, 0xa6));
      expectSense(r, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    }
    expect(volume.grains.size).toBe(0);
  });

  it("replays Sanitize.BlockErase: one deallocated descriptor covers the whole volume", async () => {
    const blocks = 64 * 1024 * 2; // 64 MiB: 16384 grains, reported one at a time
    const { run, volume } = setupGrains(blocks);
    expectGood(await run(Cdb.write16({ lba: 0, blocks: 256 }), pattern(256, 0x61)));
    expectGood(await run(Cdb.write16({ lba: blocks - 256, blocks: 256 }), pattern(256, 0x61)));
    const cdb = Buffer.alloc(10);
    cdb[0] = SANITIZE;
    cdb[1] = SanitizeAction.BLOCK_ERASE;
    expectGood(await run(cdb));
    volume.statusCalls = 0;
    expect(await lbaStatus(run, 0, 256)).toEqual([{ lba: 0, blocks, mapped: false }]);
    expect(volume.statusCalls).toBe(blocks / PER_GRAIN);
  });

  it("bounds the merging: past MAX_STATUS_CALLS the descriptor ends where the walk stopped", async () => {
    const blocks = (MAX_STATUS_CALLS + 10) * PER_GRAIN;
    const { run, volume } = setupGrains(blocks);
    const d = await lbaStatus(run, 0, 256);
    expect(volume.statusCalls).toBe(MAX_STATUS_CALLS);
    expect(d).toEqual([{ lba: 0, blocks: MAX_STATUS_CALLS * PER_GRAIN, mapped: false }]);
    // The rest is there for the asking.
    expect(await lbaStatus(run, MAX_STATUS_CALLS * PER_GRAIN, 256)).toEqual([
      { lba: MAX_STATUS_CALLS * PER_GRAIN, blocks: 10 * PER_GRAIN, mapped: false },
    ]);
  });
});
