import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CATALOG_FILE, Catalog, CatalogError } from "./catalog.js";

let dataDir: string;
beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "sanmux-catalog-"));
});
afterEach(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

const m = (agent: string, lun: number, volume: string) => ({ agent, lun, volume });

describe("Catalog", () => {
  it("makes a host id once per data directory", async () => {
    const dir = join(dataDir, "nested", "data");
    const a = await Catalog.open(dir);
    expect(a.hostId).toMatch(/^[0-9a-f-]{36}$/);
    const b = await Catalog.open(dir);
    expect(b.hostId).toBe(a.hostId);
    const other = await Catalog.open(join(dataDir, "other"));
    expect(other.hostId).not.toBe(a.hostId);
  });

  it("gives every mapping a unique positive channel", async () => {
    const catalog = await Catalog.open(dataDir);
    const records = await catalog.syncChannels([
      m("a", 0, "v1"),
      m("a", 1, "v2"),
      m("b", 0, "v1"),
      m("a", 0, "v1"), // listed twice: same channel
    ]);
    const channels = records.map((r) => r.channel);
    expect(channels).toEqual([1, 2, 3, 1]);
    expect(catalog.channelOf(m("b", 0, "v1"))).toBe(3);
    expect(catalog.channelOf(m("b", 1, "v1"))).toBeUndefined();
    expect(catalog.nextChannel).toBe(4);
    expect(catalog.list().map((r) => r.channel)).toEqual([1, 2, 3]);
  });

  it("keeps channels stable across reopen and resync", async () => {
    const first = await Catalog.open(dataDir);
    const before = await first.syncChannels([m("a", 0, "v1"), m("b", 5, "v2")]);
    const second = await Catalog.open(dataDir);
    expect(second.list()).toEqual(first.list());
    const after = await second.syncChannels([m("b", 5, "v2"), m("a", 0, "v1")]);
    expect(after.map((r) => r.channel)).toEqual([before[1]?.channel, before[0]?.channel]);
  });

  it("never reuses a channel, even after removal and re-adding", async () => {
    const catalog = await Catalog.open(dataDir);
    await catalog.syncChannels([m("a", 0, "v1"), m("a", 1, "v2")]); // 1, 2
    await catalog.syncChannels([m("a", 0, "v1")]); // 2 retired
    const [added] = await catalog.syncChannels([m("a", 0, "v1"), m("c", 1, "v3")]);
    expect(added?.channel).toBe(1);
    expect(catalog.channelOf(m("c", 1, "v3"))).toBe(3);
    await catalog.syncChannels([]); // all retired
    const reopened = await Catalog.open(dataDir);
    expect(reopened.list()).toEqual([]);
    const again = await reopened.syncChannels([m("a", 0, "v1"), m("a", 1, "v2")]);
    // Same triples as channels 1 and 2 once were: a new mapping is a new channel.
    expect(again.map((r) => r.channel)).toEqual([4, 5]);
  });

  it("persists before resolving, and serializes concurrent syncs", async () => {
    const catalog = await Catalog.open(dataDir);
    const [x, y] = await Promise.all([
      catalog.syncChannels([m("a", 0, "v1")]),
      catalog.syncChannels([m("a", 0, "v1"), m("b", 0, "v1")]),
    ]);
    expect(x?.[0]?.channel).toBe(1);
    expect(y?.map((r) => r.channel)).toEqual([1, 2]);
    const file = JSON.parse(await readFile(join(dataDir, CATALOG_FILE), "utf8"));
    expect(file).toEqual({
      version: 1,
      hostId: catalog.hostId,
      nextChannel: 3,
      channels: [
        { channel: 1, agent: "a", lun: 0, volume: "v1" },
        { channel: 2, agent: "b", lun: 0, volume: "v1" },
      ],
    });
  });

  it("refuses a corrupt catalog instead of starting over", async () => {
    await writeFile(join(dataDir, CATALOG_FILE), "{ not json");
    await expect(Catalog.open(dataDir)).rejects.toThrow(/not valid JSON/);
    await writeFile(join(dataDir, CATALOG_FILE), JSON.stringify({ version: 1, hostId: "x" }));
    await expect(Catalog.open(dataDir)).rejects.toThrow(CatalogError);
    await writeFile(
      join(dataDir, CATALOG_FILE),
      JSON.stringify({
        version: 1,
        hostId: "6f1c1f39-54a4-4a9c-9d4e-0a0b8b1f2f10",
        nextChannel: 2,
        channels: [{ channel: 2, agent: "a", lun: 0, volume: "v" }],
      }),
    );
    await expect(Catalog.open(dataDir)).rejects.toThrow(/channel 2 is duplicated or not issued/);
  });
});
