import { randomBytes } from "node:crypto";
import { appendFileSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { chunkFingerprint, masterKeyFromBytes, newId } from "../crypto/index.js";
import { StorageError } from "../volume/errors.js";
import { ChunkStore } from "./chunk-store.js";
import { JobRunner } from "./chunk-worker.js";
import { Devices } from "./devices.js";
import { Registry } from "./registry.js";
import { pattern } from "./testing/helpers.js";

const master = masterKeyFromBytes(randomBytes(32));
let dir: string | undefined;
afterEach(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

async function setup(
  sealBytes = 1 << 20,
): Promise<{ chunks: ChunkStore; registry: Registry; domain: number }> {
  dir = mkdtempSync(join(tmpdir(), "sanmux-chunks-"));
  const registry = Registry.create(join(dir, "registry.json"), {
    poolId: "p",
    keyCheck: "kcv1:x",
    grainSize: 4096,
  });
  registry.addDevice(join(dir, "d0"));
  const domain = registry.addDomain("shared", newId()).number;
  await registry.save();
  const devices = new Devices(registry, { reserveBytes: 0 });
  await devices.start();
  const chunks = new ChunkStore(registry, devices, master, new JobRunner(master, 0), undefined, {
    sealBytes,
  });
  return { chunks, registry, domain };
}

function grains(label: string, n: number) {
  return Array.from({ length: n }, (_, i) => {
    const grain = pattern(`${label}${i}`, 4096);
    return { grain, fingerprint: Buffer.alloc(32, i + 1) };
  });
}

describe("ChunkStore", () => {
  it("appends one write's grains back to back and reads them with one run", async () => {
    const { chunks, domain } = await setup();
    const keys = chunks.keys(domain);
    const items = Array.from({ length: 8 }, (_, i) => {
      const grain = pattern(`g${i}`, 4096);
      return { grain, fingerprint: chunkFingerprint(keys.fingerprintKey, grain) };
    });
    const batch = chunks.batch(domain);
    const locs = await batch.appendAll(items);
    await batch.sync();
    batch.release();
    for (let i = 1; i < locs.length; i++) {
      expect(locs[i]!.offset).toBe(locs[i - 1]!.offset + 60 + locs[i - 1]!.storedLength);
      expect(locs[i]!.containerId).toBe(locs[0]!.containerId);
    }
    const got = await chunks.reads.readRun(
      locs[0]!.containerId,
      locs.map((l, i) => ({ ...l, fingerprint: items[i]!.fingerprint })),
    );
    expect(got.failures.size).toBe(0);
    expect(got.grains).toEqual(Buffer.concat(items.map((x) => x.grain)));
    // A fingerprint that does not match the record is an integrity error, not data.
    const wrong = await chunks.reads.readRun(locs[0]!.containerId, [
      { ...locs[0]!, fingerprint: items[1]!.fingerprint },
    ]);
    expect(wrong.failures.get(0)).toBeInstanceOf(StorageError);
    await chunks.close();
  });

  it("stores a grain two writes append at once only once (in-flight dedup)", async () => {
    const { chunks, domain } = await setup();
    const [a, b] = [chunks.batch(domain), chunks.batch(domain)];
    const items = grains("same", 4);
    const [la, lb] = await Promise.all([a.appendAll(items), b.appendAll(items)]);
    expect(lb).toEqual(la);
    await Promise.all([a.sync(), b.sync()]);
    a.release();
    b.release();
    expect(chunks.currentContainer(domain)?.writer.recordCount).toBe(4);
    await chunks.close();
  });

  it("stores a grain repeated within one write once", async () => {
    const { chunks, domain } = await setup();
    const [x, y] = grains("rep", 2);
    const batch = chunks.batch(domain);
    const locs = await batch.appendAll([x!, y!, x!, x!]);
    expect(locs[2]).toEqual(locs[0]);
    expect(locs[3]).toEqual(locs[0]);
    expect(locs[1]).not.toEqual(locs[0]);
    await batch.sync();
    batch.release();
    expect(chunks.currentContainer(domain)?.writer.recordCount).toBe(2);
    await chunks.close();
  });

  it("never shares a chunk between fingerprints that only share their first bytes", async () => {
    const { chunks, domain } = await setup();
    // In-flight dedup keys on a fingerprint's first 32 bits and checks the rest.
    const fa = Buffer.alloc(32, 7);
    const fb = Buffer.alloc(32, 7);
    fb[31] = 8;
    const a = { grain: pattern("collide-a", 4096), fingerprint: fa };
    const b = { grain: pattern("collide-b", 4096), fingerprint: fb };
    const [ba, bb] = [chunks.batch(domain), chunks.batch(domain)];
    const [[la], [lb]] = await Promise.all([ba.appendAll([a]), bb.appendAll([b])]);
    expect(lb!.offset).not.toBe(la!.offset);
    await Promise.all([ba.sync(), bb.sync()]);
    for (const [loc, item] of [
      [la!, a],
      [lb!, b],
    ] as const) {
      const got = await chunks.reads.readRun(loc.containerId, [
        { ...loc, fingerprint: item.fingerprint },
      ]);
      expect(got.failures.size).toBe(0);
      expect(got.grains!.equals(item.grain)).toBe(true);
    }
    // Released: a's entry is gone (b took the slot, and a's release leaves b's alone), so a new
    // write of a appends it again, and one of b after b's release too.
    ba.release();
    const again = chunks.batch(domain);
    const [lc] = await again.appendAll([b]);
    expect(lc).toEqual(lb); // b is still in flight: shared
    bb.release();
    again.release();
    const last = chunks.batch(domain);
    const [ld] = await last.appendAll([a]);
    expect(ld!.offset).not.toBe(la!.offset);
    last.release();
    expect(chunks.currentContainer(domain)?.writer.recordCount).toBe(3);
    await chunks.close();
  });

  it("rolls over at the seal size, sealing a container only once its writes released it", async () => {
    const { chunks, domain, registry } = await setup(64 * 1024);
    const first = chunks.batch(domain);
    await first.appendAll(grains("a", 20)); // past 64 KiB: retired, but held
    const oc = [...registry.containers][0]!;
    expect(chunks.currentContainer(domain)).toBeUndefined();
    await new Promise((r) => setTimeout(r, 20));
    expect(oc.state).toBe("open");
    await first.sync();
    first.release();
    const open = chunks.openContainer(oc.number);
    await open?.done;
    expect(oc.state).toBe("sealed");
    const second = chunks.batch(domain);
    const [loc] = await second.appendAll(grains("b", 1));
    second.release();
    expect(loc?.containerId).not.toBe(oc.number);
    await chunks.close();
  });

  it("at reopen truncates a torn tail and keeps appending to the container", async () => {
    const { chunks, domain, registry } = await setup();
    const b = chunks.batch(domain);
    const [loc] = await b.appendAll(grains("t", 3));
    await b.sync();
    b.release();
    await chunks.close();
    const rec = registry.container(loc!.containerId)!;
    const path = chunks.containerPath(rec);
    const size = statSync(path).size;
    appendFileSync(path, Buffer.alloc(500, 0x52));
    const again = new ChunkStore(
      registry,
      chunks.devices,
      master,
      new JobRunner(master, 0),
      undefined,
    );
    const summary = await again.recover();
    expect(summary).toMatchObject({ reopened: 1, tornTails: 1, tornBytes: 500 });
    expect(statSync(path).size).toBe(size);
    expect(again.currentContainer(domain)?.rec.number).toBe(rec.number);
    await again.close();
  });
});
