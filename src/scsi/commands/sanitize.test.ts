import { describe, expect, it } from "vitest";
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import { Asc } from "../asc.js";
import { ScsiStatus, SenseKey } from "../constants.js";
import { Cdb } from "../testing/cdb-builders.js";
import { exec, expectGood, expectSense, identity, pattern, setup } from "../testing/harness.js";
import type { MemoryVolume } from "../testing/memory-volume.js";
import type { LogicalUnitState } from "../unit-state.js";
import {
  ASC_SANITIZE_COMMAND_FAILED,
  ASC_SANITIZE_IN_PROGRESS,
  SANITIZE,
  SanitizeAction,
  sanitizeState,
} from "./sanitize.js";

const { OVERWRITE, BLOCK_ERASE, CRYPTOGRAPHIC_ERASE, EXIT_FAILURE_MODE } = SanitizeAction;

function sanitizeCdb(
  action: number,
  o: { immed?: boolean; ause?: boolean; length?: number } = {},
): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = SANITIZE;
  cdb[1] = (o.immed ? 0x80 : 0) | (o.ause ? 0x20 : 0) | action;
  cdb.writeUInt16BE(o.length ?? 0, 7);
  return cdb;
}

/** An OVERWRITE parameter list. */
function overwriteList(
  patternBytes: Buffer,
  o: { passes?: number; invert?: boolean; test?: number; patternLength?: number } = {},
): Buffer {
  const list = Buffer.alloc(4 + patternBytes.length);
  list[0] = (o.invert ? 0x80 : 0) | ((o.test ?? 0) << 5) | (o.passes ?? 1);
  list.writeUInt16BE(o.patternLength ?? patternBytes.length, 2);
  patternBytes.copy(list, 4);
  return list;
}

/** SANITIZE OVERWRITE with this parameter list (its length as PARAMETER LIST LENGTH). */
function overwriteCdb(list: Buffer, o: { immed?: boolean; ause?: boolean } = {}): Buffer {
  return sanitizeCdb(OVERWRITE, { ...o, length: list.length });
}

/** Make `op` of `volume` wait until the returned function is called. */
function hold(volume: MemoryVolume, op: "read" | "write" | "unmap"): () => void {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const original = volume[op].bind(volume) as (...args: never[]) => Promise<unknown>;
  (volume as unknown as Record<string, unknown>)[op] = async (...args: never[]) => {
    await gate;
    return original(...args);
  };
  return release;
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("SANITIZE", () => {
  it("is listed per service action by REPORT SUPPORTED OPERATION CODES, without CRYPTOGRAPHIC ERASE", async () => {
    const { run } = setup();
    for (const [action, supported] of [
      [OVERWRITE, true],
      [BLOCK_ERASE, true],
      [EXIT_FAILURE_MODE, true],
      [CRYPTOGRAPHIC_ERASE, false],
    ] as const) {
      const r = await run(
        Cdb.reportSupportedOpcodes({ options: 2, opcode: SANITIZE, serviceAction: action }),
      );
      expectGood(r);
      const d = r.data!;
      expect(d[1]! & 0x07).toBe(supported ? 0b011 : 0b001);
      if (supported) {
        expect([...d.subarray(4)]).toEqual([SANITIZE, 0xa0 | action, 0, 0, 0, 0, 0, 0xff, 0xff, 0]);
      }
    }
  });

  describe("OVERWRITE", () => {
    it.each([
      ["a whole block", 512],
      ["half a block", 256],
      ["4 bytes", 4],
      ["3 bytes (truncated at the end of each block)", 3],
    ])("fills every block with a pattern of %s", async (_name, length) => {
      const { run, volume, target } = setup({ blocks: 5000 });
      expectGood(await run(Cdb.write10({ lba: 0, blocks: 8 }), pattern(8, 0x61)));
      const bytes = Buffer.from(Array.from({ length }, (_, i) => (i * 7 + 1) & 0xff));
      const r = await run(overwriteCdb(overwriteList(bytes)), overwriteList(bytes));
      expectGood(r);
      expect(r.dataOutLength).toBe(4 + length);
      const block = Buffer.alloc(512);
      block.fill(bytes);
      for (const lba of [0, 7, 2048, 4999]) expect(volume.peek(lba, 1).equals(block)).toBe(true);
      const writes = volume.calls.filter((c) => c.op === "write").slice(1);
      expect(writes.map((c) => [c.lba, c.blocks])).toEqual([
        [0, 2048],
        [2048, 2048],
        [4096, 904],
      ]);
      expect(volume.calls.at(-1)).toEqual({ op: "flush" });
      expect(sanitizeState(target.unitOf(volume.id))).toBe("idle");
    });

    it("runs OVERWRITE COUNT passes, inverting between them with INVERT, the last pass as given", async () => {
      for (const [passes, invert, firstBytes] of [
        [3, true, [0x0f, 0xf0, 0x0f]],
        [2, true, [0xf0, 0x0f]],
        [2, false, [0x0f, 0x0f]],
      ] as const) {
        const { run, volume } = setup({ blocks: 16 });
        const seen: number[] = [];
        const write = volume.write.bind(volume);
        volume.write = (lba, data, options) => {
          seen.push(data[0]!);
          return write(lba, data, options);
        };
        const list = overwriteList(Buffer.from([0x0f]), { passes, invert });
        expectGood(await run(overwriteCdb(list), list));
        expect(seen).toEqual(firstBytes);
        expect(volume.calls.map((c) => c.op)).toEqual(
          Array.from({ length: passes }, () => ["write", "flush"]).flat(),
        );
        expect(volume.peek(15, 1).equals(pattern(1, 0x0f))).toBe(true);
      }
    });

    it("needs a PARAMETER LIST LENGTH above 4 and below the block length + 5", async () => {
      for (const blockSize of [512, 4096]) {
        const { run, volume } = setup({ blockSize, blocks: 64 });
        for (const length of [0, 1, 4, blockSize + 5, 0xffff]) {
          const s = expectSense(
            await run(sanitizeCdb(OVERWRITE, { length }), Buffer.alloc(length)),
            SenseKey.ILLEGAL_REQUEST,
            Asc.INVALID_FIELD_IN_CDB,
          );
          expect(s.fieldPointer).toEqual({ inCdb: true, byte: 7 });
        }
        const list = overwriteList(Buffer.alloc(blockSize, 1));
        expectGood(await run(overwriteCdb(list), list));
        expect(volume.calls.length).toBeGreaterThan(0);
      }
    });

    it.each([
      ["OVERWRITE COUNT 0", overwriteList(Buffer.alloc(4), { passes: 0 }), 0, 4],
      ["a non-zero TEST field", overwriteList(Buffer.alloc(4), { test: 1 }), 0, 6],
      ["INITIALIZATION PATTERN LENGTH 0", overwriteList(Buffer.alloc(4), { patternLength: 0 }), 2],
      [
        "a pattern longer than a block",
        overwriteList(Buffer.alloc(512), { patternLength: 516 }),
        2,
      ],
      [
        "a pattern length that is not the list's",
        overwriteList(Buffer.alloc(8), { patternLength: 4 }),
        2,
      ],
    ])("refuses %s (INVALID FIELD IN PARAMETER LIST)", async (_name, list, byte, bit?) => {
      const { run, volume } = setup();
      const s = expectSense(
        await run(overwriteCdb(list), list),
        SenseKey.ILLEGAL_REQUEST,
        Asc.INVALID_FIELD_IN_PARAMETER_LIST,
      );
      expect(s.fieldPointer).toEqual(
        bit === undefined ? { inCdb: false, byte } : { inCdb: false, byte, bit },
      );
      expect(volume.calls).toEqual([]);
    });

    it("refuses the reserved byte of the parameter list", async () => {
      const { run, volume } = setup();
      const list = overwriteList(Buffer.alloc(4));
      list[1] = 0x10;
      const s = expectSense(
        await run(overwriteCdb(list), list),
        5,
        Asc.INVALID_FIELD_IN_PARAMETER_LIST,
      );
      expect(s.fieldPointer).toEqual({ inCdb: false, byte: 1, bit: 4 });
      expect(volume.calls).toEqual([]);
    });

    it("refuses a parameter list shorter than its length and writes nothing", async () => {
      const { run, volume } = setup();
      const list = overwriteList(Buffer.alloc(8));
      const r = await run(overwriteCdb(list), list.subarray(0, 6));
      expectSense(r, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_COMMAND_IU);
      expect(r.dataOutLength).toBe(12);
      expect(volume.calls).toEqual([]);
    });
  });

  describe("BLOCK ERASE", () => {
    it("deallocates every block in one unmap, then flushes", async () => {
      const { run, volume } = setup({ blocks: 4096 });
      expectGood(await run(Cdb.write10({ lba: 0, blocks: 256 }), pattern(256, 0x61)));
      expectGood(await run(Cdb.write10({ lba: 3840, blocks: 256 }), pattern(256, 0x61)));
      expectGood(await run(sanitizeCdb(BLOCK_ERASE)));
      expect(volume.calls.slice(2)).toEqual([
        { op: "unmap", lba: 0, blocks: 4096 },
        { op: "flush" },
      ]);
      expect(volume.mappedBlocks).toBe(0);
      const read = await run(Cdb.read10({ lba: 3840, blocks: 256 }));
      expectGood(read); // WABEREQ=01b: reads complete without error
      expect(read.data!.equals(pattern(256, 0))).toBe(true);
      const status = await run(Cdb.getLbaStatus(0));
      expect(status.data!.readUInt32BE(16)).toBe(4096);
      expect(status.data![20]! & 0x0f).toBe(1); // deallocated
    });

    it.each([
      ["BLOCK ERASE", BLOCK_ERASE],
      ["EXIT FAILURE MODE", EXIT_FAILURE_MODE],
    ])("%s needs PARAMETER LIST LENGTH 0", async (_name, action) => {
      const { run, volume } = setup();
      const s = expectSense(
        await run(sanitizeCdb(action, { length: 8 }), Buffer.alloc(8)),
        5,
        Asc.INVALID_FIELD_IN_CDB,
      );
      expect(s.fieldPointer).toEqual({ inCdb: true, byte: 7 });
      expect(volume.calls).toEqual([]);
    });
  });

  it("refuses CRYPTOGRAPHIC ERASE and reserved service actions with INVALID FIELD IN CDB", async () => {
    const { run, volume } = setup();
    for (const action of [0x00, CRYPTOGRAPHIC_ERASE, 0x04, 0x10, 0x1e]) {
      const s = expectSense(await run(sanitizeCdb(action)), 5, Asc.INVALID_FIELD_IN_CDB);
      expect(s.fieldPointer).toEqual({ inCdb: true, byte: 1, bit: 4 });
    }
    expect(volume.calls).toEqual([]);
  });

  it("refuses ZNR and the reserved bytes (INVALID FIELD IN CDB)", async () => {
    const { run, volume } = setup();
    const znr = sanitizeCdb(BLOCK_ERASE);
    znr[1]! |= 0x40;
    expect(expectSense(await run(znr), 5, Asc.INVALID_FIELD_IN_CDB).fieldPointer).toEqual({
      inCdb: true,
      byte: 1,
      bit: 6,
    });
    for (let byte = 2; byte <= 6; byte++) {
      const cdb = sanitizeCdb(BLOCK_ERASE);
      cdb[byte] = 0x01;
      expect(expectSense(await run(cdb), 5, Asc.INVALID_FIELD_IN_CDB).fieldPointer).toEqual({
        inCdb: true,
        byte,
        bit: 0,
      });
    }
    expect(volume.calls).toEqual([]);
  });

  it("is DATA PROTECT on a read-only mapping, EXIT FAILURE MODE included", async () => {
    const { run, volume } = setup({ readOnly: true });
    const list = overwriteList(Buffer.alloc(512, 0xaa));
    for (const [cdb, data] of [
      [overwriteCdb(list), list],
      [sanitizeCdb(BLOCK_ERASE), undefined],
      [sanitizeCdb(EXIT_FAILURE_MODE), undefined],
    ] as const) {
      expectSense(await run(cdb, data), SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED);
    }
    expect(volume.calls).toEqual([]);
  });

  it("conflicts with a RESERVE(6) held by another nexus, like a write", async () => {
    const { run, target, view, volume } = setup();
    const other = target.openNexus(identity({ initiatorName: "iqn.2025-01.com.example:b" }), view);
    expectGood(await exec(other, Cdb.reserve6()));
    const r = await run(sanitizeCdb(BLOCK_ERASE));
    expect(r.status).toBe(ScsiStatus.RESERVATION_CONFLICT);
    expect(volume.calls).toEqual([]);
    expectGood(await exec(other, sanitizeCdb(BLOCK_ERASE)));
  });

  it("logs a warning naming the initiator, the LUN, the channel and the volume", async () => {
    const { run, warnings, volume } = setup();
    expectGood(await run(sanitizeCdb(BLOCK_ERASE)));
    expect(warnings.map((w) => w.msg)).toEqual([
      expect.stringContaining("erasing the whole volume"),
      "SANITIZE: done",
    ]);
    expect(warnings[0]!.obj).toMatchObject({
      initiator: "iqn.2025-01.com.example:host1",
      lun: 0,
      volumeId: volume.id,
      volume: volume.name,
      serviceAction: BLOCK_ERASE,
      immed: false,
    });
    expect(warnings[0]!.obj).toHaveProperty("channel");
  });

  describe("while it runs", () => {
    it("IMMED=1 returns at once; every other command gets NOT READY, SANITIZE IN PROGRESS", async () => {
      const { run, target, view, volume, nexus } = setup();
      const other = target.openNexus(
        identity({ initiatorName: "iqn.2025-01.com.example:b" }),
        view,
      );
      const release = hold(volume, "unmap");
      expectGood(await run(sanitizeCdb(BLOCK_ERASE, { immed: true })));
      await tick();
      expect(sanitizeState(target.unitOf(volume.id))).toBe("running");
      for (const n of [nexus, other]) {
        for (const cdb of [
          Cdb.testUnitReady(),
          Cdb.read10({ lba: 0, blocks: 1 }),
          Cdb.readCapacity16(),
          Cdb.startStopUnit({ start: true }),
          Cdb.modeSense6(),
          sanitizeCdb(BLOCK_ERASE),
          sanitizeCdb(EXIT_FAILURE_MODE),
        ]) {
          expectSense(await exec(n, cdb), SenseKey.NOT_READY, ASC_SANITIZE_IN_PROGRESS);
        }
        for (const cdb of [Cdb.inquiry(), Cdb.reportLuns(), Cdb.requestSense()]) {
          expectGood(await exec(n, cdb));
        }
      }
      release();
      await waitFor(target.unitOf(volume.id));
      expectGood(await run(Cdb.testUnitReady()));
      expectGood(await exec(other, Cdb.read10({ lba: 0, blocks: 1 })));
    });

    it("IMMED=0 returns when it is done", async () => {
      const { run, volume } = setup();
      const release = hold(volume, "unmap");
      let settled = false;
      const pending = run(sanitizeCdb(BLOCK_ERASE)).then((r) => {
        settled = true;
        return r;
      });
      await tick();
      expect(settled).toBe(false);
      expectSense(await run(Cdb.testUnitReady()), SenseKey.NOT_READY, ASC_SANITIZE_IN_PROGRESS);
      release();
      expectGood(await pending);
      expectGood(await run(Cdb.testUnitReady()));
    });

    it("waits for the commands already running before it erases", async () => {
      const { run, volume, target } = setup();
      expectGood(await run(Cdb.write10({ lba: 0, blocks: 1 }), pattern(1, 0x61)));
      const releaseRead = hold(volume, "read");
      const read = run(Cdb.read10({ lba: 0, blocks: 1 }));
      await tick();
      expectGood(await run(sanitizeCdb(BLOCK_ERASE, { immed: true })));
      await tick();
      expect(volume.calls.some((c) => c.op === "unmap")).toBe(false);
      releaseRead();
      const r = await read;
      expectGood(r);
      expect(r.data!.equals(pattern(1, 0x61))).toBe(true);
      await waitFor(target.unitOf(volume.id));
      expect(volume.calls.at(-2)).toEqual({ op: "unmap", lba: 0, blocks: 1024 });
    });

    it("goes on through a LUN reset and the loss of the nexus that sent it", async () => {
      const { run, target, view, volume, nexus } = setup();
      const other = target.openNexus(
        identity({ initiatorName: "iqn.2025-01.com.example:b" }),
        view,
      );
      const release = hold(volume, "unmap");
      expectGood(await run(sanitizeCdb(BLOCK_ERASE, { immed: true })));
      nexus.lunReset(0);
      nexus.close();
      // The reset's unit attention comes first, then the sanitize is still in progress.
      expectSense(
        await exec(other, Cdb.testUnitReady()),
        SenseKey.UNIT_ATTENTION,
        Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED,
      );
      expectSense(
        await exec(other, Cdb.testUnitReady()),
        SenseKey.NOT_READY,
        ASC_SANITIZE_IN_PROGRESS,
      );
      const late = target.openNexus(identity({ initiatorName: "iqn.2025-01.com.example:c" }), view);
      expectSense(
        await exec(late, Cdb.testUnitReady()),
        SenseKey.NOT_READY,
        ASC_SANITIZE_IN_PROGRESS,
      );
      release();
      await waitFor(target.unitOf(volume.id));
      expectGood(await exec(other, Cdb.testUnitReady()));
      expect(volume.mappedBlocks).toBe(0);
    });
  });

  describe("failure mode", () => {
    const ioError = () => new StorageError(StorageErrorCode.WriteFault, "disk on fire");

    it("AUSE=0: SANITIZE COMMAND FAILED until another sanitize succeeds; no EXIT FAILURE MODE", async () => {
      const { run, volume, warnings } = setup();
      volume.failNext("unmap", ioError());
      expectSense(
        await run(sanitizeCdb(BLOCK_ERASE)),
        SenseKey.MEDIUM_ERROR,
        ASC_SANITIZE_COMMAND_FAILED,
      );
      expect(warnings.at(-1)?.msg).toContain("failed");
      for (const cdb of [Cdb.read10({ lba: 0, blocks: 1 }), Cdb.write10({ lba: 0, blocks: 1 })]) {
        expectSense(
          await run(cdb, pattern(1, 1)),
          SenseKey.MEDIUM_ERROR,
          ASC_SANITIZE_COMMAND_FAILED,
        );
      }
      expectGood(await run(Cdb.testUnitReady()));
      expectGood(await run(Cdb.readCapacity16()));
      const exit = expectSense(
        await run(sanitizeCdb(EXIT_FAILURE_MODE)),
        5,
        Asc.INVALID_FIELD_IN_CDB,
      );
      expect(exit.fieldPointer).toEqual({ inCdb: true, byte: 1, bit: 4 });
      const unrestricted = expectSense(
        await run(sanitizeCdb(BLOCK_ERASE, { ause: true })),
        5,
        Asc.INVALID_FIELD_IN_CDB,
      );
      expect(unrestricted.fieldPointer).toEqual({ inCdb: true, byte: 1, bit: 5 });
      expectGood(await run(sanitizeCdb(BLOCK_ERASE)));
      expectGood(await run(Cdb.read10({ lba: 0, blocks: 1 })));
    });

    it("AUSE=1: EXIT FAILURE MODE leaves it", async () => {
      const { run, volume } = setup();
      volume.failNext("flush", ioError());
      const list = overwriteList(Buffer.from([1, 2, 3, 4]));
      expectSense(
        await run(overwriteCdb(list, { ause: true }), list),
        SenseKey.MEDIUM_ERROR,
        ASC_SANITIZE_COMMAND_FAILED,
      );
      expectSense(
        await run(Cdb.read10({ lba: 0, blocks: 1 })),
        SenseKey.MEDIUM_ERROR,
        ASC_SANITIZE_COMMAND_FAILED,
      );
      expectGood(await run(sanitizeCdb(EXIT_FAILURE_MODE)));
      expectGood(await run(Cdb.read10({ lba: 0, blocks: 1 })));
    });

    it("IMMED=1: the failure shows on the commands that follow", async () => {
      const { run, volume, target } = setup();
      volume.failNext("unmap", ioError());
      expectGood(await run(sanitizeCdb(BLOCK_ERASE, { immed: true })));
      await waitFor(target.unitOf(volume.id), "failed");
      expectSense(
        await run(Cdb.read10({ lba: 0, blocks: 1 })),
        SenseKey.MEDIUM_ERROR,
        ASC_SANITIZE_COMMAND_FAILED,
      );
    });

    it("EXIT FAILURE MODE without a failed sanitize changes nothing", async () => {
      const { run, volume, warnings } = setup();
      expectGood(await run(sanitizeCdb(EXIT_FAILURE_MODE)));
      expect(volume.calls).toEqual([]);
      expect(warnings).toEqual([]);
    });
  });
});

/** Wait until the sanitize state of `unit` is `expected`. */
async function waitFor(unit: LogicalUnitState, expected = "idle"): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (sanitizeState(unit) === expected) return;
    await tick();
  }
  throw new Error(`sanitize did not become ${expected}`);
}
