import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Devices } from "./devices.js";
import { Registry } from "./registry.js";

let dir: string | undefined;
afterEach(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

function fresh(): { path: string; r: Registry } {
  dir = mkdtempSync(join(tmpdir(), "sanmux-registry-"));
  const path = join(dir, "registry.json");
  return { path, r: Registry.create(path, { poolId: "p", keyCheck: "kcv1:x", grainSize: 4096 }) };
}

describe("Registry", () => {
  it("numbers never repeat, saves persist, concurrent saves end with the last state", async () => {
    const { path, r } = fresh();
    const d = r.addDomain("shared", "00000000-0000-4000-8000-000000000001");
    const c1 = r.addContainer("00000000-0000-4000-8000-000000000002", 0, d.number);
    r.removeContainer(c1.number);
    const c2 = r.addContainer("00000000-0000-4000-8000-000000000003", 0, d.number);
    expect(c2.number).toBe(c1.number + 1);
    const saves: Promise<void>[] = [];
    for (let i = 0; i < 10; i++) {
      r.addVolume({
        name: `v${i}`,
        id: `id${i}`,
        domain: d.number,
        size: 4096,
        blockSize: 4096,
        writeCache: true,
      });
      saves.push(r.save());
    }
    await Promise.all(saves);
    const back = await Registry.load(path);
    expect(back?.volumes.map((v) => v.name)).toEqual(r.volumes.map((v) => v.name));
    expect(back?.container(c2.number)?.id).toBe(c2.id);
    expect(back?.container(c1.number)).toBeUndefined();
    expect(back?.data.next.container).toBe(c2.number + 1);
  });

  it("refuses a file that is not a registry rather than starting empty", async () => {
    const { path } = fresh();
    expect(await Registry.load(path)).toBeUndefined();
    writeFileSync(path, JSON.stringify({ format: 7 }));
    await expect(Registry.load(path)).rejects.toThrow(/not a sanmux pool registry/);
    writeFileSync(path, "{ torn");
    await expect(Registry.load(path)).rejects.toThrow(/not valid JSON/);
  });
});

describe("Devices", () => {
  it("adds a device durably, reports free space, and honours the reserve", async () => {
    const { path, r } = fresh();
    const devices = new Devices(r, { reserveBytes: 1024 });
    await devices.add(join(dir!, "d0"));
    await devices.start();
    const [s] = devices.status();
    expect(s?.online).toBe(true);
    expect(s?.freeBytes).toBeGreaterThan(0);
    expect(devices.pick(0)?.number).toBe(0);
    expect(devices.hasRoom(0, s!.freeBytes * 2)).toBe(false);
    expect(JSON.parse(readFileSync(path, "utf8")).devices).toHaveLength(1);
    // Adding the same directory again is a no-op.
    await devices.add(join(dir!, "d0"));
    expect(devices.status()).toHaveLength(1);
    const tight = new Devices(r, { reserveBytes: Number.MAX_SAFE_INTEGER });
    await tight.start();
    expect(tight.pick(0)).toBeUndefined();
    tight.stop();
    devices.stop();
  });
});
