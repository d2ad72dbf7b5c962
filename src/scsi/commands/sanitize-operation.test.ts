/**
 * The sanitize operation over time (SBC-4, sanitize operations): the progress indication that
 * TEST UNIT READY and REQUEST SENSE report while it runs, IMMED, an abort of the SANITIZE
 * command that leaves the operation running, and the pacing of OVERWRITE. The command's
 * checks and service actions are in ./sanitize.test.ts.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { ScsiStatus, SenseKey } from "../constants.js";
import { decodeFixedSense } from "../sense.js";
import { ScsiTarget } from "../target.js";
import { Cdb } from "../testing/cdb-builders.js";
import {
  command,
  exec,
  expectGood,
  expectSense,
  identity,
  lunEntry,
  MutableView,
  pattern,
  TEST_INFO,
} from "../testing/harness.js";
import { MemoryVolume } from "../testing/memory-volume.js";
import type { ScsiResult } from "../types.js";
import { ASC_SANITIZE_IN_PROGRESS, SANITIZE, SanitizeAction, sanitizeState } from "./sanitize.js";

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Blocks of 512 bytes in one OVERWRITE chunk (1 MiB). */
const CHUNK = 2048;

/** OVERWRITE with a 4-byte pattern, `passes` passes. */
function overwrite(o: { immed?: boolean; passes?: number } = {}): [Buffer, Buffer] {
  const list = Buffer.alloc(8, 0x5a);
  list[0] = o.passes ?? 1;
  list[1] = 0;
  list.writeUInt16BE(4, 2);
  const cdb = Buffer.alloc(10);
  cdb[0] = SANITIZE;
  cdb[1] = (o.immed ? 0x80 : 0) | SanitizeAction.OVERWRITE;
  cdb.writeUInt16BE(list.length, 7);
  return [cdb, list];
}

/**
 * Writes of `volume` wait, one by one, until `step()` lets the next one through; `written`
 * counts those that completed.
 */
function stepWrites(volume: MemoryVolume) {
  const waiting: (() => void)[] = [];
  let written = 0;
  const write = volume.write.bind(volume);
  volume.write = async (lba, data, options) => {
    await new Promise<void>((resolve) => waiting.push(resolve));
    await write(lba, data, options);
    written++;
  };
  return {
    async step() {
      for (let i = 0; i < 100 && waiting.length === 0; i++) await tick();
      waiting.shift()?.();
      await tick();
      await tick();
    },
    get written() {
      return written;
    },
  };
}

function setupTarget(o: { blocks?: number; rate?: number } = {}) {
  const target = new ScsiTarget(TEST_INFO, { sanitizeBytesPerSecond: o.rate ?? 0 });
  const volume = new MemoryVolume({ blocks: o.blocks ?? 4 * CHUNK });
  const view = new MutableView([lunEntry(0, volume)]);
  const nexus = target.openNexus(identity(), view);
  const other = target.openNexus(identity({ initiatorName: "iqn.2025-01.com.example:b" }), view);
  const unit = target.unitOf(volume.id);
  return { target, volume, nexus, other, unit };
}

async function idle(unit: Parameters<typeof sanitizeState>[0]): Promise<void> {
  for (let i = 0; i < 200 && sanitizeState(unit) !== "idle"; i++) await tick();
  expect(sanitizeState(unit)).toBe("idle");
}

/** The progress indication of a NOT READY / SANITIZE IN PROGRESS result. */
function progressOf(r: ScsiResult): number | undefined {
  const s = expectSense(r, SenseKey.NOT_READY, ASC_SANITIZE_IN_PROGRESS);
  return s.progress;
}

describe("a sanitize operation in progress", () => {
  it("reports its progress to TEST UNIT READY and other commands, from every nexus", async () => {
    const { volume, nexus, other, unit } = setupTarget();
    const writes = stepWrites(volume);
    const [cdb, list] = overwrite({ immed: true, passes: 2 });
    expectGood(await exec(nexus, cdb, list));
    // 2 passes of 4 chunks: each chunk is 1/8 of the work.
    expect(progressOf(await exec(other, Cdb.testUnitReady()))).toBe(0);
    await writes.step();
    expect(progressOf(await exec(other, Cdb.testUnitReady()))).toBe(0x2000);
    await writes.step();
    await writes.step();
    expect(progressOf(await exec(nexus, Cdb.read16({ lba: 0, blocks: 1 })))).toBe(0x6000);
    for (let i = 0; i < 5; i++) await writes.step();
    await idle(unit);
    expectGood(await exec(nexus, Cdb.testUnitReady()));
    expect(writes.written).toBe(8);
  });

  it("is what REQUEST SENSE returns, fixed or descriptor format, once nothing else is pending", async () => {
    const { volume, nexus, other, unit } = setupTarget();
    const writes = stepWrites(volume);
    const [cdb, list] = overwrite({ immed: true });
    nexus.lunReset(0); // a unit attention for both nexuses, reported first
    expectGood(await exec(nexus, Cdb.requestSense())); // clears the unit attention
    expectGood(await exec(nexus, cdb, list));
    await writes.step();
    const fixed = await exec(nexus, Cdb.requestSense());
    expect(fixed.status).toBe(ScsiStatus.GOOD);
    const s = decodeFixedSense(fixed.data!);
    expect([s.key, s.asc, s.progress]).toEqual([
      SenseKey.NOT_READY,
      ASC_SANITIZE_IN_PROGRESS,
      0x4000,
    ]);
    expect(fixed.data![15]! & 0x80).toBe(0x80); // SKSV
    // The other nexus has its unit attention to report first.
    const ua = decodeFixedSense((await exec(other, Cdb.requestSense())).data!);
    expect(ua.key).toBe(SenseKey.UNIT_ATTENTION);
    // Descriptor format: a sense key specific descriptor (02h) with SKSV and the progress.
    const desc = (await exec(other, Cdb.requestSense(252, true))).data!;
    expect([desc[0], desc[1], desc[2], desc[3]]).toEqual([0x72, SenseKey.NOT_READY, 0x04, 0x1b]);
    expect([...desc.subarray(8, 16)]).toEqual([0x02, 0x06, 0, 0, 0x80, 0x40, 0x00, 0]);
    for (let i = 0; i < 3; i++) await writes.step();
    await idle(unit);
    const after = decodeFixedSense((await exec(nexus, Cdb.requestSense())).data!);
    expect([after.key, after.asc, after.progress]).toEqual([SenseKey.NO_SENSE, 0, undefined]);
  });

  it("IMMED=0: the command settles when the operation is done", async () => {
    const { volume, nexus, unit } = setupTarget({ blocks: CHUNK });
    const writes = stepWrites(volume);
    const [cdb, list] = overwrite();
    let result: ScsiResult | undefined;
    const pending = exec(nexus, cdb, list).then((r) => {
      result = r;
    });
    await tick();
    expect(result).toBeUndefined();
    await writes.step();
    await pending;
    expectGood(result!);
    expect(result!.dataOutLength).toBe(8);
    expect(sanitizeState(unit)).toBe("idle");
    expect(volume.peek(0, 1).equals(pattern(1, 0x5a))).toBe(true);
  });

  it("ABORT TASK of a SANITIZE with IMMED=0 ends the command, not the operation", async () => {
    const { volume, nexus, other, unit } = setupTarget();
    const writes = stepWrites(volume);
    const [cdb, list] = overwrite();
    const cmd = command(0, cdb, list);
    const pending = nexus.execute(cmd);
    await writes.step();
    nexus.abortTask(cmd);
    const r = await pending;
    expect(r.status).toBe(ScsiStatus.TASK_ABORTED);
    // Still running, for the nexus that sent it and the others (SBC-4: the operation goes on).
    expect(progressOf(await exec(nexus, Cdb.testUnitReady()))).toBe(0x4000);
    expect(progressOf(await exec(other, Cdb.testUnitReady()))).toBe(0x4000);
    for (let i = 0; i < 3; i++) await writes.step();
    await idle(unit);
    expect(volume.peek(4 * CHUNK - 1, 1).equals(pattern(1, 0x5a))).toBe(true);
    // Aborting a command that is not (or no longer) waiting does nothing.
    nexus.abortTask(cmd);
    nexus.abortTask(command(0, Cdb.testUnitReady()));
    expectGood(await exec(nexus, Cdb.testUnitReady()));
  });

  it("the loss of the nexus settles its SANITIZE with IMMED=0; the operation goes on", async () => {
    const { volume, nexus, other, unit } = setupTarget();
    const writes = stepWrites(volume);
    const [cdb, list] = overwrite();
    const pending = exec(nexus, cdb, list);
    await writes.step();
    nexus.close();
    expect((await pending).status).toBe(ScsiStatus.TASK_ABORTED);
    expect(progressOf(await exec(other, Cdb.testUnitReady()))).toBe(0x4000);
    for (let i = 0; i < 3; i++) await writes.step();
    await idle(unit);
    expectGood(await exec(other, Cdb.testUnitReady()));
  });
});

describe("OVERWRITE pacing", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("writes at most sanitizeBytesPerSecond, the first chunk at once", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "performance"] });
    // 1 MiB/s and 1 MiB chunks: one chunk per second.
    const { volume, nexus, unit } = setupTarget({ rate: 1024 * 1024 });
    const writes = volume.calls;
    const [cdb, list] = overwrite({ immed: true });
    expectGood(await exec(nexus, cdb, list));
    await tick();
    expect(writes.filter((c) => c.op === "write")).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(999);
    expect(writes.filter((c) => c.op === "write")).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(writes.filter((c) => c.op === "write")).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(2000);
    expect(writes.filter((c) => c.op === "write")).toHaveLength(4);
    await idle(unit);
  });

  it("is off with sanitizeBytesPerSecond 0, and paces nothing but OVERWRITE", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "performance"] });
    const { volume, nexus, unit } = setupTarget({ rate: 0 });
    const [cdb, list] = overwrite({ immed: true, passes: 3 });
    expectGood(await exec(nexus, cdb, list));
    await idle(unit);
    expect(volume.calls.filter((c) => c.op === "write")).toHaveLength(12);
    // Paced or not, BLOCK ERASE is one unmap: nothing to pace.
    const paced = setupTarget({ rate: 1 });
    const erase = Buffer.alloc(10);
    erase[0] = SANITIZE;
    erase[1] = SanitizeAction.BLOCK_ERASE;
    expectGood(await exec(paced.nexus, erase));
    expect(paced.volume.calls.map((c) => c.op)).toEqual(["unmap", "flush"]);
  });
});
