import { describe, expect, it } from "vitest";
import { ScsiTarget } from "../target.js";
import { Cdb } from "../testing/cdb-builders.js";
import { CopyCdb, HoldingVolume, settle } from "../testing/copy-builders.js";
import {
  exec,
  expectGood,
  identity,
  lunEntry,
  MutableView,
  pattern,
  TEST_INFO,
} from "../testing/harness.js";
import { blockRange, UnitGate, WHOLE_UNIT } from "./io-gate.js";

/** A promise with its resolver, and a record of when work ran. */
function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe("UnitGate", () => {
  it("an exclusive access waits for shared accesses already running, whatever their range", async () => {
    const gate = new UnitGate();
    const log: string[] = [];
    const s = deferred();
    const shared = gate.shared(blockRange(100, 1), async () => {
      log.push("shared start");
      await s.promise;
      log.push("shared end");
    });
    const exclusive = gate.exclusive(blockRange(0, 1), async () => {
      log.push("exclusive");
    });
    await settle();
    expect(log).toEqual(["shared start"]);
    s.resolve();
    await Promise.all([shared, exclusive]);
    expect(log).toEqual(["shared start", "shared end", "exclusive"]);
  });

  it("a shared access that overlaps a registered exclusive range waits; others do not", async () => {
    const gate = new UnitGate();
    const log: string[] = [];
    const x = deferred();
    const exclusive = gate.exclusive(blockRange(10, 5), async () => {
      log.push("exclusive start");
      await x.promise;
      log.push("exclusive end");
    });
    await settle();
    const inside = gate.shared(blockRange(14, 4), async () => {
      log.push("overlapping shared");
    });
    const outside = gate.shared(blockRange(15, 4), async () => {
      log.push("disjoint shared");
    });
    await settle();
    expect(log).toEqual(["exclusive start", "disjoint shared"]);
    x.resolve();
    await Promise.all([exclusive, inside, outside]);
    expect(log).toEqual([
      "exclusive start",
      "disjoint shared",
      "exclusive end",
      "overlapping shared",
    ]);
    expect(gate.exclusiveCount).toBe(0);
  });

  it("serves overlapping accesses in arrival order (no starvation, no deadlock)", async () => {
    const gate = new UnitGate();
    const log: string[] = [];
    const hold = deferred();
    const e1 = gate.exclusive(blockRange(0, 8), async () => {
      log.push("e1");
      await hold.promise;
    });
    await settle();
    const s1 = gate.shared(blockRange(4, 1), async () => {
      log.push("s1");
    });
    const e2 = gate.exclusive(blockRange(0, 8), async () => {
      log.push("e2");
    });
    const s2 = gate.shared(WHOLE_UNIT, async () => {
      log.push("s2");
    });
    await settle();
    expect(log).toEqual(["e1"]);
    hold.resolve();
    await Promise.all([e1, s1, e2, s2]);
    expect(log).toEqual(["e1", "s1", "e2", "s2"]);
  });

  it("exclusive accesses on disjoint ranges run side by side", async () => {
    const gate = new UnitGate();
    const a = deferred();
    const log: string[] = [];
    const first = gate.exclusive(blockRange(0, 1), async () => {
      log.push("a");
      await a.promise;
    });
    const second = gate.exclusive(blockRange(1, 1), async () => {
      log.push("b");
    });
    await second;
    expect(log).toEqual(["a", "b"]);
    a.resolve();
    await first;
  });

  it("releases its range when the work fails", async () => {
    const gate = new UnitGate();
    await expect(
      gate.exclusive(blockRange(0, 1), async () => {
        throw new Error("boom");
      }),
    ).rejects.toThrow("boom");
    expect(gate.exclusiveCount).toBe(0);
    await gate.exclusive(blockRange(0, 1), async () => undefined);
  });

  it("an exclusive access with nothing running starts at once", async () => {
    const gate = new UnitGate();
    let ran = false;
    const p = gate.exclusive(blockRange(0, 1), async () => {
      ran = true;
    });
    await p;
    expect(ran).toBe(true);
  });
});

describe("medium access through the dispatch table", () => {
  /** Two nexuses (two initiators) on one HoldingVolume. */
  function twoHosts() {
    const target = new ScsiTarget(TEST_INFO);
    const volume = new HoldingVolume({ blocks: 1024 });
    const a = target.openNexus(
      identity({ initiatorName: "iqn.a" }),
      new MutableView([lunEntry(0, volume)]),
    );
    const b = target.openNexus(
      identity({ initiatorName: "iqn.b" }),
      new MutableView([lunEntry(0, volume)]),
    );
    return { volume, a, b };
  }

  it("a WRITE from another host that arrives during COMPARE AND WRITE lands after it", async () => {
    const { volume, a, b } = twoHosts();
    expectGood(await exec(a, Cdb.write10({ lba: 5, blocks: 1 }), pattern(1, 0x41)));
    volume.hold("read");
    const caw = exec(
      a,
      CopyCdb.compareAndWrite({ lba: 5, blocks: 1 }),
      Buffer.concat([pattern(1, 0x41), pattern(1, 0x42)]),
    );
    await settle();
    expect(volume.held.map((h) => h.op)).toEqual(["read"]);
    volume.stopHolding();
    const write = exec(b, Cdb.write10({ lba: 5, blocks: 1 }), pattern(1, 0x43));
    await settle();
    // The WRITE has not reached the volume: the COMPARE AND WRITE holds block 5.
    expect(volume.events.filter((e) => e.startsWith("write 5 start"))).toEqual([
      "write 5 start", // the setup write
    ]);
    volume.releaseAll();
    expectGood(await caw);
    expectGood(await write);
    expect(volume.peek(5, 1).equals(pattern(1, 0x43))).toBe(true);
    expect(volume.events.slice(-4)).toEqual([
      "write 5 start",
      "write 5 end", // the COMPARE AND WRITE's write
      "write 5 start",
      "write 5 end", // the other host's WRITE
    ]);
  });

  it("a READ of other blocks is not held up by a COMPARE AND WRITE", async () => {
    const { volume, a, b } = twoHosts();
    volume.hold("read");
    const caw = exec(
      a,
      CopyCdb.compareAndWrite({ lba: 5, blocks: 1 }),
      Buffer.concat([pattern(1, 0), pattern(1, 0x42)]),
    );
    await settle();
    volume.stopHolding();
    const r = await exec(b, Cdb.read10({ lba: 6, blocks: 1 }));
    expectGood(r);
    volume.releaseAll();
    expectGood(await caw);
  });

  it("COMPARE AND WRITE waits for a WRITE already in flight on the block", async () => {
    const { volume, a, b } = twoHosts();
    expectGood(await exec(a, Cdb.write10({ lba: 7, blocks: 1 }), pattern(1, 0x11)));
    volume.hold("write");
    const write = exec(b, Cdb.write10({ lba: 7, blocks: 1 }), pattern(1, 0x22));
    await settle();
    volume.stopHolding();
    // Compares against the data the in-flight WRITE is about to store: it must see it.
    const caw = exec(
      a,
      CopyCdb.compareAndWrite({ lba: 7, blocks: 1 }),
      Buffer.concat([pattern(1, 0x22), pattern(1, 0x33)]),
    );
    await settle();
    expect(volume.events.filter((e) => e === "read 7 start")).toEqual([]);
    volume.releaseAll();
    expectGood(await write);
    expectGood(await caw);
    expect(volume.peek(7, 1).equals(pattern(1, 0x33))).toBe(true);
  });

  it("keeps synchronous CHECK CONDITIONs of gated commands", async () => {
    const { a } = twoHosts();
    const r = await exec(a, Cdb.read10({ lba: 1024, blocks: 1 }));
    expect(r.status).toBe(2);
  });
});
