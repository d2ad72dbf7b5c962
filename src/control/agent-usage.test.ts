import { describe, expect, it } from "vitest";
import { usageFigures } from "../pool/pool.js";
import { usageByAgent } from "./agent-usage.js";

const MiB = 1024 * 1024;

function vol(name: string, logical: number, referenced: number, physical: number) {
  return {
    name,
    domain: "shared",
    blockSize: 4096,
    writeCache: true,
    ...usageFigures(64 * MiB, logical, referenced, physical),
  };
}

describe("usageByAgent", () => {
  const usage = {
    volumes: [vol("a", 8 * MiB, 4 * MiB, 2 * MiB), vol("b", 4 * MiB, 4 * MiB, 2 * MiB)],
  };

  it("sums each agent's volumes once and derives savings and ratios from the sums", () => {
    const [x, y, z] = usageByAgent(
      usage,
      ["x", "y", "z"],
      [
        { agent: "x", volume: "a", mode: "ro" },
        { agent: "x", volume: "a", mode: "rw" }, // the same volume at a second LUN
        { agent: "x", volume: "b", mode: "rw" },
        { agent: "y", volume: "b", mode: "ro" },
        { agent: "y", volume: "a@snap1", mode: "ro" }, // a snapshot view adds nothing
      ],
    );
    expect(x?.volumes).toEqual([
      { name: "a", mode: "rw" },
      { name: "b", mode: "rw" },
    ]);
    expect(x?.provisionedBytes).toBe(128 * MiB);
    expect(x?.logicalBytes).toBe(12 * MiB);
    expect(x?.physicalBytes).toBe(4 * MiB);
    expect(x?.savedByDedup).toBe(4 * MiB);
    expect(x?.savedByCompression).toBe(4 * MiB);
    expect(x?.dedupRatio).toBe(2);
    expect(x?.compressionRatio).toBe(1.5);
    expect(y?.volumes).toEqual([{ name: "b", mode: "ro" }]);
    expect(y?.logicalBytes).toBe(4 * MiB);
    expect(z).toMatchObject({ volumes: [], logicalBytes: 0, dedupRatio: 1, compressionRatio: 1 });
  });
});
