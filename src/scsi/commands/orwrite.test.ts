import { describe, expect, it } from "vitest";
import { Asc } from "../asc.js";
import { SenseKey } from "../constants.js";
import { ScsiTarget } from "../target.js";
import { CopyCdb, HoldingVolume, settle } from "../testing/copy-builders.js";
import {
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
import { orInto } from "./orwrite.js";

const orWrite = CopyCdb.orWrite16;

describe("ORWRITE (16)", () => {
  it("ORs the Data-Out buffer into the blocks", async () => {
    const { run, volume } = setup();
    await volume.write(4, pattern(2, 0xa5));
    const r = await run(orWrite({ lba: 4, blocks: 2 }), pattern(2, 0x5a));
    expectGood(r);
    expect(r.dataOutLength).toBe(1024);
    expect(volume.peek(4, 2).equals(pattern(2, 0xff))).toBe(true);
    // Unwritten blocks read as zeros: OR gives the Data-Out.
    expectGood(await run(orWrite({ lba: 100, blocks: 1 }), pattern(1, 0x21)));
    expect(volume.peek(100, 1).equals(pattern(1, 0x21))).toBe(true);
  });

  it("two hosts OR-ing the same block lose no bit", async () => {
    const target = new ScsiTarget(TEST_INFO);
    const volume = new HoldingVolume({ blocks: 64 });
    const a = target.openNexus(identity(), new MutableView([lunEntry(0, volume)]));
    const b = target.openNexus(identity(), new MutableView([lunEntry(0, volume)]));
    volume.hold("read");
    const first = exec(a, orWrite({ lba: 3, blocks: 1 }), pattern(1, 0x01));
    await settle();
    volume.stopHolding();
    const second = exec(b, orWrite({ lba: 3, blocks: 1 }), pattern(1, 0x02));
    await settle();
    volume.releaseAll();
    expectGood(await first);
    expectGood(await second);
    expect(volume.peek(3, 1).equals(pattern(1, 0x03))).toBe(true);
  });

  it("TRANSFER LENGTH 0 does nothing", async () => {
    const { run, volume } = setup();
    expectGood(await run(orWrite({ lba: 0, blocks: 0 })));
    expect(volume.calls).toEqual([]);
  });

  it("checks the range, write protection and ORPROTECT", async () => {
    const { run } = setup({ blocks: 10 });
    expectSense(
      await run(orWrite({ lba: 9, blocks: 2 }), pattern(2, 0)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.LBA_OUT_OF_RANGE,
    );
    expectSense(
      await run(orWrite({ lba: 0, blocks: 1, protect: 1 }), pattern(1, 0)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
    const ro = setup({ readOnly: true });
    expectSense(
      await ro.run(orWrite({ lba: 0, blocks: 1 }), pattern(1, 0)),
      SenseKey.DATA_PROTECT,
      Asc.WRITE_PROTECTED,
    );
  });

  it("FUA makes the result durable; DPO is accepted", async () => {
    const { run, volume } = setup({ trackDurability: true });
    expectGood(await run(orWrite({ lba: 0, blocks: 1, fua: true, dpo: true }), pattern(1, 7)));
    expect(volume.readDurable(0, 1).equals(pattern(1, 7))).toBe(true);
  });

  it("orInto ORs every byte, whatever the length", () => {
    for (const n of [0, 1, 3, 4, 5, 8, 513]) {
      const a = Buffer.alloc(n, 0x0f);
      const b = Buffer.alloc(n, 0xf0);
      if (n > 2) b[2] = 0x01;
      orInto(a, b);
      const expected = Buffer.alloc(n, 0xff);
      if (n > 2) expected[2] = 0x0f;
      expect(a.equals(expected)).toBe(true);
    }
  });
});
