import { describe, expect, it } from "vitest";
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import { Asc } from "../asc.js";
import { SenseKey } from "../constants.js";
import { ScsiTarget } from "../target.js";
import { Cdb, type RwOptions } from "../testing/cdb-builders.js";
import {
  command,
  expectGood,
  expectSense,
  identity,
  lunEntry,
  MutableView,
  pattern,
  setup,
  TEST_INFO,
} from "../testing/harness.js";
import { MemoryVolume } from "../testing/memory-volume.js";

type Builder = (o: RwOptions) => Buffer;

interface Variant {
  readonly name: string;
  readonly read: Builder;
  readonly write: Builder;
  /** Largest LBA the CDB can carry. */
  readonly maxLba: bigint;
  /** Byte offset of TRANSFER LENGTH (for the field pointer), or undefined for (6). */
  readonly lengthByte?: number;
  /** Largest TRANSFER LENGTH the CDB can carry. */
  readonly maxBlocks: number;
}

const VARIANTS: Variant[] = [
  { name: "(6)", read: Cdb.read6, write: Cdb.write6, maxLba: 0x1fffffn, maxBlocks: 256 },
  {
    name: "(10)",
    read: Cdb.read10,
    write: Cdb.write10,
    maxLba: 0xffffffffn,
    lengthByte: 7,
    maxBlocks: 0xffff,
  },
  {
    name: "(12)",
    read: Cdb.read12,
    write: Cdb.write12,
    maxLba: 0xffffffffn,
    lengthByte: 6,
    maxBlocks: 0xffffffff,
  },
  {
    name: "(16)",
    read: Cdb.read16,
    write: Cdb.write16,
    maxLba: 2n ** 64n - 1n,
    lengthByte: 10,
    maxBlocks: 0xffffffff,
  },
];

const CAPACITY = 1000;

describe.each(VARIANTS)("READ/WRITE$name LBA boundaries", (v) => {
  const lengthZero = v.name === "(6)" ? undefined : 0;
  const cases: { what: string; lba: bigint; blocks: number; ok: boolean }[] = [
    { what: "first block", lba: 0n, blocks: 1, ok: true },
    { what: "last block", lba: BigInt(CAPACITY - 1), blocks: 1, ok: true },
    { what: "whole volume tail", lba: BigInt(CAPACITY - 8), blocks: 8, ok: true },
    { what: "one past the end", lba: BigInt(CAPACITY), blocks: 1, ok: false },
    { what: "straddling the end", lba: BigInt(CAPACITY - 1), blocks: 2, ok: false },
    { what: "huge LBA", lba: v.maxLba, blocks: 1, ok: false },
    { what: "LBA + length wraps the field", lba: v.maxLba, blocks: 2, ok: false },
  ];
  if (lengthZero !== undefined) {
    cases.push(
      { what: "length 0 at LBA 0", lba: 0n, blocks: 0, ok: true },
      { what: "length 0 at the capacity", lba: BigInt(CAPACITY), blocks: 0, ok: true },
      { what: "length 0 one past the capacity", lba: BigInt(CAPACITY + 1), blocks: 0, ok: false },
      { what: "length 0 at the huge LBA", lba: v.maxLba, blocks: 0, ok: false },
    );
  }

  for (const c of cases) {
    it(`READ ${c.what}`, async () => {
      const { run, volume } = setup({ blocks: CAPACITY });
      const r = await run(v.read({ lba: c.lba, blocks: c.blocks }));
      if (c.ok) {
        expectGood(r);
        expect(r.data?.length ?? 0).toBe(c.blocks * 512);
        expect(volume.calls.length).toBe(c.blocks === 0 ? 0 : 1);
      } else {
        expectSense(r, SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE);
        expect(volume.calls).toEqual([]);
      }
    });

    it(`WRITE ${c.what}`, async () => {
      const { run, volume } = setup({ blocks: CAPACITY });
      const r = await run(v.write({ lba: c.lba, blocks: c.blocks }), pattern(c.blocks, 0xab));
      if (c.ok) {
        expectGood(r);
        expect(r.dataOutLength).toBe(c.blocks * 512);
        expect(volume.calls.length).toBe(c.blocks === 0 ? 0 : 1);
      } else {
        expectSense(r, SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE);
        expect(volume.calls).toEqual([]);
      }
    });
  }

  it("READ(6)/WRITE(6) length 0 means 256 blocks", async () => {
    if (v.name !== "(6)") return;
    const { run, volume } = setup({ blocks: CAPACITY });
    expectGood(await run(v.write({ lba: 10, blocks: 0 }), pattern(256, 1)));
    const r = await run(v.read({ lba: 10, blocks: 0 }));
    expect(r.data?.length).toBe(256 * 512);
    expect(volume.calls.map((c) => c.blocks)).toEqual([256, 256]);
    expectSense(await run(v.read({ lba: CAPACITY - 255, blocks: 0 })), 5, Asc.LBA_OUT_OF_RANGE);
  });

  it("rejects a transfer longer than the Block Limits maximum (16 MiB)", async () => {
    if (v.lengthByte === undefined) return;
    const { run } = setup({ blocks: 1 << 20 });
    const blocks = Math.min(v.maxBlocks, 32768 + 1);
    const r = await run(v.read({ lba: 0, blocks }));
    const sense = expectSense(r, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    expect(sense.fieldPointer).toEqual({ inCdb: true, byte: v.lengthByte });
    expectGood(await run(v.read({ lba: 0, blocks: 32768 })));
  });

  it("writes what it reads back", async () => {
    const { run } = setup({ blocks: CAPACITY });
    const data = Buffer.alloc(3 * 512);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    expectGood(await run(v.write({ lba: 17, blocks: 3 }), data));
    const r = await run(v.read({ lba: 17, blocks: 3 }));
    expect(r.data?.equals(data)).toBe(true);
  });

  it("refuses RDPROTECT/WRPROTECT (no protection information)", async () => {
    if (v.name === "(6)") return;
    const { run } = setup({ blocks: CAPACITY });
    for (let protect = 1; protect < 8; protect++) {
      const s = expectSense(
        await run(v.read({ lba: 0, blocks: 1, protect })),
        5,
        Asc.INVALID_FIELD_IN_CDB,
      );
      expect(s.fieldPointer).toEqual({ inCdb: true, byte: 1, bit: 31 - Math.clz32(protect << 5) });
      expectSense(
        await run(v.write({ lba: 0, blocks: 1, protect }), pattern(1, 0)),
        5,
        Asc.INVALID_FIELD_IN_CDB,
      );
    }
  });
});

describe("READ(16)/WRITE(16) beyond 32-bit LBAs", () => {
  it("addresses the last block of a 2^40-block volume", async () => {
    const { run } = setup({ blocks: 2 ** 40 });
    const lba = 2n ** 40n - 1n;
    expectGood(await run(Cdb.write16({ lba, blocks: 1 }), pattern(1, 0x5a)));
    const r = await run(Cdb.read16({ lba, blocks: 1 }));
    expect(r.data?.equals(pattern(1, 0x5a))).toBe(true);
    expectSense(await run(Cdb.read16({ lba: 2n ** 40n, blocks: 1 })), 5, Asc.LBA_OUT_OF_RANGE);
    expectSense(await run(Cdb.read16({ lba: 2n ** 53n, blocks: 1 })), 5, Asc.LBA_OUT_OF_RANGE);
  });
});

describe("WRITE flags, cache and durability", () => {
  it("accepts DPO and FUA and passes FUA to the volume", async () => {
    const { run, volume } = setup({ trackDurability: true });
    expectGood(await run(Cdb.write10({ lba: 1, blocks: 1, fua: true, dpo: true }), pattern(1, 9)));
    expect(volume.calls).toEqual([{ op: "write", lba: 1, blocks: 1, fua: true }]);
    expect(volume.readDurable(1, 1).equals(pattern(1, 9))).toBe(true);
    expectGood(await run(Cdb.write10({ lba: 2, blocks: 1 }), pattern(1, 8)));
    expect(volume.calls[1]).toEqual({ op: "write", lba: 2, blocks: 1, fua: false });
    volume.crash();
    expect(volume.peek(2, 1).equals(pattern(1, 0))).toBe(true);
    expect(volume.peek(1, 1).equals(pattern(1, 9))).toBe(true);
  });

  it("accepts DPO, FUA and FUA_NV on reads", async () => {
    const { run } = setup();
    const cdb = Cdb.read10({ lba: 0, blocks: 1, fua: true, dpo: true });
    cdb[1] = cdb[1]! | 0x02 | 0x04; // FUA_NV, RARC
    expectGood(await run(cdb));
  });

  it("writes through (fua) when the caching page says WCE=0", async () => {
    const { run, volume, target } = setup();
    target.unitOf(volume.id).writeCacheEnabled = false;
    expectGood(await run(Cdb.write16({ lba: 0, blocks: 2 }), pattern(2, 1)));
    expect(volume.calls[0]).toMatchObject({ op: "write", fua: true });
  });

  it("hands the Data-Out buffer to the volume without copying", async () => {
    const { nexus, volume } = setup();
    const data = pattern(2, 3);
    let seen: Buffer | undefined;
    const write = volume.write.bind(volume);
    volume.write = (lba, buf, o) => {
      seen = buf;
      return write(lba, buf, o);
    };
    expectGood(await nexus.execute(command(0, Cdb.write10({ lba: 0, blocks: 2 }), data)));
    expect(seen?.buffer).toBe(data.buffer);
  });
});

describe("Data-Out length against the CDB (libiscsi residual tests)", () => {
  it("writes only the CDB's blocks when more Data-Out arrived (underflow)", async () => {
    const { run, volume } = setup();
    const r = await run(Cdb.write10({ lba: 0, blocks: 1 }), pattern(2, 0x62));
    expectGood(r);
    expect(r.dataOutLength).toBe(512);
    expect(volume.calls).toEqual([{ op: "write", lba: 0, blocks: 1, fua: false }]);
  });

  it("writes only the whole blocks that arrived when less Data-Out came (overflow)", async () => {
    const { run, volume } = setup();
    expectGood(await run(Cdb.write10({ lba: 0, blocks: 2 }), pattern(2, 0x61)));
    const r = await run(Cdb.write10({ lba: 0, blocks: 2 }), pattern(1, 0x62));
    expectGood(r);
    expect(r.dataOutLength).toBe(1024);
    expect(volume.calls.at(-1)).toEqual({ op: "write", lba: 0, blocks: 1, fua: false });
    expect(volume.peek(0, 2).equals(Buffer.concat([pattern(1, 0x62), pattern(1, 0x61)]))).toBe(
      true,
    );
  });

  it("writes nothing, with GOOD, when no Data-Out came at all", async () => {
    const { run, volume } = setup();
    const r = await run(Cdb.write16({ lba: 0, blocks: 1 }));
    expectGood(r);
    expect(r.dataOutLength).toBe(512);
    expect(volume.calls).toEqual([]);
  });

  it.each([200, 513, 1000])(
    "refuses a partial block (%i bytes) and writes nothing",
    async (bytes) => {
      const { run, volume } = setup();
      const r = await run(Cdb.write12({ lba: 0, blocks: 2 }), Buffer.alloc(bytes, 0x63));
      expectSense(r, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_COMMAND_IU);
      expect(r.dataOutLength).toBe(1024);
      expect(volume.calls).toEqual([]);
    },
  );
});

describe("read-only mappings", () => {
  it("refuses every write variant before touching the volume, and reads", async () => {
    const { run, volume } = setup({ readOnly: true });
    for (const build of [Cdb.write6, Cdb.write10, Cdb.write12, Cdb.write16]) {
      expectSense(
        await run(build({ lba: 0, blocks: 1 }), pattern(1, 0)),
        SenseKey.DATA_PROTECT,
        Asc.WRITE_PROTECTED,
      );
    }
    expect(volume.calls).toEqual([]);
    expectGood(await run(Cdb.read10({ lba: 0, blocks: 1 })));
  });

  it("checks the LBA range before write protection", async () => {
    const { run } = setup({ readOnly: true, blocks: 10 });
    expectSense(
      await run(Cdb.write10({ lba: 10, blocks: 1 }), pattern(1, 0)),
      5,
      Asc.LBA_OUT_OF_RANGE,
    );
  });
});

describe("volume failures become sense data", () => {
  it.each([
    [StorageErrorCode.MediumError, SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR, 42],
    [StorageErrorCode.NotReady, SenseKey.NOT_READY, Asc.LOGICAL_UNIT_NOT_READY, undefined],
    [StorageErrorCode.Internal, SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE, undefined],
  ])("read failing with %s", async (code, key, asc, lba) => {
    const { run, volume, warnings } = setup();
    volume.failNext("read", new StorageError(code, "boom", lba));
    const s = expectSense(await run(Cdb.read10({ lba: 40, blocks: 4 })), key, asc);
    expect(s.valid).toBe(lba !== undefined);
    if (lba !== undefined) expect(s.information).toBe(lba);
    expect(warnings.length).toBe(1);
  });

  it.each([
    [StorageErrorCode.PoolFull, SenseKey.DATA_PROTECT, Asc.SPACE_ALLOCATION_FAILED_WRITE_PROTECT],
    [
      StorageErrorCode.QuotaExceeded,
      SenseKey.DATA_PROTECT,
      Asc.SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
    ],
    [StorageErrorCode.WriteProtected, SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED],
    [StorageErrorCode.WriteFault, SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR],
    [StorageErrorCode.OutOfRange, SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE],
  ])("write failing with %s", async (code, key, asc) => {
    const { run, volume } = setup();
    volume.failNext("write", new StorageError(code, "boom"));
    const r = await run(Cdb.write10({ lba: 0, blocks: 1 }), pattern(1, 0));
    expectSense(r, key, asc);
    expect(r.dataOutLength).toBe(512);
  });

  it("an exception that is not a StorageError is a logged HARDWARE ERROR", async () => {
    const { run, volume, warnings } = setup();
    const cause = new TypeError("bug below");
    volume.failNext("read", cause);
    expectSense(
      await run(Cdb.read10({ lba: 0, blocks: 1 })),
      SenseKey.HARDWARE_ERROR,
      Asc.INTERNAL_TARGET_FAILURE,
    );
    expect(warnings[0]?.obj).toMatchObject({
      err: cause,
      volumeId: volume.id,
      lun: 0,
      opcode: 0x28,
    });
  });
});

describe("4096-byte blocks", () => {
  it("transfers whole 4 KiB blocks", async () => {
    const target = new ScsiTarget(TEST_INFO);
    const volume = new MemoryVolume({ blocks: 64, blockSize: 4096 });
    const nexus = target.openNexus(identity(), new MutableView([lunEntry(0, volume)]));
    const data = pattern(2, 0x44, 4096);
    expectGood(await nexus.execute(command(0, Cdb.write10({ lba: 62, blocks: 2 }), data)));
    const r = await nexus.execute(command(0, Cdb.read10({ lba: 62, blocks: 2 })));
    expect(r.data?.equals(data)).toBe(true);
  });
});
