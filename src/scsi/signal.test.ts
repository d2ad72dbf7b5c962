/**
 * The task's abort signal (ScsiCommand.signal) reaches every volume call, and a volume call
 * dropped because of it (an "AbortError") answers TASK ABORTED, unlogged.
 */
import { describe, expect, it } from "vitest";
import type {
  BlockStatus,
  CommandOptions,
  CommandSignal,
  Volume,
  WriteOptions,
} from "../volume/volume.js";
import { ScsiStatus } from "./constants.js";
import { ScsiTarget } from "./target.js";
import { Cdb } from "./testing/cdb-builders.js";
import { command, identity, lunEntry, MutableView, TEST_INFO } from "./testing/harness.js";
import { MemoryVolume } from "./testing/memory-volume.js";

/** A filter that records the signal of each call and drops calls whose signal aborted. */
class SignalProbe implements Volume {
  readonly id: string;
  readonly name: string;
  readonly blockSize: number;
  readonly seen: Array<[string, CommandSignal | undefined]> = [];
  constructor(private readonly inner: Volume) {
    this.id = inner.id;
    this.name = inner.name;
    this.blockSize = inner.blockSize;
  }
  private check(op: string, options?: CommandOptions): void {
    this.seen.push([op, options?.signal]);
    if (options?.signal?.aborted) {
      throw Object.assign(new Error("aborted while it waited"), { name: "AbortError" });
    }
  }
  blockCount(): number {
    return this.inner.blockCount();
  }
  async read(lba: number, blocks: number, options?: CommandOptions): Promise<Buffer> {
    this.check("read", options);
    return this.inner.read(lba, blocks);
  }
  async write(lba: number, data: Buffer, options?: WriteOptions): Promise<void> {
    this.check("write", options);
    return this.inner.write(lba, data, options);
  }
  async flush(options?: CommandOptions): Promise<void> {
    this.check("flush", options);
    return this.inner.flush();
  }
  async unmap(lba: number, blocks: number, options?: CommandOptions): Promise<void> {
    this.check("unmap", options);
    return this.inner.unmap(lba, blocks);
  }
  async blockStatus(lba: number, options?: CommandOptions): Promise<BlockStatus> {
    this.check("blockStatus", options);
    return this.inner.blockStatus(lba);
  }
  async close(): Promise<void> {}
}

function setup() {
  const warnings: string[] = [];
  const target = new ScsiTarget(TEST_INFO, { logger: { warn: (_o, msg) => warnings.push(msg) } });
  const volume = new SignalProbe(new MemoryVolume({ blocks: 1024 }));
  const nexus = target.openNexus(identity(), new MutableView([lunEntry(0, volume)]));
  const run = (cdb: Buffer, signal: AbortSignal, dataOut?: Buffer) =>
    nexus.execute({ ...command(0, cdb, dataOut), signal });
  return { volume, run, warnings };
}

describe("ScsiCommand.signal", () => {
  it("is passed to the volume by reads, writes, syncs, unmaps and GET LBA STATUS", async () => {
    const { volume, run } = setup();
    const signal = new AbortController().signal;
    const block = Buffer.alloc(512, 3);
    for (const [cdb, data] of [
      [Cdb.read10({ lba: 0, blocks: 1 }), undefined],
      [Cdb.write10({ lba: 0, blocks: 1 }), block],
      [Cdb.syncCache10({}), undefined],
      [Cdb.writeSame10({ lba: 4, blocks: 2, unmap: true }), block],
      [Cdb.getLbaStatus(0, 64), undefined],
    ] as const) {
      expect((await run(cdb, signal, data)).status).toBe(ScsiStatus.GOOD);
    }
    expect([...new Set(volume.seen.map(([op]) => op))]).toEqual([
      "read",
      "write",
      "flush",
      "unmap",
      "blockStatus",
    ]);
    for (const [, s] of volume.seen) expect(s).toBe(signal);
  });

  it("answers TASK ABORTED, without a warning, when the volume dropped the call", async () => {
    const { run, warnings } = setup();
    const ac = new AbortController();
    ac.abort();
    const read = await run(Cdb.read10({ lba: 0, blocks: 1 }), ac.signal);
    expect(read).toEqual({ status: ScsiStatus.TASK_ABORTED });
    const write = await run(Cdb.write10({ lba: 0, blocks: 1 }), ac.signal, Buffer.alloc(512));
    expect(write.status).toBe(ScsiStatus.TASK_ABORTED);
    expect(warnings).toEqual([]);
  });
});
