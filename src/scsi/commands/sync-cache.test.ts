import { describe, expect, it } from "vitest";
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import { Asc } from "../asc.js";
import { SenseKey } from "../constants.js";
import { decodeFixedSense } from "../sense.js";
import { Cdb } from "../testing/cdb-builders.js";
import { expectGood, expectSense, pattern, setup } from "../testing/harness.js";

describe.each([
  ["(10)", Cdb.syncCache10, 0xffffffffn],
  ["(16)", Cdb.syncCache16, 2n ** 64n - 1n],
] as const)("SYNCHRONIZE CACHE%s", (_name, build, maxLba) => {
  it("flushes the volume and makes earlier writes durable", async () => {
    const { run, volume } = setup({ trackDurability: true });
    expectGood(await run(Cdb.write10({ lba: 3, blocks: 1 }), pattern(1, 7)));
    expect(volume.readDurable(3, 1).equals(pattern(1, 0))).toBe(true);
    expectGood(await run(build({})));
    expect(volume.flushCount).toBe(1);
    expect(volume.readDurable(3, 1).equals(pattern(1, 7))).toBe(true);
  });

  it.each([
    [0, 0, true],
    [1023, 1, true],
    [1024, 0, true],
    [1024, 1, false],
    [1000, 25, false],
    [1025, 0, false],
  ])("checks the LBA range (lba %i, blocks %i)", async (lba, blocks, ok) => {
    const { run, volume } = setup({ blocks: 1024 });
    const r = await run(build({ lba, blocks }));
    if (ok) expectGood(r);
    else {
      expectSense(r, SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE);
      expect(volume.flushCount).toBe(0);
    }
  });

  it("refuses the largest LBA", async () => {
    const { run } = setup();
    expectSense(await run(build({ lba: maxLba })), 5, Asc.LBA_OUT_OF_RANGE);
  });

  it("reports a flush failure", async () => {
    const { run, volume } = setup();
    volume.failNext("flush", new StorageError(StorageErrorCode.WriteFault, "disk gone"));
    expectSense(await run(build({})), SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR);
  });

  it("with IMMED returns at once and reports a failure as a deferred error", async () => {
    const { run, volume } = setup();
    volume.failNext("flush", new StorageError(StorageErrorCode.WriteFault, "disk gone"));
    expectGood(await run(build({ immed: true })));
    await new Promise((r) => setImmediate(r));
    const r = await run(Cdb.testUnitReady());
    const s = expectSense(r, SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR);
    expect(s.responseCode).toBe(0x71);
    expectGood(await run(Cdb.testUnitReady()));
  });

  it("a deferred error is also returned by REQUEST SENSE", async () => {
    const { run, volume } = setup();
    volume.failNext("flush", new StorageError(StorageErrorCode.Internal, "x"));
    expectGood(await run(build({ immed: true })));
    await new Promise((r) => setImmediate(r));
    const d = decodeFixedSense((await run(Cdb.requestSense())).data!);
    expect(d).toMatchObject({ responseCode: 0x71, key: SenseKey.HARDWARE_ERROR });
  });

  it("is allowed on a read-only mapping", async () => {
    const { run } = setup({ readOnly: true });
    expectGood(await run(build({})));
  });
});
